"""MediaWiki XML dumps: articles as raw documents, and wikitext -> paragraphs.

Pages are streamed (expat, fed a block at a time; only the fields a page needs are kept), so memory
does not grow with the dump. Only articles are kept: namespace 0, not a redirect, not a disambiguation
page (the first two are told by the dump's own `<ns>` and `<redirect>`, the last by its templates or
title); the others are raw documents with a `dropped` reason, counted in the report.

Multistream dumps (`*-multistream.xml.bz2` + `*-multistream-index.txt.bz2`) are bz2 streams of 100
pages each; the index gives each stream's byte offset, so a worker decompresses only the streams of
its own shards (`iter_multistream`): decompression is shared out, not repeated.

Markup rules are wikitextparser's (chosen over mwparserfromhell by measurement: three times the speed
and less markup left; docs/data.md): templates, tables, references, comments, files, categories and
interlanguage links out, links as their text, bold/italics/HTML tags as their text. What is removed
whole (references and other never-prose tags, templates, tables, bold/italic quotes) is cut first by
regular expressions and delimiter matching (`cut_text`; in C, native/cut.c, wherever that is sure to give
the same text); a few inline templates whose rendering is their own text (convert, lang, nowrap, ...)
are kept as that text. What is left, mostly links, tags and
entities, goes by a regex fast path with the parser's rules (`wikimarkup.fast_plain_text`, about ten times
the parser's speed on that text); where that path meets something it does not handle, the parser does the article, and
`parser_only` runs the parser always (the tests check both give the same paragraphs on the excerpt).
Section headings end paragraphs and are not sentences; the sections after the article's prose
(References, External links, See also, ...) and lists are left out.
"""

from __future__ import annotations

import bz2
import pyexpat
import bisect
import re
from dataclasses import dataclass
from typing import Iterable, Iterator

from bert_core import storage
from bert_core.corpus import native, wikimarkup
from bert_core.corpus.readers import (RawDocument, corrupt_input, decompress_bz2, decompression_errors,
                                     open_decompressed)
from bert_core.errors import UserError

# Blocks whose content is never prose: references, comments and the extension tags of formulas,
# galleries, scores, code and maps. Removed before parsing (cheaper, and the parser keeps tag content).
_BLOCK_NAMES = ("ref|references|math|chem|ce|gallery|timeline|score|syntaxhighlight|source|imagemap|graph|"
                "mapframe|maplink|hiero|templatedata|inputbox|categorytree")
# Read as `<!--.*?(-->|\Z)|<(name)\b[^>]*?(/>|>.*?</name\s*>)`, to the first closing. Run here in
# possessive runs that also stop at `<` in a tag and at another opening of the same name: then a tag
# without its closing costs a scan to that next opening, not to the end of the text (linear), and
# where any opening is left after the pass, `_cut_blocks_exactly` gives the first reading's result.
_BLOCKS = re.compile(
    r"<!--(?:[^-]++|-(?!->))*+(?:-->|\Z)"
    r"|<(" + _BLOCK_NAMES + r")\b[^<>]*?(?:/>|>(?:[^<]++|<(?!/\1\s*>|\1\b))*+</\1\s*>)", re.S | re.I)
