<?php
/**
 * Plugin Name:       LMS Chat Realtime Demo
 * Description:       A small demo chat (the [lmsrt_demo_chat] shortcode) for trying LMS Chat Realtime without the LMS chat theme. Not for production sites; never install it beside the LMS chat theme.
 * Version:           0.1.0
 * Requires at least: 6.1
 * Requires PHP:      8.1
 * Requires Plugins:  lms-realtime
 * Author:            lms-realtime
 * License:           MIT
 * Text Domain:       lms-realtime
 *
 * @package LMS_Realtime_Demo
 */

defined( 'ABSPATH' ) || exit;

define( 'LMSRT_DEMO_FILE', __FILE__ );

require_once __DIR__ . '/includes/class-lmsrt-demo-chat.php';

register_activation_hook(
	__FILE__,
	static function () {
		LMSRT_Demo_Chat::install_tables();
	}
);

add_action(
	'plugins_loaded',
	static function () {
		if ( class_exists( 'LMS_Realtime_Plugin' ) ) {
			LMSRT_Demo_Chat::register();
		}
	}
);
