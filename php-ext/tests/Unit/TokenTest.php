<?php

declare(strict_types=1);

namespace LmsRealtime\Tests\Unit;

use LmsRealtime\Exception\InvalidArgumentException;
use LmsRealtime\Exception\InvalidChannelException;
use LmsRealtime\Status;
use LmsRealtime\Token;
use PHPUnit\Framework\TestCase;

final class TokenTest extends TestCase
{
    public function testIssuePassesTheArgumentsAndChannelsAsJson(): void
    {
        $n = (new FakeNative())->answer(Status::OK, 'v1.a.b');
        $t = Token::issueWith($n, 'k1', str_repeat('s', 32), 7, [3, 1], 2000000000, 'sess');
        self::assertSame('v1.a.b', $t);
        self::assertSame(['tokenIssue', ['k1', str_repeat('s', 32), 7, '[3,1]', 2000000000, 'sess']], $n->lastCall());
    }

    public function testFailuresBecomeTypedExceptionsWithTheLibraryMessage(): void
    {
        $n = (new FakeNative())->answer(Status::INVALID_CHANNEL, null, 'invalid channel id 0');
        try {
            Token::issueWith($n, 'k1', str_repeat('s', 32), 7, [0], 2000000000, 'sess');
            self::fail('expected an exception');
        } catch (InvalidChannelException $e) {
            self::assertSame(Status::INVALID_CHANNEL, $e->getCode());
            self::assertSame('invalid channel id 0', $e->getMessage());
        }
    }

    public function testNonIntegerChannelsAreRefusedBeforeTheCall(): void
    {
        $n = new FakeNative();
        $this->expectException(InvalidArgumentException::class);
        try {
            /** @phpstan-ignore-next-line deliberately wrong type */
            Token::issueWith($n, 'k1', str_repeat('s', 32), 7, ['1'], 2000000000, 'sess');
        } finally {
            self::assertSame([], $n->calls);
        }
    }

    public function testPublishHeadersMatchTheDaemonsSignature(): void
    {
        // The same vector is pinned in the Rust tests (token::tests::publish_signature_vector).
        $h = Token::publishHeaders('k1', '0123456789abcdef0123456789abcdef', '{"a":1}', 1700000000);
        self::assertSame('1700000000', $h['X-LMS-Timestamp']);
        self::assertSame('k1:E9Nw3qXs7TUhXbRMmcNTa1aZotTRGCTUf0bkh_s8HUg', $h['X-LMS-Signature']);
    }
}
