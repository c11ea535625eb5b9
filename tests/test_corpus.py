import random

import pytest

from bert_core.data import corpus
from bert_core.data.corpora import python_docs_documents
from bert_core.errors import UserError


def _write_random_corpus(path, rng, n_docs=60):
    docs = []
    with open(path, "w", encoding="utf-8") as f:
        for d in range(n_docs):
            doc = [f"doc{d} sentence {s} " + "x" * rng.randint(0, 80) for s in range(rng.randint(1, 6))]
            docs.append([s.strip() for s in doc])
            for line in doc:
                f.write(line + "\n")
            f.write("\n" * rng.randint(1, 3) if rng.random() < 0.8 else "   \n")
    return docs


@pytest.mark.parametrize("num_ranges", [1, 2, 3, 7, 16, 200])
def test_ranges_partition_lines_and_cut_documents_only_at_their_ends(tmp_path, num_ranges):
    rng = random.Random(num_ranges)
    paths, expected = [], []
    for i in range(3):
        p = tmp_path / f"part{i}.txt"
        expected += _write_random_corpus(p, rng)
        paths.append(str(p))
    got, ends = [], []
    for part in corpus.split_ranges(paths, num_ranges):
        for path, start, end in part:
            got += list(corpus.iter_documents(path, start, end))
            ends.append(len(got))
    # every line once, in order; a document is cut in two only where a range ends
    assert [s for d in got for s in d] == [s for d in expected for s in d]
    whole = iter(expected)
    want = next(whole)
    for i, doc in enumerate(got):
        assert doc == want[:len(doc)] and (len(doc) == len(want) or i + 1 in ends)
        want = want[len(doc):] or next(whole, None)
    if num_ranges == 1:
        assert got == expected


def test_one_long_document_is_shared_by_every_range(tmp_path):
    p = tmp_path / "novel.txt"
    p.write_text("".join(f"sentence {i} of the only document\n" for i in range(100)), encoding="utf-8")
    parts = [[d for path, start, end in part for d in corpus.iter_documents(path, start, end)]
             for part in corpus.split_ranges([str(p)], 4)]
    assert [len(docs) for docs in parts] == [1, 1, 1, 1]
    assert sum(len(docs[0]) for docs in parts) == 100


def test_documents_strip_and_split_on_whitespace_lines(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("  a b \nc\n \t \nd\n\n\ne\n", encoding="utf-8")
    assert list(corpus.iter_documents(str(p))) == [["a b", "c"], ["d"], ["e"]]


def test_bad_utf8_fails_with_file_and_line(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_bytes(b"good line\nsecond\n\nbad \xff byte\n")
    with pytest.raises(UserError, match=r"bad.txt:4: invalid UTF-8"):
        list(corpus.iter_documents(str(p)))
    stats = corpus.ReadStats()
    docs = list(corpus.iter_documents(str(p), on_bad_utf8="replace", stats=stats))
    assert docs[1] == ["bad \ufffd byte"]
    assert stats.bad_utf8_lines == 1 and stats.first_bad == [f"{p}:4"]


def test_expand_inputs_comma_and_glob(tmp_path):
    for n in ("a.txt", "b.txt", "c.log"):
        (tmp_path / n).write_text("x\n")
    got = corpus.expand_inputs(f"{tmp_path}/*.txt,{tmp_path}/c.log")
    assert [p.split("/")[-1] for p in got] == ["a.txt", "b.txt", "c.log"]
    with pytest.raises(UserError, match="no such file"):
        corpus.expand_inputs(f"{tmp_path}/missing.txt")
    with pytest.raises(UserError, match="matches no file"):
        corpus.expand_inputs(f"{tmp_path}/*.json")


def test_default_corpus_is_prose_documents():
    docs = python_docs_documents()
    assert len(docs) > 100
    sentences = [s for d in docs for s in d]
    assert sum(len(s.split()) for s in sentences) > 20000
    assert not any("::=" in s for s in sentences)
