<?php

/**
 * Production loader, run once per server start by opcache.preload: it compiles the package's
 * classes into opcache and makes sure the FFI scope `LMSRT` is there, so that requests take the
 * library with FFI::scope('LMSRT') and never parse the header (LmsRealtime\Library tries the
 * scope first).
 *
 * PHP-FPM's master usually runs as root, so opcache.preload needs opcache.preload_user, and PHP
 * then refuses FFI::load() during the preload. So PHP itself loads the header at start-up
 * (ffi.preload), from a file written once with an absolute FFI_LIB:
 *
 *     php /path/to/php-ext/bin/write-header.php /etc/php/8.2/fpm/lms_realtime.h [library]
 *
 *     ffi.enable = preload
 *     ffi.preload = /etc/php/8.2/fpm/lms_realtime.h
 *     opcache.enable = 1
 *     opcache.preload = /path/to/php-ext/preload.php
 *     opcache.preload_user = www-data
 *
 * This script then finds the scope loaded and checks its ABI version. It is needed even so:
 * under ffi.enable=preload PHP lets only preloaded code call FFI (FFI::scope() included), so the
 * package's classes must be preloaded to use the scope. A master that does not
 * run as root (no opcache.preload_user) may leave out ffi.preload: this script then loads the
 * header itself with FFI::load() (from a temporary copy whose FFI_LIB is the library's absolute
 * path, found as LmsRealtime\Library::resolvePath() finds it: LMSRT_LIBRARY in the environment,
 * ../liblms_realtime.so beside this package, the crate's target/).
 *
 * Nothing here throws: an uncaught error in a preload script stops PHP from serving at all.
 * Every failure (FFI missing or refused, no library or the wrong one, an unreadable header, a
 * class that fails to compile) leaves the scope unloaded, writes one line to PHP's error log
 * and is recorded for the application (LmsRealtime\Library::preloadStatus(): a small JSON file
 * in sys_temp_dir, else /tmp), which then falls back (the WordPress plugin: to its table path,
 * with an admin notice giving the reason). PHP's own start-up errors are beyond its reach: a
 * missing opcache.preload file, or an ffi.preload header that cannot be loaded, stops PHP
 * before this script runs (check with php-fpm -t before restarting).
 */

declare(strict_types=1);

