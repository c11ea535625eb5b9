"""`bert prepare-corpus` on real data: a Wikipedia dump excerpt (206 enwiki pages, as a plain bz2 dump
and rebuilt as a multistream dump with its index) and the Brown corpus (BERT format, re-joined into
paragraphs, JSON lines, compressed), and the bad inputs of issue 15, each one line and exit 2 with
nothing left as if complete."""

from __future__ import annotations

import bz2
import collections
import gzip
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from bz2_decoders import bz2_decoder  # noqa: F401  (fixture: 7-Zip's or indexed_bzip2's bz2 decoder)
from conftest import ROOT, one_line_error, run_bert
from gcs_server import gcs, gcs_prefix  # noqa: F401  (fixtures: a real GCS-API server on loopback)
from processes import descendants, still_running

LOOSE = ("--min_sentences=1", "--min_chars=0", "--nodedup", "--normalization=none")


def prepare(*args: str, check: bool = True, env: dict | None = None):
    return run_bert("prepare-corpus", *args, check=check, env=env)


def shards(out: pathlib.Path) -> list[pathlib.Path]:
    return sorted(out.glob("corpus-*-of-*.txt"))


def documents(out: pathlib.Path) -> list[list[str]]:
    docs = []
    for path in shards(out):
        for block in path.read_text(encoding="utf-8").split("\n\n"):
            lines = [l for l in block.split("\n") if l]
            if lines:
                docs.append(lines)
    return docs


def read_documents(path: str) -> list[list[str]]:
    return [[l for l in b.split("\n") if l.strip()] for b in pathlib.Path(path).read_text("utf-8").split("\n\n")
            if b.strip()]


def shard_bytes(out: pathlib.Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in shards(out)}


# --------------------------------------------------------------------------------------------------
# Wikipedia
# --------------------------------------------------------------------------------------------------
def _page_blocks(xml: str) -> list[str]:
    return re.findall(r"  <page>.*?</page>\n", xml, flags=re.S)


def test_wiki_dump_articles_only_markup_removed_headings_not_sentences(wiki_excerpt, tmp_path):
    xml = bz2.decompress(pathlib.Path(wiki_excerpt).read_bytes()).decode("utf-8")
    pages = _page_blocks(xml)
    redirects = [p for p in pages if "<redirect" in p and "<ns>0</ns>" in p]
    other_ns = [p for p in pages if "<ns>0</ns>" not in p]
    out = tmp_path / "out"
    proc = prepare(f"--input_file={wiki_excerpt}", f"--output_dir={out}", "--num_shards=2")
    report = json.loads((out / "corpus_report.json").read_text())
    assert report["documents_in"] == len(pages) == 206
    assert report["dropped"]["redirect"] == len(redirects) == 99
    assert report["dropped"]["not_article_namespace"] == len(other_ns) == 1
    assert report["dropped"]["disambiguation"] >= 1
    assert report["documents_out"] == len(documents(out)) == len(pages) - sum(report["dropped"].values())
    assert f"{report['documents_out']} of 206 documents kept" in proc.stdout
    text = "\n".join(p.read_text("utf-8") for p in shards(out))
    for markup in ("{{", "}}", "[[", "]]", "<ref", "&nbsp;", "'''", "==", "Category:", "thumb|"):
        assert markup not in text, markup
    lines = set(text.split("\n"))
    assert ("Anarchism is a political philosophy that advocates self-governed societies based on "
            "voluntary institutions.") in lines
    # Headings (==History==, ===Origins===) end paragraphs and are no sentence of their own.
    assert "History" not in lines and "Origins" not in lines
    # The report names the file and page of its examples, as JSON and as Markdown.
    example = report["examples"]["redirect"][0]
    assert example["where"].startswith(f"{wiki_excerpt}: page ") and example["text"].startswith("#REDIRECT")
    md = (out / "corpus_report.md").read_text()
    assert "| redirect | 99 |" in md and example["where"] in md


ARTICLE = """{{Infobox country|name=X|pop={{formatnum:100}}<ref>{{cite web|url=u}}</ref>}}
'''Xland''' ({{lang-de|''Ixland''}}; {{IPA|x}}) is a [[country]] in [[Europe|western Europe]].<ref name="a">A
[[source]].</ref> Its highest point is {{convert|3003|m|ft}} high.<ref name=b/>
[[File:Map.png|thumb|A map with [[Xland]] in it.]]
<!-- a comment -->
== History ==
{| class="wikitable"
| a table cell || {{flag|Y}}
|}
The '''''first''''' settlers arrived in {{circa}} 1200 from [[Y|Yland]]'s coast.
* a list item
=== Later ===
In 1900 the [http://example.org state] was founded.&nbsp;It grew.

== References ==
{{reflist}}
The text of a references section.
[[Category:Countries]]
[[de:Xland]]
"""


def test_wikitext_to_paragraphs_exactly():
    from bert_core.corpus.wiki import wikitext_to_paragraphs

    assert wikitext_to_paragraphs(ARTICLE) == [
        "Xland (Ixland) is a country in western Europe. Its highest point is 3003 m high.",
        "The first settlers arrived in 1200 from Yland's coast.",
        "In 1900 the state was founded. It grew.",  # &nbsp; is a space
    ]


def test_fast_path_gives_the_parsers_paragraphs_on_the_excerpt(wiki_excerpt):
    """The regex fast path against wikitextparser (the authority) on the 98 real articles: the same
    plain text wherever it does not give up, and today it gives up on none."""
    from bert_core.corpus import wiki, wikimarkup

    articles = [d.text for d in wiki.iter_dump(wiki_excerpt) if not d.dropped]
    assert len(articles) == 98
    given_up = []
    for n, article in enumerate(articles):
        cut = wiki.cut_text(article)
        plain = wikimarkup.fast_plain_text(cut)
        if plain is None:
            given_up.append(n)
        else:
            assert plain == wikimarkup.parser_plain_text(cut), n
        assert wiki.wikitext_to_paragraphs(article) == wiki.wikitext_to_paragraphs(article, parser_only=True), n
    assert len(given_up) <= 2, given_up


