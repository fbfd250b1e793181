<?php

declare(strict_types=1);

namespace LmsRealtime\Tests\Integration;

use LmsRealtime\Exception\InvalidArgumentException;
use LmsRealtime\Exception\InvalidChannelException;
use LmsRealtime\Token;

/**
 * Tokens issued through the real library: the format the daemon verifies, checked here
 * independently with PHP's own HMAC.
 */
final class TokenTest extends IntegrationTestCase
{
    private const SECRET = '0123456789abcdef0123456789abcdef-php';

    private static function b64urlDecode(string $s): string
    {
        $d = base64_decode(strtr($s, '-_', '+/'), true);
        self::assertIsString($d);
        return $d;
    }

    public function testTheTokenIsSignedClaimsAPhpHmacVerifies(): void
    {
        $t = Token::issue('k1', self::SECRET, 42, [9, 3, 9], 2000000000, 'wp-session-token');
        $parts = explode('.', $t);
        self::assertCount(3, $parts);
        self::assertSame('v1', $parts[0]);
        $mac = hash_hmac('sha256', 'v1.' . $parts[1], self::SECRET, true);
        self::assertTrue(hash_equals($mac, self::b64urlDecode($parts[2])));
        $claims = json_decode(self::b64urlDecode($parts[1]), true, 512, JSON_THROW_ON_ERROR);
        self::assertSame('k1', $claims['kid']);
        self::assertSame(42, $claims['uid']);
        self::assertSame([3, 9], $claims['ch']);
        self::assertSame(2000000000, $claims['exp']);
        $sid = rtrim(strtr(base64_encode(substr(hash('sha256', 'wp-session-token', true), 0, 16)), '+/', '-_'), '=');
        self::assertSame($sid, $claims['sid']);
        self::assertStringNotContainsString('wp-session-token', $t);
    }

    public function testBadArgumentsThrow(): void
    {
        try {
            Token::issue('k1', 'too short', 1, [1], 2000000000, 's');
            self::fail('a short secret must be refused');
        } catch (InvalidArgumentException $e) {
            self::assertStringContainsString('32 bytes', $e->getMessage());
        }
        $this->expectException(InvalidChannelException::class);
        Token::issue('k1', self::SECRET, 1, [0], 2000000000, 's');
    }
}
