"""BERT's tokenization, exact to Google's original, plus a fast batch path on Hugging Face `tokenizers`.

Two paths, one result:

* `FullTokenizer` is the reference: Google's rules written out step by step in Python.
  1. clean: drop NUL, U+FFFD and control characters (categories Cc, Cf; tab/newline/CR count as
     whitespace), turn every whitespace character (space, tab, newline, CR, category Zs) into " ";
  2. put spaces around CJK ideographs;
  3. split on whitespace (Python's `str.split`);
  4. uncased only: lower-case each word (Python's `str.lower`, final-sigma rule included), decompose it
     (NFD) and drop non-spacing marks (category Mn);
  5. split each word on punctuation (Unicode P*, plus every non-letter/digit printable ASCII character);
  6. WordPiece: greedy longest-match-first with "##" continuations; a word of more than
     200 characters, or one with a position no piece matches, becomes one "[UNK]".
     (200 is Google's `max_input_chars_per_word`; Hugging Face's BertTokenizer uses 100.)

* `FastTokenizer` gives the same tokens for batches, several times faster. Steps 1-5 run as
  `basic_normalize`: whole-string `str.translate`/`str.lower`/`unicodedata.normalize` passes (C speed)
  over the same Python Unicode tables as the reference; step 6 runs in Rust (Hugging Face `tokenizers`
  WordPiece), once per distinct word, with the ids cached. Rust's own BertNormalizer/BertPreTokenizer
  are not used: they disagree with Google's rules on ~138k code points (private-use characters deleted,
  older Unicode tables for punctuation and marks, lower-casing without the final-sigma rule) and were
  slower; docs/tokenization.md has the measurements.

Google's public API, with Google's signatures, so `from bert_core import tokenization` replaces
`import tokenization` in code written for Google's scripts: `FullTokenizer` (`.vocab`, `.inv_vocab`),
`BasicTokenizer`, `WordpieceTokenizer` (its `tokenize` takes a text), `convert_to_unicode`,
`printable_text`, `load_vocab`, `convert_by_vocab`, `convert_tokens_to_ids`, `convert_ids_to_tokens`,
`whitespace_tokenize`, `validate_case_matches_checkpoint`. Google's `preserve_unused_tokens` absl flag
is not offered ([unusedN] in the text is tokenized as text). Tested by running Google's own
tokenization_test.py against this module (tests/test_tokenization_google.py).
"""

from __future__ import annotations

import re
import unicodedata
from itertools import chain
from typing import Iterable, Mapping, Sequence

from bert_core import storage
from bert_core.errors import UserError

UNK = "[UNK]"
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # BERT's layout at the top of vocab.txt
REQUIRED_TOKENS = ("[CLS]", "[SEP]", "[UNK]")  # every use; [PAD] is optional, [MASK] is create-data's (require_tokens)
MAX_INPUT_CHARS_PER_WORD = 200  # Google's WordpieceTokenizer default


# --------------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------------
def load_vocab(vocab_file: str) -> dict[str, int]:
    """vocab.txt -> {token: id}, id = line number - 1 (one token a line, surrounding whitespace stripped).

    Raises UserError (one line) for a missing or empty file, bad UTF-8, a blank line, a duplicate token,
    or a missing [CLS]/[SEP]/[UNK]. ([MASK] is checked by what needs it: `require_tokens`.)
    """
    path = vocab_file
    data = storage.read_bytes(path)
    if not data.strip():
        raise UserError(f"{path}: the vocab file is empty (expected one token a line)")
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # the newline that ends the last line
    vocab: dict[str, int] = {}
    for number, raw in enumerate(lines, start=1):
        try:
            token = raw.decode("utf-8").strip()
        except UnicodeDecodeError as err:
            raise UserError(f"{path}:{number}: invalid UTF-8 at byte {err.start + 1} of the line") from None
        if not token:
            raise UserError(f"{path}:{number}: blank line (expected one token a line)")
        if token in vocab:
            raise UserError(f"{path}:{number}: duplicate token {token!r} (first at line {vocab[token] + 1})")
        vocab[token] = number - 1
    missing = [t for t in REQUIRED_TOKENS if t not in vocab]
    if missing:
        raise UserError(f"{path}: missing special token{'s' if len(missing) > 1 else ''} {' '.join(missing)} "
                        f"(a BERT vocab needs {' '.join(REQUIRED_TOKENS)})")
    return vocab


