"""The C cuts of wiki.py (bert_core/corpus/native/cut.c) against the Python functions they stand for:
the same text, or a give-up (then wiki.py runs the Python), on the excerpt's articles, hard cases and
random markup; few give-ups on real articles (else the C path would be useless), linear time on
pathological input, and the Python path alone where the library is off."""

from __future__ import annotations

import random
import time
from unittest import mock

import pytest

from bert_core.corpus import native, wiki

BLOCKS = "bk_cut_blocks_and_flat_links"
CUTS = "bk_cut_quotes_templates_tables"


def python_blocks(text: str) -> str:
    return wiki._FLAT_LINKS.sub("", wiki._cut_blocks(text))


def python_cuts(text: str) -> str:
    return wiki.cut_templates_and_tables(wiki._drop_quotes(text))


def python_cut_text(text: str) -> str:
    with mock.patch.object(native, "transform", return_value=None):
        return wiki.cut_text(text)


@pytest.fixture(scope="module", autouse=True)
def library():
    if native.library() is None:
        pytest.skip(f"the corpus native library is unavailable: {native.build_error()}")


def same_or_given_up(text: str) -> tuple[bool, bool]:
    """Both C functions on `text` equal their Python functions where they do not give up; which gave up."""
    blocks = native.transform(BLOCKS, text)
    if blocks is not None:
        assert blocks == python_blocks(text), text
    cuts = native.transform(CUTS, text)
    if cuts is not None:
        assert cuts == python_cuts(text), text
    return blocks is None, cuts is None


def test_the_excerpt_articles_are_cut_as_python_does_and_few_give_up(wiki_excerpt):
    articles = [d.text for d in wiki.iter_dump(wiki_excerpt) if not d.dropped]
    assert len(articles) == 98
    given_up = [0, 0]
    for article in articles:
        for n, gave_up in enumerate(same_or_given_up(article)):
            given_up[n] += gave_up
        # the second cut sees what the first and the inline templates leave, as in cut_text
        before = wiki.before_parsing(article)
        cuts = native.transform(CUTS, before)
        assert cuts is None or cuts == python_cuts(before)
        given_up[1] += cuts is None
        assert wiki.cut_text(article) == python_cut_text(article)
    assert given_up == [0, 0]  # measured: none of the 98 (a give-up costs only the Python time)


def test_cut_text_runs_the_c_cuts(wiki_excerpt):
    """With the Python cuts broken, cut_text still gives the same text: the C ones did the work."""
    article = next(d.text for d in wiki.iter_dump(wiki_excerpt) if not d.dropped)
    expected = python_cut_text(article)

    def broken(_text):
        raise AssertionError("the Python cut ran")

    with mock.patch.object(wiki, "_cut_blocks", broken), mock.patch.object(wiki, "cut_templates_and_tables", broken):
        assert wiki.cut_text(article) == expected


