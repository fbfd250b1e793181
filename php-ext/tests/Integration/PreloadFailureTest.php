<?php

declare(strict_types=1);

namespace LmsRealtime\Tests\Integration;

use LmsRealtime\Library;

/**
 * preload.php never throws: each failure leaves the scope unloaded, writes one line to PHP's
 * error log and records the reason (Library::preloadStatus()), and PHP goes on to serve. Each
 * case runs a child PHP with opcache.preload on a copy of the package laid out as the
 * WordPress plugin installs it (`<plugin>/lib/php-ext/`, the library in `<plugin>/lib/`).
 * PHP refuses FFI::load() in a preload as root, so those children run as nobody.
 */
final class PreloadFailureTest extends IntegrationTestCase
{
    private string $package;
    private string $bundled;

    protected function setUp(): void
    {
        parent::setUp();
        $root = dirname(__DIR__, 2);
        $this->package = $this->dir . '/plugin/lib/php-ext';
        mkdir($this->package, 0755, true);
        foreach (['src', 'include', 'bin'] as $sub) {
            self::copyTree("$root/$sub", "$this->package/$sub");
        }
        copy("$root/preload.php", "$this->package/preload.php");
        $this->bundled = $this->dir . '/plugin/lib/' . Library::FILE_NAME;
        copy(Library::resolvePath(), $this->bundled);
        chmod($this->dir . '/plugin', 0755);
        chmod($this->dir . '/plugin/lib', 0755);
    }

    protected function tearDown(): void
    {
        array_map('unlink', glob(Library::preloadStatusPrefix($this->package . '/preload.php') . '*') ?: []);
        parent::tearDown();
    }

    private static function copyTree(string $from, string $to): void
    {
        mkdir($to, 0755, true);
        foreach (scandir($from) ?: [] as $f) {
            if ($f !== '.' && $f !== '..') {
                is_dir("$from/$f") ? self::copyTree("$from/$f", "$to/$f") : copy("$from/$f", "$to/$f");
            }
        }
    }

    private static function isRoot(): bool
    {
        return function_exists('posix_geteuid') && posix_geteuid() === 0;
    }

    /**
     * Runs the probe under opcache.preload of the copy; PHP must start and answer.
     *
     * @param array<string, string> $ini extra settings
     * @param array<string, string> $env environment (LMSRT_LIBRARY is not inherited)
     * @return array{probe: array<string, mixed>, log: list<string>}
     */
    private function preload(array $ini = [], array $env = [], bool $asNobody = true): array
    {
        $prefix = [];
        if ($asNobody && self::isRoot()) {
            $prefix = ['runuser', '-u', 'nobody', '--'];
        }
        $log = $this->dir . '/php-errors.log';
        @unlink($log);
        $ini += [
            'ffi.enable' => 'preload',
            'opcache.enable' => '1',
            'opcache.enable_cli' => '1',
            'opcache.preload' => $this->package . '/preload.php',
            'error_log' => $log,
            'log_errors' => '1',
        ];
        $cmd = array_merge($prefix, [self::php()]);
        foreach ($ini as $k => $v) {
            array_push($cmd, '-d', "$k=$v");
        }
        array_push($cmd, self::fixture('preload_probe.php'), $this->package);
        $base = getenv();
        unset($base['LMSRT_LIBRARY'], $base['CARGO_TARGET_DIR']);
        $proc = proc_open($cmd, [1 => ['pipe', 'w'], 2 => ['pipe', 'w']], $pipes, $this->dir, $env + $base);
        self::assertIsResource($proc);
        $out = (string) stream_get_contents($pipes[1]);
        $err = (string) stream_get_contents($pipes[2]);
        fclose($pipes[1]);
        fclose($pipes[2]);
        self::assertSame(0, proc_close($proc), "PHP did not start or serve: $out\n$err");
        $lines = is_file($log) ? file($log, FILE_IGNORE_NEW_LINES) : [];
        return [
            'probe' => json_decode(trim($out), true, 512, JSON_THROW_ON_ERROR),
            'log' => array_values(array_filter($lines, static fn ($l) => str_contains($l, 'lms-realtime preload'))),
        ];
    }

    /** @param array{probe: array<string, mixed>, log: list<string>} $r */
    private function assertFailedWith(string $needle, array $r): array
    {
        $p = $r['probe'];
        self::assertFalse($p['scope'], 'the scope LMSRT stays unloaded');
        self::assertIsArray($p['status'], 'the failure is recorded');
        self::assertFalse($p['status']['ok']);
        self::assertStringContainsString($needle, (string) $p['status']['error']);
        self::assertSame(realpath($this->package . '/preload.php'), $p['status']['script']);
        self::assertCount(1, $r['log'], 'one line in the error log: ' . implode("\n", $r['log']));
        self::assertStringContainsString($needle, $r['log'][0]);
        self::assertStringContainsString('stays unloaded', $r['log'][0]);
        self::assertStringContainsString($p['status']['file'], $r['log'][0]);
        return $p['status'];
    }

