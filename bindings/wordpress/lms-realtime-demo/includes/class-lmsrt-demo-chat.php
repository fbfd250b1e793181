<?php
/**
 * A minimal demo chat: channels, messages, reactions, the `[lmsrt_demo_chat]` shortcode.
 *
 * @package LMS_Realtime_Demo
 */

defined( 'ABSPATH' ) || exit;

/**
 * The smallest chat the realtime layer can be shown with, for the demo and the end-to-end
 * tests; it is not part of the production plugin. It stores channels, members, messages and
 * reactions in its own `{prefix}lmsrt_demo_*` tables and fires the LMS chat theme's hooks with
 * the theme's arguments (`lms_chat_message_created`, `lms_chat_thread_message_sent`, ...),
 * and answers the plugin's access filters for its own channels, as a chat theme would.
 *
 * AJAX actions (logged-in WordPress users, nonce `lms_chat_nonce`): `lmsrt_demo_post_message`
 * (`channel_id`, `thread_id`, `message`), `lmsrt_demo_delete_message` (`message_id`),
 * `lmsrt_demo_toggle_reaction` (`message_id`, `emoji`), `lmsrt_demo_history` (`channel_id`).
 */
final class LMSRT_Demo_Chat {

	/** Longest message, characters. */
	public const MAX_LENGTH = 4000;

	/** Messages a page shows. */
	public const HISTORY = 50;

	/**
	 * Access answers cached for this request.
	 *
	 * @var array<string, bool>
	 */
	private static array $access = array();

	/**
	 * Registers the shortcode and the AJAX actions.
	 */
	public static function register(): void {
		add_shortcode( 'lmsrt_demo_chat', array( self::class, 'shortcode' ) );
		add_action( 'wp_enqueue_scripts', array( self::class, 'register_assets' ) );
		foreach ( array( 'post_message', 'delete_message', 'toggle_reaction', 'history' ) as $what ) {
			add_action( 'wp_ajax_lmsrt_demo_' . $what, array( self::class, 'ajax_' . $what ) );
			add_action( 'wp_ajax_nopriv_lmsrt_demo_' . $what, array( self::class, 'ajax_' . $what ) );
		}
		// The demo's channels are the demo's to grant; another answer (a theme's) stands.
		add_filter(
			'lms_realtime_user_can_access_channel',
			static fn ( $can, $user_id, $channel_id ) => null === $can ? self::user_can_access_channel( (int) $user_id, (int) $channel_id ) : $can,
			10,
			3
		);
		add_filter(
			'lms_realtime_channels_for_user',
			static fn ( $ids, $user_id ) => array() === (array) $ids ? self::channels_for_user( (int) $user_id ) : $ids,
			10,
			2
		);
	}

	/**
	 * Table names.
	 *
	 * @param string $which `channels`, `members`, `messages` or `reactions`.
	 */
	public static function table( string $which ): string {
		global $wpdb;
		return $wpdb->prefix . 'lmsrt_demo_' . $which;
	}

