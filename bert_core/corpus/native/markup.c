/* bk_markup_to_text: wikimarkup._python_markup_to_text in C, under native.py's give-up contract.

   The Python function stays the authority: this one runs the same passes in the same order (the first
   check for `|]]]` and _PAIR_BEFORE_3, file links out as \0, links as their text with the links in a
   text rewritten to _MAX_NESTING levels, the nested external link check, external links as their text,
   tags out with the start-tag bookkeeping, the residue checks, \0 out), each pass a left-to-right scan
   that tries its pattern at every position as `re` does. The patterns are possessive, so each match
   attempt is one deterministic scan; the few places where `re` could backtrack are shown in the
   comments to end in the same match or none.

   It returns -1 (give up: Python runs) where it is not certain, or where Python returns None anyway:
   - a non-ASCII character where a pattern compares a letter case-insensitively and that character is
     one `re.I` equates with an ASCII letter (U+0130, U+0131, U+017F, U+212A: the only ones), in a
     file extension or a URL scheme;
   - a non-ASCII character right after a tag name in a closed tag (`\b` would ask Unicode whether it
     is a letter);
   - everything Python returns None for (deeper links, nested external links, tag bookkeeping, residue).
   Everything else is byte-exact: every other class in the patterns is a negated ASCII class, which in
   UTF-8 matches each byte >= 0x80 of a non-ASCII character as `re` matches the whole character.
   Reentrant: no globals but constant tables; scratch buffers are malloc'ed per call. */

#include <stdlib.h>
#include <string.h>

#define NO_MATCH (-1L)
#define GIVE_UP (-2L)
#define MAX_NESTING 3 /* wikimarkup._MAX_NESTING */

typedef const unsigned char *Bytes;

/* Byte classes: a set bit means the byte ends a run of the class. */
enum {
    TITLE_END = 1,  /* _TITLE = [^\[\]|{}<>\n\r\0] */
    NS_END = 2,     /* the namespace part of a file link: _TITLE without ':' */
    TEXT_END = 4,   /* the parts of a link's text: [^\[\]|] */
    URL_END = 8,    /* _URL = [^ \t\r\n"<>\[\]\0] */
    EXT_END = 16,   /* an external link's text: [^\[\]\r\n] */
};

static const unsigned char CLASS[256] = {
    ['['] = TITLE_END | NS_END | TEXT_END | URL_END | EXT_END,
    [']'] = TITLE_END | NS_END | TEXT_END | URL_END | EXT_END,
    ['|'] = TITLE_END | NS_END | TEXT_END,
    ['{'] = TITLE_END | NS_END,
    ['}'] = TITLE_END | NS_END,
    ['<'] = TITLE_END | NS_END | URL_END,
    ['>'] = TITLE_END | NS_END | URL_END,
    ['\n'] = TITLE_END | NS_END | URL_END | EXT_END,
    ['\r'] = TITLE_END | NS_END | URL_END | EXT_END,
    [0] = TITLE_END | NS_END | URL_END,
    [':'] = NS_END,
    [' '] = URL_END,
    ['\t'] = URL_END,
    ['"'] = URL_END,
};

static long skip(Bytes s, long n, long p, int end_class) {
    while (p < n && !(CLASS[s[p]] & end_class)) p++;
    return p;
}

static int pair_at(Bytes s, long n, long p, unsigned char c) {
    return p + 1 < n && s[p] == c && s[p + 1] == c;
}

/* wikimarkup._SCHEMES, in its order. */
static const char *const SCHEMES[] = {
    "bitcoin:", "ftp://", "ftps://", "geo:", "git://", "gopher://", "http://", "https://", "irc://",
    "ircs://", "magnet:", "mailto:", "mms://", "news:", "nntp://", "redis://", "sftp://", "sip:", "sips:",
    "sms:", "ssh://", "svn://", "tel:", "telnet://", "urn:", "worldwind://", "xmpp:", "//"};
#define N_SCHEMES ((int)(sizeof SCHEMES / sizeof SCHEMES[0]))
#define N_SCHEMES_NOT_SLASHES (N_SCHEMES - 1) /* "//" only in _EXTERNAL_START, not in _NOT_URL */

/* The code point of the UTF-8 character starting at s[p] (never past n). */
static long code_point(Bytes s, long n, long p) {
    unsigned c = s[p];
    int more = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
    long cp = more == 3 ? (c & 7) : more == 2 ? (c & 15) : more == 1 ? (c & 31) : c;
    for (int k = 1; k <= more && p + k < n; k++) cp = (cp << 6) | (s[p + k] & 63);
    return cp;
}

