/*
 * The transforms of Winograd's minimal filtering F(2x2, 3x3) (Lavin and
 * Gray, "Fast Algorithms for Convolutional Neural Networks", 2016), for
 * src/winograd.pyx. A 2 x 2 tile of outputs of a 3 x 3 correlation is
 *
 *     Y = A^T [ (G g G^T) * (B^T d B) ] A
 *
 * with d the tile's 4 x 4 window of the input, g the 3 x 3 kernel, * the
 * element-wise product and
 *
 *     B^T = | 1  0 -1  0 |    G = | 1    0    0   |    A^T = | 1 1  1  0 |
 *           | 0  1  1  0 |        | 1/2  1/2  1/2 |          | 0 1 -1 -1 |
 *           | 0 -1  1  0 |        | 1/2 -1/2  1/2 |
 *           | 0  1  0 -1 |        | 0    0    1   |
 *
 * Summed over input channels, each of the 16 element positions e = 4*i + j
 * is one matrix product, U_e (F x C) . V_e (C x tiles): 16 multiplications
 * per tile and channel pair where the correlation does 36. The same
 * function in exact arithmetic; the sums run in another order.
 *
 * The input is read from a frame holding one padded sample with each row's
 * columns split into their two phases: padded row h of channel c, column
 * 2q + r, at frame[((c*Hp + h)*2 + r)*Wq + q]. A tile's four columns
 * 2tj .. 2tj + 3 are then E[tj], O[tj], E[tj + 1], O[tj + 1] of the row's
 * even (E) and odd (O) phases: contiguous runs over the tiles of a row, in
 * vectors.
 *
 * Each function is defined for float and double; those that run for every
 * sample are compiled twice, for AVX-512 and for any x86-64 (or other)
 * CPU, and fcnn_winograd_select picks one set at run time, as the gemm
 * module picks its micro-kernel.
 */
#ifndef FASTCNN_WINOGRAD_H
#define FASTCNN_WINOGRAD_H

#include <stddef.h>
#include <string.h>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define FCNN_WINOGRAD_AVX512 1
#else
#define FCNN_WINOGRAD_AVX512 0
#endif

/* The transforms' loops over tiles read and write a dozen runs that never
 * overlap; too many for the compiler to check at run time before it
 * vectorises them, so it is told. */
#if defined(_MSC_VER) && !defined(restrict)
#define restrict __restrict
#endif
#if defined(_OPENMP) && !defined(_MSC_VER)
#define FCNN_SIMD _Pragma("omp simd")
#else
#define FCNN_SIMD
#endif

/* u[(e*F + f)*C + c] = (G g G^T)[i][j] for e = 4i + j, g = w[f, c]; in
 * double, rounded once. */
#define FCNN_DEFINE_WINOGRAD_FILTER(SUFFIX, T)                                 \
static void fcnn_winograd_filter_##SUFFIX(ptrdiff_t F, ptrdiff_t C,           \
                                          const T *w, T *u)                   \
{                                                                             \
    for (ptrdiff_t f = 0; f < F; ++f)                                         \
        for (ptrdiff_t c = 0; c < C; ++c) {                                   \
            const T *g = w + (f * C + c) * 9;                                 \
            double t[4][3];                                                   \
            for (int b = 0; b < 3; ++b) {                                     \
                t[0][b] = g[b];                                               \
                t[1][b] = 0.5 * ((double)g[b] + g[3 + b] + g[6 + b]);         \
                t[2][b] = 0.5 * ((double)g[b] - g[3 + b] + g[6 + b]);         \
                t[3][b] = g[6 + b];                                           \
            }                                                                 \
            for (int i = 0; i < 4; ++i) {                                     \
                double r[4] = {t[i][0], 0.5 * (t[i][0] + t[i][1] + t[i][2]),  \
                               0.5 * (t[i][0] - t[i][1] + t[i][2]), t[i][2]}; \
                for (int j = 0; j < 4; ++j)                                   \
                    u[((4 * i + j) * F + f) * C + c] = (T)r[j];               \
            }                                                                 \
        }                                                                     \
}

/* One padded sample x (C, H, W) into a zeroed phase-split frame, ph rows
 * above and pw columns left of it; the padding is never written. The
 * layout is that of correlation.pyx's interleave_group for one sample at
 * column stride 2; this copy moves a vector of each phase at a time. */
