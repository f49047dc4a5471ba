/* The selective scan on the CPU: compiled and loaded by scan_kernel.py, which documents the
 * maths and the threading.
 *
 * Work unit: one batch b and a block of up to W consecutive channels of one group (the
 * channels that read the same B_t, C_t). The innermost loops run over the block's channels,
 * which are contiguous in memory, so the compiler vectorises them (exp included) with no
 * reduction between lanes; the N states of the block live in a small buffer.
 *
 * Layouts (all contiguous): u, delta, z, out, du, ddelta, dz, dout: [b, L, d] (channels
 * innermost, as Mamba's in_proj produces them); At, dAt: [n, d]; Bt, Ct, dBt, dCt:
 * [b, G, L, n]; D, bias, dD, dbias: [d]; last, dlast: [b, d, n]. Optional inputs are NULL. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define W 16
#define SIMD _Pragma("omp simd")
#define SIMD_SUM _Pragma("omp simd reduction(+:sB, sC)")

/* exp for float32 inside the state loops, inlined so the loops keep their registers (a call
 * to the vector libm exp spills them at every step): Cephes' expf. x = k ln2 + r with
 * |r| <= ln2 / 2 (ln2 split in two for exactness), e^r by a degree-6 polynomial, 2^k through
 * the exponent bits. Relative error about 1e-7 (a few ulp); inputs are clamped to
 * [-87, 88], so exp of a very negative x is 1e-38, not 0 (a state decays below any float32
 * that matters either way). */
static inline float exp_f32(float x)
{
    x = x < -87.0f ? -87.0f : x > 88.0f ? 88.0f : x;
    float k = floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - k * 0.693359375f + k * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union { int32_t i; float f; } scale = { .i = ((int32_t)k + 127) << 23 };
    return p * scale.f;
}

#define DEFINE_SCAN(T, SUF, EXP, LOG1P, EXP_STATE)                                                          \
static inline T softplus_##SUF(T r) { return r > 20 ? r : LOG1P(EXP(r)); }                      \
                                                                                                  \
/* The block's inputs at one time step, copied into W-wide local arrays (lanes past the      */  \
/* block are zero: their states stay zero and add nothing), so every inner loop runs over    */  \
/* exactly W lanes of non-aliased local memory and vectorises without run-time checks.      */  \
static inline void load_step_##SUF(const T *dl, const T *ul, const T *bias, int softplus, long w, \
                                   T *restrict raw, T *restrict dt, T *restrict uu, T *restrict dtu) \
{                                                                                                 \
    for (long j = 0; j < W; j++) {                                                                \
        raw[j] = j < w ? dl[j] + (bias ? bias[j] : 0) : 0;                                        \
        uu[j] = j < w ? ul[j] : 0;                                                                \
        dt[j] = j >= w ? 0 : softplus ? softplus_##SUF(raw[j]) : raw[j];                          \
        dtu[j] = dt[j] * uu[j];                                                                   \
    }                                                                                             \
}                                                                                                 \
                                                                                                  \
/* the block's A, [n][W], lanes past the block zero */                                           \
static void load_A_##SUF(const T *At, long d, long n, long c0, long w, T *restrict Ab)            \
{                                                                                                 \
    for (long k = 0; k < n; k++)                                                                  \
        for (long j = 0; j < W; j++) Ab[k * W + j] = j < w ? At[k * d + c0 + j] : 0;              \
}                                                                                                 \
                                                                                                  \
