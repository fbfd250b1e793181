<?php
/**
 * The realtime base class: the chat hooks, the legacy AJAX poll, the legacy event table.
 *
 * @package LMS_Realtime
 */

defined( 'ABSPATH' ) || exit;

/**
 * Records chat events and answers the `lms_unified_long_poll` AJAX poll.
 *
 * This class is the table path: events are rows of the plugin's own table
 * `{prefix}lmsrt_events`, and a poll answers with the next rows by id.
 * It runs when the event store cannot (no ext-ffi, no library, the kill switch), so the site
 * keeps working; the theme's client is held up to 5 s there with a query every 250 ms (what
 * the theme's own handler does), never longer. `LMSRT_Unified_Long_Poll` extends it and replaces the storage with the event
 * store and the immediate answer with a short bounded wait. Ids stay increasing across a move
 * between the two (`LMS_Realtime_Ids`).
 *
 * Everything that is WordPress (nonces, the guards, the AJAX shapes) is here, shared by both
 * paths; who the user is and which channels they may read come from the integration layer
 * (`LMSRT_Chat_Realtime_Base`), and the theme's hooks reach `record_event()` through it.
 */
class LMSRT_Realtime {

	/** The nonce action the plugin's own pages use. */
	public const NONCE_ACTION = 'lms_chat_nonce';

	/** The nonce actions the LMS theme's pages create (`lms_ajax_obj.nonce`, the long poll's). */
	public const THEME_NONCE_ACTIONS = array( 'lms_ajax_nonce', 'lms_unified_longpoll' );

	/** Longest hold for the LMS theme's client: it gives up a request after 7 s, and stops polling after 5 timeouts. */
	public const LEGACY_CLIENT_MAX_WAIT = 5;

	/** The legacy poll's AJAX action. */
	public const POLL_ACTION = 'lms_unified_long_poll';

	/** The daemon token's AJAX action. */
	public const TOKEN_ACTION = 'lms_realtime_token';

	/** The plugin's event table, without the prefix (no other product uses the `lmsrt_` prefix). */
	public const TABLE = 'lmsrt_events';

	/** Event types and their priorities (1 critical, 2 high, 3 normal, 4 low). */
	public const EVENT_PRIORITIES = array(
		'message_create'  => 1,
		'message_delete'  => 1,
		'thread_create'   => 1,
		'thread_delete'   => 1,
		'reaction_update' => 2,
		'thread_reaction' => 2,
	);

	/** Event families, the values of `lms_unified_longpoll_events`. */
	public const EVENT_FAMILIES = array(
		'messages'  => array( 'message_create', 'message_delete', 'thread_create', 'thread_delete' ),
		'reactions' => array( 'reaction_update', 'thread_reaction' ),
	);

	/** Time to live per priority, ms (filter `lms_realtime_event_ttl`). */
	public const TTL_MS = array(
		1 => 21600000,
		2 => 3600000,
		3 => 1800000,
		4 => 300000,
	);

	/** Largest `last_event_id` accepted (SQLite and MySQL both keep ids in signed 64 bits). */
	private const MAX_ID_DIGITS = 18;

	/**
	 * The shared guards.
	 *
	 * @var LMS_Realtime_Guards
	 */
	protected LMS_Realtime_Guards $guards;

	/**
	 * The plugin's counters.
	 *
	 * @var LMS_Realtime_Metrics
	 */
	protected LMS_Realtime_Metrics $metrics;

	/**
	 * Builds the realtime service.
	 *
	 * @param LMS_Realtime_Guards  $guards  the guards.
	 * @param LMS_Realtime_Metrics $metrics the counters.
	 */
	public function __construct( LMS_Realtime_Guards $guards, LMS_Realtime_Metrics $metrics ) {
		$this->guards  = $guards;
		$this->metrics = $metrics;
	}

	/**
	 * `store` (the event store) or `legacy` (the plugin's table).
	 */
	public function backend(): string {
		return 'legacy';
	}

	/**
	 * The guards.
	 */
	public function guards(): LMS_Realtime_Guards {
		return $this->guards;
	}

	/**
	 * The counters.
	 */
	public function metrics(): LMS_Realtime_Metrics {
		return $this->metrics;
	}

	// -- recording --------------------------------------------------------------------------

