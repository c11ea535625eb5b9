"""Tokenizer parity with Google's original `bert.tokenization.FullTokenizer` (PyPI bert-tensorflow 1.0.4).

Both paths (the exact `FullTokenizer` and the batch `FastTokenizer`) must give identical tokens on
real Brown sentences, on hand-made hard cases, on every code point of the BMP and on random strings
built from tricky characters; uncased and cased, with BERT's real uncased vocab.
"""

from __future__ import annotations

import random
import unicodedata

import pytest

from bert_core import tokenization as tok
from bert_core.errors import UserError
from bert_reference import import_google

NUM_BROWN = 20_000

HARD_CASES = [
    # accents and combining marks
    "Héllo Wörld Ångström naïve café résumé Crème Brûlée ÀÉÎÕÜ Ça Œuvre Ærø Łódź Dvořák",
    "e\u0301 a\u0308\u0323 stacked a\u0301\u0302\u0303\u0304\u0305 lone \u0301 mark \u20dd enclosing \u0488",
    "Tiếng Việt có dấu; Ελληνικά: ά έ ή ί ό ύ ώ ΐ ΰ; Français: œ ç; Türkçe İstanbul ıi",
    "\U0001d16d\U0001d165 reordered spacing marks \u0915\u093f\u0902 \u0d15\u0d4a",
    # CJK and other East Asian scripts
    "北京大学的中文测试，日本語のテキストです。한국어 텍스트 입니다!",
    "CJK ext B 𠀀𠀁𪜀 ext E 𫠠 compat \uf900\ufa0e\U0002f800 kana ｱｲｳ ひらがな カタカナ 〇〡",
    "mixed中文English混合123数字",
    # emoji, symbols
    "emoji 😀 👍🏽 👨‍👩‍👧‍👦 🇺🇸 ❤️ 🥰 🫠 ☃ ✓ ★",
    "math ∑ ∞ ≠ ≤ √2 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝐁𝐨𝐥𝐝 ½ ² ³ ٣ ۴ 10,000.50 $5 ¥100 €3",
    # control, format and zero-width characters
    "a\x00b\x01c\x7f d\x1b[31mred\x1b[0m \ufffd x\x85y \x08back",
    "zero\u200bwidth\u200cnon\u200djoiner\u2060wj\ufeffbom co\u00adoperate \u200e\u200f\u202a\u202e rtl",
    "\U000e0001\U000e0041 tags \u061c \u180e mongolian",
    # unusual whitespace
    "a\u00a0b\u2003c\u3000d\u2028e\u2029f\tg\nh\ri\x0bj\x0ck\u1680l\u202fm\u205fn\x1co\x1dp\x1eq\x1fr",
    "  leading and trailing  \t\n", "", "   ", "\t\n\r", "\u3000\u2028",
    # very long words
    "a" * 200, "a" * 201, "b" * 1000, "supercalifragilisticexpialidocious" * 5,
    "x" * 150 + "." + "y" * 150, "é" * 199 + "e\u0301", "Ω" * 201,
    # mixed scripts, Greek sigma in every position
    "Москва Moscow مرحبا שָׁלוֹם नमस्ते ภาษาไทย ქართული Հայերեն አማርኛ",
    "ΟΔΟΣ ΣΊΣΥΦΟΣ Σ ΌΣΟΣ. ΑΣ' ΑΣ.Β ΑΣΑ Σ̈ ΑΣ\u0301 ΑΣ\u00ad ΑΣ\u200dΒ ΑΣ\u2028Β ΑΣ\x00Β ΑΣ中",
    "İSTANBUL ǅungla ß ẞ ﬁ ﬀ ı K Å Ω ǰ ŉ",
    # punctuation
    "¿Qué? ¡Hola! «quote» „Gänse“ ‹a› — – … ‽ ⁂ ¶ § $ ^ ` ~ | \\ @ # % & * + < = > _ { } ' \" ( ) [ ]",
    "don't U.S.A. e-mail user@example.com http://x.org/a?b=c&d=e 3.14 -5 (a)[b]{c}",
    "\u061d arabic end of text \u0f3a\u0f3b tibetan \u2e42 \u2e52 \u1b7d new punctuation",
    # private use, unassigned, noncharacters
    "\ue000 \U000f0000\U0010fffd private \u0378 \U0001fbff unassigned \ufdd0 \uffff",
    # the special tokens as text
    "[CLS] [SEP] [MASK] [UNK] [PAD] [unused1] [cls]",
    "fullwidth ＡＢＣ ｄｅｆ １２３ ！？",
]