HARD_CASES = [  # (text, whether the block cut gives up)
    ("See<ref>a<ref>b</ref>c</ref>d.", False),  # nested same-name blocks: to the first closing
    ("A<ref name=x>never closed. B<ref>c</ref>d", False),
    ("A<ref<ref/>erences>x</references>y", False),  # an opening joined to letters after a removal
    ("<ref", False), ("<ref>", False), ("<ref/>", False), ("<ref/ >x</ref>", False), ("<ref />", False),
    ('<ref name="a>b">x</ref>y', False), ("<ref name=a<b>x</ref>y", False), ("<ref name=a/b>x</ref>", False),
    ("x<!-- unclosed <ref>y</ref>", False), ("a<!--->b-->c", False), ("a<!---->b", False), ("<!-->x-->y", False),
    ("<!--", False), ("a<!-- x --><!-- y -->b", False), ("a<!--x--->b", False),
    ("<REF>x</ref >y<Ref Name=a/>z<MATH>m</Math\t\n>w", False),
    ("<references>a</references>b<references/>c<ReFeReNcEs >d</REFERENCES>", False),
    ("<cex>x</ce> <ce>y</ce> <ce_>z</ce> <ce1>w</ce>", False),
    ("<syntaxhighlight lang=python>a < b</syntaxhighlight>c<source>d</syntaxhighlight></source>e", False),
    ("<score>a</score><scorex>b</score><sc", False),
    ("é<ref>x</ref>é <réf>y</ref> <math>∂</math>", False),
    ("<ref>x</ref\u2028>y<ref>z</ref\x85 >w<ref>v</ref\xa0>u<ref>t</ref\x1c>s", False),
    ("<ref>x</ref\u200b>y", False),  # a zero-width space is not white space: no closing
    ("<refé>x</ref>", True),  # is é a word character (no \b)? a Unicode question
    ("<ſcore>x</score>", True), ("<maplink>x</maplin\u212a>", True), ("<İnputbox>x</inputbox>", True),
    ("<ref>x</reſ>", True),
    # a folded name inside a block: Python's first pass stops there and its exact pass gives the C's text
    ("<maplink>x<maplin\u212a>y</maplink>z", False), ("<<ref/>ſcore>x</score>", False),
    ("a\0<ref>x</ref>\0b\r\n<ref>\r</ref>", False),
    ("[[Category:X]]a[[ category :X|y]]b[[de:X]]c[[zh-min-nan:X]]d[[CATEGORY:Y]]", False),
    ("[[en:X\n]] [[en:X[y]]] [[[en:x]]] [[abcd:x]] [[e:x]] [[en-a:x]] [[en-abcdefghi:x]] [[en-ab-cd:x]]", False),
    ("[[İstanbul]] [[\u212ax:y]] [[ſab:c]] [[ıi:x]]", False),  # letters to re.I's [a-z]: counted exactly
    ("[[\xa0en:x]] [[\u3000category:y]] [[\u2028de\x85:z]] [[\u200ben:x]]", False),
    ("[[Category:x]]y]] [[en:]] [[en :x]] [[en- :x]] [[en:x]", False),
    ("'''''a''''b'''c''d'e''''''f'''''''g", False),
    ("{{a{{b}}c}}d}}e{{", False), ("}}{{", False), ("{{{x}}}y", False), ("{{{{", False), ("}}}}x", False),
    ("{''{x}}y", False), ("{{é}}é{{", False),
    ("{|\n|}", False), ("a\n{|\nb\n|}\nc", False), ("a\n :{|\nx\n|}", False), ("a\n|}\nb", False),
    ("{|\n{|\n|}\nx\n|}\ny", False), ("{| unclosed\nx", False), ("a\n\t{|x\n|}y\nz", False),
    ("\r\n{|\r\n|}\r\n", False), ("a\n|} b\n{|c\n\n", False), ("\n", False), ("", False),
]


@pytest.mark.parametrize("text,gives_up", HARD_CASES)
def test_hard_cases_equal_python_or_give_up(text, gives_up):
    assert same_or_given_up(text) == (gives_up, False)  # the quote/template/table cut never needs to
    assert wiki.cut_text(text) == python_cut_text(text)


