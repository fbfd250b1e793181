<?php

/**
 * Request input ($_GET, $_POST, ...) is read only through a sanitising call or a validation check.
 *
 * A narrow stand-in for WPCS's sniff of this name: a superglobal is accepted inside isset(),
 * empty() or an is_*()/array_key_exists() check, right after an (int)/(float)/(bool) cast, or
 * as an argument (at any depth) of sanitize_*(), absint(), intval(), floatval(), boolval() or
 * wp_verify_nonce(). WPCS's separate "unslash first" rule is not checked.
 *
 * @package LMS_Realtime
 */

namespace WordPress\Sniffs\Security;

use PHP_CodeSniffer\Files\File;
use PHP_CodeSniffer\Sniffs\Sniff;
use PHP_CodeSniffer\Util\Tokens;

/**
 * WordPress.Security.ValidatedSanitizedInput.InputNotSanitized
 */
final class ValidatedSanitizedInputSniff implements Sniff
{
    private const CHECKS = ['isset', 'empty', 'is_scalar', 'is_array', 'is_string', 'is_numeric', 'array_key_exists'];
    private const SANITIZERS = ['absint', 'intval', 'floatval', 'boolval', 'wp_verify_nonce'];
    private const CASTS = [T_INT_CAST, T_DOUBLE_CAST, T_BOOL_CAST];
    private const INPUT = ['$_GET', '$_POST', '$_REQUEST', '$_COOKIE', '$_SERVER', '$_FILES'];

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
        if (!in_array($tokens[$stackPtr]['content'], self::INPUT, true)) {
            return;
        }
        $prev = $phpcsFile->findPrevious(Tokens::$emptyTokens, $stackPtr - 1, null, true);
        if ($prev !== false && in_array($tokens[$prev]['code'], self::CASTS, true)) {
            return;
        }
        $calls = self::enclosingCalls($phpcsFile, $stackPtr);
        if ($calls !== [] && in_array($calls[0], self::CHECKS, true)) {
            return;
        }
        foreach ($calls as $name) {
            if (strncmp($name, 'sanitize_', 9) === 0 || in_array($name, self::SANITIZERS, true)) {
                return;
            }
        }
        $phpcsFile->addError(
            '%s is read without a sanitising function (sanitize_*(), absint(), ...) around it',
            $stackPtr,
            'InputNotSanitized',
            [$tokens[$stackPtr]['content']]
        );
    }

    /**
     * The names (lower case) of the calls, isset() and empty() whose parentheses hold $ptr,
     * innermost first; '' for plain parentheses.
     *
     * @return string[]
     */
    private static function enclosingCalls(File $file, int $ptr): array
    {
        $tokens = $file->getTokens();
        $names = [];
        foreach (array_reverse(array_keys($tokens[$ptr]['nested_parenthesis'] ?? [])) as $open) {
            $before = $file->findPrevious(Tokens::$emptyTokens, $open - 1, null, true);
            $code = $before === false ? null : $tokens[$before]['code'];
            $isCall = $code === T_STRING || $code === T_ISSET || $code === T_EMPTY;
            $names[] = $isCall ? strtolower($tokens[$before]['content']) : '';
        }
        return $names;
    }
}
