/*
 * The libm functions whose vector variants glibc's vector math library
 * libmvec exports, declared so that GCC calls those variants from `omp
 * simd` loops where setup.py found libmvec (FCNN_HAVE_LIBMVEC). glibc's
 * <bits/math-vector.h> declares them only under -ffast-math;
 * "notinbranch": the loops call them unconditionally. libmvec exports the
 * SSE2, AVX, AVX2 and AVX-512 variants that GCC's x86-64 vector ABI
 * assumes for a declaration without a target ISA; they are accurate to
 * 4 ulp (glibc's documented bound). Elsewhere (another compiler, libc or
 * architecture) the same loops call the scalar libm functions.
 */
#ifndef FASTCNN_VECTOR_MATH_H
#define FASTCNN_VECTOR_MATH_H

#include <math.h>

#if defined(FCNN_HAVE_LIBMVEC) && defined(__GNUC__) && !defined(__clang__) \
    && defined(__x86_64__)
#define FCNN_VECTOR_MATH __attribute__((simd("notinbranch")))
FCNN_VECTOR_MATH float tanhf(float);
FCNN_VECTOR_MATH float expf(float);
FCNN_VECTOR_MATH float expm1f(float);
FCNN_VECTOR_MATH float erfcf(float);
FCNN_VECTOR_MATH double tanh(double);
FCNN_VECTOR_MATH double exp(double);
FCNN_VECTOR_MATH double expm1(double);
FCNN_VECTOR_MATH double erfc(double);
FCNN_VECTOR_MATH double pow(double, double);
#endif

#endif
