<?php

declare(strict_types=1);

namespace LmsRealtime\Tests\Integration;

/**
 * A `redis-server` of the tests' own, on a free loopback port, keeping nothing on disk (its
 * directory is a fresh temporary one), stopped when the object goes (as `tests/redis_common`
 * does for the Rust tests). Nothing assumes a Redis already running.
 */
final class RedisServer
{
    /** @var resource|null */
    private $proc = null;
    private int $port;
    private string $dir;
    private static int $stores = 0;

    public function __construct()
    {
        $this->port = self::freePort();
        $this->dir = sys_get_temp_dir() . '/lmsrt-php-redis-' . getmypid() . '-' . bin2hex(random_bytes(4));
        mkdir($this->dir, 0700);
        $this->start();
    }

    public function __destruct()
    {
        $this->kill();
        @rmdir($this->dir);
    }

    /** Starts the server (again, empty) on the same port; fails if it does not answer in 10 s. */
    public function start(): void
    {
        if ($this->proc !== null) {
            throw new \LogicException('redis-server is already running');
        }
        $cmd = ['redis-server', '--port', (string) $this->port, '--bind', '127.0.0.1', '--save', '',
            '--appendonly', 'no', '--dir', $this->dir];
        $proc = proc_open($cmd, [0 => ['file', '/dev/null', 'r'], 1 => ['file', '/dev/null', 'w'],
            2 => ['file', '/dev/null', 'w']], $pipes);
        if (!is_resource($proc)) {
            throw new \RuntimeException('cannot start redis-server (php-ext/run-tests.sh installs it)');
        }
        $this->proc = $proc;
        $deadline = microtime(true) + 10;
        while ($this->command('PING') !== '+PONG') {
            if (!proc_get_status($proc)['running']) {
                throw new \RuntimeException("redis-server on port {$this->port} exited at start (is it installed?)");
            }
            if (microtime(true) > $deadline) {
                throw new \RuntimeException("redis-server on port {$this->port} did not answer PING within 10 s");
            }
            usleep(10_000);
        }
    }

    /** Kills the server with SIGKILL (no goodbye, as a crash) and waits for it to go. */
    public function kill(): void
    {
        if ($this->proc === null) {
            return;
        }
        proc_terminate($this->proc, 9);
        proc_close($this->proc);
        $this->proc = null;
    }

    public function port(): int
    {
        return $this->port;
    }

    /** A URL for a store no other test of this process uses (`?store=` keeps them apart). */
    public function url(): string
    {
        return sprintf('redis://127.0.0.1:%d/0?store=php%d_%d', $this->port, getmypid(), ++self::$stores);
    }

    /** Sends one inline command; the first line of the reply, or null when unreachable. */
    public function command(string $line): ?string
    {
        $s = @stream_socket_client("tcp://127.0.0.1:{$this->port}", $errno, $error, 1.0);
        if ($s === false) {
            return null;
        }
        stream_set_timeout($s, 5);
        fwrite($s, $line . "\r\n");
        $reply = fgets($s);
        fclose($s);
        return $reply === false ? null : rtrim($reply, "\r\n");
    }

    /** A loopback port free a moment ago. */
    public static function freePort(): int
    {
        $s = stream_socket_server('tcp://127.0.0.1:0', $errno, $error);
        if ($s === false) {
            throw new \RuntimeException("no free loopback port: $error");
        }
        $name = (string) stream_socket_get_name($s, false);
        fclose($s);
        return (int) substr($name, strrpos($name, ':') + 1);
    }
}
