/* Packing of A and B into panels (layout.h). */
#include <string.h>

#include "gemm/gemm.h"
#include "gemm/kernels.h"

/* Rows of B packed per block when its columns are the contiguous runs:
 * 64 rows of a panel, 8 KiB in float32, stay in L1 while every column
 * fills them. */
#define FCNN_PACK_BLOCK 64

/* One panel of B from columns that are runs (kernels.h): a block of each
 * column is read whole while the panel's rows it fills stay in L1. */
#define FCNN_DEFINE_PACK_COLUMNS(SUFFIX, T, NR)                                \
void fcnn_pack_columns_generic_##SUFFIX(ptrdiff_t K, ptrdiff_t cols,          \
                                        const T *src, ptrdiff_t rs,           \
                                        ptrdiff_t cs, T *dst, ptrdiff_t ld)   \
{                                                                             \
    for (ptrdiff_t k0 = 0; k0 < K; k0 += FCNN_PACK_BLOCK) {                   \
        ptrdiff_t kb = K - k0 < FCNN_PACK_BLOCK ? K - k0 : FCNN_PACK_BLOCK;   \
        T *d = dst + k0 * ld;                                                 \
        ptrdiff_t c = 0;                                                      \
        for (; c < cols; ++c) {                                               \
            const T *s = src + k0 * rs + c * cs;                              \
            for (ptrdiff_t k = 0; k < kb; ++k) d[k * ld + c] = s[k * rs];     \
        }                                                                     \
        for (; c < NR; ++c)                                                   \
            for (ptrdiff_t k = 0; k < kb; ++k) d[k * ld + c] = 0;             \
    }                                                                         \
}                                                                             \
void fcnn_pack_b_panel_##SUFFIX(ptrdiff_t K, ptrdiff_t cols, const T *src,    \
                                ptrdiff_t rs, ptrdiff_t cs, T *dst,           \
                                ptrdiff_t ld)                                 \
{                                                                             \
    fcnn_pack_columns_##SUFFIX(K, cols, src, rs, cs, dst, ld);                \
}

FCNN_DEFINE_PACK_COLUMNS(f32, float, FCNN_NR_F32)
FCNN_DEFINE_PACK_COLUMNS(f64, double, FCNN_NR_F64)

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
             * dense layer's weights): the selected kernel (kernels.h)      \
             * reads them whole. Reading a row of B at a time instead reads \
             * NR values cs apart, often a multiple of 4 KiB, all in one    \
             * cache set. */                                                 \
            fcnn_pack_columns_##SUFFIX(K, cols, src + j0 * cs, rs, cs, dst, NR); \
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