# --------------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------------
def google_tokenization():
    """Google's `bert.tokenization` (also for benchmarks/bench_tokenize.py)."""
    module = import_google("tokenization")
    from absl import flags

    if not flags.FLAGS.is_parsed():  # the module reads --preserve_unused_tokens (default False)
        flags.FLAGS.mark_as_parsed()
    return module


def brown_lines(brown_corpus: str) -> list[str]:
    """The Brown corpus's sentences (its non-blank lines)."""
    with open(brown_corpus, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def spread_sample(lines: list[str]) -> list[str]:
    """NUM_BROWN lines spread evenly over all of them (every genre of Brown)."""
    assert len(lines) >= NUM_BROWN
    step = len(lines) / NUM_BROWN
    return [lines[int(i * step)] for i in range(NUM_BROWN)]


@pytest.fixture(scope="module")
def google():
    return google_tokenization()


@pytest.fixture(scope="module")
def brown_sentences(brown_corpus) -> list[str]:
    return spread_sample(brown_lines(brown_corpus))


@pytest.fixture(scope="module", params=[True, False], ids=["uncased", "cased"])
def tokenizers(request, google, uncased_vocab):
    lower = request.param
    return (google.FullTokenizer(uncased_vocab, do_lower_case=lower),
            tok.FullTokenizer(uncased_vocab, do_lower_case=lower),
            tok.FastTokenizer(uncased_vocab, do_lower_case=lower))


def assert_parity(name: str, texts: list[str], ref, exact, fast, exact_every: int = 1) -> None:
    """0 mismatches between Google's tokens and ours; prints how many texts were compared."""
    expected = [ref.tokenize(t) for t in texts]
    fast_out = fast.tokenize_batch(texts)
    fast_bad = [(t, e, g) for t, e, g in zip(texts, expected, fast_out) if e != g]
    exact_texts = texts[::exact_every]
    exact_bad = [(t, e, g) for t, e, g in zip(exact_texts, expected[::exact_every],
                                              (exact.tokenize(t) for t in exact_texts)) if e != g]
    print(f"\n{name} ({'uncased' if exact.do_lower_case else 'cased'}): compared {len(texts)} texts on the "
          f"fast path, {len(exact_texts)} on the exact path ({sum(map(len, expected))} reference tokens); "
          f"mismatches: fast {len(fast_bad)}, exact {len(exact_bad)}")
    assert not fast_bad, f"fast path: {len(fast_bad)} mismatches, first: {fast_bad[0]!r}"
    assert not exact_bad, f"exact path: {len(exact_bad)} mismatches, first: {exact_bad[0]!r}"
    # ids agree too, and the batch path agrees with itself text by text
    assert fast.encode_batch(texts[:500]) == [ref.convert_tokens_to_ids(e) for e in expected[:500]]


# --------------------------------------------------------------------------------------------------
# Parity
# --------------------------------------------------------------------------------------------------
def test_parity_brown(tokenizers, brown_sentences):
    ref, exact, fast = tokenizers
    assert_parity("Brown sentences", brown_sentences, ref, exact, fast)


def test_parity_hard_cases(tokenizers):
    ref, exact, fast = tokenizers
    assert_parity("hard cases", HARD_CASES, ref, exact, fast)
    # each case alone (no batch effects) and as bytes, as Google's convert_to_unicode accepts
    for text in HARD_CASES:
        assert fast.tokenize(text) == exact.tokenize(text.encode("utf-8")) == ref.tokenize(text), text
    bad = b"caf\xc3\xa9 \xff\xfe broken \xe4\xb8 utf-8"
    assert fast.tokenize(bad) == exact.tokenize(bad) == ref.tokenize(bad)


def code_point_texts(code_points) -> list[str]:
    # alone, inside a word, after a capital sigma (final-sigma context) and next to punctuation
    return [f"{c} x{c}y Σ{c} Σ{c}a {c}." for c in map(chr, code_points)]


def test_parity_every_bmp_code_point(tokenizers):
    ref, exact, fast = tokenizers
    texts = code_point_texts(c for c in range(0x10000) if not 0xD800 <= c <= 0xDFFF)
    assert_parity("every BMP code point", texts, ref, exact, fast, exact_every=7)


@pytest.mark.slow
def test_parity_every_code_point(tokenizers):
    ref, exact, fast = tokenizers
    texts = code_point_texts(c for c in range(0x10000, 0x110000))
    assert_parity("every astral code point", texts, ref, exact, fast)


def test_parity_random_strings(tokenizers):
    """Random strings of characters whose handling depends on context: sigma, case-ignorables, marks."""
    ref, exact, fast = tokenizers
    alphabet = ("aAzZ09 .,'-:\t\n\x00\x01\u00ad\u200b\u200d\u2028\u3000\u00a0Σσςİı" "ÅåÉé\u0301\u0308\u0323\u0345\u20dd"
                "\U0001d165\U0001d16d\u0915\u093f\u4e2d\u6587\uf900ﬁẞßΑΒΓ\ue000\U0001f600\ufffd\u0378")
    rng = random.Random(1234)
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) for _ in range(5000)]
    assert_parity("random strings", texts, ref, exact, fast)


