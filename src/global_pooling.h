/*
 * The search for a plane's maximum, in C so that it vectorises: the value by
 * an `omp simd` max reduction (maxima are exact, so the lanes' order cannot
 * change it), then the first element equal to it by a scalar scan that stops
 * there. A branch per element on "greater than the best so far", as a
 * scalar search takes, mispredicts often on activations.
 */
#ifndef FASTCNN_GLOBAL_POOLING_H
#define FASTCNN_GLOBAL_POOLING_H

#include <stddef.h>

#include "elementwise.h"

#if defined(_OPENMP)
#define FCNN_SIMD_MAX(best, seen_nan) \
    _Pragma("omp simd reduction(max:best) reduction(|:seen_nan)")
#else
#define FCNN_SIMD_MAX(best, seen_nan)
#endif

#define FCNN_DEFINE_FIRST_MAX(SUFFIX, T)                                       \
/* Index of the first maximum of x[0:n], n >= 1, or of the first NaN when  */ \
/* there is one (NaN is the maximum, as in max pooling). Equal values of   */ \
/* either sign of zero tie: the first is taken, and the caller reads the   */ \
/* value there, so its sign is the first one's.                            */ \
FCNN_CLONES static ptrdiff_t fcnn_first_max_##SUFFIX(const T *x, ptrdiff_t n) { \
    T best = x[0];                                                             \
    int seen_nan = 0;                                                          \
    FCNN_SIMD_MAX(best, seen_nan)                                              \
    for (ptrdiff_t i = 0; i < n; ++i) {                                        \
        const T v = x[i];                                                      \
        best = v > best ? v : best;                                            \
        seen_nan |= v != v;                                                    \
    }                                                                          \
    /* bounded although one is always found: a scan past x's end is worse  */ \
    /* than any wrong answer                                                */ \
    ptrdiff_t i = 0;                                                           \
    if (seen_nan) {                                                            \
        while (i < n - 1 && x[i] == x[i])                                      \
            ++i;                                                               \
    } else {                                                                   \
        while (i < n - 1 && x[i] != best)                                      \
            ++i;                                                               \
    }                                                                          \
    return i;                                                                  \
}

FCNN_DEFINE_FIRST_MAX(f32, float)
FCNN_DEFINE_FIRST_MAX(f64, double)

#endif