	/**
	 * Records one event, if its family is enabled (`lms_unified_longpoll_events`).
	 *
	 * @param string   $type       event type.
	 * @param int      $channel_id channel.
	 * @param array    $data       JSON object data.
	 * @param int|null $message_id message.
	 * @param int|null $thread_id  thread (the parent message).
	 * @param int      $user_id    actor.
	 * @return int|null the event id, or null when not recorded.
	 */
	public function record_event( string $type, int $channel_id, array $data = array(), ?int $message_id = null, ?int $thread_id = null, int $user_id = 0 ): ?int {
		if ( $channel_id <= 0 || ! self::event_enabled( $type ) ) {
			return null;
		}
		$priority = self::priority_for( $type );
		$event    = array(
			'type'       => $type,
			'priority'   => $priority,
			'channel_id' => $channel_id,
			'message_id' => null !== $message_id && $message_id > 0 ? $message_id : null,
			'thread_id'  => null !== $thread_id && $thread_id > 0 ? $thread_id : null,
			'user_id'    => max( 0, $user_id ),
			'data'       => $data,
			'ttl_ms'     => self::ttl_ms_for( $priority, $type ),
		);
		/**
		 * Filters an event before it is recorded; return null to drop it.
		 *
		 * @param array|null $event The event.
		 */
		$event = apply_filters( 'lms_realtime_event', $event );
		if ( ! is_array( $event ) ) {
			return null;
		}
		try {
			LMS_Realtime_Ids::switch_to( $this );
			$id = $this->store_event( $event );
		} catch ( \Throwable $e ) {
			$this->guards->breaker_record( false );
			$this->metrics->count( 'errors.record_failed' );
			// phpcs:ignore WordPress.PHP.DevelopmentFunctions.error_log_error_log -- an event that could not be recorded must be visible to the admin.
			error_log( sprintf( 'lms-realtime: could not record %s in channel %d: %s', $type, $channel_id, $e->getMessage() ) );
			return null;
		}
		$this->metrics->count( 'events_recorded' );
		/**
		 * Fires after an event was recorded.
		 *
		 * @param int   $id    The event id.
		 * @param array $event The event.
		 */
		do_action( 'lms_realtime_event_recorded', $id, $event );
		return $id;
	}

	/**
	 * Stores an event in the legacy table.
	 *
	 * @param array $event type, priority, channel_id, message_id, thread_id, user_id, data, ttl_ms.
	 * @return int the id.
	 * @throws \RuntimeException When the insert fails.
	 */
	protected function store_event( array $event ): int {
		global $wpdb;
		$now = self::now_ms();
		// phpcs:ignore WordPress.DB.DirectDatabaseQuery.DirectQuery -- the event table is ours.
		$ok = $wpdb->insert(
			self::table(),
			array(
				'event_type' => $event['type'],
				'priority'   => $event['priority'],
				'channel_id' => $event['channel_id'],
				'message_id' => $event['message_id'],
				'thread_id'  => $event['thread_id'],
				'user_id'    => $event['user_id'],
				'data'       => wp_json_encode( (object) $event['data'] ),
				'timestamp'  => $now,
				'expires_at' => $now + (int) $event['ttl_ms'],
			),
			array( '%s', '%d', '%d', '%d', '%d', '%d', '%s', '%d', '%d' )
		);
		if ( false === $ok ) {
			throw new \RuntimeException( 'insert failed: ' . $wpdb->last_error );
		}
		return (int) $wpdb->insert_id;
	}

	// -- the AJAX poll ----------------------------------------------------------------------

	/** The request fields of a poll, read from POST, then GET (the theme's client uses both). */
	public const POLL_FIELDS = array( 'channel_id', 'thread_id', 'last_event_id', 'last_timestamp', 'timeout', 'event_types', 'nonce', 'nonce_action', 'client' );

	/**
	 * `admin-ajax.php?action=lms_unified_long_poll`, GET or POST: the LMS theme's contract.
	 *
	 * @param LMSRT_Chat_Realtime_Base|null $bridge who the user is (default: the plugin's).
	 */
	public function handle_long_poll( ?LMSRT_Chat_Realtime_Base $bridge = null ): void {
		$bridge  = $bridge ?? LMS_Realtime_Plugin::bridge();
		$request = self::request_fields( self::POLL_FIELDS );
		$this->send( fn () => $this->answer_poll( $request, $bridge->lmsrt_current_user_id() ) );
	}

	/**
	 * Scalar request fields, from POST first, then GET; unslashed and sanitised.
	 *
	 * @param string[] $keys field names.
	 * @return array<string, string>
	 */
	public static function request_fields( array $keys ): array {
		$out = array();
		// phpcs:disable WordPress.Security.NonceVerification -- the handlers check the nonce.
		foreach ( $keys as $key ) {
			// phpcs:ignore WordPress.Security.ValidatedSanitizedInput.InputNotSanitized -- each field is checked and sanitised below.
			foreach ( array( $_POST, $_GET ) as $source ) {
				if ( isset( $source[ $key ] ) && is_scalar( $source[ $key ] ) ) {
					$out[ $key ] = sanitize_text_field( wp_unslash( (string) $source[ $key ] ) );
					break;
				}
			}
		}
		// phpcs:enable
		return $out;
	}