(static function (): void {
    $dir = __DIR__;
    $script = realpath(__FILE__) ?: __FILE__;
    $uid = function_exists('posix_geteuid') ? posix_geteuid() : null;
    $status = [
        'ok' => false,
        'via' => null,
        'library' => null,
        'header' => null,
        'error' => null,
        'script' => $script,
        'time' => time(),
        'pid' => getmypid(),
        'user' => $uid === null ? null : (posix_getpwuid($uid)['name'] ?? (string) $uid),
        'failed_classes' => [],
    ];

    try {
        // 1. Compile every class of the package (parents first, through the autoloader).
        $src = $dir . '/src/';
        $autoload = static function (string $class) use ($src): void {
            if (str_starts_with($class, 'LmsRealtime\\')) {
                $file = $src . str_replace('\\', '/', substr($class, strlen('LmsRealtime\\'))) . '.php';
                if (is_file($file)) {
                    require_once $file;
                }
            }
        };
        spl_autoload_register($autoload);
        try {
            $files = new RecursiveIteratorIterator(new RecursiveDirectoryIterator($src, FilesystemIterator::SKIP_DOTS));
            foreach ($files as $file) {
                $relative = substr((string) $file, strlen($src), -strlen('.php'));
                $class = 'LmsRealtime\\' . str_replace('/', '\\', $relative);
                try {
                    class_exists($class) || interface_exists($class);
                } catch (Throwable $e) {
                    $status['failed_classes'][$class] = get_class($e) . ': ' . $e->getMessage();
                }
            }
        } finally {
            spl_autoload_unregister($autoload);
        }
        if ($status['failed_classes'] !== []) {
            throw new RuntimeException(sprintf(
                'classes of the binding failed to compile (%s), so FFI was left unloaded',
                implode('; ', array_map(
                    static fn (string $c, string $why): string => "$c: $why",
                    array_keys($status['failed_classes']),
                    $status['failed_classes']
                ))
            ));
        }

        // 2. The scope: loaded by ffi.preload, else loaded here.
        if (!extension_loaded('ffi')) {
            throw new RuntimeException('the PHP FFI extension (ext-ffi) is not loaded');
        }
        $library = LmsRealtime\Library::class;
        try {
            $scope = FFI::scope($library::SCOPE);
        } catch (FFI\Exception) {
            $scope = null;
        }
        if ($scope !== null) {
            $status['via'] = 'ffi.preload';
            $status['header'] = (string) ini_get('ffi.preload');
            if (preg_match('/^#define FFI_LIB "(.*)"$/m', (string) @file_get_contents($status['header']), $m) === 1) {
                $status['library'] = stripslashes($m[1]);
            }
            $abi = $scope->lmsrt_abi_version();
            if ($abi !== $library::ABI_VERSION) {
                throw new RuntimeException(sprintf(
                    'the library of ffi.preload (%s) implements ABI version %d, this package needs %d: '
                    . 'write the header again for the library bundled with this package (php %s/bin/write-header.php)',
                    ini_get('ffi.preload'),
                    $abi,
                    $library::ABI_VERSION,
                    $dir
                ));
            }
            $status['ok'] = true;
            return;
        }

        $path = $library::resolvePath();
        $path = realpath($path) ?: $path;
        $status['library'] = $path;
        // Load and check the library on its own before registering the scope: a scope, once
        // registered, cannot be taken back.
        try {
            $abi = FFI::cdef('uint32_t lmsrt_abi_version(void);', $path)->lmsrt_abi_version();
        } catch (FFI\Exception $e) {
            throw new RuntimeException("cannot load the library $path: " . $e->getMessage(), 0, $e);
        }
        if ($abi !== $library::ABI_VERSION) {
            throw new RuntimeException(sprintf(
                'the library %s implements ABI version %d, this package needs %d: install the matching library',
                $path,
                $abi,
                $library::ABI_VERSION
            ));
        }
        $text = $library::headerFor($path);
        $header = tempnam(sys_get_temp_dir(), 'lmsrt-h-');
        if ($header === false || file_put_contents($header, $text) === false) {
            throw new RuntimeException('cannot write a temporary header in ' . sys_get_temp_dir());
        }
        try {
            $ffi = FFI::load($header);
        } catch (FFI\Exception $e) {
            throw new RuntimeException(sprintf(
                'FFI::load() failed (%s). When PHP runs as root with opcache.preload_user, let PHP '
                . 'load the header instead: php %s/bin/write-header.php <header file> %s, then '
                . 'ffi.preload=<header file>',
                $e->getMessage(),
                $dir,
                $path
            ), 0, $e);
        } finally {
            @unlink($header);
        }
        if ($ffi === null) {
            throw new RuntimeException("FFI::load() failed for $path");
        }
        $status['via'] = 'FFI::load';
        $status['ok'] = true;
    } catch (Throwable $e) {
        $status['ok'] = false;
        $status['error'] = $e->getMessage();
    } finally {
        // The record LmsRealtime\Library::preloadStatus() reads: written to a fresh file, then
        // renamed over the last one (never through a link planted at the final name).
        $written = 'no record written (posix extension missing)';
        if ($uid !== null) {
            $tmp = (string) ini_get('sys_temp_dir');
            $tmp = rtrim($tmp === '' ? '/tmp' : $tmp, '/');
            $file = $tmp . '/lms-realtime-preload-' . substr(sha1($script), 0, 12) . '.' . $uid . '.json';
            $fresh = @tempnam($tmp, 'lms-realtime-preload-');
            $json = json_encode($status, JSON_UNESCAPED_SLASHES | JSON_PRETTY_PRINT | JSON_INVALID_UTF8_SUBSTITUTE);
            if (
                $fresh !== false && $json !== false && @file_put_contents($fresh, $json . "\n") !== false
                && @chmod($fresh, 0644) && @rename($fresh, $file)
            ) {
                $written = "recorded in $file";
            } else {
                $written = "could not record it in $file";
                if ($fresh !== false) {
                    @unlink($fresh);
                }
            }
        }
        if (!$status['ok']) {
            error_log(sprintf(
                'lms-realtime preload (%s): %s. The FFI scope %s stays unloaded; requests fall back '
                . '(the WordPress plugin: its table path). %s',
                $script,
                rtrim((string) $status['error'], '.'),
                'LMSRT',
                $written
            ));
        }
    }
})();
