<?php
/**
 * Issues the bearer tokens the daemon checks.
 *
 * @package LMS_Realtime
 */

defined( 'ABSPATH' ) || exit;

/**
 * Issues daemon tokens: HMAC-SHA256 over the user id, the channels the user may read, an
 * expiry and a session binding, with the secret the daemon shares (DESIGN.md, "Daemon HTTP
 * API"). The plugin's default is `LMS_Realtime_Native_Token_Issuer` (through the binding);
 * another can be supplied with the filter `lms_realtime_token_issuer`.
 */
interface LMS_Realtime_Token_Issuer {

	/**
	 * Whether tokens can be issued now (the binding, the secret).
	 */
	public function is_available(): bool;

	/**
	 * Issues a token.
	 *
	 * @param int    $user_id    the user.
	 * @param int[]  $channels   channels the token allows.
	 * @param int    $expires_at unix seconds.
	 * @param string $session    an opaque session binding.
	 * @return string the token.
	 * @throws \RuntimeException When no token can be issued.
	 */
	public function issue( int $user_id, array $channels, int $expires_at, string $session ): string;
}
