/* Branch-free pieces of the normalization kernels (normalization.pyx). */
#ifndef FASTCNN_NORMALIZATION_H
#define FASTCNN_NORMALIZATION_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "elementwise.h"

/*
 * A channel's sums over the positions of one sample, in float64, into
 * FCNN_LANES partial sums: position i goes to lane i % FCNN_LANES, and the
 * caller adds the lanes in order at the end. One chain of float64 additions
 * would wait on each addition's latency; eight independent ones fill a
 * vector. The order is written out, not left to the compiler's vector
 * width, so every build gives the same bits (setup.py builds this module
 * with -ffp-contract=off: no fused multiply-add in one build and not in
 * another).
 */
#define FCNN_LANES 8

#define FCNN_DEFINE_LANE_SUMS(SUFFIX, T)                                       \
/* lanes[i % 8] += x[i] for i < n */                                         \
FCNN_CLONES static void fcnn_lane_sums_##SUFFIX(const T *x, ptrdiff_t n,       \
                                              double *lanes) {                 \
    double acc[FCNN_LANES];                                                    \
    memcpy(acc, lanes, sizeof acc);                                            \
    ptrdiff_t full = n - n % FCNN_LANES;                                       \
    for (ptrdiff_t i = 0; i < full; i += FCNN_LANES) {                         \
        FCNN_SIMD                                                              \
        for (int j = 0; j < FCNN_LANES; ++j)                                   \
            acc[j] += (double)x[i + j];                                        \
    }                                                                          \
    for (ptrdiff_t j = 0; j < n - full; ++j)                                   \
        acc[j] += (double)x[full + j];                                         \
    memcpy(lanes, acc, sizeof acc);                                            \
}                                                                              \
/* lanes[i % 8] += (x[i] - mean)^2 for i < n */                              \
FCNN_CLONES static void fcnn_lane_squares_##SUFFIX(const T *x, ptrdiff_t n,    \
                                                 double mean, double *lanes) { \
    double acc[FCNN_LANES];                                                    \
    memcpy(acc, lanes, sizeof acc);                                            \
    ptrdiff_t full = n - n % FCNN_LANES;                                       \
    for (ptrdiff_t i = 0; i < full; i += FCNN_LANES) {                         \
        FCNN_SIMD                                                              \
        for (int j = 0; j < FCNN_LANES; ++j) {                                 \
            double d = (double)x[i + j] - mean;                                \
            acc[j] += d * d;                                                   \
        }                                                                      \
    }                                                                          \
    for (ptrdiff_t j = 0; j < n - full; ++j) {                                 \
        double d = (double)x[full + j] - mean;                                 \
        acc[j] += d * d;                                                       \
    }                                                                          \
    memcpy(lanes, acc, sizeof acc);                                            \
}                                                                              \
/* lanes_g[i % 8] += v and lanes_gx[i % 8] += v (x[i] - mean) for i < n,    */ \
/* v = g[i], or with relu_y (not NULL) g[i] where relu_y[i] > 0, else +0 */ \
FCNN_CLONES static void fcnn_lane_gradient_sums_##SUFFIX(                      \
        const T *g, const T *relu_y, const T *x, ptrdiff_t n, double mean,     \
        double *lanes_g, double *lanes_gx) {                                   \
    double a[FCNN_LANES], b[FCNN_LANES];                                       \
    memcpy(a, lanes_g, sizeof a);                                              \
    memcpy(b, lanes_gx, sizeof b);                                             \
    ptrdiff_t full = n - n % FCNN_LANES;                                       \
    if (relu_y == NULL) {                                                      \
        for (ptrdiff_t i = 0; i < full; i += FCNN_LANES) {                     \
            FCNN_SIMD                                                          \
            for (int j = 0; j < FCNN_LANES; ++j) {                             \
                double v = (double)g[i + j];                                   \
                a[j] += v;                                                     \
                b[j] += v * ((double)x[i + j] - mean);                         \
            }                                                                  \
        }                                                                      \
    } else {                                                                   \
        for (ptrdiff_t i = 0; i < full; i += FCNN_LANES) {                     \
            FCNN_SIMD                                                          \
            for (int j = 0; j < FCNN_LANES; ++j) {                             \
                T gv = g[i + j];     /* loaded unconditionally: a select */ \
                double v = (double)(relu_y[i + j] > (T)0 ? gv : (T)0);         \
                a[j] += v;                                                     \
                b[j] += v * ((double)x[i + j] - mean);                         \
            }                                                                  \
        }                                                                      \
    }                                                                          \
    for (ptrdiff_t j = 0; j < n - full; ++j) {                                 \
        double v = (relu_y == NULL || relu_y[full + j] > (T)0)                 \
            ? (double)g[full + j] : 0.0;                                       \
        a[j] += v;                                                             \
        b[j] += v * ((double)x[full + j] - mean);                              \
    }                                                                          \
    memcpy(lanes_g, a, sizeof a);                                              \
    memcpy(lanes_gx, b, sizeof b);                                             \
}                                                                              \
/* gx[i] = v scale + (x[i] - mean) slope + shift in float64, v as above    */ \
FCNN_CLONES static void fcnn_batch_norm_grad_input_##SUFFIX(                   \
        const T *g, const T *relu_y, const T *x, T *gx, ptrdiff_t n,           \
        double mean, double scale, double slope, double shift) {               \
    if (relu_y == NULL) {                                                      \
        FCNN_SIMD                                                              \
        for (ptrdiff_t i = 0; i < n; ++i)                                      \
            gx[i] = (T)((double)g[i] * scale + ((double)x[i] - mean) * slope   \
                        + shift);                                              \
    } else {                                                                   \
        FCNN_SIMD                                                              \
        for (ptrdiff_t i = 0; i < n; ++i) {                                    \
            T gv = g[i];                                                       \
            double v = (double)(relu_y[i] > (T)0 ? gv : (T)0);                 \
            gx[i] = (T)(v * scale + ((double)x[i] - mean) * slope + shift);    \
        }                                                                      \
    }                                                                          \
}

FCNN_DEFINE_LANE_SUMS(f32, float)
FCNN_DEFINE_LANE_SUMS(f64, double)

#endif