/* The ASCII letter `re.I` also matches this non-ASCII character with, or 0. */
static int folds_to(long cp) {
    switch (cp) {
    case 0x130: case 0x131: return 'i';
    case 0x17F: return 's';
    case 0x212A: return 'k';
    default: return 0;
    }
}

/* Whether s[p:] starts with `lit` case-insensitively as `re.I` reads it: 1, 0, or GIVE_UP where a
   character `re.I` equates with an ASCII letter stands where that letter is compared. */
static long starts_with_i(Bytes s, long n, long p, const char *lit) {
    for (long k = 0; lit[k]; k++, p++) {
        if (p >= n) return 0;
        unsigned char c = s[p], want = (unsigned char)lit[k];
        if (c >= 0x80) return folds_to(code_point(s, n, p)) ? GIVE_UP : 0;
        if (c >= 'A' && c <= 'Z') c = (unsigned char)(c + 32);
        if (c != want) return 0;
    }
    return 1;
}

/* The length of the scheme (or `//`) s[p:] starts with, case-insensitively (`(?i:` + _SCHEMES + `|//)`),
   0 if none, GIVE_UP if undecidable. At most one literal matches: none is a prefix of another. */
static long scheme_i(Bytes s, long n, long p) {
    if (p >= n) return 0;
    int undecided = 0;
    for (int i = 0; i < N_SCHEMES; i++) {
        long r = starts_with_i(s, n, p, SCHEMES[i]);
        if (r == 1) return (long)strlen(SCHEMES[i]);
        if (r == GIVE_UP) undecided = 1;
    }
    return undecided ? GIVE_UP : 0;
}

/* _NOT_URL failing at p: ` *` then a scheme (case-sensitive) then a _URL character. (The spaces need no
   backtracking: a scheme starts with a letter.) */
static int url_at(Bytes s, long n, long p) {
    while (p < n && s[p] == ' ') p++;
    if (p >= n || s[p] < 'b' || s[p] > 'x') return 0; /* (most titles start with a capital) */
    for (int i = 0; i < N_SCHEMES_NOT_SLASHES; i++) {
        if (s[p] != (unsigned char)SCHEMES[i][0]) continue;
        long len = (long)strlen(SCHEMES[i]);
        if (p + len < n && memcmp(s + p, SCHEMES[i], (size_t)len) == 0 && !(CLASS[s[p + len]] & URL_END))
            return 1;
    }
    return 0;
}

/* wikimarkup._FILE_EXTENSIONS by length (the lookbehinds `(?<=\.(?i:...))` of 3 and 4 letters). */
static const char *const EXT3[] = {"bmp", "gif", "iff", "jb2", "jp2", "jpc", "jpg", "jpx", "mid", "mka", "mkv",
                                   "mp3", "oga", "ogg", "ogv", "ogx", "pdf", "png", "psd", "spx", "stl", "svg",
                                   "swc", "swf", "tif", "wmf", "xbm", "xcf"};
static const char *const EXT4[] = {"djvu", "jpeg", "opus", "tiff", "wbmp", "webm", "webp"};

/* Whether the text before e ends with `.` and a media extension, in any case: 1, 0 or GIVE_UP. The
   lookbehind counts characters: the last 5 are decoded (a string start ends the look). */
static long media_extension_before(Bytes s, long e) {
    long cp[5];
    int got = 0;
    for (long i = e; got < 5 && i > 0; got++) {
        long j = i - 1;
        while (j > 0 && (s[j] & 0xC0) == 0x80) j--;
        cp[got] = code_point(s, i, j);
        if (folds_to(cp[got])) return GIVE_UP;
        i = j;
    }
    for (int len = 3; len <= 4; len++) {
        if (got < len + 1 || cp[len] != '.') continue;
        int count = len == 3 ? (int)(sizeof EXT3 / sizeof EXT3[0]) : (int)(sizeof EXT4 / sizeof EXT4[0]);
        for (int x = 0; x < count; x++) {
            const char *ext = len == 3 ? EXT3[x] : EXT4[x];
            int k = 0;
            for (; k < len; k++) {
                long c = cp[len - 1 - k];
                if (c >= 'A' && c <= 'Z') c += 32;
                if (c != ext[k]) break;
            }
            if (k == len) return 1;
        }
    }
    return 0;
}

