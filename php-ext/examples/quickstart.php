<?php

// Run from the repository: cargo build --release --lib && php -d ffi.enable=1 php-ext/examples/quickstart.php

declare(strict_types=1);

require __DIR__ . '/../autoload.php'; // or Composer's vendor/autoload.php

use LmsRealtime\EventStore;

// The library is found through LMSRT_LIBRARY, or the newest target/{release,debug} build.
$dir = sys_get_temp_dir() . '/lms-realtime-quickstart-' . getmypid();
@mkdir($dir);
$store = EventStore::open("$dir/chat.db");

$cursor = $store->headCursor();                       // render the page, then poll from here
$store->append('message_create', channelId: 7, data: ['text' => 'hi'], messageId: 42, userId: 3);
$batch  = $store->wait([7], $cursor, timeout: 25.0);  // blocks without CPU until an append
foreach ($batch as $event) {
    echo $event->id, ' ', $event->type, ' ', $event->data['text'] ?? '', "\n";
}
$cursor = $batch->cursor;                             // pass it back: nothing lost, nothing twice

$store->close();
array_map('unlink', glob("$dir/*"));
rmdir($dir);
