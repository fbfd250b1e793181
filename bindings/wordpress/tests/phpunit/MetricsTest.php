<?php
/**
 * The status panel's counters and health verdict.
 *
 * @package LMS_Realtime
 */

// phpcs:disable WordPress.Files.FileName

/**
 * Metrics.
 */
final class MetricsTest extends LMSRT_TestCase {

	public function test_counters_survive_requests_and_percentiles_follow_the_buckets(): void {
		$file = dirname( $this->db_path ) . '/metrics.json';
		$a    = new LMS_Realtime_Metrics( $file );
		$a->count( 'requests.poll', 10 );
		$a->count( 'events_delivered', 4 );
		foreach ( array( 3, 4, 8, 9, 20, 40, 60, 90, 200, 1200 ) as $ms ) {
			$a->observe( 'delivery_ms', $ms );
		}
		$a->flush();
		$b = new LMS_Realtime_Metrics( $file ); // another request
		$b->count( 'requests.poll', 5 );
		$b->count( 'errors.service_unavailable' );
		$s = $b->snapshot();
		$this->assertSame( 15, $s['requests_total'] );
		$this->assertSame( 4, $s['events_delivered'] );
		$this->assertSame( array( 'count' => 10, 'p50' => 25, 'p95' => 2500, 'p99' => 2500 ), $s['delivery_ms'] );
		$this->assertEqualsWithDelta( 1 / 15, $s['error_rate'], 1e-9 );
		$this->assertSame( 'degraded', $s['health']['status'] );
		$this->assertStringContainsString( 'p99', $s['health']['reasons'][0] );
		$this->assertStringContainsString( 'error rate', $s['health']['reasons'][1] );
	}

	public function test_verdicts(): void {
		$ok = array(
			'requests_total' => 100,
			'error_rate'     => 0.01,
			'delivery_ms'    => array( 'count' => 5, 'p50' => 2, 'p95' => 5, 'p99' => 10 ),
		);
		$this->assertSame( 'ok', LMS_Realtime_Metrics::verdict( $ok )['status'] );
		$this->assertSame( 'idle', LMS_Realtime_Metrics::verdict( array( 'requests_total' => 0, 'error_rate' => 0.0, 'delivery_ms' => array( 'p99' => null ) ) )['status'] );
		$this->assertSame( 'degraded', LMS_Realtime_Metrics::verdict( array_merge( $ok, array( 'error_rate' => 0.06 ) ) )['status'] );
		$this->assertSame( 30001, LMS_Realtime_Metrics::percentiles( array( 14 => 3 ) )['p99'], 'above the last bound' );
	}

	public function test_reset(): void {
		$m = new LMS_Realtime_Metrics( dirname( $this->db_path ) . '/metrics.json' );
		$m->count( 'requests.post' );
		$m->flush();
		$m->reset();
		$this->assertSame( 0, $m->snapshot()['requests_total'] );
	}
}
