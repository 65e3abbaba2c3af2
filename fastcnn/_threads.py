"""How many threads a kernel call gets."""
import functools
import numbers
import os

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
