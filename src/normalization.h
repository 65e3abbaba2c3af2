/* Branch-free pieces of the normalization kernels (normalization.pyx). */
#ifndef FASTCNN_NORMALIZATION_H
#define FASTCNN_NORMALIZATION_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "elementwise.h"
#include "vector_math.h"

/*
 * A channel's sums over (sample, position), in float64: the channel's
 * positions in each of `planes` samples (S values a sample, `stride` values
 * from one sample's to the next's), samples in order, position i of each
 * going to partial sum i % FCNN_LANES; the partial sums are added in order
 * at the end. One chain of float64 additions would wait on each addition's
 * latency; eight independent ones fill a vector. The order is written out,
 * not left to the compiler's vector width, so every build gives the same
 * bits (setup.py builds this module with -ffp-contract=off: no fused
 * multiply-add in one build and not in another).
 */
#define FCNN_LANES 8

static inline double fcnn_lanes_total(const double *lanes) {
    double total = 0.0;
    for (int j = 0; j < FCNN_LANES; ++j)
        total += lanes[j];
    return total;
}

/* Planes ahead of the one being summed that the channel loop asks the
 * cache for: a channel's planes lie `stride` values apart, in other pages,
 * where the hardware's prefetcher does not follow. */
#define FCNN_PREFETCH_PLANES 2

#if defined(__GNUC__)
static inline void fcnn_prefetch(const void *p, ptrdiff_t bytes) {
    for (ptrdiff_t b = 0; b < bytes; b += 64)
        __builtin_prefetch((const char *)p + b);
}
#else
static inline void fcnn_prefetch(const void *p, ptrdiff_t bytes) {
    (void)p;
    (void)bytes;
}
#endif

/* The loop over a channel's planes: BODY(i, j) adds position i of the
 * plane at offset `at` to lane j; AHEAD(at) prefetches the plane at offset
 * `at` (FCNN_PREFETCH_PLANES planes on). */
#define FCNN_CHANNEL_LOOP(planes, S, stride, BODY, AHEAD) do {                 \
    ptrdiff_t full_ = (S) - (S) % FCNN_LANES;                                  \
    for (ptrdiff_t n_ = 0; n_ < (planes); ++n_) {                              \
        ptrdiff_t at = n_ * (stride);                                          \
        if (n_ + FCNN_PREFETCH_PLANES < (planes))                              \
            AHEAD(at + FCNN_PREFETCH_PLANES * (stride));                       \
        for (ptrdiff_t i_ = 0; i_ < full_; i_ += FCNN_LANES) {                 \
            FCNN_SIMD                                                          \
            for (int j_ = 0; j_ < FCNN_LANES; ++j_)                            \
                BODY(at + i_ + j_, j_);                                        \
        }                                                                      \
        for (ptrdiff_t j_ = 0; j_ < (S) - full_; ++j_)                         \
            BODY(at + full_ + j_, j_);                                         \
    }                                                                          \
} while (0)

#define FCNN_AHEAD_X(at) fcnn_prefetch(x + (at), S * (ptrdiff_t)sizeof(*x))
#define FCNN_AHEAD_GX(at) do {                                                 \
    fcnn_prefetch(g + (at), S * (ptrdiff_t)sizeof(*g));                        \
    fcnn_prefetch(x + (at), S * (ptrdiff_t)sizeof(*x));                        \
} while (0)
#define FCNN_AHEAD_GXY(at) do {                                                \
    FCNN_AHEAD_GX(at);                                                         \
    fcnn_prefetch(relu_y + (at), S * (ptrdiff_t)sizeof(*relu_y));              \
} while (0)
#define FCNN_SUM_BODY(i, j) acc[j] += (double)x[i]
#define FCNN_SQUARES_BODY(i, j) do {                                           \
    double d_ = (double)x[i] - mean;                                           \
    acc[j] += d_ * d_;                                                         \
} while (0)
#define FCNN_GRADIENT_BODY(i, j) do {                                          \
    double v_ = (double)g[i];                                                  \
    a[j] += v_;                                                                \
    b[j] += v_ * ((double)x[i] - mean);                                        \
} while (0)
/* g loaded unconditionally: a select, which vectorises */
#define FCNN_RELU_GRADIENT_BODY(i, j) do {                                     \
    double gv_ = (double)g[i];                                                 \
    double v_ = relu_y[i] > 0 ? gv_ : 0.0;                                     \
    a[j] += v_;                                                                \
    b[j] += v_ * ((double)x[i] - mean);                                        \
} while (0)

