/*
 * Packed-panel matrix product of the gemm extension module.
 *
 *     C (M x N)  =  A (M x K) . B (K x N)       (or C += ..., see `store`)
 *
 * The panel layout is in layout.h.
 *
 * Every product is single-threaded: the Cython callers parallelise over
 * samples with OpenMP, so the order of every sum depends only on the shapes,
 * never on the number of threads.
 *
 * The micro-kernel is chosen once at run time: AVX-512F when the CPU has it,
 * otherwise a portable C kernel. Both read the same panel layout.
 */
#ifndef FASTCNN_GEMM_H
#define FASTCNN_GEMM_H

#include <stddef.h>

#include "gemm/layout.h"
#include "gemm/scratch.h"

/* How a product's C is written (gemm's `store`). */
enum {
    FCNN_STORE_OVERWRITE = 0,   /* C = product + bias */
    FCNN_STORE_ADD = 1,         /* C += product */
    /* C = product + bias with non-temporal stores, which skip reading C's
     * lines into the cache before writing them: for outputs larger than
     * the last-level cache, whose lines would be evicted before anything
     * reads them. Only whole micro-tiles whose rows are 64-byte aligned
     * are streamed (the others are stored as with OVERWRITE), and only
     * when K fits one pass over the panels (one store per element). */
    FCNN_STORE_STREAM = 2
};

/* Selects the micro-kernel (0: portable C, 1: AVX-512 when the CPU has it).
 * Returns the kernel actually in use afterwards. */
int fcnn_gemm_select(int want_avx512);
/* Name of the micro-kernel in use: "avx512" or "generic". */
const char *fcnn_gemm_kernel_name(void);

/* Pack A[i, k] = src[i*rs + k*cs], 0 <= i < M, 0 <= k < K. */
void fcnn_pack_a_f32(ptrdiff_t M, ptrdiff_t K, const float *src,
                     ptrdiff_t rs, ptrdiff_t cs, float *dst);
void fcnn_pack_a_f64(ptrdiff_t M, ptrdiff_t K, const double *src,
                     ptrdiff_t rs, ptrdiff_t cs, double *dst);
/* Pack B[k, j] = src[k*rs + j*cs], 0 <= k < K, 0 <= j < N. */
void fcnn_pack_b_f32(ptrdiff_t K, ptrdiff_t N, const float *src,
                     ptrdiff_t rs, ptrdiff_t cs, float *dst);
void fcnn_pack_b_f64(ptrdiff_t K, ptrdiff_t N, const double *src,
                     ptrdiff_t rs, ptrdiff_t cs, double *dst);
/* One panel of B, B[k, j] = src[k*rs + j*cs], 0 <= k < K, 0 <= j < cols <=
 * NR, its row k at dst + k*ld (ld >= NR: panels whose rows interleave with
 * other panels'); the columns from cols to NR are zero. */
void fcnn_pack_b_panel_f32(ptrdiff_t K, ptrdiff_t cols, const float *src,
                           ptrdiff_t rs, ptrdiff_t cs, float *dst, ptrdiff_t ld);
void fcnn_pack_b_panel_f64(ptrdiff_t K, ptrdiff_t cols, const double *src,
                           ptrdiff_t rs, ptrdiff_t cs, double *dst, ptrdiff_t ld);

/* C[i*ldc + j] (+)= sum_k A[i,k] B[k,j]; K >= 1.
 *
 * A is read one of two ways. With a_offsets NULL, a holds packed panels as
 * above. Otherwise row i of A is the run a[a_offsets[i] + k], read in place.
 * B likewise: with b_offsets NULL, b holds packed panels; otherwise row k of
 * B is the run b[b_offsets[k] + j], and every such element with
 * j < round_up(N, NR) must be readable (the columns past N are read, never
 * stored). Not both operands in place at once. Reading in place lets a
 * correlation take its patches straight from the (padded) image.
 *
 * store = FCNN_STORE_OVERWRITE or FCNN_STORE_STREAM writes C as the product
 * plus bias[i] (bias may be NULL: no bias); FCNN_STORE_ADD adds the product
 * to C and ignores bias. */
void fcnn_gemm_f32(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K,
                   const float *a, const ptrdiff_t *a_offsets,
                   const float *b, const ptrdiff_t *b_offsets,
                   float *c, ptrdiff_t ldc, int store, const float *bias);
void fcnn_gemm_f64(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K,
                   const double *a, const ptrdiff_t *a_offsets,
                   const double *b, const ptrdiff_t *b_offsets,
                   double *c, ptrdiff_t ldc, int store,
                   const double *bias);

/* Sums of products of rows, for products whose both operands run along the
 * summed axis (the kernel gradient of a correlation):
 *
 *   C[i*ldc + j] += sum_{s<G} sum_{h<R} sum_{t<TL} A(s, i, h, t) B(s, j, h, t)
 *   A(s, i, h, t) = a[s*a_ss + i*a_rs + h*a_hs + t]          0 <= i < M
 *   B(s, j, h, t) = b[s*b_ss + b_offsets[j] + h*b_hs + t]     0 <= j < N
 *
 * Only elements with t < TL are read, so nothing outside the rows (a NaN
 * past a window's edge, say) reaches C. The order of the sum depends only
 * on G, R and TL; each element of C is added to once. */
void fcnn_dot_f32(ptrdiff_t M, ptrdiff_t N, ptrdiff_t G, ptrdiff_t R,
                  ptrdiff_t TL, const float *a, ptrdiff_t a_ss,
                  ptrdiff_t a_rs, ptrdiff_t a_hs, const float *b,
                  const ptrdiff_t *b_offsets, ptrdiff_t b_ss, ptrdiff_t b_hs,
                  float *c, ptrdiff_t ldc);
void fcnn_dot_f64(ptrdiff_t M, ptrdiff_t N, ptrdiff_t G, ptrdiff_t R,
                  ptrdiff_t TL, const double *a, ptrdiff_t a_ss,
                  ptrdiff_t a_rs, ptrdiff_t a_hs, const double *b,
                  const ptrdiff_t *b_offsets, ptrdiff_t b_ss, ptrdiff_t b_hs,
                  double *c, ptrdiff_t ldc);

#endif