_BLOCK_START = re.compile(r"<!--|<(" + _BLOCK_NAMES + r")\b", re.I)
# A failed opening left by the pass; no \b, since a removal may join it to a letter (`<ref` + `<x/>` +
# `a`): legitimate text such as `<center>` costs the exact pass, never a wrong result.
_BLOCK_OPENING = re.compile(r"<(?:" + _BLOCK_NAMES + r")", re.I)
_BLOCK_END = re.compile(r"</(" + _BLOCK_NAMES + r")\s*>", re.I)
# [[Category:...]] and interlanguage links ([[de:...]]) never nest; they carry no prose.
_FLAT_LINKS = re.compile(r"\[\[\s*(?:category|[a-z]{2,3}(?:-[a-z]{2,8})*)\s*:[^\[\]\n]*\]\]", re.I)
# Inline templates whose rendering is (mostly) their own text: kept as that text, before the parser
# removes every other template. Flat ones only (no nested braces); a few cover most of the prose.
# native/templates.c reads these patterns and names as written: a change here is made there too (the
# tests pin them).
_TEXT = r"(?:[^|{}=\[\]]|\[\[[^\[\]{}]*\]\])*?"  # an argument: text and plain links
_TEXT_TEMPLATES = (
    (re.compile(r"\{\{\s*(?:convert|cvt)\s*\|\s*(-?[\d.,]+)\s*\|\s*(?:-|–|to|and)\s*\|\s*(-?[\d.,]+)\s*\|"
                r"\s*([^|{}=]+?)\s*(?:\|[^{}]*)?\}\}", re.I), r"\1–\2 \3"),
    (re.compile(r"\{\{\s*(?:convert|cvt)\s*\|\s*(-?[\d.,]+)\s*\|\s*([^|{}=]+?)\s*(?:\|[^{}]*)?\}\}", re.I),
     r"\1 \2"),
    (re.compile(r"\{\{\s*formatnum\s*:\s*([^{}|]*?)\s*\}\}", re.I), r"\1"),
    (re.compile(r"\{\{\s*as of\s*\|\s*(\d{3,4})\s*(?:\|[^{}]*)?\}\}", re.I), r"As of \1"),
    (re.compile(r"\{\{\s*lang(?:\s*\|\s*|-)[a-z]{2,3}(?:-[a-z]{2,8})*\s*\|\s*(" + _TEXT + r")\s*(?:\|[^{}]*)?\}\}",
                re.I), r"\1"),
    (re.compile(r"\{\{\s*(?:nowrap|nobr|small|smaller|smallcaps|sc|sic|not a typo|em|strong|transl\s*\|\s*[a-z-]+)"
                r"\s*\|\s*(" + _TEXT + r")\s*\}\}", re.I), r"\1"),
)
# One pass finds which of those templates an article uses (a name's start: `lang` for lang-fr too); only
# their patterns then run. Their replacements hold no braces; only an empty one right between braces
# (`{{{{formatnum:}}lang|x}}`) could make a new `{{name` that running every pattern would have rewritten
# (here it is cut as a template instead): no text of the excerpt has one.
_TEXT_TEMPLATE_KEYS = (("convert", "cvt"), ("convert", "cvt"), ("formatnum",), ("as of",), ("lang",),
                       ("nowrap", "nobr", "small", "sc", "sic", "not a typo", "em", "strong", "transl"))
_TEXT_TEMPLATE_NAMES = re.compile(r"\{\{\s*(" + "|".join(sorted({n for k in _TEXT_TEMPLATE_KEYS for n in k})) + ")",
                                  re.I)
_TABLE_MARKS = re.compile(r"(\n[ \t:]*(?:\{\||\|\}))")  # a table's first or last line, with the break before
_QUOTE_RUNS = re.compile(r"(''+)")
_HEADING = re.compile(r"^\s*(={1,6})\s*(.*?)\s*\1\s*$")
_DISAMBIGUATION = re.compile(
    r"\{\{\s*(?:disambiguation|disambig|dab|disamb|hndis|geodis|numberdis|mathdab|letter-numbercombdisambig)"
    r"\s*(?:\||\}\})", re.I)
_NOT_PROSE_START = ("*", "#", ":", ";", "|", "!", "{", "}", "[[", "__")
_END_SECTIONS = frozenset({
    "references", "external links", "see also", "further reading", "notes", "bibliography", "sources",
    "citations", "footnotes", "notes and references", "works cited", "references and notes",
    "external link", "reference", "literature", "selected bibliography", "discography", "filmography"})
