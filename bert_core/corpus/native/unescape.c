/* bk_unescape: html.unescape (the last step of wikimarkup.fast_plain_text) in C, under native.py's give-up
   contract, so that the C passes can be chained on bytes.

   Python's function is one `re.sub` of _charref = `&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)`
   with _replace_charref (CPython 3.11, Lib/html/__init__.py); this scan reads each `&` as that pattern and
   function do:
   - `&#` and decimal or `&#x`/`&#X` and hex digits, then an optional `;`: the number as Python maps it
     (0x00, 0x0D and 0x80-0x9F by _invalid_charrefs, surrogates and numbers above 0x10FFFF to U+FFFD,
     _invalid_codepoints to nothing, the rest to that character). `&#` without digits stays as it is.
   - `&` and a name: Python takes the run of characters up to the next `\t \n \f space < & # ;` (at
     most 32) and a `;` after it, as `s`; `s` itself if html5 has it, else its longest prefix of 2 to
     len(s)-1 characters html5 has, and the rest of `s` as it is; else `&` stays. Every html5 name is
     ASCII letters and digits, with or without a final `;`, and the ones without are the 106 legacy
     names, all in ENTITIES below (flag 1). So where the run is not 1 to 31 letters and digits and a `;`,
     `s` is in html5 only if it is a legacy name, and the result is the longest legacy name the run
     starts with (or the `&` as it is). Where it is letters and digits and a `;`, `s` is `name;`: ENTITIES
     holds that name's character, or the C gives up (html5 has 2231 names; ENTITIES has HTML 4's 252
     with `apos` and the legacy names: 259, every one the dump excerpt uses).
   - `&` and `\t \n \f space < & ;` or the end: it stays.
   So the C gives up only on a `&name;` whose name is not in ENTITIES (or on an output past cap, which
   cannot happen: every reference is at least as long as its UTF-8). A non-ASCII character needs no
   care: no name holds one, and a run's end only bounds where Python resumes scanning, which changes
   nothing (the rest of a run holds no `&`). Reentrant: constant tables only. */

#include <string.h>

typedef const unsigned char *Bytes;

/* html.entities.html5's character for `name;` (each is one character), and whether html5 also has
   `name` without the `;` (a legacy name). Sorted by strcmp for the binary search. Generated from
   html5; tests/test_corpus_native_unescape.py checks every entry against it and that every legacy
   name is here. */
typedef struct {
    const char *name;
    unsigned long code_point;
    int legacy;
} Entity;

