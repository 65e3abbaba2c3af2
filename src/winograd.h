/*
 * The transforms of Winograd's minimal filtering F(4x4, 3x3) (Lavin and
 * Gray, "Fast Algorithms for Convolutional Neural Networks", 2016), for
 * src/winograd.pyx. A 4 x 4 tile of outputs of a 3 x 3 correlation is
 *
 *     Y = A^T [ (G g G^T) * (B^T d B) ] A
 *
 * with d the tile's 6 x 6 window of the input, g the 3 x 3 kernel, * the
 * element-wise product and, from the interpolation points 0, 1, -1, 2, -2
 * and infinity,
 *
 *     B^T = | 4  0 -5  0  1  0 |    G = |  1/4     0     0   |
 *           | 0 -4 -4  1  1  0 |        | -1/6  -1/6  -1/6   |
 *           | 0  4 -4 -1  1  0 |        | -1/6   1/6  -1/6   |
 *           | 0 -2 -1  2  1  0 |        |  1/24  1/12  1/6   |
 *           | 0  2 -1 -2  1  0 |        |  1/24 -1/12  1/6   |
 *           | 0  4  0 -5  0  1 |        |  0     0     1     |
 *
 *     A^T = | 1  1  1  1  1  0 |
 *           | 0  1 -1  2 -2  0 |
 *           | 0  1  1  4  4  0 |
 *           | 0  1 -1  8 -8  1 |
 *
 * Summed over input channels, each of the 36 element positions e = 6*i + j
 * is one matrix product, U_e (F x C) . V_e (C x tiles): 36 multiplications
 * per tile and channel pair where the correlation does 144. The same
 * function in exact arithmetic; the sums run in another order, and the
 * transforms' coefficients (up to 8, and 1/6 and 1/24 in G) make the
 * rounding error larger than the direct sum's: in float32 up to about 1e-5
 * of an output's sum of absolute products, inside the 5e-5 the tests hold
 * every correlation to (tests/test_winograd.py).
 *
 * A chunk of tiles is numbered in slots: tile (ti, tj) of a chunk whose
 * rows hold ls slots each (ls, a multiple of 4, at least the chunk's tiles
 * per row) at slot (ti - ti0) * ls + (tj - tj0); several samples' tiles
 * follow one another. Slots past a row's tiles are computed and never
 * stored: the transforms run over all slots in whole vectors, and an
 * output vector's four tiles of four columns never straddle two rows.
 *
 * Each function is defined for float and double; those that run for every
 * sample are compiled twice, for AVX-512 and for any x86-64 (or other)
 * CPU, and fcnn_winograd_select picks one set at run time, as the gemm
 * module picks its micro-kernel.
 */
#ifndef FASTCNN_WINOGRAD_H
#define FASTCNN_WINOGRAD_H

#include <stddef.h>
#include <stdint.h>

#include "gemm/layout.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define FCNN_WINOGRAD_AVX512 1
#else
#define FCNN_WINOGRAD_AVX512 0
#endif

/* The portable input transform reads and writes 36 runs of a chunk, in
 * place: each slot's values only in that slot's own iteration, which the
 * compiler cannot prove for so many runs before it vectorises the loop,
 * so it is told. */
#if defined(_MSC_VER) && !defined(restrict)
#define restrict __restrict
#endif
#if defined(_OPENMP) && !defined(_MSC_VER)
#define FCNN_SIMD _Pragma("omp simd")
#else
#define FCNN_SIMD
#endif

/* Elements of a tile's transform (6 x 6), one matrix product each. */
#define FCNN_WINOGRAD_ELEMENTS 36

/* The scratch layout of a chunk's transformed tiles, V (C x 36 x tiles) and
 * M (F x 36 x tiles): element e of channel c (or filter f), slot t of the
 * chunk at [c*FCNN_WINOGRAD_CS + e*FCNN_WINOGRAD_LDV + t]. A chunk holds at
 * most FCNN_WINOGRAD_LDV slots. Constant strides let the transforms reach
 * their 36 runs from one pointer; the products read matrix e's row c
 * (FCNN_WINOGRAD_CS apart) in place. The 16 values a channel's stride has
 * beyond 36 runs keep those rows out of one cache set (a multiple of 4 KiB
 * apart, every row of a product would fall into the same one). */
#define FCNN_WINOGRAD_LDV 64
#define FCNN_WINOGRAD_CS (FCNN_WINOGRAD_ELEMENTS * FCNN_WINOGRAD_LDV + 16)

/* The rows of a panel of A in the products (gemm's MR), at most. */
#define FCNN_WINOGRAD_MAX_MR (FCNN_MR_F32 > FCNN_MR_F64 ? FCNN_MR_F32 : FCNN_MR_F64)

/* G applied to (g0, g1, g2) for each of n kernels (r < n), into the 6
 * values out[0 .. 5][r]. */
#define FCNN_WINOGRAD_G(g0, g1, g2, out, n)                                    \
    for (ptrdiff_t r = 0; r < (n); ++r) {                                     \
        double a_ = (g0)[r], b_ = (g1)[r], c_ = (g2)[r];                      \
        (out)[0][r] = 0.25 * a_;                                              \
        (out)[1][r] = -(a_ + b_ + c_) * (1.0 / 6);                            \
        (out)[2][r] = -(a_ - b_ + c_) * (1.0 / 6);                            \
        (out)[3][r] = (0.25 * a_ + 0.5 * b_ + c_) * (1.0 / 6);                \
        (out)[4][r] = (0.25 * a_ - 0.5 * b_ + c_) * (1.0 / 6);                \
        (out)[5][r] = c_;                                                     \
    }

/* Panels p0 .. p1 - 1 of the kernel transformed, U_e = G g G^T for each
 * element e = 6i + j, in gemm's layout of A (layout.h): filter f = p*MR + r,
 * channel c at u[e*stride + p*C*MR + c*MR + r], zero for f past F. In
 * double, rounded once; MR filters at a time, so the arithmetic runs in
 * vectors and each element's values are stored MR side by side. */
