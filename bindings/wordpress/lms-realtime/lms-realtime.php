<?php
/**
 * Plugin Name:       LMS Chat Realtime
 * Plugin URI:        https://github.com/lms-realtime/lms-realtime
 * Description:       Real-time delivery for the LMS chat: every chat event goes through one priority event log (lms-realtime, over SQLite via PHP FFI), served by a long-poll daemon or by the legacy admin-ajax endpoint.
 * Version:           0.1.0
 * Requires at least: 6.1
 * Requires PHP:      8.1
 * Author:            lms-realtime
 * License:           MIT
 * Text Domain:       lms-realtime
 * Domain Path:       /languages
 *
 * @package LMS_Realtime
 */

defined( 'ABSPATH' ) || exit;

define( 'LMSRT_PLUGIN_VERSION', '0.1.0' );
define( 'LMSRT_PLUGIN_FILE', __FILE__ );
define( 'LMSRT_PLUGIN_DIR', __DIR__ );

/*
 * Guard 1: the PHP version. This file parses on old PHP; the classes need 8.1. Without it the
 * plugin does nothing but say so (WordPress also refuses to activate it, from the header).
 */
if ( version_compare( PHP_VERSION, '8.1', '<' ) ) {
	add_action(
		'admin_notices',
		static function () {
			if ( current_user_can( 'activate_plugins' ) ) {
				echo '<div class="notice notice-error"><p>';
				echo esc_html(
					sprintf(
						/* translators: %s: the running PHP version. */
						__( 'LMS Chat Realtime needs PHP 8.1 or newer; this site runs PHP %s. The plugin is inactive.', 'lms-realtime' ),
						PHP_VERSION
					)
				);
				echo '</p></div>';
			}
		}
	);
	return;
}

require_once __DIR__ . '/includes/autoload.php';

register_activation_hook( __FILE__, array( 'LMS_Realtime_Plugin', 'activate' ) );
register_deactivation_hook( __FILE__, array( 'LMS_Realtime_Plugin', 'deactivate' ) );

/*
 * Guards 2 to 4 (ext-ffi, the native library, its ABI version) and the kill switch
 * LMSRT_DISABLED are checked by LMS_Realtime_Requirements when the event store is first
 * needed. If any fails, the plugin keeps serving the legacy AJAX path from its own table and
 * shows an admin notice.
 */
LMS_Realtime_Plugin::boot();
// The set-up check: JSON for administrators, and `wp lmsrt doctor` under WP-CLI.
LMS_Realtime_Doctor::register();
