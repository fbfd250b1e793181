<?php
/**
 * Daemon tokens through the binding.
 *
 * @package LMS_Realtime
 */

defined( 'ABSPATH' ) || exit;

/**
 * Issues tokens with the binding's `LmsRealtime\Token::issue()`, so PHP and the daemon share
 * one implementation of the format (`v1.<claims>.<HMAC-SHA256>`, claims `kid`, `uid`, `ch`,
 * `exp`, `sid`). The daemon is started with the same pair: `--token-key <key id>:<secret>`.
 */
final class LMS_Realtime_Native_Token_Issuer implements LMS_Realtime_Token_Issuer {

	/**
	 * The issuer for a key.
	 *
	 * @param string $secret the secret the daemon is started with (at least 32 bytes).
	 * @param string $key_id the key id (1–32 of `[A-Za-z0-9_-]`).
	 */
	public function __construct( private string $secret, private string $key_id = 'k1' ) {
	}

	/**
	 * Whether the binding can issue tokens and a key is set.
	 */
	public function is_available(): bool {
		return strlen( $this->secret ) >= 32
			&& 1 === preg_match( '/^[A-Za-z0-9_-]{1,32}$/', $this->key_id )
			&& LMS_Realtime_Requirements::met()
			&& class_exists( 'LmsRealtime\\Token' )
			&& method_exists( 'LmsRealtime\\Token', 'issue' );
	}

	/**
	 * Issues a token.
	 *
	 * @param int    $user_id    the user.
	 * @param int[]  $channels   channels (1 to 1024).
	 * @param int    $expires_at unix seconds.
	 * @param string $session    session binding (the library keeps a SHA-256 prefix of it).
	 * @throws \RuntimeException When the binding cannot issue tokens.
	 */
	public function issue( int $user_id, array $channels, int $expires_at, string $session ): string {
		if ( ! $this->is_available() ) {
			throw new \RuntimeException( 'token issuing is not available: no LmsRealtime\\Token in the binding, or no valid daemon key' );
		}
		return \LmsRealtime\Token::issue(
			$this->key_id,
			$this->secret,
			$user_id,
			array_values( array_map( 'intval', $channels ) ),
			$expires_at,
			$session,
			LMS_Realtime_Requirements::library_path()
		);
	}
}
