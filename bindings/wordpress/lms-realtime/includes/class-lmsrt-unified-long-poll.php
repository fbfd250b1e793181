<?php
/**
 * The unified long poll over the lms-realtime event store.
 *
 * @package LMS_Realtime
 */

defined( 'ABSPATH' ) || exit;

use LmsRealtime\EventStore;

/**
 * Records every chat event in the lms-realtime event store (one SQLite file shared by every
 * PHP worker and the daemon) instead of `$wpdb` rows, and answers the legacy poll from it:
 * the next events by id (the store's sequential order, sorted by priority inside the batch),
 * waiting a short bounded time when there are none yet. The wait blocks inside the library,
 * woken within milliseconds by an append from any process, with no sleep-and-query loop.
 *
 * With the daemon configured (a URL, a secret, and a token issuer), pages of users in the
 * rollout long-poll the daemon with a token from `lms_realtime_token`, and the AJAX endpoint is
 * their fallback: its wait is capped at `FALLBACK_WAIT` seconds to keep PHP workers free.
 * Without the daemon the plugin serves the long poll itself, waiting up to
 * `lms_longpoll_timeout` seconds (at most `SELF_SERVE_MAX_WAIT`).
 */
class LMSRT_Unified_Long_Poll extends LMSRT_Realtime {

	/** Longest wait when the plugin serves the long poll itself, seconds. */
	public const SELF_SERVE_MAX_WAIT = 25;

	/** Longest wait of the AJAX fallback while the daemon is configured, seconds. */
	public const FALLBACK_WAIT = 5;

	/** Daemon token lifetime, seconds (the client renews 30 s before expiry). */
	public const TOKEN_TTL = 600;

	/** Most channels in one token. */
	public const MAX_TOKEN_CHANNELS = 1024;

	/**
	 * The store, opened on first use.
	 *
	 * @var EventStore|null
	 */
	private ?EventStore $store = null;

	/**
	 * Builds the unified long poll.
	 *
	 * @param LMS_Realtime_Guards            $guards  the guards.
	 * @param LMS_Realtime_Metrics           $metrics the counters.
	 * @param string                         $db_path the store's file.
	 * @param LMS_Realtime_Token_Issuer|null $issuer  daemon tokens (null: no daemon).
	 */
	public function __construct(
		LMS_Realtime_Guards $guards,
		LMS_Realtime_Metrics $metrics,
		private string $db_path,
		private ?LMS_Realtime_Token_Issuer $issuer = null
	) {
		parent::__construct( $guards, $metrics );
	}

	/**
	 * Backend name.
	 */
	public function backend(): string {
		return 'store';
	}

	/**
	 * The store's file: the constant `LMSRT_DB_PATH`, else `wp-content/lms-realtime/events.db`;
	 * filter `lms_realtime_db_path`. The daemon must open the same file.
	 *
	 * On a multisite network each site after the first has a store of its own
	 * ({@see self::site_store()}: `events-site<N>.db`, or `LMSRT_DB_PATH` with `-site<N>`),
	 * because the sites' channel ids are their own: in one store, site 2's channel 5 would be
	 * delivered the messages of site 1's channel 5.
	 */
	public static function db_path(): string {
		$path = defined( 'LMSRT_DB_PATH' ) ? (string) LMSRT_DB_PATH : WP_CONTENT_DIR . '/lms-realtime/events.db';
		$path = self::site_store( $path, is_multisite() ? get_current_blog_id() : 1 );
		/**
		 * Filters the event store's file (or Redis URL).
		 *
		 * @param string $path The path.
		 */
		return (string) apply_filters( 'lms_realtime_db_path', $path );
	}

