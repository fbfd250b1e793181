<?php

declare(strict_types=1);

namespace LmsRealtime\Tests\Integration;

use PHPUnit\Framework\TestCase;

/**
 * The README's PHP example is `examples/quickstart.php`, word for word, and it runs as written:
 * a newcomer who pastes it gets what the README promises.
 */
final class ReadmeExampleTest extends TestCase
{
    private const EXAMPLE = __DIR__ . '/../../examples/quickstart.php';

    public function testReadmeShowsTheExampleFile(): void
    {
        $readme = file_get_contents(__DIR__ . '/../../../README.md');
        self::assertNotFalse($readme);
        self::assertSame(1, preg_match('/```php\n(<\?php\n.*?)```/s', $readme, $m), 'README has a ```php block');
        self::assertSame(file_get_contents(self::EXAMPLE), $m[1], 'README block differs from examples/quickstart.php');
    }

    public function testExampleRunsAsWritten(): void
    {
        $cmd = [PHP_BINARY, '-d', 'ffi.enable=1', self::EXAMPLE];
        $proc = proc_open($cmd, [1 => ['pipe', 'w'], 2 => ['pipe', 'w']], $pipes, sys_get_temp_dir());
        self::assertIsResource($proc);
        $out = stream_get_contents($pipes[1]);
        $err = stream_get_contents($pipes[2]);
        $status = proc_close($proc);
        self::assertSame(0, $status, "quickstart.php failed: $err");
        self::assertSame('', $err);
        self::assertMatchesRegularExpression('/^\d+ message_create hi\n$/', (string) $out);
    }
}
