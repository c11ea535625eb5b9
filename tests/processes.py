"""A process's descendants, and whether they are gone (a zombie counts as gone)."""

from __future__ import annotations

import time

import psutil

from bert_core.children import alive


def descendants(pid: int) -> dict[int, str]:
    """{pid: command line} of every process below `pid` (children, their children, ...)."""
    out = {}
    for p in psutil.Process(pid).children(recursive=True):
        try:
            out[p.pid] = " ".join(p.cmdline())
        except psutil.Error:
            pass
    return out


def still_running(pids: dict[int, str], seconds: float) -> dict[int, str]:
    """Those of `pids` still running after up to `seconds` (empty: all gone)."""
    deadline = time.monotonic() + seconds
    while True:
        left = {pid: cmd for pid, cmd in pids.items() if alive(pid)}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)
