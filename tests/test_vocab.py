"""`bert learn-vocab`: layout, size, coverage numbers, errors; the vocab works with both tokenizer paths."""

from __future__ import annotations

import os
import re

import pytest

from bert_core import tokenization as tok
from bert_core.config import VocabConfig
from bert_core.errors import UserError
from bert_core.vocab import learn_vocab_main
from conftest import run_bert

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

MULTILINGUAL = """Héllo wörld, this is a café in Zürich.
Ελληνικά: ΟΔΟΣ και οδός είναι δρόμος.
北京大学的中文测试。日本語のテキスト。
Москва — столица России!

Ångström's naïve résumé: 3.14 apples & 2 oranges.
"""


@pytest.fixture(scope="module")
def brown_small(brown_corpus, tmp_path_factory) -> tuple[str, list[str]]:
    """The first 6,000 lines of Brown to learn from, and 2,000 later sentences held out."""
    with open(brown_corpus, encoding="utf-8") as f:
        lines = f.read().split("\n")
    path = tmp_path_factory.mktemp("brown") / "brown_small.txt"
    path.write_text("\n".join(lines[:6000]) + "\n", encoding="utf-8")
    held_out = [line for line in lines[30000:40000] if line.strip()][:2000]
    return str(path), held_out


def _table(stdout: str) -> dict[str, str]:
    rows = {}
    for line in stdout.splitlines():
        m = re.match(r"^(\S.*?)\s{2,}(.*)$", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def _lines(path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return f.read().split("\n")[:-1]


def test_learn_vocab_cli_brown(brown_small, tmp_path):
    corpus, held_out = brown_small
    out = tmp_path / "v" / "vocab.txt"
    proc = run_bert("learn-vocab", f"--input_file={corpus}", f"--output_file={out}", "--vocab_size=2000", check=True)
    print(proc.stdout)
    tokens = _lines(out)
    assert len(tokens) == 2000 and tokens[:5] == SPECIALS
    assert len(set(tokens)) == len(tokens) and all(t and t == t.strip() for t in tokens)
    assert "the" in tokens and "##s" in tokens and all(t == t.lower() for t in tokens[5:])
    assert [p for p in os.listdir(out.parent)] == ["vocab.txt"]  # no temporary left behind

    # the printed coverage equals a recount with the exact tokenizer over the whole corpus
    table = _table(proc.stdout)
    exact = tok.FullTokenizer(str(out))
    words = pieces = unk = 0
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            for word in exact.basic_tokenizer.tokenize(line):
                wp = exact.wordpiece_tokenizer.tokenize(word)
                words += 1
                pieces += len(wp)
                unk += wp == ["[UNK]"]
    assert table["vocab size"].startswith("2,000 (5 special + 1,995 pieces)")
    assert f"{words:,} words" in table["corpus"]
    assert table["mean pieces per word"] == f"{pieces / words:.3f}"
    assert table["UNK rate"] == f"{unk / words:.4%} of words ({unk:,})"
    assert 1.0 < pieces / words < 1.6 and unk / words < 0.001

    # the vocab tokenizes unseen text identically on both paths, with few unknowns
    fast = tok.FastTokenizer(str(out))
    got = fast.tokenize_batch(held_out)
    assert got == [exact.tokenize(s) for s in held_out]
    flat = [t for s in got for t in s]
    assert flat.count("[UNK]") / len(flat) < 0.01


@pytest.mark.parametrize("lower", [True, False])
def test_learn_vocab_is_the_same_every_run(brown_small, tmp_path, lower):
    """The same corpus gives byte-identical vocab.txt in separate processes. Hugging Face's trainer
    alone does not (huggingface/tokenizers#1794: its "##" ids follow hash-map order and break merge
    ties; three runs here gave three vocabs), so learn-vocab gives it the continuations up front."""
    corpus, _ = brown_small
    runs = []
    for i in range(3):
        out = tmp_path / f"vocab{i}.txt"
        run_bert("learn-vocab", f"--input_file={corpus}", f"--output_file={out}", "--vocab_size=2000",
                 f"--do_lower_case={str(lower).lower()}", check=True)
        runs.append(out.read_bytes())
    assert runs[0] == runs[1] == runs[2]
    tokens = runs[0].decode("utf-8").split("\n")[:-1]
    assert len(tokens) == 2000 and "##e" in tokens and "##." not in tokens  # no continuation a word never has


def test_learn_vocab_cased_multilingual(tmp_path):
    corpus = tmp_path / "multi.txt"
    corpus.write_text(MULTILINGUAL * 3, encoding="utf-8")
    out = tmp_path / "vocab.txt"
    assert learn_vocab_main(VocabConfig(input_file=str(corpus), output_file=str(out), vocab_size=300,
                                        do_lower_case=False, min_frequency=1)) == 0
    tokens = _lines(out)
    assert tokens[:5] == SPECIALS and len(set(tokens)) == len(tokens)
    assert {"H", "é", "ö", "Ε", "中", "北", "М", "—"} <= set(tokens)  # case and accents kept
    texts = MULTILINGUAL.splitlines()
    for lower in (False, True):
        exact, fast = tok.FullTokenizer(str(out), lower), tok.FastTokenizer(str(out), lower)
        assert fast.tokenize_batch(texts) == [exact.tokenize(t) for t in texts]
    assert "[UNK]" not in tok.FullTokenizer(str(out), do_lower_case=False).tokenize(MULTILINGUAL)


def test_learn_vocab_uncased_strips_accents(tmp_path):
    corpus = tmp_path / "multi.txt"
    corpus.write_text(MULTILINGUAL * 3, encoding="utf-8")
    out = tmp_path / "vocab.txt"
    learn_vocab_main(VocabConfig(input_file=str(corpus), output_file=str(out), vocab_size=300, min_frequency=1))
    tokens = set(_lines(out))
    assert "e" in tokens and "é" not in tokens and "H" not in tokens and "ς" in tokens  # final sigma of ΟΔΟΣ


def test_learn_vocab_too_small_corpus(tmp_path):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("the cat sat on the mat.\n\nthe dog sat too.\n", encoding="utf-8")
    out = tmp_path / "vocab.txt"
    proc = run_bert("learn-vocab", f"--input_file={corpus}", f"--output_file={out}", check=True)
    tokens = _lines(out)
    assert tokens[:5] == SPECIALS and 10 < len(tokens) < 100
    assert "too small for --vocab_size=30522" in proc.stdout and f"only {len(tokens)} tokens" in proc.stdout
    assert _table(proc.stdout)["UNK rate"].startswith("0.0000%")


@pytest.mark.parametrize("content", ["", "\n\n   \n", "\x00\x01\u200b\n\n\ufffd\n"])
def test_learn_vocab_empty_corpus(tmp_path, content):
    corpus = tmp_path / "empty.txt"
    corpus.write_text(content, encoding="utf-8")
    out = tmp_path / "vocab.txt"
    proc = run_bert("learn-vocab", f"--input_file={corpus}", f"--output_file={out}")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "the corpus has no words" in proc.stderr
    assert str(corpus) in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists() and os.listdir(tmp_path) == ["empty.txt"]


def test_learn_vocab_input_errors(tmp_path):
    out = tmp_path / "vocab.txt"
    proc = run_bert("learn-vocab", f"--input_file={tmp_path / 'missing.txt'}", f"--output_file={out}")
    assert proc.returncode == 2 and "missing.txt: no such file" in proc.stderr

    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"good line\nbad \xff byte\n")
    proc = run_bert("learn-vocab", f"--input_file={bad}", f"--output_file={out}")
    assert proc.returncode == 2 and f"{bad}:2: invalid UTF-8" in proc.stderr and not out.exists()
    proc = run_bert("learn-vocab", f"--input_file={bad}", f"--output_file={out}", "--on_bad_utf8=replace",
                    "--vocab_size=50", check=True)
    assert f"1 (replaced with U+FFFD; first at {bad}:2)" in _table(proc.stdout)["bad UTF-8 lines"]
    assert tok.load_vocab(str(out))["[MASK]"] == 4

    proc = run_bert("learn-vocab", f"--input_file={bad}", f"--output_file={out}", "--vocab_size=5")
    assert proc.returncode == 2 and "--vocab_size" in proc.stderr


def test_learn_vocab_function_raises_user_error(tmp_path):
    corpus = tmp_path / "blank.txt"
    corpus.write_text("\n", encoding="utf-8")
    with pytest.raises(UserError, match="no words"):
        learn_vocab_main(VocabConfig(input_file=str(corpus), output_file=str(tmp_path / "v.txt")))
