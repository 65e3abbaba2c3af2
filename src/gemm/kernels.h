/*
 * The micro-kernels, row-product kernels and column packers behind gemm.h,
 * one file per instruction set, and the driver (driver.c) that picks one of
 * each at run time. Internal to the gemm module: hidden from other shared objects, as
 * they would be if they were static in one file.
 */
#ifndef FASTCNN_GEMM_KERNELS_H
#define FASTCNN_GEMM_KERNELS_H

#include <stddef.h>

#include "gemm/layout.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define FCNN_HAVE_AVX512_KERNEL 1
#else
#define FCNN_HAVE_AVX512_KERNEL 0
#endif

#if defined(__GNUC__) || defined(__clang__)
#define FCNN_INTERNAL __attribute__((visibility("hidden")))
#else
#define FCNN_INTERNAL
#endif

/* A micro-kernel: C[r*ldc + j] (+)= sum_k A[r, k] B[k, j], r < m <= MR,
 * j < n <= NR, from one panel of A (a, or rows read in place at a_rows[r])
 * and one of B (b, or rows read in place at b + b_offsets[k]); `store` as
 * gemm.h's. */
typedef void (*fcnn_kernel_f32_t)(ptrdiff_t K, const float *a,
                                  const float *const *a_rows, const float *b,
                                  const ptrdiff_t *b_offsets, float *c,
                                  ptrdiff_t ldc, int m, int n, int store,
                                  const float *bias);
typedef void (*fcnn_kernel_f64_t)(ptrdiff_t K, const double *a,
                                  const double *const *a_rows,
                                  const double *b, const ptrdiff_t *b_offsets,
                                  double *c, ptrdiff_t ldc, int m, int n,
                                  int store, const double *bias);
/* A row-product kernel: gemm.h's fcnn_dot. */
typedef void (*fcnn_dot_f32_t)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t G,
                               ptrdiff_t R, ptrdiff_t TL, const float *a,
                               ptrdiff_t a_ss, ptrdiff_t a_rs, ptrdiff_t a_hs,
                               const float *b, const ptrdiff_t *b_offsets,
                               ptrdiff_t b_ss, ptrdiff_t b_hs, float *c,
                               ptrdiff_t ldc);
typedef void (*fcnn_dot_f64_t)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t G,
                               ptrdiff_t R, ptrdiff_t TL, const double *a,
                               ptrdiff_t a_ss, ptrdiff_t a_rs, ptrdiff_t a_hs,
                               const double *b, const ptrdiff_t *b_offsets,
                               ptrdiff_t b_ss, ptrdiff_t b_hs, double *c,
                               ptrdiff_t ldc);

/* A column packer: one panel of B (layout.h) from cols <= NR columns that
 * are runs, column c's element k at src[c*cs + k*rs], the panel's row k at
 * dst + k*ld (ld = NR for a panel of its own); the panel's columns past
 * cols are zero. pack.c calls the selected one, driver.c selects. */
typedef void (*fcnn_pack_columns_f32_t)(ptrdiff_t K, ptrdiff_t cols,
                                        const float *src, ptrdiff_t rs,
                                        ptrdiff_t cs, float *dst, ptrdiff_t ld);
typedef void (*fcnn_pack_columns_f64_t)(ptrdiff_t K, ptrdiff_t cols,
                                        const double *src, ptrdiff_t rs,
                                        ptrdiff_t cs, double *dst, ptrdiff_t ld);
FCNN_INTERNAL extern fcnn_pack_columns_f32_t fcnn_pack_columns_f32;
FCNN_INTERNAL extern fcnn_pack_columns_f64_t fcnn_pack_columns_f64;

/* pack.c, pack_avx512.c */
FCNN_INTERNAL void fcnn_pack_columns_generic_f32(ptrdiff_t, ptrdiff_t, const float *,
                                                 ptrdiff_t, ptrdiff_t, float *, ptrdiff_t);
FCNN_INTERNAL void fcnn_pack_columns_generic_f64(ptrdiff_t, ptrdiff_t, const double *,
                                                 ptrdiff_t, ptrdiff_t, double *, ptrdiff_t);
#if FCNN_HAVE_AVX512_KERNEL
FCNN_INTERNAL void fcnn_pack_columns_avx512_f32(ptrdiff_t, ptrdiff_t, const float *,
                                                ptrdiff_t, ptrdiff_t, float *, ptrdiff_t);
FCNN_INTERNAL void fcnn_pack_columns_avx512_f64(ptrdiff_t, ptrdiff_t, const double *,
                                                ptrdiff_t, ptrdiff_t, double *, ptrdiff_t);
#endif

/* kernel_generic.c, kernel_avx512.c */
FCNN_INTERNAL void fcnn_kernel_generic_f32(ptrdiff_t, const float *, const float *const *,
                                           const float *, const ptrdiff_t *, float *,
                                           ptrdiff_t, int, int, int, const float *);
FCNN_INTERNAL void fcnn_kernel_generic_f64(ptrdiff_t, const double *, const double *const *,
                                           const double *, const ptrdiff_t *, double *,
                                           ptrdiff_t, int, int, int, const double *);
#if FCNN_HAVE_AVX512_KERNEL
FCNN_INTERNAL void fcnn_kernel_avx512_f32(ptrdiff_t, const float *, const float *const *,
                                          const float *, const ptrdiff_t *, float *,
                                          ptrdiff_t, int, int, int, const float *);
FCNN_INTERNAL void fcnn_kernel_avx512_f64(ptrdiff_t, const double *, const double *const *,
                                          const double *, const ptrdiff_t *, double *,
                                          ptrdiff_t, int, int, int, const double *);
#endif

/* dot.c */
#define FCNN_DECLARE_DOT(NAME, T)                                              \
FCNN_INTERNAL void NAME(ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,\
                        const T *, ptrdiff_t, ptrdiff_t, ptrdiff_t, const T *, \
                        const ptrdiff_t *, ptrdiff_t, ptrdiff_t, T *, ptrdiff_t);
FCNN_DECLARE_DOT(fcnn_dot_generic_f32, float)
FCNN_DECLARE_DOT(fcnn_dot_generic_f64, double)
#if FCNN_HAVE_AVX512_KERNEL
FCNN_DECLARE_DOT(fcnn_dot_avx512_f32, float)
FCNN_DECLARE_DOT(fcnn_dot_avx512_f64, double)
#endif
#undef FCNN_DECLARE_DOT

#endif