@pytest.mark.slow
def test_parity_whole_brown(tokenizers, brown_corpus):
    ref, exact, fast = tokenizers
    assert_parity("whole Brown corpus", brown_lines(brown_corpus), ref, exact, fast)


# --------------------------------------------------------------------------------------------------
# Behaviour of the pieces
# --------------------------------------------------------------------------------------------------
def test_known_tokens(uncased_vocab):
    for tk in (tok.FullTokenizer(uncased_vocab), tok.FastTokenizer(uncased_vocab)):
        assert tk.tokenize("Héllo, WORLD! unaffable 中文") == [
            "hello", ",", "world", "!", "una", "##ffa", "##ble", "中", "文"]
        assert tk.tokenize("a" * 200) != ["[UNK]"] and tk.tokenize("a" * 201) == ["[UNK]"]
    cased = tok.FullTokenizer(uncased_vocab, do_lower_case=False)
    assert cased.tokenize("Héllo") == ["[UNK]"]  # no lower-casing, no accent stripping: not in the uncased vocab
    assert cased.tokenize("hello") == ["hello"]


def test_basic_normalize_matches_basic_tokenizer():
    for lower in (True, False):
        basic = tok.BasicTokenizer(lower)
        for text in HARD_CASES:
            assert tok.basic_normalize(text, lower).split() == basic.tokenize(text), text


def test_fast_cache_eviction_keeps_output(uncased_vocab, brown_sentences):
    fast = tok.FastTokenizer(uncased_vocab)
    expected = fast.encode_batch(brown_sentences[:300])
    small = tok.FastTokenizer(uncased_vocab)
    small.CACHE_WORDS = 50  # forces the cache to be emptied batch after batch
    got = [ids for i in range(0, 300, 30) for ids in small.encode_batch(brown_sentences[i:i + 30])]
    assert got == expected
    assert len(small._cache) <= 50 + 30 * 60


