"""`bert prepare-corpus`: inputs in any supported format -> BERT-format shards and a drop report.

    bert prepare-corpus --input_file=enwiki-*-pages-articles*.xml.bz2 --output_dir=corpus/ \\
        --num_shards=16 --num_workers=8

Output (`output_dir`): `corpus-00003-of-00016.txt` (one sentence a line, a blank line between
documents: `bert create-data --input_file='corpus/corpus-*.txt'` reads them), `corpus_report.json` and
`corpus_report.md` (documents kept, dropped per reason with examples), written last, and
`.corpus_stats/` (each shard's counts, for resuming).

Sharding. The inputs are cut into units by a rule that knows no workers (bert_core/corpus/units.py):
a text, bert or jsonl file (compressed or not) into blocks of about 1 MiB of its decompressed bytes,
each ending at a document boundary; a multistream dump into its bz2 streams; a plain (not multistream) dump
into its pages (which only parsing it finds). The units are numbered across the inputs in order; each
run of num_shards units gives one to every shard, in a fixed pseudo-random order (`units.shard_of`: no
aliasing with a periodic input). So the output does not depend on the
number of workers or ranks; documents equal raw or after cleaning that land in two shards are dropped
by one pass over the written shards (`cross_shard`) at the end, those in one shard by its `Cleaner`.
The shards are shared out among `min(num_shards, workers x ranks)` tasks, one a process: the
command's process reads the inputs once and only cuts them (a search for the boundary near each
block's end, a newline count for `file:line`; XML parsing for a plain dump), does the expensive work
(decoding, markup removal, segmentation, cleaning) of its own task's units itself, and sends each
other unit's bytes (a stream: its offsets) to the worker process of its shard's task; so N workers
are N processes. With a plain dump that this process decompresses for all (gzip, zstd, bz2 without
7-Zip, which decodes in its own process), it takes no task and every task has a worker process. Each MPI rank reads for its own tasks. Memory is flat in
the corpus size: a few blocks a worker, plus 16 bytes a kept document for duplicate detection.

Atomic and resumable. Each shard is written to a temporary file and renamed when whole, after its
counts (`.corpus_stats/`, with a fingerprint of the inputs and settings); a rerun skips the shards
already whole, so a killed run resumes and an unkilled rerun writes nothing. A run that keeps no
document stops with one line and leaves no shard.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
import types
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

import bert_core
from bert_core import children, events, mpi, storage
from bert_core.layout import CORPUS_REPORT_JSON as REPORT_JSON
from bert_core.layout import CORPUS_REPORT_MARKDOWN as REPORT_MARKDOWN
from bert_core.layout import CORPUS_SHARD_GLOB as SHARD_GLOB
from bert_core.layout import corpus_shard_name as shard_name
from bert_core.corpus import cross_shard, readers, units
from bert_core.corpus.clean import Cleaner, Report, write_report
from bert_core.corpus.segment import sentence_lines
from bert_core.errors import UserError

if TYPE_CHECKING:  # the workers get the settings as a plain namespace: pydantic's import is 0.2 CPU s a process
    from bert_core.config import PrepareCorpusConfig

STATS_DIR = ".corpus_stats"
_PROGRESS_SECONDS = float(os.environ.get("BERT_PROGRESS_SECONDS", "5"))
_OUTPUT_ONLY = ("output_dir", "num_workers")  # settings that do not change a shard's bytes
# The rule that gives each document its shard, in the fingerprint: shards made by another rule are remade
# (2: a plain dump's pages numbered as units; 1 hashed their text).
SHARDING = 2


@dataclass
class Source:
    path: str
    format: str                                   # wiki, jsonl, text, bert
    size: int                                     # bytes (compressed, if it is)
    streams: list[tuple[int, int]] | None = None  # a multistream dump's page streams


def plan_sources(cfg: PrepareCorpusConfig) -> list[Source]:
    """The input files, each with its format (given or detected) and, for a multistream dump, its streams."""
    sources = []
    for path in readers.expand_inputs(cfg.input_file):
        fmt = cfg.corpus_format if cfg.corpus_format != "auto" else readers.detect_format(path)
        streams = None
        if fmt == "wiki":
            from bert_core.corpus import wiki  # here: text and JSON lines runs start without it

            index = cfg.wiki_index or wiki.index_beside(path)
            if index:
                if not storage.exists(index):
                    raise UserError(f"--wiki_index={index}: no such file")
                streams = wiki.stream_offsets(index, path)
                wiki.check_multistream_header(path, streams[0][0])
        sources.append(Source(path, fmt, storage.size(path), streams))
    return sources


def needs_preparing(input_file: str, corpus_format: str) -> bool:
    """Whether a corpus must go through prepare-corpus before the pipeline's held-out split and
    create-data: yes unless it is BERT's format already (given as `bert`, or every file detected so),
    which is read as it is, as before this step existed."""
    if corpus_format != "auto":
        return corpus_format != "bert"
    return any(readers.detect_format(p) != "bert" for p in readers.expand_inputs(input_file))


def document_text(doc: readers.RawDocument) -> str:
    """A raw document's sentences, one a line, before cleaning (which trims the lines and drops blank ones)."""
    if doc.kind == "bert":
        return doc.text
    if doc.kind == "wiki":
        from bert_core.corpus import wiki

        return sentence_lines(wiki.wikitext_to_paragraphs(doc.text))
    return sentence_lines(readers.paragraphs_of(doc))


