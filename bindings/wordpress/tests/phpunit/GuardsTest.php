<?php
/**
 * The guards adapter and its transient fallback (the binding has no guard classes yet).
 *
 * @package LMS_Realtime
 */

// phpcs:disable WordPress.Files.FileName

/**
 * Rate limits, breaker, slots over transients, with a clock the test moves.
 */
final class GuardsTest extends LMSRT_TestCase {

	/**
	 * The time, ms.
	 *
	 * @var int
	 */
	private int $now = 1700000000000;

	private function backend(): LMS_Realtime_Transient_Guards {
		return new LMS_Realtime_Transient_Guards( LMS_Realtime_Guards::limits(), LMS_Realtime_Guards::breaker_settings(), fn () => $this->now );
	}

	private function key(): string {
		return 'test:' . uniqid( '', true );
	}

	public function test_the_store_path_uses_the_binding_and_the_legacy_path_transients(): void {
		$this->assertTrue( LMS_Realtime_Native_Guards::available(), 'this binding has LmsRealtime\\Guards' );
		$g = new LMS_Realtime_Guards( $this->db_path );
		$this->assertSame( array( 'rate' => 'native', 'slots' => 'native', 'breaker' => 'native' ), $g->backends() );
		$this->assertInstanceOf( \LmsRealtime\Metrics::class, $g->native_metrics() );
		$this->assertFileExists( $this->db_path . '-lmsrt-limits', 'shared files beside the store, no database writes' );
		$this->assertSame( array( 'rate' => 'transient', 'slots' => 'transient', 'breaker' => 'transient' ), ( new LMS_Realtime_Guards( null ) )->backends() );
		$this->assertNull( ( new LMS_Realtime_Guards( null ) )->native_metrics() );
	}

	public function test_native_and_transient_guards_agree(): void {
		$native    = new LMS_Realtime_Native_Guards( $this->db_path, LMS_Realtime_Native_Guards::config( LMS_Realtime_Guards::limits(), LMS_Realtime_Guards::breaker_settings(), 2 ), $this->backend() );
		$transient = $this->backend();
		foreach ( array( $native, $transient ) as $b ) {
			$key = $this->key();
			for ( $i = 0; $i < 20; $i++ ) {
				$this->assertTrue( $b->rate_check( 'post', $key )['allowed'], $b->name() . " post $i" );
			}
			$d = $b->rate_check( 'post', $key );
			$this->assertFalse( $d['allowed'], $b->name() );
			$this->assertEqualsWithDelta( 3000, $d['retry_after_ms'], 50, $b->name() . ': 20 per minute, one every 3 s' );
			$one = $b->slot_acquire( $key, 2, 30000 );
			$two = $b->slot_acquire( $key, 2, 30000 );
			$this->assertNotNull( $two, $b->name() );
			$this->assertNull( $b->slot_acquire( $key, 2, 30000 ), $b->name() . ': the third slot is refused' );
			$b->slot_release( $key, $one );
			$this->assertSame( 1, $b->slot_count( $key ), $b->name() );
			$b->slot_release( $key, $two );
			$name = 'agree' . uniqid();
			for ( $i = 0; $i < 5; $i++ ) {
				$s = $b->breaker_record( $name, false );
			}
			$this->assertSame( array( 'open', false, 'emergency' ), array( $s['state'], $s['allowed'], $s['mode'] ), $b->name() );
			$this->assertSame( 'emergency', $b->breaker_status( $name )['mode'], $b->name() );
			$b->breaker_reset( $name );
			$this->assertSame( array( 'closed', 'long' ), array( $b->breaker_status( $name )['state'], $b->breaker_status( $name )['mode'] ), $b->name() );
		}
	}

	public function test_posting_allows_the_burst_then_one_every_three_seconds(): void {
		$b   = $this->backend();
		$key = $this->key();
		for ( $i = 0; $i < 20; $i++ ) {
			$this->assertTrue( $b->rate_check( 'post', $key )['allowed'], "post $i" );
		}
		$d = $b->rate_check( 'post', $key );
		$this->assertFalse( $d['allowed'] );
		$this->assertSame( 3000, $d['retry_after_ms'] );
		$this->assertTrue( $b->rate_check( 'post', $this->key() )['allowed'], 'keys are independent' );
		// A refusal costs reputation: the next allowance comes a bit later than 3 s.
		$this->now += 3000;
		$d = $b->rate_check( 'post', $key );
		$this->assertFalse( $d['allowed'], 'the penalty slowed the key down' );
		$this->now += 10 * 60 * 1000; // reputation recovers, the bucket refills
		for ( $i = 0; $i < 20; $i++ ) {
			$this->assertTrue( $b->rate_check( 'post', $key )['allowed'], "after rest, post $i" );
		}
	}