HARD_CASES = [  # (wikitext, whether the fast path handles it rather than giving up)
    ("A [[Dog|{{lang|fr|chien}} {{x|{{y|{{z}}}}}}]]s barks at [[cat]]s.", True),  # templates in a link
    ("[[File:A b.jpg|thumb|A [[cat]] on a [[mat|rug]], see [1.1.0].]]\nText after the image.", True),
    ("[[Image:x.svg|[[File:y.png|z]] [[a|b]]]] Nested files.", True),
    ("See<ref>{{cite web|title={{x|y}} [[a]]}}</ref> the text.<ref name=b/> End.", True),
    ("{{box|\n{| class=t\n| cell {{flag|Y}}\n|}\n}}\nAfter the table in a template.", True),
    ("Isomers: C<sub>4</sub>H<sub>10</sub>, and [//example.org protocol-relative] [http://x.org] links.", True),
    ("x<nowiki>[not a link] ''</nowiki> y &amp; z&nbsp;w &ndash; v.", True),
    ("x<nowiki>[http://a.org b]</nowiki> y.", False),
    ("x<nowiki>[[not a link]]</nowiki> y.", False),
    ("<blockquote>Quoted [[a|text]].\n\nSecond.</blockquote> [http://a.org b [1] c]", True),
    ("Unclosed [[link and [[a|b]] here.", False),
    ("Unclosed [http://x.org y and [[a]] ok.", True),
    ("A stray </div> end tag.", False),
    ("[[[Triple]]] brackets [[[a|b]]] and [[c]].", True),
    ("[[[[Four]]]] and [[[a]] b] and [[[http://x.org y]]].", False),
    ("<BR>Upper <Sup>case</Sup>.", False),
    ("[http://a.org b [http://c.org d] e]", False),
    ("[[a|b\nc]] d [[http://x.org]] y [[a\nb]]", False),
    ("<nowiki>unclosed [[a]] text", False),
    ("<poem>A [[b|c]]\nd.</poem> <section begin=x/>e<section end=x /> <pre style=\"x\">f [g]</pre>", True),
    ("<pre>a [[b]] &amp;</pre> [[c]]", False),
    ("[http://x.org a <nowiki>b</nowiki> c] d", False),
    ("[[a|b [[c|d]] e]] f [[File:x.png|thumb|a [[b|c]] [1] d|e]] g", True),
    ("[[&nbsp;[[:Cat:x]]]] y", False),  # a link in a target: the outer brackets are text
    ("[[//q.org r][[Image:y.jpg]]]] z", False),  # brackets on both sides of a removed file link
    ("[[File:x.png|thumb|[1] a [2] b]] c", False),  # two [x] pairs between two pipes: not a link
    ("[[File:x.png|thumb|]]] d", False),  # a text starting with `]`
    ("<poem>unclosed", False),  # kept as text by the parser, unlike an unclosed HTML tag
]


@pytest.mark.parametrize("text,handled", HARD_CASES)
def test_fast_path_on_hard_cases_equals_the_parser_or_gives_up(text, handled):
    from bert_core.corpus import wiki, wikimarkup

    cut = wiki.cut_text(text)
    plain = wikimarkup.fast_plain_text(cut)
    assert (plain is not None) == handled
    if plain is not None:
        assert plain == wikimarkup.parser_plain_text(cut)
    assert wiki.wikitext_to_paragraphs(text) == wiki.wikitext_to_paragraphs(text, parser_only=True)


