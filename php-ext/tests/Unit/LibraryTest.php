<?php

declare(strict_types=1);

namespace LmsRealtime\Tests\Unit;

use LmsRealtime\Exception\LibraryNotFoundException;
use LmsRealtime\Library;
use PHPUnit\Framework\TestCase;

/**
 * Library discovery: explicit path, then LMSRT_LIBRARY, then the library beside the package
 * (the WordPress plugin's lib/), then the build output; and the preload record.
 */
final class LibraryTest extends TestCase
{
    private string|false $savedEnv;
    private string $dir;

    protected function setUp(): void
    {
        $this->savedEnv = getenv('LMSRT_LIBRARY');
        $this->dir = sys_get_temp_dir() . '/lmsrt-libtest-' . bin2hex(random_bytes(4));
        mkdir($this->dir);
    }

    protected function tearDown(): void
    {
        putenv($this->savedEnv === false ? 'LMSRT_LIBRARY' : 'LMSRT_LIBRARY=' . $this->savedEnv);
        $files = new \RecursiveIteratorIterator(
            new \RecursiveDirectoryIterator($this->dir, \FilesystemIterator::SKIP_DOTS),
            \RecursiveIteratorIterator::CHILD_FIRST
        );
        foreach ($files as $f) {
            $f->isDir() && !$f->isLink() ? rmdir((string) $f) : unlink((string) $f);
        }
        rmdir($this->dir);
    }

    private function file(string $name): string
    {
        $p = $this->dir . '/' . $name;
        touch($p);
        return $p;
    }

    public function testTheExplicitPathComesFirstThenTheEnvironment(): void
    {
        $explicit = $this->file('a.so');
        $env = $this->file('b.so');
        putenv("LMSRT_LIBRARY=$env");
        self::assertSame($explicit, Library::resolvePath($explicit));
        self::assertSame($env, Library::resolvePath(null));
        self::assertSame($env, Library::resolvePath(''));
    }

    public function testAMissingExplicitOrEnvironmentPathIsAnErrorNotAFallback(): void
    {
        putenv('LMSRT_LIBRARY=' . $this->dir . '/missing-env.so');
        try {
            Library::resolvePath(null);
            self::fail('expected LibraryNotFoundException');
        } catch (LibraryNotFoundException $e) {
            self::assertStringContainsString('missing-env.so', $e->getMessage());
            self::assertStringContainsString('LMSRT_LIBRARY', $e->getMessage());
        }
        $this->expectException(LibraryNotFoundException::class);
        $this->expectExceptionMessage('the explicit path');
        Library::resolvePath($this->dir . '/missing.so');
    }

    public function testABareFileNameIsLeftToTheDynamicLoader(): void
    {
        putenv('LMSRT_LIBRARY');
        self::assertSame('liblms_realtime.so', Library::resolvePath('liblms_realtime.so'));
    }

    public function testBuildOutputsAreTheCratesTargetDirectory(): void
    {
        $outputs = Library::buildOutputs();
        $root = dirname(__DIR__, 3);
        self::assertContains($root . '/target/release/liblms_realtime.so', $outputs);
        self::assertContains($root . '/target/debug/liblms_realtime.so', $outputs);
    }

    public function testHeaderForSetsAnAbsoluteFfiLibAndKeepsTheRest(): void
    {
        $h = Library::headerFor('/opt/lms/lib/liblms_realtime.so');
        self::assertStringContainsString("#define FFI_LIB \"/opt/lms/lib/liblms_realtime.so\"\n", $h);
        self::assertStringContainsString('#define FFI_SCOPE "LMSRT"', $h);
        self::assertSame(1, substr_count($h, '#define FFI_LIB'));
        self::assertStringContainsString('lmsrt_store_open', $h);
    }

    public function testCandidatesAreInSearchOrder(): void
    {
        putenv('LMSRT_LIBRARY=/env/liblms_realtime.so');
        $c = Library::candidates('/explicit/liblms_realtime.so');
        self::assertSame(['the explicit path', '/explicit/liblms_realtime.so'], $c[0]);
        self::assertSame(['LMSRT_LIBRARY', '/env/liblms_realtime.so'], $c[1]);
        self::assertSame(['the bundled library', dirname(__DIR__, 3) . '/liblms_realtime.so'], $c[2]);
        self::assertSame(Library::buildOutputs(), array_column(array_slice($c, 3), 1));
        putenv('LMSRT_LIBRARY');
        self::assertSame(
            'the bundled library',
            Library::candidates()[0][0],
            'nothing explicit: the bundled library first'
        );
    }

