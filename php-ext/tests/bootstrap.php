<?php

/**
 * PHPUnit bootstrap without Composer: a PSR-4 autoloader for the package and its tests, so
 * `phpunit -c php-ext/phpunit.xml.dist` works with Debian's phpunit and no `composer install`.
 * With Composer, vendor/autoload.php is used instead.
 */

declare(strict_types=1);

$vendor = __DIR__ . '/../vendor/autoload.php';
if (is_file($vendor)) {
    require $vendor;
    return;
}

spl_autoload_register(static function (string $class): void {
    foreach (['LmsRealtime\\Tests\\' => __DIR__ . '/', 'LmsRealtime\\' => __DIR__ . '/../src/'] as $prefix => $dir) {
        if (str_starts_with($class, $prefix)) {
            $file = $dir . str_replace('\\', '/', substr($class, strlen($prefix))) . '.php';
            if (is_file($file)) {
                require $file;
            }
            return;
        }
    }
});
