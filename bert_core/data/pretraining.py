"""`bert create-data`: corpus -> masked-LM / next-sentence TFRecord shards + data_manifest.json.

Semantics are those of Google's create_pretraining_data.py (same flags, same features), re-implemented
to stream instead of holding the corpus and every instance in memory:

* Sharding. The input bytes are split into `--num_shards` near-equal byte ranges
  (`corpus.split_ranges`); shard i owns the lines that start in range i (a document crossing a range
  boundary is cut there) and writes `train-0000i-of-N.tfrecord`, so shards hold near-equal numbers of
  instances even when the corpus has fewer documents than shards. Shards are independent units of
  work: `--num_workers` processes on one host and the ranks of `mpirun -np R` (rank r takes shards r,
  r+R, ...) share them out. A shard's bytes depend only on the seed, the shard layout and the
  parameters, never on who ran it.
* Per shard and per duplication pass (`--dupe_factor`), documents are read in blocks of
  `--random_doc_pool_size` documents (a short last block is merged into the one before). A block is the
  pool: its documents are visited in a random order (Google shuffles all documents; we shuffle within a
  block), and the "random next segment" of an NSP pair comes from another document of the same block.
  Memory is bounded by the pool, not the corpus. The coin that makes a pair random is the same 50% as the
  original, so the NSP ratio does not depend on the pool size (tests check this).
* Sentences are tokenized once per shard (`tokenization.FastTokenizer`, identical to BERT's
  FullTokenizer) and held as int32 arrays; with dupe_factor > 1 the token ids are spilled to a temporary
  file and read back for the later passes.
* Instances pass through a shuffle buffer of `--shuffle_buffer_size` records before they are written.
* Each instance is made and masked by Google's algorithm (`instances`: create_instances_from_document,
  truncate_seq_pair, create_masked_lm_predictions), on batches of instances with numpy; records are
  encoded without TensorFlow (`tfrecord`).
* Atomic and resumable: a shard is written under a temporary name and renamed; its statistics go to
  `.shard_stats/<shard>.json`. A rerun with the same parameters skips finished shards, removes stale
  temporaries and rebuilds the manifest from the per-shard statistics.
"""

from __future__ import annotations

import array
import contextlib
import glob
import hashlib
import itertools
import json
import os
import random
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

import bert_core
from bert_core import children, events, lease, mpi, storage
from bert_core.config import DataConfig
from bert_core.data import corpus, tfrecord
from bert_core.data.instances import InstanceMaker, InstanceStats
from bert_core.data.manifest import sha256_file
from bert_core.errors import UserError
from bert_core.layout import DATA_MANIFEST, FLOAT_FEATURES, record_format, shard_name

STATS_DIR = ".shard_stats"
_ENCODE_BATCH = 256         # instances serialized together
_PROGRESS_SECONDS = float(os.environ.get("BERT_PROGRESS_SECONDS", "5"))
# Parameters that change the bytes of a shard (everything but where it goes and who computes it).
_OUTPUT_ONLY = ("output_dir", "output_file", "num_workers")


# --------------------------------------------------------------------------------------------------
# Instances (made by `instances.InstanceMaker`): serialized in batches, shuffled through a bounded buffer
# --------------------------------------------------------------------------------------------------
def _encode(maker: InstanceMaker, batch: list[tuple[list[int], int, bool]]) -> list[bytes]:
    """A batch of instances, masked -> serialized tf.train.Examples."""
    return tfrecord.encode_examples(maker.features(batch), FLOAT_FEATURES)


class ShuffleBuffer:
    """Bounded shuffle: each new item replaces a random held one, which is emitted."""

    def __init__(self, size: int, rng: random.Random):
        self.size, self.rng, self.items = size, rng, []

    def add_many(self, items: list) -> list:
        out = []
        held = self.items
        for item in items:
            if len(held) < self.size:
                held.append(item)
            else:
                j = self.rng.randrange(self.size)
                out.append(held[j])
                held[j] = item
        return out

    def drain(self) -> list:
        held, self.items = self.items, []
        self.rng.shuffle(held)
        return held


