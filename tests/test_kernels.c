/* The helpers every attention kernel shares, against their formulas written out here one rounding
   per statement, as the header's comments give them: exp's polynomial, the fold of 16 lanes of 16
   keys, the running maximum and the 16-lane sum. The builds with vector instructions (AVX-512:
   test_kernels_native on this machine; AVX2: test_kernels_avx2) must give the portable build's
   bits; each build runs this program.
   Then pre-RoPE attention through the kernels that rotate keys from the angle table, against a
   double-precision reference.
   (This program reads the implementation's internals: it includes it.) */
#define KVEVICT_CACHED_BYTES 0 /* every cache counts as read from memory: those kernels' paths */
#define KVEVICT_IMPLEMENTATION
#include "kvevict.h"
#include "testutil.h"

static float formula_exp(float v)
{
    float vc = v < -87.0f ? -87.0f : v, t, k, r, p, scale;
    uint32_t bits;
    if (v != v) return v;
    t = vc * 1.44269504088896341f;
    t = t + 12582912.0f;
    k = t - 12582912.0f;
    r = k * 0.693359375f;
    r = vc - r;
    p = k * -2.12194440e-4f;
    r = r - p;
    p = 1.9875691500e-4f;
    p = p * r; p = p + 1.3981999507e-3f;
    p = p * r; p = p + 8.3334519073e-3f;
    p = p * r; p = p + 4.1665795894e-2f;
    p = p * r; p = p + 1.6666665459e-1f;
    p = p * r; p = p + 5.0000001201e-1f;
    p = p * r; p = p * r; p = p + r; p = p + 1.0f;
    bits = (uint32_t)((int32_t)k + 127) << 23;
    memcpy(&scale, &bits, 4);
    return v < -87.0f ? 0.0f : p * scale;
}

#ifdef KVE__AVX512
#define KVE_TEST_EXP_NAN NAN /* the portable code converts NaN to int: undefined, not tested */
#else
#define KVE_TEST_EXP_NAN -50.0f
#endif

static int same_bits(float a, float b) { return memcmp(&a, &b, 4) == 0 || (a != a && b != b); }

