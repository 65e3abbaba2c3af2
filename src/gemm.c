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

/* ------------------------------------------------------ per-thread scratch */

/*
 * Each thread keeps one scratch block between kernel calls and replaces it
 * with a larger one when a call needs more. Allocating and freeing scratch
 * on every call, as the kernels did, fragments a thread's malloc arena:
 * blocks of a few sizes taken and given back in turn, with small
 * allocations landing between them, made the OpenMP worker's arena grow to
 * 1 MiB of touched memory for LeNet-5, whose largest request is 213 KB.
 * The blocks are mapped from the system directly, not taken from malloc, so
 * that replacing one by a larger one leaves no hole behind either.
 *
 * A block starts with a header holding its size; the thread-exit destructor
 * unmaps it, so threads that come and go (Python threads, OpenMP pools that
 * shrink) leave nothing behind. A block over FCNN_SCRATCH_KEEP is unmapped
 * at the end of the call that needed it (fcnn_thread_scratch_trim): one
 * call on large images leaves nothing behind either, and such a call costs
 * far more than mapping its scratch.
 */
#define FCNN_SCRATCH_HEADER 64   /* keeps the usable part 64-byte aligned */
#define FCNN_SCRATCH_KEEP ((size_t)32 << 20)

#if defined(_WIN32)
#include <windows.h>

static void *scratch_map(size_t n_bytes)
{
    return VirtualAlloc(NULL, n_bytes, MEM_COMMIT | MEM_RESERVE, PAGE_READWRITE);
}

static void scratch_unmap(void *block)
{
    if (block != NULL)
        VirtualFree(block, 0, MEM_RELEASE);
}

static DWORD scratch_key = FLS_OUT_OF_INDEXES;
static INIT_ONCE scratch_once = INIT_ONCE_STATIC_INIT;

static VOID NTAPI scratch_release(PVOID block)
{
    scratch_unmap(block);
}

static BOOL CALLBACK scratch_key_create(PINIT_ONCE once, PVOID arg, PVOID *ctx)
{
    (void)once; (void)arg; (void)ctx;
    scratch_key = FlsAlloc(scratch_release);
    return TRUE;
}

static size_t *scratch_get(int *ok)
{
    InitOnceExecuteOnce(&scratch_once, scratch_key_create, NULL, NULL);
    *ok = scratch_key != FLS_OUT_OF_INDEXES;
    return *ok ? (size_t *)FlsGetValue(scratch_key) : NULL;
}

static void scratch_set(size_t *block)
{
    FlsSetValue(scratch_key, block);
}
#else
#include <pthread.h>
#include <sys/mman.h>

