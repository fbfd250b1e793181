<?php
/**
 * The integration layer between the plugin and a chat theme.
 *
 * @package LMS_Realtime
 */

defined( 'ABSPATH' ) || exit;

/**
 * Turns a chat theme's hooks into events, and answers its AJAX long poll from the plugin.
 *
 * There are two ways in, and this class is both:
 *
 * (b) An unmodified theme (or none): the plugin makes an instance of this class and hooks it to
 *     the theme's actions (`lms_chat_message_created`, ...) and, at a priority that runs before
 *     the theme's own handler, to the `lms_unified_long_poll` AJAX action.
 *
 * (a) The theme opts in with one line: `class LMS_Chat_Realtime extends LMSRT_Chat_Realtime_Base`.
 *     The plugin then uses the theme's own instance (`get_instance()` when the theme has it,
 *     else one made without running the theme's constructor), so every `lmsrt_*` method the
 *     theme overrides (identity, channel access, event data) takes effect, and the theme can
 *     call `$this->lmsrt_record()` itself. Its own methods and hooks keep working.
 *
 * So that a theme class can extend it without a clash, this class has no constructor, no
 * properties, and no member whose name lacks the `lmsrt_` prefix; it keeps no state (the
 * service lives in `LMS_Realtime_Plugin`). The extending theme depends on the plugin being
 * active: see the plugin's README for the guarded form of the one line.
 */
class LMSRT_Chat_Realtime_Base {

	/**
	 * The theme's actions this class listens to: hook => [method, accepted args]. The
	 * arguments are the theme's: see each handler.
	 *
	 * @return array<string, array{0: string, 1: int}>
	 */
	public static function lmsrt_theme_hooks(): array {
		return array(
			'lms_chat_message_created'        => array( 'lmsrt_on_message_created', 4 ),
			'lms_chat_message_deleted'        => array( 'lmsrt_on_message_deleted', 4 ),
			'lms_chat_thread_message_sent'    => array( 'lmsrt_on_thread_message_sent', 5 ),
			'lms_chat_thread_message_deleted' => array( 'lmsrt_on_thread_message_deleted', 4 ),
			'lms_reaction_updated'            => array( 'lmsrt_on_reaction_updated', 4 ),
			'lms_thread_reaction_updated'     => array( 'lmsrt_on_thread_reaction_updated', 4 ),
		);
	}

	/**
	 * The realtime service of this request (the store path or the table path).
	 */
	public function lmsrt_service(): LMSRT_Realtime {
		return LMS_Realtime_Plugin::realtime();
	}

	// -- identity and access ----------------------------------------------------------------

	/**
	 * The chat user of this request: the LMS theme's session user where the theme is present,
	 * else the WordPress user; filter `lms_realtime_current_user_id`. 0: nobody.
	 */
	public function lmsrt_current_user_id(): int {
		$id = LMS_Realtime_Theme_Data::present() ? LMS_Realtime_Theme_Data::session_user_id() : get_current_user_id();
		/**
		 * Filters the chat user of the current request (0: not logged in to the chat).
		 *
		 * @param int $id The user id the plugin found.
		 */
		return max( 0, (int) apply_filters( 'lms_realtime_current_user_id', $id ) );
	}

	/**
	 * Whether the user may read the channel's events. The LMS theme's membership table answers
	 * where it exists; filter `lms_realtime_user_can_access_channel` (true, false, or null for
	 * "no answer"). Nothing answering means no.
	 *
	 * @param int $user_id    the chat user.
	 * @param int $channel_id the channel.
	 */
	public function lmsrt_can_access_channel( int $user_id, int $channel_id ): bool {
		$can = null;
		if ( $user_id > 0 && $channel_id > 0 && LMS_Realtime_Theme_Data::present() ) {
			$can = LMS_Realtime_Theme_Data::is_member( $user_id, $channel_id );
		}
		/**
		 * Filters whether a chat user may read a channel's events.
		 *
		 * @param bool|null $can        The theme's answer, or null when nothing answered.
		 * @param int       $user_id    The chat user.
		 * @param int       $channel_id The channel.
		 */
		$can = apply_filters( 'lms_realtime_user_can_access_channel', $can, $user_id, $channel_id );
		return $user_id > 0 && $channel_id > 0 && true === $can;
	}

	/**
	 * The channels a user may read, for a daemon token (filter `lms_realtime_channels_for_user`).
	 *
	 * @param int $user_id the chat user.
	 * @return int[]
	 */
	public function lmsrt_channels_for_user( int $user_id ): array {
		$ids = LMS_Realtime_Theme_Data::present() ? LMS_Realtime_Theme_Data::channels_for_user( $user_id ) : null;
		/**
		 * Filters the channels a chat user may read.
		 *
		 * @param int[] $ids     The theme's answer (empty when nothing answered).
		 * @param int   $user_id The chat user.
		 */
		$ids = apply_filters( 'lms_realtime_channels_for_user', $ids ?? array(), $user_id );
		return array_values( array_filter( array_map( 'intval', (array) $ids ), static fn ( int $id ): bool => $id > 0 ) );
	}

