/* Sums of products of rows: gemm.h's fcnn_dot, one kernel per instruction
 * set (kernels.h). The tile kernel is inlined into each tile shape here,
 * so the whole loop nest stays in this file. */
#include "gemm/kernels.h"

/* fcnn_dot (gemm.h): tiles of DOT_MT rows of A by DOT_NT rows of B. Each of
 * the tile's accumulators has LANES lanes; lane l sums the terms with
 * t % LANES == l, in the order s, h, t, and the lanes are then added by
 * halving (l + l[LANES/2], ...), the same tree in every kernel. */
#define DOT_MT 4
#define DOT_NT 6

#define FCNN_DEFINE_GENERIC_DOT(SUFFIX, T, LANES)                              \
void fcnn_dot_generic_##SUFFIX(ptrdiff_t M, ptrdiff_t N, ptrdiff_t G,         \
                                 ptrdiff_t R, ptrdiff_t TL, const T *a,       \
                                 ptrdiff_t a_ss, ptrdiff_t a_rs,              \
                                 ptrdiff_t a_hs, const T *b,                  \
                                 const ptrdiff_t *b_offsets, ptrdiff_t b_ss,  \
                                 ptrdiff_t b_hs, T *c, ptrdiff_t ldc)         \
{                                                                             \
    for (ptrdiff_t i = 0; i < M; ++i) {                                       \
        for (ptrdiff_t j = 0; j < N; ++j) {                                   \
            T lane[LANES];                                                    \
            for (int l = 0; l < LANES; ++l) lane[l] = 0;                      \
            for (ptrdiff_t s = 0; s < G; ++s) {                               \
                for (ptrdiff_t h = 0; h < R; ++h) {                           \
                    const T *ar = a + s * a_ss + i * a_rs + h * a_hs;         \
                    const T *br = b + s * b_ss + b_offsets[j] + h * b_hs;     \
                    for (ptrdiff_t t = 0; t < TL; ++t)                        \
                        lane[t % LANES] += ar[t] * br[t];                     \
                }                                                             \
            }                                                                 \
            for (int width = LANES / 2; width >= 1; width /= 2)               \
                for (int l = 0; l < width; ++l) lane[l] += lane[l + width];   \
            c[i * ldc + j] += lane[0];                                        \
        }                                                                     \
    }                                                                         \
}

FCNN_DEFINE_GENERIC_DOT(f32, float, 16)
FCNN_DEFINE_GENERIC_DOT(f64, double, 8)

#if FCNN_HAVE_AVX512_KERNEL
#include <immintrin.h>

__attribute__((target("avx512f"))) static inline float
hsum_avx512_f32(__m512 v)
{
    __m256 v8 = _mm256_add_ps(_mm512_castps512_ps256(v),
                              _mm256_castpd_ps(_mm512_extractf64x4_pd(
                                  _mm512_castps_pd(v), 1)));
    __m128 v4 = _mm_add_ps(_mm256_castps256_ps128(v8),
                           _mm256_extractf128_ps(v8, 1));
    __m128 v2 = _mm_add_ps(v4, _mm_movehl_ps(v4, v4));
    __m128 v1 = _mm_add_ss(v2, _mm_shuffle_ps(v2, v2, 1));
    return _mm_cvtss_f32(v1);
}

__attribute__((target("avx512f"))) static inline double
hsum_avx512_f64(__m512d v)
{
    __m256d v4 = _mm256_add_pd(_mm512_castpd512_pd256(v),
                               _mm512_extractf64x4_pd(v, 1));
    __m128d v2 = _mm_add_pd(_mm256_castpd256_pd128(v4),
                            _mm256_extractf128_pd(v4, 1));
    __m128d v1 = _mm_add_sd(v2, _mm_unpackhi_pd(v2, v2));
    return _mm_cvtsd_f64(v1);
}

/* One tile of MT x NT accumulators; MT and NT are constants at every call,
 * so the loops unroll and the accumulators live in registers (24 + 4 + 1 of
 * the 32 vector registers at the largest tile). */
#define FCNN_DEFINE_AVX512_DOT(SUFFIX, T, V, LANES, MASK_T, ZERO, FMA, LOADU,  \
                               MASKZ_LOADU)                                   \