	/**
	 * The store of site `$blog` of a network whose store is `$store`: the first site's is
	 * `$store`; any other's has `-site<N>` added to the file's name before its extension
	 * (`events.db` → `events-site2.db`), or for a Redis URL to the store's name (`?store=lms` →
	 * `?store=lms-site2`; without `store=`, the library's default name `lmsrt`). Give each such
	 * store its own daemon (`--db` the same file or URL).
	 *
	 * @param string $store the network's store (a file or a URL).
	 * @param int    $blog  the site's id.
	 */
	public static function site_store( string $store, int $blog ): string {
		if ( $blog <= 1 ) {
			return $store;
		}
		$suffix = '-site' . $blog;
		if ( self::store_is_url( $store ) ) {
			$hash  = strpos( $store, '#' );
			$tail  = false === $hash ? '' : substr( $store, $hash );
			$url   = false === $hash ? $store : substr( $store, 0, $hash );
			$parts = explode( '?', $url, 2 );
			$pairs = isset( $parts[1] ) && '' !== $parts[1] ? explode( '&', $parts[1] ) : array();
			$named = false;
			foreach ( $pairs as $i => $pair ) {
				if ( str_starts_with( $pair, 'store=' ) ) {
					$pairs[ $i ] = $pair . $suffix;
					$named       = true;
				}
			}
			if ( ! $named ) {
				$pairs[] = 'store=lmsrt' . $suffix;
			}
			return $parts[0] . '?' . implode( '&', $pairs ) . $tail;
		}
		$slash = strrpos( $store, '/' );
		$dir   = false === $slash ? '' : substr( $store, 0, $slash + 1 );
		$base  = false === $slash ? $store : substr( $store, $slash + 1 );
		$dot   = strrpos( $base, '.' );
		$base  = false === $dot || 0 === $dot ? $base . $suffix : substr( $base, 0, $dot ) . $suffix . substr( $base, $dot );
		return $dir . $base;
	}

	/**
	 * Whether the store is named by a URL (`redis://…` or `rediss://…`: a store in Redis,
	 * shared by every web host and daemon that opens the same URL) rather than a file. Any
	 * `scheme://` counts, so a URL the library refuses is never taken for a file either.
	 *
	 * @param string|null $path the store (null: the configured one).
	 */
	public static function store_is_url( ?string $path = null ): bool {
		return 1 === preg_match( '#^[a-z][a-z0-9+.\-]*://#i', $path ?? self::db_path() );
	}

	/**
	 * The store as pages may show it: a URL without its `user:password@`. The plugin's own
	 * rule, not the binding's `StoreLocation::redacted()`: the settings page shows the store
	 * also when the binding could not be loaded.
	 *
	 * @param string|null $path the store (null: the configured one).
	 */
	public static function shown_store( ?string $path = null ): string {
		$path = $path ?? self::db_path();
		return self::store_is_url( $path ) ? (string) preg_replace( '#^([a-z][a-z0-9+.\-]*://)[^/]*@#i', '$1', $path ) : $path;
	}

	/**
	 * The engine of the store: `redis` for a URL, `sqlite` for a file.
	 *
	 * @param string|null $path the store (null: the configured one).
	 */
	public static function engine( ?string $path = null ): string {
		return self::store_is_url( $path ) ? 'redis' : 'sqlite';
	}

	/**
	 * Where this host keeps the files of a store in Redis (the guards' shared files, the
	 * metrics): the constant `LMSRT_STATE_DIR`, else `wp-content/lms-realtime`; filter
	 * `lms_realtime_state_dir`. A host-local directory: give this host's daemon the same one
	 * (`--state-dir`) so that they share the guards' metrics. Unused for a store file, whose
	 * files stay beside it.
	 */
	public static function state_dir(): string {
		$dir = defined( 'LMSRT_STATE_DIR' ) && '' !== (string) LMSRT_STATE_DIR ? (string) LMSRT_STATE_DIR : WP_CONTENT_DIR . '/lms-realtime';
		/**
		 * Filters the host-local directory of a Redis store's files.
		 *
		 * @param string $dir The directory.
		 */
		return untrailingslashit( (string) apply_filters( 'lms_realtime_state_dir', $dir ) );
	}

	/**
	 * The directory of the plugin's files (the store, its metrics): the store file's, or the
	 * state directory when the store is a URL (whose "directory" is no place for files).
	 */
	public static function files_dir(): string {
		return self::store_is_url() ? self::state_dir() : dirname( self::db_path() );
	}

	/**
	 * This store's file, or its Redis URL.
	 */
	public function path(): string {
		return $this->db_path;
	}