_EMPTY_BRACKETS = re.compile(r"\(\s*[,;:]?\s*\)|\[\s*\]")
_BRACKET_LEAD = re.compile(r"\(\s*[,;:]\s*")
_BRACKET_TAIL = re.compile(r"\s*[,;:]\s*\)")
_EMPTY_PAREN = re.compile(r"\(\s*[,;:]?\s*\)")  # a test for _EMPTY_BRACKETS with a literal start (fast)
# A test for _BRACKET_TAIL on collapsed white space, `[,;:] ?\)` read from the `)` (a literal start: a fast
# search, where a set first is tried at every character).
_TAIL_TEST = re.compile(r"\)(?<=[,;:]\))|\)(?<=[,;:] \))")
_SPACED_PUNCT = re.compile(r" [,.;:!?]")  # space before punctuation (on collapsed white space): dropped


@dataclass
class Page:
    title: str
    ns: str
    id: str
    redirect: bool
    text: str


# Bytes fed to the parser at a time, and its character buffer: 64 KiB costs no more CPU than 1 MiB and
# keeps the peak memory flat (with 1 MiB it grew by 2 MB from the x8 dump to the x32 one).
_BLOCK = 1 << 16


def _local(name: str) -> str:
    return name[name.rfind("}") + 1:]


def _pages(chunks: Iterable[bytes], path: str, check_root: bool) -> Iterator[Page]:
    """The <page> children of the root of a dump (or of a multistream fragment wrapped in one root).

    expat (pyexpat) directly, with handlers that keep only a page's title, ns, id, redirect and its
    last revision's text (the values ElementTree's elements would give: an element's text is the text
    before its first child, the last of equal children wins); the text is collected only inside those
    elements. A third less CPU than ElementTree.iterparse, which builds every element of the page
    (0.19 against 0.28 CPU s for the 48.7 MB of the x8 dump excerpt; docs/data.md)."""
    parser = pyexpat.ParserCreate(namespace_separator="}")
    parser.buffer_text, parser.buffer_size = True, _BLOCK
    done: list[Page] = []
    depth, fields, redirect, in_revision = 0, {}, False, False
    parts: list[str] | None = None  # the text of the field being read, if one is
    field = ""

    def start(name: str, _attrs) -> None:
        nonlocal depth, parts, field, redirect, in_revision, fields
        if parts is not None:  # a child ends the field's text
            fields[field] = "".join(parts)
            parts = parser.CharacterDataHandler = None
        depth += 1
        if depth == 3:  # a child of a page
            local = _local(name)
            in_revision = local == "revision"
            if in_revision:
                fields.pop("text", None)  # the last revision's text, or none
            elif local in ("title", "ns", "id"):
                field, parts = local, []
                parser.CharacterDataHandler = parts.append
            elif local == "redirect":
                redirect = True
        elif depth == 4:
            if in_revision and _local(name) == "text":
                field, parts = "text", []
                parser.CharacterDataHandler = parts.append
        elif depth == 2:
            fields, redirect, in_revision = {}, False, False
        elif depth == 1 and check_root and _local(name) != "mediawiki":
            raise UserError(f"{path}: not a MediaWiki dump (the root element is <{_local(name)}>, "
                            f"expected <mediawiki>); give --corpus_format for other XML")

    def end(name: str) -> None:
        nonlocal depth, parts
        if parts is not None:
            fields[field] = "".join(parts)
            parts = parser.CharacterDataHandler = None
        if depth == 2 and _local(name) == "page":
            done.append(Page(title=fields.get("title") or "",
                             ns=(fields["ns"] or "0").strip() if "ns" in fields else "0",
                             id=(fields.get("id") or "").strip(), redirect=redirect, text=fields.get("text") or ""))
        depth -= 1

    parser.StartElementHandler, parser.EndElementHandler = start, end
    try:
        for chunk in chunks:
            parser.Parse(chunk, False)
            yield from done
            done.clear()
        parser.Parse(b"", True)
        yield from done
    finally:
        # The parser and its handlers (closures over it) are a reference cycle holding the last page's
        # fields: freed only by a full collection, which came seldom enough that a multistream dump's
        # streams (a parser each) kept ~50 MB of page text alive at 195 MB of input. Broken here.
        parser.StartElementHandler = parser.EndElementHandler = parser.CharacterDataHandler = None
        fields.clear()
        done.clear()