/* the (batch, group, block) units u0..u1-1; returns 1 if out of memory */                       \
int scan_fwd_##SUF(const T *u, const T *delta, const T *At, const T *Bt, const T *Ct,            \
                   const T *D, const T *z, const T *bias, int softplus, long u0, long u1,        \
                   long d, long L, long n, long G, T *out, T *last)                              \
{                                                                                                 \
    long per_group = d / G, blocks = (per_group + W - 1) / W;                                     \
    T *restrict x = malloc(sizeof(T) * 2 * n * W);                                                \
    if (!x) return 1;                                                                             \
    T *restrict Ab = x + n * W;                                                                   \
    T raw[W], dt[W], uu[W], dtu[W], y[W], Db[W];                                                  \
    for (long unit = u0; unit < u1; unit++) {                                                     \
        long b = unit / (G * blocks), g = unit / blocks % G, j0 = unit % blocks * W;              \
        long c0 = g * per_group + j0, w = per_group - j0 < W ? per_group - j0 : W;               \
        const T *Bg = Bt + (b * G + g) * L * n, *Cg = Ct + (b * G + g) * L * n;                  \
        load_A_##SUF(At, d, n, c0, w, Ab);                                                        \
        for (long j = 0; j < W; j++) Db[j] = D && j < w ? D[c0 + j] : 0;                          \
        for (long i = 0; i < n * W; i++) x[i] = 0;                                                \
        for (long t = 0; t < L; t++) {                                                            \
            long o = (b * L + t) * d + c0;                                                        \
            load_step_##SUF(delta + o, u + o, bias ? bias + c0 : 0, softplus, w, raw, dt, uu, dtu); \
            for (long j = 0; j < W; j++) y[j] = Db[j] * uu[j];                                    \
            for (long k = 0; k < n; k++) {                                                        \
                const T bk = Bg[t * n + k], ck = Cg[t * n + k];                                   \
                SIMD for (long j = 0; j < W; j++) {                                               \
                    T xk = EXP_STATE(dt[j] * Ab[k * W + j]) * x[k * W + j] + dtu[j] * bk;               \
                    x[k * W + j] = xk;                                                            \
                    y[j] += xk * ck;                                                              \
                }                                                                                 \
            }                                                                                     \
            if (z) {                                                                              \
                for (long j = 0; j < W; j++) raw[j] = j < w ? z[o + j] : 0;                       \
                SIMD for (long j = 0; j < W; j++) y[j] *= raw[j] / (1 + EXP(-raw[j]));            \
            }                                                                                     \
            for (long j = 0; j < w; j++) out[o + j] = y[j];                                       \
        }                                                                                         \
        for (long j = 0; j < w; j++)                                                              \
            for (long k = 0; k < n; k++) last[(b * d + c0 + j) * n + k] = x[k * W + j];          \
    }                                                                                             \
    free(x);                                                                                      \
    return 0;                                                                                     \
}                                                                                                 \
                                                                                                  \
