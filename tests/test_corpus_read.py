"""Reading a MediaWiki dump: the page parser (expat with handlers, bert_core/corpus/wiki.py `_pages`)
gives exactly what ElementTree's elements give, on the real dump excerpt and on odd but well-formed
XML, fed in blocks of any size; bad XML is one line with its file, line and column."""

from __future__ import annotations

import bz2
import io
import pathlib
import xml.etree.ElementTree as ET

import pytest

from bert_core.corpus import wiki
from bert_core.errors import UserError
from bz2_decoders import bz2_decoder  # noqa: F401  (fixture: each test below on both decoders)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def reference_pages(data: bytes) -> list[tuple]:
    """The oracle: each <page> child of the root read from ElementTree's elements (what wiki.py did
    before it used expat directly)."""
    pages = []
    for _, elem in ET.iterparse(io.BytesIO(data), events=("end",)):
        if _local(elem.tag) != "page":
            continue
        fields = {_local(c.tag): c for c in elem}
        revision, text_el = fields.get("revision"), None
        for c in revision if revision is not None else ():
            if _local(c.tag) == "text":
                text_el = c
        pages.append(((fields["title"].text or "") if "title" in fields else "",
                      (fields["ns"].text or "0").strip() if "ns" in fields else "0",
                      (fields["id"].text or "").strip() if "id" in fields else "",
                      "redirect" in fields,
                      (text_el.text or "") if text_el is not None else ""))
    return pages


def parsed(data: bytes, block: int = 1 << 20, check_root: bool = True) -> list[tuple]:
    chunks = (data[i:i + block] for i in range(0, len(data), block))
    return [(p.title, p.ns, p.id, p.redirect, p.text) for p in wiki._pages(chunks, "dump.xml", check_root)]


def test_the_real_excerpt_reads_as_elementtree_reads_it(wiki_excerpt):
    data = bz2.decompress(pathlib.Path(wiki_excerpt).read_bytes())
    expected = reference_pages(data)
    assert len(expected) == 206 and sum("&" in p[4] or "<" in p[4] or '"' in p[4] for p in expected) > 100
    assert parsed(data) == expected
    assert parsed(data, block=4093) == expected  # pages, tags and entities cut across blocks


_HEAD = ('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10" xml:lang="en">\n'
         '  <siteinfo><sitename>W</sitename><namespaces><namespace key="0" /></namespaces></siteinfo>\n')
_ODD_PAGES = [
    # entities: the five named ones, numeric ones (decimal, hex, an escaped & before a reference's text)
    '<page><title>A &amp; B &lt;c&gt;</title><ns>0</ns><id>1</id><revision><id>9</id>'
    '<text xml:space="preserve">x &lt;ref&gt;&quot;q&quot;&lt;/ref&gt; &apos;s &amp;lt; &#38;amp; &#x41;&#233;&#x1F600;'
    '</text></revision></page>',
    # empty text (self-closing, as dumps write it), a redirect, whitespace around ns and id
    '<page><title>R</title><ns> 0 </ns><id>\n 2 </id><redirect title="A &amp; B" />'
    '<revision><text bytes="0" /></revision></page>',
    # no revision; an empty ns and title
    '<page><title/><ns></ns><id>3</id></page>',
    # two revisions: the last one's text; its text has a comment, CDATA and an element in it
    '<page><title>T</title><ns>4</ns><id>4</id><revision><text>old</text></revision>'
    '<revision><contributor><username>u</username><id>7</id></contributor>'
    '<text>a<!-- c -->b<![CDATA[ <c> & ]]>d<b>e</b>f</text></revision></page>',
    # the last revision has no text; a title with a child element (text before it only)
    '<page><title>x<i>y</i>z</title><ns>0</ns><id>5</id><revision><text>gone</text></revision>'
    '<revision><comment>c</comment></revision></page>',
    # \r\n and \r in content (XML makes them \n), &#13; kept as \r, non-ASCII, tabs
    '<page><title>Ü\tö</title><ns>0</ns><id>6</id><revision><text>l1\r\nl2\rl3&#13;\u00e9\u4e2d</text></revision></page>',
    # a text element outside a revision is not the page's text; ids of the revision are not the page's
    '<page><text>no</text><title>N</title><ns>0</ns><id>7</id><revision><id>70</id><text>yes</text></revision></page>',
]


