/* bk_text_templates: wiki._text_templates in C (the inline templates kept as their text: convert, cvt,
 * formatnum, as of, lang, nowrap, ...), under the give-up contract of bert_core/corpus/native.py: the
 * same text as the Python function, or -1 where it is not sure to give it (then the Python runs).
 *
 * The same steps in the same order: the names found at every `{{` (`_TEXT_TEMPLATE_NAMES.findall`),
 * then each pattern of `_TEXT_TEMPLATES` whose names were found, over the whole text left by the one
 * before, tried at every `{{` as re.sub tries it, left to right, resuming after a match. So a rewrite
 * that makes a new `{{name` (`{{{{formatnum:}}lang|x}}`) is met by the later passes as in Python.
 *
 * The patterns are read as what they match, not run. Each match attempt is one forward scan:
 * - every `\s*` stands before or after a token that is not white space, so it takes the whole run;
 * - a greedy run (`-?[\d.,]+`, `\d{3,4}`, `[a-z]{2,3}`, `[a-z-]+`) must be whole, since a shorter one
 *   leaves one of its own characters where only white space, `|` or `-` may follow;
 * - a lazy group (`([^|{}=]+?)`, `([^{}|]*?)`, `(_TEXT)` = `(?:[^|{}=\[\]]|\[\[[^\[\]{}]*\]\])*?`)
 *   followed by `\s*(?:\|[^{}]*)?\}\}` or `\s*\}\}`: its units run to R, the first place no unit
 *   starts; ending the group before R leaves a unit there, which the tail takes only if it is white
 *   space up to R. So the match exists iff the tail matches at R, and the group is the units up to R
 *   without their trailing white space (or, for `+?` when all of it is white space before R, the last
 *   white space character, which backtracking the `\s*` before the group gives it);
 * - `(?:\|[^{}]*)?\}\}` needs the first brace after the `|` to be `}}`.
 * Every attempt stops at the next `{`: each pass is linear.
 *
 * Unicode, as `re` reads a str pattern: `\s` is Python's white space (matched exactly, multi-byte
 * too); `\d` is any decimal digit, so a non-ASCII character other than white space where a digit run
 * could go on gives up, unless it is in a block that holds no digit (maybe_digit); `re.I` matches
 * U+0130 and U+0131 to i, U+017F to s, U+212A to k: in the `[a-z]` runs they count as letters (exact),
 * and a name that matches only with one gives up (the pattern would rewrite it, but Python's findall
 * gives it a key that runs no pattern: rare, left to Python). The negated classes match every
 * non-ASCII character, which in UTF-8 is every byte >= 0x80.
 * Every replacement is shorter than its match, so the text only shortens: it is rewritten in place in
 * `out` (each write lands before what is still to be read). */
#include <string.h>

#include "py_space.h"

#define GIVE_UP (-1)
#define NO_MATCH (-2)

/* The ASCII letter `re.I` matches the non-ASCII character at p to (U+0130, U+0131 -> i, U+017F -> s,
 * U+212A -> k; its length in *len), or 0. */
static uc folded_letter(const uc *p, const uc *end, long *len) {
    *len = 2;
    if (p + 1 < end && p[0] == 0xc4 && (p[1] == 0xb0 || p[1] == 0xb1)) return 'i';
    if (p + 1 < end && p[0] == 0xc5 && p[1] == 0xbf) return 's';
    *len = 3;
    return p + 2 < end && p[0] == 0xe2 && p[1] == 0x84 && p[2] == 0xaa ? 'k' : 0;
}

static int is_letter(uc c) { return (uc)((c | 0x20) - 'a') < 26; }

static int is_digit(uc c) { return c >= '0' && c <= '9'; }

/* A non-ASCII character at t[i] that may be a decimal digit (`\d`: Unicode's Nd, from U+0660 on): one
 * outside the blocks that hold none (Latin to Arabic letters, U+0080-U+065F; punctuation, signs,
 * arrows and mathematical operators, U+2000-U+2BFF; CJK punctuation, U+3000-U+303F), so that the
 * minus sign, the degree sign or a fraction after a number does not make the C give up. */
