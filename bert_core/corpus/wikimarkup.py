"""The plain text of wikitext that `wiki.cut_templates_and_tables` has already cut: a fast path of a few
regular expressions, with wikitextparser as the fallback and the authority.

What is left after the cut is mostly links, HTML tags and entities. The fast path rewrites exactly those,
with the parser's rules (`wikitextparser`'s `plain_text`, measured against it on the dump excerpt,
tests/test_prepare_corpus.py): a wikilink becomes its text or target, a file or image link
(`[[File:x.jpg|...]]`, with links in its caption) is removed whole, a bracketed external link becomes its
text, HTML tags are removed and their content kept, entities are unescaped. Each step is one pass of `re`
(C speed, several times the parser's); nested links (captions) take one more pass per level.

It gives up (returns None) on what it does not handle, and the caller then runs the parser on the same
text: markup left over after the passes (`[[`, `]]`, a tag it does not know such as <nowiki> or <pre>,
an end tag without its start tag) or `[[[`, whose meaning depends on counting brackets. So an unusual
article costs parser time; it is never rewritten by a guess.
"""

from __future__ import annotations

import html
import re

# Extensions after which a link's target (its part after the first colon) names a media file: the
# link is removed whole, caption included (wikitextparser's KNOWN_FILE_EXTENSIONS).
_FILE_EXTENSIONS = ("bmp|djvu|gif|iff|jb2|jp2|jpc|jpeg|jpg|jpx|mid|mka|mkv|mp3|oga|ogg|ogv|ogx|opus|pdf|png|"
                    "psd|spx|stl|svg|swc|swf|tif|tiff|wbmp|webm|webp|wmf|xbm|xcf")
_TITLE = r"[^\[\]|{}<>\n\r]"  # the characters a link target may hold
_SCHEMES = ("bitcoin:|ftp://|ftps://|geo:|git://|gopher://|http://|https://|irc://|ircs://|magnet:|mailto:|"
            "mms://|news:|nntp://|redis://|sftp://|sip:|sips:|sms:|ssh://|svn://|tel:|telnet://|urn:|"
            "worldwind://|xmpp:")
_URL = r"[^ \t\r\n\"<>\[\]]"
# A link's text (after the first pipe): anything but brackets, bar pairs of single brackets
# (`[[File:x.png|the [1.1.0] isomer]]`), as the parser allows.
_LINK_TEXT = r"(?:[^\[\]]++|\[[^\[\]|]*+\])*+"
# A file link without links inside it (its caption's links are rewritten by an earlier pass).
_FILE_LINK = re.compile(r"\[\[(?!:)[^\[\]|{}<>\n\r:]*+:" + _TITLE + r"*+(?:" + "|".join(
    r"(?<=\.(?i:" + "|".join(e for e in _FILE_EXTENSIONS.split("|") if len(e) == n) + r"))" for n in (3, 4))
    + r")(?:\|" + _LINK_TEXT + r")?\]\]")
# Any other innermost link, split into [text, its text or target, text, ...]: `[[target|text]]` gives
# text (pipes and line breaks included, as the parser does), `[[target]]` the target. A target that
# starts with a URL scheme is not a link (the parser's rule); it is left for the external links.
_LINK = re.compile(r"\[\[(?! *(?:" + _SCHEMES + r")" + _URL + r")"
                   r"(?:" + _TITLE + r"*+\|)?((?<=\|)" + _LINK_TEXT + r"|(?<=\[)" + _TITLE + r"*+)\]\]")
# `[url text]` gives text (one space after the URL dropped), `[url]` nothing; schemes in any case.
_EXTERNAL_START = r"\[(?i:" + _SCHEMES + r"|//)"
_EXTERNAL = re.compile(_EXTERNAL_START + _URL + r"++ ?((?:[^\[\]\r\n]|\[(?!(?i:" + _SCHEMES + r"|//)))*+)\]")
# HTML tags wikitextparser knows (lower case only, as it does), bar table tags: the tag goes, its
# content stays. Tags with other names are left, so that the residue check sends the text to the parser.
_TAG = re.compile(r"<(/?)(abbr|bdi|bdo|big|blockquote|br|b|center|cite|code|data|dd|del|dfn|div|dl|dt|em|"
                  r"font|h[1-6]|hr|ins|i|kbd|li|mark|noinclude|ol|onlyinclude|p|q|rb|rp|rtc|rt|ruby|samp|small|span|strike|"
                  r"strong|"
                  r"sub|sup|s|time|tt|ul|u|var|wbr)\b[^<>]*+>")
# What the fast path does not handle, once it is done: the parser decides.
_TAG_RESIDUE = re.compile(r"<[A-Za-z/!]")
_EXTERNAL_RESIDUE = re.compile(_EXTERNAL_START)
# <nowiki>text</nowiki> (its text the group: None for <nowiki/>, which is removed).
_NOWIKI = re.compile(r"<nowiki\s*(?:/>|>(.*?)</nowiki\s*>)", re.S)
_MAX_NESTING = 4  # link-in-caption levels rewritten before giving up (real articles: 2)


def fast_plain_text(text: str) -> str | None:
    """The plain text of cut wikitext (templates, tables, references and quotes already out), or None
    where the fast path does not handle something in it."""
    if "[[[" in text:
        return None
    if "<nowiki" not in text:
        text = _markup_to_text(text)
    else:  # <nowiki> content is literal text: kept as it is, the markup around it rewritten
        pieces = _NOWIKI.split(text)
        for i in range(0, len(pieces), 2):
            pieces[i] = _markup_to_text(pieces[i])
            if pieces[i] is None:
                return None
        for i in range(1, len(pieces), 2):
            if "<" in pieces[i] or "[[" in pieces[i] or "]]" in pieces[i]:
                return None
            pieces[i] = pieces[i] or ""
        text = "".join(pieces)
    return None if text is None else html.unescape(text)


def _markup_to_text(text: str) -> str | None:
    for _ in range(_MAX_NESTING):
        if "[[" not in text:
            break
        text, files = _FILE_LINK.subn("", text)
        parts = _LINK.split(text)
        if files == 0 and len(parts) == 1:
            break
        text = "".join(parts)
    if "[" in text:
        text = "".join(_EXTERNAL.split(text))
    if "<" in text:
        text = _strip_tags(text)
        if text is None:
            return None
    if "[[" in text or "]]" in text or ("<" in text and _TAG_RESIDUE.search(text)) or (
            "[" in text and _EXTERNAL_RESIDUE.search(text)):
        return None
    return text


def _strip_tags(text: str) -> str | None:
    """`text` without its HTML tags, or None if an end tag comes before any start tag of its name (the
    parser keeps such a tag as text)."""
    out, last, open_tags = [], 0, {}
    for m in _TAG.finditer(text):
        name = m.group(2)
        if m.group(1):
            if not open_tags.get(name):
                return None
            open_tags[name] -= 1
        elif not m.group().rstrip(" \t\r\n>").endswith("/"):
            open_tags[name] = open_tags.get(name, 0) + 1
        out.append(text[last:m.start()])
        last = m.end()
    out.append(text[last:])
    return "".join(out)


def parser_plain_text(text: str) -> str:
    """The plain text of cut wikitext by wikitextparser: the authority and the fallback."""
    import wikitextparser

    return wikitextparser.parse(text).plain_text(replace_tables=_drop_table, replace_bolds_and_italics=False)


def _drop_table(_table) -> str:
    return ""