	/**
	 * The event store, opened on first use.
	 *
	 * @throws \LmsRealtime\Exception\LmsRealtimeException When it cannot be opened.
	 */
	public function store(): EventStore {
		if ( null === $this->store || $this->store->isClosed() ) {
			$dir = dirname( $this->db_path );
			if ( ! self::store_is_url( $this->db_path ) && ! is_dir( $dir ) ) {
				wp_mkdir_p( $dir );
				self::protect_directory( $dir );
			}
			$this->store = EventStore::open( $this->db_path, array(), LMS_Realtime_Requirements::library_path() );
		}
		return $this->store;
	}

	/**
	 * Keeps a web server from serving the store's directory.
	 *
	 * @param string $dir directory.
	 */
	public static function protect_directory( string $dir ): void {
		// phpcs:disable WordPress.WP.AlternativeFunctions.file_system_operations_file_put_contents
		if ( ! file_exists( $dir . '/index.php' ) ) {
			@file_put_contents( $dir . '/index.php', "<?php\n// Silence is golden.\n" );
		}
		if ( ! file_exists( $dir . '/.htaccess' ) ) {
			@file_put_contents( $dir . '/.htaccess', "Require all denied\nDeny from all\n" );
		}
		// phpcs:enable
	}

	/**
	 * Appends an event to the store, with the plugin's priority and expiry.
	 *
	 * @param array $event type, priority, channel_id, message_id, thread_id, user_id, data, ttl_ms.
	 * @return int the id.
	 */
	protected function store_event( array $event ): int {
		$t0 = hrtime( true );
		try {
			$id = $this->append( $event );
		} catch ( \Throwable $e ) {
			$this->native_metric( static fn ( $m ) => $m->increment( 'append_errors' ) );
			throw $e;
		}
		$us = intdiv( hrtime( true ) - $t0, 1000 );
		$this->native_metric(
			static function ( $m ) use ( $us ) {
				$m->increment( 'appends' );
				$m->recordUs( 'append', $us );
			}
		);
		return $id;
	}

	/**
	 * The append itself.
	 *
	 * @param array $event the event.
	 */
	private function append( array $event ): int {
		return $this->store()->append(
			$event['type'],
			(int) $event['channel_id'],
			array() === $event['data'] ? array() : (object) $event['data'],
			$event['message_id'],
			$event['thread_id'],
			(int) $event['user_id'],
			(int) $event['priority'],
			(int) $event['ttl_ms']
		);
	}

	/**
	 * The next events of a channel after `$last_id` in the store's sequential order; when none
	 * is pending, waits up to `$wait` seconds inside the library for one.
	 *
	 * @param int   $channel_id channel.
	 * @param int   $thread_id  0, or only this thread's events.
	 * @param int   $last_id    the client's last_event_id.
	 * @param int   $limit      batch size.
	 * @param float    $wait       seconds.
	 * @param string[] $types      only these event types (empty: all).
	 * @return array{events: list<array<string, mixed>>, gap: bool, has_more: bool, position: int}
	 */
	protected function fetch_events( int $channel_id, int $thread_id, int $last_id, int $limit, float $wait, array $types = array() ): array {
		if ( LMS_Realtime_Ids::reads_table( $last_id ) ) {
			// The client's id is from before the store took over: what the plugin's table still
			// holds after it comes first (every store id is above it).
			$old = self::fetch_table( $channel_id, $thread_id, $last_id, $limit, $types );
			if ( array() !== $old['events'] ) {
				return $old + array(
					'gap'      => false,
					'position' => $last_id,
				);
			}
		}
		$thread = $thread_id > 0 ? $thread_id : null;
		$t0     = hrtime( true );
		try {
			$store = $this->store();
			$batch = $wait > 0
				? $store->wait( array( $channel_id ), $last_id, $wait, $limit, 'sequential', $thread, $types )
				: $store->fetch( array( $channel_id ), $last_id, $limit, 'sequential', $thread, $types );
		} catch ( \Throwable $e ) {
			$this->native_metric( static fn ( $m ) => $m->increment( $wait > 0 ? 'wait_errors' : 'fetch_errors' ) );
			throw $e;
		}
		$us     = intdiv( hrtime( true ) - $t0, 1000 );
		$now_ms = self::now_ms();
		$events = array();
		foreach ( $batch->events as $e ) {
			$events[] = $e->toArray();
		}
		// The host-wide metrics the daemon also feeds: fetch latency (the health verdict's
		// line), waits, deliveries and, for events that arrived during the wait, their
		// append-to-delivery time.
		$this->native_metric(
			static function ( $m ) use ( $wait, $us, $events, $now_ms ) {
				if ( $wait > 0 ) {
					$m->increment( 'waits' );
					$m->recordUs( 'wait', $us );
					if ( array() === $events ) {
						$m->increment( 'wait_timeouts' );
					}
				} else {
					$m->increment( 'fetches' );
					$m->recordUs( 'fetch', $us );
				}
				if ( array() !== $events ) {
					$m->increment( 'deliveries', count( $events ) );
				}
				$started_ms = $now_ms - intdiv( $us, 1000 );
				foreach ( $events as $e ) {
					if ( $e['timestamp'] >= $started_ms ) {
						$m->recordUs( 'delivery', max( 0, $now_ms - (int) $e['timestamp'] ) * 1000 );
					}
				}
			}
		);
		return array(
			'events'   => $events,
			'gap'      => $batch->gap,
			'has_more' => $batch->hasMore,
			'position' => self::cursor_position( $batch->cursor ),
		);
	}

