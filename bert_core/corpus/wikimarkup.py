"""The plain text of wikitext that `wiki.cut_text` has already cut: a fast path of a few regular
expressions, with wikitextparser as the fallback and the authority.

What is left after the cut is mostly links, HTML tags and entities. The fast path rewrites exactly those,
with the parser's rules (`wikitextparser`'s `plain_text`, measured against it on the dump excerpt and on
hard cases, tests/test_prepare_corpus.py): a wikilink becomes its text or target, a file or image link
(`[[File:x.jpg|...]]`, with links in its caption) is removed whole, a bracketed external link becomes its
text, HTML tags are removed and their content kept, <nowiki> and <pre> content and `[[[x]]]` are kept
as they are, entities are unescaped. Each step is one pass of `re` (C speed); a link in a link's text
or a file's caption is matched with it, as the parser reads it (one pair of single brackets between two
pipes, no link in a target), and rewritten within that text. Every pattern stops at the next bracket or `<`, so
unclosed marks cost linear time. Equality with the parser is tested on the excerpt's articles, on hard
cases and on random markup.

It gives up (returns None) on what it does not handle, and the caller then runs the parser on the same
text: `[[` or `]]` left over (a link in a target, deeper nesting, a text starting with `]`, ...), a tag
it does not know (<includeonly>, <math> left unclosed, upper case, ...), an end tag before any start
tag of its name, an unclosed or nested extension tag (<poem>), an external link inside another's text,
an unclosed <nowiki> or <pre>, one holding a link or tag or standing inside an external link, and `[[[`
other than around a plain link (its meaning depends on counting brackets). So an unusual article costs
parser time; it is never rewritten by a guess.

The rewrite of links, tags and residue (`_markup_to_text`) runs first in C (native/markup.c, the same
passes in the same order, ~10x less CPU: the Python passes cost Python loops per match), under the
native library's give-up contract: where the C is not certain of giving exactly the Python result (a
character `re.I` or `\b` would ask Unicode about, or a text Python gives up on) it returns nothing and
`_python_markup_to_text` runs. The Python code stays the authority and the fallback (no compiler,
BERT_CORPUS_NATIVE=0); tests/test_corpus_native_markup.py holds the two equal.
"""

from __future__ import annotations

import html
import re

from bert_core.corpus import native

# Extensions after which a link's target (its part after the first colon) names a media file: the
# link is removed whole, caption included (wikitextparser's KNOWN_FILE_EXTENSIONS).
_FILE_EXTENSIONS = ("bmp|djvu|gif|iff|jb2|jp2|jpc|jpeg|jpg|jpx|mid|mka|mkv|mp3|oga|ogg|ogv|ogx|opus|pdf|png|"
                    "psd|spx|stl|svg|swc|swf|tif|tiff|wbmp|webm|webp|wmf|xbm|xcf")
_TITLE = r"[^\[\]|{}<>\n\r\0]"  # the characters a link target may hold (\0: a removed file link)
_SCHEMES = ("bitcoin:|ftp://|ftps://|geo:|git://|gopher://|http://|https://|irc://|ircs://|magnet:|mailto:|"
            "mms://|news:|nntp://|redis://|sftp://|sip:|sips:|sms:|ssh://|svn://|tel:|telnet://|urn:|"
            "worldwind://|xmpp:")
_URL = r"[^ \t\r\n\"<>\[\]\0]"
_NOT_URL = r"(?! *(?:" + _SCHEMES + r")" + _URL + r")"  # a target that starts with a URL is not a link
# A link's text (after the first pipe), as the parser reads it: parts between pipes, each with at most
# one pair of single brackets (`[[File:x.png|the [1.1.0] isomer]]`) and, in `_LINK_TEXT`, links
# without links in them.


def _text(inner: str) -> str:
    part = r"(?:[^\[\]|]++" + inner + r")*+(?:\[[^\[\]|]*+\](?:[^\[\]|]++" + inner + r")*+)?"
    return part + r"(?:\|" + part + r")*+"


_LINK_TEXT = _text(r"|\[\[" + _NOT_URL + _TITLE + r"*+(?:\|" + _text("") + r")?\]\]")
# A file link, removed whole with the links in its caption.
_FILE_LINK = re.compile(r"\[\[(?!:)[^\[\]|{}<>\n\r\0:]*+:" + _TITLE + r"*+(?:" + "|".join(
    r"(?<=\.(?i:" + "|".join(e for e in _FILE_EXTENSIONS.split("|") if len(e) == n) + r"))" for n in (3, 4))
    + r")(?:\|" + _LINK_TEXT + r")?\]\]")