def _raw(page: Page, path: str) -> RawDocument:
    where = f"{path}: page {page.id} {page.title!r}"
    if page.ns != "0":
        reason = "not_article_namespace"
    elif page.redirect or page.text.lstrip()[:9].upper() == "#REDIRECT":
        reason = "redirect"
    elif page.title.endswith("(disambiguation)") or _DISAMBIGUATION.search(page.text):
        reason = "disambiguation"
    else:
        reason = ""
    return RawDocument(where, page.text, "wiki", reason)


def _parse_error(path: str, err: pyexpat.ExpatError) -> UserError:
    return UserError(f"{path}: line {err.lineno}, column {err.offset}: not well-formed XML "
                     f"({pyexpat.errors.messages[err.code]}); expected a MediaWiki XML dump in UTF-8")


def iter_dump(path: str, progress=None) -> Iterator[RawDocument]:
    """Every page of a dump (bz2, gzip, zstd or plain XML) as a raw document, in dump order."""
    try:
        with open_decompressed(path) as (stream, counted):
            for n, page in enumerate(_pages(iter(lambda: stream.read(_BLOCK), b""), path, check_root=True)):
                if progress is not None and n % 64 == 0:
                    progress(counted.count)
                yield _raw(page, path)
            if progress is not None:
                progress(counted.count)
    except pyexpat.ExpatError as err:
        raise _parse_error(path, err) from None
    except decompression_errors() as err:
        raise corrupt_input(path, err) from None


# --------------------------------------------------------------------------------------------------
# Multistream dumps
# --------------------------------------------------------------------------------------------------
def index_beside(path: str) -> str | None:
    """`...-multistream-index.txt.bz2` beside `...-multistream.xml.bz2`, if it exists."""
    name = storage.basename(path)
    if "multistream.xml" not in name:
        return None
    index = storage.join(storage.dirname(path), name.replace("multistream.xml", "multistream-index.txt"))
    return index if storage.exists(index) else None


def stream_offsets(index_path: str, dump_path: str) -> list[tuple[int, int]]:
    """(start, end) byte ranges of the page streams, from the index (`offset:page_id:title` lines)."""
    offsets: list[int] = []
    try:
        with open_decompressed(index_path) as (stream, _):
            for number, raw in enumerate(stream, 1):
                head = raw.split(b":", 1)[0]
                if not head.strip():
                    continue
                if not head.isdigit():
                    raise UserError(f"{index_path}:{number}: expected `offset:page_id:title` (a multistream index)")
                off = int(head)
                if not offsets or off != offsets[-1]:
                    offsets.append(off)
    except decompression_errors() as err:
        raise corrupt_input(index_path, err) from None
    if not offsets:
        raise UserError(f"{index_path}: an empty multistream index")
    size = storage.size(dump_path)
    # The last stream holds the closing </mediawiki>: it ends the last page stream.
    bounds = offsets + [size]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if a < b]


def _read_range(path: str, start: int, end: int) -> bytes:
    with storage.open_read(path, "rb") as f:
        f.seek(start)
        return f.read(end - start)


def check_multistream_header(path: str, first_offset: int) -> None:
    """The bytes before the first page stream are the <mediawiki> header stream."""
    try:
        head = bz2.decompress(_read_range(path, 0, first_offset))
    except (OSError, EOFError, ValueError) as err:
        raise corrupt_input(path, err, "the header stream") from None
    if b"<mediawiki" not in head[:4096]:
        raise UserError(f"{path}: not a MediaWiki dump (no <mediawiki> in its first stream)")