#define FCNN_DEFINE_WINOGRAD_FILTER(SUFFIX, T, ATTR)                           \
ATTR static void fcnn_winograd_filter_##SUFFIX(ptrdiff_t F, ptrdiff_t C,      \
                                               const T *w, ptrdiff_t MR,      \
                                               ptrdiff_t p0, ptrdiff_t p1,    \
                                               ptrdiff_t stride, T *u)        \
{                                                                             \
    enum { R = FCNN_WINOGRAD_MAX_MR };                                        \
    for (ptrdiff_t p = p0; p < p1; ++p)                                       \
        for (ptrdiff_t c = 0; c < C; ++c) {                                   \
            double g[9][R], t[3][6][R], out[6][6][R];                         \
            for (ptrdiff_t r = 0; r < MR; ++r) {                              \
                ptrdiff_t f = p * MR + r;                                     \
                for (int k = 0; k < 9; ++k)                                   \
                    g[k][r] = f < F ? (double)w[(f * C + c) * 9 + k] : 0.0;   \
            }                                                                 \
            /* G down the kernel's columns, then along the rows */            \
            for (int b = 0; b < 3; ++b)                                       \
                FCNN_WINOGRAD_G(g[b], g[3 + b], g[6 + b], t[b], MR)           \
            for (int i = 0; i < 6; ++i)                                       \
                FCNN_WINOGRAD_G(t[0][i], t[1][i], t[2][i], out[i], MR)        \
            T *dst = u + p * C * MR + c * MR;                                 \
            for (int e = 0; e < 36; ++e)                                      \
                for (ptrdiff_t r = 0; r < MR; ++r)                            \
                    dst[e * stride + r] = (T)out[e / 6][e % 6][r];            \
        }                                                                     \
}

/* B^T applied to (d0, ..., d5), into z0 .. z5. */
#define FCNN_WINOGRAD_BT(T, d0, d1, d2, d3, d4, d5, z0, z1, z2, z3, z4, z5)     \
    do {                                                                      \
        T p_ = (d4) - 4 * (d2), q_ = (d3) - 4 * (d1);                         \
        T r_ = (d4) - (d2), s_ = 2 * ((d3) - (d1));                           \
        z0 = 4 * (d0) - 5 * (d2) + (d4);                                      \
        z1 = p_ + q_;                                                         \
        z2 = p_ - q_;                                                         \
        z3 = r_ + s_;                                                         \
        z4 = r_ - s_;                                                         \
        z5 = 4 * (d1) - 5 * (d3) + (d5);                                      \
    } while (0)

/* A^T applied to (m0, ..., m5), into y0 .. y3. */
#define FCNN_WINOGRAD_AT(T, m0, m1, m2, m3, m4, m5, y0, y1, y2, y3)             \
    do {                                                                      \
        T p_ = (m1) + (m2), q_ = (m1) - (m2);                                 \
        T r_ = (m3) + (m4), s_ = (m3) - (m4);                                 \
        y0 = (m0) + p_ + r_;                                                  \
        y1 = q_ + 2 * s_;                                                     \
        y2 = p_ + 4 * r_;                                                     \
        y3 = q_ + 8 * s_ + (m5);                                              \
    } while (0)

/* The windows of a chunk's tiles of one sample x (C, H, W), before the
 * transform: d[c*FCNN_WINOGRAD_CS + (6a + b)*FCNN_WINOGRAD_LDV + slot] =
 * x[c, 4ti + a - ph, 4tj + b - pw], zero outside x; the slots past a row's
 * tiles hold zeros or values of x. */
#define FCNN_DEFINE_WINOGRAD_GATHER(SUFFIX, T, ATTR)                           \
ATTR static void fcnn_winograd_gather_##SUFFIX(                               \
    ptrdiff_t C, ptrdiff_t H, ptrdiff_t W, ptrdiff_t ph, ptrdiff_t pw,        \
    ptrdiff_t ti0, ptrdiff_t ti1, ptrdiff_t tj0, ptrdiff_t tj1, ptrdiff_t ls, \
    const T *x, T *d)                                                         \
{                                                                             \
    const ptrdiff_t es = FCNN_WINOGRAD_LDV, n = tj1 - tj0;                    \
    for (ptrdiff_t c = 0; c < C; ++c)                                         \
        for (ptrdiff_t ti = ti0; ti < ti1; ++ti)                              \
            for (ptrdiff_t a = 0; a < 6; ++a) {                               \
                ptrdiff_t h = 4 * ti + a - ph;                                \
                int inside = h >= 0 && h < H;                                 \
                const T *row = inside ? x + (c * H + h) * W : x;              \
                T *out = d + c * FCNN_WINOGRAD_CS + 6 * a * es + (ti - ti0) * ls; \
                for (ptrdiff_t b = 0; b < 6; ++b)                             \
                    for (ptrdiff_t t = 0; t < ls; ++t) {                      \
                        ptrdiff_t w = 4 * (tj0 + t) + b - pw;                 \
                        out[b * es + t] = inside && t < n && w >= 0 && w < W  \
                                          ? row[w] : (T)0;                    \
                    }                                                         \
            }                                                                 \
}

/* V = B^T d B in place for the first `slots` slots of each channel. */
#define FCNN_DEFINE_WINOGRAD_INPUT(SUFFIX, T, ATTR)                            \
ATTR static void fcnn_winograd_input_##SUFFIX(ptrdiff_t C, ptrdiff_t slots,   \
                                              T *v)                           \
{                                                                             \
    const ptrdiff_t es = FCNN_WINOGRAD_LDV;                                   \
    for (ptrdiff_t c = 0; c < C; ++c) {                                       \
        T *restrict p = v + c * FCNN_WINOGRAD_CS;                             \
        FCNN_SIMD                                                             \
        for (ptrdiff_t t = 0; t < slots; ++t) {                               \
            T z[6][6];                                                        \
            /* B^T along each row's columns, then down the columns */         \
            for (int a = 0; a < 6; ++a) {                                     \
                const T *q = p + 6 * a * es + t;                              \
                FCNN_WINOGRAD_BT(T, q[0], q[es], q[2 * es], q[3 * es],        \
                                 q[4 * es], q[5 * es], z[a][0], z[a][1],      \
                                 z[a][2], z[a][3], z[a][4], z[a][5]);         \
            }                                                                 \
            for (int j = 0; j < 6; ++j)                                       \
                FCNN_WINOGRAD_BT(T, z[0][j], z[1][j], z[2][j], z[3][j],       \
                                 z[4][j], z[5][j], p[(0 + j) * es + t],       \
                                 p[(6 + j) * es + t], p[(12 + j) * es + t],   \
                                 p[(18 + j) * es + t], p[(24 + j) * es + t],  \
                                 p[(30 + j) * es + t]);                       \
        }                                                                     \
    }                                                                         \
}