    /**
     * The package as the WordPress plugin installs it (`<plugin>/lib/php-ext/`, the library in
     * `<plugin>/lib/`), in a child PHP (Library's own directory decides where it looks).
     *
     * @param array<string, string> $env
     * @return array{resolved?: string, error?: string, candidates: list<array{0: string, 1: string}>}
     */
    private function resolveInstalled(array $env, ?string $explicit = null): array
    {
        $pkg = $this->dir . '/plugin/lib/php-ext';
        if (!is_dir($pkg)) {
            mkdir($pkg . '/src/Exception', 0777, true);
            $src = dirname(__DIR__, 2) . '/src';
            copy($src . '/Library.php', $pkg . '/src/Library.php');
            foreach (glob($src . '/Exception/*.php') ?: [] as $f) {
                copy($f, $pkg . '/src/Exception/' . basename($f));
            }
        }
        $code = 'spl_autoload_register(function ($c) { $f = ' . var_export($pkg . '/src/', true)
            . ' . str_replace("\\\\", "/", substr($c, 12)) . ".php"; if (is_file($f)) require $f; });'
            . '$out = ["candidates" => LmsRealtime\Library::candidates($argv[1] ?? null)];'
            . 'try { $out["resolved"] = LmsRealtime\Library::resolvePath($argv[1] ?? null); }'
            . 'catch (Throwable $e) { $out["error"] = get_class($e) . ": " . $e->getMessage(); }'
            . 'echo json_encode($out);';
        $cmd = [PHP_BINARY, '-r', $code];
        if ($explicit !== null) {
            $cmd[] = $explicit;
        }
        $base = getenv();
        unset($base['LMSRT_LIBRARY'], $base['CARGO_TARGET_DIR']);
        $proc = proc_open($cmd, [1 => ['pipe', 'w'], 2 => ['pipe', 'w']], $pipes, $this->dir, $env + $base);
        self::assertIsResource($proc);
        $out = (string) stream_get_contents($pipes[1]);
        $err = (string) stream_get_contents($pipes[2]);
        fclose($pipes[1]);
        fclose($pipes[2]);
        self::assertSame(0, proc_close($proc), $out . $err);
        return json_decode($out, true, 512, JSON_THROW_ON_ERROR);
    }

    public function testAnInstalledPluginFindsTheLibraryInItsLibDirectory(): void
    {
        mkdir($this->dir . '/target/release', 0777, true);
        $built = $this->dir . '/target/release/liblms_realtime.so';
        $env = ['CARGO_TARGET_DIR' => $this->dir . '/target'];

        // Only a build output: it is found.
        touch($built);
        self::assertSame($built, $this->resolveInstalled($env)['resolved'] ?? null);

        // The bundled library wins over a build output, even a newer one.
        $bundled = realpath($this->dir) . '/plugin/lib/liblms_realtime.so';
        touch($bundled, time() - 60);
        $r = $this->resolveInstalled($env);
        self::assertSame($bundled, $r['resolved'] ?? null, json_encode($r));
        self::assertSame(['the bundled library', $bundled], $r['candidates'][0]);

        // LMSRT_LIBRARY wins over the bundled library; an explicit path over both.
        $env['LMSRT_LIBRARY'] = $this->file('env.so');
        self::assertSame($env['LMSRT_LIBRARY'], $this->resolveInstalled($env)['resolved'] ?? null);
        $explicit = $this->file('explicit.so');
        self::assertSame($explicit, $this->resolveInstalled($env, $explicit)['resolved'] ?? null);

        // Nothing anywhere: the error names the bundled place.
        unlink($bundled);
        unlink($built);
        unset($env['LMSRT_LIBRARY']);
        $r = $this->resolveInstalled($env);
        self::assertArrayNotHasKey('resolved', $r);
        self::assertStringContainsString('LibraryNotFoundException', $r['error']);
        self::assertStringContainsString($bundled, $r['error']);
    }

    public function testThePreloadRecordIsReadOnlyFromAFileOwnedByTheUidItNames(): void
    {
        if (!function_exists('posix_geteuid')) {
            self::markTestSkipped('no posix extension');
        }
        $script = $this->dir . '/preload.php';
        touch($script);
        $prefix = Library::preloadStatusPrefix($script);
        self::assertMatchesRegularExpression('#^/.+/lms-realtime-preload-[0-9a-f]{12}\.$#', $prefix);
        self::assertNull(Library::preloadStatus($script));
        $uid = posix_geteuid();
        $files = [$prefix . $uid . '.json', $prefix . ($uid + 1) . '.json'];
        try {
            file_put_contents($files[0], json_encode(['ok' => false, 'error' => 'mine', 'time' => 100]));
            // Named after another uid but owned by this one: not trusted.
            file_put_contents($files[1], json_encode(['ok' => true, 'error' => null, 'time' => 200]));
            $status = Library::preloadStatus($script);
            self::assertIsArray($status);
            self::assertSame('mine', $status['error']);
            self::assertSame($files[0], $status['file']);
        } finally {
            array_map('unlink', array_filter($files, 'is_file'));
        }
    }
}