	/**
	 * How long a poll may wait: nothing for the plugin's own client outside the rollout (it
	 * keeps short polling), else `lms_longpoll_timeout` capped by the mode the breaker advertises (`long`
	 * 30 s, `medium` 10 s, nothing when `short` or `emergency`) and by `SELF_SERVE_MAX_WAIT`,
	 * or `FALLBACK_WAIT` while the daemon is configured (filter `lms_realtime_ajax_wait`).
	 *
	 * @param int                   $user_id the user.
	 * @param array<string, mixed>  $breaker the breaker status.
	 * @param array<string, string> $request the poll's fields (capped by the caller).
	 */
	protected function wait_seconds( int $user_id, array $breaker, array $request = array() ): float {
		// The rollout picks the cohort of the plugin's own client; the LMS theme's client already
		// long-polls (it expects a hold of up to 5 s, which answer_poll() caps it to).
		if ( 'lmsrt' === ( $request['client'] ?? '' ) && ! $this->guards->use_unified( $user_id ) ) {
			return 0.0;
		}
		$mode_cap = array(
			'long'   => 30,
			'medium' => 10,
		);
		$wait     = min(
			max( 1, min( 60, (int) get_option( 'lms_longpoll_timeout', 30 ) ) ),
			$mode_cap[ $breaker['mode'] ] ?? 0,
			$this->daemon_enabled() ? self::FALLBACK_WAIT : self::SELF_SERVE_MAX_WAIT
		);
		/**
		 * Filters the seconds an AJAX poll may wait for events.
		 *
		 * @param float $wait    Seconds.
		 * @param int   $user_id The user.
		 * @param array $breaker The breaker status.
		 */
		return max( 0.0, (float) apply_filters( 'lms_realtime_ajax_wait', (float) $wait, $user_id, $breaker ) );
	}

	/**
	 * Feeds the binding's host-wide metrics, if the guards are native; never fails.
	 *
	 * @param callable $fn receives the `LmsRealtime\Metrics`.
	 */
	private function native_metric( callable $fn ): void {
		$m = $this->guards->native_metrics();
		if ( null === $m ) {
			return;
		}
		try {
			$fn( $m );
		} catch ( \Throwable $e ) {
			unset( $e );
		}
	}

	/**
	 * The head cursor: a page rendered now polls from here and misses nothing committed after.
	 */
	public function render_head_cursor(): string {
		return $this->store()->headCursor();
	}

	/**
	 * The head as a legacy `last_event_id` (the lowest lane of the head cursor).
	 */
	public function head_last_event_id(): int {
		return self::cursor_position( $this->render_head_cursor() );
	}

