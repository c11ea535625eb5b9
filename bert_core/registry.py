"""A model registry in object storage (gs://, s3://, minio://) or a local directory.

    <registry>/<model>/versions/<N>/      one version, never overwritten:
        version.json                      the claim: written first, create-only (who, when)
        bert_config.json, vocab.txt,      a self-contained model directory (Google's layout), the
        ckpt-<step>/..., saved_model/...  newest checkpoint of the run (and its SavedModel, if any)
        metrics.json                      the numbers the gate saw and its decision (bert_core.gate)
        lineage.json                      every input of the run (bert_core.lineage)
        _COMPLETE                         written last (storage.COMPLETE_MARKER): a version without
                                          it is one whose writer was killed; it is never published
    <registry>/<model>/published.json     the pointer: which version is published, a serial number,
                                          the history of published versions, and its own checksum
    <registry>/<model>/heldout.json       the pinned held-out evaluation set (bert_core.heldout_eval)

Every change of the pointer is a compare-and-swap, so of two runs that publish at once exactly one
wins and the other is told it lost and to which version; the pointer is never torn:
- gs:// and s3://: one object written with the version it replaces as the precondition
  (storage.write_version: Cloud Storage `ifGenerationMatch`, S3 `If-Match: <ETag>`, `If-None-Match: *`
  to create); the store decides, in the request, which writer came first.
- local: compared and replaced (rename of a fsynced temporary) while an fcntl lock on
  `.published.lock` is held; the lock goes with its process, so a killed publisher holds nothing.
A version number is claimed by creating `versions/<N>/version.json` create-only (storage's
`exclusive=True`), so two runs never write the same version. A publisher killed at any point leaves
the previous pointer (written whole or not at all) and a registry that reads as before.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import re
import threading

from bert_core import storage
from bert_core.errors import UserError

POINTER = "published.json"
VERSIONS = "versions"
CLAIM = "version.json"
METRICS = "metrics.json"
LINEAGE = "lineage.json"
HELDOUT = "heldout.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_LOCAL_LOCK = threading.Lock()


class LostRace(UserError):
    """Another publisher changed the pointer between this one's read and its write."""


def check_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise UserError(f"model name {name!r}: expected letters, digits, '.', '_' or '-' (at most 128, "
                        f"starting with a letter or digit)")
    return name