    public function testItLoadsTheBundledLibraryAndRecordsSuccess(): void
    {
        $r = $this->preload();
        self::assertTrue($r['probe']['scope']);
        self::assertSame('scope ' . Library::SCOPE, $r['probe']['ffi']);
        self::assertTrue($r['probe']['status']['ok']);
        self::assertSame('FFI::load', $r['probe']['status']['via']);
        self::assertSame(realpath($this->bundled), $r['probe']['status']['library'], 'found beside lib/php-ext/');
        self::assertNull($r['probe']['status']['error']);
        self::assertContains('LmsRealtime\\EventStore', $r['probe']['preloaded_classes']);
        self::assertSame([], $r['log']);
    }

    public function testWithFfiPreloadItChecksTheScopeAndRecordsTheHeader(): void
    {
        $header = $this->dir . '/lms_realtime.h';
        $command = [
            'env',
            '-u',
            'LMSRT_LIBRARY',
            '-u',
            'CARGO_TARGET_DIR',
            self::php(),
            $this->package . '/bin/write-header.php',
            $header,
        ];
        exec(implode(' ', array_map('escapeshellarg', $command)) . ' 2>&1', $out, $rc);
        self::assertSame(0, $rc, implode("\n", $out));
        self::assertStringContainsString(
            'FFI_LIB ' . realpath($this->bundled) . ', ABI 1',
            implode("\n", $out),
            'write-header.php defaults to the bundled library'
        );
        $ini = ['ffi.preload' => $header];
        if (self::isRoot()) {
            $ini['opcache.preload_user'] = 'nobody';
        }
        $r = $this->preload($ini, [], false);
        self::assertTrue($r['probe']['scope']);
        self::assertTrue($r['probe']['status']['ok'], json_encode($r['probe']['status']));
        self::assertSame('ffi.preload', $r['probe']['status']['via']);
        self::assertSame($header, $r['probe']['status']['header']);
        self::assertSame(realpath($this->bundled), $r['probe']['status']['library']);
        self::assertSame([], $r['log']);
    }

    public function testAMissingLibraryIsRecordedNotThrown(): void
    {
        $missing = $this->dir . '/nowhere/liblms_realtime.so';
        $status = $this->assertFailedWith($missing, $this->preload([], ['LMSRT_LIBRARY' => $missing]));
        self::assertStringContainsString('LMSRT_LIBRARY', $status['error']);
        $status = $this->preload([], ['LMSRT_LIBRARY' => $missing])['probe'];
        self::assertContains(
            'LmsRealtime\\EventStore',
            $status['preloaded_classes'],
            'the classes are still preloaded'
        );
    }

    public function testFfiLoadRefusedUnderPreloadUserIsRecordedWithTheFix(): void
    {
        if (!self::isRoot()) {
            self::markTestSkipped('opcache.preload_user applies only when PHP runs as root');
        }
        $r = $this->preload(['opcache.preload_user' => 'nobody'], [], false);
        $status = $this->assertFailedWith('opcache.preload_user', $r);
        self::assertSame('nobody', $status['user']);
        self::assertSame(realpath($this->bundled), $status['library']);
        self::assertStringContainsString('ffi.preload=<header file>', $status['error']);
        self::assertStringContainsString(realpath($this->package) . '/bin/write-header.php', $status['error']);
    }

    public function testAnUnreadableHeaderIsRecorded(): void
    {
        chmod($this->package . '/include/lms_realtime.h', 0);
        if (!self::isRoot() && is_readable($this->package . '/include/lms_realtime.h')) {
            self::markTestSkipped('cannot make the header unreadable');
        }
        $this->assertFailedWith('cannot read the bundled header', $this->preload());
    }

    public function testAClassThatFailsToCompileLeavesFfiUnloaded(): void
    {
        file_put_contents($this->package . '/src/Broken.php', "<?php\nnamespace LmsRealtime;\nfinal class Broken {\n");
        $status = $this->assertFailedWith('LmsRealtime\\Broken: ParseError', $this->preload());
        self::assertArrayHasKey('LmsRealtime\\Broken', $status['failed_classes']);
        self::assertNull($status['via']);
    }

    public function testALibraryOfAnotherAbiIsNotLoaded(): void
    {
        $cc = trim((string) shell_exec('command -v cc'));
        if ($cc === '') {
            self::markTestSkipped('no C compiler to build a library of another ABI');
        }
        file_put_contents($this->dir . '/other.c', "unsigned int lmsrt_abi_version(void) { return 999; }\n");
        $other = $this->dir . '/libother.so';
        $source = escapeshellarg($this->dir . '/other.c');
        exec(escapeshellarg($cc) . ' -shared -fPIC -o ' . escapeshellarg($other) . ' ' . $source . ' 2>&1', $out, $rc);
        self::assertSame(0, $rc, implode("\n", $out));
        chmod($other, 0755);
        $this->assertFailedWith('implements ABI version 999', $this->preload([], ['LMSRT_LIBRARY' => $other]));
    }
}
