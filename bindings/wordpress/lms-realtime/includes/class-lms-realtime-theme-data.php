<?php
/**
 * Read-only access to the LMS chat theme's data.
 *
 * @package LMS_Realtime
 */

defined( 'ABSPATH' ) || exit;

/**
 * What the plugin reads from the LMS chat theme ("lms-chat-system") when it is present: its
 * session user, channel membership, user names and messages. Every query is a SELECT on the
 * theme's own tables; the plugin never creates, alters or drops them. Layouts are read
 * tolerantly (a column that is missing is simply not used), since the theme's schema is the
 * theme's business.
 */
final class LMS_Realtime_Theme_Data {

	/**
	 * Which of the theme's tables exist, per request.
	 *
	 * @var array<string, bool>
	 */
	private static array $tables = array();

	/**
	 * Membership answers, per request.
	 *
	 * @var array<string, bool>
	 */
	private static array $members = array();

	/**
	 * Whether the LMS chat theme (or anything with its session API) is loaded.
	 */
	public static function present(): bool {
		return function_exists( 'lms_get_current_user_id' );
	}

	/**
	 * The theme's session user, or 0.
	 */
	public static function session_user_id(): int {
		if ( ! self::present() ) {
			return 0;
		}
		try {
			return max( 0, (int) lms_get_current_user_id() );
		} catch ( \Throwable $e ) {
			return 0;
		}
	}

	/**
	 * A stable key for the theme's session (binds daemon tokens), or '' without one.
	 */
	public static function session_key(): string {
		return PHP_SESSION_ACTIVE === session_status() ? (string) session_id() : '';
	}

	/**
	 * A theme table's full name.
	 *
	 * @param string $name without the prefix, e.g. `lms_chat_channel_members`.
	 */
	public static function table( string $name ): string {
		global $wpdb;
		return $wpdb->prefix . $name;
	}

	/**
	 * Whether a theme table exists (cached for the request).
	 *
	 * @param string $name without the prefix.
	 */
	public static function has_table( string $name ): bool {
		if ( ! isset( self::$tables[ $name ] ) ) {
			global $wpdb;
			$full = self::table( $name );
			// phpcs:ignore WordPress.DB.DirectDatabaseQuery
			self::$tables[ $name ] = $full === $wpdb->get_var( $wpdb->prepare( 'SHOW TABLES LIKE %s', $wpdb->esc_like( $full ) ) );
		}
		return self::$tables[ $name ];
	}

	/**
	 * Whether the user is a member of the channel: null when the theme's membership table
	 * does not exist (the theme has no answer).
	 *
	 * @param int $user_id    the theme's user.
	 * @param int $channel_id the channel.
	 */
	public static function is_member( int $user_id, int $channel_id ): ?bool {
		if ( ! self::has_table( 'lms_chat_channel_members' ) ) {
			return null;
		}
		$key = $user_id . ':' . $channel_id;
		if ( ! isset( self::$members[ $key ] ) ) {
			global $wpdb;
			$t = self::table( 'lms_chat_channel_members' );
			// phpcs:ignore WordPress.DB.PreparedSQL.InterpolatedNotPrepared,WordPress.DB.DirectDatabaseQuery
			self::$members[ $key ] = (bool) $wpdb->get_var( $wpdb->prepare( "SELECT 1 FROM {$t} WHERE user_id = %d AND channel_id = %d LIMIT 1", $user_id, $channel_id ) );
		}
		return self::$members[ $key ];
	}

	/**
	 * The channels the user is a member of (null without the membership table).
	 *
	 * @param int $user_id the theme's user.
	 * @return int[]|null
	 */
	public static function channels_for_user( int $user_id ): ?array {
		if ( ! self::has_table( 'lms_chat_channel_members' ) ) {
			return null;
		}
		global $wpdb;
		$t = self::table( 'lms_chat_channel_members' );
		// phpcs:ignore WordPress.DB.PreparedSQL.InterpolatedNotPrepared,WordPress.DB.DirectDatabaseQuery
		$ids = $wpdb->get_col( $wpdb->prepare( "SELECT channel_id FROM {$t} WHERE user_id = %d ORDER BY channel_id LIMIT 1024", $user_id ) );
		return array_map( 'intval', (array) $ids );
	}

	/**
	 * The theme's user: `display_name` and `avatar_url` where known.
	 *
	 * @param int $user_id the theme's user.
	 * @return array<string, string>
	 */
	public static function user( int $user_id ): array {
		$row = self::row( 'lms_users', $user_id );
		if ( null === $row ) {
			return array();
		}
		$out  = array();
		$name = $row['display_name'] ?? $row['name'] ?? $row['username'] ?? null;
		if ( null !== $name && '' !== (string) $name ) {
			$out['display_name'] = (string) $name;
		}
		if ( isset( $row['avatar_url'] ) && '' !== (string) $row['avatar_url'] ) {
			$out['avatar_url'] = (string) $row['avatar_url'];
		}
		return $out;
	}

	/**
	 * A message row: the thread table first for replies, then the message table.
	 *
	 * @param int  $message_id the message.
	 * @param bool $reply      whether it is a thread reply.
	 * @return array<string, mixed>|null
	 */
	public static function message( int $message_id, bool $reply ): ?array {
		$tables = $reply ? array( 'lms_chat_thread_messages', 'lms_chat_messages' ) : array( 'lms_chat_messages' );
		foreach ( $tables as $table ) {
			$row = self::row( $table, $message_id );
			if ( null !== $row ) {
				return $row;
			}
		}
		return null;
	}

	/**
	 * One row by id from a theme table, or null (no table, no row, any error).
	 *
	 * @param string $name table without the prefix.
	 * @param int    $id   the id.
	 * @return array<string, mixed>|null
	 */
	private static function row( string $name, int $id ): ?array {
		if ( $id <= 0 || ! self::has_table( $name ) ) {
			return null;
		}
		global $wpdb;
		$t = self::table( $name );
		// phpcs:ignore WordPress.DB.PreparedSQL.InterpolatedNotPrepared,WordPress.DB.DirectDatabaseQuery
		$row = $wpdb->get_row( $wpdb->prepare( "SELECT * FROM {$t} WHERE id = %d", $id ), ARRAY_A );
		return is_array( $row ) ? $row : null;
	}

	/**
	 * The highest id the theme's own event table has handed out (0 without the table).
	 * Its clients hold ids from there; the plugin's ids start above it.
	 */
	public static function event_high_water(): int {
		if ( ! self::has_table( 'lms_chat_realtime_events' ) ) {
			return 0;
		}
		global $wpdb;
		$t = self::table( 'lms_chat_realtime_events' );
		// phpcs:ignore WordPress.DB.PreparedSQL.InterpolatedNotPrepared,WordPress.DB.DirectDatabaseQuery
		return (int) $wpdb->get_var( "SELECT COALESCE(MAX(id), 0) FROM {$t}" );
	}

	/**
	 * Forgets the per-request caches (tests).
	 */
	public static function reset(): void {
		self::$tables  = array();
		self::$members = array();
	}
}
