/* The whole-removal cuts of bert_core/corpus/wiki.py in C, behind the give-up contract of
 * bert_core/corpus/native.py: each function gives exactly what its Python reading gives, or -1 where
 * it is not sure to (then the Python code runs). Python stays the authority; the tests compare the two.
 *
 *   bk_cut_blocks_and_flat_links    _FLAT_LINKS.sub("", _cut_blocks(text))
 *   bk_cut_quotes_templates_tables  cut_templates_and_tables(_drop_quotes(text))
 *
 * Both work on UTF-8 bytes. The regular expressions they stand for are read as what they match, not
 * run: the block cut as `<!--.*?(-->|\Z)|<(name)\b[^>]*?(/>|>.*?</name\s*>)` (case-insensitive; the
 * first closing of the same name after the tag's first `>`), the flat links as
 * `\[\[\s*(category|[a-z]{2,3}(-[a-z]{2,8})*)\s*:[^\[\]\n]*\]\]` (case-insensitive), whose
 * backtracking can only fail where its maximal runs fail, so one forward look decides each `[[`.
 * Python's `\s` is Unicode white space (matched here exactly); `re.I` also lets U+0130, U+0131, U+017F
 * and U+212A match ASCII letters (counted as letters in the flat links, a give-up in block names, where
 * Python's two block passes could read them differently); `\b` after a block name is given up on when
 * the next character is not ASCII (Unicode letters are word characters).
 * Every pass only shortens the text, so the output never exceeds n bytes (cap >= n + 64).
 */
#include <string.h>

#include "py_space.h"

#define GIVE_UP (-1)
#define NO_MATCH (-2)

/* Bytes of a non-ASCII character at p that `re.I` matches to an ASCII letter (U+0130, U+0131 ~ i,
 * U+017F ~ s, U+212A ~ k), or 0. */
static long folded_letter_len(const uc *p, const uc *end) {
    if (p + 1 < end && ((p[0] == 0xc4 && (p[1] == 0xb0 || p[1] == 0xb1)) || (p[0] == 0xc5 && p[1] == 0xbf)))
        return 2;
    return p + 2 < end && p[0] == 0xe2 && p[1] == 0x84 && p[2] == 0xaa ? 3 : 0;
}

static int is_letter(uc c) { return (uc)((c | 0x20) - 'a') < 26; }

static int is_ascii_word(uc c) { return is_letter(c) || (c >= '0' && c <= '9') || c == '_'; }

/* `name` (lower-case letters) at t[i:], case-insensitively: the end of the match, NO_MATCH, or GIVE_UP
 * where a folded letter (above) is met before a mismatch. */
static long match_name(const uc *t, long n, long i, const char *name, long len) {
    for (long j = 0; j < len; j++) {
        if (i + j >= n) return NO_MATCH;
        uc c = t[i + j];
        if (c >= 0x80) return folded_letter_len(t + i + j, t + n) ? GIVE_UP : NO_MATCH;
        if ((c | 0x20) != (uc)name[j] || !is_letter(c)) return NO_MATCH;
    }
    return i + len;
}

/* wiki._BLOCK_NAMES, in the same order (the regex alternation tries them in this order). */
static const char *const BLOCK_NAMES[] = {
    "ref", "references", "math", "chem", "ce", "gallery", "timeline", "score", "syntaxhighlight", "source",
    "imagemap", "graph", "mapframe", "maplink", "hiero", "templatedata", "inputbox", "categorytree"};
static const long NAME_LEN[] = {3, 10, 4, 4, 2, 7, 8, 5, 15, 6, 8, 5, 8, 7, 5, 12, 8, 12};
#define N_NAMES ((int)(sizeof BLOCK_NAMES / sizeof BLOCK_NAMES[0]))

/* `<(names)\b` with the `<` at t[i-1]: the end of the name (and its number in *k), NO_MATCH or GIVE_UP. */
static long open_name(const uc *t, long n, long i, int *k) {
    for (int m = 0; m < N_NAMES; m++) {
        long e = match_name(t, n, i, BLOCK_NAMES[m], NAME_LEN[m]);
        if (e == GIVE_UP) return GIVE_UP;
        if (e == NO_MATCH) continue;
        if (e < n && t[e] >= 0x80) return GIVE_UP;  /* \b before a non-ASCII character: a Unicode question */
        if (e < n && is_ascii_word(t[e])) continue;
        *k = m;
        return e;
    }
    return NO_MATCH;
}

/* The first `</name\s*>` of block name k starting at or after q: its start (its end in *end),
 * NO_MATCH or GIVE_UP. */
static long find_closing(const uc *t, long n, long q, int k, long *end) {
    const char *name = BLOCK_NAMES[k];
    long len = NAME_LEN[k];
    while (q < n) {
        const uc *lt = memchr(t + q, '<', (size_t)(n - q));
        if (!lt) return NO_MATCH;
        long s = lt - t;
        if (s + 1 < n && t[s + 1] == '/') {
            long e = match_name(t, n, s + 2, name, len);
            if (e == GIVE_UP) return GIVE_UP;
            if (e != NO_MATCH) {
                e = skip_spaces(t, n, e);
                if (e < n && t[e] == '>') {
                    *end = e + 1;
                    return s;
                }
            }
        }
        q = s + 1;
    }
    return NO_MATCH;
}