ALPHABETS = {
    "blocks": ["<!--", "-->", "-", ">", "<ref>", "</ref>", "<ref name=a/>", "a", "</REF >", "<math>", "</math>", "\n",
               "<ref", "/", "<references/>", "<references>", "</references>", '<Ref name="x/y">', "<ce>", "</ce>",
               "<cex>", "<ref/ >", "<", '<ref name="a<b">', "</ref\u2028>", "</ref\x85 >", "</ref\xa0>", "<ref_>",
               "<RefErences>", "<chem>", "</chem >", "<ref\t>", " ", "é", "\0", "\r"],
    "links": ["[[", " ", "\xa0", "\u3000", "\u2028", "\x85", "category", "CATEGORY", "en", "e", "abc", "-", "de",
              "abcdefghi", ":", "]]", "\n", "[", "]", "İ", "\u212a", "ſ", "ı", "é", "x", "|", "\t", "\x1c", "<ref/>"],
    "cuts": ["\n", "{|", "|}", " ", "\t", ":", "x", "{{", "}}", "''", "'", "{", "|", "}", "\r", "\x85", "é", "'''''",
             "\0"],
    "mixed": ["<ref>", "</ref>", "<!--", "-->", "[[en:", "]]", "{{", "}}", "{|", "|}", "\n", "''", "'", "é", "\u212a",
              "\xa0", "\u2028", "\x85", "\0", "\r", "<math", ">", "[[", "Category:", "a", " ", "ſ"],
}


@pytest.mark.parametrize("alphabet", sorted(ALPHABETS))
def test_random_markup_equals_python_or_gives_up(alphabet):
    pieces = ALPHABETS[alphabet]
    rng = random.Random(15)
    given_up = changed = 0
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 14)))
        given_up += any(same_or_given_up(text))
        changed += python_blocks(text) != text or python_cuts(text) != text
    # measured 4 and 148: a block name joined to é, K or ſ (`<ref` + `é`, `<math` + `K`), a Unicode question
    assert given_up <= {"blocks": 10, "mixed": 200}.get(alphabet, 0)
    assert changed > 600  # the strings hold what the cuts remove


@pytest.mark.parametrize("unit", ["<ref", "<ref>", "<ref name=a", "</ref><ref>", "<!--", "<!-- x -->", "{{", "}}",
                                  "{{a}}}}", "[[en:", "[[", "[[category:x\n", "\n{|", "\n|}", "''x", "<math>{{"])
def test_linear_on_pathological_input(unit):
    """Unclosed or repeated marks cost the C cuts time in proportion to their number: 4x the input in
    well under 16x the time (and the C path takes them: no give-up)."""
    assert native.transform(BLOCKS, unit * 1000) is not None and native.transform(CUTS, unit * 1000) is not None

    def cpu(n: int) -> float:
        best = float("inf")
        for _ in range(3):
            start = time.process_time()
            wiki.cut_text(unit * n)
            best = min(best, time.process_time() - start)
        return best

    assert cpu(80_000) < 8 * cpu(20_000) + 0.02


def test_python_path_alone_when_the_library_is_off(wiki_excerpt, monkeypatch):
    articles = [d.text for d in wiki.iter_dump(wiki_excerpt) if not d.dropped][:10]
    expected = [wiki.cut_text(a) for a in articles]
    monkeypatch.setattr(native, "_state", {"tried": False, "lib": None, "error": None, "size": 0, "buffer": None,
                                           "address": 0})
    monkeypatch.setenv("BERT_CORPUS_NATIVE", "0")
    assert native.transform(BLOCKS, "<ref>x</ref>") is None
    assert [wiki.cut_text(a) for a in articles] == expected


@pytest.mark.slow
def test_every_non_ascii_character_where_white_space_letters_or_names_are_decided():
    """Each code point above ASCII in the places where Python's Unicode `\\s` and re.I's letters decide
    (about 20 CPU s): the C matches them exactly, and gives up only on the four letters re.I folds to
    ASCII (U+0130, U+0131, U+017F, U+212A) in a block name."""
    import sys

    given_up = []
    for code in range(0x80, sys.maxunicode + 1):
        c = chr(code)
        for text in ("[[" + c + "en:x]]", "[[e" + c + ":x]]", "[[en" + c + ":x]]", "<ref>x</ref" + c + ">y",
                     "<" + c + "ef>x</ref>"):
            cut = native.transform(BLOCKS, text)
            if cut is None:
                given_up.append(code)
            else:
                assert cut == python_blocks(text), text
    assert given_up == [0x130, 0x131, 0x17F, 0x212A]