	/**
	 * Whether clients are configured for the daemon: a URL, and tokens can be issued.
	 */
	public function daemon_enabled(): bool {
		return '' !== self::daemon_url() && null !== $this->issuer && $this->issuer->is_available();
	}

	/**
	 * The token issuer, if any.
	 */
	public function issuer(): ?LMS_Realtime_Token_Issuer {
		return $this->issuer;
	}

	/**
	 * A daemon token for the current user, for the channels the user may read (all of them, or
	 * those asked for in `channels`).
	 *
	 * @param array<string, string> $request nonce, nonce_action, channels.
	 * @param int                   $user_id the current user.
	 * @return array{token: string, expires_at: int, channels: int[], user_id: int}
	 * @throws LMS_Realtime_Ajax_Error When refused.
	 */
	public function answer_token( array $request, int $user_id ): array {
		$this->metrics->count( 'requests.token' );
		$this->check_user_and_nonce( $request, $user_id );
		$this->check_rate( 'poll', $user_id );
		$wanted = array();
		if ( isset( $request['channels'] ) && '' !== $request['channels'] ) {
			foreach ( explode( ',', $request['channels'] ) as $raw ) {
				$id = self::parse_id( trim( $raw ), false );
				if ( null === $id ) {
					throw $this->refuse( 'invalid_parameters', __( 'channels must be a comma-separated list of channel ids.', 'lms-realtime' ) );
				}
				$wanted[] = $id;
			}
		}
		return $this->issue_token( $user_id, $wanted );
	}

	/**
	 * A daemon token for a user, for the channels of `$wanted` the user may read (all the
	 * user's channels when empty). No nonce or rate check: callers do that (`answer_token`) or
	 * render it into the user's own page (`LMS_Realtime_Theme_Bridge`).
	 *
	 * @param int   $user_id the user.
	 * @param int[] $wanted  channel ids, or none for all of the user's.
	 * @return array{token: string, expires_at: int, channels: int[], user_id: int}
	 * @throws LMS_Realtime_Ajax_Error When no channel is allowed or the issuer fails.
	 */
	public function issue_token( int $user_id, array $wanted = array() ): array {
		if ( ! $this->daemon_enabled() ) {
			throw $this->refuse( 'daemon_unavailable', __( 'The long-poll daemon is not in use.', 'lms-realtime' ) );
		}
		if ( array() === $wanted ) {
			$wanted = LMS_Realtime_Plugin::bridge()->lmsrt_channels_for_user( $user_id );
		}
		$channels = array();
		foreach ( array_unique( $wanted ) as $channel_id ) {
			if ( self::user_can_access_channel( $user_id, $channel_id ) ) {
				$channels[] = $channel_id;
			}
		}
		$channels = array_slice( $channels, 0, self::MAX_TOKEN_CHANNELS );
		if ( array() === $channels ) {
			throw $this->refuse( 'access_denied', __( 'You do not have access to these channels.', 'lms-realtime' ) );
		}
		$expires = time() + self::TOKEN_TTL;
		$session = substr( hash_hmac( 'sha256', LMS_Realtime_Plugin::bridge()->lmsrt_session_key(), wp_salt( 'auth' ) ), 0, 32 );
		try {
			$token = $this->issuer->issue( $user_id, $channels, $expires, $session );
		} catch ( \Throwable $e ) {
			$this->metrics->count( 'errors.token_failed' );
			// phpcs:ignore WordPress.PHP.DevelopmentFunctions.error_log_error_log
			error_log( 'lms-realtime: token issue failed: ' . $e->getMessage() );
			throw new LMS_Realtime_Ajax_Error( 'service_unavailable', __( 'A connection token could not be issued.', 'lms-realtime' ) );
		}
		return array(
			'token'      => $token,
			'expires_at' => $expires,
			'channels'   => $channels,
			'user_id'    => $user_id,
		);
	}

	/**
	 * Deletes expired events from the store (WP-Cron); returns how many.
	 *
	 * @param int $max at most this many.
	 */
	public function purge_expired( int $max = 5000 ): int {
		return $this->store()->purgeExpired( $max );
	}
}