#define FCNN_DEFINE_WINOGRAD_FRAME(SUFFIX, T, ATTR)                            \
ATTR static void fcnn_winograd_frame_##SUFFIX(ptrdiff_t C, ptrdiff_t H,       \
                                         ptrdiff_t W, ptrdiff_t ph,           \
                                         ptrdiff_t pw, ptrdiff_t Hp,          \
                                         ptrdiff_t Wq, const T *x, T *frame)  \
{                                                                             \
    /* input column w sits in phase (w + pw) % 2 at (w + pw) / 2 */           \
    ptrdiff_t w_even = pw & 1, n_even = (W - w_even + 1) / 2;                 \
    ptrdiff_t n_odd = (W - (1 - w_even) + 1) / 2;                             \
    for (ptrdiff_t c = 0; c < C; ++c)                                         \
        for (ptrdiff_t h = 0; h < H; ++h) {                                   \
            const T *src = x + (c * H + h) * W;                               \
            T *even = frame + ((c * Hp + h + ph) * 2) * Wq + (pw + 1) / 2;    \
            T *odd = frame + ((c * Hp + h + ph) * 2 + 1) * Wq + pw / 2;       \
            FCNN_SIMD                                                         \
            for (ptrdiff_t q = 0; q < n_even; ++q)                            \
                even[q] = src[2 * q + w_even];                                \
            FCNN_SIMD                                                         \
            for (ptrdiff_t q = 0; q < n_odd; ++q)                             \
                odd[q] = src[2 * q + 1 - w_even];                             \
        }                                                                     \
}

/* The scratch layout of a chunk's transformed tiles, V (C x 16 x tiles) and
 * M (F x 16 x tiles): element e of channel c (or filter f), tile t of the
 * chunk at [c*FCNN_WINOGRAD_CS + e*FCNN_WINOGRAD_LDV + t]. A chunk holds at
 * most FCNN_WINOGRAD_LDV tiles. Constant strides let the transforms reach
 * their 16 runs from one pointer; the products read matrix e's row c
 * (FCNN_WINOGRAD_CS apart) in place. The 16 values a channel's stride has
 * beyond 16 runs keep those rows out of one cache set (a multiple of 4 KiB
 * apart, every row of a product would fall into the same one). */
#define FCNN_WINOGRAD_LDV 128
#define FCNN_WINOGRAD_CS (16 * FCNN_WINOGRAD_LDV + 16)

/* V for the chunk of tiles (ti, tj), ti0 <= ti < ti1, tj0 <= tj < tj1,
 * numbered row by row: element e = 4i + j of tile t is (B^T d B)[i][j]. */