def _work(sources: list[Source], cfg: PrepareCorpusConfig, progress) -> Iterator[tuple[int, object]]:
    """(shard, item) for every item of the inputs, in input order: a `units.Block` or `units.Stream`
    or a plain wiki dump's page as a `readers.RawDocument` (unit n goes to shard `units.shard_of(n)`, the
    units numbered across the inputs; a page is numbered as any unit, not hashed: 2% of the CPU of a
    dump, for a hash of every page's text). `progress` gets
    the bytes read of a plain dump (the other items carry their size)."""
    number, block = 0, _block_bytes(cfg, sources)
    for src in sources:
        if src.streams is not None:
            for start, end in src.streams:
                yield units.shard_of(number, cfg.num_shards), units.Stream(src.path, start, end)
                number += 1
        elif src.format == "wiki":
            from bert_core.corpus import wiki

            last = [0]

            def read(count: int) -> None:
                delta, last[0] = count - last[0], count
                progress(delta)

            for doc in wiki.iter_dump(src.path, read):
                yield units.shard_of(number, cfg.num_shards), doc
                number += 1
        else:
            for unit in units.blocks(src.path, src.format, block):
                yield units.shard_of(number, cfg.num_shards), unit
                number += 1


def _block_bytes(cfg: PrepareCorpusConfig, sources: list[Source]) -> int:
    return units.block_bytes(sum(s.size for s in sources), cfg.num_shards)


def _documents(item, cfg: PrepareCorpusConfig) -> Iterator[readers.RawDocument]:
    if isinstance(item, units.Block):
        return units.block_documents(item, cfg.text_field, cfg.on_bad_utf8)
    if isinstance(item, units.Stream):
        from bert_core.corpus import wiki

        return (doc for _, doc in wiki.iter_multistream(item.path, [(item.start, item.end)], lambda _: True))
    return iter((item,))


_REPORT = None  # progress callback of this process: (bytes read delta, documents delta)