/* The outputs of a chunk from M: A^T m A plus bias[f], rows and columns
 * past Ho or Wo dropped. The chunk's `rows` rows of ls slots are tile rows
 * ti0, ti0 + 1, ... counted on across samples of TH tile rows each; y is
 * the output (F, Ho, Wo) of the chunk's first sample. */
#define FCNN_DEFINE_WINOGRAD_OUTPUT(SUFFIX, T, ATTR)                           \
ATTR static void fcnn_winograd_output_##SUFFIX(                               \
    ptrdiff_t F, ptrdiff_t TH, ptrdiff_t ti0, ptrdiff_t rows, ptrdiff_t tj0,  \
    ptrdiff_t tj1, ptrdiff_t ls, const T *m, const T *bias, T *y,             \
    ptrdiff_t Ho, ptrdiff_t Wo)                                               \
{                                                                             \
    const ptrdiff_t es = FCNN_WINOGRAD_LDV;                                   \
    for (ptrdiff_t f = 0; f < F; ++f) {                                       \
        T b = bias ? bias[f] : (T)0;                                          \
        for (ptrdiff_t r = 0; r < rows; ++r) {                                \
            ptrdiff_t ti = (ti0 + r) % TH, sample = (ti0 + r) / TH;           \
            ptrdiff_t height = Ho - 4 * ti < 4 ? Ho - 4 * ti : 4;             \
            T *yr = y + ((sample * F + f) * Ho + 4 * ti) * Wo;                \
            for (ptrdiff_t tj = tj0; tj < tj1; ++tj) {                        \
                const T *p = m + f * FCNN_WINOGRAD_CS + r * ls + tj - tj0;    \
                T s[6][4], o[4][4];                                           \
                /* A^T along each row, then down the columns */               \
                for (int i = 0; i < 6; ++i) {                                 \
                    const T *q = p + 6 * i * es;                              \
                    FCNN_WINOGRAD_AT(T, q[0], q[es], q[2 * es], q[3 * es],    \
                                     q[4 * es], q[5 * es], s[i][0], s[i][1],  \
                                     s[i][2], s[i][3]);                       \
                }                                                             \
                for (int j = 0; j < 4; ++j)                                   \
                    FCNN_WINOGRAD_AT(T, s[0][j], s[1][j], s[2][j], s[3][j],   \
                                     s[4][j], s[5][j], o[0][j], o[1][j],      \
                                     o[2][j], o[3][j]);                       \
                ptrdiff_t width = Wo - 4 * tj < 4 ? Wo - 4 * tj : 4;          \
                for (ptrdiff_t a = 0; a < height; ++a)                        \
                    for (ptrdiff_t j = 0; j < width; ++j)                     \
                        yr[a * Wo + 4 * tj + j] = o[a][j] + b;                \
            }                                                                 \
        }                                                                     \
    }                                                                         \
}

/* The kernel gradient. Y = A^T [U * V] A is linear in U = G g G^T, so
 * the gradient of a loss with respect to U, summed over tiles, is
 *
 *     dU = sum over tiles of (A dY A^T) * V
 *
 * with dY a tile's 4 x 4 output gradients (zero past the outputs), and
 * the kernel's gradient is G^T dU G: 36 matrix products per pair of
 * channels, each summing over the tiles, and the two transforms. */

/* A = (A^T)^T applied to (d0, d1, d2, d3), into z0 .. z5. */
#define FCNN_WINOGRAD_A(T, d0, d1, d2, d3, z0, z1, z2, z3, z4, z5)             \
    do {                                                                      \
        T p_ = (d0) + (d2), q_ = (d1) + (d3);                                 \
        T r_ = (d0) + 4 * (d2), s_ = 2 * (d1) + 8 * (d3);                     \
        z0 = (d0);                                                            \
        z1 = p_ + q_;                                                         \
        z2 = p_ - q_;                                                         \
        z3 = r_ + s_;                                                         \
        z4 = r_ - s_;                                                         \
        z5 = (d3);                                                            \
    } while (0)

/* The output gradients of a chunk's tiles, before their transform:
 * z[f*FCNN_WINOGRAD_CS + (6a + b)*FCNN_WINOGRAD_LDV + slot] =
 * gy[f, 4ti + a, 4tj + b] for a, b < 4, zero past the outputs and in the
 * slots past a row's tiles (their products must add nothing). Rows of
 * slots as in the output transform: `rows` tile rows from ti0 on, counted
 * across samples of TH tile rows; gy is the chunk's first sample's
 * (F, Ho, Wo). */