def require_tokens(vocab: Mapping[str, int], tokens: Iterable[str], path: str, why: str) -> None:
    """One UserError line if `vocab` (read from `path`) lacks any of `tokens`, which `why` needs."""
    missing = [t for t in tokens if t not in vocab]
    if missing:
        raise UserError(f"{path}: missing special token{'s' if len(missing) > 1 else ''} {' '.join(missing)} "
                        f"({why})")


def _as_vocab(vocab_file: str | Mapping[str, int]) -> dict[str, int]:
    return dict(vocab_file) if isinstance(vocab_file, Mapping) else load_vocab(vocab_file)


def _as_text(text: str | bytes) -> str:
    if isinstance(text, bytes):
        return text.decode("utf-8", "ignore")  # as Google's convert_to_unicode
    if not isinstance(text, str):
        raise TypeError(f"expected str or bytes, got {type(text).__name__}")
    return text


# --------------------------------------------------------------------------------------------------
# Google's module-level helpers (same names, arguments and results)
# --------------------------------------------------------------------------------------------------
def convert_to_unicode(text: str | bytes) -> str:
    """str as is; bytes decoded as UTF-8, invalid bytes dropped. ValueError for anything else (Google's)."""
    if isinstance(text, (str, bytes)):
        return _as_text(text)
    raise ValueError(f"Unsupported string type: {type(text)}")


def printable_text(text: str | bytes) -> str:
    """Text for printing or logging: on Python 3 the same as `convert_to_unicode`."""
    return convert_to_unicode(text)


def convert_by_vocab(vocab: Mapping, items: Iterable) -> list:
    """[vocab[item] for item in items]: tokens -> ids with a vocab, ids -> tokens with an inverse vocab."""
    return [vocab[item] for item in items]


def convert_tokens_to_ids(vocab: Mapping[str, int], tokens: Iterable[str]) -> list[int]:
    return convert_by_vocab(vocab, tokens)


def convert_ids_to_tokens(inv_vocab: Mapping[int, str], ids: Iterable[int]) -> list[str]:
    return convert_by_vocab(inv_vocab, ids)


def whitespace_tokenize(text: str) -> list[str]:
    """Split on runs of whitespace, none at either end (`str.split()`)."""
    return text.split()


# Google's released checkpoints whose directory name says the casing they were trained with.
_UNCASED_MODELS = ("uncased_L-24_H-1024_A-16", "uncased_L-12_H-768_A-12", "multilingual_L-12_H-768_A-12",
                   "chinese_L-12_H-768_A-12")
_CASED_MODELS = ("cased_L-12_H-768_A-12", "cased_L-24_H-1024_A-16", "multi_cased_L-12_H-768_A-12")


def validate_case_matches_checkpoint(do_lower_case: bool, init_checkpoint: str | None) -> None:
    """ValueError if `init_checkpoint` is `<dir>/bert_model.ckpt` of one of Google's released models
    whose casing differs from `do_lower_case` (the flag must match how the model was trained); any
    other path passes, since the casing of other checkpoints cannot be told from their name."""
    if not init_checkpoint:
        return
    found = re.search(r"([A-Za-z0-9_-]+)/bert_model\.ckpt", init_checkpoint)
    if found is None:
        return
    model = found.group(1)
    if model in _UNCASED_MODELS and not do_lower_case:
        flag, trained, other = "False", "uncased", "True"
    elif model in _CASED_MODELS and do_lower_case:
        flag, trained, other = "True", "cased", "False"
    else:
        return
    raise ValueError(f"You passed in `--do_lower_case={flag}` with `--init_checkpoint={init_checkpoint}`. "
                     f"However, `{model}` is a {trained} model: use `--do_lower_case={other}` with it "
                     f"(or check that --init_checkpoint is the model you meant).")


# --------------------------------------------------------------------------------------------------
# Character classes (Python's unicodedata, as in the reference)
# --------------------------------------------------------------------------------------------------
def is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def is_control(ch: str) -> bool:
    return ch not in "\t\n\r" and unicodedata.category(ch) in ("Cc", "Cf")


def is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 126 and not ch.isalnum():  # all printable non-letter/digit ASCII
        return True
    return unicodedata.category(ch).startswith("P")