/* One part of a link's text without links in it (the `_text("")` part): `[^\[\]|]*` with at most one
   `[x]` (no brackets or pipes in x). The optional pair is greedy but not possessive; giving it back
   would leave the match at a `[`, where neither `|` nor `]]` follows, so it never changes a match. */
static long plain_part(Bytes s, long n, long p) {
    p = skip(s, n, p, TEXT_END);
    if (p < n && s[p] == '[') {
        long q = skip(s, n, p + 1, TEXT_END);
        if (q < n && s[q] == ']') p = skip(s, n, q + 1, TEXT_END);
    }
    return p;
}

static long plain_text(Bytes s, long n, long p) {
    p = plain_part(s, n, p);
    while (p < n && s[p] == '|') p = plain_part(s, n, p + 1);
    return p;
}

/* A link inside a link's text at p (`[[`): its end, or NO_MATCH. */
static long inner_link(Bytes s, long n, long p) {
    long q = p + 2;
    if (url_at(s, n, q)) return NO_MATCH;
    long t = skip(s, n, q, TITLE_END);
    if (t < n && s[t] == '|') {
        long r = plain_text(s, n, t + 1);
        return pair_at(s, n, r, ']') ? r + 2 : NO_MATCH;
    }
    return pair_at(s, n, t, ']') ? t + 2 : NO_MATCH;
}

/* One part of _LINK_TEXT: `(?:[^\[\]|]++|INNER)*+` and an optional `[x]` followed by more of them. */
static long part(Bytes s, long n, long p) {
    int pair_seen = 0;
    for (;;) {
        if (p < n && !(CLASS[s[p]] & TEXT_END)) {
            p = skip(s, n, p, TEXT_END);
            continue;
        }
        if (pair_at(s, n, p, '[')) {
            long e = inner_link(s, n, p);
            if (e >= 0) {
                p = e;
                continue;
            }
        }
        if (!pair_seen && p < n && s[p] == '[') {
            long q = skip(s, n, p + 1, TEXT_END);
            if (q < n && s[q] == ']') {
                pair_seen = 1;
                p = q + 1;
                continue;
            }
        }
        return p;
    }
}

/* _LINK_TEXT from p: its end. (Only the first part's optional pair could be given back; as in
   plain_part, that never changes a match.) */
static long link_text(Bytes s, long n, long p) {
    p = part(s, n, p);
    while (p < n && s[p] == '|') p = part(s, n, p + 1);
    return p;
}

/* _FILE_LINK at p (`[[`): its end, NO_MATCH or GIVE_UP. */
static long file_link(Bytes s, long n, long p) {
    long q = p + 2;
    if (q < n && s[q] == ':') return NO_MATCH;
    q = skip(s, n, q, NS_END);
    if (!(q < n && s[q] == ':')) return NO_MATCH;
    long e = skip(s, n, q + 1, TITLE_END);
    long media = media_extension_before(s, e);
    if (media != 1) return media == GIVE_UP ? GIVE_UP : NO_MATCH;
    if (e < n && s[e] == '|') {
        long r = link_text(s, n, e + 1);
        return pair_at(s, n, r, ']') ? r + 2 : NO_MATCH;
    }
    return pair_at(s, n, e, ']') ? e + 2 : NO_MATCH;
}

/* _LINK at p (`[[`): its end (and its group in *g0, *g1), or NO_MATCH. With a pipe after the title the
   text must end at `]]`; giving the pipe back leaves `(?<=\[)` unmet or a `|` where `]]` must be. */
static long link(Bytes s, long n, long p, long *g0, long *g1) {
    long q = p + 2;
    if (url_at(s, n, q)) return NO_MATCH;
    long t = skip(s, n, q, TITLE_END);
    if (t < n && s[t] == '|') {
        long r = link_text(s, n, t + 1);
        if (!pair_at(s, n, r, ']')) return NO_MATCH;
        *g0 = t + 1, *g1 = r;
        return r + 2;
    }
    if (!pair_at(s, n, t, ']')) return NO_MATCH;
    *g0 = q, *g1 = t;
    return t + 2;
}

/* The next `[[` at or after p, or n. */
static long next_pair(Bytes s, long n, long p) {
    while (p + 1 < n) {
        const unsigned char *b = memchr(s + p, '[', (size_t)(n - 1 - p));
        if (!b) return n;
        p = b - s;
        if (s[p + 1] == '[') return p;
        p += 2;
    }
    return n;
}