#define FCNN_DEFINE_WINOGRAD_GRAD_GATHER(SUFFIX, T, ATTR)                      \
ATTR static void fcnn_winograd_grad_gather_##SUFFIX(                          \
    ptrdiff_t F, ptrdiff_t TH, ptrdiff_t ti0, ptrdiff_t rows, ptrdiff_t tj0,  \
    ptrdiff_t tj1, ptrdiff_t ls, const T *gy, ptrdiff_t Ho, ptrdiff_t Wo,     \
    T *z)                                                                     \
{                                                                             \
    const ptrdiff_t es = FCNN_WINOGRAD_LDV, n = tj1 - tj0;                    \
    for (ptrdiff_t f = 0; f < F; ++f)                                         \
        for (ptrdiff_t r = 0; r < rows; ++r) {                                \
            ptrdiff_t ti = (ti0 + r) % TH, sample = (ti0 + r) / TH;           \
            for (ptrdiff_t a = 0; a < 4; ++a) {                               \
                ptrdiff_t i = 4 * ti + a;                                     \
                int inside = i < Ho;                                          \
                const T *row = gy + ((sample * F + f) * Ho + (inside ? i : 0)) * Wo; \
                T *out = z + f * FCNN_WINOGRAD_CS + 6 * a * es + r * ls;      \
                for (ptrdiff_t b = 0; b < 4; ++b)                             \
                    for (ptrdiff_t t = 0; t < ls; ++t) {                      \
                        ptrdiff_t j = 4 * (tj0 + t) + b;                      \
                        out[b * es + t] = inside && t < n && j < Wo ? row[j] : (T)0; \
                    }                                                         \
            }                                                                 \
        }                                                                     \
}

/* Z = A dY A^T in place for the first `slots` slots of each filter. */
#define FCNN_DEFINE_WINOGRAD_GRAD_INPUT(SUFFIX, T, ATTR)                       \
ATTR static void fcnn_winograd_grad_input_##SUFFIX(ptrdiff_t F,               \
                                                   ptrdiff_t slots, T *z)     \
{                                                                             \
    const ptrdiff_t es = FCNN_WINOGRAD_LDV;                                   \
    for (ptrdiff_t f = 0; f < F; ++f) {                                       \
        T *restrict p = z + f * FCNN_WINOGRAD_CS;                             \
        FCNN_SIMD                                                             \
        for (ptrdiff_t t = 0; t < slots; ++t) {                               \
            T h[4][6];                                                        \
            /* A along each row's columns, then down the columns */           \
            for (int a = 0; a < 4; ++a) {                                     \
                const T *q = p + 6 * a * es + t;                              \
                FCNN_WINOGRAD_A(T, q[0], q[es], q[2 * es], q[3 * es],         \
                                h[a][0], h[a][1], h[a][2], h[a][3], h[a][4],  \
                                h[a][5]);                                     \
            }                                                                 \
            for (int j = 0; j < 6; ++j)                                       \
                FCNN_WINOGRAD_A(T, h[0][j], h[1][j], h[2][j], h[3][j],        \
                                p[(0 + j) * es + t], p[(6 + j) * es + t],     \
                                p[(12 + j) * es + t], p[(18 + j) * es + t],   \
                                p[(24 + j) * es + t], p[(30 + j) * es + t]);  \
        }                                                                     \
    }                                                                         \
}

/* The kernel gradient from dU: gw[f, c] = G^T dU[f, c] G, with dU's
 * element e of (f, c) at du[e*F*C + f*C + c]; in double, rounded once. */
#define FCNN_DEFINE_WINOGRAD_FILTER_GRAD(SUFFIX, T)                            \
static void fcnn_winograd_filter_grad_##SUFFIX(ptrdiff_t F, ptrdiff_t C,      \
                                               const T *du, T *gw)            \
{                                                                             \
    static const double G[6][3] = {                                           \
        {1.0 / 4, 0, 0}, {-1.0 / 6, -1.0 / 6, -1.0 / 6},                      \
        {-1.0 / 6, 1.0 / 6, -1.0 / 6}, {1.0 / 24, 1.0 / 12, 1.0 / 6},         \
        {1.0 / 24, -1.0 / 12, 1.0 / 6}, {0, 0, 1}};                           \
    for (ptrdiff_t fc = 0; fc < F * C; ++fc) {                                \
        double h[6][3];                                                       \
        for (int i = 0; i < 6; ++i)                                           \
            for (int b = 0; b < 3; ++b) {                                     \
                double s = 0;                                                 \
                for (int j = 0; j < 6; ++j)                                   \
                    s += (double)du[(6 * i + j) * F * C + fc] * G[j][b];      \
                h[i][b] = s;                                                  \
            }                                                                 \
        for (int a = 0; a < 3; ++a)                                           \
            for (int b = 0; b < 3; ++b) {                                     \
                double s = 0;                                                 \
                for (int i = 0; i < 6; ++i)                                   \
                    s += G[i][a] * h[i][b];                                   \
                gw[fc * 9 + 3 * a + b] = (T)s;                                \
            }                                                                 \
    }                                                                         \
}

FCNN_DEFINE_WINOGRAD_FILTER_GRAD(f32, float)
FCNN_DEFINE_WINOGRAD_FILTER_GRAD(f64, double)

#if FCNN_WINOGRAD_AVX512
#define FCNN_WINOGRAD_AVX512_ATTR __attribute__((target("avx512f")))
#include <immintrin.h>

/* The float32 transforms in AVX-512 intrinsics: 16 slots a vector, the
 * last vector of a chunk masked. */
#define FCNN_WINOGRAD_BT_PS(d0, d1, d2, d3, d4, d5, z0, z1, z2, z3, z4, z5)     \
    do {                                                                      \
        __m512 four_ = _mm512_set1_ps(4.0f), five_ = _mm512_set1_ps(5.0f);    \
        __m512 p_ = _mm512_fnmadd_ps(four_, d2, d4);                          \
        __m512 q_ = _mm512_fnmadd_ps(four_, d1, d3);                          \
        __m512 r_ = _mm512_sub_ps(d4, d2);                                    \
        __m512 u_ = _mm512_sub_ps(d3, d1), s_ = _mm512_add_ps(u_, u_);        \
        z0 = _mm512_fmadd_ps(four_, d0, _mm512_fnmadd_ps(five_, d2, d4));     \
        z1 = _mm512_add_ps(p_, q_);                                           \
        z2 = _mm512_sub_ps(p_, q_);                                           \
        z3 = _mm512_add_ps(r_, s_);                                           \
        z4 = _mm512_sub_ps(r_, s_);                                           \
        z5 = _mm512_fmadd_ps(four_, d1, _mm512_fnmadd_ps(five_, d3, d5));     \
    } while (0)

