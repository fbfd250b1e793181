<?php
/**
 * Rollout bucketing: the same stable hash as the Rust guard.
 *
 * @package LMS_Realtime
 */

// phpcs:disable WordPress.Files.FileName

/**
 * Canary rollout.
 */
final class RolloutTest extends LMSRT_TestCase {

	public function test_the_hash_matches_the_values_pinned_by_the_rust_tests(): void {
		// src/guards/mod.rs: stable_hash(&[b"post", b"42"]) == 0xc497_f38e_f01f_7f22.
		$this->assertSame( LMS_Realtime_Rollout::u64( 0xc497f38e, 0xf01f7f22 ), LMS_Realtime_Rollout::stable_hash( array( 'post', '42' ) ) );
		// src/guards/rollout.rs: Rollout::new(5, "lms") buckets of "1", "2", "42", "user-7".
		$r = new LMS_Realtime_Rollout( 5, array(), 'lms' );
		$this->assertSame( array( 9532, 810, 3230, 6887 ), array_map( array( $r, 'bucket' ), array( '1', '2', '42', 'user-7' ) ) );
		$this->assertNotSame( LMS_Realtime_Rollout::stable_hash( array( 'ab', 'c' ) ), LMS_Realtime_Rollout::stable_hash( array( 'a', 'bc' ) ) );
	}

	public function test_the_php_buckets_equal_the_bindings(): void {
		$this->assertTrue( class_exists( 'LmsRealtime\\Rollout' ) );
		foreach ( array( 'longpoll', 'lms', 'canary-2', '' ) as $salt ) {
			$r = new LMS_Realtime_Rollout( 50, array(), $salt );
			foreach ( array_merge( range( 1, 300 ), array( 'user-7', '0', '18446744073709551615', 'ü' ) ) as $user ) {
				$this->assertSame( \LmsRealtime\Rollout::bucket( $salt, (string) $user ), $r->bucket( $user ), "salt '$salt', user $user" );
			}
		}
		for ( $u = 1; $u <= 300; $u++ ) {
			$this->assertSame(
				\LmsRealtime\Rollout::cohort( 20, 'longpoll', array( '7' ), (string) $u ),
				( new LMS_Realtime_Rollout( 20, array( 7 ) ) )->cohort( $u )
			);
		}
	}

	public function test_unsigned_modulo(): void {
		$this->assertSame( 5, LMS_Realtime_Rollout::mod_unsigned( -1, 10 ), '2^64 - 1 = ...615' );
		$this->assertSame( ( 2 ** 32 + 7 ) % 10000, LMS_Realtime_Rollout::mod_unsigned( 2 ** 32 + 7, 10000 ) );
	}

	public function test_raising_the_percentage_only_adds_users(): void {
		$lo = new LMS_Realtime_Rollout( 20 );
		$hi = new LMS_Realtime_Rollout( 50 );
		$in = 0;
		for ( $u = 1; $u <= 3000; $u++ ) {
			if ( $lo->is_enabled( $u ) ) {
				++$in;
				$this->assertTrue( $hi->is_enabled( $u ), "user $u left the rollout when it grew" );
			}
			$this->assertSame( $lo->bucket( $u ), $hi->bucket( $u ) );
		}
		$this->assertGreaterThan( 480, $in, 'about 20% of 3000' );
		$this->assertLessThan( 720, $in );
	}

	public function test_edges_and_beta_users(): void {
		$none = new LMS_Realtime_Rollout( 0, array( 9 ) );
		$all  = new LMS_Realtime_Rollout( 100 );
		for ( $u = 1; $u <= 500; $u++ ) {
			$this->assertSame( 9 === $u, $none->is_enabled( $u ) );
			$this->assertTrue( $all->is_enabled( $u ) );
		}
		$this->assertSame( 'beta', $none->cohort( 9 ) );
		$this->assertSame( 'control', $none->cohort( 10 ) );
		$this->assertSame( 'rollout', $all->cohort( 10 ) );
		$this->assertSame( 100, ( new LMS_Realtime_Rollout( 250 ) )->percent() );
	}

	public function test_the_options_decide_who_gets_the_unified_client(): void {
		$guards = LMS_Realtime_Plugin::realtime()->guards();
		$a      = $this->user();
		update_option( 'lms_longpoll_rollout', 100 );
		update_option( 'lms_use_unified_longpoll', false );
		$this->assertFalse( ( new LMS_Realtime_Guards() )->use_unified( $a ), 'the master switch wins' );
		update_option( 'lms_use_unified_longpoll', true );
		$this->assertTrue( ( new LMS_Realtime_Guards() )->use_unified( $a ) );
		update_option( 'lms_longpoll_rollout', 0 );
		update_option( 'lms_longpoll_beta_users', array( $a ) );
		$g = new LMS_Realtime_Guards();
		$this->assertTrue( $g->use_unified( $a ), 'beta user' );
		$this->assertFalse( $g->use_unified( $this->user() ) );
		$this->assertFalse( $g->use_unified( 0 ), 'never logged-out visitors' );
		unset( $guards );
	}

	public function test_the_page_config_carries_the_cohort(): void {
		$u  = $this->user();
		$ch = $this->channel( array( $u ) );
		update_option( 'lms_longpoll_rollout', 0 );
		LMS_Realtime_Plugin::set_realtime( null );
		$this->assertSame( array( 'cohort' => 'legacy', 'rollout_percent' => 0 ), LMS_Realtime_Plugin::realtime()->page_config( $ch, 0, $u )['ab'] );
		update_option( 'lms_longpoll_rollout', 100 );
		LMS_Realtime_Plugin::set_realtime( null );
		$this->assertSame( array( 'cohort' => 'unified', 'rollout_percent' => 100 ), LMS_Realtime_Plugin::realtime()->page_config( $ch, 0, $u )['ab'] );
	}
}
