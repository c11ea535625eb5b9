"""A run's exclusive lease on its output: two runs never write one output directory at once.

    with lease.hold(cfg.output_dir, "pretrain", ranks="horovod"):   # rank 0 holds it for every rank
        ...

The lease is a small JSON record, `<output>/.bert-lease`: who holds it (host, pid, start time,
command), a random token, and a heartbeat time that a thread renews every timeout / 10. A second run
on the same output gets one line naming the holder (`LeaseHeld`, exit 2). A lease is stale, and the
next run takes it over, when its heartbeat is older than its holder's timeout (BERT_LEASE_TIMEOUT
seconds, default 300), or at once when its holder ran on this host (same hostname and pid namespace)
and that process is gone. Leaving the block, by a clean exit or an exception, deletes the lease.

Every change is a compare-and-swap, so of two runs racing for a free or stale lease exactly one wins:
- local: the record is rewritten in place while the file is locked (`fcntl.lockf`, which also
  works over NFS, plus a lock within the process, since POSIX locks do not exclude threads);
- gs:// and s3://: the record is one object written with the version it replaces as a precondition
  (`storage.write_version`: Cloud Storage `ifGenerationMatch`, S3 `If-Match: <ETag>`, `If-None-Match: *`
  to create) and deleted with it (`storage.remove_version`).

The heartbeat thread that finds its lease taken over (its run was stale, e.g. stopped for longer than
the timeout) interrupts the run's main thread, which ends with `LeaseLost` (one line, exit 2).
See docs/training.md, "What a run owns".
"""

from __future__ import annotations

import _thread
import contextlib
import datetime
import fcntl
import json
import os
import socket
import sys
import threading
import time
import uuid

from bert_core import storage
from bert_core.errors import UserError

#: The lease record's name inside the output it guards (a dot name: globs of the output skip it).
LEASE_NAME = ".bert-lease"
#: Seconds without a heartbeat after which a lease is stale (env BERT_LEASE_TIMEOUT).
DEFAULT_TIMEOUT_S = 300.0

_PROCESS_LOCK = threading.Lock()  # POSIX locks belong to the process: this excludes its threads
_HELD: set[str] = set()  # tokens of the leases this process holds (its pid may be a dead run's too)


class LeaseHeld(UserError):
    """Another run holds the output's lease."""


class LeaseLost(UserError):
    """This run's lease was taken over while it ran."""


def timeout() -> float:
    """Seconds a lease lives without a heartbeat (env BERT_LEASE_TIMEOUT, default 300)."""
    text = os.environ.get("BERT_LEASE_TIMEOUT", "")
    try:
        value = float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        value = -1.0
    if not value > 0:
        raise UserError(f"BERT_LEASE_TIMEOUT={text}: expected a number of seconds above 0")
    return value


def lease_path(output: str) -> str:
    return storage.join(output, LEASE_NAME)


@contextlib.contextmanager
def hold(output: str, command: str, ranks=None):
    """Hold the lease on `output` (a directory or object prefix) for the block.

    `command`: the stage ("pretrain"), named to a run that is refused. `ranks`: None (one process),
    "horovod" (bert_core.distributed's ranks) or an mpi4py communicator. Only rank 0 takes the lease;
    its refusal reaches every rank (a broadcast), so all of them stop with the same line."""
    rank, share = _ranks(ranks)
    lease, problem, error = None, None, None
    if rank == 0:
        try:
            lease = _Lease(output, command)
            lease.acquire()
        except Exception as err:  # noqa: BLE001  (shared with the other ranks, then raised here)
            lease, problem, error = None, f"{err}", err
    if share is not None:
        problem = share(problem)
    if error is not None:
        raise error
    if problem is not None:
        raise LeaseHeld(problem)
    try:
        yield
    except KeyboardInterrupt:
        if lease is not None and lease.lost:
            raise LeaseLost(lease.lost) from None
        raise
    finally:
        if lease is not None:
            lease.release()
    if lease is not None and lease.lost:  # found by the heartbeat with no main thread to interrupt
        raise LeaseLost(lease.lost)


def _ranks(ranks):
    """(this process's rank, a function giving every rank rank 0's value, or None for one process)."""
    if ranks is None:
        return 0, None
    if ranks == "horovod":
        from bert_core import distributed

        if distributed.launcher_world_size() <= 1:
            return 0, None
        dist = distributed.initialize()
        return dist.rank, lambda value: dist.hvd.broadcast_object(value, root_rank=0)
    if ranks.Get_size() <= 1:  # mpi4py
        return 0, None
    return ranks.Get_rank(), lambda value: ranks.bcast(value, root=0)


def _machine() -> tuple[str, str | None]:
    """(hostname, pid namespace): pids are comparable only between processes that share both."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = None
    return socket.gethostname(), namespace


def _gone(record: dict) -> bool:
    """True if the record's holder ran on this machine and its process no longer exists."""
    if (record.get("host"), record.get("pid_namespace")) != _machine():
        return False
    pid = record.get("pid")
    if pid == os.getpid():
        return record.get("token") not in _HELD
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (OSError, TypeError, ValueError):
        return False
    return False


def _age(record: dict) -> float:
    return time.time() - float(record.get("heartbeat", 0))


def describe(record: dict) -> str:
    """The holder, as a refused run is told it."""
    return (f"{record.get('command', '?')} (pid {record.get('pid', '?')} on {record.get('host', '?')}, started "
            f"{record.get('started', '?')}, last heartbeat {max(_age(record), 0):.0f} s ago)")


_KEEP, _DELETE = object(), object()  # what a decision may return instead of a record to write


