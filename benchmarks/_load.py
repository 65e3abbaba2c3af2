"""Background load for measuring training on a busy machine.

    with BackgroundLoad("mixed"):
        ...  # time something

Kinds of load:

- ``busy``: one pure-Python busy loop at normal priority in this session:
  one core taken, as by another user's single-threaded job.
- ``mixed``: several processes, each started in a session of its own and at
  nice 19, each running more threads than there are cores, that stream
  through arrays larger than the caches (NumPy releases the GIL for those).
  With the kernel's autogroup scheduling (Linux's default on desktops and
  many servers, /proc/sys/kernel/sched_autogroup_enabled), a process in
  another session gets an equal share of the CPU whatever its nice value:
  nice only orders the processes of one session. This is the load of
  compiler jobs, test runs and local clusters started from other terminals
  or by daemons, which niced busy loops started from the same shell do not
  reproduce.
"""
import os
import signal
import subprocess
import sys
import time

_WORKER = r"""
import os, sys, threading
import numpy as np
threads = int(sys.argv[1])
mib = int(sys.argv[2])
def stream():
    a = np.ones(mib * 2**20 // 8)
    b = np.empty_like(a)
    while True:
        np.multiply(a, 1.0000001, out=b)
        np.add(b, 1.0, out=a)
for _ in range(threads - 1):
    threading.Thread(target=stream, daemon=True).start()
stream()
"""


class BackgroundLoad:
    """Start ``kind`` of load on entering, stop it on leaving ("none" does
    nothing). ``processes`` and ``threads`` size the mixed load."""

    def __init__(self, kind, processes=3, threads=None, mib=64):
        if kind not in ("none", "busy", "mixed"):
            raise ValueError(f"kind must be 'none', 'busy' or 'mixed', got {kind!r}")
        self.kind = kind
        self.processes = processes
        self.threads = threads or (os.cpu_count() or 2) + 1
        self.mib = mib
        self.children = []

    def __enter__(self):
        if self.kind == "busy":
            self.children.append(subprocess.Popen(
                [sys.executable, "-c", "while True: pass"]))
        elif self.kind == "mixed":
            for _ in range(self.processes):
                self.children.append(subprocess.Popen(
                    [sys.executable, "-c", _WORKER, str(self.threads), str(self.mib)],
                    start_new_session=True,
                    preexec_fn=lambda: os.nice(19)))
        time.sleep(0.5 if self.children else 0)   # let them reach their loops
        return self

    def __exit__(self, *exc_info):
        for child in self.children:
            child.send_signal(signal.SIGKILL)
        for child in self.children:
            child.wait()
        self.children = []

    def describe(self):
        if self.kind == "busy":
            return "one busy loop at normal priority"
        if self.kind == "mixed":
            return (f"{self.processes} processes x {self.threads} threads streaming "
                    f"{2 * self.mib} MiB each, nice 19, each in its own session")
        return "none"
