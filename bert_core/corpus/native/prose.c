/* wiki.prose_paragraphs (with _tidy) in C: the paragraphs of an article's plain text, joined by "\n".

   The Python function is the authority; this one gives exactly its result or gives up (-1). What the
   Python code decides by Unicode is reproduced here by the fixed set of Python's white space (str.split,
   str.strip, str.isspace and re's \s agree on it): \t \n \v \f \r \x1c-\x1f space U+0085 U+00A0 U+1680
   U+2000-U+200A U+2028 U+2029 U+202F U+205F U+3000. str.isprintable() never decides the result: a line
   with a tab is out either way, and every other line becomes " ".join(line.split()), which the
   printable shortcut only skips computing. The one other Unicode decision is a heading title's
   str.lower() against the end sections (ASCII letters and spaces): a title holding a character that
   lowers to a non-ASCII one (TITLE_SAFE, checked against Python by the tests) is no end section; a title
   with any other non-ASCII character (U+212A Kelvin lowers to "k") makes the function give up. So does
   text that is not valid UTF-8 (Python gives none; lone surrogates come as invalid bytes). */

#include <stdint.h>
#include <string.h>

/* The length of the white space character at p (< end), or 0. */
static int ws_len(const unsigned char *p, const unsigned char *end) {
    unsigned char c = p[0];
    if (c < 0x80) return (c == ' ' || (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x1f)) ? 1 : 0;
    if (c == 0xC2) return (p + 1 < end && (p[1] == 0x85 || p[1] == 0xA0)) ? 2 : 0;
    if (p + 2 >= end) return 0;
    if (c == 0xE1) return (p[1] == 0x9A && p[2] == 0x80) ? 3 : 0;
    if (c == 0xE2) {
        if (p[1] == 0x80) return (p[2] <= 0x8A || p[2] == 0xA8 || p[2] == 0xA9 || p[2] == 0xAF) ? 3 : 0;
        return (p[1] == 0x81 && p[2] == 0x9F) ? 3 : 0;
    }
    if (c == 0xE3) return (p[1] == 0x80 && p[2] == 0x80) ? 3 : 0;
    return 0;
}

/* p past the white space starting there. */
static const unsigned char *skip_ws(const unsigned char *p, const unsigned char *end) {
    int k;
    while (p < end && (k = ws_len(p, end)) > 0) p += k;
    return p;
}

/* The end of [s, e) with its trailing white space removed (a trailing character is found by stepping
   back over UTF-8 continuation bytes). */
static const unsigned char *rstrip_ws(const unsigned char *s, const unsigned char *e) {
    while (e > s) {
        const unsigned char *c = e - 1;
        while (c > s && (*c & 0xC0) == 0x80) c--;
        if (ws_len(c, e) != e - c) break;
        e = c;
    }
    return e;
}

