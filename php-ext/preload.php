<?php

/**
 * Production loader: run once per server start by opcache.preload, so that requests get the
 * library with FFI::scope('LMSRT') and never parse the header (LmsRealtime\Library tries the
 * scope first). It also compiles the package's classes into opcache.
 *
 * PHP-FPM whose master runs as a normal user (or any SAPI not running as root):
 *
 *     ffi.enable = preload
 *     opcache.enable = 1
 *     opcache.preload = /path/to/php-ext/preload.php
 *     ; the library: LMSRT_LIBRARY in the environment, else the crate's target/ beside this package
 *
 * This script then loads the header with FFI::load(). FFI::load() resolves FFI_LIB with
 * dlopen(), against the working directory for a relative path, so it loads a temporary copy of
 * the bundled header whose FFI_LIB is the library's absolute path.
 *
 * PHP-FPM whose master runs as root needs opcache.preload_user, and PHP refuses FFI::load()
 * during such a preload. Write the header once at deploy time and let PHP load it at startup:
 *
 *     php /path/to/php-ext/bin/write-header.php /etc/lms/lms_realtime.h /usr/local/lib/liblms_realtime.so
 *
 *     ffi.enable = preload
 *     ffi.preload = /etc/lms/lms_realtime.h
 *     opcache.preload = /path/to/php-ext/preload.php   ; still worth it for the classes
 *     opcache.preload_user = www-data
 *
 * This script sees the scope already loaded and leaves it alone.
 */

declare(strict_types=1);

(static function (): void {
    // Load (and so preload) every class of the package, parents first via the autoloader.
    $src = __DIR__ . '/src/';
    $autoload = static function (string $class) use ($src): void {
        if (str_starts_with($class, 'LmsRealtime\\')) {
            $file = $src . str_replace('\\', '/', substr($class, strlen('LmsRealtime\\'))) . '.php';
            if (is_file($file)) {
                require_once $file;
            }
        }
    };
    spl_autoload_register($autoload);
    $files = new RecursiveIteratorIterator(new RecursiveDirectoryIterator($src, FilesystemIterator::SKIP_DOTS));
    foreach ($files as $file) {
        $relative = substr((string) $file, strlen($src), -strlen('.php'));
        $class = 'LmsRealtime\\' . str_replace('/', '\\', $relative);
        class_exists($class) || interface_exists($class);
    }
    spl_autoload_unregister($autoload);

    // Loaded already by ffi.preload (the way to go when opcache.preload_user is in force)?
    try {
        FFI::scope(LmsRealtime\Library::SCOPE);
        return;
    } catch (FFI\Exception) {
    }

    $library = LmsRealtime\Library::resolvePath();
    $real = realpath($library);
    if ($real !== false) {
        $library = $real;
    }
    $header = tempnam(sys_get_temp_dir(), 'lmsrt-h-');
    if ($header === false) {
        throw new RuntimeException('lms-realtime preload: cannot create a temporary header file');
    }
    try {
        file_put_contents($header, LmsRealtime\Library::headerFor($library));
        try {
            $ffi = FFI::load($header);
        } catch (FFI\Exception $e) {
            throw new RuntimeException(
                'lms-realtime preload: FFI::load() failed (' . $e->getMessage() . '). When PHP runs '
                . 'as root with opcache.preload_user, load the header with ffi.preload instead: '
                . 'see bin/write-header.php',
                0,
                $e
            );
        }
        if ($ffi === null) {
            throw new RuntimeException("lms-realtime preload: FFI::load() failed for $library");
        }
    } finally {
        @unlink($header);
    }
})();
