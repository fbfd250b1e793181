<?php

/**
 * Writes the PHP FFI header with an absolute FFI_LIB, for ffi.preload (see ../preload.php).
 *
 * Usage: php write-header.php <output file> [library path]
 * The library path defaults to LMSRT_LIBRARY, then the crate's newest build output.
 */

declare(strict_types=1);

require_once __DIR__ . '/../src/Exception/LmsRealtimeException.php';
require_once __DIR__ . '/../src/Exception/LibraryNotFoundException.php';
require_once __DIR__ . '/../src/Library.php';

if ($argc < 2 || $argc > 3) {
    fwrite(STDERR, "usage: php write-header.php <output file> [library path]\n");
    exit(2);
}
$library = LmsRealtime\Library::resolvePath($argv[2] ?? null);
$absolute = realpath($library);
if ($absolute === false) {
    fwrite(STDERR, "library not found: $library\n");
    exit(1);
}
if (file_put_contents($argv[1], LmsRealtime\Library::headerFor($absolute)) === false) {
    fwrite(STDERR, "cannot write {$argv[1]}\n");
    exit(1);
}
echo "wrote {$argv[1]} (FFI_LIB $absolute)\n";
