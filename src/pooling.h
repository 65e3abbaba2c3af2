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

/* Whether v replaces best as a window's maximum so far: when greater, or
 * when v is the first NaN (NaN is the maximum of any window holding one).
 * Written as the condition of an `if` around plain assignments: GCC
 * if-converts that into vector selects, where a selected integer flag
 * (take ? v : best) stops it vectorising. */
#define FCNN_TAKES(v, best) (!((v) <= (best)) && (best) == (best))

#define FCNN_DEFINE_MAX_POOL_ROW(SUFFIX, T)                                    \
/* Output row of Wo windows of (kh, kw) whose top-left corners are at       */ \
/* (r0, j*sw) of a plane of width W: y[j] = max, arg[j] = h*W + w of it     */ \
/* (arg NULL: the maxima alone, for inference).                             */ \
/* A NaN is a window's maximum (the first NaN). With relu, y[j] is then    */ \
/* FCNN_RELU (elementwise.h) of the maximum: pooling fused with the ReLU  */ \
/* after it, bit for bit the two passes.                                   */ \
static inline void fcnn_max_pool_row_##SUFFIX(                                 \
        const T *x, ptrdiff_t W, ptrdiff_t r0, ptrdiff_t Wo, ptrdiff_t kh,     \
        ptrdiff_t kw, ptrdiff_t sw, T *y, int32_t *arg, int relu) {            \
    FCNN_SIMD                                                                  \
    for (ptrdiff_t j = 0; j < Wo; ++j)                                         \
        y[j] = x[r0 * W + j * sw];                                             \
    if (arg) {                                                                 \
        FCNN_SIMD                                                              \
        for (ptrdiff_t j = 0; j < Wo; ++j)                                     \
            arg[j] = (int32_t)(r0 * W + j * sw);                               \
    }                                                                          \
    for (ptrdiff_t a = 0; a < kh; ++a) {                                       \
        for (ptrdiff_t b = (a == 0); b < kw; ++b) {                            \
            const ptrdiff_t offset = (r0 + a) * W + b;                         \
            if (!arg) {                                                        \
                FCNN_SIMD                                                      \
                for (ptrdiff_t j = 0; j < Wo; ++j) {                           \
                    const T v = x[offset + j * sw];                            \
                    T best = y[j];                                             \
                    if (FCNN_TAKES(v, best))                                   \
                        best = v;                                              \
                    y[j] = best;                                               \
                }                                                              \
                continue;                                                      \
            }                                                                  \
            FCNN_SIMD                                                          \
            for (ptrdiff_t j = 0; j < Wo; ++j) {                               \
                const T v = x[offset + j * sw];                                \
                T best = y[j];                                                 \
                int32_t where = arg[j];                                        \
                if (FCNN_TAKES(v, best)) {                                     \
                    best = v;                                                  \
                    where = (int32_t)(offset + j * sw);                        \
                }                                                              \
                y[j] = best;                                                   \
                arg[j] = where;                                                \
            }                                                                  \
        }                                                                      \
    }                                                                          \
    if (relu) {                                                                \
        FCNN_SIMD                                                              \
        for (ptrdiff_t j = 0; j < Wo; ++j)                                     \
            y[j] = FCNN_RELU(y[j], T);                                         \
    }                                                                          \
}

/* Windows per block of the 2x2 kernel below: one vector of float32 with
 * AVX2, half of one with AVX-512; small enough that outputs rows of two
 * windows (4 x 4 planes) do not spend most of each block on columns past
 * the row's end. */
#define FCNN_POOL_BLOCK 8

/* The common 2x2 window at stride 2, on planes [p0, p1) of x (x_size
 * values in all) of (H, W) planes into (Ho, Wo) ones. Each output row is
 * computed in whole blocks of FCNN_POOL_BLOCK windows, so every block is one
 * fixed-length vector loop however short the rows are: a row's last block
 * also computes windows past its end, from the next rows' values, and
 * writes them where the next output row is about to be written. Rows
 * whose last block would write past plane p1 (another thread's) or read
 * past x's end take the exact row loop. The four values of a window are
 * compared in row-major order without branches: same results as
 * fcnn_max_pool_row. arg NULL: the maxima alone. */
