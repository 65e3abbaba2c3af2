"""How many threads a kernel call gets."""
import functools
import math
import numbers
import os
import statistics

from ._kernels.openmp_helpers import omp_max_threads, openmp_enabled

_OPENMP = openmp_enabled()


@functools.lru_cache(maxsize=1)
def _physical_cores():
    # joblib is installed with scikit-learn; it knows cgroup quotas and SMT.
    try:
        from joblib import cpu_count
        return max(1, cpu_count(only_physical_cores=True))
    except Exception:  # pragma: no cover - joblib missing or confused
        return max(1, os.cpu_count() or 1)


# More threads than any machine has cores: each would get its own scratch,
# and OpenMP would start them all.
MAX_THREADS = 1024


def effective_n_threads(n_threads=None):
    """Resolve the ``n_threads`` parameter as scikit-learn does.

    Parameters
    ----------
    n_threads : int or None
        None: what OpenMP allows now (threadpoolctl limits, and
        ``OMP_NUM_THREADS`` as it was when the process started), capped at
        the physical cores unless ``OMP_NUM_THREADS`` is set, as in
        scikit-learn. A positive int: that many. A negative int counts back
        from all cores: -1 is all, -2 all but one. At most MAX_THREADS
        either way.

    Returns
    -------
    int
        At least 1; always 1 when the kernels were built without OpenMP.
    """
    if type(n_threads) is int and 0 < n_threads <= MAX_THREADS:
        # the common case, an already resolved count: no further checks
        return n_threads if _OPENMP else 1
    if n_threads is not None and (
        isinstance(n_threads, bool)
        or not isinstance(n_threads, numbers.Integral)
        or n_threads == 0
        or abs(n_threads) > MAX_THREADS
    ):
        raise ValueError(
            f"n_threads must be None or a non-zero integer between "
            f"-{MAX_THREADS} and {MAX_THREADS}, got {n_threads!r}")
    if not openmp_enabled():
        return 1
    if n_threads is None:
        limit = omp_max_threads()
        if "OMP_NUM_THREADS" not in os.environ:
            limit = min(limit, _physical_cores())
        return max(1, limit)
    if n_threads < 0:
        return max(1, (os.cpu_count() or 1) + 1 + int(n_threads))
    return int(n_threads)



def scheduler_times():
    """(seconds run, seconds waited runnable for a CPU) of the calling
    thread, from Linux's /proc/thread-self/schedstat; None elsewhere."""
    try:
        with open("/proc/thread-self/schedstat", "rb") as stat:
            ran, waited = stat.read().split()[:2]
        return int(ran) * 1e-9, int(waited) * 1e-9
    except (OSError, ValueError):
        return None