/* Whether in[0, n) is valid UTF-8 (no overlong forms, surrogates or code points past U+10FFFF). */
static int valid_utf8(const unsigned char *p, long n) {
    const unsigned char *end = p + n;
    while (p < end) {
        unsigned char c = *p;
        if (c < 0x80) {
            uint64_t word;  /* eight ASCII bytes at a time where there are eight */
            while (end - p >= 8 && (memcpy(&word, p, 8), (word & 0x8080808080808080ull) == 0)) p += 8;
            while (p < end && *p < 0x80) p++;
            continue;
        }
        long k;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) k = 1;
        else if (c >= 0xE0 && c <= 0xEF) { k = 2; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
        else if (c >= 0xF0 && c <= 0xF4) { k = 3; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
        else return 0;
        if (end - p <= k || p[1] < lo || p[1] > hi) return 0;
        for (long i = 2; i <= k; i++)
            if ((p[i] & 0xC0) != 0x80) return 0;
        p += k + 1;
    }
    return 1;
}

/* The code point at p (valid UTF-8) and its length in *len. */
static long decode(const unsigned char *p, int *len) {
    unsigned char c = p[0];
    if (c < 0x80) { *len = 1; return c; }
    if (c < 0xE0) { *len = 2; return ((long)(c & 0x1F) << 6) | (p[1] & 0x3F); }
    if (c < 0xF0) { *len = 3; return ((long)(c & 0x0F) << 12) | ((long)(p[1] & 0x3F) << 6) | (p[2] & 0x3F); }
    *len = 4;
    return ((long)(c & 0x07) << 18) | ((long)(p[1] & 0x3F) << 12) | ((long)(p[2] & 0x3F) << 6) | (p[3] & 0x3F);
}

/* Code point ranges whose every character lowers (str.lower) to a string holding a non-ASCII character:
   one of them in a heading title makes title.lower() no end section. Letterlike symbols (U+2100-U+214F,
   with the Kelvin sign) are left out. tests/test_corpus_native_prose.py checks every code point here. */
static const long TITLE_SAFE[][2] = {
    {0x0080, 0x02FF}, {0x0370, 0x052F}, {0x0590, 0x06FF}, {0x0900, 0x0DFF}, {0x1E00, 0x1FFF},
    {0x2000, 0x20FF}, {0x2190, 0x2BFF}, {0x3000, 0x9FFF}, {0xAC00, 0xD7A3},
};

static int title_safe(long cp) {
    for (size_t i = 0; i < sizeof TITLE_SAFE / sizeof TITLE_SAFE[0]; i++)
        if (cp >= TITLE_SAFE[i][0] && cp <= TITLE_SAFE[i][1]) return 1;
    return 0;
}

static const char *const END_SECTIONS[] = {
    "references", "external links", "see also", "further reading", "notes", "bibliography", "sources",
    "citations", "footnotes", "notes and references", "works cited", "references and notes",
    "external link", "reference", "literature", "selected bibliography", "discography", "filmography",
};

/* Whether title [s, e) (already stripped) lowered is an end section: 1 or 0, or -1 to give up. */
static int end_section(const unsigned char *s, const unsigned char *e) {
    long n = e - s;
    int ascii = 1;
    for (const unsigned char *p = s; p < e; p++)
        if (*p >= 0x80) { ascii = 0; break; }
    if (!ascii) {
        for (const unsigned char *p = s; p < e;) {
            int len;
            long cp = decode(p, &len);
            if (cp >= 0x80 && title_safe(cp)) return 0;
            p += len;
        }
        return -1;
    }
    if (n > 24) return 0;
    char low[24];
    for (long i = 0; i < n; i++) low[i] = (s[i] >= 'A' && s[i] <= 'Z') ? (char)(s[i] + 32) : (char)s[i];
    for (size_t i = 0; i < sizeof END_SECTIONS / sizeof END_SECTIONS[0]; i++)
        if ((long)strlen(END_SECTIONS[i]) == n && memcmp(END_SECTIONS[i], low, (size_t)n) == 0) return 1;
    return 0;
}

/* _HEADING = ^\s*(={1,6})\s*(.*?)\s*\1\s*$ on line [s, e): 1 with the level and the stripped title
   [*ts, *te), or 0. The closing run must end at the last non-space character q, so level k matches iff
   the line's '=' run at p and the run before q are both at least k long without overlapping (2k <= q-p);
   the greedy group tries k from min(run, 6) down. The title is what lies between, stripped. */
static int heading(const unsigned char *s, const unsigned char *e, int *level, const unsigned char **ts,
                   const unsigned char **te) {
    const unsigned char *p = skip_ws(s, e);
    if (p == e || *p != '=') return 0;
    const unsigned char *q = rstrip_ws(p, e);
    long run = 0, tail = 0;
    while (p + run < q && p[run] == '=' && run < 6) run++;
    while (q - tail > p && q[-1 - tail] == '=' && tail < 6) tail++;
    for (long k = run; k >= 1; k--) {
        if (tail >= k && 2 * k <= q - p) {
            const unsigned char *a = skip_ws(p + k, q - k), *b = rstrip_ws(a, q - k);
            *level = (int)k, *ts = a, *te = b;
            return 1;
        }
    }
    return 0;
}

/* _NOT_PROSE_START: ("*", "#", ":", ";", "|", "!", "{", "}", "[[", "__"). */
static int not_prose_start(const unsigned char *s, long n) {
    if (n == 0) return 0;
    switch (s[0]) {
    case '*': case '#': case ':': case ';': case '|': case '!': case '{': case '}': return 1;
    case '[': case '_': return n >= 2 && s[1] == s[0];
    default: return 0;
    }
}

static int sep(unsigned char c) { return c == ',' || c == ';' || c == ':'; }
static int mark(unsigned char c) { return sep(c) || c == '.' || c == '!' || c == '?'; }
static int lead_junk(unsigned char c) { return sep(c) || c == '.' || c == ')' || c == ' '; }

/* " ".join(b.split()) in place, for text whose only white space is the ASCII space; the new length. */
static long collapse_spaces(unsigned char *b, long n) {
    long o = 0;
    for (long i = 0; i < n;) {
        if (b[i] == ' ') { i++; continue; }
        if (o > 0) b[o++] = ' ';
        while (i < n && b[i] != ' ') b[o++] = b[i++];
    }
    return o;
}

/* _tidy in place on collapsed text (single ASCII spaces, none at the edges, no other white space, so
   each \s* is a run of spaces taken greedily: backtracking finds no other match). The new length. */
static long tidy(unsigned char *b, long n) {
    long i, o, j;
    /* _EMPTY_BRACKETS.sub("", .): \(\s*[,;:]?\s*\) | \[\s*\], then " ".join(.split()) */
    for (i = 0, o = 0; i < n;) {
        j = i + 1;
        if (b[i] == '(') {
            while (j < n && b[j] == ' ') j++;
            if (j < n && sep(b[j])) j++;
            while (j < n && b[j] == ' ') j++;
            if (j < n && b[j] == ')') { i = j + 1; continue; }
        } else if (b[i] == '[') {
            while (j < n && b[j] == ' ') j++;
            if (j < n && b[j] == ']') { i = j + 1; continue; }
        }
        b[o++] = b[i++];
    }
    n = collapse_spaces(b, o);
    /* _BRACKET_LEAD.sub("(", .): \(\s*[,;:]\s* */
    for (i = 0, o = 0; i < n;) {
        if (b[i] == '(') {
            j = i + 1;
            while (j < n && b[j] == ' ') j++;
            if (j < n && sep(b[j])) {
                j++;
                while (j < n && b[j] == ' ') j++;
                b[o++] = '(';
                i = j;
                continue;
            }
        }
        b[o++] = b[i++];
    }
    n = o;
    /* _BRACKET_TAIL.sub(")", .): \s*[,;:]\s*\), then " ".join(.split()) */
    for (i = 0, o = 0; i < n;) {
        j = i;
        while (j < n && b[j] == ' ') j++;
        if (j < n && sep(b[j])) {
            j++;
            while (j < n && b[j] == ' ') j++;
            if (j < n && b[j] == ')') { b[o++] = ')'; i = j + 1; continue; }
        }
        b[o++] = b[i++];
    }
    n = collapse_spaces(b, o);
    /* for mark in ",.;:!?": replace(" " + mark, mark): each space right before a mark goes (a pass
       never makes a new pair for a later mark: the character after a removed space stays) */
    for (i = 0, o = 0; i < n; i++) {
        if (b[i] == ' ' && i + 1 < n && mark(b[i + 1])) continue;
        b[o++] = b[i];
    }
    n = o;
    /* .lstrip(",;:.) ") */
    for (i = 0; i < n && lead_junk(b[i]); i++) {}
    if (i > 0) memmove(b, b + i, (size_t)(n - i));
    return n - i;
}

/* Whether [p, e) holds two spaces in a row, eight bytes at a time (a word's space bytes are the zero
   bytes of word ^ 0x20...; the test's borrow can flag a byte after a space: more "yes", never a wrong
   "no"; "yes" only sends the line to the byte-by-byte copy). Where no two spaces meet, a copied run of
   bytes and single spaces needs no collapsing, only a space before other white space or at the end
   dropped. */
static int double_space(const unsigned char *p, const unsigned char *e) {
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    for (; e - p >= 8; p += 8) {
        uint64_t x;
        memcpy(&x, p, 8);
        x ^= 0x20 * ones;
        uint64_t zero = (x - ones) & ~x & highs;  /* (two neighbours in either byte order) */
        if ((zero & (zero << 8)) || (p[7] == ' ' && e - p > 8 && p[8] == ' ')) return 1;
    }
    for (; e - p >= 2; p++)
        if (p[0] == ' ' && p[1] == ' ') return 1;
    return 0;
}

/* Byte classes for the copying loop: 1 = white space or the first byte of a multi-byte white space
   character (ws_len decides), 2 = a character after which _tidy may find something to do (see
   tidy_needed), 0 = copied as it is (UTF-8 continuation bytes are never 1 or 2). RUN_STOP is CLASS
   with the space a 0: what ends a run copied whole where the line has no double space. */
#define STOPS_BUT_SPACE                                                                                  \
    [9] = 1, [10] = 1, [11] = 1, [12] = 1, [13] = 1, [0x1c] = 1, [0x1d] = 1, [0x1e] = 1, [0x1f] = 1,       \
    [0xC2] = 1, [0xE1] = 1, [0xE2] = 1, [0xE3] = 1,                                                      \
    [','] = 2, ['.'] = 2, [';'] = 2, [':'] = 2, ['!'] = 2, ['?'] = 2, [')'] = 2, [']'] = 2
static const unsigned char CLASS[256] = {STOPS_BUT_SPACE, [' '] = 1};
static const unsigned char RUN_STOP[256] = {STOPS_BUT_SPACE};

/* Whether _tidy can change collapsed text b[0, w) at its last character c = b[w-1], looking back only:
   each of its patterns ends at such a character. (\s is at most one space in collapsed text.)
   _EMPTY_BRACKETS and _BRACKET_TAIL end at ')' after '(' or a separator, or at ']' after '['
   (a space between or not); _BRACKET_LEAD at a separator after '(' (the same); _SPACED_PUNCT at a
   mark after a space. (The .lstrip is checked on the first character.) */
static int tidy_needed(const unsigned char *b, long w) {
    unsigned char c = b[w - 1];
    if (w < 2) return 0;
    unsigned char before = b[w - 2];
    if (before == ' ') {
        if (c != ')' && c != ']') return 1;  /* a mark after a space */
        if (w < 3) return 0;
        before = b[w - 3];
    }
    if (c == ')') return before == '(' || sep(before);
    if (c == ']') return before == '[';
    return sep(c) && before == '(';
}

long bk_prose_paragraphs(const char *in_, long n, char *out_, long cap) {
    const unsigned char *in = (const unsigned char *)in_, *end = in + n;
    unsigned char *out = (unsigned char *)out_;
    if (n < 0 || cap < n || !valid_utf8(in, n)) return -1;
    long o = 0;  /* the output's length: paragraphs joined by "\n" */
    int skipping = 0;
    for (const unsigned char *s = in; s < end;) {
        const unsigned char *e = memchr(s, '\n', (size_t)(end - s));
        if (!e) e = end;
        const unsigned char *line = s;
        s = e + 1;
        if (e == line) continue;
        int first_ws = ws_len(line, e) > 0;
        const unsigned char *lead = first_ws ? skip_ws(line, e) : line;
        if (lead < e && *lead == '=') {
            int level;
            const unsigned char *ts, *te;
            if (heading(line, e, &level, &ts, &te)) {
                int end_sec = end_section(ts, te);
                if (end_sec < 0) return -1;
                if (level <= 2) skipping = end_sec;
                else if (end_sec) skipping = 1;
                continue;
            }
        }
        /* a line with a tab is out (not printable, so the Python code's `elif "\t" in line`) */
        if (skipping || not_prose_start(line, e - line) || memchr(line, '\t', (size_t)(e - line))) continue;
        /* " ".join(line.split()) into the output, after the "\n" that would join it */
        long start = o + (o > 0), w = start;
        if (start + (e - line) > cap) return -1;
        int needed = 0;
        const unsigned char *p = skip_ws(line, e);
        int plain = !double_space(p, e);
        while (p < e) {
            unsigned char c = *p, k = CLASS[c];
            if (plain && RUN_STOP[c] == 0) {  /* a run of ordinary bytes and single spaces, copied */
                const unsigned char *q = p + 1;
                while (q < e && RUN_STOP[*q] == 0) q++;
                memcpy(out + w, p, (size_t)(q - p));
                w += q - p, p = q;
            } else if (k == 0) {
                out[w++] = c, p++;
            } else if (k == 2) {
                out[w++] = c, p++;
                needed |= tidy_needed(out + start, w - start);
            } else {
                int len = ws_len(p, e);
                if (len == 0) { out[w++] = c, p++; continue; }
                if (w > start && out[w - 1] == ' ') w--;  /* a single space copied with a run: ours */
                do p += len; while (p < e && (len = ws_len(p, e)) > 0);
                if (p < e && w > start) out[w++] = ' ';
            }
        }
        if (w > start && out[w - 1] == ' ') w--;  /* (copied with a run, at the end) */
        if (first_ws && (w == start || not_prose_start(out + start, w - start))) continue;
        long len = w - start;
        if (needed || (len > 0 && lead_junk(out[start]))) len = tidy(out + start, len);
        if (len == 0) continue;
        if (o > 0) out[o] = '\n';
        o = start + len;
    }
    return o;
}