def iter_multistream(path: str, streams: list[tuple[int, int]], keep, progress=None
                     ) -> Iterator[tuple[int, RawDocument]]:
    """(stream number, raw document) for the pages of the streams whose number `keep` accepts."""
    done = 0
    for number, (start, end) in enumerate(streams):
        if not keep(number):
            continue
        try:
            data = decompress_bz2(_read_range(path, start, end))
        except (OSError, EOFError, ValueError) as err:
            raise corrupt_input(path, err, f"the stream at byte {start}") from None
        data = data.replace(b"</mediawiki>", b"")
        try:
            for page in _pages((b"<pages>", data, b"</pages>"), path, check_root=False):
                yield number, _raw(page, path)
        except pyexpat.ExpatError as err:
            raise UserError(f"{path}: the stream at byte {start}: not well-formed XML ({err}); "
                            f"expected <page> elements") from None
        done += end - start
        if progress is not None:
            progress(done)


# --------------------------------------------------------------------------------------------------
# Wikitext -> paragraphs
# --------------------------------------------------------------------------------------------------
# The steps of wikitext_to_paragraphs in C, in order (native/*.c): run as one chain (native.chain), the
# article goes from one to the next as UTF-8, one round trip in all, where a call each would convert it
# at every step (which cost more than most of the C steps themselves).
_C_STEPS = ("bk_cut_blocks_and_flat_links", "bk_text_templates", "bk_cut_quotes_templates_tables",
            "bk_markup_to_text_without_literals", "bk_unescape", "bk_prose_paragraphs")


def wikitext_to_paragraphs(text: str, parser_only: bool = False) -> list[str]:
    """The prose paragraphs of an article's wikitext, markup removed, in order; headings and the
    sections after the prose (References, External links, ...) left out. The links, tags and entities
    left after the cuts go by the fast path (`wikimarkup`), or by wikitextparser where it gives up or
    with `parser_only` (the tests and the benchmark compare the two).

    Every step runs in C first (`_C_STEPS`); where one gives up, that step and the ones after it run as
    the functions below do, each in C where it can and in Python, the authority, where it cannot."""
    if parser_only:
        return prose_paragraphs(wikimarkup.parser_plain_text(cut_text(text)))
    text, done = native.chain(_C_STEPS, text)
    if done == len(_C_STEPS):
        return text.split("\n") if text else []  # (a paragraph holds no line break)
    if done < 1:
        text = _blocks_and_flat_links(text)
    if done < 2:
        text = _inline_templates(text)
    if done < 3:
        text = _quotes_templates_and_tables(text)
    if done < 4:  # fast_plain_text's literal route, or the C gave up on the markup: the rest of the fast path
        plain = wikimarkup.fast_plain_text(text)
        plain = wikimarkup.parser_plain_text(text) if plain is None else plain
    else:
        plain = wikimarkup.unescape(text) if done < 5 else text
    return prose_paragraphs(plain)


def cut_text(text: str) -> str:
    """An article's wikitext without what is removed whole (blocks, category links, quotes, templates,
    tables): what the fast path or the parser then turns into plain text."""
    return _quotes_templates_and_tables(before_parsing(text))


def _quotes_templates_and_tables(text: str) -> str:
    """Quotes, templates and tables out: in C (native/cut.c) where it is sure to give what the Python
    functions below give; they stay the authority, and run where it gives up or the library is
    unavailable."""
    cut = native.transform("bk_cut_quotes_templates_tables", text)
    return cut_templates_and_tables(_drop_quotes(text)) if cut is None else cut


def _drop_quotes(text: str) -> str:
    """Bold and italic quotes out: a run of n quotes leaves one if n % 5 is 1 or 4 (4 quotes are an
    apostrophe before bold), none otherwise, as `'{2,5}` matched left to right does."""
    if "''" not in text:
        return text
    parts = _QUOTE_RUNS.split(text)
    parts[1::2] = ["'" if len(run) % 5 in (1, 4) else "" for run in parts[1::2]]
    return "".join(parts)


