<?php
/**
 * Uninstall: drops the demo chat's own `{prefix}lmsrt_demo_*` tables, nothing else.
 *
 * @package LMS_Realtime_Demo
 */

defined( 'WP_UNINSTALL_PLUGIN' ) || exit;

global $wpdb;
foreach ( array( 'channels', 'members', 'messages', 'reactions' ) as $lmsrt_demo_table ) {
	$wpdb->query( "DROP TABLE IF EXISTS {$wpdb->prefix}lmsrt_demo_{$lmsrt_demo_table}" ); // phpcs:ignore WordPress.DB.DirectDatabaseQuery,WordPress.DB.PreparedSQL.InterpolatedNotPrepared -- the demo's own tables.
}
