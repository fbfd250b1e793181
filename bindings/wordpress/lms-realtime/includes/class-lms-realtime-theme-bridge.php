<?php
/**
 * The LMS chat theme's own client, long-polling the daemon instead of admin-ajax.php.
 *
 * @package LMS_Realtime
 */

defined( 'ABSPATH' ) || exit;

/**
 * Prints `assets/lms-realtime-theme-bridge.js` on the theme's pages: a jQuery transport that
 * sends the theme's `lms_unified_long_poll` requests, unchanged, to the daemon's
 * `/v1/lms/poll` (the same answer the plugin gives over admin-ajax.php), and falls back to
 * admin-ajax.php whenever the daemon fails. So the theme's client holds no PHP worker while it
 * waits, and nothing of the theme changes.
 *
 * Only where it can help: the LMS theme's tables are there, the store path is in use, the
 * daemon is configured, the user is logged in and in the rollout, and the filter
 * `lms_realtime_theme_bridge` (default true) agrees.
 */
final class LMS_Realtime_Theme_Bridge {

	/** The script handle. */
	public const HANDLE = 'lms-realtime-theme-bridge';

	/**
	 * `wp_enqueue_scripts`: the script and its configuration (with a token for the user's
	 * channels), in the head so that it is registered before the theme's client starts.
	 */
	public static function enqueue(): void {
		$config = self::config();
		if ( null === $config ) {
			return;
		}
		wp_enqueue_script( self::HANDLE, plugins_url( 'assets/lms-realtime-theme-bridge.js', LMSRT_PLUGIN_FILE ), array( 'jquery' ), LMSRT_PLUGIN_VERSION, false );
		wp_add_inline_script( self::HANDLE, 'window.lmsRealtimeThemeBridge = ' . wp_json_encode( $config ) . ';', 'before' );
	}

	/**
	 * The script's configuration for the current user, or null where the bridge does not apply.
	 *
	 * @return array<string, mixed>|null
	 */
	public static function config(): ?array {
		// Cheapest first: most sites have no daemon, and then no page builds the service for this.
		if ( '' === LMSRT_Realtime::daemon_url() || ! LMS_Realtime_Theme_Data::present() ) {
			return null;
		}
		$realtime = LMS_Realtime_Plugin::realtime();
		if ( ! $realtime instanceof LMSRT_Unified_Long_Poll || ! $realtime->daemon_enabled() ) {
			return null;
		}
		$user_id = LMS_Realtime_Plugin::bridge()->lmsrt_current_user_id();
		if ( $user_id <= 0 || ! $realtime->guards()->use_unified( $user_id ) ) {
			return null;
		}
		/**
		 * Whether the theme's own client long-polls the daemon (through the bridge script).
		 *
		 * @param bool $enabled Default true.
		 * @param int  $user_id The user.
		 */
		if ( ! apply_filters( 'lms_realtime_theme_bridge', true, $user_id ) ) {
			return null;
		}
		try {
			$token = $realtime->issue_token( $user_id );
		} catch ( \Throwable $e ) {
			// No token (no channel, the issuer failed): the theme polls admin-ajax as before.
			return null;
		}
		return array(
			'pollUrl'     => rtrim( LMSRT_Realtime::daemon_url(), '/' ) . '/v1/lms/poll',
			'token'       => $token['token'],
			'expiresAt'   => $token['expires_at'],
			'tokenUrl'    => admin_url( 'admin-ajax.php' ),
			'tokenAction' => LMSRT_Realtime::TOKEN_ACTION,
			'tokenNonce'  => wp_create_nonce( LMSRT_Realtime::NONCE_ACTION ),
			'nonceAction' => LMSRT_Realtime::NONCE_ACTION,
			// Clients holding an id below it read the plugin's old table first: admin-ajax.
			'storeFloor'  => (int) LMS_Realtime_Ids::state()['store_floor'],
		);
	}
}
