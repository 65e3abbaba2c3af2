/* The AVX-512F micro-kernel (kernels.h), compiled for AVX-512 function by
 * function so that the module still loads on CPUs without it. */
#include "gemm/gemm.h"
#include "gemm/kernels.h"

#if FCNN_HAVE_AVX512_KERNEL
#include <immintrin.h>

/* 8 rows x 2 vectors: 16 accumulators, enough independent FMA chains to keep
 * both FMA pipes busy through their latency, with registers left for the two
 * B vectors and the broadcast. */
#define FCNN_ROW(R, V, SET1, FMA)                                              \
    do {                                                                      \
        V ar = SET1(a[R]);                                                    \
        c##R##0 = FMA(ar, b0, c##R##0);                                       \
        c##R##1 = FMA(ar, b1, c##R##1);                                       \
    } while (0)

/* The same, with row R of A read in place at a##R[K]. */
#define FCNN_ROW_AT(R, K, V, SET1, FMA)                                        \
    do {                                                                      \
        V ar = SET1(a##R[K]);                                                 \
        c##R##0 = FMA(ar, b0, c##R##0);                                       \
        c##R##1 = FMA(ar, b1, c##R##1);                                       \
    } while (0)

/* One step of k: the outer product of 8 values of A with one row of B. */
#define FCNN_STEP(BK, V, LANES, SET1, FMA, LOADU)                              \
    do {                                                                      \
        V b0 = LOADU(BK);                                                     \
        V b1 = LOADU((BK) + LANES);                                           \
        FCNN_ROW(0, V, SET1, FMA);                                            \
        FCNN_ROW(1, V, SET1, FMA);                                            \
        FCNN_ROW(2, V, SET1, FMA);                                            \
        FCNN_ROW(3, V, SET1, FMA);                                            \
        FCNN_ROW(4, V, SET1, FMA);                                            \
        FCNN_ROW(5, V, SET1, FMA);                                            \
        FCNN_ROW(6, V, SET1, FMA);                                            \
        FCNN_ROW(7, V, SET1, FMA);                                            \
        a += 8;                                                               \
    } while (0)

#define FCNN_DEFINE_AVX512_KERNEL(SUFFIX, T, V, LANES, MASK_T, ZERO, SET1,     \
                                  FMA, LOADU, MASKLOADU, MASKSTOREU, ADD,     \
                                  STREAM)                                     \
__attribute__((target("avx512f")))                                            \
void fcnn_kernel_avx512_##SUFFIX(ptrdiff_t K, const T *a,                     \
                                   const T *const *a_rows, const T *b,        \
                                   const ptrdiff_t *b_offsets,                \
                                   T *c, ptrdiff_t ldc, int m, int n,         \
                                   int store, const T *bias)                  \
{                                                                             \
    V c00 = ZERO(), c01 = ZERO(), c10 = ZERO(), c11 = ZERO();                 \
    V c20 = ZERO(), c21 = ZERO(), c30 = ZERO(), c31 = ZERO();                 \
    V c40 = ZERO(), c41 = ZERO(), c50 = ZERO(), c51 = ZERO();                 \
    V c60 = ZERO(), c61 = ZERO(), c70 = ZERO(), c71 = ZERO();                 \
    if (a_rows) {                                                             \
        const T *a0 = a_rows[0], *a1 = a_rows[1], *a2 = a_rows[2];            \
        const T *a3 = a_rows[3], *a4 = a_rows[4], *a5 = a_rows[5];            \
        const T *a6 = a_rows[6], *a7 = a_rows[7];                             \
        for (ptrdiff_t k = 0; k < K; ++k, b += 2 * LANES) {                   \
            V b0 = LOADU(b);                                                  \
            V b1 = LOADU(b + LANES);                                          \
            FCNN_ROW_AT(0, k, V, SET1, FMA);                                  \
            FCNN_ROW_AT(1, k, V, SET1, FMA);                                  \
            FCNN_ROW_AT(2, k, V, SET1, FMA);                                  \
            FCNN_ROW_AT(3, k, V, SET1, FMA);                                  \
            FCNN_ROW_AT(4, k, V, SET1, FMA);                                  \
            FCNN_ROW_AT(5, k, V, SET1, FMA);                                  \
            FCNN_ROW_AT(6, k, V, SET1, FMA);                                  \
            FCNN_ROW_AT(7, k, V, SET1, FMA);                                  \
        }                                                                     \
    } else if (b_offsets) {                                                   \
        for (ptrdiff_t k = 0; k < K; ++k)                                     \
            FCNN_STEP(b + b_offsets[k], V, LANES, SET1, FMA, LOADU);          \
    } else {                                                                  \
        for (ptrdiff_t k = 0; k < K; ++k, b += 2 * LANES)                     \
            FCNN_STEP(b, V, LANES, SET1, FMA, LOADU);                         \
    }                                                                         \
    V rows[16] = {c00, c01, c10, c11, c20, c21, c30, c31,                     \
                  c40, c41, c50, c51, c60, c61, c70, c71};                    \
    /* whole lines only: a whole tile whose rows are 64-byte aligned */       \
    int stream = store == FCNN_STORE_STREAM && m == 8 && n == 2 * LANES       \
                 && (size_t)c % 64 == 0 && (size_t)ldc * sizeof(T) % 64 == 0; \
    MASK_T full = (MASK_T)~(MASK_T)0;                                         \
    MASK_T m0 = n >= LANES ? full : (MASK_T)((1u << n) - 1u);                 \
    MASK_T m1 = n >= 2 * LANES ? full                                         \
              : (n > LANES ? (MASK_T)((1u << (n - LANES)) - 1u) : (MASK_T)0); \
    for (int r = 0; r < m; ++r) {                                             \
        T *cr = c + r * ldc;                                                  \
        V v0 = rows[2 * r], v1 = rows[2 * r + 1];                             \
        if (store == FCNN_STORE_ADD) {                                        \
            v0 = ADD(v0, MASKLOADU(m0, cr));                                  \
            v1 = ADD(v1, MASKLOADU(m1, cr + LANES));                          \
        } else if (bias) {                                                    \
            v0 = ADD(v0, SET1(bias[r]));                                      \
            v1 = ADD(v1, SET1(bias[r]));                                      \
        }                                                                     \
        if (stream) {                                                         \
            STREAM(cr, v0);                                                   \
            STREAM(cr + LANES, v1);                                           \
        } else {                                                              \
            MASKSTOREU(cr, m0, v0);                                           \
            MASKSTOREU(cr + LANES, m1, v1);                                   \
        }                                                                     \
    }                                                                         \
}

FCNN_DEFINE_AVX512_KERNEL(f32, float, __m512, 16, __mmask16, _mm512_setzero_ps,
                          _mm512_set1_ps, _mm512_fmadd_ps, _mm512_loadu_ps,
                          _mm512_maskz_loadu_ps, _mm512_mask_storeu_ps,
                          _mm512_add_ps, _mm512_stream_ps)
FCNN_DEFINE_AVX512_KERNEL(f64, double, __m512d, 8, __mmask8, _mm512_setzero_pd,
                          _mm512_set1_pd, _mm512_fmadd_pd, _mm512_loadu_pd,
                          _mm512_maskz_loadu_pd, _mm512_mask_storeu_pd,
                          _mm512_add_pd, _mm512_stream_pd)
#endif
