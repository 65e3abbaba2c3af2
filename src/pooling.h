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
#include <string.h>

#include "elementwise.h"

#define FCNN_DEFINE_MAX_POOL_ROW(SUFFIX, T)                                    \
/* Output row of Wo windows of (kh, kw) whose top-left corners are at       */ \
/* (r0, j*sw) of a plane of width W: y[j] = max, arg[j] = h*W + w of it.   */ \
/* A NaN is a window's maximum (the first NaN).                            */ \
static inline void fcnn_max_pool_row_##SUFFIX(                                 \
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

/* Selects through bit masks: compilers turn `take ? v : best` on floats
 * into a branch, which mispredicts about half the time on activations. */
static inline float fcnn_select_f32(int take, float a, float b) {
    uint32_t ia, ib, mask = (uint32_t)0 - (uint32_t)take;
    memcpy(&ia, &a, sizeof ia);
    memcpy(&ib, &b, sizeof ib);
    ia = (ia & mask) | (ib & ~mask);
    memcpy(&a, &ia, sizeof a);
    return a;
}
static inline double fcnn_select_f64(int take, double a, double b) {
    uint64_t ia, ib, mask = (uint64_t)0 - (uint64_t)take;
    memcpy(&ia, &a, sizeof ia);
    memcpy(&ib, &b, sizeof ib);
    ia = (ia & mask) | (ib & ~mask);
    memcpy(&a, &ia, sizeof a);
    return a;
}

/* The common 2x2 window at stride 2, a whole (H, W) plane at a time: the
 * four values of each window are compared in row-major order, without
 * branches. Same results as the generic row above. */
#define FCNN_DEFINE_MAX_POOL_2X2_PLANE(SUFFIX, T)                              \
static inline void fcnn_max_pool_2x2_plane_##SUFFIX(                           \
        const T *x, ptrdiff_t W, ptrdiff_t Ho, ptrdiff_t Wo, T *y,             \
        int32_t *arg) {                                                        \
    const int32_t w = (int32_t)W;                                              \
    for (ptrdiff_t i = 0; i < Ho; ++i) {                                       \
        const T *top = x + 2 * i * W, *bottom = top + W;                       \
        for (ptrdiff_t j = 0; j < Wo; ++j) {                                   \
            const T v1 = top[2 * j + 1], v2 = bottom[2 * j];                   \
            const T v3 = bottom[2 * j + 1];                                    \
            T best = top[2 * j];                                               \
            int32_t where = 0, take;                                           \
            take = (v1 > best) | ((v1 != v1) & (best == best));                \
            best = fcnn_select_##SUFFIX(take, v1, best);                       \
            where = (where & ~(0 - take)) | (1 & (0 - take));                  \
            take = (v2 > best) | ((v2 != v2) & (best == best));                \
            best = fcnn_select_##SUFFIX(take, v2, best);                       \
            where = (where & ~(0 - take)) | (w & (0 - take));                  \
            take = (v3 > best) | ((v3 != v3) & (best == best));                \
            best = fcnn_select_##SUFFIX(take, v3, best);                       \
            where = (where & ~(0 - take)) | ((w + 1) & (0 - take));            \
            y[i * Wo + j] = best;                                              \
            arg[i * Wo + j] = (int32_t)(2 * i * W + 2 * j) + where;            \
        }                                                                      \
    }                                                                          \
}

FCNN_DEFINE_MAX_POOL_ROW(f32, float)
FCNN_DEFINE_MAX_POOL_ROW(f64, double)
FCNN_DEFINE_MAX_POOL_2X2_PLANE(f32, float)
FCNN_DEFINE_MAX_POOL_2X2_PLANE(f64, double)

#endif
