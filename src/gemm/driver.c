/* The driver: the kernel selection and the loops over panels that call the
 * selected micro-kernel; see gemm.h. */
#include "gemm/gemm.h"
#include "gemm/kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
/* Non-temporal stores are weakly ordered: fenced before the product
 * returns, so that whoever reads C next (another thread, after the
 * parallel region's barrier) sees them. */
#define FCNN_STREAM_FENCE() _mm_sfence()
#else
#define FCNN_STREAM_FENCE() ((void)0)
#endif

/* Depth of one pass over the panels: a KC x NR slice of B (32 KiB in float32)
 * stays in L1 while every A panel streams past it from L2. */
#define FCNN_KC_F32 256
#define FCNN_KC_F64 128

/* ---------------------------------------------------------------- dispatch */

static fcnn_kernel_f32_t kernel_f32 = fcnn_kernel_generic_f32;
static fcnn_kernel_f64_t kernel_f64 = fcnn_kernel_generic_f64;
static fcnn_dot_f32_t dot_f32 = fcnn_dot_generic_f32;
static fcnn_dot_f64_t dot_f64 = fcnn_dot_generic_f64;
static int kernel_is_avx512 = 0;
fcnn_pack_columns_f32_t fcnn_pack_columns_f32 = fcnn_pack_columns_generic_f32;
fcnn_pack_columns_f64_t fcnn_pack_columns_f64 = fcnn_pack_columns_generic_f64;

int fcnn_gemm_select(int want_avx512)
{
    kernel_f32 = fcnn_kernel_generic_f32;
    kernel_f64 = fcnn_kernel_generic_f64;
    dot_f32 = fcnn_dot_generic_f32;
    dot_f64 = fcnn_dot_generic_f64;
    fcnn_pack_columns_f32 = fcnn_pack_columns_generic_f32;
    fcnn_pack_columns_f64 = fcnn_pack_columns_generic_f64;
    kernel_is_avx512 = 0;
#if FCNN_HAVE_AVX512_KERNEL
    if (want_avx512) {
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f")) {
            kernel_f32 = fcnn_kernel_avx512_f32;
            kernel_f64 = fcnn_kernel_avx512_f64;
            dot_f32 = fcnn_dot_avx512_f32;
            dot_f64 = fcnn_dot_avx512_f64;
            fcnn_pack_columns_f32 = fcnn_pack_columns_avx512_f32;
            fcnn_pack_columns_f64 = fcnn_pack_columns_avx512_f64;
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
                        T *c, ptrdiff_t ldc, int store, const T *bias)        \
{                                                                             \
    const T *rows[MR];                                                        \
    if (store == FCNN_STORE_STREAM && K > KC)                                 \
        store = FCNN_STORE_OVERWRITE;                                         \
    for (ptrdiff_t k0 = 0; k0 < K; k0 += KC) {                                \
        ptrdiff_t kc = K - k0 < KC ? K - k0 : KC;                             \
        int pass_store = k0 > 0 ? FCNN_STORE_ADD : store;                     \
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
                                c + i0 * ldc + j0, ldc, m, n, pass_store,     \
                                bias ? bias + i0 : NULL);                     \
            }                                                                 \
        }                                                                     \
    }                                                                         \
    if (store == FCNN_STORE_STREAM)                                           \
        FCNN_STREAM_FENCE();                                                  \
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