	/**
	 * Answers one poll: the checks in the legacy order, then the events.
	 *
	 * @param array<string, string> $request the fields of `POLL_FIELDS`.
	 * @param int                   $user_id the chat user.
	 * @return array<string, mixed> the `data` of the success response.
	 * @throws LMS_Realtime_Ajax_Error When the request is refused.
	 */
	public function answer_poll( array $request, int $user_id ): array {
		$started = microtime( true );
		$this->metrics->count( 'requests.poll' );
		$this->check_user_and_nonce( $request, $user_id );

		$channel_id = self::parse_id( $request['channel_id'] ?? null, false );
		$thread_id  = self::parse_id( $request['thread_id'] ?? '0', true );
		$last_id    = self::parse_id( '' === ( $request['last_event_id'] ?? '' ) ? '0' : $request['last_event_id'], true );
		$types      = self::parse_event_types( $request['event_types'] ?? 'all' );
		if ( null === $channel_id || null === $thread_id || null === $last_id || null === $types ) {
			throw $this->refuse( 'invalid_parameters', __( 'channel_id must be a positive integer; thread_id and last_event_id non-negative integers; event_types "all" or a comma-separated list of event types.', 'lms-realtime' ) );
		}
		if ( ! self::user_can_access_channel( $user_id, $channel_id ) ) {
			throw $this->refuse( 'access_denied', __( 'You do not have access to this channel.', 'lms-realtime' ) );
		}
		$this->check_rate( 'poll', $user_id );

		$breaker = $this->guards->breaker_check();
		if ( ! $breaker['allowed'] ) {
			$this->metrics->count( 'errors.service_unavailable' );
			throw new LMS_Realtime_Ajax_Error(
				'service_unavailable',
				__( 'Realtime updates are paused for a moment.', 'lms-realtime' ),
				array(
					'mode'        => $breaker['mode'],
					'retry_after' => (int) max( 1, ceil( $breaker['retry_ms'] / 1000 ) ),
				)
			);
		}

		$wait  = self::hold_for_client( $this->wait_seconds( $user_id, $breaker, $request ), $request );
		$lease = null;
		if ( $wait > 0 ) {
			$lease = $this->guards->acquire_slot( $user_id, (int) ( $wait * 1000 ) + 5000 );
			if ( null === $lease ) {
				throw $this->refuse(
					'connection_limit_exceeded',
					__( 'Too many open connections for this user.', 'lms-realtime' ),
					array( 'retry_after' => 2 )
				);
			}
		}
		$limit = self::batch_size();
		try {
			LMS_Realtime_Ids::switch_to( $this );
			$batch = $this->fetch_events( $channel_id, $thread_id, $last_id, $limit, $wait, $types );
			$state = $this->guards->breaker_record( true );
		} catch ( LMS_Realtime_Ajax_Error $e ) {
			throw $e;
		} catch ( \Throwable $e ) {
			$state = $this->guards->breaker_record( false );
			$this->metrics->count( 'errors.service_unavailable' );
			// phpcs:ignore WordPress.PHP.DevelopmentFunctions.error_log_error_log
			error_log( 'lms-realtime: poll failed: ' . $e->getMessage() );
			throw new LMS_Realtime_Ajax_Error(
				'service_unavailable',
				__( 'Realtime updates are temporarily unavailable.', 'lms-realtime' ),
				array(
					'mode'        => $state['mode'],
					'retry_after' => (int) max( 1, ceil( $state['retry_ms'] / 1000 ) ),
				)
			);
		} finally {
			if ( null !== $lease ) {
				$this->guards->release_slot( $user_id, $lease );
			}
		}

		$events = array_map( array( self::class, 'format_event' ), $batch['events'] );
		$this->observe_delivery( $batch['events'], $started, $wait > 0 );
		$position = $last_id;
		foreach ( $batch['events'] as $e ) {
			$position = max( $position, (int) $e['id'] );
		}
		if ( isset( $batch['position'] ) ) {
			$position = max( $position, (int) $batch['position'] );
		}
		return array(
			'events'        => $events,
			'timestamp'     => time(),
			'last_event_id' => $position,
			'has_more'      => (bool) $batch['has_more'],
			'gap'           => (bool) $batch['gap'],
			'mode'          => $state['mode'],
		);
	}

	/**
	 * How long this request may be held: the LMS theme's client (any request without
	 * `client=lmsrt`) gives up after 7 s and stops polling after 5 timeouts in a row, so it is
	 * held at most `LEGACY_CLIENT_MAX_WAIT` s, and never longer than the `timeout` it sent.
	 *
	 * @param float                 $wait    what the options, mode and rollout allow.
	 * @param array<string, string> $request the poll's fields.
	 */
	public static function hold_for_client( float $wait, array $request ): float {
		if ( 'lmsrt' === ( $request['client'] ?? '' ) ) {
			return $wait;
		}
		$asked = self::parse_id( $request['timeout'] ?? '', true );
		return min( $wait, (float) self::LEGACY_CLIENT_MAX_WAIT, null === $asked ? INF : (float) $asked );
	}

