/*
 * Elementwise loops of the smooth and leaky activations (tanh, sigmoid,
 * leaky ReLU, ELU, GELU and its tanh approximation) and their gradients, in
 * the style of elementwise.h: selects rather than data-dependent branches,
 * an output that may alias its input element for element, and the same
 * arithmetic for every element wherever it falls, so results do not depend
 * on how the caller splits the array.
 *
 * The transcendental parts (tanh, exp, expm1, erfc) go through glibc's
 * vector math library libmvec where setup.py found it (FCNN_HAVE_LIBMVEC):
 * GCC calls its vector variants from the `omp simd` loops below. Its
 * functions are accurate to 4 ulp (glibc's documented bound for libmvec),
 * keep NaN, and take +-inf, -0 and arguments far out of range to the same
 * limits as the scalar functions (0, +-1, +-inf, -1 for expm1), which is all
 * that the formulas below rely on. Elsewhere (another compiler, libc or
 * architecture) the same loops call the scalar libm functions.
 *
 * A vectorised loop over n elements would call the scalar function for the
 * remainder and maybe a narrower vector variant before it, which need not
 * round alike; so the transcendental loops go by chunks of FCNN_CHUNK
 * elements, a multiple of every vector width, and copy a final partial chunk
 * into a zero-padded one: every element goes through the same vector call.
 * In a chunk, the loop calling them holds no select (GCC vectorises a call
 * under a condition only for AVX-512) and the selects follow in a loop of
 * their own, over the chunk's results in a local array.
 *
 * Each backward pass reads what makes it exact and cheap: tanh, sigmoid,
 * leaky ReLU and ELU read their output y (their derivatives are functions
 * of y, so the forward pass may overwrite its input), GELU reads its input
 * x (its derivative is not a function of y: GELU is not monotonic).
 */
#ifndef FASTCNN_ACTIVATIONS_H
#define FASTCNN_ACTIVATIONS_H

#include <math.h>
#include <stddef.h>

#include "elementwise.h"
#include "vector_math.h"

#if defined(__GNUC__)
#define FCNN_MATH_INLINE static inline __attribute__((always_inline, unused))
#else
#define FCNN_MATH_INLINE static inline
#endif

/* 1 / sqrt(2) and 1 / sqrt(2 pi), to double precision */
#define FCNN_SQRT1_2 0.70710678118654752440
#define FCNN_INV_SQRT_2PI 0.39894228040143267794
/* sqrt(2 / pi) and the cubic coefficient of GELU's tanh approximation */
#define FCNN_SQRT_2_PI 0.79788456080286535588
#define FCNN_GELU_CUBIC 0.044715

/*
 * float32 exp and the normal distribution as plain arithmetic that GCC
 * vectorises inline, for sigmoid and GELU: cheaper than libmvec's expf and
 * erfcf, whose calls would cost more than the rest of those loops.
 *
 * fcnn_exp_f32(x) = exp(x) for x <= 0 (all that sigmoid and GELU need):
 * n = round(x / ln 2), r = x - n ln2_hi (exact: ln2_hi has 9 significant
 * bits, Cody and Waite's reduction) - n ln2_lo, |r| <~ 0.35, exp(r) by its
 * Taylor polynomial of degree 7 (truncation below 6e-9 relative), times
 * 2^(n + 64) (a normal number for every n from -150 up) and then 2^-64, so
 * that results in the subnormal range are rounded once. n is read from the
 * bits of w + 1.5 2^23 (no float-to-int conversion, undefined for NaN); the
 * one select, at the end, gives 0 below x = -110 (exp < 2^-150, also
 * -inf): selects on the argument would let GCC propagate their constants
 * into twice the code. NaN stays NaN. Within 1.5 ulp of exp over the normal
 * range (checked over every float32 input).
 */
typedef union { float f; unsigned int u; } fcnn_bits32;

FCNN_MATH_INLINE float fcnn_exp_f32(float x) {
    fcnn_bits32 shifted;
    shifted.f = x * 1.44269504f + 12582912.0f;
    float n = shifted.f - 12582912.0f;
    int k = (int)(shifted.u - 0x4b400000u);
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;               /* ln 2 - 0.693359375 */
    float p = 1.98412698e-4f;
    p = p * r + 1.38888889e-3f;
    p = p * r + 8.33333333e-3f;
    p = p * r + 4.16666667e-2f;
    p = p * r + 1.66666667e-1f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    fcnn_bits32 scale;
    scale.u = (unsigned int)(k + 127 + 64) << 23;
    float e = p * scale.f * 0x1p-64f;
    return x < -110.0f ? 0.0f : e;
}