static void *scratch_map(size_t n_bytes)
{
    void *p = mmap(NULL, n_bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void scratch_unmap(void *block)
{
    if (block != NULL)
        munmap(block, ((size_t *)block)[0]);
}

static pthread_key_t scratch_key;
static int scratch_key_ok = 0;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_key_create(void)
{
    scratch_key_ok = pthread_key_create(&scratch_key, scratch_unmap) == 0;
}

static size_t *scratch_get(int *ok)
{
    pthread_once(&scratch_once, scratch_key_create);
    *ok = scratch_key_ok;
    return *ok ? (size_t *)pthread_getspecific(scratch_key) : NULL;
}

static void scratch_set(size_t *block)
{
    pthread_setspecific(scratch_key, block);
}
#endif

void *fcnn_thread_scratch(size_t n_bytes)
{
    int ok;
    size_t *block = scratch_get(&ok);
    size_t size;
    if (!ok)
        return NULL;
    size = FCNN_SCRATCH_HEADER + n_bytes;
    if (block == NULL || block[0] < size) {
        scratch_unmap(block);
        block = (size_t *)scratch_map(size);
        scratch_set(block);
        if (block == NULL)
            return NULL;
        block[0] = size;
    }
    return (char *)block + FCNN_SCRATCH_HEADER;
}

void fcnn_thread_scratch_trim(void)
{
    int ok;
    size_t *block = scratch_get(&ok);
    if (ok && block != NULL && block[0] > FCNN_SCRATCH_KEEP) {
        scratch_unmap(block);
        scratch_set(NULL);
    }
}

/* ---------------------------------------------------------------- packing */

/* Rows of B packed per block when its columns are the contiguous runs:
 * 64 rows of a panel, 8 KiB in float32, stay in L1 while every column
 * fills them. */
#define FCNN_PACK_BLOCK 64

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
        if (cs != 1 && (rs < 0 ? -rs : rs) < (cs < 0 ? -cs : cs)) {           \
            /* B's columns are the runs (a transposed source, such as a     \
             * dense layer's weights): read a block of each column whole    \
             * while the panel's rows it fills stay in L1. Reading a row of \
             * B at a time instead reads NR values cs apart, often a        \
             * multiple of 4 KiB, all in one cache set. */                   \
            for (ptrdiff_t k0 = 0; k0 < K; k0 += FCNN_PACK_BLOCK) {           \
                ptrdiff_t kb = K - k0 < FCNN_PACK_BLOCK ? K - k0              \
                                                        : FCNN_PACK_BLOCK;    \
                T *d = dst + k0 * NR;                                         \
                ptrdiff_t c = 0;                                              \
                for (; c < cols; ++c) {                                       \
                    const T *s = src + k0 * rs + (j0 + c) * cs;               \
                    for (ptrdiff_t k = 0; k < kb; ++k)                        \
                        d[k * NR + c] = s[k * rs];                            \
                }                                                             \
                for (; c < NR; ++c)                                           \
                    for (ptrdiff_t k = 0; k < kb; ++k) d[k * NR + c] = 0;     \
            }                                                                 \
            dst += K * NR;                                                    \
            continue;                                                         \
        }                                                                     \
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

/* ------------------------------------------------------- row dot products */

/* fcnn_dot (gemm.h): tiles of DOT_MT rows of A by DOT_NT rows of B. Each of
 * the tile's accumulators has LANES lanes; lane l sums the terms with
 * t % LANES == l, in the order s, h, t, and the lanes are then added by
 * halving (l + l[LANES/2], ...), the same tree in every kernel. */
#define DOT_MT 4
#define DOT_NT 6

#define FCNN_DEFINE_GENERIC_DOT(SUFFIX, T, LANES)                              \
static void dot_generic_##SUFFIX(ptrdiff_t M, ptrdiff_t N, ptrdiff_t G,       \
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
__attribute__((target("avx512f"))) static void                                \
dot_avx512_##SUFFIX(ptrdiff_t M, ptrdiff_t N, ptrdiff_t G, ptrdiff_t R,       \
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

/* ---------------------------------------------------------------- dispatch */

typedef void (*kernel_f32_t)(ptrdiff_t, const float *, const float *const *,
                             const float *, const ptrdiff_t *, float *,
                             ptrdiff_t, int, int, int, const float *);
typedef void (*kernel_f64_t)(ptrdiff_t, const double *,
                             const double *const *, const double *,
                             const ptrdiff_t *, double *, ptrdiff_t, int, int,
                             int, const double *);

typedef void (*dot_f32_t)(ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                          ptrdiff_t, const float *, ptrdiff_t, ptrdiff_t,
                          ptrdiff_t, const float *, const ptrdiff_t *,
                          ptrdiff_t, ptrdiff_t, float *, ptrdiff_t);
typedef void (*dot_f64_t)(ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                          ptrdiff_t, const double *, ptrdiff_t, ptrdiff_t,
                          ptrdiff_t, const double *, const ptrdiff_t *,
                          ptrdiff_t, ptrdiff_t, double *, ptrdiff_t);

static kernel_f32_t kernel_f32 = kernel_generic_f32;
static kernel_f64_t kernel_f64 = kernel_generic_f64;
static dot_f32_t dot_f32 = dot_generic_f32;
static dot_f64_t dot_f64 = dot_generic_f64;
static int kernel_is_avx512 = 0;

int fcnn_gemm_select(int want_avx512)
{
    kernel_f32 = kernel_generic_f32;
    kernel_f64 = kernel_generic_f64;
    dot_f32 = dot_generic_f32;
    dot_f64 = dot_generic_f64;
    kernel_is_avx512 = 0;
#if FCNN_HAVE_AVX512_KERNEL
    if (want_avx512) {
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f")) {
            kernel_f32 = kernel_avx512_f32;
            kernel_f64 = kernel_avx512_f64;
            dot_f32 = dot_avx512_f32;
            dot_f64 = dot_avx512_f64;
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

#define FCNN_DEFINE_DOT(SUFFIX, T)                                             \
void fcnn_dot_##SUFFIX(ptrdiff_t M, ptrdiff_t N, ptrdiff_t G, ptrdiff_t R,    \
                       ptrdiff_t TL, const T *a, ptrdiff_t a_ss,              \
                       ptrdiff_t a_rs, ptrdiff_t a_hs, const T *b,            \
                       const ptrdiff_t *b_offsets, ptrdiff_t b_ss,            \
                       ptrdiff_t b_hs, T *c, ptrdiff_t ldc)                   \
{                                                                             \
    dot_##SUFFIX(M, N, G, R, TL, a, a_ss, a_rs, a_hs, b, b_offsets, b_ss,     \
                 b_hs, c, ldc);                                               \
}

FCNN_DEFINE_DOT(f32, float)
FCNN_DEFINE_DOT(f64, double)