	/**
	 * The next events of a channel after `$last_id`, by id, sorted by priority inside the batch.
	 * The table answers at once (`$wait` is ignored).
	 *
	 * @param int      $channel_id channel.
	 * @param int      $thread_id  0, or only this thread's events.
	 * @param int      $last_id    the client's last_event_id.
	 * @param int      $limit      batch size.
	 * @param float    $wait       seconds the caller may wait.
	 * @param string[] $types      only these event types (empty: all).
	 * @return array{events: list<array<string, mixed>>, gap: bool, has_more: bool}
	 */
	protected function fetch_events( int $channel_id, int $thread_id, int $last_id, int $limit, float $wait, array $types = array() ): array {
		$deadline = microtime( true ) + $wait;
		while ( true ) {
			$batch = self::fetch_table( $channel_id, $thread_id, $last_id, $limit, $types );
			if ( array() !== $batch['events'] || microtime( true ) >= $deadline || connection_aborted() ) {
				return $batch + array( 'gap' => LMS_Realtime_Ids::table_gap( $last_id ) );
			}
			usleep( self::TABLE_POLL_MS * 1000 );
		}
	}

	/**
	 * The next unexpired rows of the plugin's table after `$last_id`, by id, sorted by priority
	 * inside the batch.
	 *
	 * @param int      $channel_id channel.
	 * @param int      $thread_id  0, or only this thread's events.
	 * @param int      $last_id    the client's last_event_id.
	 * @param int      $limit      batch size.
	 * @param string[] $types      only these event types (empty: all).
	 * @return array{events: list<array<string, mixed>>, has_more: bool}
	 * @throws \RuntimeException When the query fails.
	 */
	protected static function fetch_table( int $channel_id, int $thread_id, int $last_id, int $limit, array $types ): array {
		global $wpdb;
		$table  = self::table();
		$thread = $thread_id > 0 ? $wpdb->prepare( ' AND thread_id = %d', $thread_id ) : '';
		if ( array() !== $types ) {
			$thread .= $wpdb->prepare( ' AND event_type IN (' . implode( ',', array_fill( 0, count( $types ), '%s' ) ) . ')', ...$types );
		}
		// phpcs:disable WordPress.DB.PreparedSQL.InterpolatedNotPrepared,WordPress.DB.DirectDatabaseQuery -- the table name is ours, $thread is prepared.
		$rows = $wpdb->get_results(
			$wpdb->prepare(
				"SELECT id, event_type, priority, channel_id, message_id, thread_id, user_id, data, timestamp, expires_at
				FROM {$table} WHERE channel_id = %d AND id > %d AND expires_at > %d{$thread} ORDER BY id ASC LIMIT %d",
				$channel_id,
				$last_id,
				self::now_ms(),
				$limit + 1
			),
			ARRAY_A
		);
		// phpcs:enable
		if ( ! is_array( $rows ) ) {
			throw new \RuntimeException( 'query failed: ' . $wpdb->last_error );
		}
		$has_more = count( $rows ) > $limit;
		$rows     = array_slice( $rows, 0, $limit );
		$events   = array();
		foreach ( $rows as $r ) {
			$data     = json_decode( (string) $r['data'], true );
			$events[] = array(
				'id'         => (int) $r['id'],
				'type'       => (string) $r['event_type'],
				'priority'   => (int) $r['priority'],
				'channel_id' => (int) $r['channel_id'],
				'message_id' => null === $r['message_id'] ? null : (int) $r['message_id'],
				'thread_id'  => null === $r['thread_id'] ? null : (int) $r['thread_id'],
				'user_id'    => (int) $r['user_id'],
				'data'       => is_array( $data ) ? $data : array(),
				'timestamp'  => (int) $r['timestamp'],
				'expires_at' => (int) $r['expires_at'],
			);
		}
		return array(
			'events'   => self::sort_batch( $events ),
			'has_more' => $has_more,
		);
	}

	/**
	 * Seconds a poll may wait for events on the table path. The table cannot block, so a hold
	 * is a query every `TABLE_POLL_MS`, as the LMS theme's own handler does; only the theme's
	 * client is held (answered at once, it would poll again at once), up to 5 s while the
	 * breaker advertises `long` or `medium`. The plugin's own client paces itself. Filter
	 * `lms_realtime_ajax_wait`.
	 *
	 * @param int                   $user_id the user.
	 * @param array<string, mixed>  $breaker the breaker status.
	 * @param array<string, string> $request the poll's fields.
	 */
	protected function wait_seconds( int $user_id, array $breaker, array $request = array() ): float {
		$held = 'lmsrt' !== ( $request['client'] ?? '' ) && in_array( $breaker['mode'], array( 'long', 'medium' ), true );
		/** This filter is documented in class-lmsrt-unified-long-poll.php. */
		return max( 0.0, (float) apply_filters( 'lms_realtime_ajax_wait', $held ? (float) self::LEGACY_CLIENT_MAX_WAIT : 0.0, $user_id, $breaker ) );
	}

	/** The table path's query interval while it holds a poll, ms. */
	public const TABLE_POLL_MS = 250;

