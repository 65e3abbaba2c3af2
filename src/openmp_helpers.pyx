"""What the OpenMP runtime this package was built with allows."""

cdef extern from "omp_shim.h":
    int fcnn_omp_max_threads() nogil
    int fcnn_openmp_enabled() nogil


def omp_max_threads():
    """Threads an OpenMP region would get now.

    Follows ``OMP_NUM_THREADS`` and limits set through threadpoolctl; 1 when
    the package was built without OpenMP.
    """
    return fcnn_omp_max_threads()


def openmp_enabled():
    """True when the kernels were compiled with OpenMP."""
    return bool(fcnn_openmp_enabled())
