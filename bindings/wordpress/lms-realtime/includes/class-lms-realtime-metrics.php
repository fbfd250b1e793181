<?php
/**
 * The plugin's own counters, for the status panel.
 *
 * @package LMS_Realtime
 */

defined( 'ABSPATH' ) || exit;

/**
 * Counters and latency histograms of this site's PHP side, kept in a small JSON file beside
 * the event store and merged once per request at shutdown under `flock` (no database write).
 *
 * - `requests`: polls, posts and token requests answered.
 * - `events_recorded`, `events_delivered`.
 * - `errors` by code: failures of the service itself (the store failed or was refused by the
 *   breaker); `refused` by code: requests turned away by design (rate limits, connection
 *   slots, nonce, login, access).
 * - `delivery_ms`: for events that arrived while a poll was waiting, the time from the append
 *   to the answer: the wake-up path, the figure the alert line is about. `staleness_ms`: for
 *   events already pending when a poll came in, their age (the polling interval's share).
 *
 * The health verdict follows the plan's alert lines: `degraded` when the p99 of `delivery_ms`
 * is above 100 ms or the error rate (errors per request) above 5%, else `ok` (`idle` with no
 * requests yet). When the binding exposes the native metrics (`LmsRealtime\Metrics`), the
 * status panel shows that snapshot as well.
 */
final class LMS_Realtime_Metrics {

	/** Histogram bucket upper bounds, ms (the last bucket is everything above). */
	public const BUCKETS = array( 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000 );

	/** Alert lines. */
	public const P99_ALERT_MS   = 100;
	public const ERROR_RATE_MAX = 0.05;

	/**
	 * This request's increments.
	 *
	 * @var array<string, mixed>
	 */
	private array $pending = array();

	/**
	 * Whether the shutdown flush is registered.
	 *
	 * @var bool
	 */
	private bool $registered = false;

	/**
	 * Keeps the counters in `$file`.
	 *
	 * @param string $file the JSON file.
	 */
	public function __construct( private string $file ) {
	}

	/**
	 * The file.
	 */
	public function file(): string {
		return $this->file;
	}

	/**
	 * Adds to a counter: `requests.poll`, `events_delivered`, `errors.store_unavailable`, ...
	 *
	 * @param string $path  dotted name.
	 * @param int    $value increment.
	 */
	public function count( string $path, int $value = 1 ): void {
		$parts = explode( '.', $path, 2 );
		if ( 2 === count( $parts ) ) {
			$this->pending[ $parts[0] ][ $parts[1] ] = ( $this->pending[ $parts[0] ][ $parts[1] ] ?? 0 ) + $value;
		} else {
			$this->pending[ $path ] = ( $this->pending[ $path ] ?? 0 ) + $value;
		}
		$this->schedule();
	}

	/**
	 * Records a latency sample in a histogram.
	 *
	 * @param string $histogram `delivery_ms` or `staleness_ms`.
	 * @param float  $ms        the sample.
	 */
	public function observe( string $histogram, float $ms ): void {
		$i = count( self::BUCKETS );
		foreach ( self::BUCKETS as $b => $bound ) {
			if ( $ms <= $bound ) {
				$i = $b;
				break;
			}
		}
		$this->pending[ $histogram ][ $i ] = ( $this->pending[ $histogram ][ $i ] ?? 0 ) + 1;
		$this->schedule();
	}

	/**
	 * Registers the flush.
	 */
	private function schedule(): void {
		if ( ! $this->registered ) {
			$this->registered = true;
			register_shutdown_function( array( $this, 'flush' ) );
		}
	}

	/**
	 * Merges this request's increments into the file.
	 */
	public function flush(): void {
		if ( array() === $this->pending ) {
			return;
		}
		$dir = dirname( $this->file );
		if ( ! is_dir( $dir ) && ! wp_mkdir_p( $dir ) ) {
			return;
		}
		// phpcs:disable WordPress.WP.AlternativeFunctions -- a locked read-modify-write of a local file.
		$fh = @fopen( $this->file, 'c+' );
		if ( false === $fh ) {
			return;
		}
		try {
			if ( ! flock( $fh, LOCK_EX ) ) {
				return;
			}
			$raw  = stream_get_contents( $fh );
			$data = is_string( $raw ) && '' !== $raw ? json_decode( $raw, true ) : null;
			$data = is_array( $data ) ? $data : array( 'since' => time() );
			$data = self::merge( $data, $this->pending );
			ftruncate( $fh, 0 );
			rewind( $fh );
			fwrite( $fh, (string) wp_json_encode( $data ) );
			fflush( $fh );
			flock( $fh, LOCK_UN );
			$this->pending = array();
		} finally {
			fclose( $fh );
		}
		// phpcs:enable
	}