# Any other link, split into [text, its text or target, text, ...]: `[[target|text]]` gives text (pipes,
# line breaks and links included, as the parser does; those links are rewritten in the text next),
# `[[target]]` the target.
_LINK = re.compile(r"\[\[" + _NOT_URL + r"(?:" + _TITLE + r"*+\|)?((?<=\|)" + _LINK_TEXT + r"|(?<=\[)" + _TITLE
                   + r"*+)\]\]")
# `[url text]` gives text (one space after the URL dropped), `[url]` nothing; schemes in any case.
_EXTERNAL_START = r"\[(?i:" + _SCHEMES + r"|//)"
_EXTERNAL = re.compile(_EXTERNAL_START + _URL + r"++ ?((?:[^\[\]\r\n]|\[(?!(?i:" + _SCHEMES + r"|//)))*+)\]")
# HTML tags wikitextparser knows (lower case only, as it does), bar table tags, and the extension tags
# whose content it keeps as wikitext (poem, onlyinclude, ...; not includeonly, shown only in other
# pages): the tag goes, its content stays. Tags with other names are left, so that the residue check
# sends the text to the parser.
_TAG = re.compile(r"<(/?)(abbr|bdi|bdo|big|blockquote|br|b|center|cite|code|data|dd|del|dfn|div|dl|dt|em|"
                  r"font|h[1-6]|hr|indicator|ins|i|kbd|li|mark|noinclude|ol|onlyinclude|poem|p|q|rb|rp|rtc|rt|"
                  r"ruby|samp|section|small|span|strike|strong|templatestyles|"
                  r"sub|sup|s|time|tt|ul|u|var|wbr)\b[^<>]*+>")
# A single-bracket pair right before `]]]` (`[[File:a.png|[x]]]]`): the parser does not end a link there.
_PAIR_BEFORE_3 = re.compile(r"\[(?<!\[\[)(?!\[)[^\[\]]*+\]\]\]\]")
_EXTENSION_TAGS = ("indicator", "noinclude", "onlyinclude", "poem", "section", "templatestyles")
# What the fast path does not handle, once it is done: the parser decides.
# A tag the fast path left (other names, upper case): `<` and a name up to a `>` before the next `<`
# (without the `>` the parser sees text too; stopping at `<` keeps the search linear).
_TAG_RESIDUE = re.compile(r"<[A-Za-z/!][^<>]*+>")
_EXTERNAL_STARTS = re.compile(_EXTERNAL_START)
# Text the parser keeps as it is: <nowiki>text</nowiki> and <pre>text</pre> (the second group: None for
# <nowiki/>, which is removed), and a link in one more pair of brackets, `[[[x]]]` (the third group;
# the parser sees no link after an odd number of `[`).
_LITERAL = re.compile(r"<(nowiki|pre)\b[^<>]*?(?:/>|>(.*?)</\1\s*>)"
                      r"|(?<!\[)(\[\[\[[^\[\]<>{}\n]*\]\]\])(?!\])", re.S)
_LITERAL_EMPTY = {name: re.compile(r"<" + name + r"\b[^<>]*?/>") for name in ("nowiki", "pre")}
_MAX_NESTING = 3  # levels of links in link texts rewritten before giving up (one level matched each)


def fast_plain_text(text: str) -> str | None:
    """The plain text of cut wikitext (templates, tables, references and quotes already out), or None
    where the fast path does not handle something in it."""
    if "<nowiki" not in text and "<pre" not in text and "[[[" not in text:
        text = _markup_to_text(text)
    else:  # literal text kept as it is, the markup around it rewritten
        for name, empty in _LITERAL_EMPTY.items():
            if text.count("<" + name) != text.count("</" + name) + len(empty.findall(text)):
                return None  # one unclosed: the parser (and no lazy search to the end for each)
        pieces = _LITERAL.split(text)  # text, name, literal, [[[x]]], text, ..., text
        for i in range(0, len(pieces), 4):
            if "[[[" in pieces[i]:
                return None
            pieces[i] = _markup_to_text(pieces[i])
            if pieces[i] is None or _EXTERNAL_STARTS.search(pieces[i]):
                return None  # (an external link around the literal text: split in two here)
        for i in range(2, len(pieces), 4):
            literal = pieces[i + 1] or pieces[i] or ""
            if _EXTERNAL_STARTS.search(literal) or pieces[i + 1] is None and (
                    "<" in literal or "[[" in literal or "]]" in literal):
                return None  # (the parser reads tags, links and external links in there too)
            pieces[i] = literal
        text = "".join(pieces[i] for i in range(len(pieces)) if i % 4 in (0, 2))
    return None if text is None else unescape(text)