/* _FILE_LINK.sub("\0", s) into out (at most n bytes): its length or GIVE_UP. */
static long file_links_out(Bytes s, long n, unsigned char *out) {
    long o = 0, last = 0;
    for (long p = next_pair(s, n, 0); p < n; p = next_pair(s, n, p)) {
        long e = file_link(s, n, p);
        if (e == GIVE_UP) return GIVE_UP;
        if (e < 0) {
            p++;
            continue;
        }
        memcpy(out + o, s + last, (size_t)(p - last));
        o += p - last;
        out[o++] = 0;
        last = p = e;
    }
    memcpy(out + o, s + last, (size_t)(n - last));
    return o + (n - last);
}

static int has_pair(Bytes s, long n) {
    return next_pair(s, n, 0) < n;
}

/* wikimarkup._links_to_text into out (at most n bytes), with `cut` (n bytes) as scratch: its length or
   GIVE_UP. */
static long links_to_text(Bytes s, long n, unsigned char *out, int levels, unsigned char *cut) {
    long m = file_links_out(s, n, cut), o = 0, last = 0;
    if (m < 0) return GIVE_UP;
    for (long p = next_pair(cut, m, 0); p < m; p = next_pair(cut, m, p)) {
        long g0, g1, e = link(cut, m, p, &g0, &g1);
        if (e < 0) {
            p++;
            continue;
        }
        memcpy(out + o, cut + last, (size_t)(p - last));
        o += p - last;
        if (has_pair(cut + g0, g1 - g0)) {
            unsigned char *scratch = levels > 1 ? malloc((size_t)(g1 - g0) + 1) : NULL;
            long r = scratch ? links_to_text(cut + g0, g1 - g0, out + o, levels - 1, scratch) : GIVE_UP;
            free(scratch);
            if (r < 0) return GIVE_UP;
            o += r;
        } else {
            memcpy(out + o, cut + g0, (size_t)(g1 - g0));
            o += g1 - g0;
        }
        last = p = e;
    }
    memcpy(out + o, cut + last, (size_t)(m - last));
    return o + (m - last);
}

static long find_byte(Bytes s, long n, long p, unsigned char c) {
    const unsigned char *b = p < n ? memchr(s + p, c, (size_t)(n - p)) : NULL;
    return b ? b - s : n;
}

/* wikimarkup._nested_external: 1 if an external link's text, up to the first `]` on its line, holds
   another's start; 0; or GIVE_UP. */
static long nested_external(Bytes s, long n) {
    long prev = -1, close = -1, end = -1;
    for (long p = find_byte(s, n, 0, '['); p < n; p = find_byte(s, n, p + 1, '[')) {
        long k = scheme_i(s, n, p + 1);
        if (k == GIVE_UP) return GIVE_UP;
        if (k == 0) continue;
        if (prev >= 0) {
            if (close < prev) close = find_byte(s, n, prev, ']');
            if (end < prev) {
                long nl = find_byte(s, n, prev, '\n'), cr = find_byte(s, n, prev, '\r');
                end = nl < cr ? nl : cr;
            }
            if (p < close && close < end) return 1;
        }
        prev = p;
    }
    return 0;
}

/* "".join(_EXTERNAL.split(s)) into out: its length or GIVE_UP. A match is `[`, a scheme, `_URL++`, an
   optional space, the text (no `[]\r\n`, bar a `[` not starting a scheme) and `]`. Giving the space
   back would read the same text from one character earlier to the same end, so it changes nothing. */
static long externals_to_text(Bytes s, long n, unsigned char *out) {
    long o = 0, last = 0;
    for (long p = find_byte(s, n, 0, '['); p < n; p = find_byte(s, n, p + 1, '[')) {
        long k = scheme_i(s, n, p + 1);
        if (k == GIVE_UP) return GIVE_UP;
        if (k == 0) continue;
        long u = p + 1 + k, t = skip(s, n, u, URL_END);
        if (t == u) continue;
        if (t < n && s[t] == ' ') t++;
        long q = t;
        for (;;) {
            q = skip(s, n, q, EXT_END);
            if (q < n && s[q] == '[') {
                long r = scheme_i(s, n, q + 1);
                if (r == GIVE_UP) return GIVE_UP;
                if (r == 0) {
                    q++;
                    continue;
                }
            }
            break;
        }
        if (!(q < n && s[q] == ']')) continue;
        memcpy(out + o, s + last, (size_t)(p - last));
        o += p - last;
        memcpy(out + o, s + t, (size_t)(q - t));
        o += q - t;
        last = q + 1;
        p = q; /* the next search starts after the `]` */
    }
    memcpy(out + o, s + last, (size_t)(n - last));
    return o + (n - last);
}

