"""Google's own tokenization_test.py (PyPI bert-tensorflow 1.0.4), run against bert_core.tokenization.

The test file is loaded from the installed package with `from bert import tokenization` bound to our
module, so every public-API test Google wrote for its module runs unchanged against ours. Skipped, with
the reason: the tests of Google's private helpers and of its `preserve_unused_tokens` absl flag.
Beside it, the rest of Google's public API that its tests leave out, against Google's module as the oracle.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys
import types
import unittest

import pytest

from bert_core import tokenization as ours
from bert_reference import import_google


def _google_test_module() -> types.ModuleType:
    """Google's tokenization_test.py, imported with `bert.tokenization` = bert_core.tokenization.

    Google's module is imported first (tf.compat.v1 bound as `tensorflow`, as bert_reference does), so
    the absl flags its test file names exist; then `bert` is swapped for a package whose `tokenization`
    is ours only while the test file runs its imports, and restored (other tests import Google's)."""
    google = import_google("tokenization")
    path = pathlib.Path(google.__file__).with_name("tokenization_test.py")
    shim = types.ModuleType("bert")
    shim.tokenization = ours
    saved = {name: sys.modules.get(name) for name in ("bert", "bert.tokenization")}
    sys.modules.update({"bert": shim, "bert.tokenization": ours})
    try:
        spec = importlib.util.spec_from_file_location("google_bert_tokenization_test", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        for name, value in saved.items():
            if value is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = value
    assert module.tokenization is ours
    return module


_google = _google_test_module()

_PRIVATE = ("Google's private helper {}; ours is the public {} (tests/test_tokenization.py checks the "
            "character classes against Unicode categories and Google's tokenizer on every BMP code point)")


class TestGoogleTokenization(_google.TokenizationTest):
    """Every test of Google's TokenizationTest, against bert_core.tokenization."""

    test_full_tokenizer_preserve_unused = unittest.skip(
        "Google's preserve_unused_tokens absl flag is not offered: [unusedN] in the text is tokenized as text"
    )(_google.TokenizationTest.test_full_tokenizer_preserve_unused)
    test_is_whitespace = unittest.skip(_PRIVATE.format("_is_whitespace", "is_whitespace"))(
        _google.TokenizationTest.test_is_whitespace)
    test_is_control = unittest.skip(_PRIVATE.format("_is_control", "is_control"))(
        _google.TokenizationTest.test_is_control)
    test_is_punctuation = unittest.skip(_PRIVATE.format("_is_punctuation", "is_punctuation"))(
        _google.TokenizationTest.test_is_punctuation)


def test_every_google_test_is_run_or_skipped_with_a_reason():
    """A test added to Google's file runs here by inheritance; only the four above are skipped."""
    names = {n for n in vars(_google.TokenizationTest) if n.startswith("test")}  # Google's, not TF's own
    skipped = {n for n in names if getattr(getattr(TestGoogleTokenization, n), "__unittest_skip__", False)}
    assert skipped == {"test_full_tokenizer_preserve_unused", "test_is_whitespace", "test_is_control",
                       "test_is_punctuation"}
    assert len(names - skipped) == 6, sorted(names - skipped)


# --------------------------------------------------------------------------------------------------
# The public API Google's tests leave out, against Google's functions
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def google():
    return import_google("tokenization")


PUBLIC = ("FullTokenizer", "BasicTokenizer", "WordpieceTokenizer", "convert_to_unicode", "printable_text",
          "load_vocab", "convert_by_vocab", "convert_tokens_to_ids", "convert_ids_to_tokens",
          "whitespace_tokenize", "validate_case_matches_checkpoint")


def test_public_names_take_googles_arguments(google):
    import inspect

    for name in PUBLIC:
        theirs, mine = getattr(google, name), getattr(ours, name)
        if inspect.isclass(theirs):
            theirs, mine = theirs.__init__, mine.__init__
        assert list(inspect.signature(mine).parameters) == list(inspect.signature(theirs).parameters), name
    for cls, method in (("FullTokenizer", "tokenize"), ("BasicTokenizer", "tokenize"),
                        ("WordpieceTokenizer", "tokenize"), ("FullTokenizer", "convert_tokens_to_ids"),
                        ("FullTokenizer", "convert_ids_to_tokens")):
        assert (list(inspect.signature(getattr(getattr(ours, cls), method)).parameters)
                == list(inspect.signature(getattr(getattr(google, cls), method)).parameters)), (cls, method)


@pytest.mark.parametrize("text", ["plain", "ünïcode ✓", b"bytes \xc3\xa9", b"bad \xff byte", ""])
def test_convert_to_unicode_and_printable_text(google, text):
    assert ours.convert_to_unicode(text) == google.convert_to_unicode(text)
    assert ours.printable_text(text) == google.printable_text(text)


def test_convert_to_unicode_refuses_other_types(google):
    for fn in ("convert_to_unicode", "printable_text"):
        with pytest.raises(ValueError):
            getattr(google, fn)(3)
        with pytest.raises(ValueError):
            getattr(ours, fn)(3)


@pytest.mark.parametrize("text", ["", "   ", " a  b\tc\n", "\u3000x\u00a0y ", "one"])
def test_whitespace_tokenize(google, text):
    assert ours.whitespace_tokenize(text) == google.whitespace_tokenize(text)


def test_vocab_helpers_and_full_tokenizer_fields(google, uncased_vocab):
    theirs, mine = google.FullTokenizer(uncased_vocab), ours.FullTokenizer(uncased_vocab)
    assert mine.vocab == dict(theirs.vocab) and mine.inv_vocab == theirs.inv_vocab
    assert ours.load_vocab(uncased_vocab) == dict(google.load_vocab(uncased_vocab))
    tokens = mine.tokenize("The quick brown fox jumped over the lazy dogs, unwantedly.")
    ids = ours.convert_tokens_to_ids(mine.vocab, tokens)
    assert ids == google.convert_tokens_to_ids(theirs.vocab, tokens) == mine.convert_tokens_to_ids(tokens)
    assert ours.convert_ids_to_tokens(mine.inv_vocab, ids) == tokens == mine.convert_ids_to_tokens(ids)
    assert ours.convert_by_vocab(mine.vocab, tokens) == google.convert_by_vocab(theirs.vocab, tokens)
    # WordpieceTokenizer.tokenize takes a text, as Google's: BasicTokenizer's words joined by spaces
    words = " ".join(ours.BasicTokenizer().tokenize("Unaffable héllo, 北京 runningly!"))
    assert mine.wordpiece_tokenizer.tokenize(words) == theirs.wordpiece_tokenizer.tokenize(words)


@pytest.mark.parametrize("lower, checkpoint", [
    (True, None), (False, ""), (True, "/m/uncased_L-12_H-768_A-12/bert_model.ckpt"),
    (False, "/m/uncased_L-12_H-768_A-12/bert_model.ckpt"), (False, "gs://b/cased_L-24_H-1024_A-16/bert_model.ckpt"),
    (True, "cased_L-12_H-768_A-12/bert_model.ckpt"), (True, "x/multi_cased_L-12_H-768_A-12/bert_model.ckpt"),
    (False, "x/chinese_L-12_H-768_A-12/bert_model.ckpt"), (True, "x/multilingual_L-12_H-768_A-12/bert_model.ckpt"),
    (False, "runs/my_model/bert_model.ckpt"), (True, "runs/cased_L-12_H-768_A-12/model.ckpt-100"),
])
def test_validate_case_matches_checkpoint(google, lower, checkpoint):
    """Raises exactly when Google's does (ValueError), for Google's released models' names."""
    try:
        google.validate_case_matches_checkpoint(lower, checkpoint)
        expected = None
    except ValueError:
        expected = ValueError
    if expected is None:
        ours.validate_case_matches_checkpoint(lower, checkpoint)
    else:
        with pytest.raises(ValueError, match="do_lower_case"):
            ours.validate_case_matches_checkpoint(lower, checkpoint)


def test_a_vocab_without_mask_tokenizes_but_create_data_needs_mask(tmp_path):
    """Google's and Hugging Face's tokenizers take a vocab without [MASK]; only create-data needs it."""
    from bert_core.data.pretraining import _tokenizer
    from bert_core.errors import UserError

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\nworld\n", encoding="utf-8")
    assert ours.FullTokenizer(str(vocab)).tokenize("Hello, world") == ["hello", "[UNK]", "world"]
    assert ours.FastTokenizer(str(vocab)).tokenize("Hello, world") == ["hello", "[UNK]", "world"]
    with pytest.raises(UserError) as err:
        _tokenizer(str(vocab), True)
    assert str(err.value) == (f"{vocab}: missing special token [MASK] (create-data replaces masked tokens "
                              f"with [MASK])")