	/**
	 * Creates or updates the chat's tables.
	 */
	public static function install_tables(): void {
		global $wpdb;
		require_once ABSPATH . 'wp-admin/includes/upgrade.php';
		$collate = $wpdb->get_charset_collate();
		$c       = self::table( 'channels' );
		$m       = self::table( 'members' );
		$msg     = self::table( 'messages' );
		$r       = self::table( 'reactions' );
		dbDelta(
			"CREATE TABLE {$c} (
				id bigint(20) unsigned NOT NULL AUTO_INCREMENT,
				name varchar(191) NOT NULL,
				is_private tinyint(1) NOT NULL DEFAULT 0,
				created_at datetime NOT NULL,
				PRIMARY KEY  (id)
			) {$collate};
			CREATE TABLE {$m} (
				channel_id bigint(20) unsigned NOT NULL,
				user_id bigint(20) unsigned NOT NULL,
				PRIMARY KEY  (channel_id,user_id),
				KEY user_id (user_id)
			) {$collate};
			CREATE TABLE {$msg} (
				id bigint(20) unsigned NOT NULL AUTO_INCREMENT,
				channel_id bigint(20) unsigned NOT NULL,
				parent_id bigint(20) unsigned NOT NULL DEFAULT 0,
				user_id bigint(20) unsigned NOT NULL,
				message text NOT NULL,
				created_at datetime NOT NULL,
				deleted_at datetime NULL,
				PRIMARY KEY  (id),
				KEY channel_id (channel_id,parent_id,id)
			) {$collate};
			CREATE TABLE {$r} (
				message_id bigint(20) unsigned NOT NULL,
				user_id bigint(20) unsigned NOT NULL,
				emoji varchar(32) NOT NULL,
				PRIMARY KEY  (message_id,user_id,emoji)
			) {$collate};"
		);
	}

	/**
	 * Creates a channel.
	 *
	 * @param string $name       name.
	 * @param bool   $is_private members only.
	 * @param int[]  $members    member user ids.
	 * @return int the channel id.
	 */
	public static function create_channel( string $name, bool $is_private = false, array $members = array() ): int {
		global $wpdb;
		// phpcs:ignore WordPress.DB.DirectDatabaseQuery.DirectQuery
		$wpdb->insert(
			self::table( 'channels' ),
			array(
				'name'       => $name,
				'is_private' => $is_private ? 1 : 0,
				'created_at' => current_time( 'mysql', true ),
			),
			array( '%s', '%d', '%s' )
		);
		$id = (int) $wpdb->insert_id;
		foreach ( $members as $user_id ) {
			self::add_member( $id, (int) $user_id );
		}
		return $id;
	}

	/**
	 * Adds a member to a channel.
	 *
	 * @param int $channel_id channel.
	 * @param int $user_id    user.
	 */
	public static function add_member( int $channel_id, int $user_id ): void {
		global $wpdb;
		$table = self::table( 'members' );
		// phpcs:ignore WordPress.DB.PreparedSQL.InterpolatedNotPrepared,WordPress.DB.DirectDatabaseQuery
		$wpdb->query( $wpdb->prepare( "INSERT IGNORE INTO {$table} (channel_id, user_id) VALUES (%d, %d)", $channel_id, $user_id ) );
		self::$access = array();
	}

	/**
	 * Whether a user may read and post in a channel: it exists, the user can `read`, and it is
	 * public or the user is a member.
	 *
	 * @param int $user_id    user.
	 * @param int $channel_id channel.
	 */
	public static function user_can_access_channel( int $user_id, int $channel_id ): bool {
		$key = $user_id . ':' . $channel_id;
		if ( ! isset( self::$access[ $key ] ) ) {
			global $wpdb;
			$ok = false;
			if ( $user_id > 0 && $channel_id > 0 && user_can( $user_id, 'read' ) ) {
				$c = self::table( 'channels' );
				$m = self::table( 'members' );
				// phpcs:ignore WordPress.DB.PreparedSQL.InterpolatedNotPrepared,WordPress.DB.DirectDatabaseQuery
				$ok = (bool) $wpdb->get_var( $wpdb->prepare( "SELECT 1 FROM {$c} c LEFT JOIN {$m} m ON m.channel_id = c.id AND m.user_id = %d WHERE c.id = %d AND (c.is_private = 0 OR m.user_id IS NOT NULL)", $user_id, $channel_id ) );
			}
			self::$access[ $key ] = $ok;
		}
		return self::$access[ $key ];
	}

	/**
	 * Forgets cached access answers (tests).
	 */
	public static function reset_cache(): void {
		self::$access = array();
	}

	/**
	 * Channels a user may read.
	 *
	 * @param int $user_id user.
	 * @return int[]
	 */
	public static function channels_for_user( int $user_id ): array {
		global $wpdb;
		if ( $user_id <= 0 || ! user_can( $user_id, 'read' ) ) {
			return array();
		}
		$c = self::table( 'channels' );
		$m = self::table( 'members' );
		// phpcs:ignore WordPress.DB.PreparedSQL.InterpolatedNotPrepared,WordPress.DB.DirectDatabaseQuery
		$ids = $wpdb->get_col( $wpdb->prepare( "SELECT c.id FROM {$c} c LEFT JOIN {$m} m ON m.channel_id = c.id AND m.user_id = %d WHERE c.is_private = 0 OR m.user_id IS NOT NULL ORDER BY c.id LIMIT 1024", $user_id ) );
		return array_map( 'intval', (array) $ids );
	}

	/**
	 * Stores a message and fires `lms_chat_message_created` (or the thread variant).
	 *
	 * @param int    $channel_id channel.
	 * @param int    $user_id    author.
	 * @param string $text       message.
	 * @param int    $parent_id  0, or the message this replies to.
	 * @return array<string, mixed> the message as clients see it.
	 */
	public static function post_message( int $channel_id, int $user_id, string $text, int $parent_id = 0 ): array {
		global $wpdb;
		// phpcs:ignore WordPress.DB.DirectDatabaseQuery.DirectQuery
		$wpdb->insert(
			self::table( 'messages' ),
			array(
				'channel_id' => $channel_id,
				'parent_id'  => $parent_id,
				'user_id'    => $user_id,
				'message'    => $text,
				'created_at' => current_time( 'mysql', true ),
			),
			array( '%d', '%d', '%d', '%s', '%s' )
		);
		$message = self::get_message( (int) $wpdb->insert_id );
		// The LMS theme's hooks, with its arguments (a reply's hook passes no data).
		// phpcs:disable WordPress.NamingConventions.PrefixAllGlobals.NonPrefixedHooknameFound -- the theme's names, which the plugin listens to.
		if ( $parent_id > 0 ) {
			do_action( 'lms_chat_thread_message_sent', $message['id'], $parent_id, $channel_id, $user_id );
		} else {
			do_action( 'lms_chat_message_created', $message['id'], $channel_id, $user_id, $message );
		}
		// phpcs:enable WordPress.NamingConventions.PrefixAllGlobals.NonPrefixedHooknameFound
		return $message;
	}

	/**
	 * A message as clients see it, or null.
	 *
	 * @param int $id message.
	 * @return array<string, mixed>|null
	 */
	public static function get_message( int $id ): ?array {
		global $wpdb;
		$t = self::table( 'messages' );
		// phpcs:ignore WordPress.DB.PreparedSQL.InterpolatedNotPrepared,WordPress.DB.DirectDatabaseQuery
		$row = $wpdb->get_row( $wpdb->prepare( "SELECT * FROM {$t} WHERE id = %d", $id ), ARRAY_A );
		return is_array( $row ) ? self::format( $row ) : null;
	}

	/**
	 * The newest top-level messages of a channel, oldest first.
	 *
	 * @param int $channel_id channel.
	 * @param int $limit      how many.
	 * @return list<array<string, mixed>>
	 */
	public static function history( int $channel_id, int $limit = self::HISTORY ): array {
		global $wpdb;
		$t = self::table( 'messages' );
		// phpcs:ignore WordPress.DB.PreparedSQL.InterpolatedNotPrepared,WordPress.DB.DirectDatabaseQuery
		$rows = $wpdb->get_results( $wpdb->prepare( "SELECT * FROM {$t} WHERE channel_id = %d AND parent_id = 0 AND deleted_at IS NULL ORDER BY id DESC LIMIT %d", $channel_id, $limit ), ARRAY_A );
		return array_map( array( self::class, 'format' ), array_reverse( (array) $rows ) );
	}

	/**
	 * A message row for clients.
	 *
	 * @param array<string, mixed> $row row.
	 * @return array<string, mixed>
	 */
	private static function format( array $row ): array {
		$user = get_userdata( (int) $row['user_id'] );
		$name = $user ? $user->display_name : '';
		return array(
			'id'         => (int) $row['id'],
			'channel_id' => (int) $row['channel_id'],
			'thread_id'  => (int) $row['parent_id'],
			'user_id'    => (int) $row['user_id'],
			'author'     => $name,
			'user_name'  => $name,
			'text'       => (string) $row['message'],
			'message'    => (string) $row['message'],
			'created_at' => (int) strtotime( $row['created_at'] . ' UTC' ),
			'deleted'    => null !== $row['deleted_at'],
			'reactions'  => self::reactions( (int) $row['id'] ),
		);
	}

	/**
	 * Reaction counts of a message.
	 *
	 * @param int $message_id message.
	 * @return array<string, int>
	 */
	public static function reactions( int $message_id ): array {
		global $wpdb;
		$t = self::table( 'reactions' );
		// phpcs:ignore WordPress.DB.PreparedSQL.InterpolatedNotPrepared,WordPress.DB.DirectDatabaseQuery
		$rows = $wpdb->get_results( $wpdb->prepare( "SELECT emoji, COUNT(*) AS n FROM {$t} WHERE message_id = %d GROUP BY emoji ORDER BY emoji", $message_id ), ARRAY_A );
		$out  = array();
		foreach ( (array) $rows as $r ) {
			$out[ (string) $r['emoji'] ] = (int) $r['n'];
		}
		return $out;
	}

	// -- AJAX -------------------------------------------------------------------------------

	/**
	 * The POSTed fields, unslashed and sanitised (`message` keeps its line breaks).
	 *
	 * @param string[] $keys fields.
	 * @return array<string, string>
	 */
	private static function request( array $keys ): array {
		$out = array();
		// phpcs:disable WordPress.Security.NonceVerification.Missing -- each handler checks the nonce.
		foreach ( $keys as $key ) {
			if ( isset( $_POST[ $key ] ) && is_scalar( $_POST[ $key ] ) ) {
				$out[ $key ] = 'message' === $key
					? sanitize_textarea_field( wp_unslash( (string) $_POST[ $key ] ) )
					: sanitize_text_field( wp_unslash( (string) $_POST[ $key ] ) );
			}
		}
		// phpcs:enable
		return $out;
	}

	/**
	 * `lmsrt_demo_post_message`.
	 */
	public static function ajax_post_message(): void {
		$rt  = LMS_Realtime_Plugin::realtime();
		$req = self::request( array( 'nonce', 'channel_id', 'thread_id', 'message' ) );
		$rt->send( static fn () => self::answer_post( $rt, $req, get_current_user_id() ) );
	}

	/**
	 * Posts a message for the AJAX action.
	 *
	 * @param LMSRT_Realtime     $rt      realtime service (checks, guards).
	 * @param array<string, string> $req     nonce, channel_id, thread_id, message.
	 * @param int                   $user_id current user.
	 * @return array{message: array<string, mixed>}
	 * @throws LMS_Realtime_Ajax_Error When refused.
	 */
	public static function answer_post( LMSRT_Realtime $rt, array $req, int $user_id ): array {
		$rt->metrics()->count( 'requests.post' );
		$rt->check_user_and_nonce( $req, $user_id );
		$channel_id = LMSRT_Realtime::parse_id( $req['channel_id'] ?? null, false );
		$parent_id  = LMSRT_Realtime::parse_id( $req['thread_id'] ?? '0', true );
		$text       = trim( $req['message'] ?? '' );
		if ( null === $channel_id || null === $parent_id || '' === $text || mb_strlen( $text ) > self::MAX_LENGTH ) {
			throw new LMS_Realtime_Ajax_Error( 'invalid_parameters', __( 'A message needs a channel and 1 to 4000 characters of text.', 'lms-realtime' ) );
		}
		if ( ! self::user_can_access_channel( $user_id, $channel_id ) ) {
			throw new LMS_Realtime_Ajax_Error( 'access_denied', __( 'You do not have access to this channel.', 'lms-realtime' ) );
		}
		if ( $parent_id > 0 ) {
			$parent = self::get_message( $parent_id );
			if ( null === $parent || $parent['channel_id'] !== $channel_id ) {
				throw new LMS_Realtime_Ajax_Error( 'invalid_parameters', __( 'The thread does not exist in this channel.', 'lms-realtime' ) );
			}
		}
		$rt->check_rate( 'post', $user_id );
		return array( 'message' => self::post_message( $channel_id, $user_id, $text, $parent_id ) );
	}

	/**
	 * `lmsrt_demo_delete_message`: the author or a moderator (`moderate_comments`).
	 */
	public static function ajax_delete_message(): void {
		$rt  = LMS_Realtime_Plugin::realtime();
		$req = self::request( array( 'nonce', 'message_id' ) );
		$rt->send(
			static function () use ( $rt, $req ): array {
				$user_id = get_current_user_id();
				$rt->check_user_and_nonce( $req, $user_id );
				$message = self::get_message( (int) LMSRT_Realtime::parse_id( $req['message_id'] ?? null, false ) );
				if ( null === $message || $message['deleted'] || ! self::user_can_access_channel( $user_id, $message['channel_id'] ) ) {
					throw new LMS_Realtime_Ajax_Error( 'invalid_parameters', __( 'No such message.', 'lms-realtime' ) );
				}
				if ( $message['user_id'] !== $user_id && ! user_can( $user_id, 'moderate_comments' ) ) {
					throw new LMS_Realtime_Ajax_Error( 'access_denied', __( 'You may not delete this message.', 'lms-realtime' ) );
				}
				$rt->check_rate( 'post', $user_id );
				global $wpdb;
				// phpcs:ignore WordPress.DB.DirectDatabaseQuery.DirectQuery
				$wpdb->update( self::table( 'messages' ), array( 'deleted_at' => current_time( 'mysql', true ) ), array( 'id' => $message['id'] ), array( '%s' ), array( '%d' ) );
				// phpcs:disable WordPress.NamingConventions.PrefixAllGlobals.NonPrefixedHooknameFound -- the LMS theme's hooks.
				if ( $message['thread_id'] > 0 ) {
					do_action( 'lms_chat_thread_message_deleted', $message['id'], $message['thread_id'], $message['channel_id'] );
				} else {
					do_action( 'lms_chat_message_deleted', $message['id'], $message['channel_id'], $user_id, array( 'deleted_by' => $user_id ) );
				}
				// phpcs:enable WordPress.NamingConventions.PrefixAllGlobals.NonPrefixedHooknameFound
				return array( 'message_id' => $message['id'] );
			}
		);
	}

	/**
	 * `lmsrt_demo_toggle_reaction`.
	 */
	public static function ajax_toggle_reaction(): void {
		$rt  = LMS_Realtime_Plugin::realtime();
		$req = self::request( array( 'nonce', 'message_id', 'emoji' ) );
		$rt->send(
			static function () use ( $rt, $req ): array {
				$user_id = get_current_user_id();
				$rt->check_user_and_nonce( $req, $user_id );
				$message = self::get_message( (int) LMSRT_Realtime::parse_id( $req['message_id'] ?? null, false ) );
				$emoji   = (string) ( $req['emoji'] ?? '' );
				if ( null === $message || $message['deleted'] || '' === $emoji || strlen( $emoji ) > 32 || ! self::user_can_access_channel( $user_id, $message['channel_id'] ) ) {
					throw new LMS_Realtime_Ajax_Error( 'invalid_parameters', __( 'No such message or reaction.', 'lms-realtime' ) );
				}
				$rt->check_rate( 'post', $user_id );
				global $wpdb;
				$t = self::table( 'reactions' );
				// phpcs:disable WordPress.DB.PreparedSQL.InterpolatedNotPrepared,WordPress.DB.DirectDatabaseQuery
				$removed = $wpdb->query( $wpdb->prepare( "DELETE FROM {$t} WHERE message_id = %d AND user_id = %d AND emoji = %s", $message['id'], $user_id, $emoji ) );
				if ( ! $removed ) {
					$wpdb->query( $wpdb->prepare( "INSERT IGNORE INTO {$t} (message_id, user_id, emoji) VALUES (%d, %d, %s)", $message['id'], $user_id, $emoji ) );
				}
				// phpcs:enable
				$reactions = self::reactions( $message['id'] );
				$list = LMSRT_Chat_Realtime_Base::lmsrt_reaction_list( $reactions );
				// phpcs:disable WordPress.NamingConventions.PrefixAllGlobals.NonPrefixedHooknameFound -- the LMS theme's hooks.
				if ( $message['thread_id'] > 0 ) {
					do_action( 'lms_thread_reaction_updated', $message['id'], $message['channel_id'], $message['thread_id'], $list );
				} else {
					do_action( 'lms_reaction_updated', $message['id'], $message['channel_id'], $list, $user_id );
				}
				// phpcs:enable WordPress.NamingConventions.PrefixAllGlobals.NonPrefixedHooknameFound
				return array(
					'message_id' => $message['id'],
					'reactions'  => $reactions,
				);
			}
		);
	}

	/**
	 * `lmsrt_demo_history`: reloads a channel after a gap (`resync`).
	 */
	public static function ajax_history(): void {
		$rt  = LMS_Realtime_Plugin::realtime();
		$req = self::request( array( 'nonce', 'channel_id' ) );
		$rt->send(
			static function () use ( $rt, $req ): array {
				$user_id = get_current_user_id();
				$rt->check_user_and_nonce( $req, $user_id );
				$channel_id = LMSRT_Realtime::parse_id( $req['channel_id'] ?? null, false );
				if ( null === $channel_id || ! self::user_can_access_channel( $user_id, $channel_id ) ) {
					throw new LMS_Realtime_Ajax_Error( 'access_denied', __( 'You do not have access to this channel.', 'lms-realtime' ) );
				}
				$rt->check_rate( 'poll', $user_id );
				return array( 'messages' => self::history( $channel_id ) );
			}
		);
	}

	// -- the page ---------------------------------------------------------------------------

	/**
	 * Registers the scripts: the browser client and the chat UI.
	 */
	public static function register_assets(): void {
		$url = plugins_url( 'assets/', LMSRT_DEMO_FILE );
		if ( ! wp_script_is( 'lms-realtime-client', 'registered' ) ) {
			LMS_Realtime_Plugin::register_client();
		}
		wp_register_script( 'lmsrt-demo-chat', $url . 'lmsrt-demo-chat.js', array( 'lms-realtime-client' ), LMSRT_PLUGIN_VERSION, true );
		wp_register_style( 'lmsrt-demo-chat', $url . 'lmsrt-demo-chat.css', array(), LMSRT_PLUGIN_VERSION );
	}

	/**
	 * `[lmsrt_demo_chat channel="1"]`: the message list and a post box, live through the client.
	 *
	 * @param array|string $atts attributes.
	 */
	public static function shortcode( $atts ): string {
		$atts       = shortcode_atts( array( 'channel' => '0' ), (array) $atts, 'lmsrt_demo_chat' );
		$channel_id = (int) LMSRT_Realtime::parse_id( (string) $atts['channel'], false );
		$user_id    = get_current_user_id();
		if ( $user_id <= 0 ) {
			return '<p class="lms-chat-login">' . esc_html__( 'Please log in to use the chat.', 'lms-realtime' ) . '</p>';
		}
		if ( $channel_id <= 0 || ! self::user_can_access_channel( $user_id, $channel_id ) ) {
			return '<p class="lms-chat-denied">' . esc_html__( 'You do not have access to this channel.', 'lms-realtime' ) . '</p>';
		}
		if ( ! wp_script_is( 'lmsrt-demo-chat', 'registered' ) ) {
			self::register_assets();
		}
		// The head first, then the history: an event committed in between is delivered (and
		// de-duplicated by message id), never lost.
		try {
			$config = LMS_Realtime_Plugin::realtime()->page_config( $channel_id );
		} catch ( \Throwable $e ) {
			return '<p class="lms-chat-error">' . esc_html__( 'The chat is temporarily unavailable.', 'lms-realtime' ) . '</p>';
		}
		$config['own_user_id'] = $user_id;
		$config['i18n']        = array(
			'send'   => __( 'Send', 'lms-realtime' ),
			'delete' => __( 'Delete', 'lms-realtime' ),
			'failed' => __( 'The message could not be sent.', 'lms-realtime' ),
		);
		wp_enqueue_script( 'lmsrt-demo-chat' );
		wp_enqueue_style( 'lmsrt-demo-chat' );
		wp_add_inline_script( 'lmsrt-demo-chat', 'window.lmsRealtimeConfig = ' . wp_json_encode( $config ) . ';', 'before' );

		ob_start();
		?>
		<div class="lms-chat" id="lms-chat-<?php echo esc_attr( (string) $channel_id ); ?>" data-channel-id="<?php echo esc_attr( (string) $channel_id ); ?>" data-transport="" data-tier="">
			<ul class="lms-chat-messages">
				<?php foreach ( self::history( $channel_id ) as $m ) : ?>
					<li class="lms-chat-message" data-message-id="<?php echo esc_attr( (string) $m['id'] ); ?>" data-user-id="<?php echo esc_attr( (string) $m['user_id'] ); ?>">
						<strong class="lms-chat-author"><?php echo esc_html( $m['author'] ); ?></strong>
						<span class="lms-chat-text"><?php echo esc_html( $m['text'] ); ?></span>
					</li>
				<?php endforeach; ?>
			</ul>
			<form class="lms-chat-form">
				<label class="screen-reader-text" for="lms-chat-input-<?php echo esc_attr( (string) $channel_id ); ?>"><?php esc_html_e( 'Message', 'lms-realtime' ); ?></label>
				<input type="text" class="lms-chat-input" id="lms-chat-input-<?php echo esc_attr( (string) $channel_id ); ?>" maxlength="<?php echo esc_attr( (string) self::MAX_LENGTH ); ?>" autocomplete="off" />
				<button type="submit" class="lms-chat-send"><?php esc_html_e( 'Send', 'lms-realtime' ); ?></button>
			</form>
			<p class="lms-chat-status" aria-live="polite"></p>
		</div>
		<?php
		return (string) ob_get_clean();
	}
}
