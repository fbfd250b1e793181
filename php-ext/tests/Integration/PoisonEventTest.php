<?php

declare(strict_types=1);

namespace LmsRealtime\Tests\Integration;

use LmsRealtime\Event;
use LmsRealtime\EventStore;
use LmsRealtime\Exception\InvalidDataException;
use LmsRealtime\Status;

/**
 * Poison events: data a reader cannot decode neither gets in (nested deeper than 64 levels, a
 * lone surrogate escape: a typed `InvalidDataException`, nothing appended), nor, when a row
 * like that is already in the file (put there by an older version, by hand, or damage), stops
 * a reader: a fetch with `limit: 1` steps past it, says `gap`, and gets the next event.
 */
final class PoisonEventTest extends IntegrationTestCase
{
    private static function nested(int $depth): string
    {
        return '{"a":' . str_repeat('[', $depth - 1) . '1' . str_repeat(']', $depth - 1) . '}';
    }

    public function testAppendRefusesDataNotEveryReaderCanDecode(): void
    {
        $s = $this->open();
        $ok = $s->append('message_create', 1, ['n' => 1]);
        $cases = [
            [self::nested(65), 'nested more than 64'],
            [self::nested(520), 'nested more than 64'],
            ['{"text":"\ud800"}', 'lone UTF-16 surrogate'],
            ['{"text":"\udfff!"}', 'lone UTF-16 surrogate'],
        ];
        foreach ($cases as [$data, $cause]) {
            $calls = [
                fn () => $s->append('message_create', 1, $data),
                fn () => $s->appendBatch([['type' => 'message_create', 'channel_id' => 1, 'data' => $data]]),
            ];
            foreach ($calls as $call) {
                try {
                    $call();
                    self::fail('expected InvalidDataException for ' . substr($data, 0, 30));
                } catch (InvalidDataException $e) {
                    self::assertSame(Status::INVALID_DATA, $e->getCode());
                    // appendBatch() decodes data given as text in PHP first, whose own limit
                    // (512, and unpaired surrogates) refuses some cases before the library sees them.
                    self::assertMatchesRegularExpression(
                        '/' . $cause . '|Maximum stack depth|unpaired UTF-16 surrogate/',
                        $e->getMessage()
                    );
                }
            }
        }
        $b = $s->fetch([1]);
        self::assertSame([$ok], array_map(static fn (Event $e) => $e->id, $b->events), 'nothing refused was stored');
        self::assertFalse($b->gap);
        // 64 levels and a surrogate pair are fine, and read back.
        $s->append('message_create', 1, self::nested(64));
        $s->append('message_create', 1, '{"t":"\ud83d\ude00"}');
        $b = $s->fetch([1], $b->cursor);
        self::assertCount(2, $b);
        self::assertSame('😀', $b->events[1]->data['t']);
    }

    public function testAReaderWithLimitOneStepsPastPoisonRows(): void
    {
        if (!is_executable('/usr/bin/sqlite3') && trim((string) shell_exec('command -v sqlite3')) === '') {
            self::markTestSkipped('the sqlite3 command-line tool is needed to write rows behind the library');
        }
        $skippedBefore = EventStore::skippedEvents();
        $s = $this->open();
        $start = $s->headCursor();
        $path = $this->dir . '/events.db';
        $now = (int) (microtime(true) * 1000);
        $good = [];
        $values = [
            "'" . self::nested(520) . "'",           // json_decode's depth of 512 throws on it
            "'{\"text\":\"\\ud800\"}'",              // an unpaired surrogate: JSON_ERROR_UTF16
            "'not json'",
            "X'7BFFFE7D'",                           // not UTF-8
        ];
        foreach ($values as $data) {
            $sql = sprintf(
                "INSERT INTO lmsrt_events (event_type, priority, channel_id, user_id, data, timestamp, expires_at) "
                . "VALUES ('message_create', 1, 1, 1, %s, %d, %d);",
                $data,
                $now,
                $now + 3_600_000
            );
            $out = [];
            $rc = 0;
            $command = array_map('escapeshellarg', ['sqlite3', '-cmd', '.timeout 5000', $path, $sql]);
            exec(implode(' ', $command) . ' 2>&1', $out, $rc);
            self::assertSame(0, $rc, implode("\n", $out));
            $good[] = $s->append('message_create', 1, ['ok' => true]);
        }
        foreach (['fetch', 'wait'] as $how) {
            $cursor = $start;
            $got = [];
            $gaps = 0;
            for ($i = 0; $i < 50; $i++) {
                $b = $how === 'fetch'
                    ? $s->fetch([1], $cursor, limit: 1)
                    : $s->wait([1], $cursor, timeout: 5.0, limit: 1);
                foreach ($b as $e) {
                    $got[] = $e->id;
                    self::assertSame(['ok' => true], $e->data);
                }
                $gaps += $b->gap ? 1 : 0;
                $cursor = $b->cursor;
                if ($b->isEmpty() && !$b->hasMore && !$b->gap) {
                    break;
                }
                if ($how === 'wait' && count($got) === count($good)) {
                    break;
                }
            }
            self::assertSame($good, $got, "$how: every good event, in order, past every poison row");
            self::assertSame(4, $gaps, "$how: each poison row skipped says gap");
        }
        // The library skipped them, so PHP never had to.
        self::assertSame($skippedBefore, EventStore::skippedEvents());
    }
}