	/**
	 * Sorts a batch by priority, then id (the batch itself is the next N by id).
	 *
	 * @param list<array<string, mixed>> $events events.
	 * @return list<array<string, mixed>>
	 */
	public static function sort_batch( array $events ): array {
		usort(
			$events,
			static fn ( array $a, array $b ): int => array( $a['priority'], $a['id'] ) <=> array( $b['priority'], $b['id'] )
		);
		return $events;
	}

	/**
	 * An event in the shape the LMS theme's client reads: `id`, `type` and `event_type`,
	 * `priority`, `message_id`, `thread_id`, `channel_id`, `user_id`, `data` (an object),
	 * `timestamp` (unix milliseconds) and `created_at` (ISO 8601, UTC). The client runs
	 * `new Date(event.created_at || event.timestamp)` and drops events older than an hour, so
	 * both must be the real time in JavaScript's terms (unix seconds would read as 1970).
	 *
	 * @param array<string, mixed> $e an event (timestamp in ms).
	 * @return array<string, mixed>
	 */
	public static function format_event( array $e ): array {
		$ms = (int) $e['timestamp'];
		return array(
			'id'         => (int) $e['id'],
			'type'       => (string) $e['type'],
			'event_type' => (string) $e['type'],
			'priority'   => (int) $e['priority'],
			'message_id' => isset( $e['message_id'] ) ? (int) $e['message_id'] : null,
			'thread_id'  => isset( $e['thread_id'] ) ? (int) $e['thread_id'] : null,
			'channel_id' => (int) $e['channel_id'],
			'user_id'    => (int) $e['user_id'],
			'data'       => (object) $e['data'],
			'timestamp'  => $ms,
			'created_at' => gmdate( 'Y-m-d\TH:i:s', intdiv( $ms, 1000 ) ) . sprintf( '.%03dZ', $ms % 1000 ),
		);
	}

	/**
	 * `event_types`: `all` (or nothing) is every type; else a comma-separated list of
	 * well-formed types. Null when the list names none.
	 *
	 * @param string $raw the field.
	 * @return string[]|null
	 */
	public static function parse_event_types( string $raw ): ?array {
		$raw = trim( $raw );
		if ( '' === $raw || 'all' === $raw ) {
			return array();
		}
		$types = array();
		foreach ( explode( ',', $raw ) as $t ) {
			$t = trim( $t );
			if ( 'all' === $t ) {
				return array();
			}
			if ( preg_match( '/^[a-z][a-z0-9_]{0,63}$/', $t ) ) {
				$types[ $t ] = true;
			}
		}
		return array() === $types ? null : array_keys( $types );
	}

	/**
	 * Records delivery latencies: events appended during the wait (the wake-up path) and the
	 * age of events that were already pending.
	 *
	 * @param list<array<string, mixed>> $events  delivered events (timestamps in ms).
	 * @param float                      $started when the poll came in (unix s).
	 * @param bool                       $waited  whether the poll could wait.
	 */
	private function observe_delivery( array $events, float $started, bool $waited ): void {
		if ( array() === $events ) {
			return;
		}
		$this->metrics->count( 'events_delivered', count( $events ) );
		if ( $waited ) {
			$this->metrics->count( 'polls_waited' );
		}
		$now   = microtime( true ) * 1000;
		$start = $started * 1000;
		foreach ( $events as $e ) {
			$age = max( 0.0, $now - (float) $e['timestamp'] );
			$this->metrics->observe( (float) $e['timestamp'] >= $start - 1 ? 'delivery_ms' : 'staleness_ms', $age );
		}
	}

	// -- daemon tokens ----------------------------------------------------------------------

	/**
	 * `admin-ajax.php?action=lms_realtime_token`: a daemon token for the chat user.
	 *
	 * @param LMSRT_Chat_Realtime_Base|null $bridge who the user is (default: the plugin's).
	 */
	public function handle_token( ?LMSRT_Chat_Realtime_Base $bridge = null ): void {
		$bridge  = $bridge ?? LMS_Realtime_Plugin::bridge();
		$request = self::request_fields( array( 'nonce', 'nonce_action', 'channels' ) );
		$this->send( fn () => $this->answer_token( $request, $bridge->lmsrt_current_user_id() ) );
	}

	/**
	 * A token: only on the store path with a daemon configured.
	 *
	 * @param array<string, string> $request nonce, nonce_action, channels.
	 * @param int                   $user_id the current user.
	 * @return array<string, mixed>
	 * @throws LMS_Realtime_Ajax_Error Always here: the legacy path has no daemon.
	 */
	public function answer_token( array $request, int $user_id ): array {
		$this->metrics->count( 'requests.token' );
		$this->check_user_and_nonce( $request, $user_id );
		throw $this->refuse( 'daemon_unavailable', __( 'The long-poll daemon is not in use.', 'lms-realtime' ) );
	}

	// -- the page ---------------------------------------------------------------------------

	/**
	 * The position a page rendered now starts polling from: the newest event id.
	 */
	public function render_head_cursor(): string {
		return (string) $this->head_last_event_id();
	}

