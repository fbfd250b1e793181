<?php

declare(strict_types=1);

namespace LmsRealtime\Tests\Integration;

use LmsRealtime\EventStore;
use LmsRealtime\Exception\StorageException;
use LmsRealtime\Status;

/**
 * A full disk under a PHP worker: the worker lives and gets a StorageException (a sparse shared
 * file used to kill it with SIGBUS, exit 135, on its first limiter check), appends fail with
 * StorageException, and once space returns everything works with nothing acknowledged lost.
 *
 * The disk is a tmpfs of 8 MiB mounted for the test, which needs root; outside CI a refused
 * mount skips the test, in CI it fails it.
 */
final class FullDiskTest extends IntegrationTestCase
{
    private string $disk = '';
    private ?EventStore $store = null;

    protected function setUp(): void
    {
        parent::setUp();
        $this->disk = $this->dir . '/disk';
        mkdir($this->disk);
        exec(sprintf('mount -t tmpfs -o size=8m tmpfs %s 2>&1', escapeshellarg($this->disk)), $out, $rc);
        if ($rc !== 0) {
            $this->disk = '';
            $why = 'mounting a tmpfs failed: ' . implode(' ', $out);
            $root = function_exists('posix_geteuid') && posix_geteuid() === 0;
            if (getenv('CI') !== false || $root) {
                self::fail($why);
            }
            self::markTestSkipped($why . ' (needs root)');
        }
    }

    protected function tearDown(): void
    {
        $this->store?->close();
        if ($this->disk !== '') {
            exec(sprintf('umount -l %s 2>&1', escapeshellarg($this->disk)));
        }
        parent::tearDown();
    }

    /** Runs the worker fixture on the database; returns its exit status and output. */
    private function worker(string $db): array
    {
        $proc = proc_open(
            [self::php(), '-d', 'ffi.enable=1', self::fixture('full_disk_worker.php'), $db],
            [1 => ['pipe', 'w'], 2 => ['pipe', 'w']],
            $pipes,
            null,
            self::childEnv()
        );
        self::assertIsResource($proc);
        $out = (string) stream_get_contents($pipes[1]);
        $err = (string) stream_get_contents($pipes[2]);
        fclose($pipes[1]);
        fclose($pipes[2]);
        return [proc_close($proc), trim($out), $err];
    }

    /** @return list<int> */
    private static function allIds(EventStore $store): array
    {
        $ids = [];
        $cursor = null;
        while (true) {
            $b = $store->fetch([1], $cursor, 1000, 'sequential');
            if ($b->events === []) {
                return $ids;
            }
            foreach ($b->events as $e) {
                $ids[] = $e->id;
            }
            $cursor = $b->cursor;
        }
    }

    public function testAWorkerOnAFullDiskGetsAStorageErrorAndRecovers(): void
    {
        $db = $this->disk . '/events.db';
        $this->store = EventStore::open($db);
        $acked = [];
        for ($i = 0; $i < 20; $i++) {
            $acked[] = $this->store->append('message_create', 1, ['i' => $i]);
        }

        // Fill the disk to its last page.
        $filler = $this->disk . '/filler';
        $f = fopen($filler, 'wb');
        foreach ([65536, 4096, 512, 1] as $chunk) {
            $buf = str_repeat("\xa5", $chunk);
            while (@fwrite($f, $buf) === $chunk && fflush($f)) {
            }
        }
        fclose($f);

        [$exit, $out, $err] = $this->worker($db);
        self::assertSame(0, $exit, "the worker died on a full disk: $out $err");
        self::assertSame(StorageException::class . ' ' . Status::STORAGE, $out, $err);

        $refused = null;
        for ($i = 0; $i < 100_000 && $refused === null; $i++) {
            try {
                $acked[] = $this->store->append('message_create', 1, ['pad' => str_repeat('x', 300)]);
            } catch (StorageException $e) {
                $refused = $e;
            }
        }
        self::assertNotNull($refused, 'appends on a full disk never failed');
        self::assertSame(Status::STORAGE, $refused->getCode());

        unlink($filler);

        [$exit, $out, $err] = $this->worker($db);
        self::assertSame([0, 'allowed'], [$exit, $out], $err);
        $acked[] = $this->store->append('message_create', 1, ['after' => true]);
        self::assertSame($acked, self::allIds($this->store), 'an acknowledged event was lost');
    }
}