#define FCNN_DEFINE_WINOGRAD_INPUT(SUFFIX, T, ATTR)                            \
ATTR static void fcnn_winograd_input_##SUFFIX(ptrdiff_t C, ptrdiff_t Hp,      \
                                              ptrdiff_t Wq, ptrdiff_t ti0,    \
                                              ptrdiff_t ti1, ptrdiff_t tj0,   \
                                              ptrdiff_t tj1, const T *frame,  \
                                              T *v)                           \
{                                                                             \
    const ptrdiff_t es = FCNN_WINOGRAD_LDV, n = tj1 - tj0;                    \
    for (ptrdiff_t c = 0; c < C; ++c)                                         \
        for (ptrdiff_t ti = ti0; ti < ti1; ++ti) {                            \
            const T *r0 = frame + ((c * Hp + 2 * ti) * 2) * Wq + tj0;         \
            const T *r1 = r0 + 2 * Wq, *r2 = r0 + 4 * Wq, *r3 = r0 + 6 * Wq;  \
            T *out = v + c * FCNN_WINOGRAD_CS + (ti - ti0) * n;               \
            FCNN_SIMD                                                         \
            for (ptrdiff_t tj = 0; tj < n; ++tj) {                            \
                /* B^T along each row's columns: z_a = d[a] B */              \
                T z00 = r0[tj] - r0[tj + 1], z01 = r0[Wq + tj] + r0[tj + 1];  \
                T z02 = r0[tj + 1] - r0[Wq + tj];                             \
                T z03 = r0[Wq + tj] - r0[Wq + tj + 1];                        \
                T z10 = r1[tj] - r1[tj + 1], z11 = r1[Wq + tj] + r1[tj + 1];  \
                T z12 = r1[tj + 1] - r1[Wq + tj];                             \
                T z13 = r1[Wq + tj] - r1[Wq + tj + 1];                        \
                T z20 = r2[tj] - r2[tj + 1], z21 = r2[Wq + tj] + r2[tj + 1];  \
                T z22 = r2[tj + 1] - r2[Wq + tj];                             \
                T z23 = r2[Wq + tj] - r2[Wq + tj + 1];                        \
                T z30 = r3[tj] - r3[tj + 1], z31 = r3[Wq + tj] + r3[tj + 1];  \
                T z32 = r3[tj + 1] - r3[Wq + tj];                             \
                T z33 = r3[Wq + tj] - r3[Wq + tj + 1];                        \
                /* then down the columns: B^T z */                            \
                out[0 * es + tj] = z00 - z20;                                 \
                out[1 * es + tj] = z01 - z21;                                 \
                out[2 * es + tj] = z02 - z22;                                 \
                out[3 * es + tj] = z03 - z23;                                 \
                out[4 * es + tj] = z10 + z20;                                 \
                out[5 * es + tj] = z11 + z21;                                 \
                out[6 * es + tj] = z12 + z22;                                 \
                out[7 * es + tj] = z13 + z23;                                 \
                out[8 * es + tj] = z20 - z10;                                 \
                out[9 * es + tj] = z21 - z11;                                 \
                out[10 * es + tj] = z22 - z12;                                \
                out[11 * es + tj] = z23 - z13;                                \
                out[12 * es + tj] = z10 - z30;                                \
                out[13 * es + tj] = z11 - z31;                                \
                out[14 * es + tj] = z12 - z32;                                \
                out[15 * es + tj] = z13 - z33;                                \
            }                                                                 \
        }                                                                     \
}

/* y (F, Ho, Wo) for a chunk of tiles (as the input's) from M: A^T m A plus
 * bias[f]; a tile's second row or column is dropped where it falls past
 * Ho or Wo. */
#define FCNN_WINOGRAD_TILE_OUTPUT(T, in, tj, b)                                \
    T m0 = in[0 * es + tj], m1 = in[1 * es + tj];                             \
    T m2 = in[2 * es + tj], m3 = in[3 * es + tj];                             \
    T m4 = in[4 * es + tj], m5 = in[5 * es + tj];                             \
    T m6 = in[6 * es + tj], m7 = in[7 * es + tj];                             \
    T m8 = in[8 * es + tj], m9 = in[9 * es + tj];                             \
    T m10 = in[10 * es + tj], m11 = in[11 * es + tj];                         \
    T m12 = in[12 * es + tj], m13 = in[13 * es + tj];                         \
    T m14 = in[14 * es + tj], m15 = in[15 * es + tj];                         \
    /* A^T down the columns, then along the rows */                           \
    T s0 = m0 + m4 + m8, s1 = m1 + m5 + m9;                                   \
    T s2 = m2 + m6 + m10, s3 = m3 + m7 + m11;                                 \
    T t0 = m4 - m8 - m12, t1 = m5 - m9 - m13;                                 \
    T t2 = m6 - m10 - m14, t3 = m7 - m11 - m15;                               \
    T y00 = s0 + s1 + s2 + b, y01 = s1 - s2 - s3 + b;                         \
    T y10 = t0 + t1 + t2 + b, y11 = t1 - t2 - t3 + b;                         \
    (void)y01; (void)y10; (void)y11