static int maybe_digit(const uc *t, long n, long i) {
    if (i >= n || t[i] < 0x80 || space_len(t + i, t + n)) return 0;
    long cp = t[i] < 0xe0 && i + 1 < n ? (t[i] & 0x1f) << 6 | (t[i + 1] & 0x3f)
            : t[i] < 0xf0 && i + 2 < n ? (long)(t[i] & 0x0f) << 12 | (t[i + 1] & 0x3f) << 6 | (t[i + 2] & 0x3f)
            : 0x10000;  /* (four bytes: beyond the blocks above) */
    return !(cp < 0x660 || (cp >= 0x2000 && cp < 0x2c00) || (cp >= 0x3000 && cp < 0x3040));
}

/* `name` (lower case; letters and spaces) at t[i:], case-insensitively: the end of the match, NO_MATCH,
 * or GIVE_UP where it matches only with a folded letter standing for one of its letters. */
static long match_name(const uc *t, long n, long i, const char *name) {
    int folded = 0;
    long j = 0;
    for (; *name; name++) {
        if (i + j >= n) return NO_MATCH;
        uc c = t[i + j];
        if (c >= 0x80) {
            long len;
            if (folded_letter(t + i + j, t + n, &len) != (uc)*name) return NO_MATCH;
            folded = 1;
            j += len;
            continue;
        }
        if (*name == ' ' ? c != ' ' : (c | 0x20) != (uc)*name || !is_letter(c)) return NO_MATCH;
        j++;
    }
    return folded ? GIVE_UP : i + j;
}

/* The first of `names` (in order) at t[i:]: its end and its number in *k, NO_MATCH or GIVE_UP. */
static long first_name(const uc *t, long n, long i, const char *const *names, int count, int *k) {
    for (int m = 0; m < count; m++) {
        long e = match_name(t, n, i, names[m]);
        if (e == NO_MATCH) continue;
        *k = m;
        return e;
    }
    return NO_MATCH;
}

/* A run of re.I's [a-z] (with `-` too if `hyphen`) from i: its end; *count gets its length in
 * characters (a folded letter is one). */
static long letter_run(const uc *t, long n, long i, int hyphen, long *count) {
    long c = 0, l;
    for (;; c++) {
        if (i < n && (is_letter(t[i]) || (hyphen && t[i] == '-'))) {
            i++;
        } else if (i < n && t[i] >= 0x80 && folded_letter(t + i, t + n, &l)) {
            i += l;
        } else {
            break;
        }
    }
    *count = c;
    return i;
}

/* `\s*(?:\|[^{}]*)?\}\}` at i: its end or NO_MATCH. */
static long tail(const uc *t, long n, long i) {
    i = skip_spaces(t, n, i);
    if (i < n && t[i] == '|')
        for (i++; i < n && t[i] != '{' && t[i] != '}'; i++) {}
    return i + 1 < n && t[i] == '}' && t[i + 1] == '}' ? i + 2 : NO_MATCH;
}


/* The bytes that end a lazy group's single-character units (a set bit: the class excludes it). */
enum {
    CONVERT_END = 1,    /* [^|{}=] */
    FORMATNUM_END = 2,  /* [^{}|] */
    TEXT_END = 4,       /* [^|{}=\[\]] */
};

static const uc CLASS[256] = {
    ['|'] = CONVERT_END | FORMATNUM_END | TEXT_END, ['{'] = CONVERT_END | FORMATNUM_END | TEXT_END,
    ['}'] = CONVERT_END | FORMATNUM_END | TEXT_END, ['='] = CONVERT_END | TEXT_END, ['['] = TEXT_END,
    [']'] = TEXT_END,
};

/* The units of a lazy group from a: single characters outside the class `stop`, and plain links
 * `[[...]]` (`\[\[[^\[\]{}]*\]\]`) if `links`. Returns R, where no unit starts; *last gets the end of
 * the last unit that is not white space (a if none). Walked byte by byte: a byte of a non-ASCII
 * character is never an ASCII byte, nor the first byte of a white space character. */