static void test_helpers_match_formulas(void)
{
    static float x[4096], want[4096];
    float P[16][16], Z[16][16], out[16], fold[16], A[8][16], B[4][16], C[2][16];
    int i, n, nb, j, l, m, bad = 0;
    /* exp: a sweep over [-100, 1], the edges of its clamp, zeros, -inf, NaN, every array length
       to 40 (the vector loop's tails) */
    for (i = 0; i < 4000; i++) x[i] = -100.0f + 101.0f * (float)i / 4000.0f + (float)tu_uniform() * 0.02f;
    x[4000] = -87.0f; x[4001] = -87.00001f; x[4002] = -86.99999f; x[4003] = 0.0f; x[4004] = -0.0f;
    x[4005] = -INFINITY; x[4006] = KVE_TEST_EXP_NAN; x[4007] = -1e-30f; x[4008] = -103.2f; x[4009] = 0.6931472f;
    for (i = 0; i < 4010; i++) want[i] = formula_exp(x[i]);
    kve__exp_inplace(x, 4010);
    for (i = 0; i < 4010; i++) bad += !same_bits(x[i], want[i]);
    CHECK(bad == 0, "exp: %d of 4010 values differ from the formula's bits", bad);
    for (n = 0, bad = 0; n <= 40; n++) {
        for (i = 0; i < 48; i++) x[i] = -5.0f * (float)tu_uniform();
        for (i = 0; i < 48; i++) want[i] = i < n ? formula_exp(x[i]) : x[i];
        kve__exp_inplace(x, n);
        for (i = 0; i < 48; i++) bad += !same_bits(x[i], want[i]);
    }
    CHECK(bad == 0, "exp over 0..40 values: %d values wrong or written past the end", bad);
    for (n = 0, bad = 0; n <= 40; n++) { /* exp(x - shift) into another array, and in place */
        float shift = 2.0f * (float)tu_uniform(), y[48];
        for (i = 0; i < 48; i++) x[i] = 3.0f * (float)tu_uniform() - 1.0f;
        for (i = 0; i < 48; i++) {
            float diff = x[i] - shift;
            want[i] = i < n ? formula_exp(diff) : -7.0f;
            y[i] = -7.0f;
        }
        kve__exp_shifted(x, shift, y, n);
        for (i = 0; i < 48; i++) bad += !same_bits(y[i], want[i]);
        kve__exp_shifted(x, shift, x, n);
        for (i = 0; i < n; i++) bad += !same_bits(x[i], want[i]);
    }
    CHECK(bad == 0, "exp(x - shift) over 0..40 values: %d values wrong or written past the end", bad);

    /* the fold of 16 keys' lane sums: magnitudes far apart, so another order rounds otherwise */
    for (nb = 1, bad = 0; nb <= 16; nb++) {
        for (j = 0; j < 16; j++)
            for (l = 0; l < 16; l++) {
                P[j][l] = (float)(tu_uniform() - 0.5) * (tu_uniform() < 0.3 ? 1e6f : 1.0f);
                Z[j][l] = j < nb ? P[j][l] : 0.0f;
            }
        for (j = 0; j < 8; j++)
            for (l = 0; l < 8; l++) {
                A[j][l] = Z[2 * j][l] + Z[2 * j][l + 8];
                A[j][l + 8] = Z[2 * j + 1][l] + Z[2 * j + 1][l + 8];
            }
        for (j = 0; j < 4; j++)
            for (l = 0; l < 4; l++) {
                B[j][l] = A[2 * j][l] + A[2 * j][l + 4];
                B[j][l + 4] = A[2 * j][l + 8] + A[2 * j][l + 12];
                B[j][l + 8] = A[2 * j + 1][l] + A[2 * j + 1][l + 4];
                B[j][l + 12] = A[2 * j + 1][l + 8] + A[2 * j + 1][l + 12];
            }
        for (j = 0; j < 2; j++)
            for (l = 0; l < 2; l++)
                for (m = 0; m < 4; m++) {
                    C[j][m * 2 + l] = B[2 * j][m * 4 + l] + B[2 * j][m * 4 + l + 2];
                    C[j][8 + m * 2 + l] = B[2 * j + 1][m * 4 + l] + B[2 * j + 1][m * 4 + l + 2];
                }
        for (l = 0; l < 8; l++) {
            fold[l] = C[0][2 * l] + C[0][2 * l + 1];
            fold[8 + l] = C[1][2 * l] + C[1][2 * l + 1];
        }
        for (l = 0; l < 16; l++) out[l] = 12345.0f;
        kve__fold16(P, nb, out);
        for (l = 0; l < 16; l++) bad += l < nb ? !same_bits(out[l], fold[l]) : out[l] != 12345.0f;
    }
    CHECK(bad == 0, "fold of 16 keys: %d sums differ from the fixed order, or written past nb", bad);

    /* one query row against nb keys (kve__dot16): lane l sums elements l, l + 16, ... (then the
       tail), each product rounded, and each key's 16 lanes fold as above: (l, l + 8), (l, l + 4),
       (l, l + 2), then lanes 0 and 1 */
    {
        static const int32_t dims[] = {16, 40, 72, 128};
        static float q[128], rows[16][128];
        const float *kp[16];
        int di;
        for (di = 0, bad = 0; di < 4; di++)
            for (nb = 1; nb <= 16; nb++) {
                int32_t d = dims[di];
                for (i = 0; i < d; i++) q[i] = (float)(tu_uniform() - 0.5) * (i % 7 ? 1.0f : 300.0f);
                for (j = 0; j < nb; j++) {
                    for (i = 0; i < d; i++) rows[j][i] = (float)(tu_uniform() - 0.5) * (i % 5 ? 1.0f : 1e3f);
                    kp[j] = rows[j];
                }
                for (l = 0; l < 16; l++) out[l] = 12345.0f;
                kve__dot16(q, kp, nb, d, out);
                for (j = 0; j < nb; j++) {
                    float lane[16], prod;
                    for (l = 0; l < 16; l++) lane[l] = 0.0f;
                    for (i = 0; i < d; i++) {
                        prod = q[i] * rows[j][i];
                        lane[i % 16] = lane[i % 16] + prod;
                    }
                    for (l = 0; l < 8; l++) lane[l] = lane[l] + lane[l + 8];
                    for (l = 0; l < 4; l++) lane[l] = lane[l] + lane[l + 4];
                    for (l = 0; l < 2; l++) lane[l] = lane[l] + lane[l + 2];
                    bad += !same_bits(out[j], lane[0] + lane[1]);
                }
                for (l = nb; l < 16; l++) bad += out[l] != 12345.0f;
            }
        CHECK(bad == 0, "dot products of 1..16 keys, head_dim 16/40/72/128: %d differ from the order", bad);
    }

    /* four value rows into a sum (kve__axpy4): y + ((a0 x0 + a1 x1) + (a2 x2 + a3 x3)) */
    for (n = 0, bad = 0; n <= 37; n++) {
        static float xs[4][48], y[48], yw[48];
        float a[4], p0, p1, p2, p3;
        for (j = 0; j < 4; j++) {
            a[j] = (float)tu_uniform();
            for (i = 0; i < 48; i++) xs[j][i] = (float)(tu_uniform() - 0.5) * (i % 3 ? 1.0f : 1e4f);
        }
        for (i = 0; i < 48; i++) y[i] = yw[i] = (float)tu_uniform();
        for (i = 0; i < n; i++) {
            p0 = a[0] * xs[0][i]; p1 = a[1] * xs[1][i]; p2 = a[2] * xs[2][i]; p3 = a[3] * xs[3][i];
            p0 = p0 + p1; p2 = p2 + p3;
            yw[i] = yw[i] + (p0 + p2);
        }
        kve__axpy4(y, a, xs[0], xs[1], xs[2], xs[3], n);
        for (i = 0; i < 48; i++) bad += !same_bits(y[i], yw[i]);
    }
    CHECK(bad == 0, "four value rows summed into 0..37 outputs: %d wrong or written past the end", bad);

    /* bf16 rows widened (a shift) and q8_0 blocks times their f16 scale, to floats */
    {
        static unsigned char raw[4 * 34];
        static float got[128];
        int32_t b;
        for (i = 0, bad = 0; i < (int)sizeof raw; i++) raw[i] = (unsigned char)(tu_uniform() * 256.0);
        for (n = 0; n <= 40; n++) {
            for (i = 0; i < 48; i++) got[i] = -3.0f;
            kve__decode(KVE_TYPE_BF16, raw, n, got);
            for (i = 0; i < 48; i++) {
                uint16_t h;
                uint32_t w;
                float f;
                memcpy(&h, raw + 2 * i, 2);
                w = (uint32_t)h << 16;
                memcpy(&f, &w, 4);
                bad += !same_bits(got[i], i < n ? f : -3.0f);
            }
        }
        for (b = 0; b < 4; b++) { /* a finite, normal scale in each block */
            raw[34 * b] = (unsigned char)(tu_uniform() * 256.0);
            raw[34 * b + 1] = (unsigned char)(0x1c + b);
        }
        kve__decode(KVE_TYPE_Q8_0, raw, 128, got);
        for (b = 0; b < 4; b++)
            for (i = 0; i < 32; i++) {
                uint16_t dh;
                int8_t v;
                memcpy(&dh, raw + 34 * b, 2);
                memcpy(&v, raw + 34 * b + 2 + i, 1);
                bad += !same_bits(got[32 * b + i], (float)v * kve__f32_from_f16(dh));
            }
        CHECK(bad == 0, "bf16 and q8_0 rows to floats: %d values differ", bad);
    }

    /* the running maximum (a NaN is never taken) and the 16-lane sum folded in halves */
    for (n = 0, bad = 0; n <= 70; n++) {
        float mx = -INFINITY, lane[16], start = n % 3 ? -INFINITY : 0.25f, got;
        for (i = 0; i < n; i++) x[i] = (float)(tu_uniform() - 0.7) * (i % 5 ? 1.0f : 1e5f);
        if (n > 3) x[n / 2] = NAN;
        mx = start;
        for (i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
        got = kve__max_over(x, n, start);
        bad += !same_bits(got, mx);
        if (n > 3) x[n / 2] = 1.0f;
        for (l = 0; l < 16; l++) lane[l] = 0.0f;
        for (i = 0; i < n; i++) lane[i % 16] += x[i];
        for (m = 8; m >= 1; m /= 2)
            for (l = 0; l < m; l++) lane[l] += lane[l + m];
        bad += !same_bits(kve__sum_lanes(x, n), lane[0]);
    }
    CHECK(bad == 0, "maximum and 16-lane sum over 0..70 values: %d wrong", bad);
}

/* StreamingLLM with keys stored pre-RoPE, the ring turned over several times: the largest
   relative error of the steps' attention against the reference on the stored (rounded) rows, at
   the positions kve_attention_positions gives (with pos-shift the keys sit at 0 .. len-1 and the
   AVX-512 kernel reads the rows of the table from the first on, the query rows rotated back;
   without, past the table, rotated key by key) */
static double prerope_attention_error(int32_t G, int32_t d, kve_rope_layout layout, int pos_shift,
                                      kve_type type)
{
    enum { HK = 2, CAP = 70, STEPS = 200 };
    static float q[4 * HK * 128], k[HK * 128], v[HK * 128], out[4 * HK * 128];
    static float keys[CAP][128], vals[CAP][128];
    int32_t H = G * HK, s, h, g, j;
    kve_config cfg;
    tu_cache t;
    double e = 0;
    memset(&cfg, 0, sizeof cfg);
    cfg.n_layers = 1; cfg.n_heads = H; cfg.n_kv_heads = HK; cfg.head_dim = d;
    cfg.capacity = CAP; cfg.key_storage = KVE_KEYS_PRE_ROPE;
    cfg.k_type = cfg.v_type = type;
    cfg.rope_layout = layout;
    cfg.policy.kind = KVE_POLICY_STREAMINGLLM;
    cfg.policy.sinks = 4;
    cfg.policy.pos_shift = pos_shift ? KVE_POS_SHIFT_ON : KVE_POS_SHIFT_OFF;
    CHECK_RESULT(tu_open(&t, &cfg), KVE_OK);
    tu_seed((unsigned long long)((int)type * 1000 + G * 100 + d * 10 + (int)layout * 2 + pos_shift));
    for (s = 0; s < STEPS; s++) {
        tu_fill(q, (size_t)(H * d), 1.0f); tu_fill(k, (size_t)(HK * d), 1.0f); tu_fill(v, (size_t)(HK * d), 1.0f);
        CHECK_RESULT(kve_store(&t.c, 0, s, k, v, NULL), KVE_OK);
        CHECK_RESULT(kve_attend(&t.c, 0, q, out), KVE_OK);
        if (s % 7 && s != STEPS - 1) continue; /* the reference costs n*d per key */
        for (h = 0; h < HK; h++) {
            int32_t n = kve_length(&t.c, 0, h);
            int64_t qpos, kpos[CAP];
            double kp[CAP], ref[128];
            const float *kr[CAP], *vr[CAP];
            CHECK_RESULT(kve_attention_positions(&t.c, 0, h, &qpos, kpos), KVE_OK);
            for (j = 0; j < n; j++) {
                kve_read_key(&t.c, 0, h, j, keys[j]);
                kve_read_value(&t.c, 0, h, j, vals[j]);
                kr[j] = keys[j]; vr[j] = vals[j]; kp[j] = (double)kpos[j];
            }
            for (g = 0; g < G; g++) {
                ref_attend(q + (size_t)((h * G + g) * d), (double)qpos, kr, vr, kp, n, d,
                           layout == KVE_ROPE_HALF ? 2 : 1, 10000.0, ref, NULL);
                e = fmax(e, rel_err_fd(out + (size_t)((h * G + g) * d), ref, (size_t)d));
            }
        }
    }
    tu_close(&t);
    return e;
}

static void test_prerope_attention(void)
{
    static const int32_t groups[3] = {1, 2, 4}, dims[3] = {64, 128, 96};
    static const kve_type types[3] = {KVE_TYPE_F32, KVE_TYPE_F16, KVE_TYPE_Q8_0};
    int32_t gi, di, c;
    double worst = 0;
    for (gi = 0; gi < 3; gi++)
        for (di = 0; di < 3; di++)
            for (c = 0; c < 12; c++) { /* layout, pos-shift, type */
                kve_rope_layout layout = c & 1 ? KVE_ROPE_HALF : KVE_ROPE_INTERLEAVED;
                int pos_shift = (c >> 1) & 1;
                kve_type type = types[c >> 2];
                double e = prerope_attention_error(groups[gi], dims[di], layout, pos_shift, type);
                CHECK(e < 1e-5, "pre-RoPE attention G=%d d=%d layout=%d pos_shift=%d type=%d: %g from the reference",
                      groups[gi], dims[di], (int)layout, pos_shift, (int)type, e);
                worst = fmax(worst, e);
            }
    printf("pre-RoPE attention: worst relative error %.3g\n", worst);
}

int main(void)
{
    test_helpers_match_formulas();
    test_prerope_attention();
    (void)tu_alloc; (void)rel_err_ff; (void)tu_normal; /* shared helpers this file has no use for */
    return tu_summary("test_kernels");
}
