<?php

declare(strict_types=1);

namespace LmsRealtime;

use LmsRealtime\Exception\InvalidArgumentException;
use LmsRealtime\Exception\LmsRealtimeException;

/**
 * Tokens for `lms-longpolld`, and signatures for publishing to it. Needs no `EventStore`.
 *
 * WordPress issues a short-lived token to the logged-in browser (for example from an AJAX
 * action the browser client's `tokenProvider` calls); the daemon verifies it on every poll with
 * the same secret (`--token-key <key id>:<secret>`).
 *
 * ```php
 * $token = Token::issue('k1', LMS_REALTIME_SECRET, get_current_user_id(), [7, 9],
 *     time() + 600, wp_get_session_token());
 * wp_send_json(['token' => $token, 'expires_at' => time() + 600]);
 * ```
 *
 * Format: `v1.<base64url(claims JSON)>.<base64url(HMAC-SHA256(secret, "v1." + claims part))>`
 * with claims `kid`, `uid`, `ch` (sorted channel ids), `exp` (Unix seconds) and `sid` (a
 * SHA-256 prefix of the session, so the session token itself is never exposed).
 */
final class Token
{
    private function __construct()
    {
    }

    /**
     * Issues a token for `$userId`, allowing `$channels` until `$expiresAt` (Unix seconds),
     * bound to `$session`.
     *
     * @param list<int> $channels channel ids (> 0), 1 to 1024 of them
     * @throws LmsRealtimeException on a bad key id (1–32 of `[A-Za-z0-9_-]`), a secret shorter
     *     than 32 bytes, bad channels or a non-positive expiry
     */
    public static function issue(
        string $keyId,
        string $secret,
        int $userId,
        array $channels,
        int $expiresAt,
        string $session,
        ?string $library = null
    ): string {
        $native = new FfiNative(Library::ffi($library));
        return self::issueWith($native, $keyId, $secret, $userId, $channels, $expiresAt, $session);
    }

    /**
     * `issue()` over a given `Native` (tests use a fake).
     *
     * @internal
     * @param list<int> $channels
     */
    public static function issueWith(
        Native $native,
        string $keyId,
        string $secret,
        int $userId,
        array $channels,
        int $expiresAt,
        string $session
    ): string {
        foreach ($channels as $c) {
            if (!is_int($c)) {
                throw new InvalidArgumentException(
                    'channels must be integers, got ' . get_debug_type($c),
                    Status::INVALID_ARGUMENT
                );
            }
        }
        $json = json_encode(array_values($channels), JSON_THROW_ON_ERROR);
        $token = '';
        $status = $native->tokenIssue($keyId, $secret, $userId, $json, $expiresAt, $session, $token);
        if ($status !== Status::OK) {
            throw Status::toException($status, $native->lastError());
        }
        return $token;
    }

    /**
     * The headers that sign a `POST /v1/events` body for the daemon:
     * `X-LMS-Timestamp` and `X-LMS-Signature` (`<key id>:<base64url(HMAC-SHA256(secret,
     * "lmsrt-publish-v1." + timestamp + "." + body))>`). Pure PHP; send the body byte for byte.
     * The daemon answers the same signed request sent again (within its skew window) with the
     * first one's ids and appends nothing, so a retry is safe; and so two identical bodies
     * signed in the same second are one publish: vary the body (an `idempotency_key`) for two.
     *
     * @return array{X-LMS-Timestamp: string, X-LMS-Signature: string}
     */
    public static function publishHeaders(string $keyId, string $secret, string $body, ?int $timestamp = null): array
    {
        $ts = (string) ($timestamp ?? time());
        $mac = hash_hmac('sha256', 'lmsrt-publish-v1.' . $ts . '.' . $body, $secret, true);
        return [
            'X-LMS-Timestamp' => $ts,
            'X-LMS-Signature' => $keyId . ':' . rtrim(strtr(base64_encode($mac), '+/', '-_'), '='),
        ];
    }
}