/*
 * The standard normal distribution function Phi(x), and in *gauss
 * exp(-x^2 / 2) (the normal density times sqrt(2 pi)), which GELU's
 * backward pass needs too. Phi(-|x|) = erfc(z) / 2 = exp(-z^2) erfcx(z) / 2,
 * z = |x| / sqrt 2, so that the one exp serves both; Phi(x) = 1 - Phi(-x)
 * above 0. erfcx(z) by a polynomial of degree 9 in u = (t - 0.575) / 0.425,
 * t = 2 / (2 + z) (in t, erfcx is smooth up to z = inf; fitted here for t
 * in [0.15, 1], z up to 11.3, to 3.7e-8 relative, about 1e-6 in float
 * arithmetic). exp(-x^2 / 2) from x^2 (the error of z^2 would be three
 * times that of x^2, magnified by x^2 / 2). NaN stays NaN; +-inf give 1
 * and 0, with *gauss 0.
 */
FCNN_MATH_INLINE float fcnn_normal_cdf_f32(float x, float *gauss) {
    float z = fabsf(x) * (float)FCNN_SQRT1_2;
    float t = 2.0f / (2.0f + z);
    float u = t * 2.35294118f - 1.35294118f;  /* (t - 0.575) / 0.425 */
    float q = -0x1.afbc70p-16f;
    q = q * u - 0x1.76917ep-16f;
    q = q * u + 0x1.35b098p-12f;
    q = q * u + 0x1.95a634p-15f;
    q = q * u - 0x1.a8f9c6p-9f;
    q = q * u - 0x1.caf0d2p-11f;
    q = q * u + 0x1.907dcep-5f;
    q = q * u + 0x1.9a8da4p-3f;
    q = q * u + 0x1.b797b4p-2f;
    q = q * u + 0x1.4cfbaap-2f;
    float g = fcnn_exp_f32(-0.5f * (x * x));
    *gauss = g;
    float lower = 0.5f * q * g;               /* Phi(-|x|) */
    return x > 0.0f ? 1.0f - lower : lower;
}

/* The same in double precision, by libm's erfc and exp: erfc rather than
 * 1 + erf keeps Phi's relative precision in the left tail. */
FCNN_MATH_INLINE double fcnn_normal_cdf_f64(double x, double *gauss) {
    *gauss = exp(-0.5 * x * x);
    return 0.5 * erfc(-x * FCNN_SQRT1_2);
}

/* Elements per chunk of the transcendental loops: a multiple of every
 * vector width, and long enough that the call per chunk costs little. */
#define FCNN_CHUNK 256

/* Runs CHUNK_FN(a + i, b + i, out + i, param) over the chunks of n
 * elements, the last one through zero-padded copies (b may be a, as a
 * forward loop passes it). */
#define FCNN_BY_CHUNKS(CHUNK_FN, T, a, b, out, n, param) do {                  \
    ptrdiff_t full_ = (n) - (n) % FCNN_CHUNK;                                  \
    for (ptrdiff_t i_ = 0; i_ < full_; i_ += FCNN_CHUNK)                       \
        CHUNK_FN((a) + i_, (b) + i_, (out) + i_, param);                       \
    if (full_ < (n)) {                                                         \
        T a_[FCNN_CHUNK] = {0}, b_[FCNN_CHUNK] = {0}, out_[FCNN_CHUNK];        \
        for (ptrdiff_t j_ = 0; j_ < (n) - full_; ++j_) {                       \
            a_[j_] = (a)[full_ + j_];                                          \
            b_[j_] = (b)[full_ + j_];                                          \
        }                                                                      \
        CHUNK_FN(a_, b_, out_, param);                                         \
        for (ptrdiff_t j_ = 0; j_ < (n) - full_; ++j_)                         \
            (out)[full_ + j_] = out_[j_];                                      \
    }                                                                          \
} while (0)

/* The loop over one chunk, compiled once per target clone and called for
 * every chunk, the padded last one too: inlined, the last call's loop over
 * a zero-padded local copy may be vectorised otherwise (partly scalar
 * calls) than the others. GCC calls a clone's own clone directly. */