/* The first "-->" at or after i, or -1. */
static long find_comment_end(const uc *t, long n, long i) {
    while (i + 2 < n) {
        const uc *d = memchr(t + i, '-', (size_t)(n - 2 - i));
        if (!d) return -1;
        long p = d - t;
        if (t[p + 1] == '-' && t[p + 2] == '>') return p;
        i = p + 1;
    }
    return -1;
}

/* wiki._cut_blocks: comments and never-prose blocks out, t -> out; the output length or GIVE_UP.
 * Like wiki._cut_blocks_exactly, the next `>` and each name's next closing are remembered: the
 * queries only move forward, so unclosed tags cost one scan, not one per tag (linear time). */
static long cut_blocks(const uc *t, long n, uc *out) {
    long from[N_NAMES], at[N_NAMES], at_end[N_NAMES];
    for (int k = 0; k < N_NAMES; k++) from[k] = -1;
    long w = 0, last = 0, p = 0, gt = -1;
    while (p < n) {
        const uc *lt = memchr(t + p, '<', (size_t)(n - p));
        if (!lt) break;
        long s = lt - t, end;
        if (s + 3 < n && t[s + 1] == '!' && t[s + 2] == '-' && t[s + 3] == '-') {
            long c = find_comment_end(t, n, s + 4);
            end = c < 0 ? n : c + 3;
        } else {
            int k = 0;
            long e = open_name(t, n, s + 1, &k);
            if (e == GIVE_UP) return GIVE_UP;
            if (e == NO_MATCH) {
                p = s + 1;
                continue;
            }
            if (gt < e) {
                const uc *g = memchr(t + e, '>', (size_t)(n - e));
                gt = g ? g - t : n;
            }
            if (gt == n) {  /* no `>`: no tag */
                p = e;
                continue;
            }
            if (t[gt - 1] == '/' && gt > e) {
                end = gt + 1;  /* self-closing */
            } else {
                if (from[k] < 0 || (at[k] >= 0 && at[k] < gt + 1)) {
                    from[k] = gt + 1;
                    at[k] = find_closing(t, n, gt + 1, k, &at_end[k]);
                    if (at[k] == GIVE_UP) return GIVE_UP;
                    if (at[k] == NO_MATCH) at[k] = -1;
                }
                if (at[k] < 0) {  /* never closed: no block */
                    p = e;
                    continue;
                }
                end = at_end[k];
            }
        }
        memcpy(out + w, t + last, (size_t)(s - last));
        w += s - last;
        last = p = end;
    }
    memcpy(out + w, t + last, (size_t)(n - last));
    return w + n - last;
}

/* A run of [a-z] under re.I from i (ASCII letters and the four folded ones): its end; *count gets
 * its length in characters. */
static long letter_run(const uc *t, long n, long i, long *count) {
    long c = 0, l;
    for (;;) {
        if (i < n && is_letter(t[i])) {
            i++;
        } else if (i < n && t[i] >= 0x80 && (l = folded_letter_len(t + i, t + n)) > 0) {
            i += l;
        } else {
            break;
        }
        c++;
    }
    *count = c;
    return i;
}

/* `:[^\[\]\n]*\]\]` from the `:` at t[i-1]: the match's end or NO_MATCH. */
static long flat_link_tail(const uc *t, long n, long i) {
    while (i < n && t[i] != '[' && t[i] != ']' && t[i] != '\n') i++;
    return i + 1 < n && t[i] == ']' && t[i + 1] == ']' ? i + 2 : NO_MATCH;
}

/* wiki._FLAT_LINKS matched at the `[[` at t[p]: the end of the match, NO_MATCH or GIVE_UP. */
static long flat_link(const uc *t, long n, long p) {
    long i = skip_spaces(t, n, p + 2), j, count;
    /* no folded letter matches a letter of "category" (none is i, k or s): ASCII only */
    long e = n - i >= 8 ? i + 8 : NO_MATCH;
    for (long k = 0; e != NO_MATCH && k < 8; k++)
        if ((t[i + k] | 0x20) != (uc)"category"[k] || !is_letter(t[i + k])) e = NO_MATCH;
    if (e != NO_MATCH) {
        j = skip_spaces(t, n, e);
        if (j < n && t[j] == ':') {
            e = flat_link_tail(t, n, j + 1);
            if (e != NO_MATCH) return e;
        }
    }
    /* [a-z]{2,3}(-[a-z]{2,8})*: a shorter run than the whole one leaves a letter next, which nothing
     * after it matches, so each run must be whole and of an allowed length */
    j = letter_run(t, n, i, &count);
    if (count < 2 || count > 3) return NO_MATCH;
    while (j < n && t[j] == '-') {
        long k = letter_run(t, n, j + 1, &count);
        if (count < 2 || count > 8) return NO_MATCH;
        j = k;
    }
    j = skip_spaces(t, n, j);
    if (j < n && t[j] == ':') return flat_link_tail(t, n, j + 1);
    return NO_MATCH;
}