def process_waits():
    """Seconds that the calling process's threads, all of them, have waited
    runnable for a CPU, from Linux's /proc/self/task/*/schedstat; None
    elsewhere. (A thread that has ended takes its share with it.)"""
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    total = 0
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/schedstat", "rb") as stat:
                total += int(stat.read().split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return total * 1e-9


class ThreadGovernor:
    """Chooses, step by step, how many threads a training step gets, within
    [least, most]: the count whose recent steps were fastest.

    On a busy machine a parallel region lasts as long as its slowest
    thread, and a thread the scheduler has set aside for its time slice
    stalls every region of the step: a small network's step can take a
    thousand times longer at two threads than at one. Since results
    do not depend on the thread count, the count can follow the machine.

    It starts at ``least`` and, after one step there and now and then
    afterwards, runs a step at a neighbouring count (half or double), a
    probe; a probe faster than the current
    count's recent steps makes its count the current one. A probe costs
    what it is slower than the current count, and the next probe waits
    until the steps since have taken ``1 / overhead`` times that: probing
    costs about ``overhead`` of the time on any machine. A probe upwards
    waits, besides, while the calling thread itself has spent more than
    CONTENDED of its time since the last look waiting for a CPU
    (``scheduler_times``): a probe up on a machine that is short of CPUs
    for even one thread is the costly kind, and never wins. A probe
    downwards waits while none of the process's threads waited for a CPU
    more than UNCONTENDED of the steps' time (``process_waits``): fewer
    threads only help where others compete for the cores, and probing a
    quiet machine costs what the probes are slower. Each looks again
    every RETRY_SECONDS of steps. When the median of the current count's
    last WINDOW steps is ``SLOWDOWN`` times its best, the next step is a
    probe downwards: load that arrives is seen within two steps, while
    one slow step among fast ones (an interruption that has passed) moves
    nothing. A probe is measured against that median. When such a probe
    loses, the slower pace is the count's new normal (its best), so that a
    machine slower at every count is not probed every other step.

    Parameters
    ----------
    most : int
        The thread count resolved from ``n_threads``.
    least : int
        ``least = most`` fixes the count.
    overhead : float
        The share of time probing may cost.
    scheduler_times : callable
        Returns (seconds run, seconds waited for a CPU) of the calling
        thread so far, or None if unknown.
    process_waits : callable
        Returns the seconds all the process's threads have waited for a
        CPU so far, or None if unknown (then probes go down as up).
    """

    WINDOW = 3          # recent steps kept of the current count
    SLOWDOWN = 3.0      # their median this much past the count's best: probe down
    MARGIN = 1.05       # a probe must be this much faster to win
    MIN_GAP_STEPS = 4   # steps between probes at least
    RETRY_SECONDS = 0.05  # of steps, before looking at the waits again
    CONTENDED = 0.1     # share of time waiting for a CPU that forbids probing up
    UNCONTENDED = 0.01  # share of step time the threads waited, below which no probe down

    def __init__(self, most, least=1, overhead=0.02,
                 scheduler_times=scheduler_times, process_waits=process_waits):
        self.most, self.least = most, min(least, most)
        self.overhead = overhead
        self.scheduler_times = scheduler_times
        self.last_times = scheduler_times()
        self.process_waits = process_waits
        self.last_waits = None      # process_waits() at the last look
        self.waits_seconds = 0.0    # seconds of steps since then
        self.current = self.least
        self.recent = []        # seconds per sample of the current count's steps
        self.best = None        # the current count's best pace
        self.probe = None       # the count on trial this step, if any
        self.probe_steps = 0    # steps run as probes (for the tests)
        self.urgent = False     # probe down next step
        self.urgent_probe = False  # the probe on trial is such a one
        self.direction = 1      # of the next probe, where both ways are open
        self.credit = 0.0       # seconds of steps since the last probe
        self.debt = 0.0         # seconds those must reach before the next
        # steps since the last probe; the first probe comes after one step,
        # so that a quiet machine runs few steps at ``least``
        self.steps = self.MIN_GAP_STEPS - 1

    def threads(self):
        """The thread count for the next step."""
        if self.probe is None and self.least < self.most:
            self.probe = self._next_probe()
        return self.current if self.probe is None else self.probe

    def record(self, seconds, n_samples):
        """What the step run at ``threads()`` took, for n_samples."""
        if self.least == self.most:
            return
        pace = seconds / max(1, n_samples)
        if self.probe is None:
            self.recent = self.recent[1 - self.WINDOW:] + [pace]
            self.credit += seconds
            self.waits_seconds += seconds
            self.steps += 1
            self.best = pace if self.best is None else min(self.best, pace)
            if self._typical() > self.SLOWDOWN * self.best:
                self.urgent = self.current > self.least
            return
        probe, self.probe = self.probe, None
        urgent, self.urgent_probe = self.urgent_probe, False
        self.probe_steps += 1
        now = self._typical()
        self.credit = 0.0
        self.steps = 0
        if pace * self.MARGIN < now:
            self.direction = 1 if probe > self.current else -1
            self.current, self.recent, self.best = probe, [pace], pace
            self.debt = 0.0
            return
        if urgent:
            self.best = now
        self.direction = -self.direction
        self.debt = max(0.0, pace - now) * n_samples / self.overhead

    def _typical(self):
        """The median pace of the current count's recent steps."""
        return statistics.median(self.recent) if self.recent else math.inf

    def _next_probe(self):
        down = max(self.least, self.current // 2)
        up = min(self.most, self.current * 2)
        if self.urgent:
            self.urgent, self.urgent_probe = False, True
            return down
        if self.steps < self.MIN_GAP_STEPS or self.credit < self.debt:
            return None
        if down == self.current or (self.direction > 0 and up != self.current):
            if not self._contended():
                return up
            self.debt = self.credit + self.RETRY_SECONDS
            return None if down == self.current or not self._others_compete() else down
        if not self._others_compete():
            self.debt = self.credit + self.RETRY_SECONDS
            return None
        return down

    def _others_compete(self):
        """Whether the process's threads waited for a CPU more than
        UNCONTENDED of the steps' time since the last look (True when
        unknown, or at the first look)."""
        waits, last = self.process_waits(), self.last_waits
        seconds, self.waits_seconds = self.waits_seconds, 0.0
        self.last_waits = waits
        if waits is None or last is None or seconds <= 0:
            return True
        return waits - last > self.UNCONTENDED * seconds

    def _contended(self):
        """Whether the calling thread waited for a CPU more than CONTENDED
        of the time since the last look."""
        times, last = self.scheduler_times(), self.last_times
        self.last_times = times
        if times is None or last is None:
            return False
        ran, waited = times[0] - last[0], times[1] - last[1]
        return waited > self.CONTENDED * (ran + waited)
