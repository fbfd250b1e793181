<?php

/**
 * The package's classes without Composer: `require 'php-ext/autoload.php';` registers a PSR-4
 * autoloader for `LmsRealtime\`. With Composer, its `vendor/autoload.php` does the same.
 */

declare(strict_types=1);

spl_autoload_register(static function (string $class): void {
    $prefix = 'LmsRealtime\\';
    if (!str_starts_with($class, $prefix)) {
        return;
    }
    $file = __DIR__ . '/src/' . str_replace('\\', '/', substr($class, strlen($prefix))) . '.php';
    if (is_file($file)) {
        require $file;
    }
});