# --------------------------------------------------------------------------------------------------
# Documents: read by byte range, tokenized in blocks (the random-document pool), spilled for later passes
# --------------------------------------------------------------------------------------------------
class _Document:
    """A tokenized document as views into its block's id array: len() sentences, [i] -> token ids."""

    __slots__ = ("view", "bounds")

    def __init__(self, view: memoryview, bounds: array.array):
        self.view, self.bounds = view, bounds

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def __getitem__(self, i: int) -> memoryview:
        return self.view[self.bounds[i]:self.bounds[i + 1]]


@dataclass
class Block:
    """Tokenized documents held together: the random-document pool. About 4 bytes a token."""

    ids: np.ndarray               # int32 token ids of all sentences, concatenated
    sentence_lengths: np.ndarray  # tokens per sentence
    doc_sentences: np.ndarray     # sentences per document
    raw_bytes: int = 0            # input bytes read for it (progress)
    raw_documents: int = 0        # documents read, before dropping those without tokens

    def documents(self) -> list[_Document]:
        view = memoryview(self.ids)
        ends = np.concatenate([[0], np.cumsum(self.sentence_lengths)]).tolist()
        docs, k = [], 0
        for count in self.doc_sentences.tolist():
            docs.append(_Document(view, array.array("q", ends[k:k + count + 1])))
            k += count
        return docs

    @classmethod
    def concat(cls, parts: list["Block"]) -> "Block":
        return cls(np.concatenate([p.ids for p in parts]),
                   np.concatenate([p.sentence_lengths for p in parts]),
                   np.concatenate([p.doc_sentences for p in parts]),
                   sum(p.raw_bytes for p in parts), sum(p.raw_documents for p in parts))

    def save(self, f) -> None:
        for arr in (self.ids, self.sentence_lengths, self.doc_sentences, np.array([self.raw_bytes])):
            np.save(f, arr, allow_pickle=False)

    @classmethod
    def load(cls, f) -> "Block | None":
        try:
            ids = np.load(f, allow_pickle=False)
        except EOFError:
            return None
        lengths, docs, raw = (np.load(f, allow_pickle=False) for _ in range(3))
        return cls(ids, lengths, docs, int(raw[0]))


_DOCS_PER_TOKENIZE = 64  # raw documents tokenized together (bounds the Python lists of ids in flight)


def _tokenize(docs: list[list[str]], tokenizer) -> Block:
    """Sentences with no tokens are dropped, then documents with no sentences (as the original)."""
    ids = tokenizer.encode_batch([s for d in docs for s in d])
    lengths: list[int] = []
    doc_counts: list[int] = []
    kept: list[list[int]] = []
    k = 0
    for d in docs:
        count = 0
        for seq in ids[k:k + len(d)]:
            if seq:
                kept.append(seq)
                lengths.append(len(seq))
                count += 1
        k += len(d)
        if count:
            doc_counts.append(count)
    flat = np.fromiter(itertools.chain.from_iterable(kept), dtype=np.int32, count=sum(lengths))
    return Block(flat, np.array(lengths, dtype=np.int64), np.array(doc_counts, dtype=np.int64), 0, len(docs))


def _blocks(pieces, pool_size: int, on_bad_utf8: str, stats: corpus.ReadStats, tokenizer) -> Iterator[Block]:
    """Tokenized blocks of up to `pool_size` documents read from byte ranges. When what is left of the
    ranges is under half a block's bytes, it joins that block, so no block at the end of a shard is tiny
    (its documents would have few others to draw random next segments from); there is no lookahead, so
    at most 1.5 pools are held."""
    def documents():
        for path, start, end in pieces:
            yield from corpus.iter_documents(path, start, end, on_bad_utf8=on_bad_utf8, stats=stats)

    it = documents()
    total = sum(end - start for _, start, end in pieces)

    def fill(limit: int | None) -> Block | None:
        parts, count, before = [], 0, stats.bytes_read
        while limit is None or count < limit:
            step = _DOCS_PER_TOKENIZE if limit is None else min(_DOCS_PER_TOKENIZE, limit - count)
            raw = list(itertools.islice(it, step))
            if not raw:
                break
            count += len(raw)
            parts.append(_tokenize(raw, tokenizer))
        if not parts:
            return None
        block = Block.concat(parts)
        block.raw_bytes = stats.bytes_read - before
        return block

    while (block := fill(pool_size)) is not None:
        left = total - stats.bytes_read
        if 0 < left < block.raw_bytes / 2:
            rest = fill(None)
            if rest is not None:
                block = Block.concat([block, rest])
        yield block