#if defined(__GNUC__)
#define FCNN_CHUNK_LOOP FCNN_CLONES __attribute__((noinline)) static void
#else
#define FCNN_CHUNK_LOOP static void
#endif

/* The logistic function of v from e = exp(-|v|): 1 / (1 + e) where v >= 0
 * (nonnegative), e / (1 + e) below, as e times 1 / (1 + e) */
#define FCNN_LOGISTIC(T, e, nonnegative)                                       \
    (((nonnegative) ? (T)1 : (e)) * ((T)1 / ((T)1 + (e))))

/* exp(-2|u|), u = sqrt(2 / pi) (x + 0.044715 x^3): GELU's tanh form */
#define FCNN_GELU_TANH_EXP(T, EXP, FABS, x)                                    \
    EXP((T)-2 * FABS((T)FCNN_SQRT_2_PI * (x)                                   \
                     * ((T)1 + (T)FCNN_GELU_CUBIC * ((x) * (x)))))

#define FCNN_DEFINE_ACTIVATIONS(SUFFIX, T, FABS, TANH, EXP, EXPM1, NORMAL_CDF) \
/* y = tanh(x) */                                                             \
FCNN_CHUNK_LOOP fcnn_tanh_chunk_##SUFFIX(const T *x, const T *unused, T *y,   \
                                          T param) {                           \
    (void)unused; (void)param;                                                 \
    FCNN_SIMD                                                                  \
    for (int j = 0; j < FCNN_CHUNK; ++j)                                       \
        y[j] = TANH(x[j]);                                                     \
}                                                                              \
FCNN_CLONES static void fcnn_tanh_##SUFFIX(const T *x, T *y, ptrdiff_t n) {    \
    FCNN_BY_CHUNKS(fcnn_tanh_chunk_##SUFFIX, T, x, x, y, n, (T)0);            \
}                                                                              \
/* grad_x = grad_y (1 - y^2), from the output y = tanh(x), as             */ \
/* (1 - y)(1 + y): accurate where y is near +-1 (1 - y^2 cancels), and no   */ \
/* product-then-sum that GCC would fuse (FMA) in the vector loop but maybe  */ \
/* not in its scalar remainder, which would round elements differently by   */ \
/* position                                                                  */ \
FCNN_CLONES static void fcnn_tanh_backward_##SUFFIX(const T *gy, const T *y,   \
                                                    T *gx, ptrdiff_t n) {      \
    FCNN_SIMD                                                                  \
    for (ptrdiff_t i = 0; i < n; ++i) {                                        \
        T v = y[i];                                                            \
        gx[i] = gy[i] * (((T)1 - v) * ((T)1 + v));                             \
    }                                                                          \
}                                                                              \
/* y = 1 / (1 + exp(-x)), written with e = exp(-|x|) <= 1 so that nothing   */ \
/* overflows: 1 / (1 + e) for x >= 0, e / (1 + e) below. NaN stays NaN.     */ \
FCNN_CHUNK_LOOP fcnn_sigmoid_chunk_##SUFFIX(const T *x, const T *unused,      \
                                             T *y, T param) {                  \
    (void)unused; (void)param;                                                 \
    T e[FCNN_CHUNK];                                                           \
    FCNN_SIMD                                                                  \
    for (int j = 0; j < FCNN_CHUNK; ++j)                                       \
        e[j] = EXP(-FABS(x[j]));                                               \
    FCNN_SIMD                                                                  \
    for (int j = 0; j < FCNN_CHUNK; ++j)                                       \
        y[j] = FCNN_LOGISTIC(T, e[j], x[j] >= (T)0);                           \
}                                                                              \
FCNN_CLONES static void fcnn_sigmoid_##SUFFIX(const T *x, T *y, ptrdiff_t n) { \
    FCNN_BY_CHUNKS(fcnn_sigmoid_chunk_##SUFFIX, T, x, x, y, n, (T)0);         \
}                                                                              \
/* grad_x = grad_y y (1 - y), from the output y = sigmoid(x) */               \
FCNN_CLONES static void fcnn_sigmoid_backward_##SUFFIX(const T *gy, const T *y, \
                                                       T *gx, ptrdiff_t n) {   \
    FCNN_SIMD                                                                  \
    for (ptrdiff_t i = 0; i < n; ++i) {                                        \
        T v = y[i];                                                            \
        gx[i] = gy[i] * (v * ((T)1 - v));                                      \
    }                                                                          \
}                                                                              \
/* y = x for x > 0, slope x otherwise; NaN stays NaN */                       \
FCNN_CLONES static void fcnn_leaky_relu_##SUFFIX(const T *x, T *y, ptrdiff_t n, \
                                                 T slope) {                    \
    FCNN_SIMD                                                                  \
    for (ptrdiff_t i = 0; i < n; ++i) {                                        \
        T v = x[i];                                                            \
        y[i] = v > (T)0 ? v : slope * v;                                       \
    }                                                                          \
}                                                                              \
/* grad_x = grad_y where y > 0, slope grad_y elsewhere: with slope >= 0,    */ \
/* y > 0 exactly where x > 0                                                */ \
FCNN_CLONES static void fcnn_leaky_relu_backward_##SUFFIX(                     \
        const T *gy, const T *y, T *gx, ptrdiff_t n, T slope) {               \
    FCNN_SIMD                                                                  \
    for (ptrdiff_t i = 0; i < n; ++i) {                                        \
        T g = gy[i];                                                           \
        gx[i] = y[i] > (T)0 ? g : slope * g;                                   \
    }                                                                          \
}                                                                              \
/* y = x for x > 0, alpha (exp(x) - 1) otherwise, by expm1 (exact near 0).  */ \
/* expm1 gets 0 for x > 0, so that it never overflows; NaN reaches it.      */ \
FCNN_CHUNK_LOOP fcnn_elu_chunk_##SUFFIX(const T *x, const T *unused, T *y,    \
                                         T alpha) {                            \
    (void)unused;                                                              \
    T e[FCNN_CHUNK];                                                           \
    FCNN_SIMD                                                                  \
    for (int j = 0; j < FCNN_CHUNK; ++j)                                       \
        e[j] = x[j] > (T)0 ? (T)0 : x[j];                                      \
    FCNN_SIMD                                                                  \
    for (int j = 0; j < FCNN_CHUNK; ++j)                                       \
        e[j] = EXPM1(e[j]);                                                    \
    FCNN_SIMD                                                                  \
    for (int j = 0; j < FCNN_CHUNK; ++j)                                       \
        y[j] = x[j] > (T)0 ? x[j] : alpha * e[j];                              \
}                                                                              \
FCNN_CLONES static void fcnn_elu_##SUFFIX(const T *x, T *y, ptrdiff_t n,       \
                                          T alpha) {                           \
    FCNN_BY_CHUNKS(fcnn_elu_chunk_##SUFFIX, T, x, x, y, n, alpha);            \
}                                                                              \
/* grad_x = grad_y where y > 0, grad_y (y + alpha) elsewhere: below 0 the   */ \
/* derivative alpha exp(x) is y + alpha; with alpha > 0, y > 0 exactly      */ \
/* where x > 0                                                               */ \
FCNN_CLONES static void fcnn_elu_backward_##SUFFIX(                            \
        const T *gy, const T *y, T *gx, ptrdiff_t n, T alpha) {               \
    FCNN_SIMD                                                                  \
    for (ptrdiff_t i = 0; i < n; ++i) {                                        \
        T g = gy[i], v = y[i];                                                 \
        gx[i] = v > (T)0 ? g : g * (v + alpha);                                \
    }                                                                          \
}                                                                              \
/* y = x Phi(x), Phi the standard normal distribution function. Where Phi */ \
/* underflows to 0, y is 0 (also for x = -inf, where x Phi would be       */ \
/* -inf * 0); NaN stays NaN (NaN == 0 is false).                           */ \
FCNN_CHUNK_LOOP fcnn_gelu_chunk_##SUFFIX(const T *x, const T *unused, T *y,   \
                                          T param) {                           \
    (void)unused; (void)param;                                                 \
    T cdf[FCNN_CHUNK];                                                         \
    FCNN_SIMD                                                                  \
    for (int j = 0; j < FCNN_CHUNK; ++j) {                                     \
        T gauss;                                                               \
        cdf[j] = NORMAL_CDF(x[j], &gauss);                                     \
    }                                                                          \
    FCNN_SIMD                                                                  \
    for (int j = 0; j < FCNN_CHUNK; ++j)                                       \
        y[j] = cdf[j] == (T)0 ? (T)0 : x[j] * cdf[j];                          \
}                                                                              \
FCNN_CLONES static void fcnn_gelu_##SUFFIX(const T *x, T *y, ptrdiff_t n) {    \
    FCNN_BY_CHUNKS(fcnn_gelu_chunk_##SUFFIX, T, x, x, y, n, (T)0);            \
}                                                                              \
/* grad_x = grad_y (Phi(x) + x phi(x)), phi the normal density, from the   */ \
/* input x. Where phi underflows to 0, x phi is 0 (also for |x| = inf).    */ \
FCNN_CHUNK_LOOP fcnn_gelu_backward_chunk_##SUFFIX(const T *gy, const T *x,    \
                                                   T *gx, T param) {           \
    (void)param;                                                               \
    T cdf[FCNN_CHUNK], pdf[FCNN_CHUNK];                                         \
    FCNN_SIMD                                                                  \
    for (int j = 0; j < FCNN_CHUNK; ++j) {                                     \
        T gauss;                                                               \
        cdf[j] = NORMAL_CDF(x[j], &gauss);                                     \
        pdf[j] = (T)FCNN_INV_SQRT_2PI * gauss;                                 \
    }                                                                          \
    FCNN_SIMD                                                                  \
    for (int j = 0; j < FCNN_CHUNK; ++j) {                                     \
        T tail = pdf[j] == (T)0 ? (T)0 : x[j] * pdf[j];                        \
        gx[j] = gy[j] * (cdf[j] + tail);                                       \
    }                                                                          \
}                                                                              \
FCNN_CLONES static void fcnn_gelu_backward_##SUFFIX(const T *gy, const T *x,   \
                                                    T *gx, ptrdiff_t n) {      \
    FCNN_BY_CHUNKS(fcnn_gelu_backward_chunk_##SUFFIX, T, gy, x, gx, n, (T)0); \
}                                                                              \
/* GELU's tanh approximation 0.5 x (1 + tanh(u)), u = sqrt(2 / pi)          */ \
/* (x + 0.044715 x^3), as x s with s = sigmoid(2u) = 0.5 (1 + tanh(u)): the */ \
/* same function, but s from e = exp(-2|u|) keeps its relative precision   */ \
/* in the left tail, where 1 + tanh(u) cancels. u has x's sign. Where s     */ \
/* underflows to 0, y is 0 (also for x = -inf); NaN stays NaN.              */ \
FCNN_CHUNK_LOOP fcnn_gelu_tanh_chunk_##SUFFIX(const T *x, const T *unused,    \
                                               T *y, T param) {                \
    (void)unused; (void)param;                                                 \
    T e[FCNN_CHUNK];                                                           \
    FCNN_SIMD                                                                  \
    for (int j = 0; j < FCNN_CHUNK; ++j)                                       \
        e[j] = FCNN_GELU_TANH_EXP(T, EXP, FABS, x[j]);                         \
    FCNN_SIMD                                                                  \
    for (int j = 0; j < FCNN_CHUNK; ++j) {                                     \
        T s = FCNN_LOGISTIC(T, e[j], x[j] >= (T)0);                            \
        y[j] = s == (T)0 ? (T)0 : x[j] * s;                                    \
    }                                                                          \
}                                                                              \
FCNN_CLONES static void fcnn_gelu_tanh_##SUFFIX(const T *x, T *y,            \
                                                 ptrdiff_t n) {                \
    FCNN_BY_CHUNKS(fcnn_gelu_tanh_chunk_##SUFFIX, T, x, x, y, n, (T)0);       \
}                                                                              \
/* grad_x = grad_y (s + 2 x u' s (1 - s)), u' = sqrt(2 / pi)                */ \
/* (1 + 3 0.044715 x^2), from the input x; s (1 - s) = e / (1 + e)^2 for    */ \
/* either sign of u. Where e underflows to 0 that term is 0 (also for      */ \
/* |x| = inf).                                                               */ \
FCNN_CHUNK_LOOP fcnn_gelu_tanh_backward_chunk_##SUFFIX(const T *gy,           \
                                                        const T *x, T *gx,     \
                                                        T param) {             \
    (void)param;                                                               \
    T e[FCNN_CHUNK];                                                           \
    FCNN_SIMD                                                                  \
    for (int j = 0; j < FCNN_CHUNK; ++j)                                       \
        e[j] = FCNN_GELU_TANH_EXP(T, EXP, FABS, x[j]);                         \
    FCNN_SIMD                                                                  \
    for (int j = 0; j < FCNN_CHUNK; ++j) {                                     \
        T v = x[j], r = (T)1 / ((T)1 + e[j]);                                  \
        T s = FCNN_LOGISTIC(T, e[j], v >= (T)0);                               \
        T slope = (T)(2 * FCNN_SQRT_2_PI)                                      \
                  * ((T)1 + (T)(3 * FCNN_GELU_CUBIC) * (v * v));               \
        T tail = e[j] == (T)0 ? (T)0 : v * slope * (e[j] * (r * r));           \
        gx[j] = gy[j] * (s + tail);                                            \
    }                                                                          \
}                                                                              \
FCNN_CLONES static void fcnn_gelu_tanh_backward_##SUFFIX(const T *gy,          \
                                                         const T *x, T *gx,    \
                                                         ptrdiff_t n) {        \
    FCNN_BY_CHUNKS(fcnn_gelu_tanh_backward_chunk_##SUFFIX, T, gy, x, gx, n,   \
                   (T)0);                                                      \
}