static long units(const uc *t, long n, long a, int stop, int links, long *last) {
    long i = a, l;
    *last = a;
    while (i < n) {
        if (links && t[i] == '[') {
            if (i + 1 >= n || t[i + 1] != '[') break;
            long j = i + 2;
            while (j < n && t[j] != '[' && t[j] != ']' && t[j] != '{' && t[j] != '}') j++;
            if (j + 1 >= n || t[j] != ']' || t[j + 1] != ']') break;
            i = *last = j + 2;
        } else if (CLASS[t[i]] & stop) {
            break;
        } else if ((l = space_len(t + i, t + n)) > 0) {
            i += l;
        } else {
            i = *last = i + 1;
        }
    }
    return i;
}

/* `\s*\|\s*` at i: its end or NO_MATCH; *space gets the start of the last white space character after
 * the `|` (-1 if none): the one `\s*` gives back to a `+?` group that finds nothing after it. */
static long pipe(const uc *t, long n, long i, long *space) {
    long l;
    i = skip_spaces(t, n, i);
    if (i >= n || t[i] != '|') return NO_MATCH;
    *space = -1;
    for (i++; (l = space_len(t + i, t + n)) > 0; i += l) *space = i;
    return i;
}

/* `-?[\d.,]+` at i: its end, NO_MATCH or GIVE_UP (a non-ASCII character where the run could go on). */
static long number(const uc *t, long n, long i) {
    long j = i < n && t[i] == '-' ? i + 1 : i, s = j;
    while (j < n && (is_digit(t[j]) || t[j] == '.' || t[j] == ',')) j++;
    if (maybe_digit(t, n, j)) return GIVE_UP;
    return j > s ? j : NO_MATCH;
}

/* `}}` at i: its end or NO_MATCH. */
static long closing(const uc *t, long n, long i) {
    return i + 1 < n && t[i] == '}' && t[i + 1] == '}' ? i + 2 : NO_MATCH;
}

/* A match: its groups' spans (up to three). */
typedef struct {
    long g[3][2];
} Match;

#define CHECK(e) do { if ((e) < 0) return (e); } while (0)

static const char *const CONVERT[] = {"convert", "cvt"};

/* Patterns 0 and 1 at the `{{` at p: `\{\{\s*(?:convert|cvt)\s*\|\s*(-?[\d.,]+)\s*\|`, then if
 * `range` `\s*(?:-|–|to|and)\s*\|\s*(-?[\d.,]+)\s*\|`, then `\s*([^|{}=]+?)\s*(?:\|[^{}]*)?\}\}`.
 * The end of the match, NO_MATCH or GIVE_UP. */
static long convert(const uc *t, long n, long p, int range, Match *m) {
    int k, g;
    long space, i = first_name(t, n, skip_spaces(t, n, p + 2), CONVERT, 2, &k);
    CHECK(i);
    i = pipe(t, n, i, &space);
    CHECK(i);
    for (g = 0; g <= range; g++) {
        long e = number(t, n, i);
        CHECK(e);
        m->g[g][0] = i, m->g[g][1] = e;
        i = pipe(t, n, e, &space);
        CHECK(i);
        if (g < range) {
            if (i < n && t[i] == '-') {
                i++;
            } else if (i + 2 < n && t[i] == 0xe2 && t[i + 1] == 0x80 && t[i + 2] == 0x93) {
                i += 3;  /* – (U+2013) */
            } else if (i + 1 < n && (t[i] | 0x20) == 't' && (t[i + 1] | 0x20) == 'o') {
                i += 2;  /* (no letter folds to t, o, a, n or d) */
            } else if (i + 2 < n && (t[i] | 0x20) == 'a' && (t[i + 1] | 0x20) == 'n' && (t[i + 2] | 0x20) == 'd') {
                i += 3;
            } else {
                return NO_MATCH;
            }
            i = pipe(t, n, i, &space);
            CHECK(i);
        }
    }
    long last, r = units(t, n, i, CONVERT_END, 0, &last);
    if (r > i) {
        m->g[g][0] = i, m->g[g][1] = last;
    } else if (space >= 0) {
        m->g[g][0] = space, m->g[g][1] = i;
    } else {
        return NO_MATCH;
    }
    return tail(t, n, r);
}

