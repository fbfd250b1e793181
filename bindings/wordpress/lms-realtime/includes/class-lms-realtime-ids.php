<?php
/**
 * One increasing id space across the plugin's table, the event store and the theme's table.
 *
 * @package LMS_Realtime
 */

defined( 'ABSPATH' ) || exit;

/**
 * Keeps every client's `last_event_id` meaningful when the plugin moves between its table
 * (no FFI) and the event store (FFI), in either direction, and when it takes over from the LMS
 * theme's own event table, whose ids the theme's clients already hold.
 *
 * The rule: a backend that takes over first moves its next id above every id handed out
 * before. The state lives in the option `lmsrt_ids`:
 *
 * - `backend`: the backend that served last (`table` or `store`);
 * - `store_floor`: store ids are above it; ids at or below it came from the table or the theme;
 *   the store path still reads the plugin's table for clients holding such an id, so nothing
 *   recorded there before the move is lost;
 * - `table_floor`: table ids are above it; a client holding an id below it that came from the
 *   store may have missed store events the table path cannot read, so it gets `gap: true`
 *   (it resynchronises), unless it was at the store's head when the table took over
 *   (`store_head`, when PHP could read it with pdo_sqlite; -1 when unknown);
 * - `reserve`: store ids stay below it (the store path moves it ahead in big steps), so the
 *   table can start above every store id even when PHP cannot read the store.
 *
 * Switching is idempotent (every step takes a maximum), so two workers switching at once agree.
 */
final class LMS_Realtime_Ids {

	/** The option. */
	public const OPTION = 'lmsrt_ids';

	/** How far ahead of the store's head the reserve is kept. */
	public const RESERVE_STEP = 1000000000;

	/** Below this distance to the reserve, the store path moves it. */
	public const RESERVE_MARGIN = 100000000;

	/**
	 * Backends already switched in this request.
	 *
	 * @var array<string, bool>
	 */
	private static array $done = array();

	/**
	 * The state, with defaults.
	 *
	 * @return array{backend: string, store_floor: int, table_floor: int, store_head: int, reserve: int}
	 */
	public static function state(): array {
		$s = get_option( self::OPTION, array() );
		$s = is_array( $s ) ? $s : array();
		return array(
			'backend'     => (string) ( $s['backend'] ?? '' ),
			'store_floor' => (int) ( $s['store_floor'] ?? 0 ),
			'table_floor' => (int) ( $s['table_floor'] ?? 0 ),
			'store_head'  => (int) ( $s['store_head'] ?? -1 ),
			'reserve'     => (int) ( $s['reserve'] ?? 0 ),
		);
	}

	/**
	 * Makes `$rt`'s backend the one that serves, once per request: moves its ids above every
	 * id handed out before if another backend (or nobody yet) served last.
	 *
	 * @param LMSRT_Realtime $rt the service about to record or fetch.
	 */
	public static function switch_to( LMSRT_Realtime $rt ): void {
		$backend = $rt->backend();
		if ( isset( self::$done[ $backend ] ) ) {
			return;
		}
		self::$done[ $backend ] = true;
		$state                  = self::state();
		if ( $rt instanceof LMSRT_Unified_Long_Poll ) {
			$state = self::to_store( $rt, $state );
		} elseif ( 'table' !== $state['backend'] ) {
			$state = self::to_table( $state );
		}
		if ( $state !== self::state() ) {
			update_option( self::OPTION, $state, true );
		}
	}

	/**
	 * The store takes over (or keeps serving: then only the reserve may move).
	 *
	 * @param LMSRT_Unified_Long_Poll $rt    the store path.
	 * @param array                   $state the state.
	 * @return array the new state.
	 */
	private static function to_store( LMSRT_Unified_Long_Poll $rt, array $state ): array {
		$store = $rt->store();
		if ( 'store' !== $state['backend'] ) {
			$floor                = max( $state['store_floor'], self::table_high_water(), LMS_Realtime_Theme_Data::event_high_water() );
			$head                 = (int) $store->advanceIds( $floor );
			$state['store_floor'] = $floor;
			$state['backend']     = 'store';
		} else {
			$head = LMSRT_Realtime::cursor_max( $store->headCursor() );
			if ( $head < $state['store_floor'] ) {
				// A new or replaced store file starts at 1: above every id handed out before.
				$head = (int) $store->advanceIds( max( $state['store_floor'], $state['reserve'] ) );
			}
		}
		if ( $head + self::RESERVE_MARGIN > $state['reserve'] ) {
			$state['reserve'] = $head + self::RESERVE_STEP;
		}
		return $state;
	}