#define FCNN_DEFINE_LANE_SUMS(SUFFIX, T)                                       \
/* The channel's sum of x */                                                 \
FCNN_CLONES static double fcnn_channel_sum_##SUFFIX(                           \
        const T *x, ptrdiff_t planes, ptrdiff_t S, ptrdiff_t stride) {         \
    double acc[FCNN_LANES] = {0};                                              \
    FCNN_CHANNEL_LOOP(planes, S, stride, FCNN_SUM_BODY, FCNN_AHEAD_X);         \
    return fcnn_lanes_total(acc);                                              \
}                                                                              \
/* The channel's sum of (x - mean)^2 */                                      \
FCNN_CLONES static double fcnn_channel_squares_##SUFFIX(                       \
        const T *x, ptrdiff_t planes, ptrdiff_t S, ptrdiff_t stride,           \
        double mean) {                                                         \
    double acc[FCNN_LANES] = {0};                                              \
    FCNN_CHANNEL_LOOP(planes, S, stride, FCNN_SQUARES_BODY, FCNN_AHEAD_X);     \
    return fcnn_lanes_total(acc);                                              \
}                                                                              \
/* The channel's sums of v and of v (x - mean), v = g, or with relu_y (not  */ \
/* NULL) g where relu_y > 0 and +0 elsewhere (the fused ReLU's gradient)    */ \
FCNN_CLONES static void fcnn_channel_gradient_sums_##SUFFIX(                   \
        const T *g, const T *relu_y, const T *x, ptrdiff_t planes,             \
        ptrdiff_t S, ptrdiff_t stride, double mean, double *sum_g,             \
        double *sum_gx) {                                                      \
    double a[FCNN_LANES] = {0}, b[FCNN_LANES] = {0};                           \
    if (relu_y == NULL)                                                        \
        FCNN_CHANNEL_LOOP(planes, S, stride, FCNN_GRADIENT_BODY,               \
                          FCNN_AHEAD_GX);                                      \
    else                                                                       \
        FCNN_CHANNEL_LOOP(planes, S, stride, FCNN_RELU_GRADIENT_BODY,          \
                          FCNN_AHEAD_GXY);                                     \
    *sum_g = fcnn_lanes_total(a);                                              \
    *sum_gx = fcnn_lanes_total(b);                                             \
}                                                                              \
/* A channel's planes as FCNN_CHANNEL_LOOP walks them (`planes` planes of */ \
/* S values, `stride` values apart): y = (x - center) scale + shift in     */ \
/* float64, rounded to T; with relu, then max(y, 0) as a ReLU layer        */ \
/* computes it (NaN stays)                                                  */ \
FCNN_CLONES static void fcnn_batch_norm_channel_##SUFFIX(                      \
        const T *x, T *y, ptrdiff_t planes, ptrdiff_t S, ptrdiff_t stride,     \
        double center, double scale, double shift, int relu) {                 \
    for (ptrdiff_t n = 0; n < planes; ++n) {                                   \
        const T *p = x + n * stride;                                           \
        T *q = y + n * stride;                                                 \
        if (relu) {                                                            \
            FCNN_SIMD                                                          \
            for (ptrdiff_t i = 0; i < S; ++i) {                                \
                T v = (T)(((double)p[i] - center) * scale + shift);            \
                q[i] = v <= (T)0 ? (T)0 : v;                                   \
            }                                                                  \
        } else {                                                               \
            FCNN_SIMD                                                          \
            for (ptrdiff_t i = 0; i < S; ++i)                                  \
                q[i] = (T)(((double)p[i] - center) * scale + shift);           \
        }                                                                      \
    }                                                                          \
}                                                                              \
/* The channel's planes of gx = v scale + (x - mean) slope + shift in      */ \
/* float64, v as above                                                      */ \
FCNN_CLONES static void fcnn_batch_norm_grad_input_##SUFFIX(                   \
        const T *g, const T *relu_y, const T *x, T *gx, ptrdiff_t planes,      \
        ptrdiff_t S, ptrdiff_t stride, double mean, double scale,              \
        double slope, double shift) {                                          \
    for (ptrdiff_t n = 0; n < planes; ++n) {                                   \
        ptrdiff_t at = n * stride;                                             \
        const T *gp = g + at, *xp = x + at;                                    \
        T *out = gx + at;                                                      \
        if (relu_y == NULL) {                                                  \
            FCNN_SIMD                                                          \
            for (ptrdiff_t i = 0; i < S; ++i)                                  \
                out[i] = (T)((double)gp[i] * scale                             \
                             + ((double)xp[i] - mean) * slope + shift);        \
        } else {                                                               \
            const T *yp = relu_y + at;                                         \
            FCNN_SIMD                                                          \
            for (ptrdiff_t i = 0; i < S; ++i) {                                \
                T gv = gp[i];                                                  \
                double v = (double)(yp[i] > (T)0 ? gv : (T)0);                 \
                out[i] = (T)(v * scale + ((double)xp[i] - mean) * slope        \
                             + shift);                                         \
            }                                                                  \
        }                                                                      \
    }                                                                          \
}