_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
               (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def is_cjk(ch: str) -> bool:
    """CJK Unified Ideographs (+ extensions A-E) and compatibility ideographs; not kana or hangul."""
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


# --------------------------------------------------------------------------------------------------
# The reference path
# --------------------------------------------------------------------------------------------------
class BasicTokenizer:
    """Steps 1-5 of the module docstring: text -> words and punctuation marks.

    `vocab` is accepted for Google's signature; Google uses it only under its `preserve_unused_tokens`
    flag, which is not offered here."""

    def __init__(self, do_lower_case: bool = True, vocab: Iterable[str] = ()):
        self.do_lower_case = do_lower_case
        self.vocab = vocab

    def tokenize(self, text: str | bytes) -> list[str]:
        text = self._space_cjk(self._clean(_as_text(text)))
        out: list[str] = []
        for word in text.split():
            if self.do_lower_case:
                word = self._strip_accents(word.lower())
            out.extend(self._split_punctuation(word))
        return out

    @staticmethod
    def _clean(text: str) -> str:
        kept = []
        for ch in text:
            if ch == "\x00" or ch == "\ufffd" or is_control(ch):
                continue
            kept.append(" " if is_whitespace(ch) else ch)
        return "".join(kept)

    @staticmethod
    def _space_cjk(text: str) -> str:
        return "".join(f" {ch} " if is_cjk(ch) else ch for ch in text)

    @staticmethod
    def _strip_accents(word: str) -> str:
        return "".join(ch for ch in unicodedata.normalize("NFD", word) if unicodedata.category(ch) != "Mn")

    @staticmethod
    def _split_punctuation(word: str) -> list[str]:
        pieces: list[str] = []
        current: list[str] = []
        for ch in word:
            if is_punctuation(ch):
                if current:
                    pieces.append("".join(current))
                    current = []
                pieces.append(ch)
            else:
                current.append(ch)
        if current:
            pieces.append("".join(current))
        # a word can hold whitespace only if lower-casing/NFD produced it; the reference splits there too
        return [p for piece in pieces for p in piece.split()]


class WordpieceTokenizer:
    """Step 6: greedy longest-match-first WordPiece. `tokenize` takes a text already split into words by
    whitespace (BasicTokenizer's output joined, as Google's); `tokenize_word` takes one word."""

    def __init__(self, vocab: Mapping[str, int], unk_token: str = UNK,
                 max_input_chars_per_word: int = MAX_INPUT_CHARS_PER_WORD):
        self.vocab = vocab
        self.unk_token = unk_token
        self.max_input_chars_per_word = max_input_chars_per_word

    def tokenize(self, text: str | bytes) -> list[str]:
        return [piece for word in convert_to_unicode(text).split() for piece in self.tokenize_word(word)]

    def tokenize_word(self, word: str) -> list[str]:
        if len(word) > self.max_input_chars_per_word:
            return [self.unk_token]
        pieces: list[str] = []
        start = 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    pieces.append(piece)
                    start = end
                    break
            else:  # no piece matches at `start`: the whole word is unknown
                return [self.unk_token]
        return pieces


class FullTokenizer:
    """The reference: text -> WordPiece tokens, exactly as Google's `tokenization.FullTokenizer`."""

    def __init__(self, vocab_file: str | Mapping[str, int], do_lower_case: bool = True):
        self.vocab = _as_vocab(vocab_file)
        self.inv_vocab = {i: t for t, i in self.vocab.items()}
        self.do_lower_case = do_lower_case
        self.basic_tokenizer = BasicTokenizer(do_lower_case, self.vocab)
        self.wordpiece_tokenizer = WordpieceTokenizer(self.vocab)

    def tokenize(self, text: str | bytes) -> list[str]:
        return [piece for word in self.basic_tokenizer.tokenize(text)
                for piece in self.wordpiece_tokenizer.tokenize_word(word)]

    def convert_tokens_to_ids(self, tokens: Iterable[str]) -> list[int]:
        return convert_by_vocab(self.vocab, tokens)

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        return convert_by_vocab(self.inv_vocab, ids)


# --------------------------------------------------------------------------------------------------
# Whole-string normalisation (steps 1-5) for the fast path and vocab learning
# --------------------------------------------------------------------------------------------------
class _CharMap(dict):
    """A `str.translate` table filled on first use of each code point (the full table is 1.1M entries)."""

    def __init__(self, rule):
        super().__init__()
        self._rule = rule

    def __missing__(self, cp: int) -> str:
        value = self[cp] = self._rule(chr(cp))
        return value


def _clean_rule(ch: str) -> str:  # steps 1 and 2
    if ch == "\x00" or ch == "\ufffd" or is_control(ch):
        return ""
    if is_whitespace(ch):
        return " "
    return f" {ch} " if is_cjk(ch) else ch


def _punct_rule(ch: str) -> str:  # step 5 (any whitespace lower()/NFD produced separates words, as in the reference)
    if is_punctuation(ch):
        return f" {ch} "
    return " " if ch.isspace() else ch


def _accent_punct_rule(ch: str) -> str:  # end of step 4 (drop Mn after NFD), then step 5
    return "" if unicodedata.category(ch) == "Mn" else _punct_rule(ch)


_CLEAN = _CharMap(_clean_rule)
_PUNCT = _CharMap(_punct_rule)
_ACCENT_PUNCT = _CharMap(_accent_punct_rule)


def basic_normalize(text: str | bytes, do_lower_case: bool = True) -> str:
    """`BasicTokenizer.tokenize(text)` as one string, words separated by whitespace: `.split()` gives the words.

    Equal to the reference because every step is position-independent once words are separated by
    spaces: `str.lower` applies the final-sigma rule within a run of non-space characters, exactly as
    lower-casing word by word does, and NFD reorders marks only between spaces, which are starters.
    """
    text = _as_text(text).translate(_CLEAN)
    if do_lower_case:
        return unicodedata.normalize("NFD", text.lower()).translate(_ACCENT_PUNCT)
    return text.translate(_PUNCT)


# --------------------------------------------------------------------------------------------------
# The fast path
# --------------------------------------------------------------------------------------------------
class FastTokenizer:
    """Batch tokenization with the reference's output; WordPiece runs in Rust (Hugging Face `tokenizers`).

    Text is normalised and split into words by `basic_normalize` (Python's own Unicode tables, as the
    reference; whole-string C-level passes), each distinct word is WordPiece'd once by the Rust model
    (whitespace split + WordPiece, 200-character limit, "##" continuations) and its ids are cached.
    Rust's BertNormalizer/BertPreTokenizer are not used: they disagree with the reference on ~138k code
    points (see docs/tokenization.md) and were measured slower than this path even on ASCII.
    No special tokens are added, and "[CLS]" etc. inside the text are tokenized as text, as the reference does.
    """

    CACHE_WORDS = 1 << 20  # distinct words kept; the cache is emptied when it grows past this

    def __init__(self, vocab_file: str | Mapping[str, int], do_lower_case: bool = True):
        from tokenizers import Tokenizer, models, pre_tokenizers

        self.vocab = _as_vocab(vocab_file)
        self.inv_vocab = {i: t for t, i in self.vocab.items()}
        self.do_lower_case = do_lower_case
        self._wordpiece = Tokenizer(models.WordPiece(
            vocab=self.vocab, unk_token=UNK, continuing_subword_prefix="##",
            max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD))
        self._wordpiece.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        self._names = [self.inv_vocab.get(i, UNK) for i in range(max(self.vocab.values()) + 1)]
        self._cache: dict[str, list[int]] = {}

    def _encode(self, texts: Sequence[str | bytes]) -> list[list[int]]:
        lower = self.do_lower_case
        words = [basic_normalize(t, lower).split() for t in texts]
        cache = self._cache
        new = set(chain.from_iterable(words)).difference(cache)
        if new and len(cache) + len(new) > self.CACHE_WORDS:
            cache.clear()
            new = set(chain.from_iterable(words))
        if new:
            new = list(new)
            for word, enc in zip(new, self._wordpiece.encode_batch_fast(new, add_special_tokens=False)):
                cache[word] = enc.ids
        get = cache.__getitem__
        return [list(chain.from_iterable(map(get, ws))) for ws in words]

    def encode_batch(self, texts: Sequence[str | bytes]) -> list[list[int]]:
        return self._encode(texts)

    def tokenize_batch(self, texts: Sequence[str | bytes]) -> list[list[str]]:
        names = self._names
        return [[names[i] for i in ids] for ids in self._encode(texts)]

    def tokenize(self, text: str | bytes) -> list[str]:
        return self.tokenize_batch([text])[0]

    def convert_tokens_to_ids(self, tokens: Iterable[str]) -> list[int]:
        return [self.vocab[t] for t in tokens]

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        return [self.inv_vocab[i] for i in ids]
