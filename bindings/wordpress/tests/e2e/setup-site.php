<?php
/**
 * Site set-up for the end-to-end tests, from PHP CLI (no wp-cli needed).
 *
 *   php setup-site.php install <base-url>
 *   php setup-site.php configure <base-url> <site.json>   activate, users, channels, pages, options
 *   php setup-site.php option <base-url> <name> <json>     set one option (the browser tests)
 *   php setup-site.php uninstall-check <base-url>          run uninstall.php, check what is left
 *   php setup-site.php uninstall <base-url>                run uninstall.php as the admin's Delete does
 *   php setup-site.php lms-install <base-url> <out.json>   the LMS fixture theme's tables, rows, users
 *   php setup-site.php snapshot <base-url> <out.json>      the LMS tables: schema, checksum, rows
 *   php setup-site.php compare <base-url> <a> <b> [schema] exit 1 when the snapshots differ
 *   php setup-site.php lms-theme <base-url>                switch to the LMS fixture theme (plugin active)
 *   php setup-site.php integration <base-url>              how the plugin meets the theme
 *   php setup-site.php deactivate|activate <base-url>      the plugin, as the admin's links do
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

if ( 'install' === $command ) {
	define( 'WP_INSTALLING', true );
}
require '/usr/share/wordpress/wp-load.php';

switch ( $command ) {
	case 'install':
		require_once ABSPATH . 'wp-admin/includes/upgrade.php';
		if ( ! is_blog_installed() ) {
			$r = wp_install( 'LMS realtime e2e', 'admin', 'admin@example.org', false, '', 'admin-e2e-pass' );
			if ( is_wp_error( $r ) ) {
				fwrite( STDERR, $r->get_error_message() . "\n" );
				exit( 1 );
			}
		}
		update_option( 'siteurl', $base );
		update_option( 'home', $base );
		echo "installed\n";
		break;

	case 'configure':
		require_once ABSPATH . 'wp-admin/includes/plugin.php';
		$out   = $argv[3];
		$users = array();
		foreach ( array( 'alice', 'bob', 'carol', 'dave', 'erin' ) as $login ) {
			$pass = $login . '-e2e-pass';
			$id   = username_exists( $login );
			if ( ! $id ) {
				$id = wp_insert_user(
					array(
						'user_login'   => $login,
						'user_pass'    => $pass,
						'user_email'   => $login . '@example.org',
						'display_name' => ucfirst( $login ),
						'role'         => 'subscriber',
					)
				);
			}
			if ( is_wp_error( $id ) ) {
				fwrite( STDERR, $id->get_error_message() . "\n" );
				exit( 1 );
			}
			update_user_meta( $id, 'show_admin_bar_front', 'false' );
			$users[ $login ] = array(
				'id'    => (int) $id,
				'login' => $login,
				'pass'  => $pass,
			);
		}
		switch_theme( 'lmsrt-e2e' );
		$r = activate_plugin( 'lms-realtime/lms-realtime.php' );
		if ( is_wp_error( $r ) ) {
			fwrite( STDERR, 'activate: ' . $r->get_error_message() . "\n" );
			exit( 1 );
		}
		// The plugin is active from the next request; load it here to use its classes.
		require_once WP_PLUGIN_DIR . '/lms-realtime/lms-realtime.php';
		LMS_Realtime_Plugin::activate();
		// The demo chat, a plugin of its own, gives this site channels and a chat page.
		$r = activate_plugin( 'lms-realtime-demo/lms-realtime-demo.php' );
		if ( is_wp_error( $r ) ) {
			fwrite( STDERR, 'activate demo: ' . $r->get_error_message() . "\n" );
			exit( 1 );
		}
		require_once WP_PLUGIN_DIR . '/lms-realtime-demo/lms-realtime-demo.php';
		LMSRT_Demo_Chat::install_tables();
		// The demo's channel ids start far above the LMS fixture theme's (1, 2): both chats
		// share this site's event store, and the LMS scenarios must not see demo events.
		global $wpdb;
		$wpdb->query( "ALTER TABLE {$wpdb->prefix}lmsrt_demo_channels AUTO_INCREMENT = 1000" ); // phpcs:ignore WordPress.DB.DirectDatabaseQuery,WordPress.DB.PreparedSQL.InterpolatedNotPrepared
		// Channel 1: private, alice, bob, dave and erin (carol is not a member).
		$channel = LMSRT_Demo_Chat::create_channel( 'general', true, array( $users['alice']['id'], $users['bob']['id'], $users['dave']['id'], $users['erin']['id'] ) );
		$page    = wp_insert_post(
			array(
				'post_type'    => 'page',
				'post_status'  => 'publish',
				'post_title'   => 'Chat',
				'post_content' => '[lmsrt_demo_chat channel="' . $channel . '"]',
			)
		);
		update_option( 'lms_use_unified_longpoll', true );
		update_option( 'lms_longpoll_rollout', 100 );
		update_option( 'lms_unified_longpoll_events', array( 'messages', 'reactions' ) );
		$site = array(
			'base'       => $base,
			'chat_url'   => $base . '/?page_id=' . $page,
			'legacy_url' => $base . '/?lmsrt_legacy_client=' . $channel,
			'channel_id' => $channel,
			'users'      => $users,
			'backend'    => LMS_Realtime_Plugin::create()->backend(),
			'problems'   => LMS_Realtime_Requirements::problems(),
			'token_class' => class_exists( 'LmsRealtime\\Token' ),
		);
		file_put_contents( $out, json_encode( $site, JSON_PRETTY_PRINT ) );
		echo json_encode( $site ), "\n";
		break;

	case 'option':
		$value = json_decode( $argv[4], true );
		update_option( $argv[3], $value );
		echo 'set ', $argv[3], "\n";
		break;

	case 'uninstall-check':
		// Run with LMSRT_E2E_NO_DB_PATH=1: the site config then leaves LMSRT_DB_PATH undefined,
		// so the store is in its default place, which uninstall.php removes.
		global $wpdb;
		if ( defined( 'LMSRT_DB_PATH' ) ) {
			fwrite( STDERR, "run uninstall-check with LMSRT_E2E_NO_DB_PATH=1\n" );
			exit( 2 );
		}
		// Data in every place uninstall must clean: an event in the default store (through the
		// plugin, which creates it), a guard transient, the options, the tables, the schedule.
		// (Recorded directly: the hook would also run the LMS theme's own handler, which writes
		// the theme's table, and the run compares those tables around uninstall.)
		LMS_Realtime_Plugin::realtime()->record_event( 'message_create', 1, array( 'text' => 'left behind' ), 1, null, 1 );
		LMS_Realtime_Plugin::set_realtime( null ); // closes the store
		if ( ! glob( WP_CONTENT_DIR . '/lms-realtime/events.db*' ) ) {
			echo "the plugin did not create the default store\nnot ok\n";
			exit( 1 );
		}
		set_transient( 'lmsrt_rl_probe', array( 'x' => 1 ), 600 );
		require_once ABSPATH . 'wp-admin/includes/plugin.php';
		deactivate_plugins( 'lms-realtime/lms-realtime.php' );
		// What uninstall_plugin() does for a plugin with uninstall.php.
		define( 'WP_UNINSTALL_PLUGIN', 'lms-realtime/lms-realtime.php' );
		include WP_PLUGIN_DIR . '/lms-realtime/uninstall.php';
		$left = array();
		foreach ( array_keys( LMS_Realtime_Plugin::DEFAULTS ) as $option ) {
			if ( false !== get_option( $option, false ) ) {
				$left[] = "option $option";
			}
		}
		$transients = (int) $wpdb->get_var( "SELECT COUNT(*) FROM {$wpdb->options} WHERE option_name LIKE '\\_transient\\_lmsrt\\_%'" );
		if ( $transients > 0 ) {
			$left[] = "$transients transients";
		}
		if ( $wpdb->get_var( $wpdb->prepare( 'SHOW TABLES LIKE %s', $wpdb->prefix . 'lmsrt_events' ) ) ) {
			$left[] = 'table lmsrt_events';
		}
		if ( wp_next_scheduled( LMS_Realtime_Plugin::CRON_HOOK ) ) {
			$left[] = 'cron event';
		}
		if ( glob( WP_CONTENT_DIR . '/lms-realtime/events.db*' ) ) {
			$left[] = 'store files';
		}
		echo 'left: ', $left ? implode( ', ', $left ) : 'nothing', "\n";
		echo $left ? "not ok\n" : "ok\n";
		break;

	case 'uninstall':
		// What uninstall_plugin() does for a plugin with uninstall.php (active or not).
		require_once ABSPATH . 'wp-admin/includes/plugin.php';
		deactivate_plugins( 'lms-realtime/lms-realtime.php' );
		define( 'WP_UNINSTALL_PLUGIN', 'lms-realtime/lms-realtime.php' );
		include WP_PLUGIN_DIR . '/lms-realtime/uninstall.php';
		echo "uninstalled\n";
		break;

	case 'lms-install':
		require_once WP_CONTENT_DIR . '/themes/lms-chat-fixture/tools/install.php';
		lms_fixture_install_tables();
		$seed         = lms_fixture_seed();
		$seed['base'] = $base;
		file_put_contents( $argv[3], json_encode( $seed, JSON_PRETTY_PRINT ) );
		echo json_encode( $seed ), "\n";
		break;

	case 'snapshot':
		require_once WP_CONTENT_DIR . '/themes/lms-chat-fixture/tools/snapshot.php';
		file_put_contents( $argv[3], json_encode( lms_fixture_snapshot(), JSON_PRETTY_PRINT ) );
		echo "snapshot written\n";
		break;

	case 'compare':
		// Every LMS table, schema and (unless "schema") checksum and row count: identical.
		$a    = json_decode( (string) file_get_contents( $argv[3] ), true );
		$b    = json_decode( (string) file_get_contents( $argv[4] ), true );
		$only = $argv[5] ?? '';
		$diff = array();
		foreach ( array_unique( array_merge( array_keys( (array) $a ), array_keys( (array) $b ) ) ) as $table ) {
			if ( ! isset( $a[ $table ], $b[ $table ] ) ) {
				$diff[] = "$table: " . ( isset( $a[ $table ] ) ? 'gone' : 'new' );
				continue;
			}
			$x = $a[ $table ];
			$y = $b[ $table ];
			if ( 'schema' === $only ) {
				// The layout, not the next id (the theme's own inserts move AUTO_INCREMENT).
				$x = preg_replace( '/ AUTO_INCREMENT=\d+/', '', (string) ( $x['create'] ?? '' ) );
				$y = preg_replace( '/ AUTO_INCREMENT=\d+/', '', (string) ( $y['create'] ?? '' ) );
			}
			if ( $x !== $y ) {
				$diff[] = "$table: " . json_encode( $x ) . ' => ' . json_encode( $y );
			}
		}
		echo $diff ? implode( "\n", $diff ) . "\nnot ok\n" : 'identical: ' . count( (array) $a ) . " tables\nok\n";
		exit( $diff ? 1 : 0 );

	case 'lms-theme':
		// Switching to the theme while the plugin is active: the theme declares LMS_Chat,
		// LMS_Chat_Realtime, LMS_Unified_LongPoll unconditionally; the plugin must declare none.
		require_once ABSPATH . 'wp-admin/includes/plugin.php';
		deactivate_plugins( 'lms-realtime-demo/lms-realtime-demo.php' );
		switch_theme( 'lms-chat-fixture' );
		echo 'theme: ', get_stylesheet(), "\n";
		break;

	case 'integration':
		echo LMS_Realtime_Plugin::integration(), ' ', LMS_Realtime_Plugin::create()->backend(), "\n";
		break;

	case 'deactivate':
		require_once ABSPATH . 'wp-admin/includes/plugin.php';
		deactivate_plugins( 'lms-realtime/lms-realtime.php' );
		echo "deactivated\n";
		break;

	case 'activate':
		// Run in a process where the plugin was inactive: the theme's classes are loaded first,
		// then activation includes the plugin, as the admin's Activate link does.
		require_once ABSPATH . 'wp-admin/includes/plugin.php';
		$r = activate_plugin( 'lms-realtime/lms-realtime.php' );
		if ( is_wp_error( $r ) ) {
			fwrite( STDERR, 'activate: ' . $r->get_error_message() . "\n" );
			exit( 1 );
		}
		echo "activated\n";
		break;

	default:
		fwrite( STDERR, "unknown command $command\n" );
		exit( 2 );
}
