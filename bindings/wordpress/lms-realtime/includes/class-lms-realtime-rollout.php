<?php
/**
 * Canary rollout: which users get the unified long-poll client.
 *
 * @package LMS_Realtime
 */

defined( 'ABSPATH' ) || exit;

/**
 * Buckets users exactly as the Rust guard `lms_realtime::guards::Rollout` does, so PHP, the
 * daemon and any Rust tool agree on every user's cohort:
 *
 *     bucket(user) = stable_hash([salt, (string) user_id]) mod 10000
 *     enabled      = user is a beta user, or bucket < percent * 100
 *
 * `stable_hash` is 64-bit FNV-1a over each part followed by a 0xFF separator byte, finished with
 * the MurmurHash3 fmix64 finaliser (src/guards/mod.rs). The bucket of a user never changes for a
 * given salt, so raising the percentage only adds users and lowering it only removes them:
 * nobody flips between clients while the rollout moves 5% → 20% → 50% → 100%.
 *
 * PHP has no unsigned 64-bit integers; the arithmetic below works on the two's complement bits
 * of PHP's signed 64-bit integers (wrapping multiplication by 16-bit limbs, logical shifts by
 * masking). Known values from the Rust tests pin it, and the tests compare it with the binding's
 * `LmsRealtime\Rollout::bucket()` (tests/phpunit/RolloutTest.php). It stays in PHP so that the
 * legacy path (no library) buckets users the same way.
 */
final class LMS_Realtime_Rollout {

	/** Buckets: two decimals of percentage resolution. */
	public const BUCKETS = 10000;

	/** The salt when the `lms_realtime_rollout_salt` filter does not change it. */
	public const DEFAULT_SALT = 'longpoll';

	/**
	 * Settings.
	 *
	 * @param int    $percent    0 to 100.
	 * @param int[]  $beta_users user ids that are always in.
	 * @param string $salt       draws the cohorts; a new salt draws new ones.
	 */
	public function __construct(
		private int $percent,
		private array $beta_users = array(),
		private string $salt = self::DEFAULT_SALT
	) {
		$this->percent    = max( 0, min( 100, $percent ) );
		$this->beta_users = array_map( 'intval', $beta_users );
	}

	/**
	 * The rollout configured by the options `lms_longpoll_rollout` and `lms_longpoll_beta_users`.
	 */
	public static function from_options(): self {
		/**
		 * Filters the salt of the rollout hash. Changing it reshuffles every cohort.
		 *
		 * @param string $salt The salt.
		 */
		$salt = (string) apply_filters( 'lms_realtime_rollout_salt', self::DEFAULT_SALT );
		$beta = get_option( 'lms_longpoll_beta_users', array() );
		return new self( (int) get_option( 'lms_longpoll_rollout', 0 ), is_array( $beta ) ? $beta : array(), $salt );
	}

	/**
	 * The user's bucket, 0 to 9999.
	 *
	 * @param int|string $user_id The user.
	 */
	public function bucket( $user_id ): int {
		return self::mod_unsigned( self::stable_hash( array( $this->salt, (string) $user_id ) ), self::BUCKETS );
	}

	/**
	 * `beta`, `rollout` or `control`, as the Rust `Cohort`.
	 *
	 * @param int $user_id The user.
	 */
	public function cohort( int $user_id ): string {
		if ( in_array( $user_id, $this->beta_users, true ) ) {
			return 'beta';
		}
		return $this->bucket( $user_id ) < $this->percent * ( self::BUCKETS / 100 ) ? 'rollout' : 'control';
	}

	/**
	 * Whether the user gets the new client.
	 *
	 * @param int $user_id The user.
	 */
	public function is_enabled( int $user_id ): bool {
		return 'control' !== $this->cohort( $user_id );
	}

	/**
	 * The percentage.
	 */
	public function percent(): int {
		return $this->percent;
	}

	/**
	 * 64-bit FNV-1a over the parts, each followed by 0xFF, finished with fmix64; the bits of an
	 * unsigned 64-bit value in a PHP int.
	 *
	 * @param string[] $parts Byte strings.
	 */
	public static function stable_hash( array $parts ): int {
		$prime = 0x100000001b3;
		$h     = self::u64( 0xcbf29ce4, 0x84222325 );
		foreach ( $parts as $part ) {
			$len = strlen( $part );
			for ( $i = 0; $i < $len; $i++ ) {
				$h = self::mul( $h ^ ord( $part[ $i ] ), $prime );
			}
			$h = self::mul( $h ^ 0xFF, $prime );
		}
		return self::fmix64( $h );
	}

	/**
	 * MurmurHash3's 64-bit finaliser.
	 *
	 * @param int $k 64 bits.
	 */
	private static function fmix64( int $k ): int {
		$k ^= self::shr( $k, 33 );
		$k  = self::mul( $k, self::u64( 0xff51afd7, 0xed558ccd ) );
		$k ^= self::shr( $k, 33 );
		$k  = self::mul( $k, self::u64( 0xc4ceb9fe, 0x1a85ec53 ) );
		$k ^= self::shr( $k, 33 );
		return $k;
	}

	/**
	 * A 64-bit value from two 32-bit halves.
	 *
	 * @param int $hi High 32 bits.
	 * @param int $lo Low 32 bits.
	 */
	public static function u64( int $hi, int $lo ): int {
		return ( $hi << 32 ) | ( $lo & 0xFFFFFFFF );
	}

	/**
	 * Logical right shift of the 64 bits.
	 *
	 * @param int $v Value.
	 * @param int $n 1 to 63.
	 */
	private static function shr( int $v, int $n ): int {
		return ( $v >> $n ) & ( ( 1 << ( 64 - $n ) ) - 1 );
	}

	/**
	 * Multiplication modulo 2^64, by 16-bit limbs so no partial product leaves PHP's int range.
	 *
	 * @param int $a 64 bits.
	 * @param int $b 64 bits.
	 */
	private static function mul( int $a, int $b ): int {
		$x = array( $a & 0xFFFF, ( $a >> 16 ) & 0xFFFF, ( $a >> 32 ) & 0xFFFF, ( $a >> 48 ) & 0xFFFF );
		$y = array( $b & 0xFFFF, ( $b >> 16 ) & 0xFFFF, ( $b >> 32 ) & 0xFFFF, ( $b >> 48 ) & 0xFFFF );
		$r     = 0;
		$carry = 0;
		for ( $k = 0; $k < 4; $k++ ) {
			$col = $carry;
			for ( $i = 0; $i <= $k; $i++ ) {
				$col += $x[ $i ] * $y[ $k - $i ];
			}
			$r    |= ( $col & 0xFFFF ) << ( 16 * $k );
			$carry = $col >> 16;
		}
		return $r;
	}

	/**
	 * The 64 bits read as an unsigned integer, modulo `$m` (`$m` below 2^31).
	 *
	 * @param int $v 64 bits.
	 * @param int $m Modulus.
	 */
	public static function mod_unsigned( int $v, int $m ): int {
		$hi = self::shr( $v, 32 );
		$lo = $v & 0xFFFFFFFF;
		return ( ( $hi % $m ) * ( ( 1 << 32 ) % $m ) + $lo % $m ) % $m;
	}
}
