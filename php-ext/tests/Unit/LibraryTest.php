<?php

declare(strict_types=1);

namespace LmsRealtime\Tests\Unit;

use LmsRealtime\Exception\LibraryNotFoundException;
use LmsRealtime\Library;
use PHPUnit\Framework\TestCase;

/** Library discovery: explicit path, then LMSRT_LIBRARY, then the build output. */
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
        array_map('unlink', glob($this->dir . '/*') ?: []);
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
}
