<?php
/**
 * Uninstall: removes the plugin's options, transients, its own table, schedule and event store.
 *
 * Only what the plugin created goes: its table `{prefix}lmsrt_events` is dropped only if the
 * plugin recorded creating it (option `lmsrt_owned_tables`), and only names with the plugin's
 * `lmsrt_` prefix are ever dropped. The LMS chat theme's `lms_chat_*` tables are never touched,
 * whether or not the plugin was ever active.
 *
 * The event store is removed only from the default place (wp-content/lms-realtime/); a store
 * at LMSRT_DB_PATH is left alone (the daemon or another site may use it).
 *
 * A store in Redis (LMSRT_DB_PATH is a redis:// URL) is left alone too, and the log says how
 * to remove its keys; this host's files of it go from the default directory (see
 * LMS_Realtime_Uninstall).
 *
 * @package LMS_Realtime
 */

defined( 'WP_UNINSTALL_PLUGIN' ) || exit;

/**
 * Removes one site's data.
 */
function lmsrt_uninstall_site(): void {
	global $wpdb;
	// The shared `lms_*longpoll*` options are the LMS theme's too: only those the plugin added
	// (recorded at activation) go; the plugin's own `lms_realtime_*` / `lmsrt_*` always go.
	$owned_options = get_option( 'lmsrt_owned_options', array() );
	$options       = array_merge(
		array_values( array_filter( is_array( $owned_options ) ? $owned_options : array(), 'is_string' ) ),
		array(
			'lms_realtime_daemon_url',
			'lms_realtime_daemon_internal_url',
			'lms_realtime_daemon_secret',
			'lms_realtime_daemon_key_id',
			'lms_realtime_last_purge',
			'lmsrt_ids',
			'lmsrt_db_version',
			'lmsrt_owned_options',
		)
	);
	foreach ( $options as $option ) {
		delete_option( $option );
	}
	// phpcs:disable WordPress.DB.DirectDatabaseQuery,WordPress.DB.PreparedSQL.InterpolatedNotPrepared -- uninstall.
	$wpdb->query(
		$wpdb->prepare(
			"DELETE FROM {$wpdb->options} WHERE option_name LIKE %s OR option_name LIKE %s",
			$wpdb->esc_like( '_transient_lmsrt_' ) . '%',
			$wpdb->esc_like( '_transient_timeout_lmsrt_' ) . '%'
		)
	);
	$owned = get_option( 'lmsrt_owned_tables', array() );
	foreach ( array_keys( is_array( $owned ) ? $owned : array() ) as $table ) {
		if ( is_string( $table ) && 0 === strpos( $table, $wpdb->prefix . 'lmsrt_' ) && preg_match( '/^[A-Za-z0-9_]+$/', $table ) ) {
			$wpdb->query( "DROP TABLE IF EXISTS `{$table}`" );
		}
	}
	delete_option( 'lmsrt_owned_tables' );
	// phpcs:enable
	wp_clear_scheduled_hook( 'lms_realtime_purge_expired' );
}

if ( is_multisite() ) {
	foreach ( get_sites( array( 'fields' => 'ids' ) ) as $lmsrt_site ) {
		switch_to_blog( (int) $lmsrt_site );
		lmsrt_uninstall_site();
		restore_current_blog();
	}
} else {
	lmsrt_uninstall_site();
}

require_once __DIR__ . '/includes/autoload.php';
$lmsrt_db_path = defined( 'LMSRT_DB_PATH' ) ? (string) LMSRT_DB_PATH : null;
$lmsrt_left    = LMS_Realtime_Uninstall::left_in_redis( $lmsrt_db_path, is_multisite() );
if ( null !== $lmsrt_left ) {
	error_log( $lmsrt_left ); // phpcs:ignore WordPress.PHP.DevelopmentFunctions.error_log_error_log -- the site owner's record of what stays.
}
$lmsrt_dir = WP_CONTENT_DIR . '/lms-realtime';
foreach ( LMS_Realtime_Uninstall::files( $lmsrt_dir, $lmsrt_db_path, defined( 'LMSRT_STATE_DIR' ) ) as $lmsrt_file ) {
	wp_delete_file( $lmsrt_file );
}
if ( is_dir( $lmsrt_dir ) && ( null === $lmsrt_db_path || null !== $lmsrt_left ) ) {
	@rmdir( $lmsrt_dir ); // phpcs:ignore WordPress.PHP.NoSilencedErrors.Discouraged,WordPress.WP.AlternativeFunctions.file_system_operations_rmdir -- only if empty.
}
