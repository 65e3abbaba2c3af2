/* The portable micro-kernel (kernels.h). */
#include <string.h>

#include "gemm/gemm.h"
#include "gemm/kernels.h"

/* The reference micro-kernel: correct on every machine, and the model the
 * vector kernels follow (same panels, same order of the sum over k). */
#define FCNN_DEFINE_GENERIC_KERNEL(SUFFIX, T, MR, NR)                          \
void fcnn_kernel_generic_##SUFFIX(ptrdiff_t K, const T *a,                    \
                                    const T *const *a_rows, const T *b,       \
                                    const ptrdiff_t *b_offsets,               \
                                    T *c, ptrdiff_t ldc, int m, int n,        \
                                    int store, const T *bias)                 \
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
        if (store == FCNN_STORE_ADD) {                                        \
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
