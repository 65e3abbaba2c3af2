/* OpenMP queries that also compile, and answer "1 thread", without OpenMP. */
#ifndef FASTCNN_OMP_SHIM_H
#define FASTCNN_OMP_SHIM_H

#ifdef _OPENMP
#include <omp.h>
static int fcnn_omp_max_threads(void) { return omp_get_max_threads(); }
static int fcnn_openmp_enabled(void) { return 1; }
#else
static int fcnn_omp_max_threads(void) { return 1; }
static int fcnn_openmp_enabled(void) { return 0; }
#endif

#endif