#define FCNN_WINOGRAD_AT_PS(m0, m1, m2, m3, m4, m5, y0, y1, y2, y3)             \
    do {                                                                      \
        __m512 p_ = _mm512_add_ps(m1, m2), q_ = _mm512_sub_ps(m1, m2);        \
        __m512 r_ = _mm512_add_ps(m3, m4), s_ = _mm512_sub_ps(m3, m4);        \
        y0 = _mm512_add_ps(_mm512_add_ps(m0, p_), r_);                        \
        y1 = _mm512_fmadd_ps(_mm512_set1_ps(2.0f), s_, q_);                   \
        y2 = _mm512_fmadd_ps(_mm512_set1_ps(4.0f), r_, p_);                   \
        y3 = _mm512_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(8.0f), s_, q_), m5); \
    } while (0)

/* Lanes lo .. hi - 1 of 16 (clamped to 0 .. 16). */
static inline __mmask16 fcnn_winograd_lanes(ptrdiff_t lo, ptrdiff_t hi)
{
    lo = lo < 0 ? 0 : lo;
    hi = hi > 16 ? 16 : hi;
    return hi <= lo ? (__mmask16)0
                    : (__mmask16)(((1u << hi) - 1u) & ~((1u << lo) - 1u));
}

/* The lanes k of six runs of a chunk's elements, q, q + LDV, ..., into d. */
FCNN_WINOGRAD_AVX512_ATTR static inline void fcnn_winograd_load6(
    __mmask16 k, const float *q, __m512 d[6])
{
    for (int i = 0; i < 6; ++i)
        d[i] = _mm512_maskz_loadu_ps(k, q + i * FCNN_WINOGRAD_LDV);
}

/* The gather a vector of 16 slots at a time: 64 columns of x split into
 * the phases 4k + b (b < 4) by two rounds of permutations, and the same
 * 64 columns moved on by one tile for b = 4 and 5. Where a chunk's rows
 * hold 4, 8 or 16 slots, a vector spans 4, 2 or 1 tile rows, each its own
 * row of x; longer rows go 16 slots at a time. */
FCNN_WINOGRAD_AVX512_ATTR static void fcnn_winograd_gather_avx512_f32(
    ptrdiff_t C, ptrdiff_t H, ptrdiff_t W, ptrdiff_t ph, ptrdiff_t pw,
    ptrdiff_t ti0, ptrdiff_t ti1, ptrdiff_t tj0, ptrdiff_t tj1, ptrdiff_t ls,
    const float *x, float *d)
{
    const ptrdiff_t es = FCNN_WINOGRAD_LDV;
    const __m512i even = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28,
                                           1, 5, 9, 13, 17, 21, 25, 29);
    const __m512i odd = _mm512_setr_epi32(2, 6, 10, 14, 18, 22, 26, 30,
                                          3, 7, 11, 15, 19, 23, 27, 31);
    /* tile rows a vector spans, and 16-column pieces of one row in it */
    const ptrdiff_t span = ls <= 16 && 16 % ls == 0 ? 16 / ls : 1;
    const ptrdiff_t pieces = 4 / span;
    const ptrdiff_t slots = (ti1 - ti0) * ls;
    /* the columns of x the chunk's tiles read */
    const ptrdiff_t lo = 4 * tj0 - pw > 0 ? 4 * tj0 - pw : 0;
    const ptrdiff_t hi = 4 * tj1 + 2 - pw < W ? 4 * tj1 + 2 - pw : W;
    const ptrdiff_t blocks = span > 1 ? 1 : (ls + 15) / 16;
    /* for each piece of each block of 16 slots along a row: its tile row
     * (from the vector's first), its first column of x, and the lanes of
     * it and of it moved on by a tile that lie in x and in the chunk */
    ptrdiff_t row_of[4], column[FCNN_WINOGRAD_LDV / 16][4];
    __mmask16 lanes[FCNN_WINOGRAD_LDV / 16][4], lanes_on[FCNN_WINOGRAD_LDV / 16][4];
    for (ptrdiff_t i = 0; i < 4; ++i) {
        row_of[i] = i / pieces;
        for (ptrdiff_t j = 0; j < blocks; ++j) {
            ptrdiff_t col = 4 * (tj0 + 16 * j) - pw + 16 * (i % pieces);
            column[j][i] = col;
            lanes[j][i] = fcnn_winograd_lanes(lo - col, hi - col);
            lanes_on[j][i] = fcnn_winograd_lanes(lo - col - 4, hi - col - 4);
        }
    }
    /* down each channel's rows in order, as x lies */
    for (ptrdiff_t c = 0; c < C; ++c)
        for (ptrdiff_t ti = ti0; ti < ti1; ti += span)
            for (ptrdiff_t a = 0; a < 6; ++a) {
                float *out = d + c * FCNN_WINOGRAD_CS + 6 * a * es;
                for (ptrdiff_t j = 0; j < blocks; ++j) {
                    ptrdiff_t t = 16 * j;
                    __m512 v[4], w[4];
                    for (ptrdiff_t i = 0; i < 4; ++i) {
                        ptrdiff_t h = 4 * (ti + row_of[i]) + a - ph;
                        v[i] = w[i] = _mm512_setzero_ps();
                        if (ti + row_of[i] < ti1 && h >= 0 && h < H) {
                            /* a vector's first or last lanes may lie outside
                             * x (masked off): its address is computed as an
                             * integer, so that no pointer leaves the array */
                            uintptr_t row = (uintptr_t)(x + (c * H + h) * W);
                            uintptr_t at = row + (uintptr_t)(column[j][i] * 4);
                            if (lanes[j][i])
                                v[i] = _mm512_maskz_loadu_ps(lanes[j][i], (const void *)at);
                            if (lanes_on[j][i])
                                w[i] = _mm512_maskz_loadu_ps(lanes_on[j][i],
                                                             (const void *)(at + 16));
                        }
                    }
                    __m512 e01 = _mm512_permutex2var_ps(v[0], even, v[1]);
                    __m512 o01 = _mm512_permutex2var_ps(v[0], odd, v[1]);
                    __m512 e23 = _mm512_permutex2var_ps(v[2], even, v[3]);
                    __m512 o23 = _mm512_permutex2var_ps(v[2], odd, v[3]);
                    __m512 f01 = _mm512_permutex2var_ps(w[0], even, w[1]);
                    __m512 f23 = _mm512_permutex2var_ps(w[2], even, w[3]);
                    __m512 p[6] = {_mm512_shuffle_f32x4(e01, e23, 0x44),
                                   _mm512_shuffle_f32x4(e01, e23, 0xee),
                                   _mm512_shuffle_f32x4(o01, o23, 0x44),
                                   _mm512_shuffle_f32x4(o01, o23, 0xee),
                                   _mm512_shuffle_f32x4(f01, f23, 0x44),
                                   _mm512_shuffle_f32x4(f01, f23, 0xee)};
                    ptrdiff_t slot = (ti - ti0) * ls + t;
                    __mmask16 k = fcnn_winograd_lanes(
                        0, (span > 1 ? slots : (ti - ti0 + 1) * ls) - slot);
                    for (int b = 0; b < 6; ++b)
                        _mm512_mask_storeu_ps(out + b * es + slot, k, p[b]);
                }
        }
}