/*
 * Flat features (S = 1), channel c of sample n at n * C + c: channels
 * [c0, c1) are summed FCNN_FEATURE_WIDTH at a time, the samples in order,
 * each group's partial sums held in registers (START(c, j) before the
 * group's samples, BODY(i, j) for the value at offset i into sum j,
 * FINISH(c, j) after). Each channel's sum is the same chain that
 * FCNN_CHANNEL_LOOP gives it (all in lane 0).
 */
#define FCNN_FEATURE_WIDTH 16

#define FCNN_FEATURE_LOOP(N, C, c0, c1, START, BODY, FINISH) do {              \
    for (ptrdiff_t c_ = (c0); c_ < (c1); c_ += FCNN_FEATURE_WIDTH) {           \
        int w_ = (int)((c1) - c_ < FCNN_FEATURE_WIDTH ? (c1) - c_              \
                                                      : FCNN_FEATURE_WIDTH);   \
        for (int j_ = 0; j_ < FCNN_FEATURE_WIDTH; ++j_)                        \
            START(c_ + (j_ < w_ ? j_ : 0), j_);                                \
        if (w_ == FCNN_FEATURE_WIDTH) {                                        \
            for (ptrdiff_t n_ = 0; n_ < (N); ++n_) {                           \
                FCNN_SIMD                                                      \
                for (int j_ = 0; j_ < FCNN_FEATURE_WIDTH; ++j_)                \
                    BODY(n_ * (C) + c_ + j_, j_);                              \
            }                                                                  \
        } else {                                                               \
            for (ptrdiff_t n_ = 0; n_ < (N); ++n_)                             \
                for (int j_ = 0; j_ < w_; ++j_)                                \
                    BODY(n_ * (C) + c_ + j_, j_);                              \
        }                                                                      \
        for (int j_ = 0; j_ < w_; ++j_)                                        \
            FINISH(c_ + j_, j_);                                               \
    }                                                                          \
} while (0)