	/**
	 * The table takes over from the store (or serves first).
	 *
	 * @param array $state the state.
	 * @return array the new state.
	 */
	private static function to_table( array $state ): array {
		$head  = 'store' === $state['backend'] ? self::store_head() : -1;
		$floor = max( $state['table_floor'], $state['reserve'], $head, LMS_Realtime_Theme_Data::event_high_water() );
		if ( $floor > self::table_high_water() ) {
			global $wpdb;
			$table = LMSRT_Realtime::table();
			// phpcs:ignore WordPress.DB.PreparedSQL.InterpolatedNotPrepared,WordPress.DB.DirectDatabaseQuery,WordPress.DB.DirectDatabaseQuery.SchemaChange -- the plugin's own table.
			$wpdb->query( sprintf( 'ALTER TABLE %s AUTO_INCREMENT = %d', $table, $floor + 1 ) );
		}
		$state['table_floor'] = $floor;
		$state['store_head']  = 'store' === $state['backend'] ? $head : $state['store_head'];
		$state['backend']     = 'table';
		return $state;
	}

	/**
	 * Whether a table-path client holding `$last_id` must resynchronise: its id came from
	 * before the table took over, and the store may hold events after it that the table path
	 * cannot read.
	 *
	 * @param int $last_id the client's last_event_id.
	 */
	public static function table_gap( int $last_id ): bool {
		$s = self::state();
		if ( $last_id <= 0 || $last_id >= $s['table_floor'] ) {
			return false;
		}
		return ! ( $s['store_head'] >= 0 && $last_id >= $s['store_head'] );
	}

	/**
	 * Whether a store-path client holding `$last_id` still has events to read in the plugin's
	 * table (its id is from before the store took over).
	 *
	 * @param int $last_id the client's last_event_id.
	 */
	public static function reads_table( int $last_id ): bool {
		return $last_id < self::state()['store_floor'];
	}

	/**
	 * The highest id the plugin's table handed out (its next AUTO_INCREMENT - 1; 0 without it).
	 */
	public static function table_high_water(): int {
		global $wpdb;
		// phpcs:ignore WordPress.DB.DirectDatabaseQuery
		$next = $wpdb->get_var( $wpdb->prepare( 'SELECT AUTO_INCREMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s', LMSRT_Realtime::table() ) );
		$table = LMSRT_Realtime::table();
		// phpcs:ignore WordPress.DB.PreparedSQL.InterpolatedNotPrepared,WordPress.DB.DirectDatabaseQuery
		$max = (int) $wpdb->get_var( "SELECT COALESCE(MAX(id), 0) FROM {$table}" );
		return max( $max, null === $next ? 0 : (int) $next - 1 );
	}

	/**
	 * The store's head id read without FFI (pdo_sqlite, read-only), or -1 when PHP cannot (or
	 * the store is in Redis).
	 */
	private static function store_head(): int {
		$path = LMSRT_Unified_Long_Poll::db_path();
		// A store in Redis has no file to read (and is_file() would warn about the scheme).
		if ( LMSRT_Unified_Long_Poll::store_is_url( $path ) || ! class_exists( 'PDO' ) || ! in_array( 'sqlite', \PDO::getAvailableDrivers(), true ) || ! is_file( $path ) ) {
			return -1;
		}
		try {
			$pdo = new \PDO( 'sqlite:' . $path, null, null, array( \PDO::SQLITE_ATTR_OPEN_FLAGS => \PDO::SQLITE_OPEN_READONLY ) );
			$seq = $pdo->query( "SELECT seq FROM sqlite_sequence WHERE name = 'lmsrt_events'" );
			return false === $seq ? -1 : (int) $seq->fetchColumn();
		} catch ( \Throwable $e ) {
			unset( $e );
			return -1;
		}
	}

	/**
	 * Forgets which backends switched in this request (tests).
	 */
	public static function reset(): void {
		self::$done = array();
	}
}
