/* Python's white space (`\s`, str.isspace, str.split) in UTF-8, for the corpus fast paths that read it
   (cut.c, templates.c): \t \n \v \f \r, \x1c-\x1f, space, U+0085, U+00A0, U+1680, U+2000-U+200A, U+2028,
   U+2029, U+202F, U+205F, U+3000. Included, not compiled on its own (native.py hashes it into the
   library's key with the sources). */
#ifndef BK_PY_SPACE_H
#define BK_PY_SPACE_H

typedef unsigned char uc;

/* Bytes of the Python `\s` character at p (0 if there is none). */
static inline long space_len(const uc *p, const uc *end) {
    if (p >= end) return 0;
    uc c = p[0];
    if (c < 0x80) return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20);
    if (c == 0xc2) return p + 1 < end && (p[1] == 0x85 || p[1] == 0xa0) ? 2 : 0;  /* U+0085, U+00A0 */
    if (p + 2 >= end) return 0;
    if (c == 0xe1) return p[1] == 0x9a && p[2] == 0x80 ? 3 : 0;  /* U+1680 */
    if (c == 0xe2) {
        if (p[1] == 0x80 && ((p[2] >= 0x80 && p[2] <= 0x8a) || p[2] == 0xa8 || p[2] == 0xa9 || p[2] == 0xaf))
            return 3;  /* U+2000-U+200A, U+2028, U+2029, U+202F */
        return p[1] == 0x81 && p[2] == 0x9f ? 3 : 0;  /* U+205F */
    }
    if (c == 0xe3) return p[1] == 0x80 && p[2] == 0x80 ? 3 : 0;  /* U+3000 */
    return 0;
}

static inline long skip_spaces(const uc *t, long n, long i) {
    long l;
    while ((l = space_len(t + i, t + n)) > 0) i += l;
    return i;
}

#endif