	/**
	 * What binds a daemon token to this login: the WordPress session token, or the theme's
	 * PHP session.
	 */
	public function lmsrt_session_key(): string {
		if ( LMS_Realtime_Theme_Data::present() ) {
			return LMS_Realtime_Theme_Data::session_key();
		}
		return (string) wp_get_session_token();
	}

	// -- AJAX -------------------------------------------------------------------------------

	/**
	 * `admin-ajax.php?action=lms_unified_long_poll` (GET or POST), answered by the plugin.
	 */
	public function lmsrt_handle_unified_long_poll(): void {
		$this->lmsrt_service()->handle_long_poll( $this );
	}

	/**
	 * `admin-ajax.php?action=lms_realtime_token`: a daemon token for the chat user.
	 */
	public function lmsrt_handle_token(): void {
		$this->lmsrt_service()->handle_token( $this );
	}

	// -- the theme's hooks ------------------------------------------------------------------

	/**
	 * `lms_chat_message_created`.
	 *
	 * @param int        $message_id the message.
	 * @param int        $channel_id its channel.
	 * @param int        $user_id    its author.
	 * @param array|null $data       what the theme passes (name, text, time, attachments).
	 */
	public function lmsrt_on_message_created( $message_id, $channel_id, $user_id = 0, $data = array() ): void {
		$this->lmsrt_record( 'message_create', (int) $channel_id, (array) $data, (int) $message_id, null, (int) $user_id );
	}

	/**
	 * `lms_chat_message_deleted`.
	 *
	 * @param int        $message_id the message.
	 * @param int        $channel_id its channel.
	 * @param int|null   $user_id    who deleted it, if known.
	 * @param array|null $data       extra data.
	 */
	public function lmsrt_on_message_deleted( $message_id, $channel_id, $user_id = null, $data = array() ): void {
		$this->lmsrt_record( 'message_delete', (int) $channel_id, (array) $data, (int) $message_id, null, (int) $user_id );
	}

	/**
	 * `lms_chat_thread_message_sent`.
	 *
	 * @param int        $message_id        the reply.
	 * @param int        $parent_message_id the message it replies to (the thread).
	 * @param int        $channel_id        the channel.
	 * @param int        $user_id           its author.
	 * @param array|null $data              what the caller passes, if anything.
	 */
	public function lmsrt_on_thread_message_sent( $message_id, $parent_message_id, $channel_id, $user_id = 0, $data = array() ): void {
		$data                      = (array) $data;
		$data['parent_message_id'] = (int) $parent_message_id;
		$this->lmsrt_record( 'thread_create', (int) $channel_id, $data, (int) $message_id, (int) $parent_message_id, (int) $user_id );
	}

	/**
	 * `lms_chat_thread_message_deleted`.
	 *
	 * @param int        $message_id        the reply.
	 * @param int        $parent_message_id the thread.
	 * @param int        $channel_id        the channel.
	 * @param array|null $data              extra data.
	 */
	public function lmsrt_on_thread_message_deleted( $message_id, $parent_message_id, $channel_id, $data = array() ): void {
		$data                      = (array) $data;
		$data['parent_message_id'] = (int) $parent_message_id;
		$this->lmsrt_record( 'thread_delete', (int) $channel_id, $data, (int) $message_id, (int) $parent_message_id, 0 );
	}

	/**
	 * `lms_reaction_updated`.
	 *
	 * @param int   $message_id the message.
	 * @param int   $channel_id the channel.
	 * @param array $reactions  the message's reactions now.
	 * @param int   $user_id    who reacted.
	 */
	public function lmsrt_on_reaction_updated( $message_id, $channel_id, $reactions = array(), $user_id = 0 ): void {
		$data = array( 'reactions' => self::lmsrt_reaction_list( $reactions ) );
		$this->lmsrt_record( 'reaction_update', (int) $channel_id, $data, (int) $message_id, null, (int) $user_id );
	}

	/**
	 * `lms_thread_reaction_updated`.
	 *
	 * @param int   $message_id the reply.
	 * @param int   $channel_id the channel.
	 * @param int   $thread_id  the thread (its parent message).
	 * @param array $reactions  the reply's reactions now.
	 */
	public function lmsrt_on_thread_reaction_updated( $message_id, $channel_id, $thread_id = 0, $reactions = array() ): void {
		$data = array(
			'reactions'         => self::lmsrt_reaction_list( $reactions ),
			'parent_message_id' => (int) $thread_id,
		);
		$this->lmsrt_record( 'thread_reaction', (int) $channel_id, $data, (int) $message_id, (int) $thread_id, 0 );
	}

	// -- recording --------------------------------------------------------------------------