#define FCNN_DEFINE_WINOGRAD_OUTPUT(SUFFIX, T, ATTR)                           \
ATTR static void fcnn_winograd_output_##SUFFIX(ptrdiff_t F, ptrdiff_t ti0,    \
                                               ptrdiff_t ti1, ptrdiff_t tj0,  \
                                               ptrdiff_t tj1, const T *m,     \
                                               const T *bias, T *y,           \
                                               ptrdiff_t Ho, ptrdiff_t Wo)    \
{                                                                             \
    const ptrdiff_t es = FCNN_WINOGRAD_LDV, n = tj1 - tj0;                    \
    /* tiles of the chunk's rows with both columns inside Wo */               \
    ptrdiff_t pairs = (Wo / 2 < tj1 ? Wo / 2 : tj1) - tj0;                    \
    for (ptrdiff_t f = 0; f < F; ++f)                                         \
        for (ptrdiff_t ti = ti0; ti < ti1; ++ti) {                            \
            const T *in = m + f * FCNN_WINOGRAD_CS + (ti - ti0) * n;          \
            T *restrict y0 = y + (f * Ho + 2 * ti) * Wo + 2 * tj0;            \
            T b = bias ? bias[f] : (T)0;                                      \
            if (2 * ti + 1 < Ho) {                                            \
                T *restrict y1 = y0 + Wo;                                     \
                FCNN_SIMD                                                     \
                for (ptrdiff_t tj = 0; tj < pairs; ++tj) {                    \
                    FCNN_WINOGRAD_TILE_OUTPUT(T, in, tj, b);                  \
                    y0[2 * tj] = y00;                                         \
                    y0[2 * tj + 1] = y01;                                     \
                    y1[2 * tj] = y10;                                         \
                    y1[2 * tj + 1] = y11;                                     \
                }                                                             \
                if (pairs < n) {                                              \
                    FCNN_WINOGRAD_TILE_OUTPUT(T, in, pairs, b);               \
                    y0[2 * pairs] = y00;                                      \
                    y1[2 * pairs] = y10;                                      \
                }                                                             \
            } else {                                                          \
                FCNN_SIMD                                                     \
                for (ptrdiff_t tj = 0; tj < pairs; ++tj) {                    \
                    FCNN_WINOGRAD_TILE_OUTPUT(T, in, tj, b);                  \
                    y0[2 * tj] = y00;                                         \
                    y0[2 * tj + 1] = y01;                                     \
                }                                                             \
                if (pairs < n) {                                              \
                    FCNN_WINOGRAD_TILE_OUTPUT(T, in, pairs, b);               \
                    y0[2 * pairs] = y00;                                      \
                }                                                             \
            }                                                                 \
        }                                                                     \
}

#if FCNN_WINOGRAD_AVX512
#define FCNN_WINOGRAD_AVX512_ATTR __attribute__((target("avx512f")))
#include <immintrin.h>

/* The float32 transforms in AVX-512 intrinsics: 16 tiles a vector, the
 * last vector of a row masked. (The compiler's vectorisation of the
 * loops above kept reloading the 24 row pointers from the stack.) */
FCNN_WINOGRAD_AVX512_ATTR static void fcnn_winograd_input_avx512_f32(
    ptrdiff_t C, ptrdiff_t Hp, ptrdiff_t Wq, ptrdiff_t ti0, ptrdiff_t ti1,
    ptrdiff_t tj0, ptrdiff_t tj1, const float *frame, float *v)
{
    const ptrdiff_t es = FCNN_WINOGRAD_LDV, n = tj1 - tj0;
    for (ptrdiff_t c = 0; c < C; ++c)
        for (ptrdiff_t ti = ti0; ti < ti1; ++ti) {
            const float *r = frame + ((c * Hp + 2 * ti) * 2) * Wq + tj0;
            float *out = v + c * FCNN_WINOGRAD_CS + (ti - ti0) * n;
            for (ptrdiff_t tj = 0; tj < n; tj += 16) {
                __mmask16 k = n - tj >= 16 ? (__mmask16)0xffff
                                           : (__mmask16)((1u << (n - tj)) - 1u);
                __m512 z[4][4];
                for (int a = 0; a < 4; ++a) {
                    const float *e = r + 2 * a * Wq + tj, *o = e + Wq;
                    __m512 e0 = _mm512_maskz_loadu_ps(k, e);
                    __m512 e1 = _mm512_maskz_loadu_ps(k, e + 1);
                    __m512 o0 = _mm512_maskz_loadu_ps(k, o);
                    __m512 o1 = _mm512_maskz_loadu_ps(k, o + 1);
                    z[a][0] = _mm512_sub_ps(e0, e1);
                    z[a][1] = _mm512_add_ps(o0, e1);
                    z[a][2] = _mm512_sub_ps(e1, o0);
                    z[a][3] = _mm512_sub_ps(o0, o1);
                }
                float *d = out + tj;
                for (int j = 0; j < 4; ++j) {
                    _mm512_mask_storeu_ps(d + (0 + j) * es, k, _mm512_sub_ps(z[0][j], z[2][j]));
                    _mm512_mask_storeu_ps(d + (4 + j) * es, k, _mm512_add_ps(z[1][j], z[2][j]));
                    _mm512_mask_storeu_ps(d + (8 + j) * es, k, _mm512_sub_ps(z[2][j], z[1][j]));
                    _mm512_mask_storeu_ps(d + (12 + j) * es, k, _mm512_sub_ps(z[1][j], z[3][j]));
                }
            }
        }
}