#define FCNN_FEATURE_START(c, j) do { acc[j] = 0.0; m[j] = mean[c]; } while (0)
#define FCNN_FEATURE_START_SUM(c, j) acc[j] = 0.0
#define FCNN_FEATURE_FINISH(c, j) sums[c] = acc[j]
#define FCNN_FEATURE_SQUARES_BODY(i, j) do {                                   \
    double d_ = (double)x[i] - m[j];                                           \
    acc[j] += d_ * d_;                                                         \
} while (0)
#define FCNN_FEATURE_GRADIENT_START(c, j) do {                                 \
    a[j] = 0.0;                                                                \
    b[j] = 0.0;                                                                \
    m[j] = mean[c];                                                            \
} while (0)
#define FCNN_FEATURE_GRADIENT_BODY(i, j) do {                                  \
    double v_ = (double)g[i];                                                  \
    a[j] += v_;                                                                \
    b[j] += v_ * ((double)x[i] - m[j]);                                        \
} while (0)
#define FCNN_FEATURE_RELU_GRADIENT_BODY(i, j) do {                             \
    double gv_ = (double)g[i];                                                 \
    double v_ = relu_y[i] > 0 ? gv_ : 0.0;                                     \
    a[j] += v_;                                                                \
    b[j] += v_ * ((double)x[i] - m[j]);                                        \
} while (0)
#define FCNN_FEATURE_GRADIENT_FINISH(c, j) do {                                \
    sum_g[c] = a[j];                                                           \
    sum_gx[c] = b[j];                                                          \
} while (0)

#define FCNN_DEFINE_FEATURE_ROWS(SUFFIX, T)                                    \
/* The flat features' sums of channels [c0, c1) over the N samples: entries */ \
/* [c0, c1) of sums (and of the sum_ arrays) are overwritten.               */ \
FCNN_CLONES static void fcnn_feature_sums_##SUFFIX(                            \
        const T *x, ptrdiff_t N, ptrdiff_t C, ptrdiff_t c0, ptrdiff_t c1,      \
        double *sums) {                                                        \
    double acc[FCNN_FEATURE_WIDTH];                                            \
    FCNN_FEATURE_LOOP(N, C, c0, c1, FCNN_FEATURE_START_SUM, FCNN_SUM_BODY,     \
                      FCNN_FEATURE_FINISH);                                    \
}                                                                              \
FCNN_CLONES static void fcnn_feature_squares_##SUFFIX(                         \
        const T *x, ptrdiff_t N, ptrdiff_t C, ptrdiff_t c0, ptrdiff_t c1,      \
        const double *mean, double *sums) {                                    \
    double acc[FCNN_FEATURE_WIDTH], m[FCNN_FEATURE_WIDTH];                     \
    FCNN_FEATURE_LOOP(N, C, c0, c1, FCNN_FEATURE_START,                        \
                      FCNN_FEATURE_SQUARES_BODY, FCNN_FEATURE_FINISH);         \
}                                                                              \
FCNN_CLONES static void fcnn_feature_gradient_sums_##SUFFIX(                   \
        const T *g, const T *relu_y, const T *x, ptrdiff_t N, ptrdiff_t C,     \
        ptrdiff_t c0, ptrdiff_t c1, const double *mean, double *sum_g,         \
        double *sum_gx) {                                                      \
    double a[FCNN_FEATURE_WIDTH], b[FCNN_FEATURE_WIDTH], m[FCNN_FEATURE_WIDTH];\
    if (relu_y == NULL)                                                        \
        FCNN_FEATURE_LOOP(N, C, c0, c1, FCNN_FEATURE_GRADIENT_START,           \
                          FCNN_FEATURE_GRADIENT_BODY,                          \
                          FCNN_FEATURE_GRADIENT_FINISH);                       \
    else                                                                       \
        FCNN_FEATURE_LOOP(N, C, c0, c1, FCNN_FEATURE_GRADIENT_START,           \
                          FCNN_FEATURE_RELU_GRADIENT_BODY,                     \
                          FCNN_FEATURE_GRADIENT_FINISH);                       \
}                                                                              \
/* One sample of flat features (S = 1), channel c at x[c]: the per-element  */ \
/* passes of the planes, vectorised across the channels, same arithmetic.   */ \
/* y[c] = (x[c] - center[c]) scale[c] + shift[c], then max(y, 0) with relu  */ \
FCNN_CLONES static void fcnn_batch_norm_row_##SUFFIX(                          \
        const T *x, T *y, ptrdiff_t C, const double *center,                   \
        const double *scale, const double *shift, int relu) {                  \
    FCNN_SIMD                                                                  \
    for (ptrdiff_t c = 0; c < C; ++c) {                                        \
        T v = (T)(((double)x[c] - center[c]) * scale[c] + shift[c]);           \
        y[c] = relu && v <= (T)0 ? (T)0 : v;                                   \
    }                                                                          \
}                                                                              \
/* gx[c] = v scale[c] + (x[c] - mean[c]) slope[c] + shift[c]              */ \
FCNN_CLONES static void fcnn_batch_norm_grad_input_row_##SUFFIX(               \
        const T *g, const T *relu_y, const T *x, T *gx, ptrdiff_t C,           \
        const double *mean, const double *scale, const double *slope,          \
        const double *shift) {                                                 \
    if (relu_y == NULL) {                                                      \
        FCNN_SIMD                                                              \
        for (ptrdiff_t c = 0; c < C; ++c)                                      \
            gx[c] = (T)((double)g[c] * scale[c]                                \
                        + ((double)x[c] - mean[c]) * slope[c] + shift[c]);     \
    } else {                                                                   \
        FCNN_SIMD                                                              \
        for (ptrdiff_t c = 0; c < C; ++c) {                                    \
            T gv = g[c];                                                       \
            double v = (double)(relu_y[c] > (T)0 ? gv : (T)0);                 \
            gx[c] = (T)(v * scale[c] + ((double)x[c] - mean[c]) * slope[c]     \
                        + shift[c]);                                           \
        }                                                                      \
    }                                                                          \
}