	/**
	 * The head as a legacy `last_event_id`.
	 */
	public function head_last_event_id(): int {
		global $wpdb;
		$table = self::table();
		// phpcs:ignore WordPress.DB.PreparedSQL.InterpolatedNotPrepared,WordPress.DB.DirectDatabaseQuery
		return (int) $wpdb->get_var( "SELECT MAX(id) FROM {$table}" );
	}

	/**
	 * Whether clients are configured for the daemon.
	 */
	public function daemon_enabled(): bool {
		return false;
	}

	/**
	 * The page configuration `LMSUnifiedLongPoll.fromConfig()` reads (snake_case keys).
	 * Render it after the page's data: the head is taken first, so an event committed while
	 * the page is built is delivered (the page de-duplicates by message id), never lost.
	 *
	 * @param int      $channel_id the channel shown.
	 * @param int      $thread_id  the thread shown, or 0.
	 * @param int|null $user_id    the user (default: current).
	 * @return array<string, mixed>
	 */
	public function page_config( int $channel_id, int $thread_id = 0, ?int $user_id = null ): array {
		$user_id = $user_id ?? LMS_Realtime_Plugin::bridge()->lmsrt_current_user_id();
		$unified = $this->guards->use_unified( $user_id );
		$cursor  = $this->render_head_cursor();
		$config  = array(
			'ajax_url'      => admin_url( 'admin-ajax.php' ),
			'nonce'         => wp_create_nonce( self::NONCE_ACTION ),
			'nonce_action'  => self::NONCE_ACTION,
			'channel_id'    => $channel_id,
			'channels'      => array( $channel_id ),
			'thread_id'     => $thread_id > 0 ? $thread_id : null,
			'cursor'        => 'store' === $this->backend() ? $cursor : null,
			'last_event_id' => self::cursor_position( $cursor ),
			'batch_size'    => self::batch_size(),
			'ab'            => array(
				'cohort'          => $unified ? 'unified' : 'legacy',
				'rollout_percent' => $this->guards->rollout()->percent(),
			),
			'mode'          => $this->guards->advertised_mode(),
			'backend'       => $this->backend(),
			'user_id'       => $user_id,
		);
		if ( $unified && $this->daemon_enabled() ) {
			$config['daemon_url']   = self::daemon_url();
			$config['token_url']    = admin_url( 'admin-ajax.php' );
			$config['token_action'] = self::TOKEN_ACTION;
			$config['token_nonce']  = $config['nonce'];
		}
		/**
		 * Filters the page configuration of the browser client.
		 *
		 * @param array $config     The configuration.
		 * @param int   $channel_id The channel.
		 * @param int   $user_id    The user.
		 */
		return (array) apply_filters( 'lms_realtime_page_config', $config, $channel_id, $user_id );
	}

	/**
	 * The legacy `last_event_id` for a cursor: an integer cursor itself, the lowest lane of a
	 * `v1.` cursor (every event at or below it was delivered in every lane), else 0.
	 *
	 * @param string $cursor cursor.
	 */
	public static function cursor_position( string $cursor ): int {
		$lanes = self::cursor_lanes( $cursor );
		return array() === $lanes ? 0 : min( $lanes );
	}

	/**
	 * The highest position in a cursor: an integer cursor itself, the highest lane of a `v1.`
	 * cursor, else 0.
	 *
	 * @param string $cursor cursor.
	 */
	public static function cursor_max( string $cursor ): int {
		$lanes = self::cursor_lanes( $cursor );
		return array() === $lanes ? 0 : max( $lanes );
	}

	/**
	 * The lane positions of a cursor (one for an integer cursor; none when unreadable).
	 *
	 * @param string $cursor cursor.
	 * @return int[]
	 */
	private static function cursor_lanes( string $cursor ): array {
		if ( preg_match( '/^\d{1,18}$/', $cursor ) ) {
			return array( (int) $cursor );
		}
		if ( preg_match( '/^v1\.[0-9a-fA-F]{8}\.(\d{1,18})\.(\d{1,18})\.(\d{1,18})\.(\d{1,18})$/', $cursor, $m ) ) {
			return array_map( 'intval', array_slice( $m, 1 ) );
		}
		return array();
	}

	// -- maintenance ------------------------------------------------------------------------

	/**
	 * Deletes expired events (WP-Cron); returns how many.
	 *
	 * @param int $max at most this many.
	 */
	public function purge_expired( int $max = 5000 ): int {
		global $wpdb;
		$table = self::table();
		// phpcs:ignore WordPress.DB.PreparedSQL.InterpolatedNotPrepared,WordPress.DB.DirectDatabaseQuery
		$n = $wpdb->query( $wpdb->prepare( "DELETE FROM {$table} WHERE expires_at <= %d LIMIT %d", self::now_ms(), $max ) );
		return (int) $n;
	}