def test_block_cut_equals_its_plain_reading_on_random_markup():
    """The block cut (comments, references, formulas...) in possessive runs with an exact pass where an
    opening is left, against its plain regular expression (quadratic on unclosed tags) on random text."""
    import random

    from bert_core.corpus import wiki

    plain = re.compile(r"<!--.*?(?:-->|\Z)|<(" + wiki._BLOCK_NAMES + r")\b[^>]*?(?:/>|>.*?</\1\s*>)", re.S | re.I)
    pieces = ["<!--", "-->", "-", ">", "<ref>", "</ref>", "<ref name=a/>", "a", "</REF >", "<math>", "</math>", "\n",
              "<ref", "/", "<references/>", "<references>", "</references>", '<Ref name="x/y">', "<ce>", "</ce>",
              "<cex>", "<ref/ >", "<", '<ref name="a<b">']
    rng = random.Random(15)
    for _ in range(20000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        assert wiki._cut_blocks(text) == plain.sub("", text), text


def test_fast_path_equals_the_parser_on_random_markup():
    """Random strings of links, file links, external links, tags, nowiki/pre, entities and brackets
    (cut as articles are): wherever the fast path does not give up, the parser's text exactly."""
    import random

    from bert_core.corpus import wiki, wikimarkup

    pieces = ["[[a]]", "[[a|b]]", "[[File:x.png|thumb|", "[[Image:y.jpg]]", "]]", "[[", "[http://x.org y]",
              "[http://z.org]", "[//q.org r]", "<sup>", "</sup>", "<br/>", "<br>", "<nowiki>", "</nowiki>", "<pre>",
              "</pre>", "&amp;", "&nbsp;", "[", "]", "|", "text ", "\n", "<span class=a>", "</span>", "[[[", "]]]",
              "<poem>", "</poem>", "<BR>", "[[a|[b]]]", ":", "s", " ", "[[:Cat:x]]", "[[a\nb]]", "<section begin=x/>",
              "[[http://x.org]]", "[1]", "<b>", "</b>", "<div>", "</div>", "<!--", "-->", "[[a|b|c]]", "'"]
    rng = random.Random(15)
    handled = 0
    for _ in range(3000):
        cut = wiki.cut_text("".join(rng.choice(pieces) for _ in range(rng.randint(1, 10))))
        plain = wikimarkup.fast_plain_text(cut)
        if plain is not None:
            handled += 1
            assert plain == wikimarkup.parser_plain_text(cut), cut
    assert handled > 500


@pytest.mark.parametrize("unit", ["[[", "[[a|", "[[File:a.jpg|x ", "[http://x.org a ", "<b ", "<sup>x", "]]",
                                  "[[[", "[[[a]]] ", "<nowiki>", "<pre>a</pre>", "( ,", "''x", "<ref>", "<ref",
                                  "</ref><ref>"])
def test_fast_path_is_linear_on_pathological_input(unit):
    """Unclosed or repeated marks cost the fast path (and the cuts before it) time in proportion to
    their number: 4x the input in well under 16x the time."""
    from bert_core.corpus import wiki, wikimarkup

    def cpu(n: int) -> float:
        best = float("inf")
        for _ in range(3):
            start = time.process_time()
            wikimarkup.fast_plain_text(wiki.cut_text(unit * n))
            best = min(best, time.process_time() - start)
        return best

    assert cpu(80_000) < 8 * cpu(20_000) + 0.02


def test_cleaner_normalises_drops_and_reports():
    from bert_core.corpus.clean import Cleaner, Report

    report = Report()
    clean = Cleaner(report, "NFKC", min_sentences=2, min_chars=11)
    assert clean("a:1", ["Cafe\u0301 \ufb01ne\x07  here.", " Tab\there. "], "raw") == ["Café fine here.", "Tab here."]
    assert clean("a:2", ["Café fine here.", "Tab here."], "raw") is None  # the same text after cleaning
    assert clean("a:3", ["One sentence only."], "raw") is None
    assert clean("a:4", ["Short.", "Too."], "raw") is None
    assert clean("a:5", ["\x00", " "], "<raw>") is None
    assert report.to_dict() == {
        "documents_in": 0, "documents_out": 1, "sentences_out": 2, "chars_out": 24,
        "dropped": {"duplicate": 1, "no_text": 1, "too_few_sentences": 1, "too_short": 1},
        "examples": {"duplicate": [{"where": "a:2", "text": "Café fine here. Tab here."}],
                     "no_text": [{"where": "a:5", "text": "<raw>"}],
                     "too_few_sentences": [{"where": "a:3", "text": "One sentence only."}],
                     "too_short": [{"where": "a:4", "text": "Short. Too."}]}}
    assert Cleaner(Report(), "NFC", min_chars=0)("b:1", ["\ufb01ne and well.", "Second one here."], "") == [
        "\ufb01ne and well.", "Second one here."]  # NFC keeps the ligature


def write_multistream(xml: str, out: pathlib.Path, pages_per_stream: int = 10) -> tuple[str, str]:
    """The dump as Wikimedia's multistream layout: a header stream, streams of pages, a footer stream,
    and the index of `offset:page_id:title` lines."""
    pages = _page_blocks(xml)
    head, tail = xml[:xml.index("  <page>")], xml[xml.rindex("</page>\n") + len("</page>\n"):]
    data, index = bytearray(bz2.compress(head.encode())), []
    for i in range(0, len(pages), pages_per_stream):
        group = pages[i:i + pages_per_stream]
        for p in group:
            page_id = re.search(r"<id>(\d+)</id>", p).group(1)
            title = re.search(r"<title>(.*?)</title>", p).group(1)
            index.append(f"{len(data)}:{page_id}:{title}\n")
        data += bz2.compress("".join(group).encode())
    data += bz2.compress(tail.encode())
    dump = out / "enwiki-test-pages-articles-multistream.xml.bz2"
    dump.write_bytes(bytes(data))
    idx = out / "enwiki-test-pages-articles-multistream-index.txt.bz2"
    idx.write_bytes(bz2.compress("".join(index).encode()))
    return str(dump), str(idx)


def test_multistream_dump_equals_plain_dump_any_workers(wiki_excerpt, tmp_path):
    xml = bz2.decompress(pathlib.Path(wiki_excerpt).read_bytes()).decode("utf-8")
    dump, _ = write_multistream(xml, tmp_path)
    prepare(f"--input_file={wiki_excerpt}", f"--output_dir={tmp_path / 'plain'}", "--num_shards=3")
    prepare(f"--input_file={dump}", f"--output_dir={tmp_path / 'multi'}", "--num_shards=3")  # index found beside
    prepare(f"--input_file={dump}", f"--output_dir={tmp_path / 'multi2'}", "--num_shards=3", "--num_workers=2")
    plain = sorted(map(tuple, documents(tmp_path / "plain")))
    assert plain == sorted(map(tuple, documents(tmp_path / "multi")))
    assert shard_bytes(tmp_path / "multi") == shard_bytes(tmp_path / "multi2")
    # Streams, not documents, are shared out: every shard gets whole streams of 10 pages.
    assert all(p.stat().st_size > 0 for p in shards(tmp_path / "multi"))
    assert (json.loads((tmp_path / "plain" / "corpus_report.json").read_text())["dropped"]
            == json.loads((tmp_path / "multi" / "corpus_report.json").read_text())["dropped"])


# --------------------------------------------------------------------------------------------------
# Brown: BERT format, paragraphs, JSON lines, compression; sharding, workers, resume
# --------------------------------------------------------------------------------------------------
def test_bert_format_is_kept_as_is_and_shards_do_not_depend_on_workers(brown_corpus, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    prepare(f"--input_file={brown_corpus}", f"--output_dir={one}", "--num_shards=4", *LOOSE)
    prepare(f"--input_file={brown_corpus}", f"--output_dir={two}", "--num_shards=4", "--num_workers=2", *LOOSE)
    assert shard_bytes(one) == shard_bytes(two) and len(shards(one)) == 4
    gold = read_documents(brown_corpus)
    assert sorted(documents(one)) == sorted(gold)  # detected as BERT format: not re-segmented
    assert all(p.stat().st_size > 0 for p in shards(one))


def test_documents_equal_only_after_cleaning_are_one_document_across_shards(brown_corpus, tmp_path, monkeypatch):
    """Brown documents and copies that differ raw (a control character for a space, doubled spaces,
    a decomposed accent: NFC-equal) but not once cleaned, and raw-identical copies: in blocks of 2 KB,
    most copies go to other shards than their originals, and are dropped there (the copy in the lower
    shard is kept); the same shards for any worker count and after a lost shard is remade."""
    from bert_core.corpus import units

    monkeypatch.setenv("BERT_CORPUS_BLOCK_BYTES", "2000")
    originals = read_documents(brown_corpus)[:40]
    originals.append(["The caf\u00e9 opened in April.", "It closed in June."])
    variants = [[doc[0].replace(" ", "\x07", 1), *(l.replace(" ", "  ") for l in doc[1:])] for doc in originals[:30]]
    variants += originals[30:40]  # raw-identical
    variants.append(["The cafe\u0301 opened in April.", "It closed in June."])
    source = tmp_path / "corpus.txt"
    source.write_text("\n\n".join("\n".join(d) for d in originals + variants) + "\n", encoding="utf-8")
    shard_of = {}  # a document's raw text -> its shard
    for n, block in enumerate(units.blocks(str(source), "bert", 2000)):
        for doc in units.block_documents(block, "bert", "fail"):
            shard_of[doc.text] = n % 4
    assert len(shard_of) == 82 - 10
    raw = lambda doc: "\n".join(doc)  # noqa: E731
    crossing = sum(shard_of[raw(originals[i])] != shard_of[raw(variants[i])] for i in range(30))
    assert crossing > 15 and shard_of[raw(originals[40])] != shard_of[raw(variants[40])]

    args = (f"--input_file={source}", "--corpus_format=bert", "--num_shards=4", "--min_sentences=1", "--min_chars=0")
    one, two = tmp_path / "one", tmp_path / "two"
    prepare(*args, f"--output_dir={one}")
    prepare(*args, f"--output_dir={two}", "--num_workers=2")
    assert shard_bytes(one) == shard_bytes(two)
    assert sorted(documents(one)) == sorted(originals)
    report = json.loads((one / "corpus_report.json").read_text())
    assert report["documents_in"] == 82 and report["documents_out"] == 41
    assert report["dropped"] == {"duplicate": 41}
    assert report["sentences_out"] == sum(len(d) for d in originals)
    # A lost shard (one that lost copies in the pass) is remade, the pass redone: the same bytes and report.
    first = shard_bytes(one)
    lost = max(first)  # the last shard: it can only lose copies, never keep them
    (one / lost).unlink()
    (one / "corpus_report.json").unlink()
    prepare(*args, f"--output_dir={one}")
    assert shard_bytes(one) == first
    assert json.loads((one / "corpus_report.json").read_text()) == report
    # A rerun rewrites nothing and counts the same.
    mtimes = {p.name: p.stat().st_mtime_ns for p in shards(one)}
    prepare(*args, f"--output_dir={one}")
    assert {p.name: p.stat().st_mtime_ns for p in shards(one)} == mtimes
    assert json.loads((one / "corpus_report.json").read_text()) == report
    # Killed in the pass, after a shard's counts and before its rewrite: the rerun ends it the same.
    from bert_core.config import PrepareCorpusConfig
    from bert_core.corpus import cross_shard
    from bert_core.corpus.prepare import prepare_corpus_main

    killed = tmp_path / "killed"

    def kill(*_):
        raise KeyboardInterrupt

    with monkeypatch.context() as patched, pytest.raises(KeyboardInterrupt):
        patched.setattr(cross_shard, "_write", kill)
        prepare_corpus_main(PrepareCorpusConfig(input_file=str(source), output_dir=str(killed), corpus_format="bert",
                                                num_shards=4, min_sentences=1, min_chars=0))
    assert list((killed / ".corpus_stats").glob("*.dups.json")) and not (killed / "corpus_report.json").exists()
    assert shard_bytes(killed) != first  # the copies are still there
    prepare(*args, f"--output_dir={killed}")
    assert shard_bytes(killed) == first
    assert json.loads((killed / "corpus_report.json").read_text()) == report


def _f1(gold: list[list[str]], predicted: list[list[str]]) -> float:
    hits = sum(sum((collections.Counter(g) & collections.Counter(p)).values()) for g, p in zip(gold, predicted))
    precision = hits / sum(map(len, predicted))
    recall = hits / sum(map(len, gold))
    return 2 * precision * recall / (precision + recall)


def test_paragraphs_are_segmented_like_browns_own_sentences(brown_corpus, tmp_path):
    """Brown's sentences joined five to a paragraph (a paragraph a line), re-split: exact sentence F1
    (blingfire measured 0.86-0.87; NLTK's untrained punkt 0.81)."""
    gold = read_documents(brown_corpus)
    text = tmp_path / "brown-paragraphs.txt"
    text.write_text("\n\n".join("\n".join(" ".join(d[i:i + 5]) for i in range(0, len(d), 5)) for d in gold) + "\n")
    out = tmp_path / "out"
    prepare(f"--input_file={text}", f"--output_dir={out}", *LOOSE)  # detected as text: re-segmented
    predicted = documents(out)
    assert len(predicted) == len(gold)
    assert _f1(gold, predicted) > 0.85


def test_json_lines_gzip_and_zstd_with_a_text_field_and_duplicates(brown_corpus, tmp_path):
    import zstandard

    gold = read_documents(brown_corpus)[:60]
    lines = [json.dumps({"id": i, "body": "\n".join(d)}) for i, d in enumerate(gold)]
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(("\n".join(lines[:30]) + "\n").encode()))
    (tmp_path / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(
        ("\n".join(lines[30:] + lines[:10]) + "\n").encode()))  # the first ten again: duplicates
    out = tmp_path / "out"
    prepare(f"--input_file={tmp_path}/a.jsonl.gz,{tmp_path}/*.zst", f"--output_dir={out}", "--num_shards=3",
            "--text_field=body", "--min_sentences=1", "--min_chars=0", "--normalization=none")
    # Each JSON line's lines are paragraphs, as a paragraph a line in a text file: the same documents.
    text = tmp_path / "same.txt"
    text.write_text("\n\n".join("\n".join(d) for d in gold) + "\n")
    prepare(f"--input_file={text}", f"--output_dir={tmp_path / 'text'}", "--corpus_format=text", "--num_shards=3",
            "--min_sentences=1", "--min_chars=0", "--normalization=none")
    assert sorted(documents(out)) == sorted(documents(tmp_path / "text"))
    assert len(documents(out)) == 60
    report = json.loads((out / "corpus_report.json").read_text())
    assert report["documents_in"] == 70 and report["dropped"] == {"duplicate": 10}
    # A copy in its original's shard is named by its line, one in a later shard by the shard (the pass).
    assert all(e["where"].startswith((f"{tmp_path}/b.jsonl.zst:", "corpus-0000"))
               for e in report["examples"]["duplicate"])


def test_rerun_rewrites_nothing_and_a_lost_shard_is_remade_the_same(brown_corpus, tmp_path):
    out = tmp_path / "out"
    prepare(f"--input_file={brown_corpus}", f"--output_dir={out}", "--num_shards=4")
    first = shard_bytes(out)
    mtimes = {p.name: p.stat().st_mtime_ns for p in shards(out)}
    prepare(f"--input_file={brown_corpus}", f"--output_dir={out}", "--num_shards=4")
    assert {p.name: p.stat().st_mtime_ns for p in shards(out)} == mtimes
    (out / "corpus-00002-of-00004.txt").unlink()  # as a kill before its rename leaves it
    (out / "corpus_report.json").unlink()
    proc = prepare(f"--input_file={brown_corpus}", f"--output_dir={out}", "--num_shards=4")
    assert "3 of 4 shards already whole" in proc.stderr
    assert shard_bytes(out) == first
    assert {p.name: p.stat().st_mtime_ns for p in shards(out) if p.name != "corpus-00002-of-00004.txt"} == {
        k: v for k, v in mtimes.items() if k != "corpus-00002-of-00004.txt"}
    # Another --num_shards replaces the earlier shards rather than mixing with them.
    prepare(f"--input_file={brown_corpus}", f"--output_dir={out}", "--num_shards=2")
    assert [p.name for p in shards(out)] == ["corpus-00000-of-00002.txt", "corpus-00001-of-00002.txt"]


def kill_while_writing(flags, out, settle: float, env: dict | None = None) -> None:
    """Start prepare-corpus with 2+ workers, SIGKILL it `settle` s after its first shard temporary
    appears, and check that no worker outlives it and that the kill landed mid-write."""
    proc = subprocess.Popen([sys.executable, "-m", "bert_core.cli", "prepare-corpus", *flags, f"--output_dir={out}"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **(env or {})})
    deadline = time.time() + 120
    while not list(out.glob(".corpus-*.tmp")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(settle)
    workers = descendants(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(workers) >= 2 and still_running(workers, 5) == {}
    assert list(out.glob(".corpus-*.tmp")), "the kill should land while shards are being written"


def test_sigkill_ends_the_workers_and_the_rerun_makes_the_same_shards(wiki_excerpt, tmp_path):
    xml = bz2.decompress(pathlib.Path(wiki_excerpt).read_bytes()).decode("utf-8")
    start, end = xml.index("  <page>"), xml.rindex("</page>\n") + len("</page>\n")
    # Long enough to be killed midway (shards are open from the start): 6 copies take ~3 s with 2 workers
    # here; 2 copies (~1 s since the markup fast path) could end before the kill.
    dump = tmp_path / "x6.xml.bz2"
    dump.write_bytes(bz2.compress((xml[:start] + xml[start:end] * 6 + xml[end:]).encode()))
    flags = [f"--input_file={dump}", "--num_shards=4", "--num_workers=2", "--nodedup"]
    prepare(*flags, f"--output_dir={tmp_path / 'clean'}")
    expected = shard_bytes(tmp_path / "clean")
    out = tmp_path / "out"
    kill_while_writing(flags, out, settle=0.5)
    for name, data in shard_bytes(out).items():  # anything under a final name is whole
        assert data == expected[name]
    assert not (out / "corpus_report.json").exists()
    prepare(*flags, f"--output_dir={out}")
    assert shard_bytes(out) == expected and not list(out.rglob("*.tmp"))


def _paragraphs(docs: list[list[str]]) -> str:
    """Documents as a text file: their sentences five to a paragraph, a paragraph a line."""
    return "\n\n".join("\n".join(" ".join(d[i:i + 5]) for i in range(0, len(d), 5)) for d in docs) + "\n"


def _block_split_inputs(brown_corpus, tmp_path) -> tuple[list[str], dict]:
    """Brown's first 120 documents as paragraphs (text) and the next 120 as JSON lines, every 7th of
    the second half of each cut to one sentence (dropped, an example in the report), and a block size
    (env) with which a block's nominal end falls exactly on an empty line of the text file and others
    inside documents: each file is 7 or so blocks."""
    gold = read_documents(brown_corpus)[:240]
    gold = [d[:1] if i % 120 >= 60 and i % 7 == 0 else d for i, d in enumerate(gold)]
    text = _paragraphs(gold[:120]).encode()
    separators = [m.start() for m in re.finditer(b"\n\n", text)]
    size = separators[len(separators) // 7]  # the first block ends with an empty line, exactly at its end
    ends = [k * size for k in range(1, len(text) // size + 1)]
    assert text[ends[0]:ends[0] + 2] == b"\n\n"
    assert any(not text[e - 1:e + 2].count(b"\n") for e in ends)  # inside a line of a document
    (tmp_path / "paragraphs.txt").write_bytes(text)
    lines = [json.dumps({"text": "\n".join(d)}) for d in gold[120:240]]
    (tmp_path / "docs.jsonl").write_text("\n".join(lines) + "\n")
    return [str(tmp_path / "paragraphs.txt"), str(tmp_path / "docs.jsonl")], {"BERT_CORPUS_BLOCK_BYTES": str(size)}


def test_blocks_are_whole_documents_for_any_size_compression_and_line_ending(tmp_path):
    """Cut at every size from 1 byte up, the blocks of a file read as the whole file does: the same
    documents with the same `file:line`, whatever the separators (several empty lines, CRLF) and the end."""
    import random

    from bert_core.corpus import readers, units

    rng = random.Random(15)
    path = tmp_path / "corpus"
    for trial in range(60):
        docs = ["\n".join("w" * rng.randint(1, 30) for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(0, 12))]
        data = rng.choice(["\n\n", "\n\n\n", "\n\r\n"]).join(docs) + rng.choice(["", "\n", "\n\n"])
        jsonl = "".join(json.dumps({"text": d}) + "\n" for d in docs)
        for kind, body in (("text", data), ("jsonl", jsonl)):
            raw = body.encode()
            path.write_bytes(gzip.compress(raw) if trial % 3 == 0 else raw)
            whole = (readers.iter_json_lines(str(path), "text") if kind == "jsonl"
                     else readers.iter_blocks(str(path), kind))
            expected = [(d.where, d.text) for d in whole]
            for size in (1, 2, 3, rng.randint(4, 80), rng.randint(80, 400)):
                blocks = list(units.blocks(str(path), kind, size))
                assert b"".join(b.data for b in blocks) == raw
                assert sum(b.size for b in blocks) == path.stat().st_size
                assert [(d.where, d.text) for b in blocks for d in units.block_documents(b, "text", "fail")] == expected


def test_block_split_text_and_jsonl_same_bytes_for_any_workers_and_lines_named_right(brown_corpus, tmp_path,
                                                                                   monkeypatch):
    from bert_core.corpus import readers, units

    inputs, env = _block_split_inputs(brown_corpus, tmp_path)
    monkeypatch.setenv(*next(iter(env.items())))
    for path, kind in zip(inputs, ("text", "jsonl")):  # blocks are whole documents, as if read whole
        size = int(env["BERT_CORPUS_BLOCK_BYTES"])
        blocks = list(units.blocks(path, kind, size))
        assert 5 < len(blocks) < 10
        if kind == "text":
            assert len(blocks[0].data) == size + 2  # cut right after the empty line at the nominal end
        assert b"".join(b.data for b in blocks) == pathlib.Path(path).read_bytes()
        whole = (readers.iter_json_lines(path, "text") if kind == "jsonl" else readers.iter_blocks(path, kind))
        assert [(d.where, d.text) for d in whole] == [
            (d.where, d.text) for b in blocks for d in units.block_documents(b, "text", "fail")]
    args = [f"--input_file={','.join(inputs)}", "--num_shards=3", "--min_sentences=3", "--min_chars=0"]
    one, two = tmp_path / "one", tmp_path / "two"
    prepare(*args, f"--output_dir={one}")
    prepare(*args, f"--output_dir={two}", "--num_workers=2")
    assert shard_bytes(one) == shard_bytes(two) and all(p.stat().st_size > 0 for p in shards(one))
    report = json.loads((one / "corpus_report.json").read_text())
    assert report == json.loads((two / "corpus_report.json").read_text())
    assert report["documents_in"] == 240 and report["dropped"]["too_few_sentences"] > 3
    # The examples' `file:line` is the document's first line, in blocks that start mid-file too.
    text_lines = pathlib.Path(inputs[0]).read_text().split("\n")
    json_lines = pathlib.Path(inputs[1]).read_text().split("\n")
    wheres = [e["where"] for e in report["examples"]["too_few_sentences"]]
    for where in wheres:
        path, line = where.rsplit(":", 1)
        assert path in inputs and int(line) > 1
        if path == inputs[0]:
            assert int(line) == 1 or text_lines[int(line) - 2] == ""
        else:
            assert json_lines[int(line) - 1].startswith('{"text": ')
    # The same documents as one block a file.
    prepare(*args, f"--output_dir={tmp_path / 'whole'}", env={"BERT_CORPUS_BLOCK_BYTES": str(1 << 30)})
    assert sorted(documents(one)) == sorted(documents(tmp_path / "whole"))


@pytest.mark.skipif(shutil.which("mpirun") is None, reason="no mpirun")
def test_block_split_input_two_mpi_ranks_and_two_workers_make_the_shards_of_one_process(brown_corpus, tmp_path):
    inputs, env = _block_split_inputs(brown_corpus, tmp_path)
    args = [f"--input_file={','.join(inputs)}", "--num_shards=5"]
    single, ranks = tmp_path / "single", tmp_path / "ranks"
    prepare(*args, f"--output_dir={single}", env=env)
    cmd = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "2", "-x", "BERT_CORPUS_BLOCK_BYTES",
           sys.executable, "-m", "bert_core.cli", "prepare-corpus", *args, f"--output_dir={ranks}", "--num_workers=2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600, env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr
    assert "rank 0/2: shards 0, 2, 4" in proc.stderr and "rank 1/2: shards 1, 3" in proc.stderr
    assert shard_bytes(ranks) == shard_bytes(single)
    assert (ranks / "corpus_report.json").read_text() == (single / "corpus_report.json").read_text()


def test_block_split_input_killed_resumes_to_the_same_shards_and_shows_progress(brown_corpus, tmp_path):
    """SIGKILL midway (2 workers), then a rerun: the same bytes; a lost shard is remade alone, its
    blocks read again and the others' skipped; progress counts the bytes of the blocks done."""
    gold = read_documents(brown_corpus)
    text = tmp_path / "paragraphs.txt"
    text.write_text(_paragraphs(gold) * 4)  # long enough to be killed midway (x2 ends ~1 s after start)
    env = {"BERT_CORPUS_BLOCK_BYTES": str(1 << 18), "BERT_PROGRESS_SECONDS": "0"}
    flags = [f"--input_file={text}", "--num_shards=4", "--num_workers=2", "--nodedup"]
    clean = prepare(*flags, f"--output_dir={tmp_path / 'clean'}", env=env)
    expected = shard_bytes(tmp_path / "clean")
    shown = [float(m) for m in re.findall(r"prepare-corpus: +([\d.]+)% of input", clean.stderr)]
    assert shown == sorted(shown) and shown[-1] == 100.0 and len([p for p in shown if 0 < p < 100]) > 3
    out = tmp_path / "out"
    kill_while_writing(flags, out, settle=0.3, env=env)
    assert not (out / "corpus_report.json").exists()
    prepare(*flags, f"--output_dir={out}", env=env)
    assert shard_bytes(out) == expected and not list(out.rglob("*.tmp"))
    lost = "corpus-00001-of-00004.txt"
    (out / lost).unlink()
    again = prepare(*flags, f"--output_dir={out}", env=env)
    assert "3 of 4 shards already whole" in again.stderr and shard_bytes(out) == expected
    shown = [float(m) for m in re.findall(r"prepare-corpus: +([\d.]+)% of input", again.stderr)]
    assert shown == sorted(shown) and shown[-1] == 100.0


def test_create_data_reads_the_shards(brown_corpus, uncased_vocab, tmp_path):
    out = tmp_path / "corpus"
    prepare(f"--input_file={brown_corpus}", f"--output_dir={out}", "--num_shards=2")
    data = tmp_path / "data"
    run_bert("create-data", f"--input_file={out}/corpus-*.txt", f"--vocab_file={uncased_vocab}",
             f"--output_dir={data}", "--dupe_factor=1", "--max_seq_length=64", "--max_predictions_per_seq=10",
             check=True)
    assert json.loads((data / "data_manifest.json").read_text())["totals"]["instances"] > 1000


@pytest.mark.skipif(shutil.which("mpirun") is None, reason="no mpirun")
def test_two_mpi_ranks_make_the_shards_of_one_process(wiki_excerpt, tmp_path):
    single, ranks = tmp_path / "single", tmp_path / "ranks"
    prepare(f"--input_file={wiki_excerpt}", f"--output_dir={single}", "--num_shards=3")
    cmd = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "2", sys.executable, "-m", "bert_core.cli",
           "prepare-corpus", f"--input_file={wiki_excerpt}", f"--output_dir={ranks}", "--num_shards=3"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "rank 0/2: shards 0, 2" in proc.stderr and "rank 1/2: shards 1" in proc.stderr
    assert shard_bytes(ranks) == shard_bytes(single)
    assert (ranks / "corpus_report.json").read_text() == (single / "corpus_report.json").read_text()


def test_object_storage_input_and_output(wiki_excerpt, tmp_path, gcs, gcs_prefix, monkeypatch):
    from bert_core import storage

    env = {**gcs.env, "BERT_STORAGE_RETRY_DEADLINE": "20"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    storage.write_bytes(f"{gcs_prefix}/dumps/enwiki-excerpt.xml.bz2", pathlib.Path(wiki_excerpt).read_bytes())
    local = tmp_path / "local"
    prepare(f"--input_file={wiki_excerpt}", f"--output_dir={local}", "--num_shards=2")
    run_bert("prepare-corpus", f"--input_file={gcs_prefix}/dumps/*.xml.bz2", f"--output_dir={gcs_prefix}/out",
             "--num_shards=2", check=True, env=env)
    for name, data in shard_bytes(local).items():
        assert storage.read_bytes(f"{gcs_prefix}/out/{name}") == data
    report = json.loads(storage.read_bytes(f"{gcs_prefix}/out/corpus_report.json"))
    assert report["documents_out"] == json.loads((local / "corpus_report.json").read_text())["documents_out"]


# --------------------------------------------------------------------------------------------------
# Bad input: one line naming the file (and line or page), exit 2, nothing left as if complete
# --------------------------------------------------------------------------------------------------
def _nothing_written(out: pathlib.Path) -> bool:
    return not shards(out) and not (out / "corpus_report.json").exists() and not [
        p for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")] if out.exists() else True


def test_truncated_bz2_dump(wiki_excerpt, tmp_path, bz2_decoder):
    data = pathlib.Path(wiki_excerpt).read_bytes()
    cut = tmp_path / "cut.xml.bz2"
    cut.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    line = one_line_error(prepare(f"--input_file={cut}", f"--output_dir={out}", "--num_shards=2", check=False,
                                  env=bz2_decoder))
    assert f"{cut}: the compressed data is truncated or corrupt" in line
    assert _nothing_written(out)
    assert not list(out.rglob("*.tmp*")) and not [p for p in out.iterdir() if p.is_file()]
    # With workers fed by the reader: the reader's error stops them (no hang), hidden temporaries at most.
    proc = subprocess.Popen([sys.executable, "-m", "bert_core.cli", "prepare-corpus", f"--input_file={cut}",
                             f"--output_dir={out}", "--num_shards=2", "--num_workers=2"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **bz2_decoder})
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and err.strip().startswith(f"bert: error: {cut}: the compressed data is truncated")
    assert _nothing_written(out)


def _cut(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _garbled(data: bytes) -> bytes:
    return data[:40] + b"\x00" * 20 + data[60:]


@pytest.mark.parametrize("name, damage, detail", [
    ("cut.jsonl.gz", _cut, "truncated: Compressed file ended before the end-of-stream marker was reached"),
    ("garbled.jsonl.gz", _garbled, "Error -3 while decompressing data"),
    ("cut.jsonl.zst", _cut, "truncated: zstd data ended inside a frame"),
])
def test_truncated_or_corrupt_gzip_and_zstd(brown_corpus, tmp_path, name, damage, detail):
    import zstandard

    lines = "".join(json.dumps({"text": "\n".join(d)}) + "\n" for d in read_documents(brown_corpus)[:40]).encode()
    data = gzip.compress(lines) if name.endswith(".gz") else zstandard.ZstdCompressor().compress(lines)
    src = tmp_path / name
    src.write_bytes(damage(data))
    out = tmp_path / "out"
    line = one_line_error(prepare(f"--input_file={src}", f"--output_dir={out}", "--num_shards=2", check=False))
    assert f"{src}: the compressed data is truncated or corrupt" in line and detail in line
    assert _nothing_written(out)


@pytest.mark.parametrize("name, content, line", [
    ("feed.xml", '<?xml version="1.0"?>\n<rss><channel><item><title>x</title></item></channel></rss>\n',
     "{path}: not a MediaWiki dump (the root element is <rss>, expected <mediawiki>)"),
    ("web.jsonl", '{"text": "One sentence here. And another one."}\n{"content": "no text field"}\n',
     "{path}:2: no field 'text' (fields: content); set --text_field"),
    ("list.jsonl", '{"text": "One sentence here. And another one."}\n["a list"]\n',
     "{path}:2: a JSON list, expected an object with a 'text' field"),
])
def test_not_a_dump_and_json_lines_without_the_field(tmp_path, name, content, line):
    src = tmp_path / name
    src.write_text(content)
    error = one_line_error(prepare(f"--input_file={src}", f"--output_dir={tmp_path / 'out'}", check=False))
    assert line.format(path=src) in error
    assert _nothing_written(tmp_path / "out")


def test_invalid_utf8_in_a_dump_names_its_line(wiki_excerpt, tmp_path):
    xml = bz2.decompress(pathlib.Path(wiki_excerpt).read_bytes())
    at = xml.index(b"societies based on voluntary institutions")
    bad = tmp_path / "bad.xml.bz2"
    bad.write_bytes(bz2.compress(xml[:at] + b"\xff" + xml[at:]))
    line = one_line_error(prepare(f"--input_file={bad}", f"--output_dir={tmp_path / 'out'}", check=False))
    number = xml[:at].count(b"\n") + 1
    assert f"{bad}: line {number}, column " in line and "not well-formed XML (not well-formed (invalid token))" in line
    assert _nothing_written(tmp_path / "out")


def test_invalid_utf8(tmp_path):
    src = tmp_path / "bad.txt"
    src.write_bytes(b"First sentence. Second one.\n\nAnother document. It goes on.\nBroken \xff byte. Here.\n")
    line = one_line_error(prepare(f"--input_file={src}", f"--output_dir={tmp_path / 'out'}", check=False))
    assert f"{src}:4: invalid UTF-8 at byte 8 of the line" in line
    assert _nothing_written(tmp_path / "out")
    ok = prepare(f"--input_file={src}", f"--output_dir={tmp_path / 'out'}", "--on_bad_utf8=replace",
                 "--min_chars=0")
    assert "2 of 2 documents kept" in ok.stdout
    assert "Broken \ufffd byte." in (tmp_path / "out" / "corpus-00000-of-00001.txt").read_text("utf-8")


def test_empty_result_after_filtering(brown_corpus, tmp_path):
    out = tmp_path / "out"
    line = one_line_error(prepare(f"--input_file={brown_corpus}", f"--output_dir={out}", "--num_shards=2",
                                  "--min_sentences=100000", check=False))
    assert f"{brown_corpus}: no document left after cleaning (0 of 500 documents kept" in line
    assert "too_few_sentences 500" in line
    assert _nothing_written(out)


@pytest.mark.parametrize("task", [0, 1])
def test_bad_input_in_the_readers_own_task_or_a_workers_is_one_line_and_nothing_written(tmp_path, task):
    """With 2 workers the reading process does task 0's blocks itself and a worker process task 1's:
    a bad byte in a block of either stops the run with the same line as with 1 worker."""
    from bert_core.corpus import units

    bad = [n for n in range(10, 40) if units.shard_of(n, 2) == task][0]  # block n: document n, 2 shards
    src = tmp_path / "bad.txt"
    src.write_bytes(b"\n".join(b"Doc %d \xff first. Doc %d second.\n" % (n, n) if n == bad else
                                 b"Doc %d first. Doc %d second.\n" % (n, n) for n in range(60)))
    for workers in (1, 2):
        out = tmp_path / f"out{workers}"
        line = one_line_error(prepare(f"--input_file={src}", f"--output_dir={out}", "--num_shards=2",
                                      f"--num_workers={workers}", check=False, env={"BERT_CORPUS_BLOCK_BYTES": "1"}))
        assert f"{src}:{2 * bad + 1}: invalid UTF-8 at byte 8 of the line" in line
        assert _nothing_written(out)
