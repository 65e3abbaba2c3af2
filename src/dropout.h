/*
 * Dropout's loops: a value times its mask value, which is `scale` where
 * the uniform drawn for it is at least `rate` and 0 elsewhere. Written in
 * C (as elementwise.h's) so that the compiler vectorises the select; an
 * output may be its input, element for element.
 */
#ifndef FASTCNN_DROPOUT_H
#define FASTCNN_DROPOUT_H

#include "elementwise.h"

#define FCNN_DEFINE_DROPOUT(SUFFIX, T)                                         \
/* y = x * (u >= rate ? scale : 0), one uniform per value. A product, not a   \
 * select: a dropped NaN or infinity gives NaN, as x * mask does. */          \
FCNN_CLONES static void fcnn_dropout_##SUFFIX(const T *x, const T *u, T *y,    \
                                              ptrdiff_t n, T rate, T scale) {  \
    FCNN_SIMD                                                                  \
    for (ptrdiff_t i = 0; i < n; ++i) {                                        \
        T m = u[i] >= rate ? scale : (T)0;                                     \
        y[i] = x[i] * m;                                                       \
    }                                                                          \
}                                                                              \
/* y = x * m: the values of one channel, which share one mask value. */       \
FCNN_CLONES static void fcnn_times_##SUFFIX(const T *x, T *y, ptrdiff_t n, T m) { \
    FCNN_SIMD                                                                  \
    for (ptrdiff_t i = 0; i < n; ++i)                                          \
        y[i] = x[i] * m;                                                       \
}

FCNN_DEFINE_DROPOUT(f32, float)
FCNN_DEFINE_DROPOUT(f64, double)

#endif