def unescape(text: str) -> str:
    """html.unescape(text): the C version (native/unescape.c) where it is certain, else Python's."""
    if "&" not in text:
        return text
    fast = native.transform("bk_unescape", text)
    return fast if fast is not None else html.unescape(text)


def _markup_to_text(text: str) -> str | None:
    """Links, file links, external links and tags rewritten, or None (the parser decides): the C
    version where it is certain, else the Python one."""
    fast = native.transform("bk_markup_to_text", text)
    return fast if fast is not None else _python_markup_to_text(text)


def _python_markup_to_text(text: str) -> str | None:
    """_markup_to_text in Python: the authority (native/markup.c follows it pass by pass)."""
    if "|]]]" in text or "]]]]" in text and _PAIR_BEFORE_3.search(text):
        return None  # (the parser lets a link's text start with `]`, and ends none with `[x]]]]`)
    if "[[" in text:
        text = _links_to_text(text, _MAX_NESTING)
        if text is None:
            return None
    if "[" in text:
        if _nested_external(text):
            return None
        text = "".join(_EXTERNAL.split(text))
    if "<" in text:
        text = _strip_tags(text)
        if text is None:
            return None
    if "[[" in text or "]]" in text or ("<" in text and _TAG_RESIDUE.search(text)):
        return None
    return text.replace("\0", "") if "\0" in text else text


def _links_to_text(text: str, levels: int) -> str | None:
    """Links as their text, file links out (as \\0, so that brackets on either side cannot make a new
    link); a link's text is rewritten on its own, for the links in it. A link the passes do not match is
    left for the residue check, never matched again by a later pass."""
    parts = _LINK.split(_FILE_LINK.sub("\0", text))
    for n in range(1, len(parts), 2):
        if "[[" in parts[n]:
            parts[n] = _links_to_text(parts[n], levels - 1) if levels > 1 else None
            if parts[n] is None:
                return None
    return "".join(parts)


def _nested_external(text: str) -> bool:
    """Whether an external link's text, up to the first `]` on its line, holds the start of another:
    the parser reads one link there, the fast path the inner one. In one pass: the next `]` and line end
    are looked up again only once a link start is past them (a line of unclosed links stays linear)."""
    starts = [m.start() for m in _EXTERNAL_STARTS.finditer(text)]
    close = end = -1
    for start, following in zip(starts, starts[1:]):
        if close < start:
            close = _find(text, "]", start)
        if end < start:
            end = min(_find(text, "\n", start), _find(text, "\r", start))
        if following < close < end:
            return True
    return False


def _find(text: str, mark: str, start: int) -> int:
    at = text.find(mark, start)
    return len(text) if at < 0 else at


def _strip_tags(text: str) -> str | None:
    """`text` without its HTML tags, or None if an end tag comes before any start tag of its name (the
    parser keeps such a tag as text), or an extension tag (<poem>, ...) is unclosed or nested in one of
    its name (the parser keeps an unclosed one as text, unlike an HTML start tag)."""
    out, last, open_tags = [], 0, {}
    for m in _TAG.finditer(text):
        name = m.group(2)
        if m.group(1):
            if not open_tags.get(name):
                return None
            open_tags[name] -= 1
        elif not m.group().rstrip(" \t\r\n>").endswith("/"):
            if name in _EXTENSION_TAGS and open_tags.get(name):
                return None
            open_tags[name] = open_tags.get(name, 0) + 1
        out.append(text[last:m.start()])
        last = m.end()
    if any(open_tags.get(name) for name in _EXTENSION_TAGS):
        return None
    out.append(text[last:])
    return "".join(out)


def parser_plain_text(text: str) -> str:
    """The plain text of cut wikitext by wikitextparser: the authority and the fallback."""
    import wikitextparser

    return wikitextparser.parse(text).plain_text(replace_tables=_drop_table, replace_bolds_and_italics=False)


def _drop_table(_table) -> str:
    return ""
