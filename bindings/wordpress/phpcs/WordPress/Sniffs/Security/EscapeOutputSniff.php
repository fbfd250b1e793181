<?php

/**
 * Everything echoed, printed or printf()ed is a literal or goes through an escaping function.
 *
 * A narrow stand-in for WPCS's sniff of this name. The output expression is cut at top-level
 * ".", ",", "??" and the branches of "?:" (the condition is not output); each piece must be a
 * literal (string without interpolation, number, true/false/null), a constant, an (int),
 * (float) or (bool) cast, a parenthesised expression that passes the same test, or one call
 * to an escaping function listed below. printf()'s arguments, format included, are pieces.
 *
 * @package LMS_Realtime
 */

namespace WordPress\Sniffs\Security;

use PHP_CodeSniffer\Files\File;
use PHP_CodeSniffer\Sniffs\Sniff;
use PHP_CodeSniffer\Util\Tokens;

/**
 * WordPress.Security.EscapeOutput.OutputNotEscaped
 */
final class EscapeOutputSniff implements Sniff
{
    /** @var string[] functions whose result is safe to print (lower case). */
    private const ESCAPERS = [
        'esc_html', 'esc_attr', 'esc_url', 'esc_textarea', 'esc_js', 'esc_xml',
        'esc_html__', 'esc_attr__', 'esc_html_x', 'esc_attr_x',
        'wp_json_encode', 'wp_kses', 'wp_kses_post', 'wp_kses_data',
        'absint', 'intval', 'floatval', 'count', 'number_format_i18n', 'tag_escape',
        'checked', 'selected', 'disabled', 'wp_readonly', 'get_submit_button',
    ];
    private const LITERALS = [
        T_CONSTANT_ENCAPSED_STRING, T_LNUMBER, T_DNUMBER, T_TRUE, T_FALSE, T_NULL,
        T_LINE, T_FILE, T_DIR, T_CLASS_C, T_FUNC_C, T_METHOD_C,
    ];
    private const CASTS = [T_INT_CAST, T_DOUBLE_CAST, T_BOOL_CAST];
    private const CUTS = [T_STRING_CONCAT, T_COMMA, T_COALESCE, T_INLINE_ELSE];

    /** @return array<int|string> */
    public function register()
    {
        return [T_ECHO, T_PRINT, T_OPEN_TAG_WITH_ECHO, T_STRING];
    }

    /**
     * @param int $stackPtr echo, print, <?= or a function name.
     * @return void
     */
    public function process(File $phpcsFile, $stackPtr)
    {
        $tokens = $phpcsFile->getTokens();
        if ($tokens[$stackPtr]['code'] !== T_STRING) {
            $end = $phpcsFile->findEndOfStatement($stackPtr + 1);
            if (in_array($tokens[$end]['code'], [T_SEMICOLON, T_CLOSE_TAG], true)) {
                $end--;
            }
            $this->checkPieces($phpcsFile, $stackPtr + 1, $end);
            return;
        }
        $name = strtolower($tokens[$stackPtr]['content']);
        if ($name !== 'printf' && $name !== 'vprintf') {
            return;
        }
        $open = $phpcsFile->findNext(Tokens::$emptyTokens, $stackPtr + 1, null, true);
        $before = $phpcsFile->findPrevious(Tokens::$emptyTokens, $stackPtr - 1, null, true);
        $member = [T_OBJECT_OPERATOR, T_NULLSAFE_OBJECT_OPERATOR, T_DOUBLE_COLON, T_FUNCTION, T_NEW];
        if (
            $open === false || $tokens[$open]['code'] !== T_OPEN_PARENTHESIS
            || ($before !== false && in_array($tokens[$before]['code'], $member, true))
        ) {
            return;
        }
        // The format too: a literal, or a translation through esc_html__() and the like.
        $this->checkPieces($phpcsFile, $open + 1, $tokens[$open]['parenthesis_closer'] - 1);
    }

    /** Checks every output piece between $start and $end (inclusive). */
    private function checkPieces(File $file, int $start, int $end): void
    {
        $tokens = $file->getTokens();
        $empty = Tokens::$emptyTokens;
        $piece = [];
        for ($i = $start; $i <= $end; $i++) {
            $code = $tokens[$i]['code'];
            if (isset($empty[$code])) {
                continue;
            }
            if ($code === T_INLINE_THEN) {
                $piece = [];
                continue;
            }
            if (in_array($code, self::CUTS, true)) {
                $this->checkPiece($file, $piece);
                $piece = [];
                continue;
            }
            $piece[] = $i;
            // Jump over brackets: what is inside belongs to this piece.
            $closer = $tokens[$i]['parenthesis_closer'] ?? ($tokens[$i]['bracket_closer'] ?? null);
            if ($closer !== null && $closer > $i) {
                for ($j = $i + 1; $j <= $closer; $j++) {
                    if (!isset($empty[$tokens[$j]['code']])) {
                        $piece[] = $j;
                    }
                }
                $i = $closer;
            }
        }
        $this->checkPiece($file, $piece);
    }

    /** @param int[] $piece non-empty tokens of one output piece */
    private function checkPiece(File $file, array $piece): void
    {
        if ($piece === []) {
            return;
        }
        $tokens = $file->getTokens();
        $first = $piece[0];
        $last = $piece[count($piece) - 1];
        $code = $tokens[$first]['code'];
        if (count($piece) === 1 && in_array($code, self::LITERALS, true)) {
            return;
        }
        if (in_array($code, self::CASTS, true)) {
            return;
        }
        if ($code === T_OPEN_PARENTHESIS && $tokens[$first]['parenthesis_closer'] === $last) {
            $this->checkPieces($file, $first + 1, $last - 1);
            return;
        }
        if ($code === T_STRING || $code === T_NS_SEPARATOR) {
            $names = [];
            $k = 0;
            while (isset($piece[$k]) && in_array($tokens[$piece[$k]]['code'], [T_STRING, T_NS_SEPARATOR], true)) {
                $names[] = $tokens[$piece[$k]]['content'];
                $k++;
            }
            $name = strtolower(ltrim(implode('', $names), '\\'));
            $next = $piece[$k] ?? null;
            if ($next === null) {
                return; // A constant.
            }
            if (
                $tokens[$next]['code'] === T_DOUBLE_COLON && count($piece) === $k + 2
                && $tokens[$piece[$k + 1]]['code'] === T_STRING
            ) {
                return; // A class constant.
            }
            if (
                $tokens[$next]['code'] === T_OPEN_PARENTHESIS && $tokens[$next]['parenthesis_closer'] === $last
                && in_array($name, self::ESCAPERS, true)
            ) {
                return;
            }
        }
        $shown = $file->getTokensAsString($first, min($last - $first + 1, 12));
        $file->addError(
            'Output must be escaped (esc_html(), esc_attr(), esc_url(), wp_json_encode(), ...); found "%s"',
            $first,
            'OutputNotEscaped',
            [trim(preg_replace('/\s+/', ' ', $shown))]
        );
    }
}
