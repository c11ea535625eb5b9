"""data_manifest.json as its readers use it: which shards `bert create-data` wrote into a directory,
how many records each holds and which vocab made them.

`bert pretrain` calls `check_files` before training (every input file that has a manifest beside it
is one of its shards, of the recorded size, made with --vocab_file) and `split_files` to share the
files out over ranks by their record counts. create-data writes the manifest (`pretraining`).
"""

from __future__ import annotations

import hashlib
import os

from bert_core import storage
from bert_core.errors import UserError
from bert_core.layout import DATA_MANIFEST
# A rank may get this much more than the mean number of records when whole files are shared out (its
# epochs are that much longer); past it, every rank reads all files and keeps every size-th record.
_FILE_SPLIT_SLACK = 0.1


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with storage.open_read(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _directory(path: str) -> str:
    return storage.dirname(path) if storage.is_remote(path) else os.path.dirname(os.path.abspath(path))


def _manifests(files: list[str]) -> dict[str, tuple[str, dict, dict] | None]:
    """For each file: (manifest path, manifest, its shards by file name) of the file's directory, or
    None where there is no manifest."""
    by_dir: dict[str, tuple[str, dict, dict] | None] = {}
    for d in {_directory(f) for f in files}:
        path = storage.join(d, DATA_MANIFEST)
        manifest = storage.read_json(path) if storage.exists(path) else None
        by_dir[d] = (path, manifest, {s.get("file"): s for s in manifest.get("shards", [])}) \
            if isinstance(manifest, dict) else None
    return {f: by_dir[_directory(f)] for f in files}


def vocab_entry(files: list[str]) -> dict:
    """The vocab (path, sha256, size) `bert create-data` recorded beside the files; {} if there is
    no manifest (the first directory's, in name order, that records one)."""
    found = _manifests(files)
    for f in sorted(found, key=_directory):
        vocab = (found[f][1].get("vocab") or {}) if found[f] else {}
        if vocab.get("size"):
            return vocab
    return {}


def check_files(files: list[str], vocab_file: str | None = None) -> None:
    """One UserError line unless every file with a data_manifest.json beside it is listed there with
    the size it was written with (a cheap stand-in for its record count), and `vocab_file`, if given,
    has the sha256 of the vocab the data was made with. Files without a manifest are not checked."""
    vocab_sha = sha256_file(vocab_file) if vocab_file else None
    for f, found in _manifests(files).items():
        if found is None:
            continue
        path, manifest, shards = found
        shard = shards.get(storage.basename(f))
        if shard is None:
            raise UserError(f"{f}: not one of the {len(shards)} shard(s) {path} lists (left "
                            f"by another create-data run?); rerun bert create-data into that directory, or "
                            f"name only its shards in --input_file")
        if storage.size(f) != shard["bytes"]:
            raise UserError(f"{f}: {storage.size(f):,} bytes but {path} records {shard['bytes']:,} (the file "
                            f"changed after create-data wrote it); rerun bert create-data")
        made_with = (manifest.get("vocab") or {}).get("sha256")
        if vocab_sha and made_with and made_with != vocab_sha:
            raise UserError(f"--vocab_file={vocab_file} (sha256 {vocab_sha[:12]}...) is not the vocab {f} was made "
                            f"with ({manifest['vocab'].get('path')}, sha256 {made_with[:12]}... in {path}); give "
                            f"that vocab or rerun bert create-data with this one")


def record_counts(files: list[str]) -> dict[str, int | None]:
    """Records per file from its manifest; without one, 0 for a file with no first record, else None
    (at least one, how many unknown: counting would read the whole file)."""
    from bert_core.data.tfrecord import iter_records

    counts: dict[str, int | None] = {}
    for f, found in _manifests(files).items():
        shard = found[2].get(storage.basename(f)) if found else None
        if shard is not None:
            counts[f] = int(shard["instances"])
            continue
        try:
            counts[f] = 0 if next(iter(iter_records(f)), None) is None else None
        except (ValueError, OSError, EOFError):  # damaged: check_records names it
            counts[f] = None
    return counts


def split_files(files: list[str], rank: int, size: int) -> tuple[list[str], bool]:
    """(the files rank `rank` of `size` reads, whether it keeps only every size-th record of them).

    Files with no records are left out. With every file's record count known (a manifest), files go
    to ranks largest first, each to the rank with the fewest records so far, and that split is taken
    if no rank gets more than `_FILE_SPLIT_SLACK` above the mean; without counts, it is taken when the
    files are a multiple of the ranks (rank r reads files r, r+size, ...). Otherwise every rank reads
    all files and keeps records r, r+size, ... (each rank then reads and parses everything). Either way
    each record goes to exactly one rank per epoch and no rank is left with only empty files; fewer
    records than ranks is one UserError line, on every rank alike."""
    counts = record_counts(files)
    full = [f for f in files if counts[f] != 0]
    if not full:
        raise UserError(f"{files[0]}{' and the other input files' if len(files) > 1 else ''}: no records; "
                        f"rerun bert create-data (its manifest counts each shard's records)")
    known = [counts[f] for f in full]
    if None in known:
        return (full[rank::size], False) if len(full) % size == 0 else (full, size > 1)
    total = sum(known)
    if total < size:
        raise UserError(f"the input files hold {total} record(s) for {size} ranks: rank {total} and above "
                        f"would get none; make more data or run fewer ranks")
    loads, shares = [0] * size, [[] for _ in range(size)]
    for f in sorted(full, key=lambda f: -counts[f]):  # ties keep the files' order
        r = loads.index(min(loads))
        loads[r] += counts[f]
        shares[r].append(f)
    if max(loads) <= (1 + _FILE_SPLIT_SLACK) * total / size:
        return sorted(shares[rank], key=full.index), False
    return full, size > 1
