"""Measuring a benchmark's command: wall and CPU seconds and peak memory of its whole process tree."""

from __future__ import annotations

import subprocess
import threading
import time

import psutil


def measure(cmd: list[str], cwd: str | None = None) -> dict:
    """Run cmd to the end, sampling its process tree every 20 ms: {"wall", "cpu" (seconds, the tree's
    user+system), "rss_mb", "pss_mb" (peaks), "log" (stdout and stderr)}; a failure ends the benchmark.

    RSS sums every process's resident pages, so pages that worker processes share (the interpreter,
    numpy, the tokenizer library) count once per process; PSS divides shared pages among the processes
    that map them, which is the fair sum for several workers."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    root = psutil.Process(proc.pid)
    cpu: dict[int, float] = {}
    peak_rss = peak_pss = 0
    chunks: list[str] = []
    reader = threading.Thread(target=lambda: chunks.append(proc.stdout.read()), daemon=True)
    reader.start()
    while proc.poll() is None:
        rss = pss = 0
        try:
            procs = [root] + root.children(recursive=True)
        except psutil.Error:
            procs = []
        for p in procs:
            try:
                with p.oneshot():
                    t = p.cpu_times()
                    cpu[p.pid] = t.user + t.system
                    info = p.memory_full_info()
                    rss += info.rss
                    pss += info.pss
            except psutil.Error:
                pass
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        time.sleep(0.02)
    wall = time.perf_counter() - t0
    reader.join()
    out = "".join(chunks)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{out[-3000:]}")
    return {"wall": wall, "cpu": sum(cpu.values()), "rss_mb": peak_rss / 2**20, "pss_mb": peak_pss / 2**20,
            "log": out}