static const Entity ENTITIES[] = {
    {"AElig", 0xC6, 1}, {"AMP", 0x26, 1}, {"Aacute", 0xC1, 1}, {"Acirc", 0xC2, 1}, {"Agrave", 0xC0, 1},
    {"Alpha", 0x391, 0}, {"Aring", 0xC5, 1}, {"Atilde", 0xC3, 1}, {"Auml", 0xC4, 1}, {"Beta", 0x392, 0},
    {"COPY", 0xA9, 1}, {"Ccedil", 0xC7, 1}, {"Chi", 0x3A7, 0}, {"Dagger", 0x2021, 0}, {"Delta", 0x394, 0},
    {"ETH", 0xD0, 1}, {"Eacute", 0xC9, 1}, {"Ecirc", 0xCA, 1}, {"Egrave", 0xC8, 1}, {"Epsilon", 0x395, 0},
    {"Eta", 0x397, 0}, {"Euml", 0xCB, 1}, {"GT", 0x3E, 1}, {"Gamma", 0x393, 0}, {"Iacute", 0xCD, 1},
    {"Icirc", 0xCE, 1}, {"Igrave", 0xCC, 1}, {"Iota", 0x399, 0}, {"Iuml", 0xCF, 1}, {"Kappa", 0x39A, 0},
    {"LT", 0x3C, 1}, {"Lambda", 0x39B, 0}, {"Mu", 0x39C, 0}, {"Ntilde", 0xD1, 1}, {"Nu", 0x39D, 0},
    {"OElig", 0x152, 0}, {"Oacute", 0xD3, 1}, {"Ocirc", 0xD4, 1}, {"Ograve", 0xD2, 1}, {"Omega", 0x3A9, 0},
    {"Omicron", 0x39F, 0}, {"Oslash", 0xD8, 1}, {"Otilde", 0xD5, 1}, {"Ouml", 0xD6, 1}, {"Phi", 0x3A6, 0},
    {"Pi", 0x3A0, 0}, {"Prime", 0x2033, 0}, {"Psi", 0x3A8, 0}, {"QUOT", 0x22, 1}, {"REG", 0xAE, 1},
    {"Rho", 0x3A1, 0}, {"Scaron", 0x160, 0}, {"Sigma", 0x3A3, 0}, {"THORN", 0xDE, 1}, {"Tau", 0x3A4, 0},
    {"Theta", 0x398, 0}, {"Uacute", 0xDA, 1}, {"Ucirc", 0xDB, 1}, {"Ugrave", 0xD9, 1}, {"Upsilon", 0x3A5, 0},
    {"Uuml", 0xDC, 1}, {"Xi", 0x39E, 0}, {"Yacute", 0xDD, 1}, {"Yuml", 0x178, 0}, {"Zeta", 0x396, 0},
    {"aacute", 0xE1, 1}, {"acirc", 0xE2, 1}, {"acute", 0xB4, 1}, {"aelig", 0xE6, 1}, {"agrave", 0xE0, 1},
    {"alefsym", 0x2135, 0}, {"alpha", 0x3B1, 0}, {"amp", 0x26, 1}, {"and", 0x2227, 0}, {"ang", 0x2220, 0},
    {"apos", 0x27, 0}, {"aring", 0xE5, 1}, {"asymp", 0x2248, 0}, {"atilde", 0xE3, 1}, {"auml", 0xE4, 1},
    {"bdquo", 0x201E, 0}, {"beta", 0x3B2, 0}, {"brvbar", 0xA6, 1}, {"bull", 0x2022, 0}, {"cap", 0x2229, 0},
    {"ccedil", 0xE7, 1}, {"cedil", 0xB8, 1}, {"cent", 0xA2, 1}, {"chi", 0x3C7, 0}, {"circ", 0x2C6, 0},
    {"clubs", 0x2663, 0}, {"cong", 0x2245, 0}, {"copy", 0xA9, 1}, {"crarr", 0x21B5, 0}, {"cup", 0x222A, 0},
    {"curren", 0xA4, 1}, {"dArr", 0x21D3, 0}, {"dagger", 0x2020, 0}, {"darr", 0x2193, 0}, {"deg", 0xB0, 1},
    {"delta", 0x3B4, 0}, {"diams", 0x2666, 0}, {"divide", 0xF7, 1}, {"eacute", 0xE9, 1}, {"ecirc", 0xEA, 1},
    {"egrave", 0xE8, 1}, {"empty", 0x2205, 0}, {"emsp", 0x2003, 0}, {"ensp", 0x2002, 0}, {"epsilon", 0x3B5, 0},
    {"equiv", 0x2261, 0}, {"eta", 0x3B7, 0}, {"eth", 0xF0, 1}, {"euml", 0xEB, 1}, {"euro", 0x20AC, 0},
    {"exist", 0x2203, 0}, {"fnof", 0x192, 0}, {"forall", 0x2200, 0}, {"frac12", 0xBD, 1}, {"frac14", 0xBC, 1},
    {"frac34", 0xBE, 1}, {"frasl", 0x2044, 0}, {"gamma", 0x3B3, 0}, {"ge", 0x2265, 0}, {"gt", 0x3E, 1},
    {"hArr", 0x21D4, 0}, {"harr", 0x2194, 0}, {"hearts", 0x2665, 0}, {"hellip", 0x2026, 0},
    {"iacute", 0xED, 1}, {"icirc", 0xEE, 1}, {"iexcl", 0xA1, 1}, {"igrave", 0xEC, 1}, {"image", 0x2111, 0},
    {"infin", 0x221E, 0}, {"int", 0x222B, 0}, {"iota", 0x3B9, 0}, {"iquest", 0xBF, 1}, {"isin", 0x2208, 0},
    {"iuml", 0xEF, 1}, {"kappa", 0x3BA, 0}, {"lArr", 0x21D0, 0}, {"lambda", 0x3BB, 0}, {"lang", 0x27E8, 0},
    {"laquo", 0xAB, 1}, {"larr", 0x2190, 0}, {"lceil", 0x2308, 0}, {"ldquo", 0x201C, 0}, {"le", 0x2264, 0},
    {"lfloor", 0x230A, 0}, {"lowast", 0x2217, 0}, {"loz", 0x25CA, 0}, {"lrm", 0x200E, 0},
    {"lsaquo", 0x2039, 0}, {"lsquo", 0x2018, 0}, {"lt", 0x3C, 1}, {"macr", 0xAF, 1}, {"mdash", 0x2014, 0},
    {"micro", 0xB5, 1}, {"middot", 0xB7, 1}, {"minus", 0x2212, 0}, {"mu", 0x3BC, 0}, {"nabla", 0x2207, 0},
    {"nbsp", 0xA0, 1}, {"ndash", 0x2013, 0}, {"ne", 0x2260, 0}, {"ni", 0x220B, 0}, {"not", 0xAC, 1},
    {"notin", 0x2209, 0}, {"nsub", 0x2284, 0}, {"ntilde", 0xF1, 1}, {"nu", 0x3BD, 0}, {"oacute", 0xF3, 1},
    {"ocirc", 0xF4, 1}, {"oelig", 0x153, 0}, {"ograve", 0xF2, 1}, {"oline", 0x203E, 0}, {"omega", 0x3C9, 0},
    {"omicron", 0x3BF, 0}, {"oplus", 0x2295, 0}, {"or", 0x2228, 0}, {"ordf", 0xAA, 1}, {"ordm", 0xBA, 1},
    {"oslash", 0xF8, 1}, {"otilde", 0xF5, 1}, {"otimes", 0x2297, 0}, {"ouml", 0xF6, 1}, {"para", 0xB6, 1},
    {"part", 0x2202, 0}, {"permil", 0x2030, 0}, {"perp", 0x22A5, 0}, {"phi", 0x3C6, 0}, {"pi", 0x3C0, 0},
    {"piv", 0x3D6, 0}, {"plusmn", 0xB1, 1}, {"pound", 0xA3, 1}, {"prime", 0x2032, 0}, {"prod", 0x220F, 0},
    {"prop", 0x221D, 0}, {"psi", 0x3C8, 0}, {"quot", 0x22, 1}, {"rArr", 0x21D2, 0}, {"radic", 0x221A, 0},
    {"rang", 0x27E9, 0}, {"raquo", 0xBB, 1}, {"rarr", 0x2192, 0}, {"rceil", 0x2309, 0}, {"rdquo", 0x201D, 0},
    {"real", 0x211C, 0}, {"reg", 0xAE, 1}, {"rfloor", 0x230B, 0}, {"rho", 0x3C1, 0}, {"rlm", 0x200F, 0},
    {"rsaquo", 0x203A, 0}, {"rsquo", 0x2019, 0}, {"sbquo", 0x201A, 0}, {"scaron", 0x161, 0},
    {"sdot", 0x22C5, 0}, {"sect", 0xA7, 1}, {"shy", 0xAD, 1}, {"sigma", 0x3C3, 0}, {"sigmaf", 0x3C2, 0},
    {"sim", 0x223C, 0}, {"spades", 0x2660, 0}, {"sub", 0x2282, 0}, {"sube", 0x2286, 0}, {"sum", 0x2211, 0},
    {"sup", 0x2283, 0}, {"sup1", 0xB9, 1}, {"sup2", 0xB2, 1}, {"sup3", 0xB3, 1}, {"supe", 0x2287, 0},
    {"szlig", 0xDF, 1}, {"tau", 0x3C4, 0}, {"there4", 0x2234, 0}, {"theta", 0x3B8, 0}, {"thetasym", 0x3D1, 0},
    {"thinsp", 0x2009, 0}, {"thorn", 0xFE, 1}, {"tilde", 0x2DC, 0}, {"times", 0xD7, 1}, {"trade", 0x2122, 0},
    {"uArr", 0x21D1, 0}, {"uacute", 0xFA, 1}, {"uarr", 0x2191, 0}, {"ucirc", 0xFB, 1}, {"ugrave", 0xF9, 1},
    {"uml", 0xA8, 1}, {"upsih", 0x3D2, 0}, {"upsilon", 0x3C5, 0}, {"uuml", 0xFC, 1}, {"weierp", 0x2118, 0},
    {"xi", 0x3BE, 0}, {"yacute", 0xFD, 1}, {"yen", 0xA5, 1}, {"yuml", 0xFF, 1}, {"zeta", 0x3B6, 0},
    {"zwj", 0x200D, 0}, {"zwnj", 0x200C, 0},
};
#define N_ENTITIES ((long)(sizeof ENTITIES / sizeof ENTITIES[0]))
#define MAX_LEGACY 6 /* the longest legacy name */

