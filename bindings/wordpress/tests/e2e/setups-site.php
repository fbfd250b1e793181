<?php
/**
 * Site set-up for the PHP set-up scenarios (php-setups.sh), from PHP CLI.
 *
 *   php setups-site.php activate-demo <base-url>          activate the demo chat plugin
 *   php setups-site.php prepare <base-url> <out.json>      a channel per mode (alice a member),
 *                                                          the unified long poll on for everyone
 *
 * @package LMS_Realtime
 */

// phpcs:disable WordPress.WP.AlternativeFunctions,WordPress.PHP.DevelopmentFunctions

[ , $command, $base ] = $argv + array( '', '', '' );
$parts                 = parse_url( $base );
// Debian's wp-config.php picks /etc/wordpress/config-<host>.php by the Host header.
$_SERVER['HTTP_HOST']   = $parts['host'] . ( isset( $parts['port'] ) ? ':' . $parts['port'] : '' );
$_SERVER['REQUEST_URI'] = '/';
$_SERVER['SERVER_NAME'] = $parts['host'];
require '/usr/share/wordpress/wp-load.php';
require_once ABSPATH . 'wp-admin/includes/plugin.php';

switch ( $command ) {
	case 'activate-demo':
		$r = activate_plugin( 'lms-realtime-demo/lms-realtime-demo.php' );
		if ( is_wp_error( $r ) ) {
			fwrite( STDERR, 'activate: ' . $r->get_error_message() . "\n" );
			exit( 1 );
		}
		echo "demo chat active\n";
		break;

	case 'prepare':
		if ( ! class_exists( 'LMSRT_Demo_Chat' ) || ! class_exists( 'LMS_Realtime_Plugin' ) ) {
			fwrite( STDERR, "the plugin and the demo chat must be active\n" );
			exit( 1 );
		}
		$alice = get_user_by( 'login', 'alice' );
		if ( ! $alice ) {
			fwrite( STDERR, "no user alice (run setup-site.php configure first)\n" );
			exit( 1 );
		}
		$channels = array();
		foreach ( array_slice( $argv, 4 ) as $mode ) {
			$channels[ $mode ] = LMSRT_Demo_Chat::create_channel( 'setups-' . $mode . '-' . time(), true, array( (int) $alice->ID ) );
		}
		update_option( 'lms_use_unified_longpoll', true );
		update_option( 'lms_longpoll_rollout', 100 );
		update_option( 'lms_longpoll_timeout', 30 );
		update_option( 'lms_unified_longpoll_events', array( 'messages', 'reactions' ) );
		$out = array(
			'plugin_dir' => realpath( WP_PLUGIN_DIR . '/lms-realtime' ),
			'channels'   => $channels,
			'alice'      => array(
				'login' => 'alice',
				'pass'  => 'alice-e2e-pass',
			),
			'admin'      => array(
				'login' => 'admin',
				'pass'  => 'admin-e2e-pass',
			),
		);
		file_put_contents( $argv[3], json_encode( $out, JSON_PRETTY_PRINT | JSON_UNESCAPED_SLASHES ) );
		echo json_encode( $out, JSON_UNESCAPED_SLASHES ), "\n";
		break;

	default:
		fwrite( STDERR, "unknown command $command\n" );
		exit( 2 );
}
