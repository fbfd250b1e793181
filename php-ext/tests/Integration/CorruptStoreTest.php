<?php

declare(strict_types=1);

namespace LmsRealtime\Tests\Integration;

use LmsRealtime\EventStore;
use LmsRealtime\Exception\CorruptException;
use LmsRealtime\Exception\InvalidArgumentException;
use LmsRealtime\Status;

/**
 * A store file with a damaged page: a fetch that crosses it throws `CorruptException` (every
 * time), `EventStore::check()` reports the damage, `EventStore::salvage()` copies every other
 * event with its id into a file that passes the check, and a reader continues from its old
 * cursor on the salvaged file with `gap` set where events were lost.
 */
final class CorruptStoreTest extends IntegrationTestCase
{
    private const EVENTS = 2000;

    /** Overwrites the first table leaf page (type 0x0D) past the middle of the file. */
    private static function damageLeafPage(string $path): int
    {
        $f = fopen($path, 'r+b');
        self::assertNotFalse($f);
        $header = fread($f, 100);
        $pageSize = unpack('n', substr($header, 16, 2))[1];
        $pageSize = $pageSize === 1 ? 65536 : $pageSize;
        $pages = intdiv(filesize($path), $pageSize);
        self::assertGreaterThan(100, $pages);
        for ($page = intdiv($pages, 2); $page <= $pages; $page++) {
            fseek($f, ($page - 1) * $pageSize);
            if (fread($f, 1) !== "\x0D") {
                continue;
            }
            fseek($f, ($page - 1) * $pageSize);
            fwrite($f, str_repeat("\xA5", $pageSize));
            fclose($f);
            return $page;
        }
        self::fail('no table leaf page past the middle of the file');
    }

    /**
     * Follows the cursor until the head or the first exception.
     *
     * @return array{0: list<int>, 1: bool, 2: string, 3: ?\Throwable}
     */
    private static function readAll(EventStore $s, string $cursor): array
    {
        $ids = [];
        $gap = false;
        for ($i = 0; $i < 100; $i++) {
            try {
                $b = $s->fetch([1, 2, 3], $cursor, 100, 'sequential');
            } catch (\Throwable $e) {
                return [$ids, $gap, $cursor, $e];
            }
            foreach ($b->events as $e) {
                $ids[] = $e->id;
            }
            $gap = $gap || $b->gap;
            if ($b->cursor === $cursor && count($b) === 0) {
                return [$ids, $gap, $cursor, null];
            }
            $cursor = $b->cursor;
        }
        self::fail('the reader never reached the head');
    }

    public function testADamagedPageIsReportedAndSalvagedWithAnHonestGap(): void
    {
        $path = $this->dir . '/events.db';
        $s = EventStore::open($path);
        $pad = str_repeat('x', 600);
        for ($chunk = 0; $chunk < self::EVENTS / 200; $chunk++) {
            $events = [];
            for ($i = 0; $i < 200; $i++) {
                $events[] = ['type' => 'message_create', 'channel_id' => 1 + $i % 3, 'data' => ['pad' => $pad]];
            }
            $s->appendBatch($events);
        }
        $s->commitCursor('reader', '100');
        $s->close(); // the last connection checkpoints the WAL into the file
        self::assertTrue(EventStore::check($path)['ok']);

        self::damageLeafPage($path);
        $report = EventStore::check($path);
        self::assertFalse($report['ok']);
        self::assertNotEmpty($report['problems']);

        $s = $this->open();
        [$before, , $stuck, $error] = self::readAll($s, '0');
        self::assertInstanceOf(CorruptException::class, $error);
        self::assertSame(Status::CORRUPT, $error->getCode());
        self::assertStringContainsString('corrupt', $error->getMessage());
        self::assertLessThan(self::EVENTS, count($before));
        try {
            $s->fetch([1, 2, 3], $stuck, 100, 'sequential');
            self::fail('the damaged page fails every fetch that crosses it');
        } catch (CorruptException) {
        }
        $s->close();

        $dest = $this->dir . '/salvaged.db';
        $r = EventStore::salvage($path, $dest);
        self::assertTrue($r['dest_ok']);
        self::assertTrue($r['lost_exact']);
        self::assertGreaterThan(0, $r['events_lost']);
        self::assertSame(self::EVENTS, $r['events_copied'] + $r['events_lost']);
        self::assertSame(self::EVENTS, $r['sequence']);
        self::assertSame(1, $r['cursors_copied']);
        self::assertTrue(EventStore::check($dest)['ok']);
        try {
            EventStore::salvage($path, $dest);
            self::fail('an existing destination is refused');
        } catch (InvalidArgumentException) {
        }

        $s = $this->open([], 'salvaged.db');
        [$rest, $gap, , $error] = self::readAll($s, $stuck);
        self::assertNull($error);
        self::assertTrue($gap, 'the lost events are reported as a gap');
        $lost = [];
        foreach ($r['lost_ranges'] as [$lo, $hi]) {
            $lost = array_merge($lost, range($lo, $hi));
        }
        $all = array_merge($before, $rest);
        sort($all);
        $kept = array_values(array_diff(range(1, self::EVENTS), $lost));
        self::assertSame($kept, $all, 'every other event, with its id, once');
        self::assertNotNull($s->loadCursor('reader'), 'consumer cursors are copied');
    }
}