class _ShardWriter:
    """A task's open shards: items in (their expensive work done here), whole shards out."""

    def __init__(self, shards: list[int], cfg: PrepareCorpusConfig, fingerprint: str, stack: contextlib.ExitStack):
        self.cfg, self.fingerprint, self.shards = cfg, fingerprint, shards
        self.reports = {k: Report() for k in shards}
        self.cleaners = {k: Cleaner(self.reports[k], cfg.normalization, cfg.min_sentences, cfg.min_chars,
                                    cfg.dedup) for k in shards}
        self.started = {k: False for k in shards}
        self.files = {k: stack.enter_context(storage.atomic_open(
            storage.join(cfg.output_dir, shard_name(k, cfg.num_shards)), "wb")) for k in shards}  # UTF-8

    def take(self, shard: int, item) -> None:
        for doc in _documents(item, self.cfg):
            self.add(shard, doc)
        if not isinstance(item, readers.RawDocument):
            _REPORT(item.size, 0)

    def add(self, shard: int, doc: readers.RawDocument) -> None:
        report = self.reports[shard]
        report.documents_in += 1
        if doc.dropped:
            report.drop(doc.dropped, doc.where, doc.text)
            return
        kept = self.cleaners[shard].clean(doc.where, document_text(doc), doc.text)
        if kept is None:
            return
        f = self.files[shard]
        if self.started[shard]:
            f.write(b"\n")
        self.started[shard] = True
        f.write(kept)
        f.write(b"\n")
        _REPORT(0, 1)

    def finish(self) -> None:
        """The counts, before the shards get their names (on leaving the ExitStack): a shard is whole
        only with them (resume)."""
        for k in self.shards:
            name = shard_name(k, self.cfg.num_shards)
            storage.write_json(storage.join(self.cfg.output_dir, STATS_DIR, name + ".json"),
                               {"fingerprint": self.fingerprint, "report": self.reports[k].to_dict()})
            storage.remove(cross_shard.dups_path(self.cfg.output_dir, STATS_DIR, name))  # a remade shard's


def _skipped(item) -> None:
    """An item of another rank's shard or of a shard already whole: read past, counted as done."""
    if not isinstance(item, readers.RawDocument):
        _REPORT(item.size, 0)


def run_task(shards: list[int], sources: list[Source], cfg: PrepareCorpusConfig, fingerprint: str) -> list[int]:
    """Write `shards` (indexes) whole, in one pass over the inputs, in this process; returns them."""
    owned = set(shards)
    with contextlib.ExitStack() as stack:
        writer = _ShardWriter(shards, cfg, fingerprint, stack)
        for shard, item in _work(sources, cfg, lambda n: _REPORT(n, 0)):
            if shard in owned:
                writer.take(shard, item)
            else:
                _skipped(item)
        writer.finish()
    return shards


def _fed_task(shards: list[int], cfg: PrepareCorpusConfig, fingerprint: str, inbox, outbox, owner: int,
              counters) -> None:
    """A worker process fed by the reader (`_fan_out`): batches of (shard, item) until None."""
    _worker_init(owner, counters)
    try:
        with contextlib.ExitStack() as stack:
            writer = _ShardWriter(shards, cfg, fingerprint, stack)
            while (batch := inbox.get()) is not None:
                for shard, item in batch:
                    writer.take(shard, item)
            writer.finish()
        outbox.put(("done", None))
    except BaseException as err:  # noqa: BLE001 - handed to the reader, which raises it
        outbox.put(("error", err))


def _worker_init(owner: int, counters) -> None:
    global _REPORT
    children.exit_with(owner)
    _REPORT = _shared_report(counters)


def _shared_report(counters):
    def report(nbytes: int, ndocs: int) -> None:
        with counters.get_lock():
            counters[0] += nbytes
            counters[1] += ndocs

    return report


