/* The column packer (kernels.h) with AVX-512F: a block of 16 columns by 16
 * values (8 by 8 in float64) is loaded one column run a vector, transposed
 * in registers and stored as 16 rows of the panel, instead of moving one
 * value at a time. Compiled for AVX-512 function by function so that the
 * module still loads on CPUs without it. */
#include "gemm/kernels.h"

#if FCNN_HAVE_AVX512_KERNEL
#include <immintrin.h>

#define FCNN_AVX512 __attribute__((target("avx512f")))

/* r[i] holds row i of a 16 x 16 block; afterwards r[k] holds column k:
 * pairs of rows interleaved by 32, then 64 bits, then by 128-bit lanes
 * twice. */
static inline FCNN_AVX512 void transpose_f32(__m512 *r)
{
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        __m512d lo = _mm512_castps_pd(t[i]), hi = _mm512_castps_pd(t[i + 1]);
        __m512d lo2 = _mm512_castps_pd(t[i + 2]), hi2 = _mm512_castps_pd(t[i + 3]);
        r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(lo, lo2));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(lo, lo2));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(hi, hi2));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(hi, hi2));
    }
    for (int i = 0; i < 16; i += 8)
        for (int j = 0; j < 4; ++j) {
            t[i + j] = _mm512_shuffle_f32x4(r[i + j], r[i + j + 4], 0x88);
            t[i + j + 4] = _mm512_shuffle_f32x4(r[i + j], r[i + j + 4], 0xdd);
        }
    for (int j = 0; j < 8; ++j) {
        r[j] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0x88);
        r[j + 8] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0xdd);
    }
}

/* The same for an 8 x 8 block of float64. */
static inline FCNN_AVX512 void transpose_f64(__m512d *r)
{
    __m512d t[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm512_unpacklo_pd(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_pd(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4)
        for (int j = 0; j < 2; ++j) {
            r[i + j] = _mm512_shuffle_f64x2(t[i + j], t[i + j + 2], 0x88);
            r[i + j + 2] = _mm512_shuffle_f64x2(t[i + j], t[i + j + 2], 0xdd);
        }
    for (int j = 0; j < 4; ++j) {
        t[j] = _mm512_shuffle_f64x2(r[j], r[j + 4], 0x88);
        t[j + 4] = _mm512_shuffle_f64x2(r[j], r[j + 4], 0xdd);
    }
    for (int j = 0; j < 8; ++j) r[j] = t[j];
}

/* Columns past cols load as zero vectors, and the values of the last block
 * past K are masked off, never read. */
#define FCNN_DEFINE_PACK_COLUMNS_AVX512(SUFFIX, T, V, LANES, MASK, NR,         \
                                        SETZERO, MASKZ_LOADU, STOREU)         \
FCNN_AVX512 void fcnn_pack_columns_avx512_##SUFFIX(ptrdiff_t K, ptrdiff_t cols,\
                                                   const T *src, ptrdiff_t rs,\
                                                   ptrdiff_t cs, T *dst,      \
                                                   ptrdiff_t ld)              \
{                                                                             \
    if (rs != 1) {                                                            \
        fcnn_pack_columns_generic_##SUFFIX(K, cols, src, rs, cs, dst, ld);    \
        return;                                                               \
    }                                                                         \
    for (ptrdiff_t k0 = 0; k0 < K; k0 += LANES) {                             \
        int kb = (int)(K - k0 < LANES ? K - k0 : LANES);                      \
        MASK in_k = (MASK)((1u << kb) - 1u);                                  \
        for (ptrdiff_t c0 = 0; c0 < NR; c0 += LANES) {                        \
            V r[LANES];                                                       \
            for (int i = 0; i < LANES; ++i)                                   \
                r[i] = c0 + i < cols                                          \
                    ? MASKZ_LOADU(in_k, src + (c0 + i) * cs + k0)             \
                    : SETZERO();                                              \
            transpose_##SUFFIX(r);                                            \
            for (int k = 0; k < kb; ++k)                                      \
                STOREU(dst + (k0 + k) * ld + c0, r[k]);                       \
        }                                                                     \
    }                                                                         \
}

FCNN_DEFINE_PACK_COLUMNS_AVX512(f32, float, __m512, 16, __mmask16, FCNN_NR_F32,
                                _mm512_setzero_ps, _mm512_maskz_loadu_ps,
                                _mm512_storeu_ps)
FCNN_DEFINE_PACK_COLUMNS_AVX512(f64, double, __m512d, 8, __mmask8, FCNN_NR_F64,
                                _mm512_setzero_pd, _mm512_maskz_loadu_pd,
                                _mm512_storeu_pd)
#endif