def before_parsing(text: str) -> str:
    """What is cut or rewritten before the parser: blocks that are never prose, category and
    interlanguage links, inline templates kept as their text. Both steps run in C (native/cut.c,
    native/templates.c) where it is sure to give what the Python gives (`_cut_blocks` and `_FLAT_LINKS`,
    `_text_templates`: they stay the authority and run where it gives up, mostly on a non-ASCII
    character where a case-insensitive name or a Unicode digit decides)."""
    return _inline_templates(_blocks_and_flat_links(text))


def _blocks_and_flat_links(text: str) -> str:
    cut = native.transform("bk_cut_blocks_and_flat_links", text)
    return _FLAT_LINKS.sub("", _cut_blocks(text)) if cut is None else cut


def _inline_templates(text: str) -> str:
    kept = native.transform("bk_text_templates", text)
    return _text_templates(text) if kept is None else kept


def _text_templates(text: str) -> str:
    """The inline templates whose rendering is their own text, as that text (_TEXT_TEMPLATES, run only
    for the names found)."""
    found = {name.lower() for name in _TEXT_TEMPLATE_NAMES.findall(text)}
    if found:
        for (pattern, replacement), names in zip(_TEXT_TEMPLATES, _TEXT_TEMPLATE_KEYS):
            if not found.isdisjoint(names):
                text = pattern.sub(replacement, text)
    return text


def _cut_blocks(text: str) -> str:
    """Comments and never-prose blocks (references, formulas, ...) out; see _BLOCKS."""
    cut = _BLOCKS.sub("", text)
    return _cut_blocks_exactly(text) if _BLOCK_OPENING.search(cut) else cut


def _cut_blocks_exactly(text: str) -> str:
    """What `<!--.*?(-->|\\Z)|<(name)\\b[^>]*?(/>|>.*?</name\\s*>)` removes, in one pass: the next `>`
    and each name's closings are looked up, not searched for again from every opening."""
    closings: dict[str, list[int]] = {}
    out, last, gt = [], 0, -1
    for m in _BLOCK_START.finditer(text):
        start = m.start()
        if start < last:
            continue  # inside what was removed
        if m.group(1) is None:  # a comment, to --> or the end
            end = text.find("-->", start + 4)
            end = len(text) if end < 0 else end + 3
        else:
            if gt < m.end():
                gt = text.find(">", m.end())
                gt = len(text) if gt < 0 else gt
            if gt == len(text):
                continue  # no `>`: no tag
            if text[gt - 1] == "/" and gt > m.end():
                end = gt + 1  # self-closing
            else:
                if not closings:
                    closings[""] = []
                    for c in _BLOCK_END.finditer(text):
                        closings.setdefault(c.group(1).lower(), []).append(c.start())
                after = closings.get(m.group(1).lower(), [])
                k = bisect.bisect_left(after, gt + 1)
                if k == len(after):
                    continue  # never closed: no block
                end = _BLOCK_END.match(text, after[k]).end()
        out.append(text[last:start])
        last = end
    out.append(text[last:])
    return "".join(out)


def _cut_templates(text: str) -> str:
    """`text` without its outermost balanced `{{...}}` spans (an unclosed one runs to the end; a `}}`
    without its opening stays as text). The marks are found by `str.split` (C speed; `{{` and `}}`
    share no character, so splitting by one and then the other finds what one left-to-right scan for
    either finds); only the marks go through Python."""
    pieces = text.split("{{")
    out, depth = [], 0
    for n, piece in enumerate(pieces):
        if n:
            depth += 1
        if "}}" not in piece:
            if not depth:
                out.append(piece)
            continue
        parts = piece.split("}}")
        if not depth:
            out.append(parts[0])
        for part in parts[1:]:
            if depth:
                depth -= 1
            else:
                out.append("}}")  # a closing mark without its opening: text
            if not depth:
                out.append(part)
    return "".join(out)