FCNN_WINOGRAD_AVX512_ATTR static void fcnn_winograd_output_avx512_f32(
    ptrdiff_t F, ptrdiff_t ti0, ptrdiff_t ti1, ptrdiff_t tj0, ptrdiff_t tj1,
    const float *m, const float *bias, float *y, ptrdiff_t Ho, ptrdiff_t Wo)
{
    const ptrdiff_t es = FCNN_WINOGRAD_LDV, n = tj1 - tj0;
    /* output columns of the chunk: 2 a tile, the last one cut at Wo */
    ptrdiff_t cols = (2 * tj1 < Wo ? 2 * tj1 : Wo) - 2 * tj0;
    const __m512i lo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4,
                                        19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i hi = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12,
                                        27, 11, 26, 10, 25, 9, 24, 8);
    for (ptrdiff_t f = 0; f < F; ++f) {
        __m512 b = _mm512_set1_ps(bias ? bias[f] : 0.0f);
        for (ptrdiff_t ti = ti0; ti < ti1; ++ti) {
            const float *in = m + f * FCNN_WINOGRAD_CS + (ti - ti0) * n;
            float *y0 = y + (f * Ho + 2 * ti) * Wo + 2 * tj0;
            int second = 2 * ti + 1 < Ho;
            for (ptrdiff_t tj = 0; tj < n; tj += 16) {
                __mmask16 k = n - tj >= 16 ? (__mmask16)0xffff
                                           : (__mmask16)((1u << (n - tj)) - 1u);
                __m512 s[4], t[4];
                for (int j = 0; j < 4; ++j) {
                    const float *p = in + tj + j * es;
                    __m512 m0 = _mm512_maskz_loadu_ps(k, p);
                    __m512 m1 = _mm512_maskz_loadu_ps(k, p + 4 * es);
                    __m512 m2 = _mm512_maskz_loadu_ps(k, p + 8 * es);
                    __m512 m3 = _mm512_maskz_loadu_ps(k, p + 12 * es);
                    s[j] = _mm512_add_ps(_mm512_add_ps(m0, m1), m2);
                    t[j] = _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3);
                }
                __m512 y00 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(s[0], s[1]), s[2]), b);
                __m512 y01 = _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(s[1], s[2]), s[3]), b);
                __m512 y10 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(t[0], t[1]), t[2]), b);
                __m512 y11 = _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(t[1], t[2]), t[3]), b);
                /* columns 2tj .. 2tj + 31 of the chunk: interleave */
                ptrdiff_t c0 = 2 * tj, left = cols - c0;
                __mmask16 k0 = left >= 16 ? (__mmask16)0xffff
                             : (__mmask16)((1u << (left > 0 ? left : 0)) - 1u);
                __mmask16 k1 = left >= 32 ? (__mmask16)0xffff
                             : (__mmask16)((1u << (left > 16 ? left - 16 : 0)) - 1u);
                _mm512_mask_storeu_ps(y0 + c0, k0, _mm512_permutex2var_ps(y00, lo, y01));
                _mm512_mask_storeu_ps(y0 + c0 + 16, k1, _mm512_permutex2var_ps(y00, hi, y01));
                if (second) {
                    _mm512_mask_storeu_ps(y0 + Wo + c0, k0, _mm512_permutex2var_ps(y10, lo, y11));
                    _mm512_mask_storeu_ps(y0 + Wo + c0 + 16, k1, _mm512_permutex2var_ps(y10, hi, y11));
                }
            }
        }
    }
}
#endif