/* _TAG's names (h[1-6] spelled out). No name that is a prefix of another can be followed by `\b`
   where the other continues with a letter, so at most one name matches at a place. */
static const char *const TAGS[] = {
    "abbr", "bdi", "bdo", "big", "blockquote", "br", "b", "center", "cite", "code", "data", "dd", "del", "dfn",
    "div", "dl", "dt", "em", "font", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "indicator", "ins", "i", "kbd",
    "li", "mark", "noinclude", "ol", "onlyinclude", "poem", "p", "q", "rb", "rp", "rtc", "rt", "ruby", "samp",
    "section", "small", "span", "strike", "strong", "templatestyles", "sub", "sup", "s", "time", "tt", "ul",
    "u", "var", "wbr"};
#define N_TAGS ((int)(sizeof TAGS / sizeof TAGS[0]))

/* wikimarkup._EXTENSION_TAGS */
static int extension_tag(const char *name) {
    static const char *const EXT[] = {"indicator", "noinclude", "onlyinclude", "poem", "section", "templatestyles"};
    for (int i = 0; i < 6; i++)
        if (strcmp(name, EXT[i]) == 0) return 1;
    return 0;
}

static int ascii_word(unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

/* _TAG at p (`<`): its end, with the name's index in *name and whether it is an end tag in *end_tag;
   NO_MATCH; or GIVE_UP (a non-ASCII character after a name: `\b` asks whether it is a letter). Giving
   back the `/` leaves a `/` where a name must start. */
static long tag(Bytes s, long n, long p, int *name, int *end_tag) {
    long q = p + 1;
    *end_tag = q < n && s[q] == '/';
    q += *end_tag;
    long close = q; /* `[^<>]*+>` ends at the same `<` or `>` after any name: no `>`, no match */
    while (close < n && s[close] != '<' && s[close] != '>') close++;
    if (close >= n || s[close] != '>') return NO_MATCH;
    for (int i = 0; i < N_TAGS; i++) {
        if (s[q] != (unsigned char)TAGS[i][0]) continue;
        long len = (long)strlen(TAGS[i]);
        if (q + len > close || memcmp(s + q, TAGS[i], (size_t)len) != 0) continue;
        long r = q + len;
        if (s[r] >= 0x80) return GIVE_UP;
        if (ascii_word(s[r])) continue;
        *name = i;
        return close + 1;
    }
    return NO_MATCH;
}

/* wikimarkup._strip_tags into out: its length or GIVE_UP (also where Python returns None). */
static long strip_tags(Bytes s, long n, unsigned char *out) {
    int open[N_TAGS] = {0};
    long o = 0, last = 0;
    for (long p = find_byte(s, n, 0, '<'); p < n; p = find_byte(s, n, p + 1, '<')) {
        int name, end_tag;
        long e = tag(s, n, p, &name, &end_tag);
        if (e == GIVE_UP) return GIVE_UP;
        if (e < 0) continue;
        if (end_tag) {
            if (!open[name]) return GIVE_UP;
            open[name]--;
        } else {
            long r = e - 1; /* m.group().rstrip(" \t\r\n>").endswith("/") */
            while (r > p && (s[r] == ' ' || s[r] == '\t' || s[r] == '\r' || s[r] == '\n' || s[r] == '>')) r--;
            if (s[r] != '/') {
                if (open[name] && extension_tag(TAGS[name])) return GIVE_UP;
                open[name]++;
            }
        }
        memcpy(out + o, s + last, (size_t)(p - last));
        o += p - last;
        last = e;
        p = e - 1;
    }
    for (int i = 0; i < N_TAGS; i++)
        if (open[i] && extension_tag(TAGS[i])) return GIVE_UP;
    memcpy(out + o, s + last, (size_t)(n - last));
    return o + (n - last);
}

/* The residue checks: `[[`, `]]`, or _TAG_RESIDUE (`<[A-Za-z/!][^<>]*+>`). */
static int residue(Bytes s, long n) {
    if (has_pair(s, n)) return 1;
    for (long p = find_byte(s, n, 0, ']'); p + 1 < n; p = find_byte(s, n, p + 1, ']'))
        if (s[p + 1] == ']') return 1;
    for (long p = find_byte(s, n, 0, '<'); p + 1 < n; p = find_byte(s, n, p + 1, '<')) {
        unsigned char c = s[p + 1];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '/' || c == '!')) continue;
        long r = p + 1;
        while (r < n && s[r] != '<' && s[r] != '>') r++;
        if (r < n && s[r] == '>') return 1;
        p = r - 1;
    }
    return 0;
}