def parse_ref(ref: str) -> tuple[str, int | None]:
    """`NAME` or `NAME:VERSION` -> (name, version or None); a bad one is one line."""
    name, sep, version = ref.partition(":")
    check_name(name)
    if not sep:
        return name, None
    if not version.isdigit() or int(version) < 1:
        raise UserError(f"{ref}: expected NAME:VERSION with VERSION a number from 1 (e.g. {name}:1)")
    return name, int(version)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _checksum(record: dict) -> str:
    body = {k: v for k, v in record.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class Registry:
    """One registry root: `Registry(uri).versions(name)`, `.publish(name, n, ...)`, ..."""

    def __init__(self, uri: str):
        self.uri = storage.check_scheme(str(uri).rstrip("/") or str(uri))

    # ---- paths ---------------------------------------------------------------------------------
    def model_dir(self, name: str) -> str:
        return storage.join(self.uri, check_name(name))

    def version_dir(self, name: str, version: int) -> str:
        return storage.join(self.model_dir(name), VERSIONS, str(int(version)))

    def pointer_path(self, name: str) -> str:
        return storage.join(self.model_dir(name), POINTER)

    # ---- reading -------------------------------------------------------------------------------
    def check(self) -> None:
        """One line if the registry root does not exist or holds no model."""
        if not storage.exists(self.uri):
            raise UserError(f"{self.uri}: no such registry (nothing there)")
        if not self.models():
            raise UserError(f"{self.uri}: not a model registry (no <model>/{VERSIONS}/<N>/ or <model>/{POINTER} "
                            f"under it)")

    def models(self) -> list[str]:
        found = set()
        for path in storage.glob(storage.join(self.uri, "*", VERSIONS)) + storage.glob(
                storage.join(self.uri, "*", POINTER)):
            name = storage.basename(storage.dirname(path))
            if _NAME.match(name):
                found.add(name)
        return sorted(found)

    def versions(self, name: str) -> list[int]:
        """Every claimed version number, ascending (complete or not)."""
        out = []
        for path in storage.glob(storage.join(self.model_dir(name), VERSIONS, "*")):
            base = storage.basename(path)
            if base.isdigit():
                out.append(int(base))
        return sorted(out)

    def require_model(self, name: str) -> None:
        if not self.versions(name) and not storage.exists(self.pointer_path(name)):
            have = self.models()
            raise UserError(f"{self.uri}: no model {name!r} (have: {', '.join(have) if have else 'none'})")

    def require_version(self, name: str, version: int) -> str:
        """The directory of a complete version; one line for an unknown or incomplete one."""
        self.require_model(name)
        path = self.version_dir(name, version)
        if version not in self.versions(name):
            have = ", ".join(map(str, self.versions(name))) or "none"
            raise UserError(f"{name}:{version}: no such version in {self.uri} (have: {have})")
        if not storage.is_complete(path):
            raise UserError(f"{name}:{version}: incomplete (its writer stopped before {storage.COMPLETE_MARKER}); "
                            f"it can not be published")
        return path

    def read_pointer(self, name: str, strict: bool = True) -> tuple[dict | None, object]:
        """(the pointer record or None, the version token to compare-and-swap with). `strict`: a torn or
        hand-edited pointer is one line; otherwise it reads as ({"corrupt": reason}, token)."""
        path = self.pointer_path(name)
        data, token = _read_version(path)
        if data is None:
            return None, None
        reason = None
        try:
            record = json.loads(data.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            reason, record = f"not valid JSON ({err})", None
        if reason is None and (not isinstance(record, dict) or not isinstance(record.get("version"), int)):
            reason = "no integer `version` in it"
        elif reason is None and record.get("checksum") != _checksum(record):
            reason = "its checksum does not match its contents (edited by hand?)"
        if reason is not None:
            if strict:
                raise UserError(f"{path}: torn or hand-edited pointer: {reason}; set it again with "
                                f"`bert-pipeline models publish {name}:VERSION --registry {self.uri}`")
            return {"corrupt": reason}, token
        return record, token

    def published(self, name: str) -> int | None:
        record, _ = self.read_pointer(name)
        return None if record is None else record["version"]

    def read_version_json(self, name: str, version: int, what: str) -> dict:
        path = storage.join(self.version_dir(name, version), what)
        return storage.read_json(path) if storage.exists(path) else {}

    # ---- writing -------------------------------------------------------------------------------
    def add_version(self, name: str, files: dict[str, str], metrics: dict, lineage: dict, claim: dict) -> int:
        """A new version from `files` {relative name: source path}, `metrics.json` and `lineage.json`;
        returns its number. The number is claimed create-only first; the marker goes last."""
        version = max(self.versions(name), default=0) + 1
        while True:
            try:
                storage.write_json(storage.join(self.version_dir(name, version), CLAIM),
                                   {**claim, "model": name, "version": version, "created": _now()}, exclusive=True)
                break
            except storage.AlreadyExists:
                version += 1  # another run claimed it first
        vdir = self.version_dir(name, version)
        listed = [{"path": CLAIM, "size": storage.size(storage.join(vdir, CLAIM))}]
        for rel, src in sorted(files.items()):
            storage.copy(src, storage.join(vdir, rel))
            listed.append({"path": rel, "size": storage.size(src)})
        for rel, doc in ((LINEAGE, lineage), (METRICS, {**metrics, "model": name, "version": version})):
            storage.write_json(storage.join(vdir, rel), doc)
            listed.append({"path": rel, "size": storage.size(storage.join(vdir, rel))})
        storage.write_json(storage.join(vdir, storage.COMPLETE_MARKER),
                           {"files": sorted(listed, key=lambda f: f["path"])})
        return version

    def set_pointer(self, name: str, version: int, action: str, expect: object = "read", by: str = "",
                    repair: bool = False) -> dict:
        """Point `published.json` at `version` by compare-and-swap. `expect`: the token the caller
        read (its decision was made against that pointer), or "read" to read it here. Raises LostRace
        naming the version another publisher put there meanwhile."""
        self.require_version(name, version)
        if expect == "read":
            current, expect = self.read_pointer(name, strict=not repair)
        else:
            current, _ = self.read_pointer(name, strict=False)
        current = current if current and "corrupt" not in current else None
        history = list(current.get("history", [])) if current else []
        if action == "rollback":
            history = history[:-1]
        else:
            history.append(version)
        record = {"model": name, "version": version, "serial": (current or {}).get("serial", 0) + 1,
                  "action": action, "at": _now(), "by": by, "history": history[-100:]}
        record["checksum"] = _checksum(record)
        data = (json.dumps(record, indent=2) + "\n").encode("utf-8")
        try:
            _write_version(self.pointer_path(name), data, expect)
        except storage.VersionChanged:
            now, _ = self.read_pointer(name, strict=False)
            where_now = "corrupt" if now and "corrupt" in now else (f"version {now['version']}" if now else "nothing")
            raise LostRace(f"{name}: lost the race to publish version {version}: another publisher changed "
                           f"{POINTER} after this run read it (it now names {where_now}); version {version} "
                           f"stays unpublished") from None
        return record

    def rollback(self, name: str, by: str = "") -> dict:
        """Publish the version published before the current one (the pointer's history)."""
        current, token = self.read_pointer(name)
        if current is None:
            raise UserError(f"{name}: nothing is published in {self.uri}; nothing to roll back")
        history = current.get("history", [])
        if len(history) < 2:
            raise UserError(f"{name}: version {current['version']} is the first published version; "
                            f"nothing to roll back to (publish one with `models publish {name}:VERSION`)")
        return self.set_pointer(name, history[-2], "rollback", expect=token, by=by)


# --------------------------------------------------------------------------------------------------
# Compare-and-swap of one small file: object versions remotely, an fcntl lock + rename locally.


def _read_version(path: str) -> tuple[bytes | None, object]:
    if storage.is_remote(path):
        return storage.read_version(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None, None
    return data, hashlib.sha256(data).hexdigest()


def _write_version(path: str, data: bytes, expect: object) -> None:
    if storage.is_remote(path):
        storage.write_version(path, data, expect)
        return
    with _local_lock(path):
        current, token = _read_version(path)
        if token != expect:
            raise storage.VersionChanged(f"{path}: changed")
        storage.write_bytes(path, data)  # fsynced temporary, renamed into place


@contextlib.contextmanager
def _local_lock(path: str):
    lock = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".lock")
    os.makedirs(os.path.dirname(lock), exist_ok=True)
    with _LOCAL_LOCK:  # POSIX locks do not exclude the threads of one process
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