FCNN_DEFINE_WINOGRAD_FILTER(f32, float)
FCNN_DEFINE_WINOGRAD_FILTER(f64, double)
FCNN_DEFINE_WINOGRAD_FRAME(generic_f32, float, )
FCNN_DEFINE_WINOGRAD_FRAME(generic_f64, double, )
FCNN_DEFINE_WINOGRAD_INPUT(generic_f32, float, )
FCNN_DEFINE_WINOGRAD_INPUT(generic_f64, double, )
FCNN_DEFINE_WINOGRAD_OUTPUT(generic_f32, float, )
FCNN_DEFINE_WINOGRAD_OUTPUT(generic_f64, double, )
#if FCNN_WINOGRAD_AVX512
FCNN_DEFINE_WINOGRAD_FRAME(avx512_f32, float, FCNN_WINOGRAD_AVX512_ATTR)
FCNN_DEFINE_WINOGRAD_FRAME(avx512_f64, double, FCNN_WINOGRAD_AVX512_ATTR)
FCNN_DEFINE_WINOGRAD_INPUT(avx512_f64, double, FCNN_WINOGRAD_AVX512_ATTR)
FCNN_DEFINE_WINOGRAD_OUTPUT(avx512_f64, double, FCNN_WINOGRAD_AVX512_ATTR)
#endif

typedef void (*fcnn_winograd_frame_f32_t)(ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                          ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *,
                                          float *);
typedef void (*fcnn_winograd_frame_f64_t)(ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                          ptrdiff_t, ptrdiff_t, ptrdiff_t, const double *,
                                          double *);
typedef void (*fcnn_winograd_input_f32_t)(ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                          ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *,
                                          float *);
typedef void (*fcnn_winograd_input_f64_t)(ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                          ptrdiff_t, ptrdiff_t, ptrdiff_t, const double *,
                                          double *);
typedef void (*fcnn_winograd_output_f32_t)(ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                           ptrdiff_t, const float *, const float *,
                                           float *, ptrdiff_t, ptrdiff_t);
typedef void (*fcnn_winograd_output_f64_t)(ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                           ptrdiff_t, const double *, const double *,
                                           double *, ptrdiff_t, ptrdiff_t);

static fcnn_winograd_frame_f32_t fcnn_winograd_frame_f32 = fcnn_winograd_frame_generic_f32;
static fcnn_winograd_frame_f64_t fcnn_winograd_frame_f64 = fcnn_winograd_frame_generic_f64;
static fcnn_winograd_input_f32_t fcnn_winograd_input_f32 = fcnn_winograd_input_generic_f32;
static fcnn_winograd_input_f64_t fcnn_winograd_input_f64 = fcnn_winograd_input_generic_f64;
static fcnn_winograd_output_f32_t fcnn_winograd_output_f32 = fcnn_winograd_output_generic_f32;
static fcnn_winograd_output_f64_t fcnn_winograd_output_f64 = fcnn_winograd_output_generic_f64;

/* The AVX-512 transforms when want_avx512 and the CPU has AVX-512F, else
 * the portable ones; returns 1 for AVX-512. */
static int fcnn_winograd_select(int want_avx512)
{
    fcnn_winograd_frame_f32 = fcnn_winograd_frame_generic_f32;
    fcnn_winograd_frame_f64 = fcnn_winograd_frame_generic_f64;
    fcnn_winograd_input_f32 = fcnn_winograd_input_generic_f32;
    fcnn_winograd_input_f64 = fcnn_winograd_input_generic_f64;
    fcnn_winograd_output_f32 = fcnn_winograd_output_generic_f32;
    fcnn_winograd_output_f64 = fcnn_winograd_output_generic_f64;
#if FCNN_WINOGRAD_AVX512
    if (want_avx512) {
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f")) {
            fcnn_winograd_frame_f32 = fcnn_winograd_frame_avx512_f32;
            fcnn_winograd_frame_f64 = fcnn_winograd_frame_avx512_f64;
            fcnn_winograd_input_f32 = fcnn_winograd_input_avx512_f32;
            fcnn_winograd_input_f64 = fcnn_winograd_input_avx512_f64;
            fcnn_winograd_output_f32 = fcnn_winograd_output_avx512_f32;
            fcnn_winograd_output_f64 = fcnn_winograd_output_avx512_f64;
            return 1;
        }
    }
#else
    (void)want_avx512;
#endif
    return 0;
}

#endif