class _Lease:
    def __init__(self, output: str, command: str):
        self.output = output.rstrip("/") if storage.is_remote(output) else output
        self.path = lease_path(self.output)
        self.timeout = timeout()
        self.version = None  # object storage: the version of our record
        self.lost: str | None = None
        self.created_dir = False
        host, namespace = _machine()
        self.record = {"command": f"bert {command}", "argv": sys.argv, "host": host, "pid_namespace": namespace,
                       "pid": os.getpid(), "started": datetime.datetime.now(datetime.timezone.utc).strftime(
                           "%Y-%m-%d %H:%M:%S UTC"), "timeout": self.timeout, "token": uuid.uuid4().hex, "beat": 0,
                       "heartbeat": time.time()}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._interrupt = threading.current_thread() is threading.main_thread()

    # The three changes, each decided on the record found and applied as one compare-and-swap.

    def acquire(self) -> None:
        if not storage.is_remote(self.output) and os.path.exists(self.output) and not os.path.isdir(self.output):
            return  # not a directory: nothing can be written there, and the stage says so in its own words

        def decide(found):
            if found is not None and found.get("token") == self.record["token"]:
                return _KEEP  # our own write, whose answer was lost and retried
            if found is None:
                return self._beat()
            limit = float(found.get("timeout", self.timeout))
            if _gone(found):
                why = "its process is gone"
            elif _age(found) > limit:
                why = f"no heartbeat for over {limit:g} s"
            else:
                raise LeaseHeld(f"{self.output}: in use by {describe(found)}; wait for it to end or stop it (a "
                                f"killed run's lease expires {limit:g} s after its last heartbeat, BERT_LEASE_TIMEOUT, "
                                f"or at once on its own host)")
            print(f"{self.output}: taking over the lease of {describe(found)}: {why}", file=sys.stderr, flush=True)
            return self._beat()

        _HELD.add(self.record["token"])
        try:
            self._update(decide, create=True)
        except BaseException:
            _HELD.discard(self.record["token"])
            raise
        self._thread = threading.Thread(target=self._heartbeats, name=f"lease {self.path}", daemon=True)
        self._thread.start()

    def renew(self) -> None:
        def decide(found):
            if found is None or found.get("token") != self.record["token"]:
                raise LeaseLost(f"{self.output}: this run's lease was taken over by "
                                f"{describe(found) if found else 'another run, which has ended'}; stopping")
            return self._beat()

        self._update(decide)

    def release(self) -> None:
        if self._thread is None:
            return  # not held
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        try:
            if not self.lost:
                self._update(lambda found: _DELETE if found and found.get("token") == self.record["token"] else _KEEP)
        finally:
            _HELD.discard(self.record["token"])
        if self.created_dir:
            with contextlib.suppress(OSError):
                os.rmdir(self.output)  # only if the run wrote nothing there

    def _beat(self) -> dict:
        self.record = {**self.record, "beat": self.record["beat"] + 1, "heartbeat": time.time()}
        return self.record

    def _heartbeats(self) -> None:
        while not self._stop.wait(self.timeout / 10):
            try:
                self.renew()
            except LeaseLost as err:
                self.lost = str(err)  # raised as LeaseLost where the run leaves the block
                if self._interrupt:
                    _thread.interrupt_main()
                return
            except Exception as err:  # noqa: BLE001  (a storage hiccup: the next beat tries again)
                print(f"{self.output}: lease heartbeat failed, retrying ({err})", file=sys.stderr, flush=True)

    # One compare-and-swap of the record: `decide(found record or None)` returns the record to write,
    # _KEEP or _DELETE, or raises.

    def _update(self, decide, create: bool = False) -> None:
        if storage.is_remote(self.path):
            self._update_object(decide)
        elif create or os.path.exists(self.path):
            self._update_file(decide)
        else:
            decide(None)  # the file is gone (removed by hand): decided on as found, never recreated

    def _update_object(self, decide) -> None:
        while True:
            data, version = storage.read_version(self.path)
            result = decide(_parse(data))
            try:
                if result is _KEEP:
                    self.version = version
                elif result is _DELETE:
                    if not storage.remove_version(self.path, version):
                        continue  # changed since we read it: decide again
                else:
                    self.version = storage.write_version(self.path, _encode(result), version)
                return
            except storage.VersionChanged:
                continue  # another writer came first: decide again on what it wrote

    def _update_file(self, decide) -> None:
        if not os.path.isdir(self.output):
            try:
                os.makedirs(self.output)
                self.created_dir = True
            except FileExistsError:
                pass
            except OSError as err:
                raise UserError(f"{self.output}: cannot create the output directory ({err.strerror})") from None
        with _PROCESS_LOCK:
            while True:
                try:
                    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                except OSError as err:
                    raise UserError(f"{self.path}: cannot write the run's lease ({err.strerror})") from None
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX)
                    try:
                        current = os.fstat(fd).st_ino == os.stat(self.path).st_ino
                    except FileNotFoundError:
                        current = False
                    if not current:
                        continue  # released (deleted) while we waited for the lock: open the new one
                    size = os.fstat(fd).st_size
                    result = decide(_parse(os.pread(fd, size, 0)) if size else None)
                    if result is _DELETE or (result is _KEEP and not size):
                        os.unlink(self.path)  # an empty file is one we created only to lock it
                    elif result is not _KEEP:
                        data = _encode(result)
                        os.ftruncate(fd, 0)
                        os.pwrite(fd, data, 0)
                        os.fsync(fd)
                    return
                finally:
                    os.close(fd)  # also releases the lock


def _encode(record: dict) -> bytes:
    return (json.dumps(record, indent=1) + "\n").encode("utf-8")


def _parse(data: bytes | None) -> dict | None:
    """The record, or None for none; an unreadable one (a writer killed mid-write) counts as none."""
    if not data:
        return None
    try:
        record = json.loads(data)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