FCNN_WINOGRAD_AVX512_ATTR static void fcnn_winograd_input_avx512_f32(
    ptrdiff_t C, ptrdiff_t slots, float *v)
{
    const ptrdiff_t es = FCNN_WINOGRAD_LDV;
    for (ptrdiff_t c = 0; c < C; ++c) {
        float *p = v + c * FCNN_WINOGRAD_CS;
        for (ptrdiff_t t = 0; t < slots; t += 16) {
            __mmask16 k = fcnn_winograd_lanes(0, slots - t);
            __m512 z[6][6];
            for (int a = 0; a < 6; ++a) {
                __m512 d[6];
                fcnn_winograd_load6(k, p + 6 * a * es + t, d);
                FCNN_WINOGRAD_BT_PS(d[0], d[1], d[2], d[3], d[4], d[5], z[a][0],
                                    z[a][1], z[a][2], z[a][3], z[a][4], z[a][5]);
            }
            float *o = p + t;
            for (int j = 0; j < 6; ++j) {
                __m512 o0, o1, o2, o3, o4, o5;
                FCNN_WINOGRAD_BT_PS(z[0][j], z[1][j], z[2][j], z[3][j], z[4][j],
                                    z[5][j], o0, o1, o2, o3, o4, o5);
                _mm512_mask_storeu_ps(o + (0 + j) * es, k, o0);
                _mm512_mask_storeu_ps(o + (6 + j) * es, k, o1);
                _mm512_mask_storeu_ps(o + (12 + j) * es, k, o2);
                _mm512_mask_storeu_ps(o + (18 + j) * es, k, o3);
                _mm512_mask_storeu_ps(o + (24 + j) * es, k, o4);
                _mm512_mask_storeu_ps(o + (30 + j) * es, k, o5);
            }
        }
    }
}

/* 16 slots at a time; a tile's four columns of an output row put side by
 * side (pairs of columns interleaved as floats, then the pairs as
 * doubles), each group of four tiles stored where its row of y is. */
FCNN_WINOGRAD_AVX512_ATTR static void fcnn_winograd_output_avx512_f32(
    ptrdiff_t F, ptrdiff_t TH, ptrdiff_t ti0, ptrdiff_t rows, ptrdiff_t tj0,
    ptrdiff_t tj1, ptrdiff_t ls, const float *m, const float *bias, float *y,
    ptrdiff_t Ho, ptrdiff_t Wo)
{
    const ptrdiff_t es = FCNN_WINOGRAD_LDV, slots = rows * ls;
    const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19,
                                         4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27,
                                         12, 28, 13, 29, 14, 30, 15, 31);
    const __m512i lo2 = _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11);
    const __m512i hi2 = _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15);
    /* columns of y a tile row of the chunk covers */
    ptrdiff_t right = 4 * tj1 < Wo ? 4 * tj1 : Wo;
    for (ptrdiff_t t = 0; t < slots; t += 16) {
        __mmask16 k = fcnn_winograd_lanes(0, slots - t);
        /* where each group of four slots goes in filter 0's output, its
         * rows inside Ho and its columns inside the chunk's */
        ptrdiff_t offset[4], height[4];
        __mmask16 columns[4];
        for (int v = 0; v < 4; ++v) {
            ptrdiff_t slot = t + 4 * v, r = slot / ls, tj = tj0 + slot % ls;
            ptrdiff_t ti = (ti0 + r) % TH, sample = (ti0 + r) / TH;
            offset[v] = (sample * F * Ho + 4 * ti) * Wo + 4 * tj;
            height[v] = slot >= slots ? 0 : Ho - 4 * ti < 4 ? Ho - 4 * ti : 4;
            columns[v] = fcnn_winograd_lanes(0, right - 4 * tj);
        }
        for (ptrdiff_t f = 0; f < F; ++f) {
            __m512 b = _mm512_set1_ps(bias ? bias[f] : 0.0f);
            const float *mf = m + f * FCNN_WINOGRAD_CS;
            __m512 s[6][4], o[4][4];
            for (int i = 0; i < 6; ++i) {
                __m512 d[6];
                fcnn_winograd_load6(k, mf + 6 * i * es + t, d);
                FCNN_WINOGRAD_AT_PS(d[0], d[1], d[2], d[3], d[4], d[5], s[i][0],
                                    s[i][1], s[i][2], s[i][3]);
            }
            for (int j = 0; j < 4; ++j)
                FCNN_WINOGRAD_AT_PS(s[0][j], s[1][j], s[2][j], s[3][j], s[4][j],
                                    s[5][j], o[0][j], o[1][j], o[2][j], o[3][j]);
            float *yf = y + f * Ho * Wo;
            for (int a = 0; a < 4; ++a) {
                __m512 c0 = _mm512_add_ps(o[a][0], b), c1 = _mm512_add_ps(o[a][1], b);
                __m512 c2 = _mm512_add_ps(o[a][2], b), c3 = _mm512_add_ps(o[a][3], b);
                __m512d e0 = _mm512_castps_pd(_mm512_permutex2var_ps(c0, lo, c1));
                __m512d e1 = _mm512_castps_pd(_mm512_permutex2var_ps(c0, hi, c1));
                __m512d g0 = _mm512_castps_pd(_mm512_permutex2var_ps(c2, lo, c3));
                __m512d g1 = _mm512_castps_pd(_mm512_permutex2var_ps(c2, hi, c3));
                __m512 quad[4] = {
                    _mm512_castpd_ps(_mm512_permutex2var_pd(e0, lo2, g0)),
                    _mm512_castpd_ps(_mm512_permutex2var_pd(e0, hi2, g0)),
                    _mm512_castpd_ps(_mm512_permutex2var_pd(e1, lo2, g1)),
                    _mm512_castpd_ps(_mm512_permutex2var_pd(e1, hi2, g1))};
                /* quad[v]: slots t + 4v .. t + 4v + 3, in one row of slots */
                for (int v = 0; v < 4; ++v)
                    if (a < height[v] && columns[v])
                        _mm512_mask_storeu_ps(yf + offset[v] + a * Wo, columns[v],
                                              quad[v]);
            }
        }
    }
}

