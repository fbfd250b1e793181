<?php

/**
 * Writes the PHP FFI header with an absolute FFI_LIB, for ffi.preload (see ../preload.php).
 *
 * Usage: php write-header.php <output file> [library path]
 * The library path defaults to what LmsRealtime\Library::resolvePath() finds: LMSRT_LIBRARY,
 * then the library beside this package (../../liblms_realtime.so: in the WordPress plugin,
 * <plugin>/lib/liblms_realtime.so), then the crate's newest build output.
 *
 * PHP does not start at all when the library of an ffi.preload header fails to load, so the
 * library is loaded and its ABI version checked here first (when this PHP allows FFI); nothing
 * is written for a library that fails.
 */

declare(strict_types=1);

require_once __DIR__ . '/../src/Exception/LmsRealtimeException.php';
require_once __DIR__ . '/../src/Exception/LibraryNotFoundException.php';
require_once __DIR__ . '/../src/Library.php';

use LmsRealtime\Library;

if ($argc < 2 || $argc > 3) {
    fwrite(STDERR, "usage: php write-header.php <output file> [library path]\n");
    exit(2);
}
try {
    $library = Library::resolvePath($argv[2] ?? null);
} catch (LmsRealtime\Exception\LibraryNotFoundException $e) {
    fwrite(STDERR, $e->getMessage() . "\n");
    exit(1);
}
$absolute = realpath($library);
if ($absolute === false) {
    fwrite(STDERR, "library not found: $library\n");
    exit(1);
}
$check = 'not checked: this PHP does not allow FFI (ext-ffi missing or ffi.enable off)';
$ffiEnable = strtolower((string) ini_get('ffi.enable'));
if (extension_loaded('ffi') && !in_array($ffiEnable, ['', '0', 'false', 'off', 'no'], true)) {
    try {
        $abi = FFI::cdef('uint32_t lmsrt_abi_version(void);', $absolute)->lmsrt_abi_version();
    } catch (FFI\Exception $e) {
        fwrite(STDERR, "cannot load $absolute: {$e->getMessage()}\n");
        exit(1);
    }
    if ($abi !== Library::ABI_VERSION) {
        $needs = Library::ABI_VERSION;
        fwrite(STDERR, sprintf("%s implements ABI version %d, this package needs %d\n", $absolute, $abi, $needs));
        exit(1);
    }
    $check = "ABI $abi";
}
try {
    $header = Library::headerFor($absolute);
} catch (LmsRealtime\Exception\LibraryNotFoundException $e) {
    fwrite(STDERR, $e->getMessage() . "\n");
    exit(1);
}
if (file_put_contents($argv[1], $header) === false) {
    fwrite(STDERR, "cannot write {$argv[1]}\n");
    exit(1);
}
echo "wrote {$argv[1]} (FFI_LIB $absolute, $check)\n";
