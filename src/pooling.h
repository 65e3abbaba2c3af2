/*
 * The inner loop of max pooling, written in C so that it vectorises along an
 * output row: every window of the row compares its (a, b) element at once,
 * with selects instead of the data-dependent branches a scalar loop compiles
 * to (they mispredict about half the time on activations). Windows are
 * still visited in row-major order, so ties keep going to the first maximum.
 */
#ifndef FASTCNN_POOLING_H
#define FASTCNN_POOLING_H

#include <stddef.h>
#include <stdint.h>

#include "elementwise.h"

#define FCNN_DEFINE_MAX_POOL_ROW(SUFFIX, T)                                    \
/* Output row of Wo windows of (kh, kw) whose top-left corners are at       */ \
/* (r0, j*sw) of a plane of width W: y[j] = max, arg[j] = h*W + w of it.   */ \
/* A NaN is a window's maximum (the first NaN).                            */ \
FCNN_CLONES static void fcnn_max_pool_row_##SUFFIX(                                 \
        const T *x, ptrdiff_t W, ptrdiff_t r0, ptrdiff_t Wo, ptrdiff_t kh,     \
        ptrdiff_t kw, ptrdiff_t sw, T *y, int32_t *arg) {                      \
    FCNN_SIMD                                                                  \
    for (ptrdiff_t j = 0; j < Wo; ++j) {                                       \
        y[j] = x[r0 * W + j * sw];                                             \
        arg[j] = (int32_t)(r0 * W + j * sw);                                   \
    }                                                                          \
    for (ptrdiff_t a = 0; a < kh; ++a) {                                       \
        for (ptrdiff_t b = (a == 0); b < kw; ++b) {                            \
            const ptrdiff_t offset = (r0 + a) * W + b;                         \
            FCNN_SIMD                                                          \
            for (ptrdiff_t j = 0; j < Wo; ++j) {                               \
                const T v = x[offset + j * sw], best = y[j];                   \
                const int take = (v > best) | ((v != v) & (best == best));    \
                y[j] = take ? v : best;                                        \
                arg[j] = take ? (int32_t)(offset + j * sw) : arg[j];           \
            }                                                                  \
        }                                                                      \
    }                                                                          \
}

FCNN_DEFINE_MAX_POOL_ROW(f32, float)
FCNN_DEFINE_MAX_POOL_ROW(f64, double)

#endif