/* The output gradients' gather 16 slots at a time: 64 columns of a row of
 * gy split into the phases 4k + b by two rounds of permutations (as in
 * the input's gather), the columns past Wo and the slots past the row's
 * tiles loaded as zeros. */
FCNN_WINOGRAD_AVX512_ATTR static void fcnn_winograd_grad_gather_avx512_f32(
    ptrdiff_t F, ptrdiff_t TH, ptrdiff_t ti0, ptrdiff_t rows, ptrdiff_t tj0,
    ptrdiff_t tj1, ptrdiff_t ls, const float *gy, ptrdiff_t Ho, ptrdiff_t Wo,
    float *z)
{
    const ptrdiff_t es = FCNN_WINOGRAD_LDV, n = tj1 - tj0;
    const __m512i even = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28,
                                           1, 5, 9, 13, 17, 21, 25, 29);
    const __m512i odd = _mm512_setr_epi32(2, 6, 10, 14, 18, 22, 26, 30,
                                          3, 7, 11, 15, 19, 23, 27, 31);
    const __m512i low = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7,
                                          16, 17, 18, 19, 20, 21, 22, 23);
    const __m512i high = _mm512_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15,
                                           24, 25, 26, 27, 28, 29, 30, 31);
    for (ptrdiff_t f = 0; f < F; ++f)
        for (ptrdiff_t r = 0; r < rows; ++r) {
            ptrdiff_t ti = (ti0 + r) % TH, sample = (ti0 + r) / TH;
            for (ptrdiff_t a = 0; a < 4; ++a) {
                ptrdiff_t i = 4 * ti + a;
                const float *row = gy + ((sample * F + f) * Ho + (i < Ho ? i : 0)) * Wo;
                float *out = z + f * FCNN_WINOGRAD_CS + 6 * a * es + r * ls;
                for (ptrdiff_t t0 = 0; t0 < ls; t0 += 16) {
                    ptrdiff_t c0 = 4 * (tj0 + t0);
                    /* columns of this block that are outputs of the chunk */
                    ptrdiff_t cols = i < Ho ? Wo - c0 : 0;
                    if (cols > 4 * (n - t0))
                        cols = 4 * (n - t0);
                    __m512 v[4];
                    for (int k = 0; k < 4; ++k)
                        v[k] = _mm512_maskz_loadu_ps(
                            fcnn_winograd_lanes(0, cols - 16 * k),
                            (const float *)((uintptr_t)row + (uintptr_t)(c0 + 16 * k) * sizeof(float)));
                    __m512 p0 = _mm512_permutex2var_ps(v[0], even, v[1]);
                    __m512 p1 = _mm512_permutex2var_ps(v[0], odd, v[1]);
                    __m512 q0 = _mm512_permutex2var_ps(v[2], even, v[3]);
                    __m512 q1 = _mm512_permutex2var_ps(v[2], odd, v[3]);
                    __mmask16 keep = fcnn_winograd_lanes(0, ls - t0);
                    _mm512_mask_storeu_ps(out + t0, keep, _mm512_permutex2var_ps(p0, low, q0));
                    _mm512_mask_storeu_ps(out + es + t0, keep, _mm512_permutex2var_ps(p0, high, q0));
                    _mm512_mask_storeu_ps(out + 2 * es + t0, keep, _mm512_permutex2var_ps(p1, low, q1));
                    _mm512_mask_storeu_ps(out + 3 * es + t0, keep, _mm512_permutex2var_ps(p1, high, q1));
                }
            }
        }
}
#endif

FCNN_DEFINE_WINOGRAD_FILTER(generic_f32, float, )
FCNN_DEFINE_WINOGRAD_FILTER(generic_f64, double, )
FCNN_DEFINE_WINOGRAD_GATHER(generic_f32, float, )
FCNN_DEFINE_WINOGRAD_GATHER(generic_f64, double, )
FCNN_DEFINE_WINOGRAD_INPUT(generic_f32, float, )
FCNN_DEFINE_WINOGRAD_INPUT(generic_f64, double, )
FCNN_DEFINE_WINOGRAD_OUTPUT(generic_f32, float, )
FCNN_DEFINE_WINOGRAD_OUTPUT(generic_f64, double, )
FCNN_DEFINE_WINOGRAD_GRAD_GATHER(generic_f32, float, )
FCNN_DEFINE_WINOGRAD_GRAD_GATHER(generic_f64, double, )
FCNN_DEFINE_WINOGRAD_GRAD_INPUT(generic_f32, float, )
FCNN_DEFINE_WINOGRAD_GRAD_INPUT(generic_f64, double, )
#if FCNN_WINOGRAD_AVX512
FCNN_DEFINE_WINOGRAD_FILTER(avx512_f32, float, FCNN_WINOGRAD_AVX512_ATTR)
FCNN_DEFINE_WINOGRAD_FILTER(avx512_f64, double, FCNN_WINOGRAD_AVX512_ATTR)
FCNN_DEFINE_WINOGRAD_GATHER(avx512_f64, double, FCNN_WINOGRAD_AVX512_ATTR)
FCNN_DEFINE_WINOGRAD_INPUT(avx512_f64, double, FCNN_WINOGRAD_AVX512_ATTR)
FCNN_DEFINE_WINOGRAD_OUTPUT(avx512_f64, double, FCNN_WINOGRAD_AVX512_ATTR)
FCNN_DEFINE_WINOGRAD_GRAD_GATHER(avx512_f64, double, FCNN_WINOGRAD_AVX512_ATTR)
FCNN_DEFINE_WINOGRAD_GRAD_INPUT(avx512_f32, float, FCNN_WINOGRAD_AVX512_ATTR)
FCNN_DEFINE_WINOGRAD_GRAD_INPUT(avx512_f64, double, FCNN_WINOGRAD_AVX512_ATTR)
#endif

