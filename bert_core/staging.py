"""Node-local copies of gs:// files, for readers that need a local path.

tf.data's TFRecordDataset reads through TensorFlow's own filesystem layer, which does not know our
storage settings (the emulator in tests, our retries and credentials) and may lack GCS support
altogether on a ROCm image. So a stage stages the gs:// files it is about to read:

    local_files = staging.stage(files)        # gs:// files -> cache paths; local paths unchanged

Each file is downloaded atomically (one generation, whole or not at all) to

    <cache root>/<hash of its gs:// directory>/<its name>

where the cache root is $BERT_LOCAL_CACHE, else $TMPDIR/bert-cache (the system temp directory). A file
already there with the size and generation of the current object is not downloaded again, so a
rerun, a resumed job, or a second rank on the same host reuses it; ranks on one host take a lock per
file, so each file is downloaded once per host. `local_dir_for(prefix)` gives other node-local work
directories the same home (bert_core.run_dir works there for a gs:// --output_dir).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from typing import Callable, Iterable, Iterator

from bert_core import storage


def cache_root() -> str:
    """$BERT_LOCAL_CACHE, else <system temp dir>/bert-cache."""
    return os.environ.get("BERT_LOCAL_CACHE") or os.path.join(tempfile.gettempdir(), "bert-cache")


def local_dir_for(remote_dir: str, kind: str = "") -> str:
    """The node-local directory that stands for a gs:// directory: <cache root>/[<kind>-]<hash>."""
    digest = hashlib.sha256(str(remote_dir).rstrip("/").encode("utf-8")).hexdigest()[:16]
    return os.path.join(cache_root(), f"{kind}-{digest}" if kind else digest)


def local_path_for(path: str) -> str:
    """Where `stage` puts a gs:// file."""
    return os.path.join(local_dir_for(storage.dirname(path)), storage.basename(path))


def stage(paths: Iterable[str], log: Callable[[str], None] | None = None) -> list[str]:
    """The same files as local paths: gs:// ones downloaded into the cache (or found there), local
    ones as they are (no copy)."""
    out, fetched, nbytes = [], 0, 0
    for path in paths:
        path = str(path)
        if not storage.is_remote(path):
            out.append(path)
            continue
        local = local_path_for(path)
        size = _stage_file(path, local)
        if size is not None:
            fetched, nbytes = fetched + 1, nbytes + size
        out.append(local)
    if log is not None and fetched:
        log(f"staged {fetched} file(s), {nbytes / 1e6:.1f} MB, from object storage to {cache_root()}")
    return out


def _stage_file(src: str, dst: str) -> int | None:
    """Download src to dst unless dst already holds its current generation; the bytes fetched or None."""
    info = storage.stat(src)
    meta_path = os.path.join(os.path.dirname(dst), f".{os.path.basename(dst)}.source.json")
    want = {"source": src, "size": info.size, "generation": info.generation}
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with _locked(dst + ".lock"):
        if _cached(dst, meta_path, want):
            return None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(meta_path)  # from here until the new record is written, dst counts as stale
        got = storage.download(src, dst)
        record = {"source": src, "size": got.size, "generation": got.generation}
        with storage.atomic_open(meta_path, "w") as f:
            json.dump(record, f)
        return got.size


def _cached(dst: str, meta_path: str, want: dict) -> bool:
    try:
        with open(meta_path) as f:
            have = json.load(f)
        return have == want and os.path.getsize(dst) == want["size"]
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def _locked(lock_path: str) -> Iterator[None]:
    """An exclusive advisory lock between the processes of one host (released if the holder dies)."""
    with open(lock_path, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
