/* The AVX-512F micro-kernel (kernels.h), compiled for AVX-512 function by
 * function so that the module still loads on CPUs without it. */
#include "gemm/gemm.h"
#include "gemm/kernels.h"

#if FCNN_HAVE_AVX512_KERNEL
#include <immintrin.h>

/* One step of k from packed A: the outer product of ROWS values of A with
 * VECS vectors of row BK of B. */
#define FCNN_STEP(BK, ROWS, VECS, V, LANES, SET1, FMA, LOADU)                  \
    do {                                                                      \
        V bv[2];                                                              \
        _Pragma("GCC unroll 2") for (int v = 0; v < VECS; ++v)                \
            bv[v] = LOADU((BK) + v * LANES);                                  \
        _Pragma("GCC unroll 8") for (int r = 0; r < ROWS; ++r) {              \
            V ar = SET1(a[r]);                                                \
            _Pragma("GCC unroll 2") for (int v = 0; v < VECS; ++v)            \
                acc[r][v] = FMA(ar, bv[v], acc[r][v]);                        \
        }                                                                     \
    } while (0)

/* The tile body, for ROWS <= 8 rows of A and VECS <= 2 vectors of B's
 * columns, both constants where it is inlined (fcnn_kernel_avx512_*
 * instantiates every pair): an edge tile of few rows or columns computes
 * only those, instead of the full 8 x 2 with most of it dropped (a layer of
 * 6 filters would spend a quarter of its multiply-adds on the two rows
 * past them). At full size: 16 accumulators, enough independent FMA chains
 * to keep both FMA pipes busy through their latency, with registers left
 * for the two B vectors and the broadcast. Each element's sum over k runs
 * in the same order whatever the tile's size. */
#define FCNN_DEFINE_AVX512_TILE(SUFFIX, T, V, LANES, MASK_T, ZERO, SET1,       \
                                FMA, LOADU, MASKLOADU, MASKSTOREU, ADD,       \
                                STREAM)                                       \
static inline __attribute__((always_inline, target("avx512f")))               \
void tile_avx512_##SUFFIX(const int ROWS, const int VECS, ptrdiff_t K,        \
                          const T *a, const T *const *a_rows, const T *b,     \
                          const ptrdiff_t *b_offsets, T *c, ptrdiff_t ldc,    \
                          int n, int store, const T *bias)                    \
{                                                                             \
    V acc[8][2];                                                              \
    _Pragma("GCC unroll 8") for (int r = 0; r < ROWS; ++r)                    \
        _Pragma("GCC unroll 2") for (int v = 0; v < VECS; ++v)                \
            acc[r][v] = ZERO();                                               \
    if (a_rows) {                                                             \
        const T *row[8];                                                      \
        _Pragma("GCC unroll 8") for (int r = 0; r < ROWS; ++r)                \
            row[r] = a_rows[r];                                               \
        for (ptrdiff_t k = 0; k < K; ++k, b += 2 * LANES) {                   \
            V bv[2];                                                          \
            _Pragma("GCC unroll 2") for (int v = 0; v < VECS; ++v)            \
                bv[v] = LOADU(b + v * LANES);                                 \
            _Pragma("GCC unroll 8") for (int r = 0; r < ROWS; ++r) {          \
                V ar = SET1(row[r][k]);                                       \
                _Pragma("GCC unroll 2") for (int v = 0; v < VECS; ++v)        \
                    acc[r][v] = FMA(ar, bv[v], acc[r][v]);                    \
            }                                                                 \
        }                                                                     \
    } else if (b_offsets) {                                                   \
        /* packed A: 8 values a step of k whatever ROWS */                    \
        for (ptrdiff_t k = 0; k < K; ++k, a += 8)                             \
            FCNN_STEP(b + b_offsets[k], ROWS, VECS, V, LANES, SET1, FMA, LOADU); \
    } else {                                                                  \
        for (ptrdiff_t k = 0; k < K; ++k, a += 8, b += 2 * LANES)             \
            FCNN_STEP(b, ROWS, VECS, V, LANES, SET1, FMA, LOADU);             \
    }                                                                         \
    /* whole lines only: a whole tile whose rows are 64-byte aligned */       \
    int stream = store == FCNN_STORE_STREAM && ROWS == 8 && n == 2 * LANES    \
                 && (size_t)c % 64 == 0 && (size_t)ldc * sizeof(T) % 64 == 0; \
    MASK_T full = (MASK_T)~(MASK_T)0;                                         \
    MASK_T mask[2];                                                           \
    mask[0] = n >= LANES ? full : (MASK_T)((1u << n) - 1u);                   \
    mask[1] = n >= 2 * LANES ? full                                           \
            : (n > LANES ? (MASK_T)((1u << (n - LANES)) - 1u) : (MASK_T)0);   \
    _Pragma("GCC unroll 8") for (int r = 0; r < ROWS; ++r) {                  \
        T *cr = c + r * ldc;                                                  \
        _Pragma("GCC unroll 2") for (int v = 0; v < VECS; ++v) {              \
            V out = acc[r][v];                                                \
            if (store == FCNN_STORE_ADD)                                      \
                out = ADD(out, MASKLOADU(mask[v], cr + v * LANES));           \
            else if (bias)                                                    \
                out = ADD(out, SET1(bias[r]));                                \
            if (stream)                                                       \
                STREAM(cr + v * LANES, out);                                  \
            else                                                              \
                MASKSTOREU(cr + v * LANES, mask[v], out);                     \
        }                                                                     \
    }                                                                         \
}                                                                             \
                                                                              \