_TOKENIZERS: dict = {}


def _tokenizer(vocab_file: str, do_lower_case: bool):
    """(vocab, FastTokenizer), one per process and vocab: its word cache carries over between shards."""
    key = (vocab_file, do_lower_case)
    if key not in _TOKENIZERS:
        from bert_core.tokenization import FastTokenizer, load_vocab, require_tokens

        vocab = load_vocab(vocab_file)
        require_tokens(vocab, ("[MASK]",), vocab_file, "create-data replaces masked tokens with [MASK]")
        _TOKENIZERS.clear()
        _TOKENIZERS[key] = (vocab, FastTokenizer(vocab, do_lower_case))
    return _TOKENIZERS[key]


# --------------------------------------------------------------------------------------------------
# One shard
# --------------------------------------------------------------------------------------------------
_REPORT: Callable[[int, int], None] = lambda nbytes, ninstances: None


def _shard_seed(seed: int, index: int, num_shards: int) -> int:
    digest = hashlib.sha256(f"bert-create-data:{seed}:{index}:{num_shards}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


class _HashingFile:
    """File wrapper counting and hashing what is written (the shard's sha256 without re-reading it)."""

    def __init__(self, f):
        self.f, self.sha, self.bytes = f, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.sha.update(data)
        self.bytes += len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


@dataclass
class ShardTask:
    config: dict
    index: int
    num_shards: int
    pieces: list
    output: str
    stats_path: str | None
    fingerprint: str


def run_shard(task: ShardTask) -> dict:
    """Generate one shard (atomically) and return its statistics; also written to task.stats_path."""
    cfg = DataConfig(**task.config)
    vocab, tokenizer = _tokenizer(cfg.vocab_file, cfg.do_lower_case)
    seed = _shard_seed(cfg.random_seed, task.index, task.num_shards)
    maker = InstanceMaker(vocab, cfg, seed)
    buffer = ShuffleBuffer(cfg.shuffle_buffer_size, random.Random(seed ^ 0x5DEECE66D))
    order_rng = random.Random(seed ^ 0xB5297A4D)
    read_stats = corpus.ReadStats()
    documents = sentences = 0
    shard_bytes = sum(e - s for _, s, e in task.pieces)
    # The token spill sits beside a local output (same disk, removed with stale temporaries);
    # for gs:// output it goes to the local temp directory.
    out_dir = None if storage.is_remote(task.output) else os.path.dirname(os.path.abspath(task.output))
    spill_path = None
    if task.stats_path:  # an earlier run's shard goes first: never under its final name beside new stats
        storage.remove(task.output)
    try:
        with storage.atomic_open(task.output, "wb") as raw_out:
            out = _HashingFile(raw_out)
            writer = tfrecord.RecordWriter(out, cfg.compression)
            spill = None
            if cfg.dupe_factor > 1:
                fd, spill_path = tempfile.mkstemp(prefix=f".{storage.basename(task.output)}.tokens.",
                                                  suffix=".tmp", dir=out_dir)
                spill = os.fdopen(fd, "w+b")
            for dupe in range(cfg.dupe_factor):
                if dupe == 0:
                    def blocks():
                        return _blocks(task.pieces, cfg.random_doc_pool_size, cfg.on_bad_utf8, read_stats,
                                       tokenizer)
                else:
                    spill.flush()
                    spill.seek(0)

                    def blocks():
                        while (blk := Block.load(spill)) is not None:
                            yield blk
                done_bytes = 0
                for block in blocks():
                    if dupe == 0 and spill is not None:
                        block.save(spill)
                    pool = block.documents()
                    if dupe == 0:
                        documents += len(pool)
                        sentences += len(block.sentence_lengths)
                    order = list(range(len(pool)))
                    order_rng.shuffle(order)
                    before = maker.stats.instances
                    pending: list[tuple] = []
                    for d in order:
                        for inst in maker.from_document(pool, d):
                            pending.append(inst)
                            if len(pending) >= _ENCODE_BATCH:
                                writer.write_many(buffer.add_many(_encode(maker, pending)))
                                pending = []
                    if pending:
                        writer.write_many(buffer.add_many(_encode(maker, pending)))
                    done_bytes += block.raw_bytes
                    _REPORT(block.raw_bytes, maker.stats.instances - before)
                _REPORT(max(0, shard_bytes - done_bytes), 0)  # blank lines and the range tail
            writer.write_many(buffer.drain())
            writer.close()
            if spill is not None:
                spill.close()
            stats = {
                "file": storage.basename(task.output),
                "shard": task.index,
                "num_shards": task.num_shards,
                "fingerprint": task.fingerprint,
                "bytes": out.bytes,
                "sha256": out.sha.hexdigest(),
                **vars(maker.stats),
                "documents": documents,
                "sentences": sentences,
                "input_bytes": shard_bytes,
                "input_ranges": [[p, s, e] for p, s, e in task.pieces],
                "bad_utf8_lines": read_stats.bad_utf8_lines,
                "first_bad_utf8": read_stats.first_bad,
            }
            # before the rename: a shard under its final name always has statistics (they prove
            # create-data wrote it, see _own_output_dir)
            if task.stats_path:
                storage.write_json(task.stats_path, stats)
    finally:
        if spill_path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(spill_path)
    return stats


_NEXT_TASK = None  # shared counter: the next task index to claim


def _worker_init(owner: int, counters, next_task, threads: int) -> None:
    """In a worker process (forkserver; no TensorFlow): end with `owner`, the process that started the
    pool, report progress to it, claim tasks. (Our parent is the forkserver, which outlives `owner`
    while any worker runs: PR_SET_PDEATHSIG would not fire.)"""
    global _REPORT, _NEXT_TASK
    children.exit_with(owner)
    os.environ.setdefault("RAYON_NUM_THREADS", str(threads))  # tokenizers' thread pool per worker
    _NEXT_TASK = next_task

    def report(nbytes: int, ninstances: int) -> None:
        with counters.get_lock():
            counters[0] += nbytes
            counters[1] += ninstances

    _REPORT = report


def _claim_and_run(tasks: list[ShardTask]) -> list[dict]:
    """Run tasks until none is left, claiming them one at a time from the shared counter."""
    done = []
    while True:
        with _NEXT_TASK.get_lock():
            i = _NEXT_TASK.value
            _NEXT_TASK.value += 1
        if i >= len(tasks):
            return done
        done.append(run_shard(tasks[i]))


# --------------------------------------------------------------------------------------------------
# Progress
# --------------------------------------------------------------------------------------------------
class Progress:
    def __init__(self, total_bytes: int, label: str = "create-data"):
        self.total_bytes = max(1, total_bytes)
        self.label = label
        self.start = self.last = time.monotonic()
        self.bytes = 0
        self.instances = 0

    def add(self, nbytes: int, ninstances: int) -> None:
        self.bytes += nbytes
        self.instances += ninstances
        self.maybe_print()

    def set(self, nbytes: float, ninstances: float) -> None:
        self.bytes, self.instances = int(nbytes), int(ninstances)
        self.maybe_print()

    def maybe_print(self, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last < _PROGRESS_SECONDS:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        frac = min(1.0, self.bytes / self.total_bytes)
        rate = self.instances / elapsed
        if final:
            tail = f"done in {elapsed:.1f}s"
        else:
            eta = elapsed * (1 - frac) / frac if frac > 0 else float("nan")
            tail = f"ETA {_hms(eta)}"
        print(f"{self.label}: {100 * frac:5.1f}% of input, {self.instances:,} instances, "
              f"{rate:,.0f} instances/s, {tail}", file=sys.stderr, flush=True)


def _hms(seconds: float) -> str:
    if seconds != seconds:
        return "?"
    s = int(seconds + 0.5)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------
def _check_inputs(cfg: DataConfig) -> list[tuple[str, int]]:
    paths = corpus.expand_inputs(cfg.input_file)
    inputs = []
    for p in paths:
        n = storage.size(p)
        if n == 0:
            raise UserError(f"{p}: empty input file, expected text (one sentence a line)")
        inputs.append((p, n))
    return inputs


def _remove_stale(directory: str, names: list[str]) -> int:
    """Temporaries a killed run left for our own files (never other tools' files)."""
    if storage.is_remote(directory):  # gs:// writers keep their temporaries on local disk
        return 0
    removed = 0
    for name in names:
        for tmp in glob.glob(os.path.join(glob.escape(directory), f".{glob.escape(name)}.*.tmp")):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
                removed += 1
    return removed


_SHARD_FILE = re.compile(r"train-\d{5}-of-\d{5}\.tfrecord")
_STATS_FILE = re.compile(r"train-\d{5}-of-\d{5}\.json")
_TEMPORARY = re.compile(r"\.(train-\d{5}-of-\d{5}\.(tfrecord|json)|" + re.escape(DATA_MANIFEST) + r")\..+\.tmp")


def _own_output_dir(out_dir: str, names: list[str]) -> tuple[int, int]:
    """Make `out_dir` hold only what this run writes, or refuse it before touching anything.

    Ours: data_manifest.json, .shard_stats/, temporaries of our names, and shards whose size the
    manifest or their statistics record (statistics are written before a shard's rename, so every
    shard we wrote has them). Anything else is refused with one line, never deleted. Our temporaries
    are removed, and so are our shards not in `names` (another --num_shards): each shard before its
    statistics, so a kill at any point leaves every remaining shard provably ours for the rerun. The
    old manifest stays until the new one replaces it: a directory caught mid-run never has a manifest
    that agrees with its shards. Returns (temporaries removed, old shards removed)."""
    prefix = out_dir.rstrip("/") + "/"
    files = {i.path[len(prefix):]: i.size for i in storage.list_files(out_dir)}

    def recorded(path: str) -> dict:
        try:
            found = json.loads(storage.read_bytes(storage.join(out_dir, path)))
        except (OSError, ValueError, UserError):
            return {}
        return found if isinstance(found, dict) else {}

    listed: dict = {}
    if DATA_MANIFEST in files:
        manifest = recorded(DATA_MANIFEST)
        if manifest.get("tool") != "bert create-data":
            raise UserError(f"--output_dir={out_dir}: holds a {DATA_MANIFEST} that bert create-data did not write; "
                            f"give an empty or new directory")
        listed = {s.get("file"): s.get("bytes") for s in manifest.get("shards", [])}
    temporaries, old_shards, old_stats, foreign = [], [], [], []
    for rel, size in sorted(files.items()):
        head, _, name = rel.rpartition("/")
        if head not in ("", STATS_DIR):
            foreign.append(rel)
        elif _TEMPORARY.fullmatch(name):
            temporaries.append(rel)
        elif head == STATS_DIR:
            if not _STATS_FILE.fullmatch(name):
                foreign.append(rel)
            elif name.replace(".json", ".tfrecord") not in names:
                old_stats.append(rel)
        elif name in (DATA_MANIFEST, lease.LEASE_NAME):
            continue
        elif not _SHARD_FILE.fullmatch(name) or size not in (
                listed.get(name), recorded(f"{STATS_DIR}/{name.replace('.tfrecord', '.json')}").get("bytes")):
            foreign.append(rel)
        elif name not in names:
            old_shards.append(rel)
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise UserError(f"--output_dir={out_dir}: holds {foreign[0]}{more}, which bert create-data did not write "
                        f"(or which changed since); create-data replaces only its own files: give an empty or "
                        f"new directory, or move it away")
    for rel in temporaries + old_shards + old_stats:
        storage.remove(storage.join(out_dir, rel))
    return len(temporaries), len(old_shards)


def _load_done(stats_path: str, output: str, fingerprint: str) -> dict | None:
    """A finished shard's statistics, if the shard and its stats exist and match these parameters."""
    if not (storage.exists(stats_path) and storage.exists(output)):
        return None
    try:
        stats = json.loads(storage.read_bytes(stats_path))
    except (OSError, ValueError, UserError):
        return None
    if stats.get("fingerprint") != fingerprint or stats.get("bytes") != storage.size(output):
        return None
    return stats


def _totals(shards: list[dict]) -> dict:
    keys = list(InstanceStats.__dataclass_fields__) + ["documents", "sentences", "input_bytes", "bad_utf8_lines"]
    totals = {k: sum(s[k] for s in shards) for k in keys}
    totals["bytes"] = sum(s["bytes"] for s in shards)
    totals["first_bad_utf8"] = [x for s in shards for x in s["first_bad_utf8"]][:5]
    return totals


def _run_tasks(tasks: list[ShardTask], cfg: DataConfig, progress: Progress) -> list[dict]:
    """Run the shard tasks: in this process, helped by num_workers - 1 worker processes."""
    global _REPORT
    workers = min(cfg.num_workers, len(tasks))
    if workers <= 1:
        _REPORT = progress.add
        try:
            return [run_shard(t) for t in tasks]
        finally:
            _REPORT = lambda nbytes, ninstances: None
    import multiprocessing as mp

    methods = mp.get_all_start_methods()
    ctx = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
    counters = ctx.Array("d", 2)
    next_task = ctx.Value("i", 0)
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ctx.Pool(workers - 1, initializer=_worker_init, initargs=(os.getpid(), counters, next_task, threads)) as pool:
        helpers = [pool.apply_async(_claim_and_run, (tasks,)) for _ in range(workers - 1)]

        def check_helpers() -> None:
            for r in helpers:  # fail fast: a helper's error stops the run
                if r.ready() and not r.successful():
                    r.get()

        def report(nbytes: int, ninstances: int) -> None:
            with counters.get_lock():
                counters[0] += nbytes
                counters[1] += ninstances
            progress.set(counters[0], counters[1])
            check_helpers()

        global _NEXT_TASK
        _REPORT, _NEXT_TASK = report, next_task
        try:
            results = _claim_and_run(tasks)  # this process works too: one process fewer to start and feed
        finally:
            _REPORT, _NEXT_TASK = (lambda nbytes, ninstances: None), None
        while not all(r.ready() for r in helpers):
            time.sleep(0.1)
            progress.set(counters[0], counters[1])
            check_helpers()
        for r in helpers:
            results += r.get()
    progress.set(counters[0], counters[1])
    return sorted(results, key=lambda st: st["shard"])


def create_data_main(config: DataConfig) -> int:
    """`bert create-data`: see the module docstring. Prints progress on stderr, a summary on stdout."""
    out = config.output_dir if config.output_file is None else storage.dirname(config.output_file) or "."
    with lease.hold(out, "create-data", ranks=mpi.comm()):  # no other run writes the output meanwhile
        return _create_data(config)


def _create_data(config: DataConfig) -> int:
    cfg = config
    t0 = time.monotonic()
    comm = mpi.comm()
    rank, world = (comm.Get_rank(), comm.Get_size()) if comm is not None else (0, 1)

    inputs = _check_inputs(cfg)
    vocab, _ = _tokenizer(cfg.vocab_file, cfg.do_lower_case)  # validates the vocab; reused in-process
    vocab_sha = sha256_file(cfg.vocab_file)

    if cfg.output_file is not None:
        if "," in cfg.output_file:
            raise UserError(f"--output_file={cfg.output_file}: give one file; for several, use --output_dir "
                            f"with --num_shards")
        if storage.isdir(cfg.output_file):
            raise UserError(f"--output_file={cfg.output_file}: is a directory, expected a file name")
        out_dir, stats_dir = storage.dirname(cfg.output_file) or ".", None
        outputs = [cfg.output_file]
    else:
        out_dir = cfg.output_dir
        if storage.exists(out_dir) and not storage.isdir(out_dir):
            raise UserError(f"--output_dir={out_dir}: exists and is not a directory")
        stats_dir = storage.join(out_dir, STATS_DIR)
        outputs = [storage.join(out_dir, shard_name(i, cfg.num_shards)) for i in range(cfg.num_shards)]
    try:
        storage.makedirs(stats_dir or out_dir)
    except OSError as err:
        raise UserError(f"{stats_dir or out_dir}: cannot create the output directory ({err.strerror})") from None

    params = cfg.model_dump()
    layout = corpus.split_ranges([p for p, _ in inputs], cfg.num_shards)
    shard_params = {k: v for k, v in params.items() if k not in _OUTPUT_ONLY}
    # "ranges": shards made when a range owned whole documents (before lines) are not reused
    base = json.dumps({"params": shard_params, "vocab_sha256": vocab_sha, "inputs": inputs,
                       "version": bert_core.__version__, "ranges": "lines"}, sort_keys=True)

    names = [storage.basename(o) for o in outputs]

    def remove_stale() -> int:
        removed = _remove_stale(out_dir, names + [DATA_MANIFEST])
        if stats_dir:
            removed += _remove_stale(stats_dir, [n.replace(".tfrecord", ".json") for n in names])
        return removed

    problem = None
    if rank == 0:
        try:
            temporaries, old = _own_output_dir(out_dir, names) if stats_dir else (remove_stale(), 0)
        except UserError as err:
            problem = str(err)
        else:
            if temporaries:
                print(f"create-data: removed {temporaries} temporary file(s) left by an interrupted run",
                      file=sys.stderr)
            if old:
                print(f"create-data: removed {old} shard(s) an earlier run wrote with another --num_shards",
                      file=sys.stderr)
    if comm is not None:
        problem = comm.bcast(problem, root=0)  # every rank stops alike, none waits for rank 0
    if problem:
        raise UserError(problem)

    tasks, done = [], []
    for i in range(rank, cfg.num_shards, world):
        fp = hashlib.sha256(f"{base}:{i}:{cfg.num_shards}".encode()).hexdigest()
        stats_path = storage.join(stats_dir, names[i].replace(".tfrecord", ".json")) if stats_dir else None
        prior = _load_done(stats_path, outputs[i], fp) if stats_path else None
        if prior is not None:
            done.append(prior)
        else:
            tasks.append(ShardTask(cfg.model_dump(), i, cfg.num_shards, layout[i], outputs[i], stats_path, fp))
    label = "create-data" if world == 1 else f"create-data[rank {rank}/{world}]"
    if done:
        print(f"{label}: {len(done)} finished shard(s) kept from an earlier run, {len(tasks)} to go",
              file=sys.stderr)
    progress = Progress(sum(sum(e - s for _, s, e in t.pieces) for t in tasks) * cfg.dupe_factor, label)
    error = None
    try:
        results = _run_tasks(tasks, cfg, progress) if tasks else []
    except UserError as err:
        if comm is None:
            remove_stale()  # terminated workers cannot clean up after themselves
            raise
        error, results = str(err), []
    except BaseException:
        if comm is None:
            remove_stale()
        raise

    mine = done + results
    if comm is not None:
        gathered = comm.allgather((error, mine))
        errors = [e for e, _ in gathered if e]
        if errors:
            raise UserError(errors[0])
        shards = [s for _, part in gathered for s in part]
    else:
        shards = mine
    shards.sort(key=lambda s: s["shard"])
    totals = _totals(shards)
    if totals["instances"] == 0:
        if rank == 0:
            for o in outputs:
                storage.remove(o)
        raise UserError(f"{cfg.input_file}: the corpus has no text (only blank lines, or characters the "
                        f"tokenizer drops); expected one sentence a line")
    if tasks:
        progress.maybe_print(final=True)
    if rank != 0:
        return 0
    empty = [s["file"] for s in shards if s["instances"] == 0]
    if empty:
        print(f"create-data: {len(empty)} of {len(shards)} shard(s) hold no instances (first {empty[0]}): the "
              f"corpus has too few lines for --num_shards={cfg.num_shards}; bert pretrain skips them",
              file=sys.stderr)
    if totals["bad_utf8_lines"]:
        print(f"create-data: replaced invalid UTF-8 on {totals['bad_utf8_lines']} line(s), first at "
              f"{', '.join(totals['first_bad_utf8'])}", file=sys.stderr)
    manifest = {
        "tool": "bert create-data",
        "version": bert_core.__version__,
        "format": record_format(cfg.compression, cfg.max_seq_length, cfg.max_predictions_per_seq),
        "parameters": params,
        "vocab": {"path": cfg.vocab_file, "sha256": vocab_sha, "size": len(vocab)},
        "inputs": [{"path": p, "bytes": n} for p, n in inputs],
        "totals": totals,
        "shards": [{k: v for k, v in s.items() if k != "fingerprint"} for s in shards],
    }
    elapsed = time.monotonic() - t0
    where = cfg.output_file or cfg.output_dir
    if cfg.output_file is None:
        manifest_path = storage.join(cfg.output_dir, DATA_MANIFEST)
        storage.write_json(manifest_path, manifest)
        events.emit("wrote", "create-data", path=manifest_path)
        where = f"{len(outputs)} shard(s) in {cfg.output_dir} (manifest {manifest_path})"
    print(f"wrote {totals['instances']:,} instances ({totals['tokens']:,} tokens, {totals['masked']:,} masked) "
          f"to {where} in {elapsed:.1f}s")
    return 0