/* html._invalid_charrefs for 0x80-0x9F: the Windows-1252 characters (0x81, 0x8D, 0x8F, 0x90 and 0x9D
   map to themselves). */
static const unsigned short CP1252[32] = {
    0x20AC, 0x81, 0x201A, 0x192, 0x201E, 0x2026, 0x2020, 0x2021, 0x2C6, 0x2030, 0x160, 0x2039, 0x152, 0x8D,
    0x17D, 0x8F, 0x90, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014, 0x2DC, 0x2122, 0x161, 0x203A,
    0x153, 0x9D, 0x17E, 0x178};

/* The entry for s[0:len], or NULL. */
static const Entity *find(Bytes s, long len) {
    long lo = 0, hi = N_ENTITIES;
    while (lo < hi) {
        long mid = (lo + hi) / 2;
        const char *name = ENTITIES[mid].name;
        int c = strncmp(name, (const char *)s, (size_t)len);
        if (c == 0 && name[len] != '\0') c = 1; /* longer than s, so after it */
        if (c == 0) return &ENTITIES[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

static int alnum(unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

/* A digit's value in base 10 or 16, or -1. */
static int digit(unsigned char c, int hex) {
    if (c >= '0' && c <= '9') return c - '0';
    if (hex && c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (hex && c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* The character html._replace_charref gives for a numeric reference, or -1 for none (dropped). */
static long numeric_char(unsigned long num) {
    if (num == 0) return 0xFFFD;
    if (num == 0x0D) return 0x0D;
    if (num >= 0x80 && num <= 0x9F) return CP1252[num - 0x80];
    if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) return 0xFFFD;
    if ((num >= 0x01 && num <= 0x08) || num == 0x0B || (num >= 0x0E && num <= 0x1F) || num == 0x7F ||
        (num >= 0xFDD0 && num <= 0xFDEF) || (num & 0xFFFE) == 0xFFFE)
        return -1; /* html._invalid_codepoints (0x80-0x9F among them, mapped above) */
    return (long)num;
}

/* Appends code point cp as UTF-8; 0 if it does not fit. */
static int put_char(unsigned char *out, long *w, long cap, unsigned long cp) {
    unsigned char b[4];
    int len;
    if (cp < 0x80) b[0] = (unsigned char)cp, len = 1;
    else if (cp < 0x800) b[0] = (unsigned char)(0xC0 | cp >> 6), b[1] = (unsigned char)(0x80 | (cp & 63)), len = 2;
    else if (cp < 0x10000)
        b[0] = (unsigned char)(0xE0 | cp >> 12), b[1] = (unsigned char)(0x80 | (cp >> 6 & 63)),
        b[2] = (unsigned char)(0x80 | (cp & 63)), len = 3;
    else
        b[0] = (unsigned char)(0xF0 | cp >> 18), b[1] = (unsigned char)(0x80 | (cp >> 12 & 63)),
        b[2] = (unsigned char)(0x80 | (cp >> 6 & 63)), b[3] = (unsigned char)(0x80 | (cp & 63)), len = 4;
    if (*w + len > cap) return 0;
    memcpy(out + *w, b, (size_t)len);
    *w += len;
    return 1;
}

/* The reference at s[p] == '&': writes its replacement and returns where the scan resumes, or -1 to
   give up. */
static long reference(Bytes s, long n, long p, unsigned char *out, long *w, long cap) {
    long q = p + 1;
    if (q < n && s[q] == '#') { /* #[0-9]+;? or #[xX][0-9a-fA-F]+;? */
        int hex = q + 1 < n && (s[q + 1] == 'x' || s[q + 1] == 'X');
        long start = q + 1 + hex, e = start;
        unsigned long num = 0;
        for (int d; e < n && (d = digit(s[e], hex)) >= 0; e++)
            if (num <= 0x10FFFF) num = num * (hex ? 16 : 10) + (unsigned long)d; /* past it: U+FFFD anyway */
        if (e == start) return put_char(out, w, cap, '&') ? q : -1; /* no digits: no match here */
        if (e < n && s[e] == ';') e++;
        long cp = numeric_char(num);
        return cp < 0 || put_char(out, w, cap, (unsigned long)cp) ? e : -1;
    }
    /* A name: its letters and digits (the part that can be a name or start with one). */
    long k = 0;
    while (k < 32 && q + k < n && alnum(s[q + k])) k++;
    if (k >= 1 && k <= 31 && q + k < n && s[q + k] == ';') { /* s is `name;` */
        const Entity *entity = find(s + q, k);
        if (entity == NULL) return -1; /* perhaps one of html5's others: Python knows */
        return put_char(out, w, cap, entity->code_point) ? q + k + 1 : -1;
    }
    /* Else s is in html5 only as a legacy name: the longest one the run starts with, or `&` stays (also
       where no run follows: `\t \n \f space < & ;` or the end). */
    for (long len = k < MAX_LEGACY ? k : MAX_LEGACY; len >= 2; len--) {
        const Entity *entity = find(s + q, len);
        if (entity != NULL && entity->legacy) return put_char(out, w, cap, entity->code_point) ? q + len : -1;
    }
    return put_char(out, w, cap, '&') ? q : -1;
}

long bk_unescape(const char *in, long n, char *out, long cap) {
    Bytes s = (Bytes)in;
    unsigned char *o = (unsigned char *)out;
    long w = 0, p = 0;
    while (p < n) {
        const unsigned char *amp = memchr(s + p, '&', (size_t)(n - p));
        long q = amp != NULL ? (long)(amp - s) : n;
        if (w + (q - p) > cap) return -1;
        memcpy(o + w, s + p, (size_t)(q - p));
        w += q - p;
        if (q == n) break;
        p = reference(s, n, q, o, &w, cap);
        if (p < 0) return -1;
    }
    return w;
}