__attribute__((target("avx512f")))                                            \
void fcnn_kernel_avx512_##SUFFIX(ptrdiff_t K, const T *a,                     \
                                   const T *const *a_rows, const T *b,        \
                                   const ptrdiff_t *b_offsets,                \
                                   T *c, ptrdiff_t ldc, int m, int n,         \
                                   int store, const T *bias)                  \
{                                                                             \
    switch (m * 2 + (n > LANES) - 1) {                                        \
    case 1: tile_avx512_##SUFFIX(1, 1, K, a, a_rows, b, b_offsets, c, ldc, n, store, bias); break; \
    case 2: tile_avx512_##SUFFIX(1, 2, K, a, a_rows, b, b_offsets, c, ldc, n, store, bias); break; \
    case 3: tile_avx512_##SUFFIX(2, 1, K, a, a_rows, b, b_offsets, c, ldc, n, store, bias); break; \
    case 4: tile_avx512_##SUFFIX(2, 2, K, a, a_rows, b, b_offsets, c, ldc, n, store, bias); break; \
    case 5: tile_avx512_##SUFFIX(3, 1, K, a, a_rows, b, b_offsets, c, ldc, n, store, bias); break; \
    case 6: tile_avx512_##SUFFIX(3, 2, K, a, a_rows, b, b_offsets, c, ldc, n, store, bias); break; \
    case 7: tile_avx512_##SUFFIX(4, 1, K, a, a_rows, b, b_offsets, c, ldc, n, store, bias); break; \
    case 8: tile_avx512_##SUFFIX(4, 2, K, a, a_rows, b, b_offsets, c, ldc, n, store, bias); break; \
    case 9: tile_avx512_##SUFFIX(5, 1, K, a, a_rows, b, b_offsets, c, ldc, n, store, bias); break; \
    case 10: tile_avx512_##SUFFIX(5, 2, K, a, a_rows, b, b_offsets, c, ldc, n, store, bias); break; \
    case 11: tile_avx512_##SUFFIX(6, 1, K, a, a_rows, b, b_offsets, c, ldc, n, store, bias); break; \
    case 12: tile_avx512_##SUFFIX(6, 2, K, a, a_rows, b, b_offsets, c, ldc, n, store, bias); break; \
    case 13: tile_avx512_##SUFFIX(7, 1, K, a, a_rows, b, b_offsets, c, ldc, n, store, bias); break; \
    case 14: tile_avx512_##SUFFIX(7, 2, K, a, a_rows, b, b_offsets, c, ldc, n, store, bias); break; \
    case 15: tile_avx512_##SUFFIX(8, 1, K, a, a_rows, b, b_offsets, c, ldc, n, store, bias); break; \
    default: tile_avx512_##SUFFIX(8, 2, K, a, a_rows, b, b_offsets, c, ldc, n, store, bias); break; \
    }                                                                         \
}

FCNN_DEFINE_AVX512_TILE(f32, float, __m512, 16, __mmask16, _mm512_setzero_ps,
                        _mm512_set1_ps, _mm512_fmadd_ps, _mm512_loadu_ps,
                        _mm512_maskz_loadu_ps, _mm512_mask_storeu_ps,
                        _mm512_add_ps, _mm512_stream_ps)
FCNN_DEFINE_AVX512_TILE(f64, double, __m512d, 8, __mmask8, _mm512_setzero_pd,
                        _mm512_set1_pd, _mm512_fmadd_pd, _mm512_loadu_pd,
                        _mm512_maskz_loadu_pd, _mm512_mask_storeu_pd,
                        _mm512_add_pd, _mm512_stream_pd)
#endif