	/**
	 * Creates the plugin's event table if it does not exist, and remembers that the plugin
	 * created it (uninstall drops only what the plugin created). Never alters a table.
	 */
	public static function install_table(): void {
		global $wpdb;
		$table = self::table();
		// phpcs:disable WordPress.DB.DirectDatabaseQuery,WordPress.DB.PreparedSQL.InterpolatedNotPrepared -- the plugin's own table.
		if ( $table === $wpdb->get_var( $wpdb->prepare( 'SHOW TABLES LIKE %s', $wpdb->esc_like( $table ) ) ) ) {
			return;
		}
		$collate = $wpdb->get_charset_collate();
		$ok      = $wpdb->query(
			"CREATE TABLE IF NOT EXISTS {$table} (
				id bigint(20) unsigned NOT NULL AUTO_INCREMENT,
				event_type varchar(64) NOT NULL,
				priority tinyint(3) unsigned NOT NULL DEFAULT 3,
				channel_id bigint(20) unsigned NOT NULL,
				message_id bigint(20) unsigned NULL,
				thread_id bigint(20) unsigned NULL,
				user_id bigint(20) unsigned NOT NULL DEFAULT 0,
				data longtext NULL,
				timestamp bigint(20) NOT NULL,
				expires_at bigint(20) NOT NULL,
				PRIMARY KEY (id),
				KEY idx_channel (channel_id,id),
				KEY idx_expires (expires_at)
			) {$collate}"
		);
		// phpcs:enable
		if ( false !== $ok ) {
			$owned           = (array) get_option( 'lmsrt_owned_tables', array() );
			$owned[ $table ] = true;
			update_option( 'lmsrt_owned_tables', $owned, false );
		}
	}

	/**
	 * The plugin's event table's name.
	 */
	public static function table(): string {
		global $wpdb;
		return $wpdb->prefix . self::TABLE;
	}

	// -- shared checks ----------------------------------------------------------------------

	/**
	 * Login, then nonce (the legacy order).
	 *
	 * @param array<string, string> $request nonce, nonce_action.
	 * @param int                   $user_id current user.
	 * @throws LMS_Realtime_Ajax_Error When either fails.
	 */
	public function check_user_and_nonce( array $request, int $user_id ): void {
		if ( $user_id <= 0 ) {
			// Anonymous requests are limited by address (the DDoS guard) before anything else.
			$this->check_rate( 'ip', 0 );
			throw $this->refuse( 'not_authenticated', __( 'You must be logged in.', 'lms-realtime' ) );
		}
		// The action the request names first (when it is one we accept), then every other one:
		// the theme's pages create nonces for more than one action.
		$actions = self::nonce_actions();
		$named   = $request['nonce_action'] ?? '';
		if ( in_array( $named, $actions, true ) ) {
			$actions = array_unique( array_merge( array( $named ), $actions ) );
		}
		$nonce = $request['nonce'] ?? '';
		foreach ( $actions as $action ) {
			if ( '' !== $nonce && wp_verify_nonce( $nonce, $action ) ) {
				return;
			}
		}
		throw $this->refuse( 'invalid_nonce', __( 'Your session has expired. Please reload the page.', 'lms-realtime' ) );
	}

	/**
	 * Applies a rate limit: `$action` for a user, the `ip` limit without one.
	 *
	 * @param string $action  `poll` or `post`.
	 * @param int    $user_id the user, or 0.
	 * @throws LMS_Realtime_Ajax_Error When refused.
	 */
	public function check_rate( string $action, int $user_id ): void {
		$d = $this->guards->check_rate( $action, $user_id );
		if ( ! $d['allowed'] ) {
			throw $this->refuse(
				'rate_limit_exceeded',
				__( 'Too many requests. Please slow down.', 'lms-realtime' ),
				array( 'retry_after' => (int) max( 1, ceil( $d['retry_after_ms'] / 1000 ) ) )
			);
		}
	}

	/**
	 * A refusal by design (counted apart from service errors).
	 *
	 * @param string               $code    legacy code.
	 * @param string               $message message.
	 * @param array<string, mixed> $extra   extra data.
	 */
	protected function refuse( string $code, string $message, array $extra = array() ): LMS_Realtime_Ajax_Error {
		$this->metrics->count( 'refused.' . $code );
		return new LMS_Realtime_Ajax_Error( $code, $message, $extra );
	}

	/**
	 * Runs a handler and sends its result as WordPress JSON: `{"success": true, "data": ...}`
	 * or the legacy error shape. Errors are sent with HTTP 200, as the legacy endpoint did, so
	 * an unchanged front end reads them the same way; rate and connection limits also carry
	 * `Retry-After`.
	 *
	 * @param callable $handler returns the success data or throws LMS_Realtime_Ajax_Error.
	 */
	public function send( callable $handler ): void {
		nocache_headers();
		try {
			$data = $handler();
		} catch ( LMS_Realtime_Ajax_Error $e ) {
			$extra = $e->extra;
			if ( isset( $extra['retry_after'] ) && ! headers_sent() ) {
				header( 'Retry-After: ' . (int) $extra['retry_after'] );
			}
			wp_send_json_error( $e->data() );
			return;
		}
		wp_send_json_success( $data );
	}

	/**
	 * Nonce actions a request may name in `nonce_action` (filter `lms_realtime_nonce_actions`).
	 *
	 * @return string[]
	 */
	public static function nonce_actions(): array {
		/**
		 * Filters the nonce actions the realtime endpoints accept in `nonce_action`.
		 *
		 * @param string[] $actions Accepted actions.
		 */
		return (array) apply_filters( 'lms_realtime_nonce_actions', array_merge( array( self::NONCE_ACTION, self::POLL_ACTION ), self::THEME_NONCE_ACTIONS ) );
	}

	/**
	 * Parses a request id: digits only (no sign, no spaces, no exponent).
	 *
	 * @param mixed $value      the raw value.
	 * @param bool  $allow_zero whether 0 is valid.
	 * @return int|null null when invalid.
	 */
	public static function parse_id( $value, bool $allow_zero ): ?int {
		if ( is_int( $value ) ) {
			$value = (string) $value;
		}
		if ( ! is_string( $value ) || ! preg_match( '/^\d{1,' . self::MAX_ID_DIGITS . '}$/', $value ) ) {
			return null;
		}
		$id = (int) $value;
		return ( $id > 0 || ( $allow_zero && 0 === $id ) ) ? $id : null;
	}

	/**
	 * Whether the chat user may read the channel: the integration layer decides
	 * (`LMSRT_Chat_Realtime_Base::lmsrt_can_access_channel`, filter
	 * `lms_realtime_user_can_access_channel`; nothing answering means no).
	 *
	 * @param int $user_id    the chat user.
	 * @param int $channel_id the channel.
	 */
	public static function user_can_access_channel( int $user_id, int $channel_id ): bool {
		return LMS_Realtime_Plugin::bridge()->lmsrt_can_access_channel( $user_id, $channel_id );
	}

	/**
	 * Whether an event type is recorded: its family is in `lms_unified_longpoll_events`.
	 * Types outside the known families are always recorded.
	 *
	 * @param string $type event type.
	 */
	public static function event_enabled( string $type ): bool {
		$enabled = get_option( 'lms_unified_longpoll_events', array( 'reactions', 'messages' ) );
		$enabled = is_array( $enabled ) ? $enabled : array();
		foreach ( self::EVENT_FAMILIES as $family => $types ) {
			if ( in_array( $type, $types, true ) ) {
				return in_array( $family, $enabled, true );
			}
		}
		return true;
	}

	/**
	 * The priority of an event type (NORMAL for types not listed).
	 *
	 * @param string $type event type.
	 */
	public static function priority_for( string $type ): int {
		return self::EVENT_PRIORITIES[ $type ] ?? 3;
	}

	/**
	 * Time to live of an event, ms.
	 *
	 * @param int    $priority priority.
	 * @param string $type     event type.
	 */
	public static function ttl_ms_for( int $priority, string $type ): int {
		/**
		 * Filters an event's time to live in milliseconds.
		 *
		 * @param int    $ttl_ms   Default for the priority.
		 * @param string $type     Event type.
		 * @param int    $priority Priority.
		 */
		return max( 1000, (int) apply_filters( 'lms_realtime_event_ttl', self::TTL_MS[ $priority ] ?? self::TTL_MS[3], $type, $priority ) );
	}

	/**
	 * Events per batch (`lms_longpoll_batch_size`).
	 */
	public static function batch_size(): int {
		return max( 1, min( 500, (int) get_option( 'lms_longpoll_batch_size', 50 ) ) );
	}

	/**
	 * The daemon URL browsers use ('' when not configured).
	 */
	public static function daemon_url(): string {
		$url = defined( 'LMSRT_DAEMON_URL' ) ? (string) LMSRT_DAEMON_URL : (string) get_option( 'lms_realtime_daemon_url', '' );
		return untrailingslashit( $url );
	}

	/**
	 * The daemon's shared secret ('' when not configured).
	 */
	public static function daemon_secret(): string {
		return defined( 'LMSRT_DAEMON_SECRET' ) ? (string) LMSRT_DAEMON_SECRET : (string) get_option( 'lms_realtime_daemon_secret', '' );
	}

	/**
	 * The key id the daemon knows the secret by (`--token-key <key id>:<secret>`): the constant
	 * `LMSRT_DAEMON_KEY_ID`, else the option, else `k1`.
	 */
	public static function daemon_key_id(): string {
		$id = defined( 'LMSRT_DAEMON_KEY_ID' ) ? (string) LMSRT_DAEMON_KEY_ID : (string) get_option( 'lms_realtime_daemon_key_id', 'k1' );
		return '' === $id ? 'k1' : $id;
	}

	/**
	 * Milliseconds since the epoch.
	 */
	public static function now_ms(): int {
		return (int) floor( microtime( true ) * 1000 );
	}
}