FCNN_DEFINE_ACTIVATIONS(f32, float, fabsf, tanhf, fcnn_exp_f32, expm1f,
                        fcnn_normal_cdf_f32)
FCNN_DEFINE_ACTIVATIONS(f64, double, fabs, tanh, exp, expm1, fcnn_normal_cdf_f64)

/* The loops by number, for activations.pyx's one blocked parallel loop:
 * a forward loop reads a and writes out (b unused), a backward loop reads
 * the gradient a and the activation b and writes out. */
enum {
    FCNN_TANH, FCNN_TANH_BACKWARD, FCNN_SIGMOID, FCNN_SIGMOID_BACKWARD,
    FCNN_LEAKY_RELU, FCNN_LEAKY_RELU_BACKWARD, FCNN_ELU, FCNN_ELU_BACKWARD,
    FCNN_GELU, FCNN_GELU_BACKWARD, FCNN_GELU_TANH, FCNN_GELU_TANH_BACKWARD
};

#define FCNN_DEFINE_ACTIVATION_DISPATCH(SUFFIX, T)                             \
static void fcnn_activation_##SUFFIX(int op, const T *a, const T *b, T *out,   \
                                     ptrdiff_t n, T param) {                   \
    switch (op) {                                                              \
    case FCNN_TANH: fcnn_tanh_##SUFFIX(a, out, n); break;                      \
    case FCNN_TANH_BACKWARD: fcnn_tanh_backward_##SUFFIX(a, b, out, n); break; \
    case FCNN_SIGMOID: fcnn_sigmoid_##SUFFIX(a, out, n); break;                \
    case FCNN_SIGMOID_BACKWARD:                                                \
        fcnn_sigmoid_backward_##SUFFIX(a, b, out, n); break;                   \
    case FCNN_LEAKY_RELU: fcnn_leaky_relu_##SUFFIX(a, out, n, param); break;   \
    case FCNN_LEAKY_RELU_BACKWARD:                                             \
        fcnn_leaky_relu_backward_##SUFFIX(a, b, out, n, param); break;         \
    case FCNN_ELU: fcnn_elu_##SUFFIX(a, out, n, param); break;                 \
    case FCNN_ELU_BACKWARD: fcnn_elu_backward_##SUFFIX(a, b, out, n, param); break; \
    case FCNN_GELU: fcnn_gelu_##SUFFIX(a, out, n); break;                      \
    case FCNN_GELU_BACKWARD: fcnn_gelu_backward_##SUFFIX(a, b, out, n); break; \
    case FCNN_GELU_TANH: fcnn_gelu_tanh_##SUFFIX(a, out, n); break;            \
    case FCNN_GELU_TANH_BACKWARD:                                              \
        fcnn_gelu_tanh_backward_##SUFFIX(a, b, out, n); break;                 \
    default: break;                                                            \
    }                                                                          \
}

FCNN_DEFINE_ACTIVATION_DISPATCH(f32, float)
FCNN_DEFINE_ACTIVATION_DISPATCH(f64, double)

#endif