/* _FLAT_LINKS.sub("", ...) in place on t[0:n]: the new length or GIVE_UP. */
static long cut_flat_links(uc *t, long n) {
    long w = 0, last = 0, p = 0;
    while (p + 1 < n) {
        uc *b = memchr(t + p, '[', (size_t)(n - 1 - p));
        if (!b) break;
        long s = b - t;
        if (t[s + 1] != '[') {
            p = s + 1;
            continue;
        }
        long e = flat_link(t, n, s);
        if (e == GIVE_UP) return GIVE_UP;
        if (e == NO_MATCH) {
            p = s + 1;
            continue;
        }
        memmove(t + w, t + last, (size_t)(s - last));
        w += s - last;
        last = p = e;
    }
    memmove(t + w, t + last, (size_t)(n - last));
    return w + n - last;
}

long bk_cut_blocks_and_flat_links(const char *in, long n, char *out, long cap) {
    if (n < 0 || cap < n) return -1;
    long m = cut_blocks((const uc *)in, n, (uc *)out);
    return m < 0 ? -1 : cut_flat_links((uc *)out, m);
}

/* wiki._drop_quotes, in -> out: a run of n >= 2 quotes leaves one if n % 5 is 1 or 4. */
static long drop_quotes(const uc *t, long n, uc *out) {
    long w = 0, i = 0;
    while (i < n) {
        const uc *q = memchr(t + i, '\'', (size_t)(n - i));
        long j = q ? q - t : n;
        memcpy(out + w, t + i, (size_t)(j - i));
        w += j - i;
        if (j == n) break;
        for (i = j; i < n && t[i] == '\''; i++) {}
        long run = i - j;
        if (run == 1 || run % 5 == 1 || run % 5 == 4) out[w++] = '\'';
    }
    return w;
}

/* The first byte c at or after i, or n. */
static long next_byte(const uc *t, long n, long i, int c) {
    const uc *p = memchr(t + i, c, (size_t)(n - i));
    return p ? p - t : n;
}

/* wiki._cut_templates in place: outermost balanced {{...}} out (an unclosed one to the end, a `}}`
 * without its opening kept). Its two splits are one left-to-right scan: the marks share no byte. */
static long cut_templates(uc *t, long n) {
    long w = 0, i = 0, depth = 0, open = -1, close = -1;
    for (;;) {
        if (open < i) open = next_byte(t, n, i, '{');
        if (close < i) close = next_byte(t, n, i, '}');
        long s = open < close ? open : close;
        if (!depth) {
            memmove(t + w, t + i, (size_t)(s - i));
            w += s - i;
        }
        if (s == n) break;
        i = s;
        if (i + 1 < n && t[i + 1] == t[i]) {  /* a mark */
            if (t[i] == '{') {
                depth++;
            } else if (depth) {
                depth--;
            } else {
                t[w++] = '}';  /* a closing without its opening: text */
                t[w++] = '}';
            }
            i += 2;
        } else {
            if (!depth) t[w++] = t[i];
            i++;
        }
    }
    return w;
}

/* wiki._cut_tables in place: from a line whose first mark (after spaces, tabs, colons) is `{|` to the
 * line of its `|}`, outermost balanced; the line break before a mark stays with the text before it
 * (written or not with that text). A line break before the text stands for the one Python adds and
 * strips. */
static long cut_tables(uc *t, long n) {
    long w = 0, i = 0, depth = 0;
    for (;;) {  /* at the start of a line */
        long j = i;
        while (j < n && (t[j] == ' ' || t[j] == '\t' || t[j] == ':')) j++;
        if (j + 1 < n && ((t[j] == '{' && t[j + 1] == '|') || (t[j] == '|' && t[j + 1] == '}'))) {
            if (t[j] == '{') {
                depth++;
            } else if (depth) {
                depth--;
            } else {
                memmove(t + w, t + i, (size_t)(j + 2 - i));  /* a closing without its opening: text */
                w += j + 2 - i;
            }
            i = j + 2;
        }
        long e = next_byte(t, n, i, '\n');
        e += e < n;  /* the line's end, its break included */
        if (!depth) {
            memmove(t + w, t + i, (size_t)(e - i));
            w += e - i;
        }
        if (e == n) break;  /* (a last empty line holds nothing) */
        i = e;
    }
    return w;
}

long bk_cut_quotes_templates_tables(const char *in, long n, char *out, long cap) {
    if (n < 0 || cap < n) return -1;
    long m = drop_quotes((const uc *)in, n, (uc *)out);
    m = cut_templates((uc *)out, m);
    return cut_tables((uc *)out, m);
}