	/**
	 * Records one event with the data the theme's UI reads (see `lmsrt_event_data`).
	 *
	 * @param string   $type       event type.
	 * @param int      $channel_id channel.
	 * @param array    $data       data from the hook.
	 * @param int|null $message_id message.
	 * @param int|null $thread_id  thread (the parent message).
	 * @param int      $user_id    actor.
	 * @return int|null the event id, or null when not recorded.
	 */
	public function lmsrt_record( string $type, int $channel_id, array $data = array(), ?int $message_id = null, ?int $thread_id = null, int $user_id = 0 ): ?int {
		$data = $this->lmsrt_event_data( $type, $data, $channel_id, (int) $message_id, (int) $thread_id, $user_id );
		return $this->lmsrt_service()->record_event( $type, $channel_id, $data, $message_id, $thread_id, $user_id );
	}

	/**
	 * The event's data as the LMS theme's UI reads it: ids; for messages and replies the
	 * author's `user_name`/`display_name`, `message`/`content`, `created_at`, `attachments`,
	 * `avatar_url` (read from the theme's tables when the hook did not pass them). Filter
	 * `lms_realtime_event_data`.
	 *
	 * @param string $type       event type.
	 * @param array  $data       data from the hook.
	 * @param int    $channel_id channel.
	 * @param int    $message_id message (0: none).
	 * @param int    $thread_id  thread (0: none).
	 * @param int    $user_id    actor.
	 * @return array<string, mixed>
	 * @SuppressWarnings(PHPMD.UnusedFormalParameter) $thread_id is for a theme's override.
	 */
	public function lmsrt_event_data( string $type, array $data, int $channel_id, int $message_id, int $thread_id, int $user_id ): array {
		$data += array(
			'message_id' => $message_id,
			'channel_id' => $channel_id,
		);
		if ( $user_id > 0 ) {
			$data += array( 'user_id' => $user_id );
		}
		if ( in_array( $type, array( 'message_create', 'thread_create' ), true ) ) {
			$data = self::lmsrt_message_fields( $data, $message_id, 'thread_create' === $type, $user_id );
		}
		/**
		 * Filters an event's data before it is recorded.
		 *
		 * @param array  $data       The data.
		 * @param string $type       The event type.
		 * @param int    $channel_id The channel.
		 * @param int    $message_id The message.
		 */
		return (array) apply_filters( 'lms_realtime_event_data', $data, $type, $channel_id, $message_id );
	}

	/**
	 * Fills a message event's fields: both spellings of name and text, the time, attachments
	 * and avatar, from the theme's tables where the hook left them out.
	 *
	 * @param array $data       data so far.
	 * @param int   $message_id the message.
	 * @param bool  $reply      a thread reply.
	 * @param int   $user_id    its author.
	 * @return array<string, mixed>
	 */
	private static function lmsrt_message_fields( array $data, int $message_id, bool $reply, int $user_id ): array {
		$name = $data['user_name'] ?? $data['display_name'] ?? null;
		$text = $data['message'] ?? $data['content'] ?? null;
		if ( ( null === $name || null === $text ) && $message_id > 0 && LMS_Realtime_Theme_Data::present() ) {
			$row = LMS_Realtime_Theme_Data::message( $message_id, $reply );
			if ( null !== $row ) {
				$text  ??= $row['message'] ?? $row['content'] ?? null;
				$user_id = $user_id > 0 ? $user_id : (int) ( $row['user_id'] ?? 0 );
				$data   += array_filter(
					array(
						'created_at'        => $row['created_at'] ?? null,
						'parent_message_id' => isset( $row['parent_message_id'] ) ? (int) $row['parent_message_id'] : null,
						'user_id'           => $user_id > 0 ? $user_id : null,
					),
					static fn ( $v ): bool => null !== $v
				);
			}
			if ( null === $name && $user_id > 0 ) {
				$user  = LMS_Realtime_Theme_Data::user( $user_id );
				$name  = $user['display_name'] ?? null;
				$data += array_intersect_key( $user, array( 'avatar_url' => true ) );
			}
		}
		if ( null !== $name ) {
			$data += array(
				'user_name'    => (string) $name,
				'display_name' => (string) $name,
			);
		}
		if ( null !== $text ) {
			$data += array(
				'message' => (string) $text,
				'content' => (string) $text,
			);
		}
		return $data + array(
			'created_at'  => current_time( 'mysql' ),
			'attachments' => array(),
		);
	}

	/**
	 * Reactions as the theme's UI reads them: a list of objects with `emoji`. A map of
	 * emoji => count (or => list of users) becomes that list; a list is kept as it is.
	 *
	 * @param mixed $reactions what the hook passed.
	 * @return list<array<string, mixed>>
	 */
	public static function lmsrt_reaction_list( $reactions ): array {
		$reactions = (array) $reactions;
		if ( array() === $reactions || array_is_list( $reactions ) ) {
			return array_values( array_map( static fn ( $r ): array => (array) $r, $reactions ) );
		}
		$out = array();
		foreach ( $reactions as $emoji => $v ) {
			$out[] = array(
				'emoji' => (string) $emoji,
				'count' => is_array( $v ) ? count( $v ) : (int) $v,
			);
		}
		return $out;
	}
}