@pytest.mark.parametrize("block", [1, 7, 1 << 20])
def test_odd_but_well_formed_pages_read_as_elementtree_reads_them(block):
    data = (_HEAD + "\n".join(_ODD_PAGES) + "\n</mediawiki>\n").encode()
    expected = reference_pages(data)
    assert [p[0] for p in expected] == ["A & B <c>", "R", "", "T", "x", "Ü\tö", "N"]
    assert expected[0][4] == "x <ref>\"q\"</ref> 's &lt; &amp; Aé\U0001F600"
    assert parsed(data, block) == expected


def test_a_prefixed_namespace_and_a_multistream_fragment():
    prefixed = ('<mw:mediawiki xmlns:mw="http://www.mediawiki.org/xml/export-0.11/"><mw:page><mw:title>P</mw:title>'
                '<mw:ns>0</mw:ns><mw:id>1</mw:id><mw:revision><mw:text>t &amp; u</mw:text></mw:revision>'
                '</mw:page></mw:mediawiki>').encode()
    assert parsed(prefixed) == reference_pages(prefixed) == [("P", "0", "1", False, "t & u")]
    fragment = "\n".join(_ODD_PAGES[:2]).encode()
    chunks = (b"<pages>", fragment, b"</pages>")
    assert ([(p.title, p.ns, p.id, p.redirect, p.text) for p in wiki._pages(chunks, "m.xml.bz2", check_root=False)]
            == reference_pages(b"<pages>" + fragment + b"</pages>"))