class Progress:
    def __init__(self, total_bytes: int):
        self.total = max(1, total_bytes)
        self.start = self.last = time.monotonic()

    def show(self, nbytes: float, ndocs: float, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last < _PROGRESS_SECONDS:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        frac = min(1.0, nbytes / self.total)
        tail = f"done in {elapsed:.1f}s" if final else (
            f"ETA {int(elapsed * (1 - frac) / frac)}s" if frac > 0 else "ETA ?")
        print(f"prepare-corpus: {100 * frac:5.1f}% of input, {int(ndocs):,} documents kept, "
              f"{ndocs / elapsed:,.0f} documents/s, {nbytes / elapsed / 1e6:.1f} MB/s read, {tail}",
              file=sys.stderr, flush=True)


def _run_tasks(tasks: list[list[int]], sources, cfg, fingerprint: str, progress: Progress) -> None:
    """One task: here. Several: the first here and a worker process each for the others, fed by this
    one (`_fan_out`). With a plain (not multistream) dump among the inputs that this process decompresses
    (gzip, zstd, bz2 without 7-Zip), a worker process each: it decompresses and parses the dump for all of
    them, and a task on top would make it the slowest by far (4.9 CPU s against the worker's 1.4 on the
    x8 excerpt before the C fast paths). Parsing alone (7-Zip decodes bz2 in its own process) leaves it
    room for a task: without one, 2 workers took longer than 1 on the x8 dump (the reader's parsing and
    sending outweighed the workers' share since the markup passes run in C)."""
    global _REPORT
    if len(tasks) > 1:
        if any(s.format == "wiki" and s.streams is None and readers.decompressed_here(s.path) for s in sources):
            return _fan_out([], tasks, sources, cfg, fingerprint, progress)
        return _fan_out(tasks[0], tasks[1:], sources, cfg, fingerprint, progress)
    counters = [0.0, 0.0]

    def report(nbytes: int, ndocs: int) -> None:
        counters[0] += nbytes
        counters[1] += ndocs
        progress.show(*counters)

    _REPORT = report
    try:
        for shards in tasks:
            run_task(shards, sources, cfg, fingerprint)
    finally:
        _REPORT = None


_BATCH = 32  # documents a message to a worker (a block or stream is a message of its own)
_AHEAD = 2   # items of this process's own task held back, to work on while a worker's queue is full


def _fan_out(own: list[int], others: list[list[int]], sources: list[Source], cfg: PrepareCorpusConfig,
             fingerprint: str, progress: Progress) -> None:
    """Read the inputs once here, cutting them into items (`_work`: blocks of decompressed text, a
    multistream dump's stream offsets, a plain dump's pages). The items of the shards `own` are worked
    on in this process, between the sends (a few held back, to work on while a worker's queue is full
    rather than wait); every other item goes to the worker process of its task in `others`, in input
    order, which does the rest. So N tasks are N processes, not N + 1 on N cores, and this process
    starts working while the workers' interpreter starts. A worker's error is raised here."""
    global _REPORT
    import collections
    import multiprocessing as mp
    import queue
    import threading

    ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
    if ctx.get_start_method() == "forkserver":  # the workers' imports once, in the forkserver, not in each
        wikis = any(s.format == "wiki" for s in sources)  # (wikitextparser, 0.09 s, only where the C and
        ctx.set_forkserver_preload(["bert_core.corpus.prepare"] +  # regex fast paths give up: when needed)
                                   (["bert_core.corpus.wiki"] if wikis else []))
    shared = ctx.Array("d", 2)
    owner_of = {k: i for i, shards in enumerate([own] + others) for k in shards}  # 0: this process
    inboxes = [ctx.Queue(4) for _ in others]
    outbox = ctx.Queue()
    settings = types.SimpleNamespace(**cfg.model_dump())
    procs = [ctx.Process(target=_fed_task, args=(shards, settings, fingerprint, inboxes[i], outbox, os.getpid(),
                                                 shared), daemon=True) for i, shards in enumerate(others)]
    finished = 0
    pending: collections.deque = collections.deque()  # (shard, item) of this process's task, not done yet
    start_errors: list[BaseException] = []

    def start() -> None:  # a thread: the first start waits for the forkserver's interpreter and imports
        try:
            for p in procs:
                p.start()
        except BaseException as err:  # noqa: BLE001 - raised by check()
            start_errors.append(err)

    def check() -> None:
        nonlocal finished
        while True:
            try:
                kind, value = outbox.get_nowait()
            except queue.Empty:
                break
            if kind == "error":
                raise value
            finished += 1
        if start_errors:
            raise start_errors[0]
        for p in procs:
            if p.exitcode not in (None, 0):
                raise UserError(f"prepare-corpus: a worker process ended with exit code {p.exitcode}")
        progress.show(shared[0], shared[1])

    def send(i: int, item) -> None:
        while True:
            try:
                inboxes[i - 1].put(item, block=not pending, timeout=0.5)
                return
            except queue.Full:  # the worker has enough to do: do some of this process's own work
                if pending:
                    writer.take(*pending.popleft())
                check()

    starter = threading.Thread(target=start, daemon=True)
    starter.start()
    _REPORT = _shared_report(shared)
    try:
        with contextlib.ExitStack() as stack:
            writer = _ShardWriter(own, cfg, fingerprint, stack)
            batches: list[list] = [[] for _ in range(1 + len(others))]
            for n, (shard, item) in enumerate(_work(sources, cfg, lambda nbytes: _REPORT(nbytes, 0))):
                i = owner_of.get(shard)
                if i is None:  # a shard already whole, or another rank's
                    _skipped(item)
                    continue
                if i == 0:
                    pending.append((shard, item))
                    if len(pending) > _AHEAD:
                        writer.take(*pending.popleft())
                else:
                    batches[i].append((shard, item))
                    if len(batches[i]) >= _BATCH or not isinstance(item, readers.RawDocument):
                        send(i, batches[i])
                        batches[i] = []
                if n % 256 == 0 or not isinstance(item, readers.RawDocument):
                    check()
            for i, batch in enumerate(batches[1:], 1):
                if batch:
                    send(i, batch)
                send(i, None)
            while pending:
                writer.take(*pending.popleft())
            writer.finish()
        while finished < len(others):
            check()
            time.sleep(0.05)
    finally:
        _REPORT = None
        starter.join()
        if finished < len(others):  # an error: stop the workers, drop what they will not read
            for p in procs:
                if p.pid is not None:
                    p.kill()
            for q in inboxes:
                q.cancel_join_thread()
        for p in procs:
            if p.pid is not None:
                p.join()


def _fingerprint(cfg: PrepareCorpusConfig, sources: list[Source]) -> str:
    params = {k: v for k, v in cfg.model_dump().items() if k not in _OUTPUT_ONLY}
    inputs = [(s.path, s.size, s.format) for s in sources]
    text = json.dumps({"params": params, "inputs": inputs, "version": bert_core.__version__,
                       "block_bytes": _block_bytes(cfg, sources), "sharding": SHARDING}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _done(cfg: PrepareCorpusConfig, index: int, fingerprint: str) -> Report | None:
    """The shard's report if the shard is whole and made from these inputs and settings."""
    name = shard_name(index, cfg.num_shards)
    if not storage.exists(storage.join(cfg.output_dir, name)):
        return None
    data = cross_shard.fingerprinted(storage.join(cfg.output_dir, STATS_DIR, name + ".json"), fingerprint)
    return None if data is None else Report.from_dict(data["report"])


def _remove_stale(cfg: PrepareCorpusConfig) -> None:
    """Shards and counts of another --num_shards, the report of an earlier run (rewritten last), and
    the temporaries of a killed one."""
    names = {shard_name(i, cfg.num_shards) for i in range(cfg.num_shards)}
    for path in storage.glob(storage.join(cfg.output_dir, SHARD_GLOB)):
        if storage.basename(path) not in names:
            storage.remove(path)
    for path in storage.glob(storage.join(cfg.output_dir, STATS_DIR, SHARD_GLOB + ".json")):
        if storage.basename(path)[:-len(".json")] not in names:
            storage.remove(path)
    for path in storage.glob(storage.join(cfg.output_dir, STATS_DIR, SHARD_GLOB + ".dups.json")):
        if storage.basename(path)[:-len(".dups.json")] not in names:
            storage.remove(path)
    for name in (REPORT_JSON, REPORT_MARKDOWN):
        storage.remove(storage.join(cfg.output_dir, name))
    for directory in (cfg.output_dir, storage.join(cfg.output_dir, STATS_DIR)):  # a killed run's
        storage.remove_stale_temporaries(directory)


def _remove_outputs(cfg: PrepareCorpusConfig) -> None:
    for i in range(cfg.num_shards):
        name = shard_name(i, cfg.num_shards)
        storage.remove(storage.join(cfg.output_dir, name))
        storage.remove(storage.join(cfg.output_dir, STATS_DIR, name + ".json"))
        storage.remove(cross_shard.dups_path(cfg.output_dir, STATS_DIR, name))


def prepare_corpus_main(config: PrepareCorpusConfig) -> int:
    """`bert prepare-corpus`: progress on stderr, one summary line on stdout."""
    cfg = config
    comm = mpi.comm()
    rank, world = (comm.Get_rank(), comm.Get_size()) if comm is not None else (0, 1)
    if storage.exists(cfg.output_dir) and not storage.isdir(cfg.output_dir):
        raise UserError(f"--output_dir={cfg.output_dir}: exists and is not a directory")
    sources = plan_sources(cfg)
    fingerprint = _fingerprint(cfg, sources)
    try:
        storage.makedirs(storage.join(cfg.output_dir, STATS_DIR))
    except OSError as err:
        raise UserError(f"{cfg.output_dir}: cannot create the output directory ({err.strerror})") from None
    if rank == 0:
        _remove_stale(cfg)
    if comm is not None:
        comm.Barrier()

    todo = [k for k in range(cfg.num_shards) if _done(cfg, k, fingerprint) is None]
    groups = min(len(todo), cfg.num_workers * world) or 1
    tasks = [[k for j, k in enumerate(todo) if j % groups == g] for g in range(groups)]
    tasks = [t for g, t in enumerate(tasks) if t and g % world == rank]
    sizes = sum(s.size for s in sources)
    progress = Progress(sizes)
    if todo and rank == 0 and len(todo) < cfg.num_shards:
        print(f"prepare-corpus: {cfg.num_shards - len(todo)} of {cfg.num_shards} shards already whole, "
              f"making the other {len(todo)}", file=sys.stderr, flush=True)
    if world > 1:
        mine = sorted(k for t in tasks for k in t)
        print(f"prepare-corpus: rank {rank}/{world}: shards {', '.join(map(str, mine)) or 'none'}",
              file=sys.stderr, flush=True)
    t0 = time.monotonic()
    _run_tasks(tasks, sources, cfg, fingerprint, progress)
    if comm is not None:
        comm.Barrier()
    if rank != 0:
        return 0

    total = Report()
    for k in range(cfg.num_shards):
        shard_report = _done(cfg, k, fingerprint)
        if shard_report is None:
            raise UserError(f"{cfg.output_dir}: shard {shard_name(k, cfg.num_shards)} is missing after the run")
        total.merge(shard_report)
    if cfg.dedup and cfg.num_shards > 1 and total.documents_out:
        cross_shard.remove(cfg.output_dir, STATS_DIR, [shard_name(k, cfg.num_shards) for k in range(cfg.num_shards)],
                           fingerprint, total)
    if total.documents_out == 0:
        _remove_outputs(cfg)
        raise UserError(f"{cfg.input_file}: no document left after cleaning ({total.summary()}); "
                        f"check --corpus_format, --min_sentences and --min_chars")
    write_report(total, storage.join(cfg.output_dir, REPORT_JSON), storage.join(cfg.output_dir, REPORT_MARKDOWN))
    elapsed = time.monotonic() - t0
    progress.show(sizes, total.documents_out, final=True)
    events.emit("wrote", "prepare-corpus", path=cfg.output_dir, documents=total.documents_out,
                sentences=total.sentences_out)
    print(f"wrote {cfg.num_shards} shard(s) to {cfg.output_dir}: {total.summary()} in {elapsed:.1f}s")
    return 0