FCNN_DEFINE_LANE_SUMS(f32, float)
FCNN_DEFINE_LANE_SUMS(f64, double)
FCNN_DEFINE_FEATURE_ROWS(f32, float)
FCNN_DEFINE_FEATURE_ROWS(f64, double)

/*
 * Local response normalization of one sample (C channels of S positions),
 * a channel at a time, its positions FCNN_LRN_CHUNK at a time. The power
 * scale^-beta goes through libmvec's vector pow where it links
 * (vector_math.h); its loop always runs over a whole chunk (positions past
 * the end with the scale of a zero window, k > 0), so that every value goes
 * through the same vector call wherever it falls.
 */
#define FCNN_LRN_CHUNK 256

static inline ptrdiff_t fcnn_max(ptrdiff_t a, ptrdiff_t b) { return a > b ? a : b; }
static inline ptrdiff_t fcnn_min(ptrdiff_t a, ptrdiff_t b) { return a < b ? a : b; }

#define FCNN_DEFINE_LRN(SUFFIX, T)                                             \
/* scale = k + ratio * (sum of x^2 over channels [c - size / 2,             */ \
/* c + (size - 1) / 2] within [0, C), in channel order); y = x scale^-beta; */ \
/* scale is kept unless NULL                                                */ \
FCNN_CLONES static void fcnn_lrn_forward_##SUFFIX(                             \
        const T *x, T *y, T *scale, ptrdiff_t C, ptrdiff_t S, ptrdiff_t size,  \
        double ratio, double beta, double k) {                                 \
    double acc[FCNN_LRN_CHUNK], power[FCNN_LRN_CHUNK];                         \
    T sv[FCNN_LRN_CHUNK];                                                      \
    for (ptrdiff_t c = 0; c < C; ++c) {                                        \
        ptrdiff_t lo = fcnn_max(c - size / 2, 0);                              \
        ptrdiff_t hi = fcnn_min(c + (size - 1) / 2, C - 1);                    \
        for (ptrdiff_t s0 = 0; s0 < S; s0 += FCNN_LRN_CHUNK) {                 \
            ptrdiff_t len = fcnn_min(S - s0, FCNN_LRN_CHUNK);                  \
            for (int s = 0; s < FCNN_LRN_CHUNK; ++s)                           \
                acc[s] = 0.0;                                                  \
            for (ptrdiff_t d = lo; d <= hi; ++d) {                             \
                const T *row = x + d * S + s0;                                 \
                FCNN_SIMD                                                      \
                for (ptrdiff_t s = 0; s < len; ++s) {                          \
                    double v = row[s];                                         \
                    acc[s] = acc[s] + v * v;                                   \
                }                                                              \
            }                                                                  \
            FCNN_SIMD                                                          \
            for (int s = 0; s < FCNN_LRN_CHUNK; ++s)                           \
                sv[s] = (T)(k + ratio * acc[s]);                               \
            FCNN_SIMD                                                          \
            for (int s = 0; s < FCNN_LRN_CHUNK; ++s)                           \
                power[s] = pow((double)sv[s], -beta);                          \
            const T *xc = x + c * S + s0;                                      \
            T *yc = y + c * S + s0;                                            \
            FCNN_SIMD                                                          \
            for (ptrdiff_t s = 0; s < len; ++s)                                \
                yc[s] = (T)(xc[s] * power[s]);                                 \
            if (scale != NULL)                                                 \
                for (ptrdiff_t s = 0; s < len; ++s)                            \
                    scale[c * S + s0 + s] = sv[s];                             \
        }                                                                      \
    }                                                                          \
}                                                                              \
/* gx = g scale^-beta - coef x (sum of g y / scale over the channels i      */ \
/* whose window holds c: [c - (size - 1) / 2, c + size / 2], in order)       */ \
FCNN_CLONES static void fcnn_lrn_backward_##SUFFIX(                            \
        const T *g, const T *x, const T *y, const T *scale, T *gx,             \
        ptrdiff_t C, ptrdiff_t S, ptrdiff_t size, double beta, double coef) {  \
    double acc[FCNN_LRN_CHUNK], power[FCNN_LRN_CHUNK], sv[FCNN_LRN_CHUNK];     \
    for (ptrdiff_t c = 0; c < C; ++c) {                                        \
        ptrdiff_t lo = fcnn_max(c - (size - 1) / 2, 0);                        \
        ptrdiff_t hi = fcnn_min(c + size / 2, C - 1);                          \
        for (ptrdiff_t s0 = 0; s0 < S; s0 += FCNN_LRN_CHUNK) {                 \
            ptrdiff_t len = fcnn_min(S - s0, FCNN_LRN_CHUNK);                  \
            for (int s = 0; s < FCNN_LRN_CHUNK; ++s)                           \
                acc[s] = 0.0;                                                  \
            for (ptrdiff_t i = lo; i <= hi; ++i) {                             \
                ptrdiff_t at = i * S + s0;                                     \
                FCNN_SIMD                                                      \
                for (ptrdiff_t s = 0; s < len; ++s)                            \
                    acc[s] = acc[s]                                            \
                             + (double)g[at + s] * y[at + s] / scale[at + s];  \
            }                                                                  \
            ptrdiff_t at = c * S + s0;                                         \
            for (int s = 0; s < FCNN_LRN_CHUNK; ++s)                           \
                sv[s] = s < len ? (double)scale[at + s] : 1.0;                 \
            FCNN_SIMD                                                          \
            for (int s = 0; s < FCNN_LRN_CHUNK; ++s)                           \
                power[s] = pow(sv[s], -beta);                                  \
            FCNN_SIMD                                                          \
            for (ptrdiff_t s = 0; s < len; ++s)                                \
                gx[at + s] = (T)(g[at + s] * power[s]                          \
                                 - coef * x[at + s] * acc[s]);                 \
        }                                                                      \
    }                                                                          \
}

FCNN_DEFINE_LRN(f32, float)
FCNN_DEFINE_LRN(f64, double)

#endif