def test_ids_tokens_round_trip(uncased_vocab, brown_sentences, google):
    exact = tok.FullTokenizer(uncased_vocab)
    fast = tok.FastTokenizer(uncased_vocab)
    with open(uncased_vocab, encoding="utf-8") as f:
        lines = [line.strip() for line in f]
    assert len(exact.vocab) == 30522 and exact.vocab == dict(google.load_vocab(uncased_vocab))
    assert exact.convert_ids_to_tokens(range(len(lines))) == lines
    assert exact.convert_tokens_to_ids(lines) == list(range(len(lines)))
    assert exact.inv_vocab == fast.inv_vocab and exact.vocab == fast.vocab
    texts = brown_sentences[:200] + HARD_CASES
    for text, ids in zip(texts, fast.encode_batch(texts)):
        tokens = exact.tokenize(text)
        assert exact.convert_tokens_to_ids(tokens) == ids
        assert fast.convert_ids_to_tokens(ids) == tokens
    with pytest.raises(KeyError):
        exact.convert_tokens_to_ids(["not-a-token"])
    with pytest.raises(KeyError):
        exact.convert_ids_to_tokens([len(lines)])


def test_tokenizer_accepts_a_vocab_mapping(uncased_vocab):
    vocab = tok.load_vocab(uncased_vocab)
    assert tok.FastTokenizer(vocab).tokenize("Hello there") == tok.FullTokenizer(vocab).tokenize("Hello there")


# --------------------------------------------------------------------------------------------------
# load_vocab
# --------------------------------------------------------------------------------------------------
SPECIALS = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n"


def _vocab(tmp_path, content: str | bytes) -> str:
    path = tmp_path / "vocab.txt"
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return str(path)


def test_load_vocab_ok(tmp_path):
    path = _vocab(tmp_path, SPECIALS + "the\n##s\n")
    assert tok.load_vocab(path) == {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4, "the": 5, "##s": 6}
    # CRLF line endings, no final newline, no [PAD]
    path = _vocab(tmp_path, "[UNK]\r\n[CLS]\r\n[SEP]\r\n[MASK]\r\nthe")
    assert tok.load_vocab(path) == {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "[MASK]": 3, "the": 4}


@pytest.mark.parametrize("content, message", [
    ("", "the vocab file is empty"),
    ("\n \n", "the vocab file is empty"),
    (SPECIALS + "the\na\nthe\n", ":8: duplicate token 'the' (first at line 6)"),
    (SPECIALS + "[CLS]\n", ":6: duplicate token '[CLS]' (first at line 3)"),
    ("[PAD]\n[UNK]\n[CLS]\nthe\n", "missing special token [SEP] "),
    ("[PAD]\n[CLS]\nthe\n", "missing special tokens [SEP] [UNK] "),
    (SPECIALS + "the\n\nof\n", ":7: blank line"),
    (SPECIALS.encode() + b"caf\xe9\n", ":6: invalid UTF-8"),
])
def test_load_vocab_errors(tmp_path, content, message):
    path = _vocab(tmp_path, content)
    with pytest.raises(UserError) as err:
        tok.load_vocab(path)
    text = str(err.value)
    assert message in text and "\n" not in text and text.startswith(path)


def test_load_vocab_missing_file(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        tok.load_vocab(str(tmp_path / "nope.txt"))
    with pytest.raises(UserError, match="no such file"):
        tok.FastTokenizer(str(tmp_path / "nope.txt"))


def test_character_classes_match_unicode_categories():
    assert all(tok.is_punctuation(c) for c in "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~¿¡«»—‽")
    assert not any(tok.is_punctuation(c) for c in "aZ09 €£±©ÿ")
    assert tok.is_control("\x00") and tok.is_control("\u200b") and not tok.is_control("\t")
    assert tok.is_whitespace("\u3000") and not tok.is_whitespace("\u2028") and not tok.is_whitespace("\u200b")
    assert tok.is_cjk("中") and tok.is_cjk("\U00020000") and not tok.is_cjk("あ") and not tok.is_cjk("한")
    assert unicodedata.category("\u2028") == "Zl" and "a\u2028b".split() == ["a", "b"]