	/**
	 * Adds `$add` into `$into`, recursively.
	 *
	 * @param array<string, mixed> $into totals.
	 * @param array<string, mixed> $add  increments.
	 * @return array<string, mixed>
	 */
	private static function merge( array $into, array $add ): array {
		foreach ( $add as $k => $v ) {
			if ( is_array( $v ) ) {
				$into[ $k ] = self::merge( is_array( $into[ $k ] ?? null ) ? $into[ $k ] : array(), $v );
			} else {
				$into[ $k ] = ( is_numeric( $into[ $k ] ?? null ) ? $into[ $k ] : 0 ) + $v;
			}
		}
		return $into;
	}

	/**
	 * Totals so far (this request's increments included), with percentiles and the verdict.
	 *
	 * @return array<string, mixed>
	 */
	public function snapshot(): array {
		$data = array();
		if ( is_readable( $this->file ) ) {
			// phpcs:ignore WordPress.WP.AlternativeFunctions.file_get_contents_file_get_contents
			$decoded = json_decode( (string) file_get_contents( $this->file ), true );
			$data    = is_array( $decoded ) ? $decoded : array();
		}
		$data     = self::merge( $data, $this->pending );
		$requests = array_sum( array_map( 'intval', (array) ( $data['requests'] ?? array() ) ) );
		$errors   = array_sum( array_map( 'intval', (array) ( $data['errors'] ?? array() ) ) );
		$snapshot = array(
			'since'            => (int) ( $data['since'] ?? 0 ),
			'requests'         => (array) ( $data['requests'] ?? array() ),
			'requests_total'   => $requests,
			'events_recorded'  => (int) ( $data['events_recorded'] ?? 0 ),
			'events_delivered' => (int) ( $data['events_delivered'] ?? 0 ),
			'polls_waited'     => (int) ( $data['polls_waited'] ?? 0 ),
			'errors'           => (array) ( $data['errors'] ?? array() ),
			'refused'          => (array) ( $data['refused'] ?? array() ),
			'error_rate'       => $requests > 0 ? $errors / $requests : 0.0,
			'delivery_ms'      => self::percentiles( (array) ( $data['delivery_ms'] ?? array() ) ),
			'staleness_ms'     => self::percentiles( (array) ( $data['staleness_ms'] ?? array() ) ),
		);
		$snapshot['health'] = self::verdict( $snapshot );
		return $snapshot;
	}

	/**
	 * `ok`, `degraded` (with reasons) or `idle`.
	 *
	 * @param array<string, mixed> $s a snapshot.
	 * @return array{status: string, reasons: string[]}
	 */
	public static function verdict( array $s ): array {
		$reasons = array();
		$p99     = $s['delivery_ms']['p99'] ?? null;
		if ( null !== $p99 && $p99 > self::P99_ALERT_MS ) {
			$reasons[] = sprintf( 'delivery p99 %s ms > %d ms', $p99, self::P99_ALERT_MS );
		}
		if ( $s['error_rate'] > self::ERROR_RATE_MAX ) {
			$reasons[] = sprintf( 'error rate %.1f%% > %d%%', $s['error_rate'] * 100, self::ERROR_RATE_MAX * 100 );
		}
		if ( array() !== $reasons ) {
			return array(
				'status'  => 'degraded',
				'reasons' => $reasons,
			);
		}
		return array(
			'status'  => 0 === (int) $s['requests_total'] ? 'idle' : 'ok',
			'reasons' => array(),
		);
	}

	/**
	 * Count and p50/p95/p99 (each the upper bound of its bucket; null without samples).
	 *
	 * @param array<int|string, int> $hist counts per bucket index.
	 * @return array{count: int, p50: int|null, p95: int|null, p99: int|null}
	 */
	public static function percentiles( array $hist ): array {
		$total = array_sum( array_map( 'intval', $hist ) );
		$out   = array(
			'count' => $total,
			'p50'   => null,
			'p95'   => null,
			'p99'   => null,
		);
		if ( 0 === $total ) {
			return $out;
		}
		foreach ( array( 'p50' => 0.50, 'p95' => 0.95, 'p99' => 0.99 ) as $name => $q ) {
			$rank = (int) ceil( $q * $total );
			$seen = 0;
			for ( $i = 0; $i <= count( self::BUCKETS ); $i++ ) {
				$seen += (int) ( $hist[ $i ] ?? $hist[ (string) $i ] ?? 0 );
				if ( $seen >= $rank ) {
					// Above the last bound: reported as that bound + 1 ("more than 30 s").
					$out[ $name ] = self::BUCKETS[ $i ] ?? ( self::BUCKETS[ count( self::BUCKETS ) - 1 ] + 1 );
					break;
				}
			}
		}
		return $out;
	}

	/**
	 * Forgets everything (the status panel's reset button).
	 */
	public function reset(): void {
		$this->pending = array();
		if ( is_file( $this->file ) ) {
			wp_delete_file( $this->file );
		}
	}
}