	public function test_repeat_offenders_by_address_are_blocked(): void {
		$b   = $this->backend();
		$key = $this->key();
		$blocked = null;
		for ( $i = 0; $i < 200 && null === $blocked; $i++ ) {
			$d = $b->rate_check( 'ip', $key );
			if ( $d['blocked'] ) {
				$blocked = $d;
			}
		}
		$this->assertNotNull( $blocked, 'a flood ends in a block' );
		$this->assertGreaterThanOrEqual( 59000, $blocked['retry_after_ms'] );
		$this->now += 30000;
		$this->assertTrue( $b->rate_check( 'ip', $key )['blocked'], 'still blocked half-way' );
	}

	public function test_the_breaker_opens_backs_off_and_probes(): void {
		$b    = $this->backend();
		$name = 'b' . uniqid();
		$this->assertSame( array( 'closed', true, 'long' ), array( $b->breaker_check( $name )['state'], $b->breaker_check( $name )['allowed'], $b->breaker_check( $name )['mode'] ) );
		for ( $i = 0; $i < 3; $i++ ) {
			$s = $b->breaker_record( $name, false );
		}
		$this->assertSame( array( 'closed', 'medium' ), array( $s['state'], $s['mode'] ), 'failing: medium' );
		$s = $b->breaker_record( $name, false );
		$s = $b->breaker_record( $name, false );
		$this->assertSame( array( 'open', 'emergency', 5000 ), array( $s['state'], $s['mode'], $s['retry_ms'] ) );
		$this->assertFalse( $b->breaker_check( $name )['allowed'] );
		$this->now += 5000;
		$probe = $b->breaker_check( $name );
		$this->assertSame( array( 'half_open', true, 'short' ), array( $probe['state'], $probe['allowed'], $probe['mode'] ) );
		$this->assertFalse( $b->breaker_check( $name )['allowed'], 'one probe at a time' );
		$s = $b->breaker_record( $name, false );
		$this->assertSame( array( 'open', 10000 ), array( $s['state'], $s['retry_ms'] ), 'a failed probe doubles the period' );
		$this->now += 10000;
		$this->assertTrue( $b->breaker_check( $name )['allowed'] );
		$s = $b->breaker_record( $name, true );
		$this->assertSame( array( 'closed', 'long', 0 ), array( $s['state'], $s['mode'], $s['failures'] ) );
		// A lost probe frees its place after probe_timeout_ms.
		for ( $i = 0; $i < 5; $i++ ) {
			$b->breaker_record( $name, false );
		}
		$this->now += 5000;
		$this->assertTrue( $b->breaker_check( $name )['allowed'] );
		$this->assertFalse( $b->breaker_check( $name )['allowed'] );
		$this->now += 10000;
		$this->assertTrue( $b->breaker_check( $name )['allowed'], 'the unanswered probe expired' );
		$b->breaker_reset( $name );
		$this->assertSame( 'closed', $b->breaker_status( $name )['state'] );
	}

	public function test_slots_cap_waiting_polls_and_expire(): void {
		$b   = $this->backend();
		$key = $this->key();
		$one = $b->slot_acquire( $key, 2, 30000 );
		$two = $b->slot_acquire( $key, 2, 30000 );
		$this->assertNotNull( $two );
		$this->assertNull( $b->slot_acquire( $key, 2, 30000 ) );
		$this->assertSame( 2, $b->slot_count( $key ) );
		$b->slot_release( $key, $one );
		$this->assertNotNull( $three = $b->slot_acquire( $key, 2, 30000 ) );
		$this->now += 31000; // holders that died: their leases expire
		$this->assertSame( 0, $b->slot_count( $key ) );
		$this->assertNotNull( $b->slot_acquire( $key, 2, 30000 ) );
		unset( $three );
	}

	public function test_the_adapter_applies_the_options(): void {
		update_option( 'lms_longpoll_max_connections', 1 );
		$g = new LMS_Realtime_Guards( null );
		$u = $this->user();
		$lease = $g->acquire_slot( $u, 10000 );
		$this->assertNotNull( $lease );
		$this->assertNull( $g->acquire_slot( $u, 10000 ) );
		$g->release_all();
		$this->assertSame( 0, $g->slots_held( $u ) );
		update_option( 'lms_longpoll_circuit_breaker', false );
		$this->assertSame( 'disabled', $g->breaker_status()['state'] );
		$this->assertSame( 'long', $g->advertised_mode() );
		update_option( 'lms_longpoll_circuit_breaker', true );
		for ( $i = 0; $i < 5; $i++ ) {
			$g->breaker_record( false );
		}
		$this->assertSame( 'emergency', $g->advertised_mode() );
		$g->breaker_reset();
		$this->assertSame( 'long', $g->advertised_mode() );
	}
}