def _cut_tables(text: str) -> str:
    """`text` without its outermost balanced tables, from a line starting with `{|` to the line with its
    `|}` mark (after spaces, tabs or colons; an unclosed one runs to the end, a `|}` without its opening
    stays). The marks are matched with the line break before them (a literal start, a fast search);
    that break belongs to the text before the mark, kept where that text is."""
    parts = _TABLE_MARKS.split("\n" + text)  # text, mark, text, ...
    out, depth = [parts[0]], 0
    for n in range(1, len(parts), 2):
        if not depth:
            out.append("\n")
        if parts[n].endswith("{|"):
            depth += 1
        elif depth:
            depth -= 1
        else:
            out.append(parts[n][1:])  # a closing mark without its opening: text
        if not depth:
            out.append(parts[n + 1])
    return "".join(out)[1:]


def cut_templates_and_tables(text: str) -> str:
    """Templates ({{...}}, parser functions too) and tables ({| ... |} lines) out by matching their
    delimiters: what the parser would remove anyway, without making it parse them (the same output on
    the dump excerpt, a quarter less time; docs/data.md)."""
    if "{{" in text:  # (no opening mark: nothing to cut)
        text = _cut_templates(text)
    return _cut_tables(text) if "{|" in text else text


def prose_paragraphs(plain: str) -> list[str]:
    """The paragraphs of the parser's plain text with its heading lines (`== Title ==`) still in:
    headings end paragraphs, the end sections and lists are left out. By the C fast path (native/prose.c;
    with the UTF-8 round trip, under a third of the Python's CPU) where it is certain of
    python_prose_paragraphs' result: a non-ASCII heading title it cannot rule out as an end section, or
    no library, runs the Python."""
    joined = native.transform("bk_prose_paragraphs", plain)
    if joined is not None:
        return joined.split("\n") if joined else []  # (a paragraph holds no line break)
    return python_prose_paragraphs(plain)


def python_prose_paragraphs(plain: str) -> list[str]:
    """prose_paragraphs by the Python code: the rule, which the C path gives up to where unsure."""
    paragraphs: list[str] = []
    skipping = False
    for line in filter(None, plain.split("\n")):  # (an empty line is no paragraph and changes nothing)
        first = line[:1]
        if first == "=" or first.isspace() and line.lstrip()[:1] == "=":
            heading = _HEADING.match(line)
            if heading:
                level, title = len(heading.group(1)), heading.group(2).strip().lower()
                if level <= 2:
                    skipping = title in _END_SECTIONS
                elif title in _END_SECTIONS:
                    skipping = True
                continue
        # Lists and other non-prose lines out first: collapsing white space keeps a line's first mark
        # unless the line starts with white space (checked again below).
        if skipping or line.startswith(_NOT_PROSE_START):
            continue
        # White space collapsed; a printable line (no tab, no-break or other space) without double or
        # edge spaces is already collapsed, and most are: the split is skipped. A line with a tab is out.
        if line.isprintable():
            stripped = line if "  " not in line and first != " " and line[-1] != " " else " ".join(line.split())
        elif "\t" in line:
            continue
        else:
            stripped = " ".join(line.split())
        if first.isspace() and (not stripped or stripped.startswith(_NOT_PROSE_START)):
            continue
        stripped = _tidy(stripped)
        if stripped:
            paragraphs.append(stripped)
    return paragraphs


def _tidy(line: str) -> str:
    """What removed markup left in a line whose white space is already collapsed: empty brackets, a
    bracket's leading or trailing separator, space before punctuation. Each rewrite runs only where a
    cheap test finds its pattern (most lines have none); on collapsed white space they give what they
    give before collapsing, since their white space is `\\s*` and they remove it."""
    tidy = line
    if "(" in tidy and _EMPTY_PAREN.search(tidy) or "[]" in tidy or "[ ]" in tidy:
        tidy = " ".join(_EMPTY_BRACKETS.sub("", tidy).split())
    tidy = _BRACKET_LEAD.sub("(", tidy)
    if _TAIL_TEST.search(tidy):
        tidy = " ".join(_BRACKET_TAIL.sub(")", tidy).split())
    if _SPACED_PUNCT.search(tidy):
        for mark in ",.;:!?":
            tidy = tidy.replace(" " + mark, mark)
    return tidy.lstrip(",;:.) ")
