/*
 * Elementwise loops of the smooth and leaky activations (tanh, sigmoid,
 * leaky ReLU, ELU, GELU) and their gradients, in the style of
 * elementwise.h: selects rather than data-dependent branches, an output
 * that may alias its input element for element, and the same arithmetic for
 * every element wherever it falls, so results do not depend on how the
 * caller splits the array. The transcendental parts go through libm
 * (tanh, exp, expm1, erfc), one call per element.
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

/* 1 / sqrt(2) and 1 / sqrt(2 pi), to double precision */
#define FCNN_SQRT1_2 0.70710678118654752440
#define FCNN_INV_SQRT_2PI 0.39894228040143267794

#define FCNN_DEFINE_ACTIVATIONS(SUFFIX, T, FABS, TANH, EXP, EXPM1, ERFC)      \
/* y = tanh(x) */                                                             \
FCNN_CLONES static void fcnn_tanh_##SUFFIX(const T *x, T *y, ptrdiff_t n) {    \
    for (ptrdiff_t i = 0; i < n; ++i)                                          \
        y[i] = TANH(x[i]);                                                     \
}                                                                              \
/* grad_x = grad_y (1 - y^2), from the output y = tanh(x) */                  \
FCNN_CLONES static void fcnn_tanh_backward_##SUFFIX(const T *gy, const T *y,   \
                                                    T *gx, ptrdiff_t n) {      \
    FCNN_SIMD                                                                  \
    for (ptrdiff_t i = 0; i < n; ++i) {                                        \
        T v = y[i];                                                            \
        gx[i] = gy[i] * ((T)1 - v * v);                                        \
    }                                                                          \
}                                                                              \
/* y = 1 / (1 + exp(-x)), written with e = exp(-|x|) <= 1 so that nothing   */ \
/* overflows: 1 / (1 + e) for x >= 0, e / (1 + e) below. NaN stays NaN.     */ \
FCNN_CLONES static void fcnn_sigmoid_##SUFFIX(const T *x, T *y, ptrdiff_t n) { \
    for (ptrdiff_t i = 0; i < n; ++i) {                                        \
        T v = x[i];                                                            \
        T e = EXP(-FABS(v));                                                   \
        T r = (T)1 / ((T)1 + e);                                               \
        y[i] = v >= (T)0 ? r : e * r;                                          \
    }                                                                          \
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
FCNN_CLONES static void fcnn_elu_##SUFFIX(const T *x, T *y, ptrdiff_t n,       \
                                          T alpha) {                           \
    for (ptrdiff_t i = 0; i < n; ++i) {                                        \
        T v = x[i];                                                            \
        T negative = alpha * EXPM1(v > (T)0 ? (T)0 : v);                       \
        y[i] = v > (T)0 ? v : negative;                                        \
    }                                                                          \
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
/* y = x Phi(x), Phi(x) = erfc(-x / sqrt 2) / 2 the normal distribution     */ \
/* function: erfc rather than 1 + erf keeps its relative precision in the   */ \
/* left tail. Where Phi underflows to 0, y is 0 (also for x = -inf, where  */ \
/* x Phi would be -inf * 0); NaN stays NaN (NaN == 0 is false).             */ \
FCNN_CLONES static void fcnn_gelu_##SUFFIX(const T *x, T *y, ptrdiff_t n) {    \
    for (ptrdiff_t i = 0; i < n; ++i) {                                        \
        T v = x[i];                                                            \
        T cdf = (T)0.5 * ERFC(-v * (T)FCNN_SQRT1_2);                           \
        y[i] = cdf == (T)0 ? (T)0 : v * cdf;                                   \
    }                                                                          \
}                                                                              \
/* grad_x = grad_y (Phi(x) + x phi(x)), phi the normal density, from the   */ \
/* input x. Where phi underflows to 0, x phi is 0 (also for |x| = inf).    */ \
FCNN_CLONES static void fcnn_gelu_backward_##SUFFIX(const T *gy, const T *x,   \
                                                    T *gx, ptrdiff_t n) {      \
    for (ptrdiff_t i = 0; i < n; ++i) {                                        \
        T v = x[i];                                                            \
        T cdf = (T)0.5 * ERFC(-v * (T)FCNN_SQRT1_2);                           \
        T pdf = (T)FCNN_INV_SQRT_2PI * EXP((T)-0.5 * v * v);                   \
        T tail = pdf == (T)0 ? (T)0 : v * pdf;                                 \
        gx[i] = gy[i] * (cdf + tail);                                          \
    }                                                                          \
}

FCNN_DEFINE_ACTIVATIONS(f32, float, fabsf, tanhf, expf, expm1f, erfcf)
FCNN_DEFINE_ACTIVATIONS(f64, double, fabs, tanh, exp, expm1, erfc)

/* The loops by number, for activations.pyx's one blocked parallel loop:
 * a forward loop reads a and writes out (b unused), a backward loop reads
 * the gradient a and the activation b and writes out. */
enum {
    FCNN_TANH, FCNN_TANH_BACKWARD, FCNN_SIGMOID, FCNN_SIGMOID_BACKWARD,
    FCNN_LEAKY_RELU, FCNN_LEAKY_RELU_BACKWARD, FCNN_ELU, FCNN_ELU_BACKWARD,
    FCNN_GELU, FCNN_GELU_BACKWARD
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
    default: break;                                                            \
    }                                                                          \
}

FCNN_DEFINE_ACTIVATION_DISPATCH(f32, float)
FCNN_DEFINE_ACTIVATION_DISPATCH(f64, double)

#endif