__attribute__((target("avx512f"), always_inline)) static inline void          \
dot_tile_avx512_##SUFFIX(const int MT, const int NT, ptrdiff_t G,             \
                         ptrdiff_t R, ptrdiff_t TL, const T *a,               \
                         ptrdiff_t a_ss, ptrdiff_t a_rs, ptrdiff_t a_hs,      \
                         const T *b, const ptrdiff_t *b_offsets,              \
                         ptrdiff_t b_ss, ptrdiff_t b_hs, T *c, ptrdiff_t ldc) \
{                                                                             \
    V acc[DOT_MT][DOT_NT];                                                    \
    const ptrdiff_t n_full = TL / LANES;                                      \
    const MASK_T tail = (MASK_T)((1u << (TL % LANES)) - 1u);                  \
    _Pragma("GCC unroll 4")                                                   \
    for (int r = 0; r < MT; ++r) {                                            \
        _Pragma("GCC unroll 6")                                               \
        for (int q = 0; q < NT; ++q) acc[r][q] = ZERO();                      \
    }                                                                         \
    for (ptrdiff_t s = 0; s < G; ++s) {                                       \
        for (ptrdiff_t h = 0; h < R; ++h) {                                   \
            const T *ar[DOT_MT], *br[DOT_NT];                                 \
            _Pragma("GCC unroll 4")                                           \
            for (int r = 0; r < MT; ++r)                                      \
                ar[r] = a + s * a_ss + r * a_rs + h * a_hs;                   \
            _Pragma("GCC unroll 6")                                           \
            for (int q = 0; q < NT; ++q)                                      \
                br[q] = b + s * b_ss + b_offsets[q] + h * b_hs;               \
            ptrdiff_t t = 0;                                                  \
            for (ptrdiff_t v = 0; v < n_full; ++v, t += LANES) {              \
                V av[DOT_MT];                                                 \
                _Pragma("GCC unroll 4")                                       \
                for (int r = 0; r < MT; ++r) av[r] = LOADU(ar[r] + t);        \
                _Pragma("GCC unroll 6")                                       \
                for (int q = 0; q < NT; ++q) {                                \
                    V bv = LOADU(br[q] + t);                                  \
                    _Pragma("GCC unroll 4")                                   \
                    for (int r = 0; r < MT; ++r)                              \
                        acc[r][q] = FMA(av[r], bv, acc[r][q]);                \
                }                                                             \
            }                                                                 \
            if (tail) {                                                       \
                /* masked-off lanes are read as zero on both sides, so      \
                 * whatever lies past a row never enters the sum */          \
                V av[DOT_MT];                                                 \
                _Pragma("GCC unroll 4")                                       \
                for (int r = 0; r < MT; ++r)                                  \
                    av[r] = MASKZ_LOADU(tail, ar[r] + t);                     \
                _Pragma("GCC unroll 6")                                       \
                for (int q = 0; q < NT; ++q) {                                \
                    V bv = MASKZ_LOADU(tail, br[q] + t);                      \
                    _Pragma("GCC unroll 4")                                   \
                    for (int r = 0; r < MT; ++r)                              \
                        acc[r][q] = FMA(av[r], bv, acc[r][q]);                \
                }                                                             \
            }                                                                 \
        }                                                                     \
    }                                                                         \
    _Pragma("GCC unroll 4")                                                   \
    for (int r = 0; r < MT; ++r) {                                            \
        _Pragma("GCC unroll 6")                                               \
        for (int q = 0; q < NT; ++q)                                          \
            c[r * ldc + q] += hsum_avx512_##SUFFIX(acc[r][q]);                \
    }                                                                         \
}                                                                             \
                                                                              \
__attribute__((target("avx512f"))) void                                       \
fcnn_dot_avx512_##SUFFIX(ptrdiff_t M, ptrdiff_t N, ptrdiff_t G, ptrdiff_t R,       \
                    ptrdiff_t TL, const T *a, ptrdiff_t a_ss,                 \
                    ptrdiff_t a_rs, ptrdiff_t a_hs, const T *b,               \
                    const ptrdiff_t *b_offsets, ptrdiff_t b_ss,               \
                    ptrdiff_t b_hs, T *c, ptrdiff_t ldc)                      \
{                                                                             \
    for (ptrdiff_t i0 = 0; i0 < M; i0 += DOT_MT) {                            \
        int m = (int)(M - i0 < DOT_MT ? M - i0 : DOT_MT);                     \
        for (ptrdiff_t j0 = 0; j0 < N; j0 += DOT_NT) {                        \
            int n = (int)(N - j0 < DOT_NT ? N - j0 : DOT_NT);                 \
            const T *ai = a + i0 * a_rs;                                      \
            const ptrdiff_t *bj = b_offsets + j0;                             \
            T *cij = c + i0 * ldc + j0;                                       \
            switch (m * 8 + n) {                                              \
            FCNN_DOT_CASES(SUFFIX)                                            \
            }                                                                 \
        }                                                                     \
    }                                                                         \
}

#define FCNN_DOT_CASE(SUFFIX, MT, NT)                                          \
    case MT * 8 + NT:                                                         \
        dot_tile_avx512_##SUFFIX(MT, NT, G, R, TL, ai, a_ss, a_rs, a_hs, b,   \
                                 bj, b_ss, b_hs, cij, ldc);                   \
        break;
#define FCNN_DOT_ROW_CASES(SUFFIX, MT)                                         \
    FCNN_DOT_CASE(SUFFIX, MT, 1) FCNN_DOT_CASE(SUFFIX, MT, 2)                 \
    FCNN_DOT_CASE(SUFFIX, MT, 3) FCNN_DOT_CASE(SUFFIX, MT, 4)                 \
    FCNN_DOT_CASE(SUFFIX, MT, 5) FCNN_DOT_CASE(SUFFIX, MT, 6)
#define FCNN_DOT_CASES(SUFFIX)                                                 \
    FCNN_DOT_ROW_CASES(SUFFIX, 1) FCNN_DOT_ROW_CASES(SUFFIX, 2)               \
    FCNN_DOT_ROW_CASES(SUFFIX, 3) FCNN_DOT_ROW_CASES(SUFFIX, 4)

FCNN_DEFINE_AVX512_DOT(f32, float, __m512, 16, __mmask16, _mm512_setzero_ps,
                       _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_maskz_loadu_ps)
FCNN_DEFINE_AVX512_DOT(f64, double, __m512d, 8, __mmask8, _mm512_setzero_pd,
                       _mm512_fmadd_pd, _mm512_loadu_pd, _mm512_maskz_loadu_pd)
#endif