#define FCNN_DECLARE_WINOGRAD_POINTERS(SUFFIX, T)                               \
    typedef void (*fcnn_winograd_filter_##SUFFIX##_t)(                          \
        ptrdiff_t, ptrdiff_t, const T *, ptrdiff_t, ptrdiff_t, ptrdiff_t,       \
        ptrdiff_t, T *);                                                        \
    typedef void (*fcnn_winograd_gather_##SUFFIX##_t)(                          \
        ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,       \
        ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, const T *, T *);            \
    typedef void (*fcnn_winograd_input_##SUFFIX##_t)(ptrdiff_t, ptrdiff_t, T *); \
    typedef void (*fcnn_winograd_output_##SUFFIX##_t)(                          \
        ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,       \
        ptrdiff_t, const T *, const T *, T *, ptrdiff_t, ptrdiff_t);            \
    static fcnn_winograd_filter_##SUFFIX##_t fcnn_winograd_filter_##SUFFIX =    \
        fcnn_winograd_filter_generic_##SUFFIX;                                  \
    static fcnn_winograd_gather_##SUFFIX##_t fcnn_winograd_gather_##SUFFIX =    \
        fcnn_winograd_gather_generic_##SUFFIX;                                  \
    static fcnn_winograd_input_##SUFFIX##_t fcnn_winograd_input_##SUFFIX =      \
        fcnn_winograd_input_generic_##SUFFIX;                                   \
    static fcnn_winograd_output_##SUFFIX##_t fcnn_winograd_output_##SUFFIX =    \
        fcnn_winograd_output_generic_##SUFFIX;                                  \
    typedef void (*fcnn_winograd_grad_gather_##SUFFIX##_t)(                     \
        ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,       \
        ptrdiff_t, const T *, ptrdiff_t, ptrdiff_t, T *);                       \
    typedef void (*fcnn_winograd_grad_input_##SUFFIX##_t)(ptrdiff_t, ptrdiff_t, T *); \
    static fcnn_winograd_grad_gather_##SUFFIX##_t                               \
        fcnn_winograd_grad_gather_##SUFFIX = fcnn_winograd_grad_gather_generic_##SUFFIX; \
    static fcnn_winograd_grad_input_##SUFFIX##_t                                \
        fcnn_winograd_grad_input_##SUFFIX = fcnn_winograd_grad_input_generic_##SUFFIX;

FCNN_DECLARE_WINOGRAD_POINTERS(f32, float)
FCNN_DECLARE_WINOGRAD_POINTERS(f64, double)

/* The AVX-512 transforms when want_avx512 and the CPU has AVX-512F, else
 * the portable ones; returns 1 for AVX-512. */
static int fcnn_winograd_select(int want_avx512)
{
    fcnn_winograd_filter_f32 = fcnn_winograd_filter_generic_f32;
    fcnn_winograd_filter_f64 = fcnn_winograd_filter_generic_f64;
    fcnn_winograd_gather_f32 = fcnn_winograd_gather_generic_f32;
    fcnn_winograd_gather_f64 = fcnn_winograd_gather_generic_f64;
    fcnn_winograd_input_f32 = fcnn_winograd_input_generic_f32;
    fcnn_winograd_input_f64 = fcnn_winograd_input_generic_f64;
    fcnn_winograd_output_f32 = fcnn_winograd_output_generic_f32;
    fcnn_winograd_output_f64 = fcnn_winograd_output_generic_f64;
    fcnn_winograd_grad_gather_f32 = fcnn_winograd_grad_gather_generic_f32;
    fcnn_winograd_grad_gather_f64 = fcnn_winograd_grad_gather_generic_f64;
    fcnn_winograd_grad_input_f32 = fcnn_winograd_grad_input_generic_f32;
    fcnn_winograd_grad_input_f64 = fcnn_winograd_grad_input_generic_f64;
#if FCNN_WINOGRAD_AVX512
    if (want_avx512) {
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f")) {
            fcnn_winograd_filter_f32 = fcnn_winograd_filter_avx512_f32;
            fcnn_winograd_filter_f64 = fcnn_winograd_filter_avx512_f64;
            fcnn_winograd_gather_f32 = fcnn_winograd_gather_avx512_f32;
            fcnn_winograd_gather_f64 = fcnn_winograd_gather_avx512_f64;
            fcnn_winograd_input_f32 = fcnn_winograd_input_avx512_f32;
            fcnn_winograd_input_f64 = fcnn_winograd_input_avx512_f64;
            fcnn_winograd_output_f32 = fcnn_winograd_output_avx512_f32;
            fcnn_winograd_output_f64 = fcnn_winograd_output_avx512_f64;
            fcnn_winograd_grad_gather_f32 = fcnn_winograd_grad_gather_avx512_f32;
            fcnn_winograd_grad_gather_f64 = fcnn_winograd_grad_gather_avx512_f64;
            fcnn_winograd_grad_input_f32 = fcnn_winograd_grad_input_avx512_f32;
            fcnn_winograd_grad_input_f64 = fcnn_winograd_grad_input_avx512_f64;
            return 1;
        }
    }
#else
    (void)want_avx512;
#endif
    return 0;
}

#endif
