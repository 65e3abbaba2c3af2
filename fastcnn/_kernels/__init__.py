"""The compiled kernels.

This runs before the first of them loads GNU libgomp, to bound how long its
threads spin. Having finished a parallel region, a libgomp thread spins
300,000 times for the next before it sleeps: milliseconds. A training step runs dozens of regions with
Python between them, so the threads never sleep while training; on a busy
machine the scheduler then counts them as busy work and gives the CPU to
others first, and every region waits a time slice for its last thread.
10,000 spins (a fraction of a millisecond) still cover the gaps between the regions
of a step, where waking a sleeping thread would cost more than a small
region's work, and let the threads sleep between steps and give way.
A user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT is left to rule. The
variable is taken out of the environment again once libgomp has read it,
so that child processes do not inherit it.
"""
import os

_SPIN_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
_SPINS = "10000"

_set_spins = not any(name in os.environ for name in _SPIN_VARIABLES)
if _set_spins:
    os.environ["GOMP_SPINCOUNT"] = _SPINS
try:
    from . import openmp_helpers  # noqa: F401  (loads libgomp, which reads it)
finally:
    if _set_spins:
        os.environ.pop("GOMP_SPINCOUNT", None)
