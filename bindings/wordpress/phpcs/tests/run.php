<?php

/**
 * Tests of the project sniffs: each fixtures/*.inc marks the lines a sniff must flag with
 * "expect: Code" (the sniff code after "WordPress."), several separated by commas. Every other line must
 * stay clean. Exits non-zero, listing the differences, when a sniff flags too much or too little.
 *
 * Usage: php run.php [path to phpcs]
 *
 * @package LMS_Realtime
 */

declare(strict_types=1);

$phpcs = $argv[1] ?? 'phpcs';
$failures = 0;
$files = glob(__DIR__ . '/fixtures/*.inc');
foreach ($files as $fixture) {
    $expected = [];
    foreach (file($fixture) as $i => $line) {
        if (preg_match('/expect: ([\w.,]+)/', $line, $m)) {
            foreach (explode(',', $m[1]) as $code) {
                $expected[] = ($i + 1) . ' WordPress.' . $code;
            }
        }
    }
    $cmd = sprintf(
        '%s -q --no-cache --report=json --extensions=inc --standard=%s %s',
        escapeshellcmd($phpcs),
        escapeshellarg(__DIR__ . '/ruleset.xml'),
        escapeshellarg($fixture)
    );
    $report = json_decode((string) shell_exec($cmd), true);
    if (!is_array($report)) {
        fwrite(STDERR, "phpcs gave no JSON report for $fixture\n");
        exit(2);
    }
    $found = [];
    foreach ($report['files'] as $file) {
        foreach ($file['messages'] as $msg) {
            $found[] = $msg['line'] . ' ' . $msg['source'];
        }
    }
    sort($expected);
    sort($found);
    $missed = array_diff($expected, $found);
    $extra = array_diff($found, $expected);
    $name = basename($fixture);
    foreach ($missed as $m) {
        echo "FAIL $name: not flagged: line $m\n";
    }
    foreach ($extra as $e) {
        echo "FAIL $name: flagged but not expected: line $e\n";
    }
    if ($missed === [] && $extra === []) {
        echo 'ok   ' . $name . ' (' . count($expected) . " findings as expected)\n";
    } else {
        $failures++;
    }
}
$passed = count($files) - $failures;
echo "$passed passed, $failures failed\n";
exit($failures === 0 ? 0 : 1);
