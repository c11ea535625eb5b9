"""Child processes end with the process that owns them: a SIGKILLed `bert create-data` leaves no worker
writing, a SIGKILLed `bert-pipeline run` no step, horovodrun or rank running.

Two ways, for two kinds of child:

* `die_with_parent(owner)`, called in the child: Linux's PR_SET_PDEATHSIG has the kernel SIGKILL the
  child when the *thread* that created it exits (prctl(2)); it holds across exec. So it suits a child
  whose creating thread lives as long as the child's work: horovodrun, started by a step's main
  thread blocked in subprocess.run, through `dying_with_this_process(argv)` (`python -m
  bert_core.children OWNER ARGV...` asks, then execs ARGV; a preexec_fn is not safe beside threads).
* `exit_with(owner)`: a thread that ends this process when `owner` is gone, for a process whose parent
  is not its owner: create-data's workers (their parent is multiprocessing's forkserver, which lives
  on while any worker does), and a `bert-pipeline run` step (kfp.local's `sh -c ... python3`, whose
  `sh` outlives a SIGKILLed `bert-pipeline run`; the owner's pid comes in $BERT_OWNER_PID).

Outside Linux both do nothing.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

OWNER_ENV = "BERT_OWNER_PID"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_LINUX = sys.platform.startswith("linux")
_libc = ctypes.CDLL(None, use_errno=True) if _LINUX else None  # loaded here: not in a forked child


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, killed but not yet reaped by its parent, does not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in (b"Z", b"X")


def die_with_parent(owner: int) -> None:
    """In a child: be SIGKILLed when the thread that created us exits. `owner` is the process whose end
    must end us (our parent, or the one whose end ends our parent); if it has already ended, before
    the request took effect, end now."""
    if not _LINUX:
        return
    if _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if not alive(owner):
        os.kill(os.getpid(), signal.SIGKILL)


def exit_with(owner: int, every_seconds: float = 0.2) -> None:
    """End this process (SIGKILL, so that its own children's PR_SET_PDEATHSIG fires) once `owner` has
    ended; checked every `every_seconds` by a daemon thread."""
    if not _LINUX:
        return

    def watch() -> None:
        while alive(owner):
            time.sleep(every_seconds)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name=f"exit-with-{owner}", daemon=True).start()


def exit_with_owner_from_env() -> None:
    """`exit_with` the process named by $BERT_OWNER_PID, when it is set (by `bert-pipeline run`)."""
    owner = os.environ.get(OWNER_ENV)
    if owner:
        exit_with(int(owner))


def dying_with_this_process(argv: list[str]) -> list[str]:
    """`argv` run so that it is SIGKILLed when the thread that starts it exits (see the module)."""
    return [sys.executable, "-m", "bert_core.children", str(os.getpid()), *argv]


if __name__ == "__main__":  # python -m bert_core.children OWNER ARGV...
    die_with_parent(int(sys.argv[1]))
    os.execvp(sys.argv[2], sys.argv[2:])