#define FCNN_DEFINE_MAX_POOL_2X2(SUFFIX, T)                                    \
FCNN_CLONES static void fcnn_max_pool_2x2_##SUFFIX(                            \
        const T *x, ptrdiff_t x_size, ptrdiff_t H, ptrdiff_t W, ptrdiff_t Ho,  \
        ptrdiff_t Wo, ptrdiff_t p0, ptrdiff_t p1, T *y, int32_t *arg,          \
        int relu) {                                                            \
    const ptrdiff_t n_blocks = (Wo + FCNN_POOL_BLOCK - 1) / FCNN_POOL_BLOCK;   \
    const ptrdiff_t row_span = n_blocks * FCNN_POOL_BLOCK;                     \
    const ptrdiff_t y_end = p1 * Ho * Wo;                                      \
    const int32_t w = (int32_t)W;                                              \
    for (ptrdiff_t p = p0; p < p1; ++p) {                                      \
        const T *plane = x + p * H * W;                                        \
        for (ptrdiff_t i = 0; i < Ho; ++i) {                                   \
            const ptrdiff_t out = (p * Ho + i) * Wo;                           \
            const T *top = plane + 2 * i * W, *bottom = top + W;               \
            if (out + row_span > y_end                                         \
                    || (bottom - x) + 2 * row_span > x_size) {                 \
                fcnn_max_pool_row_##SUFFIX(plane, W, 2 * i, Wo, 2, 2, 2,       \
                                           y + out, arg ? arg + out : NULL,    \
                                           relu);                              \
                continue;                                                      \
            }                                                                  \
            for (ptrdiff_t j0 = 0; j0 < Wo; j0 += FCNN_POOL_BLOCK) {           \
                const T *t = top + 2 * j0, *b = bottom + 2 * j0;               \
                T *yb = y + out + j0;                                          \
                if (!arg) {                                                    \
                    FCNN_SIMD                                                  \
                    for (ptrdiff_t j = 0; j < FCNN_POOL_BLOCK; ++j) {          \
                        T best = t[2 * j], v = t[2 * j + 1];                   \
                        if (FCNN_TAKES(v, best)) best = v;                     \
                        v = b[2 * j];                                          \
                        if (FCNN_TAKES(v, best)) best = v;                     \
                        v = b[2 * j + 1];                                      \
                        if (FCNN_TAKES(v, best)) best = v;                     \
                        yb[j] = relu ? FCNN_RELU(best, T) : best;              \
                    }                                                          \
                    continue;                                                  \
                }                                                              \
                int32_t *ab = arg + out + j0;                                  \
                const int32_t corner = (int32_t)(2 * i * W + 2 * j0);          \
                FCNN_SIMD                                                      \
                for (ptrdiff_t j = 0; j < FCNN_POOL_BLOCK; ++j) {              \
                    T best = t[2 * j], v = t[2 * j + 1];                       \
                    int32_t where = 0;                                         \
                    if (FCNN_TAKES(v, best)) { best = v; where = 1; }          \
                    v = b[2 * j];                                              \
                    if (FCNN_TAKES(v, best)) { best = v; where = w; }          \
                    v = b[2 * j + 1];                                          \
                    if (FCNN_TAKES(v, best)) { best = v; where = w + 1; }      \
                    yb[j] = relu ? FCNN_RELU(best, T) : best;                  \
                    ab[j] = corner + 2 * (int32_t)j + where;                   \
                }                                                              \
            }                                                                  \
        }                                                                      \
    }                                                                          \
}

FCNN_DEFINE_MAX_POOL_ROW(f32, float)
FCNN_DEFINE_MAX_POOL_ROW(f64, double)
FCNN_DEFINE_MAX_POOL_2X2(f32, float)
FCNN_DEFINE_MAX_POOL_2X2(f64, double)

#endif