@pytest.mark.parametrize("bad", [
    b"<mediawiki><page><title>A</title><revision><text>a < b</text></revision></page></mediawiki>",
    b"<mediawiki><page><title>A &nbsp; B</title></page></mediawiki>",
    b"<mediawiki><page><title>A</title><revision><text>x &#0; y</text></revision></page></mediawiki>",
    b"<mediawiki><page><title>A</title></revision></page></mediawiki>",
    b"<mediawiki>\n<page><title>A</title>\n<revision><text>caf\xe9</text></revision></page></mediawiki>",
    b"<mediawiki><page><title>A</title><revision><text>cut short",
])
def test_bad_xml_is_one_line_with_the_position_elementtree_gives(tmp_path, bad):
    with pytest.raises(ET.ParseError) as expected:
        reference_pages(bad)
    line, column = expected.value.position
    path = tmp_path / "bad.xml"
    path.write_bytes(bad)
    with pytest.raises(UserError) as err:
        list(wiki.iter_dump(str(path)))
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: line {line}, column {column}: not well-formed XML (")
    assert expected.value.msg.split(":")[0] in message


# --------------------------------------------------------------------------------------------------
# bz2: 7-Zip in a child process or indexed_bzip2 on one thread (bert_core/corpus/readers.py
# `_SevenZipBz2`, `_Bz2`; the 7-Zip reader's own cases: tests/test_corpus_7z.py)
# --------------------------------------------------------------------------------------------------
def _read(path: pathlib.Path, block: int) -> bytes:
    from bert_core.corpus.readers import open_decompressed

    out = []
    with open_decompressed(str(path)) as (stream, counted):
        while chunk := stream.read(block):
            out.append(chunk)
    assert counted.count == path.stat().st_size
    return b"".join(out)


def test_bz2_files_decompress_as_the_standard_library_does(wiki_excerpt, tmp_path, bz2_decoder):
    data = pathlib.Path(wiki_excerpt).read_bytes()
    xml = bz2.decompress(data)
    streams = bz2.compress(xml[:1000]) + bz2.compress(xml[1000:2_000_000]) + bz2.compress(b"") + bz2.compress(xml[2_000_000:])
    (tmp_path / "one.bz2").write_bytes(data)
    (tmp_path / "three.bz2").write_bytes(streams)  # a multistream dump read whole: every stream
    for block in (1 << 20, 1000):
        assert _read(tmp_path / "one.bz2", block) == _read(tmp_path / "three.bz2", block) == xml


def test_a_read_bz2_file_is_let_go(wiki_excerpt, monkeypatch, bz2_decoder):
    """indexed_bzip2 1.7.0 keeps references to the object it reads from: the file must not be among them."""
    import gc
    import weakref

    from bert_core.corpus import readers

    opened = []

    def open_read(path, mode="rb"):
        f = open(path, mode)
        opened.append(weakref.ref(f))
        return f

    monkeypatch.setattr(readers.storage, "open_read", open_read)
    assert _read(pathlib.Path(wiki_excerpt), 1 << 20)
    gc.collect()
    assert len(opened) == 1 and opened[0]() is None


_TRUNCATED = "truncated: bz2 data ended before the end-of-stream marker was reached"


@pytest.mark.parametrize("damage, detail", [  # {decoder: the line's end}: they differ in the decoder's words only
    (lambda d: d[:len(d) // 2], {"7zz": _TRUNCATED, "indexed_bzip2": _TRUNCATED}),
    (lambda d: d[:-1], {"7zz": _TRUNCATED, "indexed_bzip2": _TRUNCATED}),
    (lambda d: d[:40] + b"\x00" * 20 + d[60:],
     {"7zz": "invalid bz2 data (Data Error)", "indexed_bzip2": "invalid bz2 data ([BZip2 block header]"}),
    (lambda d: d[:10] + bytes([d[10] ^ 1]) + d[11:],  # the block's CRC
     {"7zz": "invalid bz2 data (CRC Failed)", "indexed_bzip2": "invalid bz2 data (Calculated CRC"}),
])
def test_damaged_bz2_is_one_line(tmp_path, damage, detail, bz2_decoder, request):
    detail = detail[request.node.callspec.params["bz2_decoder"]]
    data = bz2.compress((_HEAD + "\n".join(_ODD_PAGES) * 50 + "</mediawiki>\n").encode())
    path = tmp_path / "bad.xml.bz2"
    path.write_bytes(damage(data))
    with pytest.raises(UserError) as err:
        list(wiki.iter_dump(str(path)))
    assert str(err.value).startswith(f"{path}: the compressed data is truncated or corrupt: {detail}")


def test_decompressed_here_says_whether_the_reading_process_decompresses(tmp_path, monkeypatch):
    """prepare-corpus gives the reading process a task of its own beside a plain dump unless it
    decompresses the dump itself (gzip, zstd, bz2 without 7-Zip)."""
    import bz2 as bz2_module
    import gzip as gzip_module

    from bert_core.corpus import readers

    data = b"<mediawiki></mediawiki>\n"
    files = {"plain.xml": data, "dump.xml.gz": gzip_module.compress(data), "dump.xml.bz2": bz2_module.compress(data)}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    monkeypatch.setattr(readers, "seven_zip", lambda: "/usr/bin/7zz")
    assert [readers.decompressed_here(str(tmp_path / n)) for n in files] == [False, True, False]
    monkeypatch.setattr(readers, "seven_zip", lambda: None)
    assert [readers.decompressed_here(str(tmp_path / n)) for n in files] == [False, True, True]


def test_parsing_a_stream_leaves_nothing_for_the_cycle_collector(wiki_excerpt, tmp_path):
    """Each multistream stream gets a parser whose handlers close over it (a reference cycle): the pages
    it held must go when its stream is done, not at the next full collection, or a dump's streams pile up
    page text (~50 MB at 195 MB of input)."""
    import gc
    import tracemalloc

    from test_prepare_corpus import write_multistream

    dump, index = write_multistream(bz2.decompress(pathlib.Path(wiki_excerpt).read_bytes()).decode(), tmp_path,
                                    pages_per_stream=5)
    streams = wiki.stream_offsets(index, dump)
    assert len(streams) >= 30
    gc.collect()
    gc.disable()
    try:
        tracemalloc.start()
        pages = sum(1 for _ in wiki.iter_multistream(dump, streams, lambda _: True))
        left = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    finally:
        gc.enable()
    assert pages == 206
    assert left < 200_000, left
