<?php

/**
 * Everything a plugin puts in the global namespace carries one of its prefixes.
 *
 * A narrow stand-in for WPCS's sniff of this name: global functions, classes, interfaces,
 * traits and enums, constants from define() or a global const, variables assigned outside any
 * function or class, and the hook names of do_action()/apply_filters() when they are literal
 * strings. Files with a namespace are skipped (the namespace is the prefix).
 *
 * @package LMS_Realtime
 */

namespace WordPress\Sniffs\NamingConventions;

use PHP_CodeSniffer\Files\File;
use PHP_CodeSniffer\Sniffs\Sniff;
use PHP_CodeSniffer\Util\Tokens;

/**
 * WordPress.NamingConventions.PrefixAllGlobals
 */
final class PrefixAllGlobalsSniff implements Sniff
{
    /** @var string[] accepted prefixes, compared case-insensitively; set in the ruleset. */
    public $prefixes = [];

    private const HOOKS = ['do_action', 'do_action_ref_array', 'apply_filters', 'apply_filters_ref_array'];
    private const WP_GLOBALS = ['$this', '$wpdb', '$wp', '$wp_query', '$post', '$pagenow', '$wp_version'];

    /** @return array<int|string> */
    public function register()
    {
        return [T_FUNCTION, T_CLASS, T_INTERFACE, T_TRAIT, T_ENUM, T_CONST, T_STRING, T_VARIABLE];
    }

    /**
     * @param int $stackPtr the token.
     * @return void
     */
    public function process(File $phpcsFile, $stackPtr)
    {
        if ($phpcsFile->findPrevious(T_NAMESPACE, $stackPtr) !== false) {
            return;
        }
        $tokens = $phpcsFile->getTokens();
        $token = $tokens[$stackPtr];
        // Inside an if (a function_exists() guard) still counts as global; in a class or function not.
        $scopes = [T_FUNCTION, T_CLOSURE, T_CLASS, T_ANON_CLASS, T_TRAIT, T_INTERFACE, T_ENUM];
        $global = !$phpcsFile->hasCondition($stackPtr, $scopes);
        switch ($token['code']) {
            case T_FUNCTION:
            case T_CLASS:
            case T_INTERFACE:
            case T_TRAIT:
            case T_ENUM:
                if ($global) {
                    $name = (string) $phpcsFile->getDeclarationName($stackPtr);
                    $this->check($phpcsFile, $stackPtr, $name, 'NonPrefixedDeclaration');
                }
                return;
            case T_CONST:
                $name = $phpcsFile->findNext(T_STRING, $stackPtr + 1);
                if ($global && $name !== false) {
                    $this->check($phpcsFile, $name, $tokens[$name]['content'], 'NonPrefixedConstantFound');
                }
                return;
            case T_VARIABLE:
                $next = $phpcsFile->findNext(Tokens::$emptyTokens, $stackPtr + 1, null, true);
                $inParentheses = !empty($token['nested_parenthesis']);
                if (
                    $global && !$inParentheses && $next !== false && $tokens[$next]['code'] === T_EQUAL
                    && !in_array($token['content'], self::WP_GLOBALS, true)
                    && strncmp($token['content'], '$_', 2) !== 0
                ) {
                    $this->check($phpcsFile, $stackPtr, substr($token['content'], 1), 'NonPrefixedVariableFound');
                }
                return;
        }
        // T_STRING: define() and hook names.
        $fn = strtolower($token['content']);
        if ($fn !== 'define' && !in_array($fn, self::HOOKS, true)) {
            return;
        }
        $before = $phpcsFile->findPrevious(Tokens::$emptyTokens, $stackPtr - 1, null, true);
        $member = [T_OBJECT_OPERATOR, T_DOUBLE_COLON, T_FUNCTION];
        if ($before !== false && in_array($tokens[$before]['code'], $member, true)) {
            return;
        }
        $open = $phpcsFile->findNext(Tokens::$emptyTokens, $stackPtr + 1, null, true);
        if ($open === false || $tokens[$open]['code'] !== T_OPEN_PARENTHESIS) {
            return;
        }
        $arg = $phpcsFile->findNext(Tokens::$emptyTokens, $open + 1, null, true);
        if ($arg === false || $tokens[$arg]['code'] !== T_CONSTANT_ENCAPSED_STRING) {
            return;
        }
        $after = $phpcsFile->findNext(Tokens::$emptyTokens, $arg + 1, null, true);
        if ($after === false || !in_array($tokens[$after]['code'], [T_COMMA, T_CLOSE_PARENTHESIS], true)) {
            return; // Not a plain literal: a concatenation or an expression.
        }
        $code = $fn === 'define' ? 'NonPrefixedConstantFound' : 'NonPrefixedHooknameFound';
        $this->check($phpcsFile, $arg, trim($tokens[$arg]['content'], '\'"'), $code);
    }

    private function check(File $file, int $ptr, string $name, string $code): void
    {
        $lower = strtolower($name);
        foreach ($this->prefixes as $prefix) {
            $prefix = strtolower($prefix);
            if ($lower === $prefix || strncmp($lower, $prefix . '_', strlen($prefix) + 1) === 0) {
                return;
            }
        }
        $file->addError(
            '"%s" is global and carries none of the plugin prefixes (%s)',
            $ptr,
            $code,
            [$name, implode(', ', $this->prefixes)]
        );
    }
}
