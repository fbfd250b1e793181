<?php
/**
 * Daemon tokens through the binding.
 *
 * @package LMS_Realtime
 */

defined( 'ABSPATH' ) || exit;

/**
 * Issues tokens with the binding's `LmsRealtime\Token::issue()`, so PHP and the daemon share
 * one implementation of the token format and the HMAC. Until the binding has that class this
 * issuer is unavailable, and the plugin serves the long poll itself instead of configuring
 * clients for the daemon.
 *
 * The daemon secret setting takes the daemon's `--token-key` form, `<key id>:<secret>`; a bare
 * secret means key id `wp` (start the daemon with `--token-key wp:<secret>`).
 */
final class LMS_Realtime_Native_Token_Issuer implements LMS_Realtime_Token_Issuer {

	/**
	 * The issuer for a shared secret.
	 *
	 * @param string $secret the secret the daemon is started with.
	 */
	public function __construct( private string $secret ) {
	}

	/**
	 * Whether the binding can issue tokens and a secret is set.
	 */
	public function is_available(): bool {
		return '' !== $this->secret
			&& LMS_Realtime_Requirements::met()
			&& class_exists( 'LmsRealtime\\Token' )
			&& method_exists( 'LmsRealtime\\Token', 'issue' );
	}

	/**
	 * Issues a token.
	 *
	 * @param int    $user_id    the user.
	 * @param int[]  $channels   channels.
	 * @param int    $expires_at unix seconds.
	 * @param string $session    session binding.
	 * @throws \RuntimeException When the binding cannot issue tokens.
	 */
	public function issue( int $user_id, array $channels, int $expires_at, string $session ): string {
		if ( ! $this->is_available() ) {
			throw new \RuntimeException( 'token issuing is not available: the binding has no LmsRealtime\\Token or no daemon secret is set' );
		}
		$key_id = 'wp';
		$secret = $this->secret;
		$colon  = strpos( $secret, ':' );
		if ( false !== $colon ) {
			$key_id = substr( $secret, 0, $colon );
			$secret = substr( $secret, $colon + 1 );
		}
		return (string) \LmsRealtime\Token::issue(
			keyId: $key_id,
			secret: $secret,
			userId: $user_id,
			channels: array_values( array_map( 'intval', $channels ) ),
			expiresAt: $expires_at,
			session: $session
		);
	}
}
