<?php
/**
 * Class loading without Composer: a classmap for the plugin's classes (the same map Composer's
 * `classmap` builds from composer.json) and PSR-4 for the PHP binding `LmsRealtime\`. The map
 * holds only prefixed names (`LMSRT_*`, `LMS_Realtime_*`): never a name the LMS theme declares.
 *
 * The binding is looked for, first match wins: already loaded (opcache.preload or Composer),
 * the directory in the constant `LMSRT_PHP_PACKAGE`, `lib/php-ext/` inside the plugin (where
 * build.sh bundles it), then `php-ext/` of the source tree the plugin sits in.
 *
 * @package LMS_Realtime
 */

defined( 'ABSPATH' ) || exit;

spl_autoload_register(
	static function ( string $class_name ): void {
		static $map = array(
			'LMSRT_Realtime'                   => 'class-lmsrt-realtime.php',
			'LMSRT_Unified_Long_Poll'          => 'class-lmsrt-unified-long-poll.php',
			'LMSRT_Chat_Realtime_Base'         => 'class-lmsrt-chat-realtime-base.php',
			'LMS_Realtime_Plugin'              => 'class-lms-realtime-plugin.php',
			'LMS_Realtime_Requirements'        => 'class-lms-realtime-requirements.php',
			'LMS_Realtime_Ids'                 => 'class-lms-realtime-ids.php',
			'LMS_Realtime_Theme_Data'          => 'class-lms-realtime-theme-data.php',
			'LMS_Realtime_Guards'              => 'class-lms-realtime-guards.php',
			'LMS_Realtime_Guard_Backend'       => 'interface-lms-realtime-guard-backend.php',
			'LMS_Realtime_Transient_Guards'    => 'class-lms-realtime-transient-guards.php',
			'LMS_Realtime_Native_Guards'       => 'class-lms-realtime-native-guards.php',
			'LMS_Realtime_Rollout'             => 'class-lms-realtime-rollout.php',
			'LMS_Realtime_Metrics'             => 'class-lms-realtime-metrics.php',
			'LMS_Realtime_Token_Issuer'        => 'interface-lms-realtime-token-issuer.php',
			'LMS_Realtime_Native_Token_Issuer' => 'class-lms-realtime-native-token-issuer.php',
			'LMS_Realtime_Settings'            => 'class-lms-realtime-settings.php',
			'LMS_Realtime_Ajax_Error'          => 'class-lms-realtime-ajax-error.php',
			'LMS_Realtime_Doctor'              => 'class-lms-realtime-doctor.php',
			'LMS_Realtime_Theme_Bridge'        => 'class-lms-realtime-theme-bridge.php',
			'LMS_Realtime_Uninstall'           => 'class-lms-realtime-uninstall.php',
		);
		if ( isset( $map[ $class_name ] ) ) {
			require_once __DIR__ . '/' . $map[ $class_name ];
		}
	}
);

spl_autoload_register(
	static function ( string $class_name ): void {
		if ( 0 !== strpos( $class_name, 'LmsRealtime\\' ) ) {
			return;
		}
		static $src = null;
		if ( null === $src ) {
			$src = '';
			foreach ( lmsrt_php_package_candidates() as $dir ) {
				if ( is_file( $dir . '/src/EventStore.php' ) ) {
					$src = $dir . '/src/';
					break;
				}
			}
		}
		if ( '' === $src ) {
			return;
		}
		$file = $src . str_replace( '\\', '/', substr( $class_name, strlen( 'LmsRealtime\\' ) ) ) . '.php';
		if ( is_file( $file ) ) {
			require_once $file;
		}
	}
);

/**
 * Directories that may hold the PHP binding (`src/`, `include/`), most specific first.
 *
 * @return string[]
 */
function lmsrt_php_package_candidates(): array {
	$dirs = array();
	if ( defined( 'LMSRT_PHP_PACKAGE' ) && '' !== (string) LMSRT_PHP_PACKAGE ) {
		$dirs[] = rtrim( (string) LMSRT_PHP_PACKAGE, '/' );
	}
	$dirs[] = dirname( __DIR__ ) . '/lib/php-ext';
	$dirs[] = dirname( __DIR__, 4 ) . '/php-ext';
	return $dirs;
}
