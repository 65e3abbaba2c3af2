/* Packed-panel matrix product; see gemm.h for the layout and contract. */
#include <stdlib.h>
#include <string.h>
#include "gemm.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define FCNN_HAVE_AVX512_KERNEL 1
#include <immintrin.h>
#else
#define FCNN_HAVE_AVX512_KERNEL 0
#endif

/* Depth of one pass over the panels: a KC x NR slice of B (32 KiB in float32)
 * stays in L1 while every A panel streams past it from L2. */
#define FCNN_KC_F32 256
#define FCNN_KC_F64 128

void *fcnn_malloc(size_t n_bytes)
{
    void *p = NULL;
    if (n_bytes == 0) n_bytes = 64;
#if defined(_WIN32)
    p = _aligned_malloc(n_bytes, 64);
#else
    if (posix_memalign(&p, 64, n_bytes) != 0) p = NULL;
#endif
    return p;
}

void fcnn_free(void *p)
{
#if defined(_WIN32)
    _aligned_free(p);
#else
    free(p);
#endif
}

/* ---------------------------------------------------------------- packing */

#define FCNN_DEFINE_PACK(SUFFIX, T, MR, NR)                                    \
void fcnn_pack_a_##SUFFIX(ptrdiff_t M, ptrdiff_t K, const T *src,             \
                          ptrdiff_t rs, ptrdiff_t cs, T *dst)                 \
{                                                                             \
    for (ptrdiff_t i0 = 0; i0 < M; i0 += MR) {                                \
        ptrdiff_t rows = M - i0 < MR ? M - i0 : MR;                           \
        for (ptrdiff_t k = 0; k < K; ++k) {                                   \
            const T *s = src + i0 * rs + k * cs;                              \
            ptrdiff_t r = 0;                                                  \
            for (; r < rows; ++r) dst[r] = s[r * rs];                         \
            for (; r < MR; ++r) dst[r] = 0;                                   \
            dst += MR;                                                        \
        }                                                                     \
    }                                                                         \
}                                                                             \
void fcnn_pack_b_##SUFFIX(ptrdiff_t K, ptrdiff_t N, const T *src,             \
                          ptrdiff_t rs, ptrdiff_t cs, T *dst)                 \
{                                                                             \
    for (ptrdiff_t j0 = 0; j0 < N; j0 += NR) {                                \
        ptrdiff_t cols = N - j0 < NR ? N - j0 : NR;                           \
        for (ptrdiff_t k = 0; k < K; ++k) {                                   \
            const T *s = src + k * rs + j0 * cs;                              \
            ptrdiff_t c = 0;                                                  \
            if (cs == 1) {                                                    \
                memcpy(dst, s, (size_t)cols * sizeof(T));                     \
                c = cols;                                                     \
            } else {                                                          \
                for (; c < cols; ++c) dst[c] = s[c * cs];                     \
            }                                                                 \
            for (; c < NR; ++c) dst[c] = 0;                                   \
            dst += NR;                                                        \
        }                                                                     \
    }                                                                         \
}

FCNN_DEFINE_PACK(f32, float, FCNN_MR_F32, FCNN_NR_F32)
FCNN_DEFINE_PACK(f64, double, FCNN_MR_F64, FCNN_NR_F64)

/* ------------------------------------------------------ portable kernels */

/* The reference micro-kernel: correct on every machine, and the model the
 * vector kernels follow (same panels, same order of the sum over k). */
#define FCNN_DEFINE_GENERIC_KERNEL(SUFFIX, T, MR, NR)                          \
static void kernel_generic_##SUFFIX(ptrdiff_t K, const T *a,                  \
                                    const T *const *a_rows, const T *b,       \
                                    const ptrdiff_t *b_offsets,               \
                                    T *c, ptrdiff_t ldc, int m, int n,        \
                                    int accumulate, const T *bias)            \
{                                                                             \
    T acc[MR][NR];                                                            \
    memset(acc, 0, sizeof(acc));                                              \
    for (ptrdiff_t k = 0; k < K; ++k) {                                       \
        const T *bk = b_offsets ? b + b_offsets[k] : b + k * NR;              \
        for (int r = 0; r < MR; ++r) {                                        \
            const T ar = a_rows ? a_rows[r][k] : a[k * MR + r];               \
            for (int j = 0; j < NR; ++j) acc[r][j] += ar * bk[j];             \
        }                                                                     \
    }                                                                         \
    for (int r = 0; r < m; ++r) {                                             \
        T *cr = c + r * ldc;                                                  \
        if (accumulate) {                                                     \
            for (int j = 0; j < n; ++j) cr[j] += acc[r][j];                   \
        } else if (bias) {                                                    \
            for (int j = 0; j < n; ++j) cr[j] = acc[r][j] + bias[r];          \
        } else {                                                              \
            for (int j = 0; j < n; ++j) cr[j] = acc[r][j];                    \
        }                                                                     \
    }                                                                         \
}

FCNN_DEFINE_GENERIC_KERNEL(f32, float, FCNN_MR_F32, FCNN_NR_F32)
FCNN_DEFINE_GENERIC_KERNEL(f64, double, FCNN_MR_F64, FCNN_NR_F64)

/* ------------------------------------------------------- AVX-512 kernels */

#if FCNN_HAVE_AVX512_KERNEL
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
                                  FMA, LOADU, MASKLOADU, MASKSTOREU, ADD)     \
