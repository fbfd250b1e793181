<?php
/**
 * What uninstall removes from the disk, and what it leaves in Redis.
 *
 * @package LMS_Realtime
 */

defined( 'ABSPATH' ) || exit;

/**
 * The file side of uninstall.php, apart so that it can be tested without uninstalling.
 *
 * A store file at the default place (`wp-content/lms-realtime/`) goes with its files; a store
 * at `LMSRT_DB_PATH` is left alone (the daemon or another site may use it). A store in Redis
 * is left alone too: the other web hosts, the daemons and maybe other sites share it, and one
 * host cannot know whether they are gone. Its events expire by themselves (their TTL); what
 * stays is small (the id sequence, the epoch, consumer cursors, idempotency keys), every key
 * under `lmsrt:{<store>}:`, and uninstall logs how to remove them. This host's files of a
 * Redis store (the guards' files, the metrics) go from the default state directory, and stay
 * in one `LMSRT_STATE_DIR` names (which the daemon may share, as a store file at
 * `LMSRT_DB_PATH`). Never is anything deleted under a URL, nor outside that one directory.
 */
final class LMS_Realtime_Uninstall {

	/**
	 * The files to delete, by the plugin's own names, in `$dir` (the default directory).
	 *
	 * @param string      $dir        `wp-content/lms-realtime`.
	 * @param string|null $db_path    `LMSRT_DB_PATH` (null: not defined).
	 * @param bool        $state_dir  whether `LMSRT_STATE_DIR` is defined.
	 * @return string[]
	 */
	public static function files( string $dir, ?string $db_path, bool $state_dir ): array {
		$redis = null !== $db_path && LMSRT_Unified_Long_Poll::store_is_url( $db_path );
		if ( ! is_dir( $dir ) || ( null !== $db_path && ( ! $redis || $state_dir ) ) ) {
			return array();
		}
		$files = array_merge(
			null === $db_path ? ( glob( $dir . '/events*.db*' ) ?: array() ) : array(),
			// A Redis store's host-local files (`redis-<URL as a name>-lmsrt-*`, `StoreLocation`).
			glob( $dir . '/redis-*-lmsrt-*' ) ?: array(),
			array( $dir . '/metrics.json', $dir . '/index.php', $dir . '/.htaccess' )
		);
		return array_values( array_filter( $files, 'is_file' ) );
	}

	/**
	 * What uninstall says it leaves in Redis (for the log), or null for a store file.
	 *
	 * @param string|null $db_path `LMSRT_DB_PATH` (null: not defined).
	 * @param bool        $network a multisite network: its other sites' stores are named
	 *                             `<name>-site<N>` ({@see LMSRT_Unified_Long_Poll::site_store()}).
	 */
	public static function left_in_redis( ?string $db_path, bool $network = false ): ?string {
		if ( null === $db_path || ! LMSRT_Unified_Long_Poll::store_is_url( $db_path ) ) {
			return null;
		}
		$name = preg_match( '/[?&]store=([A-Za-z0-9_\-]+)/', $db_path, $m ) ? $m[1] : 'lmsrt';
		$left = sprintf(
			'lms-realtime: uninstalled; the event store in Redis (%1$s) is left as it is, since other hosts and daemons may use it: its events expire by themselves; to remove it all, delete its keys: redis-cli -u <the URL> --scan --pattern \'lmsrt:{%2$s}:*\' | xargs redis-cli -u <the URL> unlink',
			LMSRT_Unified_Long_Poll::shown_store( $db_path ),
			$name
		);
		if ( $network ) {
			$left .= sprintf( '; the network\'s other sites have stores of their own, the same way with the pattern \'lmsrt:{%s-site*}:*\'', $name );
		}
		return $left;
	}
}
