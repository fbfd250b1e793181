<?php
/**
 * Uninstall: removes the plugin's options, transients, tables, schedule and event store.
 *
 * The event store is removed only from the default place (wp-content/lms-realtime/); a store
 * at LMSRT_DB_PATH is left alone (the daemon or another site may use it).
 *
 * @package LMS_Realtime
 */

defined( 'WP_UNINSTALL_PLUGIN' ) || exit;

/**
 * Removes one site's data.
 */
function lmsrt_uninstall_site(): void {
	global $wpdb;
	$options = array(
		'lms_use_unified_longpoll',
		'lms_unified_longpoll_events',
		'lms_longpoll_timeout',
		'lms_longpoll_rollout',
		'lms_longpoll_beta_users',
		'lms_longpoll_max_connections',
		'lms_longpoll_batch_size',
		'lms_longpoll_circuit_breaker',
		'lms_realtime_daemon_url',
		'lms_realtime_daemon_internal_url',
		'lms_realtime_daemon_secret',
		'lms_realtime_daemon_key_id',
		'lms_realtime_last_purge',
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
	foreach ( array( 'lms_chat_realtime_events', 'lms_chat_channels', 'lms_chat_members', 'lms_chat_messages', 'lms_chat_reactions' ) as $table ) {
		$wpdb->query( "DROP TABLE IF EXISTS {$wpdb->prefix}{$table}" );
	}
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

if ( ! defined( 'LMSRT_DB_PATH' ) ) {
	$lmsrt_dir = WP_CONTENT_DIR . '/lms-realtime';
	if ( is_dir( $lmsrt_dir ) ) {
		foreach ( array_merge( glob( $lmsrt_dir . '/events*.db*' ) ?: array(), array( $lmsrt_dir . '/metrics.json', $lmsrt_dir . '/index.php', $lmsrt_dir . '/.htaccess' ) ) as $lmsrt_file ) {
			if ( is_file( $lmsrt_file ) ) {
				wp_delete_file( $lmsrt_file );
			}
		}
		@rmdir( $lmsrt_dir ); // phpcs:ignore WordPress.PHP.NoSilencedErrors.Discouraged,WordPress.WP.AlternativeFunctions.file_system_operations_rmdir -- only if empty.
	}
}