/* Pattern 2: `\{\{\s*formatnum\s*:\s*([^{}|]*?)\s*\}\}`. */
static long formatnum(const uc *t, long n, long p, Match *m) {
    long last, i = match_name(t, n, skip_spaces(t, n, p + 2), "formatnum");
    CHECK(i);
    i = skip_spaces(t, n, i);
    if (i >= n || t[i] != ':') return NO_MATCH;
    i = skip_spaces(t, n, i + 1);
    long r = units(t, n, i, FORMATNUM_END, 0, &last);
    m->g[0][0] = i, m->g[0][1] = last;
    return closing(t, n, r);
}

/* Pattern 3: `\{\{\s*as of\s*\|\s*(\d{3,4})\s*(?:\|[^{}]*)?\}\}`. */
static long as_of(const uc *t, long n, long p, Match *m) {
    long space, i = match_name(t, n, skip_spaces(t, n, p + 2), "as of");
    CHECK(i);
    i = pipe(t, n, i, &space);
    CHECK(i);
    long j = i;
    while (j < n && j - i < 4 && is_digit(t[j])) j++;
    if (j - i < 4 && maybe_digit(t, n, j)) return GIVE_UP;
    if (j - i < 3) return NO_MATCH;
    m->g[0][0] = i, m->g[0][1] = j;
    return tail(t, n, j);
}

/* `(_TEXT)` from i (after a `\s*`), then `\s*(?:\|[^{}]*)?\}\}` if `bar`, else `\s*\}\}`. */
static long text_group(const uc *t, long n, long i, int bar, Match *m) {
    long last, r = units(t, n, i, TEXT_END, 1, &last);
    m->g[0][0] = i, m->g[0][1] = last;
    return bar ? tail(t, n, r) : closing(t, n, r);
}

/* Pattern 4: `\{\{\s*lang(?:\s*\|\s*|-)[a-z]{2,3}(?:-[a-z]{2,8})*\s*\|\s*(_TEXT)\s*(?:\|[^{}]*)?\}\}`. */
static long lang(const uc *t, long n, long p, Match *m) {
    long space, count, i = match_name(t, n, skip_spaces(t, n, p + 2), "lang");
    CHECK(i);
    if (i < n && t[i] == '-') {
        i++;
    } else {
        i = pipe(t, n, i, &space);
        CHECK(i);
    }
    i = letter_run(t, n, i, 0, &count);
    if (count < 2 || count > 3) return NO_MATCH;
    while (i < n && t[i] == '-') {
        i = letter_run(t, n, i + 1, 0, &count);
        if (count < 2 || count > 8) return NO_MATCH;
    }
    i = pipe(t, n, i, &space);
    CHECK(i);
    return text_group(t, n, i, 1, m);
}

/* Pattern 5's names, in its order (the last one is `transl\s*\|\s*[a-z-]+`). */
static const char *const TEXT_NAMES[] = {"nowrap", "nobr", "small", "smaller", "smallcaps", "sc", "sic",
                                         "not a typo", "em", "strong", "transl"};
#define N_TEXT_NAMES ((int)(sizeof TEXT_NAMES / sizeof TEXT_NAMES[0]))

/* Pattern 5: `\{\{\s*(?:nowrap|...|transl\s*\|\s*[a-z-]+)\s*\|\s*(_TEXT)\s*\}\}`. The alternatives are
 * tried in order, as `re` backtracks into them (`small` then `smallcaps`); no two can both match. */
static long text_template(const uc *t, long n, long p, Match *m) {
    long space, count, start = skip_spaces(t, n, p + 2);
    for (int k = 0; k < N_TEXT_NAMES; k++) {
        long i = match_name(t, n, start, TEXT_NAMES[k]);
        if (i == GIVE_UP) return GIVE_UP;
        if (i == NO_MATCH) continue;
        if (k == N_TEXT_NAMES - 1) {
            i = pipe(t, n, i, &space);
            if (i < 0) continue;
            i = letter_run(t, n, i, 1, &count);
            if (!count) continue;
        }
        i = pipe(t, n, i, &space);
        if (i < 0) continue;
        long e = text_group(t, n, i, 0, m);
        if (e >= 0) return e;
    }
    return NO_MATCH;
}