/* The first check of _markup_to_text, where Python returns None: `|]]]`, or _PAIR_BEFORE_3 found (a
   single `[`: `(?<!\[\[)` stands after it, so no `[` before it; then no brackets up to `]]]]`). In one
   pass over the `]]]` runs; the walk back from a `]]]]` to its bracket covers text no other one does. */
static int python_gives_up_first(Bytes s, long n) {
    for (long p = find_byte(s, n, 0, ']'); p + 2 < n; p = find_byte(s, n, p + 1, ']')) {
        if (s[p + 1] != ']') {
            p++;
            continue;
        }
        if (s[p + 2] != ']') {
            p++; /* (the `]` at p + 1 starts no `]]]` either) */
            continue;
        }
        if (p > 0 && s[p - 1] == '|') return 1;
        if (p + 3 < n && s[p + 3] == ']' && !(p > 0 && s[p - 1] == ']')) {
            long q = p - 1;
            while (q >= 0 && s[q] != '[' && s[q] != ']') q--;
            if (q >= 0 && s[q] == '[' && !(q > 0 && s[q - 1] == '[') && s[q + 1] != '[') return 1;
        }
    }
    return 0;
}

/* Each pass reads the text where the last one left it (the input, out or one scratch buffer) and
   writes it into another: every pass shortens or keeps the text, so n bytes each are enough. */
long bk_markup_to_text(const char *in, long n, char *out, long cap) {
    Bytes s = (Bytes)in;
    if (n < 0 || cap < n) return -1;
    if (python_gives_up_first(s, n)) return -1;
    unsigned char *o = (unsigned char *)out, *scratch = malloc((size_t)n + 1);
    if (!scratch) return -1;
    Bytes text = s;
    long m = n, result = -1;
    if (has_pair(text, m)) {
        m = links_to_text(text, m, o, MAX_NESTING, scratch);
        if (m < 0) goto done;
        text = o;
    }
    if (memchr(text, '[', (size_t)m)) {
        if (nested_external(text, m) != 0) goto done;
        unsigned char *to = text == scratch ? o : scratch;
        m = externals_to_text(text, m, to);
        if (m < 0) goto done;
        text = to;
    }
    if (memchr(text, '<', (size_t)m)) {
        unsigned char *to = text == scratch ? o : scratch;
        m = strip_tags(text, m, to);
        if (m < 0) goto done;
        text = to;
    }
    if (residue(text, m)) goto done;
    result = 0; /* \0 out (in place if the text is in out already: it only moves left) */
    for (long p = 0; p < m;) {
        const unsigned char *z = memchr(text + p, 0, (size_t)(m - p));
        long q = z ? z - text : m;
        memmove(o + result, text + p, (size_t)(q - p));
        result += q - p;
        p = q + 1;
    }
done:
    free(scratch);
    return result;
}

/* Whether `needle` (NUL-terminated, at least one byte) occurs in the n bytes at s. */
static int contains(Bytes s, long n, const char *needle) {
    long k = (long)strlen(needle);
    for (long p = find_byte(s, n, 0, (unsigned char)needle[0]); p + k <= n;
         p = find_byte(s, n, p + 1, (unsigned char)needle[0])) {
        if (memcmp(s + p, needle, (size_t)k) == 0) return 1;
    }
    return 0;
}

/* wikimarkup.fast_plain_text's route, then bk_markup_to_text: for a chain of C passes (native.chain,
   wiki.wikitext_to_paragraphs), which must leave text holding `<nowiki`, `<pre` or `[[[` to the Python
   (their content is kept as it is, the markup around it rewritten: fast_plain_text's other route). */
long bk_markup_to_text_without_literals(const char *in, long n, char *out, long cap) {
    Bytes s = (Bytes)in;
    if (n < 0 || contains(s, n, "<nowiki") || contains(s, n, "<pre") || contains(s, n, "[[[")) return -1;
    return bk_markup_to_text(in, n, out, cap);
}
