<?php

declare(strict_types=1);

namespace LmsRealtime\Tests\Integration;

use LmsRealtime\Library;

/**
 * Production mode: ffi.enable=preload with opcache.preload. Requests then take the library from
 * the preloaded scope "LMSRT" and never parse the header. Two set-ups are checked, each in a
 * child PHP process:
 *
 * - preload.php loading the header with FFI::load() (PHP not running as root);
 * - ffi.preload with a header written by bin/write-header.php, plus preload.php for the classes
 *   (the set-up for a root FPM master, which must use opcache.preload_user).
 */
final class PreloadTest extends IntegrationTestCase
{
    protected function tearDown(): void
    {
        // preload.php's record of each start (see PreloadFailureTest).
        array_map('unlink', glob(Library::preloadStatusPrefix(self::preloadScript()) . '*') ?: []);
        parent::tearDown();
    }

    /** @param list<string> $prefix @return array<string, mixed> */
    private function probe(array $ini, array $prefix = []): array
    {
        $cmd = array_merge($prefix, [self::php()]);
        foreach ($ini as $k => $v) {
            $cmd[] = '-d';
            $cmd[] = "$k=$v";
        }
        $cmd[] = self::fixture('probe.php');
        $cmd[] = $this->dir . '/preload.db';
        $proc = proc_open($cmd, [1 => ['pipe', 'w'], 2 => ['pipe', 'w']], $pipes, $this->dir, self::childEnv());
        self::assertIsResource($proc);
        $out = stream_get_contents($pipes[1]);
        $err = stream_get_contents($pipes[2]);
        fclose($pipes[1]);
        fclose($pipes[2]);
        self::assertSame(0, proc_close($proc), "$out\n$err");
        $last = trim((string) $out);
        $last = substr($last, (int) strrpos("\n" . $last, "\n"));
        return json_decode($last, true, 512, JSON_THROW_ON_ERROR);
    }

    private static function preloadScript(): string
    {
        return dirname(__DIR__, 2) . '/preload.php';
    }

    private static function assertPreloaded(array $r): void
    {
        self::assertSame('scope ' . Library::SCOPE, $r['source'], 'the request used the preloaded scope');
        self::assertSame('preload', $r['ffi_enable']);
        self::assertGreaterThan(0, $r['id']);
        self::assertGreaterThanOrEqual(1, $r['fetched']);
        self::assertContains('LmsRealtime\\EventStore', $r['preloaded_classes']);
        self::assertContains('LmsRealtime\\Guards', $r['preloaded_classes']);
        self::assertSame(['allowed' => true, 'released' => true, 'bucket' => 3230], $r['guards']);
    }

    public function testPreloadScriptWithFfiLoad(): void
    {
        $prefix = [];
        if (function_exists('posix_geteuid') ? posix_geteuid() === 0 : trim((string) shell_exec('id -u')) === '0') {
            // PHP refuses FFI::load() in a preload that runs as root; run the child as nobody.
            $runuser = trim((string) shell_exec('command -v runuser'));
            if ($runuser === '') {
                self::markTestSkipped('running as root without runuser: cannot test FFI::load() preloading');
            }
            $prefix = [$runuser, '-u', 'nobody', '--'];
        }
        $r = $this->probe([
            'ffi.enable' => 'preload',
            'opcache.enable' => '1',
            'opcache.enable_cli' => '1',
            'opcache.preload' => self::preloadScript(),
        ], $prefix);
        self::assertPreloaded($r);
    }

    public function testFfiPreloadHeaderWithPreloadedClasses(): void
    {
        $header = $this->dir . '/lms_realtime.h';
        $out = shell_exec(implode(' ', array_map('escapeshellarg', [
            self::php(), dirname(__DIR__, 2) . '/bin/write-header.php', $header, Library::resolvePath(),
        ])) . ' 2>&1');
        self::assertFileExists($header, (string) $out);
        self::assertMatchesRegularExpression(
            '/^#define FFI_LIB "\/.+liblms_realtime\.so"$/m',
            (string) file_get_contents($header)
        );
        $ini = [
            'ffi.enable' => 'preload',
            'ffi.preload' => $header,
            'opcache.enable' => '1',
            'opcache.enable_cli' => '1',
            'opcache.preload' => self::preloadScript(),
        ];
        if (trim((string) shell_exec('id -u')) === '0') {
            $ini['opcache.preload_user'] = 'root';
        }
        self::assertPreloaded($this->probe($ini));
    }

    public function testWithoutPreloadTheCliParsesTheHeader(): void
    {
        $r = $this->probe(['ffi.enable' => '1']);
        self::assertStringEndsWith('liblms_realtime.so', $r['source']);
        self::assertSame([], $r['preloaded_classes']);
        self::assertSame(['allowed' => true, 'released' => true, 'bucket' => 3230], $r['guards']);
    }
}
