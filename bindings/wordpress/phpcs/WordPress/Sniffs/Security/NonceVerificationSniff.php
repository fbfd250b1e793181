<?php

/**
 * Form input is read only in a function that verifies a nonce.
 *
 * A narrow stand-in for WPCS's sniff of this name: each read of $_POST or $_FILES (error
 * "Missing") and of $_GET or $_REQUEST (warning "Recommended") must follow, in the same
 * function (or file, outside functions), a call to check_ajax_referer(), check_admin_referer()
 * or wp_verify_nonce(). Where the nonce is checked elsewhere (a handler that calls a shared
 * reader, options.php for a settings callback), say so in a phpcs:ignore with the reason.
 *
 * @package LMS_Realtime
 */

namespace WordPress\Sniffs\Security;

use PHP_CodeSniffer\Files\File;
use PHP_CodeSniffer\Sniffs\Sniff;

/**
 * WordPress.Security.NonceVerification.Missing / .Recommended
 */
final class NonceVerificationSniff implements Sniff
{
    private const VERIFIERS = ['check_ajax_referer', 'check_admin_referer', 'wp_verify_nonce'];

    /** @return array<int|string> */
    public function register()
    {
        return [T_VARIABLE];
    }

    /**
     * @param int $stackPtr the variable.
     * @return void
     */
    public function process(File $phpcsFile, $stackPtr)
    {
        $tokens = $phpcsFile->getTokens();
        $name = $tokens[$stackPtr]['content'];
        $missing = in_array($name, ['$_POST', '$_FILES'], true);
        if (!$missing && !in_array($name, ['$_GET', '$_REQUEST'], true)) {
            return;
        }
        $start = 0;
        foreach (array_reverse($tokens[$stackPtr]['conditions'], true) as $ptr => $code) {
            if ($code === T_FUNCTION || $code === T_CLOSURE) {
                $start = $tokens[$ptr]['scope_opener'];
                break;
            }
        }
        for ($i = $start; $i < $stackPtr; $i++) {
            $isCall = $tokens[$i]['code'] === T_STRING;
            if ($isCall && in_array(strtolower($tokens[$i]['content']), self::VERIFIERS, true)) {
                return;
            }
        }
        $message = '%s is read before any nonce check (check_ajax_referer(), wp_verify_nonce(), ...) in its function';
        if ($missing) {
            $phpcsFile->addError($message, $stackPtr, 'Missing', [$name]);
        } else {
            $phpcsFile->addWarning($message, $stackPtr, 'Recommended', [$name]);
        }
    }
}
