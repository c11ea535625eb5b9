"""`bert learn-vocab`: learn a WordPiece vocab.txt from a corpus and print its coverage on that corpus.

The corpus is normalised and split into words exactly as the tokenizer does (`basic_normalize`: clean-up,
CJK split, optional lower-casing + accent stripping, punctuation split), then the Hugging Face
`tokenizers` WordPiece trainer learns pieces from those words. vocab.txt is written in BERT's layout:
[PAD], [UNK], [CLS], [SEP], [MASK], then the pieces (single characters, "##" continuations, merges),
one a line, no duplicates, exactly --vocab_size lines unless the corpus has fewer pieces to offer.
Coverage is measured by tokenizing every distinct word of the corpus with the written vocab.

The same corpus always gives the same vocab.txt. The trainer alone does not (huggingface/tokenizers#1794):
it numbers the "##" continuation characters in hash-map order, and those numbers break ties between
merges of equal count. So a first pass counts the characters and the trainer is handed every "##"
continuation of its alphabet up front, in sorted order (`continuation_tokens`).
"""

from __future__ import annotations

import collections
import heapq
import sys
import time
from typing import Iterator

from bert_core import layout, storage
from bert_core.config import VocabConfig
from bert_core.data.corpus import ReadStats, expand_inputs, iter_lines
from bert_core.errors import UserError
from bert_core.tokenization import SPECIAL_TOKENS, UNK, FastTokenizer, basic_normalize, load_vocab

BATCH_LINES = 1000
PROGRESS_SECONDS = 10.0


class _CorpusWords:
    """Normalised lines of the corpus, in batches for the trainer; counts words as they go by."""

    def __init__(self, paths: list[str], do_lower_case: bool, on_bad_utf8: str):
        self.paths = paths
        self.do_lower_case = do_lower_case
        self.on_bad_utf8 = on_bad_utf8
        self.stats = ReadStats()
        self.counts: collections.Counter[str] = collections.Counter()

    def characters(self) -> tuple[collections.Counter[str], set[str]]:
        """A first pass over the corpus: every character's count, and the characters that occur after a
        word's first one (those the trainer makes "##" continuations of)."""
        counts: collections.Counter[str] = collections.Counter()
        inner: set[str] = set()
        for path in self.paths:
            for line in iter_lines(path, self.on_bad_utf8, ReadStats()):
                text = basic_normalize(line, self.do_lower_case)
                counts.update(text)
                inner.update("".join(word[1:] for word in text.split()))
        del counts[" "]
        return counts, inner

    def batches(self) -> Iterator[list[str]]:
        start = last = time.monotonic()
        batch: list[str] = []
        for path in self.paths:
            for line in iter_lines(path, self.on_bad_utf8, self.stats):
                text = basic_normalize(line, self.do_lower_case)
                self.counts.update(text.split())
                batch.append(text)
                if len(batch) >= BATCH_LINES:
                    yield batch
                    batch = []
                    now = time.monotonic()
                    if now - last >= PROGRESS_SECONDS:
                        last = now
                        mb = self.stats.bytes_read / 1e6
                        print(f"learn-vocab: read {self.stats.lines:,} lines, {mb:,.1f} MB "
                              f"({mb / (now - start):.1f} MB/s)", file=sys.stderr, flush=True)
        if batch:
            yield batch


def continuation_tokens(counts: collections.Counter[str], inner: set[str], limit_alphabet: int) -> list[str]:
    """"##c" for every character c of the trainer's alphabet (the limit_alphabet most frequent; all
    characters tied with the last one too, as the trainer's own cut among ties is unordered) that
    occurs inside a word, sorted: given to the trainer first, they get the same ids in every run."""
    ranked = sorted(counts.values(), reverse=True)
    floor = ranked[limit_alphabet - 1] if len(ranked) >= limit_alphabet else 0
    return ["##" + c for c in sorted(c for c, n in counts.items() if n >= floor and c in inner)]


def train_pieces(corpus: _CorpusWords, config: VocabConfig) -> list[str]:
    """The trainer's pieces in its id order, without the special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token=UNK, continuing_subword_prefix="##"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # the text is already normalised
    trainer = trainers.WordPieceTrainer(
        vocab_size=config.vocab_size, min_frequency=config.min_frequency,
        limit_alphabet=config.limit_alphabet,
        special_tokens=list(SPECIAL_TOKENS) + continuation_tokens(*corpus.characters(), config.limit_alphabet),
        continuing_subword_prefix="##", show_progress=False)
    tokenizer.train_from_iterator(corpus.batches(), trainer=trainer)
    learned = tokenizer.get_vocab()
    return [t for t in sorted(learned, key=learned.__getitem__) if t not in SPECIAL_TOKENS]


def build_vocab(pieces: list[str], vocab_size: int) -> list[str]:
    """BERT's layout: the special tokens, then pieces in order, no duplicates, at most vocab_size."""
    tokens = list(SPECIAL_TOKENS)
    seen = set(tokens)
    for piece in pieces:
        if len(tokens) >= vocab_size:
            break
        if piece and piece not in seen and piece == piece.strip():
            seen.add(piece)
            tokens.append(piece)
    return tokens


