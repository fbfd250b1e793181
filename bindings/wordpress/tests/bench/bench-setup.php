<?php
/**
 * Bench set-up: N users in C channels, each with a session (auth cookies) and a chat nonce, as
 * a logged-in browser would have them.
 *
 *   php bench-setup.php users <base-url> <clients> <channels> <out.json>
 *   php bench-setup.php head <base-url>      prints {"cursor": ..., "last_event_id": ...}
 *
 * @package LMS_Realtime
 */

// phpcs:disable WordPress.WP.AlternativeFunctions

[ , $command, $base ] = $argv;
$parts                  = parse_url( $base );
$_SERVER['HTTP_HOST']   = $parts['host'] . ':' . $parts['port'];
$_SERVER['REQUEST_URI'] = '/';
require '/usr/share/wordpress/wp-load.php';

if ( 'head' === $command ) {
	$rt = LMS_Realtime_Plugin::realtime();
	echo json_encode(
		array(
			'cursor'        => 'store' === $rt->backend() ? $rt->render_head_cursor() : null,
			'last_event_id' => $rt->head_last_event_id(),
		)
	), "\n";
	exit( 0 );
}
[ , , , $clients, $channels, $out ] = $argv;

$channel_ids = array();
for ( $c = 0; $c < (int) $channels; $c++ ) {
	$channel_ids[] = LMSRT_Demo_Chat::create_channel( 'bench-' . $c, true );
}
$list = array();
for ( $i = 0; $i < (int) $clients; $i++ ) {
	$login = sprintf( 'bench%03d', $i );
	$id    = username_exists( $login );
	if ( ! $id ) {
		$id = wp_insert_user(
			array(
				'user_login' => $login,
				'user_pass'  => wp_generate_password(),
				'user_email' => $login . '@example.org',
				'role'       => 'subscriber',
			)
		);
	}
	$channel = $channel_ids[ $i % count( $channel_ids ) ];
	LMSRT_Demo_Chat::add_member( $channel, $id );
	$expires   = time() + 2 * DAY_IN_SECONDS;
	$token     = WP_Session_Tokens::get_instance( $id )->create( $expires );
	$logged_in = wp_generate_auth_cookie( $id, $expires, 'logged_in', $token );
	$auth      = wp_generate_auth_cookie( $id, $expires, 'auth', $token );
	$_COOKIE[ LOGGED_IN_COOKIE ] = $logged_in;
	wp_set_current_user( $id );
	$list[] = array(
		'user_id' => (int) $id,
		'channel' => $channel,
		'cookie'  => LOGGED_IN_COOKIE . '=' . rawurlencode( $logged_in ) . '; ' . AUTH_COOKIE . '=' . rawurlencode( $auth ),
		'nonce'   => wp_create_nonce( 'lms_chat_nonce' ),
	);
}
file_put_contents( $out, json_encode( array( 'channels' => $channel_ids, 'clients' => $list ), JSON_PRETTY_PRINT ) );
echo count( $list ), " clients in ", count( $channel_ids ), " channels\n";
