<?php
/**
 * An AJAX request refused with a legacy error code.
 *
 * @package LMS_Realtime
 */

defined( 'ABSPATH' ) || exit;

/**
 * Thrown inside the AJAX handlers; the handler turns it into WordPress's
 * `{"success": false, "data": {"message": ..., "code": ...}}` (plus any extra fields, such as
 * `retry_after` in seconds or the advertised `mode`).
 */
final class LMS_Realtime_Ajax_Error extends \RuntimeException {

	/**
	 * The error.
	 *
	 * @param string               $error_code legacy code: `invalid_nonce`, `not_authenticated`, ...
	 * @param string               $message    translated message.
	 * @param array<string, mixed> $extra      extra `data` fields.
	 */
	public function __construct( public readonly string $error_code, string $message, public readonly array $extra = array() ) {
		parent::__construct( $message );
	}

	/**
	 * The `data` of the error response.
	 *
	 * @return array<string, mixed>
	 */
	public function data(): array {
		return array_merge(
			array(
				'message' => $this->getMessage(),
				'code'    => $this->error_code,
			),
			$this->extra
		);
	}
}