/* The names `_TEXT_TEMPLATE_NAMES` looks for, in its (sorted) order, and the passes each one enables
 * (a bit per pattern of _TEXT_TEMPLATES, as _TEXT_TEMPLATE_KEYS pairs them). */
static const char *const NAMES[] = {"as of", "convert", "cvt", "em", "formatnum", "lang", "nobr", "not a typo",
                                    "nowrap", "sc", "sic", "small", "strong", "transl"};
static const int PASSES[] = {8, 3, 3, 32, 4, 16, 32, 32, 32, 32, 32, 32, 32, 32};
#define N_NAMES ((int)(sizeof NAMES / sizeof NAMES[0]))
#define N_PASSES 6

/* The next `{{` at or after p, or -1. */
static long next_open(const uc *t, long n, long p) {
    while (p + 1 < n) {
        const uc *b = memchr(t + p, '{', (size_t)(n - 1 - p));
        if (!b) return -1;
        p = b - t;
        if (t[p + 1] == '{') return p;
        p++;
    }
    return -1;
}

/* Pattern `pass` tried at the `{{` at p: the end of the match, NO_MATCH or GIVE_UP. */
static long try_pass(const uc *t, long n, long p, int pass, Match *m) {
    switch (pass) {
        case 0: return convert(t, n, p, 1, m);
        case 1: return convert(t, n, p, 0, m);
        case 2: return formatnum(t, n, p, m);
        case 3: return as_of(t, n, p, m);
        case 4: return lang(t, n, p, m);
        default: return text_template(t, n, p, m);
    }
}

/* Appends src[0:len] at t[*w]: memmove, since it may overlap its source. */
static void put(uc *t, long *w, const uc *src, long len) {
    memmove(t + *w, src, (size_t)len);
    *w += len;
}

/* re.sub of pattern `pass` over t[0:n], in place: the new length or GIVE_UP. The replacement of a match
 * is shorter than it and written before its groups' places are read. */
static long substitute(uc *t, long n, int pass) {
    long w = 0, last = 0, p = 0;
    Match m;
    while ((p = next_open(t, n, p)) >= 0) {
        long e = try_pass(t, n, p, pass, &m);
        if (e == GIVE_UP) return GIVE_UP;
        if (e == NO_MATCH) {
            p++;
            continue;
        }
        put(t, &w, t + last, p - last);
        if (pass == 3) put(t, &w, (const uc *)"As of ", 6);
        put(t, &w, t + m.g[0][0], m.g[0][1] - m.g[0][0]);
        if (pass <= 1) {
            put(t, &w, (const uc *)(pass ? " " : "\xe2\x80\x93"), pass ? 1 : 3);  /* `\1 \2`, `\1–\2 \3` */
            put(t, &w, t + m.g[1][0], m.g[1][1] - m.g[1][0]);
            if (!pass) {
                put(t, &w, (const uc *)" ", 1);
                put(t, &w, t + m.g[2][0], m.g[2][1] - m.g[2][0]);
            }
        }
        last = p = e;
    }
    put(t, &w, t + last, n - last);
    return w;
}

long bk_text_templates(const char *in, long n, char *out, long cap) {
    if (n < 0 || cap < n) return -1;
    const uc *t = (const uc *)in;
    int passes = 0, k;
    for (long p = 0; (p = next_open(t, n, p)) >= 0; p++) {
        long e = first_name(t, n, skip_spaces(t, n, p + 2), NAMES, N_NAMES, &k);
        if (e == GIVE_UP) return -1;
        if (e >= 0) passes |= PASSES[k];
    }
    memcpy(out, in, (size_t)n);
    for (int pass = 0; pass < N_PASSES && n >= 0; pass++)
        if (passes & (1 << pass)) n = substitute((uc *)out, n, pass);
    return n < 0 ? -1 : n;
}
