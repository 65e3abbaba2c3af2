/*
 * Elementwise loops, written in C so that the compiler vectorises them:
 * branch-free selects instead of data-dependent branches (which mispredict
 * half the time on activations), and `omp simd` to state that an output may
 * alias its input only element for element (in-place ReLU and its gradient).
 * Each element goes through the same arithmetic wherever it falls in a
 * vector, so the results do not depend on how the caller splits the array.
 */
#ifndef FASTCNN_ELEMENTWISE_H
#define FASTCNN_ELEMENTWISE_H

#include <math.h>
#include <stddef.h>

#if defined(_OPENMP) || defined(__GNUC__)
#define FCNN_SIMD _Pragma("omp simd")
#else
#define FCNN_SIMD
#endif

/* Built for AVX-512 and AVX2 as well as the baseline, the best chosen when
 * the module loads (GCC's function multi-versioning on x86-64): the wheel's
 * baseline is SSE2 only, and these loops are memory- and divide-bound. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define FCNN_CLONES __attribute__((target_clones("avx512f", "avx2", "default"), unused))
#else
#define FCNN_CLONES __attribute__((unused))
#endif

/* max(v, 0) for a value v of type T; NaN is not <= 0, so it passes through,
 * and -0 becomes +0. Also the ReLU that pooling.h fuses into max pooling. */
#define FCNN_RELU(v, T) ((v) <= (T)0 ? (T)0 : (v))

#define FCNN_DEFINE_ELEMENTWISE(SUFFIX, T)                                     \
/* y = FCNN_RELU(x) */                                                        \
FCNN_CLONES static void fcnn_relu_##SUFFIX(const T *x, T *y, ptrdiff_t n) {         \
    FCNN_SIMD                                                                  \
    for (ptrdiff_t i = 0; i < n; ++i) {                                        \
        T v = x[i];                                                            \
        y[i] = FCNN_RELU(v, T);                                                \
    }                                                                          \
}                                                                              \
/* grad_x = grad_y where the output y is positive. */                         \
FCNN_CLONES static void fcnn_relu_backward_##SUFFIX(const T *gy, const T *y, T *gx, \
                                               ptrdiff_t n) {                  \
    FCNN_SIMD                                                                  \
    for (ptrdiff_t i = 0; i < n; ++i) {                                        \
        T g = gy[i];  /* loaded unconditionally, so the select vectorises */   \
        gx[i] = y[i] > (T)0 ? g : (T)0;                                        \
    }                                                                          \
}                                                                              \
/* SGD with momentum on entries [0, n); l2 = 0 for unpenalized entries. */    \
FCNN_CLONES static void fcnn_sgd_##SUFFIX(T *p, const T *g, T *vel, ptrdiff_t n,    \
                                     T lr, T mu, int nesterov, T l2) {         \
    if (nesterov) {                                                            \
        FCNN_SIMD                                                              \
        for (ptrdiff_t i = 0; i < n; ++i) {                                    \
            T gi = g[i] + l2 * p[i];                                           \
            T v = mu * vel[i] - lr * gi;                                       \
            vel[i] = v;                                                        \
            p[i] = p[i] + (mu * v - lr * gi);                                  \
        }                                                                      \
    } else {                                                                   \
        FCNN_SIMD                                                              \
        for (ptrdiff_t i = 0; i < n; ++i) {                                    \
            T v = mu * vel[i] - lr * (g[i] + l2 * p[i]);                       \
            vel[i] = v;                                                        \
            p[i] = p[i] + v;                                                   \
        }                                                                      \
    }                                                                          \
}                                                                              \
/* Adam on entries [0, n). */                                                 \
FCNN_CLONES static void fcnn_adam_##SUFFIX(T *p, const T *g, T *m1, T *m2,          \
                                      ptrdiff_t n, T step, T b1, T b2, T eps,  \
                                      T l2) {                                  \
    FCNN_SIMD                                                                  \
    for (ptrdiff_t i = 0; i < n; ++i) {                                        \
        T gi = g[i] + l2 * p[i];                                               \
        T m = b1 * m1[i] + ((T)1 - b1) * gi;                                   \
        T v = b2 * m2[i] + ((T)1 - b2) * gi * gi;                              \
        m1[i] = m;                                                             \
        m2[i] = v;                                                             \
        p[i] = p[i] - step * m / (SQRT_##SUFFIX(v) + eps);                     \
    }                                                                          \
}

#define SQRT_f32 sqrtf
#define SQRT_f64 sqrt
FCNN_DEFINE_ELEMENTWISE(f32, float)
FCNN_DEFINE_ELEMENTWISE(f64, double)

#endif