def coverage(vocab: dict[str, int], counts: collections.Counter[str], do_lower_case: bool, examples: int = 0) -> dict:
    """UNK rate and pieces per word of `vocab` over the corpus words (each distinct word tokenized once);
    `by_pieces`: {pieces: words} (an unknown word is one piece, [UNK]). `examples` > 0 adds the most
    frequent split words with their pieces (`split_examples`) and unknown words (`unk_examples`)."""
    tokenizer = FastTokenizer(vocab, do_lower_case=do_lower_case)
    unk_id = vocab[UNK]
    words = sum(counts.values())
    distinct = list(counts)
    pieces = unk = split = 0
    by_pieces: collections.Counter[int] = collections.Counter()
    split_words: list[tuple[int, str, list[int]]] = []
    unk_words: list[tuple[int, str]] = []
    for i in range(0, len(distinct), 10_000):
        chunk = distinct[i:i + 10_000]
        for word, ids in zip(chunk, tokenizer.encode_batch(chunk)):
            n = counts[word]
            pieces += n * len(ids)
            unk += n * ids.count(unk_id)
            split += n * (len(ids) > 1)
            by_pieces[len(ids)] += n
            if examples and len(ids) > 1:
                split_words.append((n, word, ids))
            elif examples and unk_id in ids:
                unk_words.append((n, word))
    out = {"words": words, "distinct_words": len(distinct), "pieces": pieces, "unk_words": unk,
           "unk_rate": unk / words if words else 0.0, "pieces_per_word": pieces / words if words else 0.0,
           "split_rate": split / words if words else 0.0, "by_pieces": dict(sorted(by_pieces.items()))}
    if examples:
        top = heapq.nlargest(examples, split_words, key=lambda t: t[0])
        out["split_examples"] = [[word, n, tokenizer.convert_ids_to_tokens(ids)] for n, word, ids in top]
        out["unk_examples"] = [[word, n] for n, word in heapq.nlargest(examples, unk_words)]
    return out


def learn_vocab_main(config: VocabConfig) -> int:
    layout.check_output_file("--output_file", config.output_file)
    paths = expand_inputs(config.input_file)
    corpus = _CorpusWords(paths, config.do_lower_case, config.on_bad_utf8)
    started = time.monotonic()
    pieces = train_pieces(corpus, config)
    if not corpus.counts:
        raise UserError(f"{config.input_file}: the corpus has no words "
                        f"({corpus.stats.lines} lines, all blank after clean-up)")
    tokens = build_vocab(pieces, config.vocab_size)
    with storage.atomic_open(config.output_file, "wb") as f:
        f.write(("\n".join(tokens) + "\n").encode("utf-8"))
    vocab = load_vocab(config.output_file)  # what users will load: check it round-trips
    cov = coverage(vocab, corpus.counts, config.do_lower_case)
    seconds = time.monotonic() - started

    case = "uncased (lower-cased, accents stripped)" if config.do_lower_case else "cased"
    rows = [
        ("vocab file", config.output_file),
        ("vocab size", f"{len(vocab):,} ({len(SPECIAL_TOKENS)} special + {len(vocab) - len(SPECIAL_TOKENS):,} pieces), {case}"),
        ("corpus", f"{corpus.stats.lines:,} lines in {len(paths)} file{'s' if len(paths) > 1 else ''}, "
                   f"{cov['words']:,} words ({cov['distinct_words']:,} distinct)"),
        ("UNK rate", f"{cov['unk_rate']:.4%} of words ({cov['unk_words']:,})"),
        ("mean pieces per word", f"{cov['pieces_per_word']:.3f}"),
        ("words split in pieces", f"{cov['split_rate']:.2%}"),
        ("time", f"{seconds:.1f} s"),
    ]
    if corpus.stats.bad_utf8_lines:
        rows.append(("bad UTF-8 lines", f"{corpus.stats.bad_utf8_lines:,} (replaced with U+FFFD; first at "
                                        f"{corpus.stats.first_bad[0]})"))
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
    if len(vocab) < config.vocab_size:
        print(f"note: the corpus is too small for --vocab_size={config.vocab_size}: it yields only "
              f"{len(vocab):,} tokens, and vocab.txt has that many lines", flush=True)
    return 0