/* batches b0..b1-1: each owns its rows of du, ddelta, dz and its slices of dBt, dCt (zeroed */  \
/* by the caller); dAt, dD, dbias are this call's private accumulators (zeroed by the caller) */  \
int scan_bwd_##SUF(const T *u, const T *delta, const T *At, const T *Bt, const T *Ct,            \
                   const T *D, const T *z, const T *bias, int softplus, long b0, long b1,        \
                   long d, long L, long n, long G, const T *dout, const T *dlast,                \
                   T *du, T *ddelta, T *dz, T *dBt, T *dCt, T *dAt, T *dD, T *dbias)             \
{                                                                                                 \
    long per_group = d / G, nW = n * W;                                                           \
    /* per unit: states x_{-1}..x_{L-1} and exp(dt_t A), [time][state][lane]; dt, u; A; dA; g */ \
    T *restrict X = malloc(sizeof(T) * ((2 * L + 1) * nW + 2 * L * W + 3 * nW));                 \
    if (!X) return 1;                                                                             \
    T *restrict E = X + (L + 1) * nW, *restrict DT = E + L * nW, *restrict UU = DT + L * W;      \
    T *restrict Ab = UU + L * W, *restrict dAb = Ab + nW, *restrict gr = dAb + nW;               \
    T raw[W], dtu[W], dy[W], gB[W], pA[W], yz[W], Db[W];                                          \
    for (long b = b0; b < b1; b++)                                                                \
    for (long g = 0; g < G; g++)                                                                  \
    for (long c0 = g * per_group; c0 < (g + 1) * per_group; c0 += W) {                            \
        long w = (g + 1) * per_group - c0 < W ? (g + 1) * per_group - c0 : W;                     \
        const T *Bg = Bt + (b * G + g) * L * n, *Cg = Ct + (b * G + g) * L * n;                  \
        T *dBg = dBt + (b * G + g) * L * n, *dCg = dCt + (b * G + g) * L * n;                    \
        load_A_##SUF(At, d, n, c0, w, Ab);                                                        \
        for (long j = 0; j < W; j++) Db[j] = D && j < w ? D[c0 + j] : 0;                          \
        for (long i = 0; i < nW; i++) { X[i] = 0; dAb[i] = 0; }                                   \
        for (long t = 0; t < L; t++) {  /* recompute the states */                                \
            long o = (b * L + t) * d + c0;                                                        \
            T *dt = DT + t * W, *uu = UU + t * W;                                                 \
            load_step_##SUF(delta + o, u + o, bias ? bias + c0 : 0, softplus, w, raw, dt, uu, dtu); \
            for (long k = 0; k < n; k++) {                                                        \
                const T bk = Bg[t * n + k];                                                       \
                const T *xp = X + t * nW + k * W;                                                 \
                T *xs = X + (t + 1) * nW + k * W, *Es = E + t * nW + k * W;                       \
                SIMD for (long j = 0; j < W; j++) {                                               \
                    Es[j] = EXP_STATE(dt[j] * Ab[k * W + j]);                                           \
                    xs[j] = Es[j] * xp[j] + dtu[j] * bk;                                          \
                }                                                                                 \
            }                                                                                     \
        }                                                                                         \
        for (long k = 0; k < n; k++)                                                              \
            for (long j = 0; j < W; j++)                                                          \
                gr[k * W + j] = dlast && j < w ? dlast[(b * d + c0 + j) * n + k] : 0;             \
        for (long t = L - 1; t >= 0; t--) {  /* the adjoint, backwards in time */                 \
            long o = (b * L + t) * d + c0;                                                        \
            const T *dt = DT + t * W, *uu = UU + t * W, *Cs = Cg + t * n, *Bs = Bg + t * n;       \
            for (long j = 0; j < W; j++) {                                                        \
                dtu[j] = dt[j] * uu[j];                                                           \
                dy[j] = j < w ? dout[o + j] : 0;                                                  \
                gB[j] = pA[j] = 0;                                                                \
            }                                                                                     \
            if (z) {  /* through the gate: y_t before it, then dz and dy */                       \
                for (long j = 0; j < W; j++) yz[j] = Db[j] * uu[j];                               \
                for (long k = 0; k < n; k++)                                                      \
                    for (long j = 0; j < W; j++) yz[j] += X[(t + 1) * nW + k * W + j] * Cs[k];    \
                for (long j = 0; j < w; j++) {                                                    \
                    T zt = z[o + j], s = 1 / (1 + EXP(-zt));                                      \
                    dz[o + j] = dy[j] * yz[j] * s * (1 + zt * (1 - s));                           \
                    dy[j] *= zt * s;                                                              \
                }                                                                                 \
            }                                                                                     \
            for (long k = 0; k < n; k++) {                                                        \
                const T bk = Bs[k], ck = Cs[k];                                                   \
                const T *xs = X + (t + 1) * nW + k * W, *xp = X + t * nW + k * W;                 \
                const T *Es = E + t * nW + k * W;                                                 \
                T sB = 0, sC = 0;                                                                 \
                SIMD_SUM for (long j = 0; j < W; j++) {                                                 \
                    T g_t = gr[k * W + j] + ck * dy[j];   /* g_t = C_t dy_t + dA_{t+1} g_{t+1} */ \
                    T p = g_t * xp[j] * Es[j];                                                    \
                    dAb[k * W + j] += p * dt[j];                                                  \
                    pA[j] += p * Ab[k * W + j];                                                   \
                    gB[j] += g_t * bk;                                                            \
                    gr[k * W + j] = g_t * Es[j];                                                  \
                    sB += g_t * dtu[j];                                                           \
                    sC += xs[j] * dy[j];                                                          \
                }                                                                                 \
                dBg[t * n + k] += sB;                                                             \
                dCg[t * n + k] += sC;                                                             \
            }                                                                                     \
            for (long j = 0; j < w; j++) {                                                        \
                T ddt = pA[j] + uu[j] * gB[j];                                                    \
                if (softplus) {                                                                   \
                    T r = delta[o + j] + (bias ? bias[c0 + j] : 0);                               \
                    if (r <= 20) ddt *= 1 / (1 + EXP(-r));                                        \
                }                                                                                 \
                du[o + j] = dt[j] * gB[j] + Db[j] * dy[j];                                        \
                ddelta[o + j] = ddt;                                                              \
                dbias[c0 + j] += ddt;                                                             \
                dD[c0 + j] += dy[j] * uu[j];                                                      \
            }                                                                                     \
        }                                                                                         \
        for (long k = 0; k < n; k++)                                                              \
            for (long j = 0; j < w; j++) dAt[k * d + c0 + j] += dAb[k * W + j];                   \
    }                                                                                             \
    free(X);                                                                                      \
    return 0;                                                                                     \
}

DEFINE_SCAN(float, f32, expf, log1pf, exp_f32)
DEFINE_SCAN(double, f64, exp, log1p, exp)

int scan_block_width(void) { return W; }