__attribute__((target("avx512f")))                                            \
static void kernel_avx512_##SUFFIX(ptrdiff_t K, const T *a,                   \
                                   const T *const *a_rows, const T *b,        \
                                   const ptrdiff_t *b_offsets,                \
                                   T *c, ptrdiff_t ldc, int m, int n,         \
                                   int accumulate, const T *bias)             \
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
    MASK_T full = (MASK_T)~(MASK_T)0;                                         \
    MASK_T m0 = n >= LANES ? full : (MASK_T)((1u << n) - 1u);                 \
    MASK_T m1 = n >= 2 * LANES ? full                                         \
              : (n > LANES ? (MASK_T)((1u << (n - LANES)) - 1u) : (MASK_T)0); \
    for (int r = 0; r < m; ++r) {                                             \
        T *cr = c + r * ldc;                                                  \
        V v0 = rows[2 * r], v1 = rows[2 * r + 1];                             \
        if (accumulate) {                                                     \
            v0 = ADD(v0, MASKLOADU(m0, cr));                                  \
            v1 = ADD(v1, MASKLOADU(m1, cr + LANES));                          \
        } else if (bias) {                                                    \
            v0 = ADD(v0, SET1(bias[r]));                                      \
            v1 = ADD(v1, SET1(bias[r]));                                      \
        }                                                                     \
        MASKSTOREU(cr, m0, v0);                                               \
        MASKSTOREU(cr + LANES, m1, v1);                                       \
    }                                                                         \
}

FCNN_DEFINE_AVX512_KERNEL(f32, float, __m512, 16, __mmask16, _mm512_setzero_ps,
                          _mm512_set1_ps, _mm512_fmadd_ps, _mm512_loadu_ps,
                          _mm512_maskz_loadu_ps, _mm512_mask_storeu_ps,
                          _mm512_add_ps)
FCNN_DEFINE_AVX512_KERNEL(f64, double, __m512d, 8, __mmask8, _mm512_setzero_pd,
                          _mm512_set1_pd, _mm512_fmadd_pd, _mm512_loadu_pd,
                          _mm512_maskz_loadu_pd, _mm512_mask_storeu_pd,
                          _mm512_add_pd)
#endif

/* ---------------------------------------------------------------- dispatch */

typedef void (*kernel_f32_t)(ptrdiff_t, const float *, const float *const *,
                             const float *, const ptrdiff_t *, float *,
                             ptrdiff_t, int, int, int, const float *);
typedef void (*kernel_f64_t)(ptrdiff_t, const double *,
                             const double *const *, const double *,
                             const ptrdiff_t *, double *, ptrdiff_t, int, int,
                             int, const double *);

static kernel_f32_t kernel_f32 = kernel_generic_f32;
static kernel_f64_t kernel_f64 = kernel_generic_f64;
static int kernel_is_avx512 = 0;

int fcnn_gemm_select(int want_avx512)
{
    kernel_f32 = kernel_generic_f32;
    kernel_f64 = kernel_generic_f64;
    kernel_is_avx512 = 0;
#if FCNN_HAVE_AVX512_KERNEL
    if (want_avx512) {
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f")) {
            kernel_f32 = kernel_avx512_f32;
            kernel_f64 = kernel_avx512_f64;
            kernel_is_avx512 = 1;
        }
    }
#else
    (void)want_avx512;
#endif
    return kernel_is_avx512;
}

const char *fcnn_gemm_kernel_name(void)
{
    return kernel_is_avx512 ? "avx512" : "generic";
}

/* ------------------------------------------------------------------ driver */

#define FCNN_DEFINE_GEMM(SUFFIX, T, MR, NR, KC)                                \
void fcnn_gemm_##SUFFIX(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K,                \
                        const T *a, const ptrdiff_t *a_offsets,               \
                        const T *b, const ptrdiff_t *b_offsets,               \
                        T *c, ptrdiff_t ldc, int accumulate, const T *bias)   \
{                                                                             \
    const T *rows[MR];                                                        \
    for (ptrdiff_t k0 = 0; k0 < K; k0 += KC) {                                \
        ptrdiff_t kc = K - k0 < KC ? K - k0 : KC;                             \
        int acc = accumulate || k0 > 0;                                       \
        const ptrdiff_t *offsets = b_offsets ? b_offsets + k0 : NULL;         \
        for (ptrdiff_t j0 = 0; j0 < N; j0 += NR) {                            \
            const T *bj = b_offsets ? b + j0                                  \
                                    : b + (j0 / NR) * K * NR + k0 * NR;       \
            int n = (int)(N - j0 < NR ? N - j0 : NR);                         \
            for (ptrdiff_t i0 = 0; i0 < M; i0 += MR) {                        \
                int m = (int)(M - i0 < MR ? M - i0 : MR);                     \
                const T *ai = NULL;                                           \
                if (a_offsets) {                                              \
                    /* rows past M repeat the last one: read, never stored */ \
                    for (int r = 0; r < MR; ++r)                              \
                        rows[r] = a + a_offsets[i0 + (r < m ? r : m - 1)] + k0; \
                } else {                                                      \
                    ai = a + (i0 / MR) * K * MR + k0 * MR;                    \
                }                                                             \
                kernel_##SUFFIX(kc, ai, a_offsets ? rows : NULL, bj, offsets, \
                                c + i0 * ldc + j0, ldc, m, n, acc,            \
                                bias ? bias + i0 : NULL);                     \
            }                                                                 \
        }                                                                     \
    }                                                                         \
}

FCNN_DEFINE_GEMM(f32, float, FCNN_MR_F32, FCNN_NR_F32, FCNN_KC_F32)
FCNN_DEFINE_GEMM(f64, double, FCNN_MR_F64, FCNN_NR_F64, FCNN_KC_F64)
