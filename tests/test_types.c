/* Storage types: f16, bf16 and q8_0 K/V.
     conversions  bit-identical to ggml's own float->f16 and block_q8_0 quantisation (golden bytes
                  in tests/data, produced by running ggml's code), every half round-trips, bf16
                  rounds to nearest even (checked against a double-precision rounding)
     attention    every type and key storage against a double-precision reference on the
                  type-rounded K/V, through every policy's eviction
     bytes        buffer sizes, alignment, q8_0's head_dim, values a type cannot hold */
#define KVEVICT_IMPLEMENTATION
#include "kvevict.h"
#include "testutil.h"

static const kve_type all_types[] = {KVE_TYPE_F32, KVE_TYPE_F16, KVE_TYPE_BF16, KVE_TYPE_Q8_0};
static const char *const type_name[] = {"default", "f32", "f16", "bf16", "q8_0"};

static float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ---- conversions ------------------------------------------------------------------------------ */
static void test_ggml_golden(const char *path)
{
    FILE *f = fopen(path, "r");
    char line[4096];
    int n_f16 = 0, n_q8 = 0;
    CHECK(f != NULL, "cannot open %s", path);
    if (!f) return;
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "f16 ", 4)) {
            unsigned fb, hb;
            uint16_t got = 0;
            float x;
            if (sscanf(line + 4, "%x %x", &fb, &hb) != 2) continue;
            x = from_bits(fb);
            CHECK_RESULT(kve_row_from_float(KVE_TYPE_F16, &x, 1, &got), KVE_OK);
            CHECK(got == hb, "f16 of %.9g (%08x): %04x, ggml %04x", x, fb, got, hb);
            n_f16++;
        } else if (!strncmp(line, "q8_0 ", 5)) {
            float x[32];
            unsigned char want[34], got[34];
            char *p = line + 5, *end;
            int i, ok = 1;
            for (i = 0; i < 32 && ok; i++, p = end) {
                x[i] = from_bits((uint32_t)strtoul(p, &end, 16));
                ok = end != p;
            }
            p = ok ? strchr(p, ':') : NULL;
            for (i = 0; i < 34 && p; i++, p = end) {
                want[i] = (unsigned char)strtoul(p + (i == 0), &end, 16);
                if (end == p + (i == 0)) p = NULL;
                if (!p) break;
            }
            ok = ok && p;
            CHECK(ok, "malformed q8_0 line in %s", path);
            if (!ok) continue;
            CHECK_RESULT(kve_row_from_float(KVE_TYPE_Q8_0, x, 32, got), KVE_OK);
            CHECK(memcmp(got, want, 34) == 0, "q8_0 block %d differs from ggml's (scale %02x%02x vs %02x%02x)",
                  n_q8, got[1], got[0], want[1], want[0]);
            {
                /* dequantised: q * scale, as ggml reads it */
                float back[32];
                uint16_t scale = (uint16_t)(want[0] | want[1] << 8); /* the data is little endian */
                float d;
                CHECK_RESULT(kve_row_to_float(KVE_TYPE_F16, &scale, 1, &d), KVE_OK);
                CHECK_RESULT(kve_row_to_float(KVE_TYPE_Q8_0, want, 32, back), KVE_OK);
                for (i = 0; i < 32; i++)
                    CHECK(back[i] == (float)(signed char)want[2 + i] * d, "q8_0 dequantised value %d", i);
            }
            n_q8++;
        }
    }
    fclose(f);
    CHECK(n_f16 > 300 && n_q8 >= 40, "golden conversions read: %d f16, %d q8_0", n_f16, n_q8);
}

static void test_round_trips(void)
{
    uint32_t u;
    int bad = 0, i;
    /* every finite half decodes and encodes back to itself */
    for (u = 0; u < 65536; u++) {
        uint16_t h = (uint16_t)u, back = 0;
        float x;
        if ((h & 0x7c00u) == 0x7c00u) continue;
        CHECK_RESULT(kve_row_to_float(KVE_TYPE_F16, &h, 1, &x), KVE_OK);
        if (kve_row_from_float(KVE_TYPE_F16, &x, 1, &back) != KVE_OK || back != h) bad++;
    }
    CHECK(bad == 0, "%d halves do not round-trip", bad);
    /* bf16: nearest of the two neighbours, ties to the even one, computed in double */
    tu_seed(12);
    bad = 0;
    for (i = 0; i < 20000; i++) {
        float x = (float)(tu_normal() * pow(10.0, tu_uniform() * 20 - 10)), got;
        uint32_t xb, lo;
        uint16_t h = 0;
        double dl, dh;
        memcpy(&xb, &x, 4);
        if (i < 50) xb = (xb & 0xffff0000u) | 0x8000u; /* exact ties */
        x = from_bits(xb);
        lo = xb & 0xffff0000u;
        dl = fabs((double)x - from_bits(lo));
        dh = fabs((double)from_bits(lo + 0x10000u) - x);
        CHECK_RESULT(kve_row_from_float(KVE_TYPE_BF16, &x, 1, &h), KVE_OK);
        kve_row_to_float(KVE_TYPE_BF16, &h, 1, &got);
        {
            uint32_t want = dl < dh ? lo : dh < dl ? lo + 0x10000u : ((lo >> 16) & 1u) ? lo + 0x10000u : lo;
            if ((uint32_t)h << 16 != want) bad++;
        }
    }
    CHECK(bad == 0, "%d bf16 roundings differ from round-to-nearest-even", bad);
    {
        float x[32] = {0};
        unsigned char q[34];
        CHECK_RESULT(kve_row_from_float(KVE_TYPE_Q8_0, x, 32, q), KVE_OK);
        CHECK(q[0] == 0 && q[1] == 0 && q[2] == 0 && q[33] == 0, "an all-zero q8_0 block is zero");
        CHECK_RESULT(kve_row_from_float(KVE_TYPE_Q8_0, x, 16, q), KVE_ERROR_INVALID_COUNT);
        x[3] = 65520.0f * 127.0f;
        CHECK_RESULT(kve_row_from_float(KVE_TYPE_Q8_0, x, 32, q), KVE_ERROR_OUT_OF_TYPE_RANGE);
        x[3] = 65519.99f;
        CHECK_RESULT(kve_row_from_float(KVE_TYPE_F16, x + 3, 1, q), KVE_OK);
        x[3] = 65520.0f;
        CHECK_RESULT(kve_row_from_float(KVE_TYPE_F16, x + 3, 1, q), KVE_ERROR_OUT_OF_TYPE_RANGE);
        x[3] = NAN;
        CHECK_RESULT(kve_row_from_float(KVE_TYPE_BF16, x + 3, 1, q), KVE_ERROR_NOT_FINITE);
        CHECK(kve_row_bytes(KVE_TYPE_Q8_0, 64) == 68 && kve_row_bytes(KVE_TYPE_Q8_0, 48) == 0 &&
              kve_row_bytes(KVE_TYPE_F16, 7) == 14 && kve_row_bytes(KVE_TYPE_F32, 7) == 28 &&
              kve_row_bytes(KVE_TYPE_DEFAULT, 3) == 12 && kve_row_bytes((kve_type)9, 4) == 0,
              "row bytes per type");
    }
}

/* ---- attention and policies on every type ----------------------------------------------------- */
/* the reference over what the cache holds, with K and V as the cache rounded them */
static double check_against_reference_sinks(const kve_cache *c, int layer, const float *q, int64_t qpos,
                                            const float *out, int64_t shift_base, int64_t sinks)
{
    int H = c->cfg.n_heads, G = c->group, d = c->cfg.head_dim, head, j, i;
    double worst = 0, ref[128], qd[128], kd[128];
    int rot_layout = c->cfg.rope_layout == KVE_ROPE_HALF ? 2 : 1;
    for (head = 0; head < H; head++) {
        int kvh = head / G, n = kve_length(c, layer, kvh);
        double mx = -INFINITY, sum = 0, *lg = (double *)tu_alloc((size_t)n * sizeof(double));
        float kf[128];
        for (i = 0; i < d; i++) qd[i] = q[(size_t)head * d + i];
        ref_rope(qd, d, d, rot_layout, 10000.0, (double)(qpos - shift_base));
        for (j = 0; j < n; j++) {
            double dot = 0;
            int64_t p = kve_slot_position(c, layer, kvh, j);
            kve_read_key(c, layer, kvh, j, kf);
            for (i = 0; i < d; i++) kd[i] = kf[i];
            if (c->cfg.key_storage == KVE_KEYS_PRE_ROPE) /* sinks keep their positions */
                ref_rope(kd, d, d, rot_layout, 10000.0, (double)(p < sinks ? p : p - shift_base));
            for (i = 0; i < d; i++) dot += qd[i] * kd[i];
            lg[j] = p > qpos ? -INFINITY : dot / sqrt((double)d);
            if (lg[j] > mx) mx = lg[j];
        }
        for (j = 0; j < n; j++) sum += (lg[j] = exp(lg[j] - mx));
        for (i = 0; i < d; i++) ref[i] = 0;
        for (j = 0; j < n; j++) {
            float vf[128];
            kve_read_value(c, layer, kvh, j, vf);
            for (i = 0; i < d; i++) ref[i] += lg[j] / sum * vf[i];
        }
        worst = fmax(worst, rel_err_fd(out + (size_t)head * d, ref, (size_t)d));
        free(lg);
    }
    return worst;
}

static double check_against_reference(const kve_cache *c, int layer, const float *q, int64_t qpos,
                                      const float *out, int64_t shift_base)
{
    return check_against_reference_sinks(c, layer, q, qpos, out, shift_base, 0);
}

static void policy_on_type_heads(kve_policy_kind kind, kve_type kt, kve_type vt, kve_key_storage keys,
                                 int d, int H)
{
    int Hk = 2, prompt = 80, steps = 60, s, l, L = 2;
    kve_config c;
    tu_cache t;
    float *q = (float *)tu_alloc((size_t)prompt * H * d * sizeof(float));
    float *k = (float *)tu_alloc((size_t)(prompt + steps) * Hk * d * sizeof(float));
    float *v = (float *)tu_alloc((size_t)(prompt + steps) * Hk * d * sizeof(float));
    float *out = (float *)tu_alloc((size_t)prompt * H * d * sizeof(float));
    double worst = 0;
    memset(&c, 0, sizeof c);
    c.n_layers = L; c.n_heads = H; c.n_kv_heads = Hk; c.head_dim = d; c.capacity = 96;
    c.k_type = kt; c.v_type = vt; c.key_storage = keys;
    c.policy.kind = kind; c.policy.window = 8;
    c.policy.budget = kind == KVE_POLICY_FULL ? 0 : 40;
    c.policy.pos_shift = KVE_POS_SHIFT_OFF;
    if (kind == KVE_POLICY_SNAPKV) c.policy.decode = KVE_DECODE_EVICT;
    CHECK_RESULT(tu_open(&t, &c), KVE_OK);
    tu_seed((unsigned long long)(kind * 100 + kt * 10 + vt + keys * 1000));
    tu_fill(q, (size_t)prompt * H * d, 1.0f);
    tu_fill(k, (size_t)(prompt + steps) * Hk * d, 1.0f);
    tu_fill(v, (size_t)(prompt + steps) * Hk * d, 1.0f);
    for (l = 0; l < L; l++) {
        for (s = 0; s < prompt; s++)
            CHECK_RESULT(kve_store(&t.c, l, s, k + (size_t)s * Hk * d, v + (size_t)s * Hk * d, NULL), KVE_OK);
        if (kind != KVE_POLICY_STREAMINGLLM) {
            CHECK_RESULT(kve_prefill(&t.c, l, 16, q + (size_t)(prompt - 16) * H * d, NULL, out), KVE_OK);
            worst = fmax(worst, check_against_reference(&t.c, l, q + (size_t)(prompt - 1) * H * d, prompt - 1,
                                                        out + (size_t)15 * H * d, 0));
            /* and the first query of the chunk, blind to the 15 keys after it */
            worst = fmax(worst, check_against_reference(&t.c, l, q + (size_t)(prompt - 16) * H * d, prompt - 16,
                                                        out, 0));
        }
    }
    CHECK_RESULT(kve_compress_all(&t.c), KVE_OK);
    for (s = prompt; s < prompt + steps; s++)
        for (l = 0; l < L; l++) {
            kve_result r = kve_store(&t.c, l, s, k + (size_t)s * Hk * d, v + (size_t)s * Hk * d, NULL);
            if (r == KVE_ERROR_CACHE_FULL) continue;
            CHECK_RESULT(r, KVE_OK);
            CHECK_RESULT(kve_attend(&t.c, l, q + (size_t)(s - prompt) * H * d, out), KVE_OK);
            worst = fmax(worst, check_against_reference(&t.c, l, q + (size_t)(s - prompt) * H * d, s, out, 0));
        }
    CHECK(worst < 1e-5, "policy %d, K %s V %s, keys %d: error %g against the reference on rounded K/V",
          (int)kind, type_name[kt], type_name[vt], (int)keys, worst);
    {
        /* every kept slot holds its own token: the value exactly as the type rounds it, the key
           within the type's precision of the input (rotated at its position when post-RoPE) */
        double key_tol = kt == KVE_TYPE_F32 ? 1e-6 : kt == KVE_TYPE_F16 ? 2e-3 : 1.6e-2;
        int bad_v = 0, bad_k = 0, kvh, j, x;
        for (l = 0; l < L; l++)
            for (kvh = 0; kvh < Hk; kvh++)
                for (j = 0; j < kve_length(&t.c, l, kvh); j++) {
                    int64_t p = kve_slot_position(&t.c, l, kvh, j);
                    const float *kin = k + ((size_t)p * Hk + kvh) * d, *vin = v + ((size_t)p * Hk + kvh) * d;
                    float got[64], want[64];
                    unsigned char enc[256];
                    double kd[64], amax = 0, e = 0;
                    kve_row_from_float(vt, vin, d, enc);
                    kve_row_to_float(vt, enc, d, want);
                    kve_read_value(&t.c, l, kvh, j, got);
                    bad_v += memcmp(got, want, (size_t)d * sizeof(float)) != 0;
                    for (x = 0; x < d; x++) kd[x] = kin[x];
                    if (keys == KVE_KEYS_POST_ROPE) ref_rope(kd, d, d, 1, 10000.0, (double)p);
                    kve_read_key(&t.c, l, kvh, j, got);
                    for (x = 0; x < d; x++) {
                        amax = fmax(amax, fabs(kd[x]));
                        e = fmax(e, fabs(got[x] - kd[x]));
                    }
                    bad_k += e > key_tol * amax;
                }
        CHECK(bad_v == 0 && bad_k == 0, "policy %d, K %s V %s: %d values and %d keys not their token's",
              (int)kind, type_name[kt], type_name[vt], bad_v, bad_k);
    }
    CHECK_RESULT(kve_check(&t.c), KVE_OK);
    CHECK(kve_bytes_in_use(&t.c) == (size_t)(kve_length(&t.c, 0, 0) + kve_length(&t.c, 0, 1) +
                                             kve_length(&t.c, 1, 0) + kve_length(&t.c, 1, 1)) *
                                        (kve_row_bytes(kt, d) + kve_row_bytes(vt, d)),
          "bytes in use at K %s V %s", type_name[kt], type_name[vt]);
    free(q); free(k); free(v); free(out);
    tu_close(&t);
}

/* two query heads per KV head; the kernels that convert f16 in registers serve one (below) */
static void policy_on_type(kve_policy_kind kind, kve_type kt, kve_type vt, kve_key_storage keys, int d)
{
    policy_on_type_heads(kind, kt, vt, keys, d, 4);
}

static void test_policies_on_types(void)
{
    static const kve_policy_kind kinds[] = {KVE_POLICY_FULL, KVE_POLICY_STREAMINGLLM, KVE_POLICY_SNAPKV,
                                            KVE_POLICY_PYRAMIDKV, KVE_POLICY_H2O};
    int a, b, i, g, keys;
    for (a = 0; a < 4; a++)
        for (keys = 1; keys <= 2; keys++)
            for (i = 0; i < 5; i++) policy_on_type(kinds[i], all_types[a], all_types[a], (kve_key_storage)keys, 64);
    for (a = 0; a < 4; a++) /* K and V of different types; a growing cache has rows past a multiple of 4 */
        for (b = 0; b < 4; b++)
            if (a != b) {
                policy_on_type(KVE_POLICY_H2O, all_types[a], all_types[b], KVE_KEYS_POST_ROPE, 64);
                policy_on_type(KVE_POLICY_FULL, all_types[a], all_types[b], KVE_KEYS_POST_ROPE, 64);
            }
    for (a = 0; a < 4; a++) /* one query head per KV head: f16 converted inside the kernels */
        for (keys = 1; keys <= 2; keys++) {
            policy_on_type_heads(KVE_POLICY_FULL, all_types[a], all_types[a], (kve_key_storage)keys, 64, 2);
            policy_on_type_heads(KVE_POLICY_SNAPKV, all_types[a], all_types[a], (kve_key_storage)keys, 64, 2);
            if (all_types[a] != KVE_TYPE_Q8_0) /* and past the last whole 16 of head_dim */
                policy_on_type_heads(KVE_POLICY_SNAPKV, all_types[a], all_types[a], (kve_key_storage)keys, 40, 2);
        }
    for (a = 0; a < 4; a++) /* 3, 4 and 5 query heads per KV head: the vector kernels take query
                               rows four, two or one at a time */
        for (keys = 1; keys <= 2; keys++)
            for (g = 3; g <= 5; g++)
                policy_on_type_heads(KVE_POLICY_FULL, all_types[a], all_types[a], (kve_key_storage)keys,
                                     all_types[a] == KVE_TYPE_Q8_0 ? 64 : 40, 2 * g);
    for (a = 0; a < 3; a++) /* a head_dim that is not a multiple of 16 (q8_0 needs 32) */
        for (keys = 1; keys <= 2; keys++)
            policy_on_type(KVE_POLICY_SNAPKV, all_types[a], all_types[a], (kve_key_storage)keys, 40);
}

/* out = each of `rows` rows of d floats at x rounded through type t (what a cache of that type
   stores), for a float cache that must give the typed cache's bits */
static void round_rows(kve_type t, const float *x, int rows, int d, float *out)
{
    unsigned char row[4 * 128];
    int r;
    for (r = 0; r < rows; r++) {
        CHECK_RESULT(kve_row_from_float(t, x + (size_t)r * d, d, row), KVE_OK);
        CHECK_RESULT(kve_row_to_float(t, row, d, out + (size_t)r * d), KVE_OK);
    }
}

/* Attention over stored K/V of a type equals, bit for bit, attention over a float cache given the
   same vectors rounded through the type: keys post-RoPE without rotation (stored as given), so the
   kernels that convert inside their sums (one query head per KV head, with vector instructions)
   are compared with converting first. Odd lengths leave rows past the last whole block of 4. */
static void test_typed_kernels_bit_exact(void)
{
    static const int dims[] = {64, 40, 128};
    int a, di, G, di_n = (int)(sizeof dims / sizeof dims[0]);
    for (a = 1; a < 4; a++)
        for (di = 0; di < di_n; di++)
            for (G = 1; G <= 5; G++) {
                int d = dims[di], Hk = 2, H = Hk * G, n = 37 + 64 * G, s, bad = 0;
                kve_type ty = all_types[a];
                kve_config c;
                tu_cache typed, rounded;
                float *k, *v, *q, *kr, *vr, *o1, *o2, *w1, *w2;
                kve_attend_options opt1, opt2;
                if (ty == KVE_TYPE_Q8_0 && d % 32) continue;
                memset(&c, 0, sizeof c);
                c.n_layers = 1; c.n_heads = H; c.n_kv_heads = Hk; c.head_dim = d; c.capacity = n;
                c.rope_layout = KVE_ROPE_NONE;
                CHECK_RESULT(tu_open(&rounded, &c), KVE_OK);
                c.k_type = ty; c.v_type = ty;
                CHECK_RESULT(tu_open(&typed, &c), KVE_OK);
                k = (float *)tu_alloc((size_t)Hk * d * sizeof(float));
                v = (float *)tu_alloc((size_t)Hk * d * sizeof(float));
                kr = (float *)tu_alloc((size_t)Hk * d * sizeof(float));
                vr = (float *)tu_alloc((size_t)Hk * d * sizeof(float));
                q = (float *)tu_alloc((size_t)H * d * sizeof(float));
                o1 = (float *)tu_alloc((size_t)H * d * sizeof(float));
                o2 = (float *)tu_alloc((size_t)H * d * sizeof(float));
                w1 = (float *)tu_alloc((size_t)H * n * sizeof(float));
                w2 = (float *)tu_alloc((size_t)H * n * sizeof(float));
                tu_seed(400 + 10 * a + di + 100 * G);
                for (s = 0; s < n; s++) {
                    tu_fill(k, (size_t)Hk * d, 1.5f);
                    tu_fill(v, (size_t)Hk * d, 1.0f);
                    round_rows(ty, k, Hk, d, kr); /* the float cache gets the type's rounding */
                    round_rows(ty, v, Hk, d, vr);
                    CHECK_RESULT(kve_store(&typed.c, 0, s, k, v, NULL), KVE_OK);
                    CHECK_RESULT(kve_store(&rounded.c, 0, s, kr, vr, NULL), KVE_OK);
                }
                tu_fill(q, (size_t)H * d, 1.0f);
                memset(&opt1, 0, sizeof opt1); memset(&opt2, 0, sizeof opt2);
                opt1.weights = w1; opt2.weights = w2;
                CHECK_RESULT(kve_attend_ex(&typed.c, 0, q, o1, &opt1), KVE_OK);
                CHECK_RESULT(kve_attend_ex(&rounded.c, 0, q, o2, &opt2), KVE_OK);
                bad += memcmp(o1, o2, (size_t)H * d * sizeof(float)) != 0;
                bad += memcmp(w1, w2, (size_t)H * n * sizeof(float)) != 0;
                { /* causal: the last 5 tokens' queries, each blind to the keys after it */
                    float *qp = (float *)tu_alloc((size_t)5 * H * d * sizeof(float));
                    float *p1 = (float *)tu_alloc((size_t)5 * H * d * sizeof(float));
                    float *p2 = (float *)tu_alloc((size_t)5 * H * d * sizeof(float));
                    tu_fill(qp, (size_t)5 * H * d, 1.0f);
                    CHECK_RESULT(kve_prefill(&typed.c, 0, 5, qp, NULL, p1), KVE_OK);
                    CHECK_RESULT(kve_prefill(&rounded.c, 0, 5, qp, NULL, p2), KVE_OK);
                    bad += memcmp(p1, p2, (size_t)5 * H * d * sizeof(float)) != 0;
                    free(qp); free(p1); free(p2);
                }
                CHECK(bad == 0, "%s, head_dim %d, %d query head(s) per KV head: the typed cache differs "
                      "from rounded floats", type_name[ty], d, G);
                free(k); free(v); free(kr); free(vr); free(q); free(o1); free(o2); free(w1); free(w2);
                tu_close(&typed);
                tu_close(&rounded);
            }
}

/* Pre-RoPE keys whose effective positions are in the angle table are rotated inside the vector
   kernels (both RoPE layouts; head_dim 48 takes that path for interleaved pairs only). StreamingLLM
   with pos-shift numbers them in cache order: sinks at their own positions, the window from
   `sinks` on. Against the reference at those positions, and a typed cache against floats holding
   the type-rounded rows, bit for bit, for 1 to 5 query heads per KV head. */
static void test_prerope_rotated_in_kernels(void)
{
    static const int dims[] = {64, 48};
    static const kve_rope_layout layouts[] = {KVE_ROPE_INTERLEAVED, KVE_ROPE_HALF};
    int li, di, G, a;
    for (li = 0; li < 2; li++)
        for (di = 0; di < 2; di++)
            for (G = 1; G <= 5; G++)
                for (a = 0; a < 4; a++) {
                    int d = dims[di], Hk = 2, H = Hk * G, sinks = 4, s, bad = 0, j;
                    kve_type ty = all_types[a];
                    kve_config c;
                    tu_cache typed, rounded;
                    float q[10 * 64], k[2 * 64], v[2 * 64], kr[2 * 64], vr[2 * 64], o1[10 * 64], o2[10 * 64];
                    double worst = 0;
                    if (ty == KVE_TYPE_Q8_0 && d % 32) continue;
                    memset(&c, 0, sizeof c);
                    c.n_layers = 1; c.n_heads = H; c.n_kv_heads = Hk; c.head_dim = d; c.capacity = 40;
                    c.key_storage = KVE_KEYS_PRE_ROPE; c.rope_layout = layouts[li];
                    c.policy.kind = KVE_POLICY_STREAMINGLLM; c.policy.sinks = sinks;
                    c.policy.pos_shift = KVE_POS_SHIFT_ON;
                    CHECK_RESULT(tu_open(&rounded, &c), KVE_OK);
                    c.k_type = ty; c.v_type = ty;
                    CHECK_RESULT(tu_open(&typed, &c), KVE_OK);
                    tu_seed(900 + 100 * li + 10 * di + G + 1000 * a);
                    for (s = 0; s < 75; s++) {
                        int64_t oldest = INT64_MAX;
                        tu_fill(q, (size_t)H * d, 1.0f);
                        tu_fill(k, (size_t)Hk * d, 1.5f);
                        tu_fill(v, (size_t)Hk * d, 1.0f);
                        round_rows(ty, k, Hk, d, kr);
                        round_rows(ty, v, Hk, d, vr);
                        CHECK_RESULT(kve_store(&typed.c, 0, s, k, v, NULL), KVE_OK);
                        CHECK_RESULT(kve_store(&rounded.c, 0, s, kr, vr, NULL), KVE_OK);
                        CHECK_RESULT(kve_attend(&typed.c, 0, q, o1), KVE_OK);
                        CHECK_RESULT(kve_attend(&rounded.c, 0, q, o2), KVE_OK);
                        bad += memcmp(o1, o2, (size_t)H * d * sizeof(float)) != 0;
                        for (j = 0; j < kve_length(&typed.c, 0, 0); j++) {
                            int64_t p = kve_slot_position(&typed.c, 0, 0, j);
                            if (p >= sinks && p < oldest) oldest = p;
                        }
                        if (oldest == INT64_MAX) oldest = sinks; /* no window yet */
                        worst = fmax(worst, check_against_reference_sinks(&typed.c, 0, q, s, o1,
                                                                          oldest - sinks, sinks));
                    }
                    CHECK(worst < 1e-5, "pre-RoPE %s, layout %d, head_dim %d, %d query head(s) per KV head: "
                          "error %g against the reference", type_name[ty], (int)layouts[li], d, G, worst);
                    CHECK(bad == 0, "pre-RoPE %s, layout %d, head_dim %d, %d query head(s) per KV head: %d "
                          "steps differ from rounded floats", type_name[ty], (int)layouts[li], d, G, bad);
                    tu_close(&typed);
                    tu_close(&rounded);
                }
}

/* pos-shift re-rotates the sinks from their f32 copy whatever the key type */
static void test_posshift_sinks_on_types(void)
{
    int a;
    for (a = 1; a < 4; a++) {
        kve_config c;
        tu_cache t;
        float q[4 * 64], k[2 * 64], v[2 * 64], out[4 * 64];
        int s;
        double worst = 0;
        memset(&c, 0, sizeof c);
        c.n_layers = 1; c.n_heads = 4; c.n_kv_heads = 2; c.head_dim = 64; c.capacity = 16;
        c.k_type = all_types[a]; c.v_type = all_types[a];
        c.policy.kind = KVE_POLICY_STREAMINGLLM; c.policy.sinks = 4;
        CHECK_RESULT(tu_open(&t, &c), KVE_OK);
        tu_seed(70 + a);
        for (s = 0; s < 60; s++) {
            tu_fill(q, 256, 1.0f); tu_fill(k, 128, 1.0f); tu_fill(v, 128, 1.0f);
            CHECK_RESULT(kve_store(&t.c, 0, s, k, v, NULL), KVE_OK);
            CHECK_RESULT(kve_attend(&t.c, 0, q, out), KVE_OK);
            /* post-RoPE: the stored sink keys are already at their shifted positions, so the
               reference with true query position and stored keys is exact */
            worst = fmax(worst, check_against_reference(&t.c, 0, q, s, out, 0));
        }
        CHECK(worst < 1e-5, "pos-shift at %s: %g", type_name[all_types[a]], worst);
        {
            /* the sink keys were re-rotated from f32: reading one back equals rotating its f32
               copy to the shifted position, rounded once */
            float kf[64], want[64];
            unsigned char enc[256];
            kve_read_key(&t.c, 0, 0, 0, kf);
            memcpy(want, t.c.sink_keys, sizeof want);
            {
                int64_t oldest = INT64_MAX;
                int j;
                for (j = 4; j < 16; j++)
                    if (kve_slot_position(&t.c, 0, 0, j) < oldest) oldest = kve_slot_position(&t.c, 0, 0, j);
                kve_rope_apply(&c, want, oldest - 4);
            }
            kve_row_from_float(c.k_type, want, 64, enc);
            kve_row_to_float(c.k_type, enc, 64, want);
            CHECK(memcmp(kf, want, sizeof kf) == 0, "sink key at %s not re-rotated from its f32 copy",
                  type_name[all_types[a]]);
        }
        tu_close(&t);
    }
}

/* ---- bytes, alignment, refusals --------------------------------------------------------------- */
static void test_bytes_and_refusals(void)
{
    kve_config c;
    size_t kb, vb, bytes;
    memset(&c, 0, sizeof c);
    c.n_layers = 3; c.n_heads = 4; c.n_kv_heads = 2; c.head_dim = 64; c.capacity = 10;
    c.k_type = KVE_TYPE_F16; c.v_type = KVE_TYPE_Q8_0;
    CHECK_RESULT(kve_buffer_bytes(&c, KVE_LAYOUT_DEFAULT, &kb, &vb), KVE_OK);
    CHECK(kb == 3u * 10 * 2 * 64 * 2 && vb == 3u * 10 * 2 * 68, "buffer bytes f16 %zu, q8_0 %zu", kb, vb);
    CHECK_RESULT(kve_buffer_bytes(&c, KVE_LAYOUT_HEAD_MAJOR, &kb, &vb), KVE_OK);
    CHECK(kb == 3u * 10 * 2 * 64 * 2 && vb == 3u * 10 * 2 * 68, "head-major bytes");
    c.head_dim = 48;
    CHECK_RESULT(kve_cache_size(&c, &bytes), KVE_ERROR_INVALID_TYPE);
    c.v_type = KVE_TYPE_BF16;
    CHECK_RESULT(kve_cache_size(&c, &bytes), KVE_OK);
    c.v_type = (kve_type)(KVE_TYPE_Q8_0 + 1);
    CHECK_RESULT(kve_cache_size(&c, &bytes), KVE_ERROR_INVALID_ENUM);
    c.v_type = KVE_TYPE_F16;
    {
        /* f16 buffers need 2-byte alignment, f32 ones 4 */
        static double kmem[4096], vmem[4096], mem[8192];
        kve_buffers b;
        kve_cache cache;
        c.head_dim = 8;
        CHECK_RESULT(kve_buffer_bytes(&c, KVE_LAYOUT_DEFAULT, &kb, &vb), KVE_OK);
        CHECK_RESULT(kve_cache_size(&c, &bytes), KVE_OK);
        memset(&b, 0, sizeof b);
        b.k = (char *)kmem + 2; b.v = (char *)vmem + 2; b.k_bytes = kb; b.v_bytes = vb;
        CHECK_RESULT(kve_cache_init(&c, &b, mem, sizeof mem, &cache), KVE_OK);
        b.k = (char *)kmem + 1;
        CHECK_RESULT(kve_cache_init(&c, &b, mem, sizeof mem, &cache), KVE_ERROR_MISALIGNED);
        b.k = kmem; b.k_bytes = kb - 1;
        CHECK_RESULT(kve_cache_init(&c, &b, mem, sizeof mem, &cache), KVE_ERROR_BUFFER_TOO_SMALL);
        b.k_bytes = kb;
        b.layout = KVE_LAYOUT_STRIDES;
        b.k_slot_stride = 2 * 8 * 2; b.k_head_stride = 8 * 2; b.k_layer_stride = 10 * 2 * 8 * 2;
        b.v_slot_stride = 2 * 8 * 2; b.v_head_stride = 8 * 2; b.v_layer_stride = 10 * 2 * 8 * 2;
        CHECK_RESULT(kve_cache_init(&c, &b, mem, sizeof mem, &cache), KVE_OK);
        b.v_head_stride = 8 * 2 - 2; /* two heads' f16 vectors overlap by one value */
        CHECK_RESULT(kve_cache_init(&c, &b, mem, sizeof mem, &cache), KVE_ERROR_OVERLAPPING_STRIDES);
        b.v_head_stride = 8 * 2 + 1;
        CHECK_RESULT(kve_cache_init(&c, &b, mem, sizeof mem, &cache), KVE_ERROR_MISALIGNED);
        /* each buffer's strides by its own type: f32 needs 4, f16 2 */
        b.k = kmem; b.v = vmem; b.k_bytes = sizeof kmem; b.v_bytes = sizeof vmem;
        c.k_type = KVE_TYPE_F32;
        b.k_slot_stride = 2 * 8 * 4; b.k_head_stride = 8 * 4; b.k_layer_stride = 10 * 2 * 8 * 4;
        b.v_slot_stride = 2 * 8 * 2 + 2; b.v_head_stride = 8 * 2; b.v_layer_stride = 10 * (2 * 8 * 2 + 2);
        CHECK_RESULT(kve_cache_init(&c, &b, mem, sizeof mem, &cache), KVE_OK);
        c.k_type = KVE_TYPE_F16; c.v_type = KVE_TYPE_F32;
        b.k_slot_stride = 2 * 8 * 2 + 2; b.k_head_stride = 8 * 2; b.k_layer_stride = 10 * (2 * 8 * 2 + 2);
        b.v_slot_stride = 2 * 8 * 4 + 2; b.v_head_stride = 8 * 4; b.v_layer_stride = 10 * (2 * 8 * 4 + 2);
        CHECK_RESULT(kve_cache_init(&c, &b, mem, sizeof mem, &cache), KVE_ERROR_MISALIGNED);
        b.v_slot_stride = 2 * 8 * 4 + 4; b.v_layer_stride = 10 * (2 * 8 * 4 + 4);
        CHECK_RESULT(kve_cache_init(&c, &b, mem, sizeof mem, &cache), KVE_OK);
        c.v_type = KVE_TYPE_F16;
    }
    {
        /* values a type cannot hold are refused before anything changes */
        tu_cache t;
        float k[2 * 32], v[2 * 32];
        int i;
        c.head_dim = 32; c.n_layers = 1; c.k_type = KVE_TYPE_F16; c.v_type = KVE_TYPE_Q8_0;
        CHECK_RESULT(tu_open(&t, &c), KVE_OK);
        for (i = 0; i < 64; i++) k[i] = v[i] = 1.0f;
        k[0] = 50000.0f; k[1] = 50000.0f; /* each fits an f16, their rotated pair does not */
        CHECK_RESULT(kve_store(&t.c, 0, 0, k, v, NULL), KVE_ERROR_OUT_OF_TYPE_RANGE);
        CHECK(kve_length(&t.c, 0, 0) == 0 && kve_newest_position(&t.c, 0) == -1, "a refused store changes nothing");
        k[1] = 1.0f;
        CHECK_RESULT(kve_store(&t.c, 0, 0, k, v, NULL), KVE_OK);
        v[40] = 1e7f; /* q8_0's f16 scale would be 78740 */
        CHECK_RESULT(kve_store(&t.c, 0, 1, k, v, NULL), KVE_ERROR_OUT_OF_TYPE_RANGE);
        v[40] = 8e6f;
        CHECK_RESULT(kve_store(&t.c, 0, 1, k, v, NULL), KVE_OK);
        tu_close(&t);
        c.key_storage = KVE_KEYS_PRE_ROPE; /* stored unrotated: only the values themselves count */
        k[1] = 50000.0f;
        CHECK_RESULT(tu_open(&t, &c), KVE_OK);
        CHECK_RESULT(kve_store(&t.c, 0, 0, k, v, NULL), KVE_OK);
        tu_close(&t);
    }
}

/* values at the edge of what a type holds are either refused or stored finite: post-RoPE keys
   are rotated in float, which may round a pair's component above its norm */
static void test_edges_of_range(void)
{
    kve_config c;
    tu_cache t;
    float k[2] = {-42826.7227f, 49585.7031f}, v[2] = {1.0f, 1.0f}, kr[2];
    int trial, finite_bad = 0, stored = 0;
    kve_result r;
    memset(&c, 0, sizeof c);
    c.n_layers = 1; c.n_heads = 1; c.head_dim = 2; c.capacity = 1 << 12;
    c.k_type = KVE_TYPE_F16;
    CHECK_RESULT(tu_open(&t, &c), KVE_OK);
    r = kve_store(&t.c, 0, 4, k, v, NULL);
    CHECK(r == KVE_ERROR_OUT_OF_TYPE_RANGE ||
          (r == KVE_OK && kve_read_key(&t.c, 0, 0, 0, kr) == KVE_OK && isfinite(kr[0]) && isfinite(kr[1])),
          "a pair of norm just below 65520 at position 4: %s", kve_result_string(r));
    tu_seed(8);
    for (trial = 0; trial < 3000; trial++) {
        double norm = 65400.0 + 120.0 * tu_uniform(), ang = 6.283185307179586 * tu_uniform();
        k[0] = (float)(norm * cos(ang));
        k[1] = (float)(norm * sin(ang));
        r = kve_store(&t.c, 0, 5 + trial, k, v, NULL);
        if (r != KVE_OK) continue;
        stored++;
        kve_read_key(&t.c, 0, 0, (int32_t)(kve_length(&t.c, 0, 0) - 1), kr);
        finite_bad += !isfinite(kr[0]) || !isfinite(kr[1]);
    }
    CHECK(finite_bad == 0 && stored > 1000, "keys near f16's limit: %d of %d stored are not finite", finite_bad, stored);
    tu_close(&t);
    {
        /* a q8_0 block so small that 1/scale overflows: finite, and zero */
        float x[32] = {1e-37f, -5e-38f}, back[32];
        unsigned char q[34];
        int i, ok = 1;
        CHECK_RESULT(kve_row_from_float(KVE_TYPE_Q8_0, x, 32, q), KVE_OK);
        CHECK_RESULT(kve_row_to_float(KVE_TYPE_Q8_0, q, 32, back), KVE_OK);
        for (i = 0; i < 32; i++) ok &= back[i] == 0.0f;
        CHECK(ok, "a block of tiny values dequantises to zero");
    }
}

/* An f16 post-RoPE key is accepted exactly when every rotated pair's norm (the largest value any
   rotation can give either element) stays below f16's limit. The pairs are found here from the
   layout's definition: (2i, 2i+1) interleaved, (i, i + rope_dims/2) half; partial rotary leaves
   the tail unpaired. The large element is put on either side of its pair. */
static void test_range_by_layout(void)
{
    static const kve_rope_layout layouts[2] = {KVE_ROPE_INTERLEAVED, KVE_ROPE_HALF};
    int li, trial, wrong = 0, tried = 0;
    tu_seed(21);
    for (li = 0; li < 2; li++)
        for (trial = 0; trial < 400; trial++) {
            kve_config c;
            tu_cache t;
            float k[16], v[16];
            int32_t d = 16, rd = trial % 2 ? 16 : 8, i, a, b, pair = (int32_t)(tu_uniform() * rd / 2);
            double big = 40000.0 + 25000.0 * tu_uniform(), small = 65000.0 * tu_uniform();
            int fits;
            kve_result r;
            memset(&c, 0, sizeof c);
            c.n_layers = 1; c.n_heads = 1; c.head_dim = d; c.capacity = 4;
            c.rope_dims = rd; c.rope_layout = layouts[li]; c.k_type = KVE_TYPE_F16;
            if (layouts[li] == KVE_ROPE_HALF) { a = pair; b = pair + rd / 2; }
            else { a = 2 * pair; b = 2 * pair + 1; }
            if (trial % 4 >= 2) { int32_t x = a; a = b; b = x; }
            for (i = 0; i < d; i++) k[i] = v[i] = 0.5f;
            k[a] = (float)small;
            k[b] = (float)big;
            /* away from the limit by more than the rotation's rounding allowance */
            if (fabs(sqrt((double)k[a] * k[a] + (double)k[b] * k[b]) - 65520.0) < 100.0) continue;
            fits = sqrt((double)k[a] * k[a] + (double)k[b] * k[b]) < 65520.0;
            CHECK_RESULT(tu_open(&t, &c), KVE_OK);
            r = kve_store(&t.c, 0, 0, k, v, NULL);
            tried++;
            if (r != (fits ? KVE_OK : KVE_ERROR_OUT_OF_TYPE_RANGE)) {
                if (wrong++ < 5)
                    CHECK(0, "%s layout, rope_dims %d, pair (%d, %d) = (%g, %g): %s",
                          li ? "half" : "interleaved", rd, a, b, k[a], k[b], kve_result_string(r));
            }
            tu_close(&t);
        }
    CHECK(wrong == 0 && tried > 600, "f16 range by pair: %d of %d wrong", wrong, tried);
}

int main(int argc, char **argv)
{
#if defined(__AVX2__) && defined(__F16C__) && (defined(__GNUC__) || defined(__clang__))
    /* the build for AVX2 + F16C (the kernels of CPUs without AVX-512) on a CPU without AVX2
       (every CPU with AVX2 has F16C, which not every compiler can ask about) */
    if (!__builtin_cpu_supports("avx2")) {
        printf("test_types: 0 passed, 0 failed (skipped: this CPU lacks AVX2)\n");
        return 0;
    }
#endif
    test_ggml_golden(argc > 1 ? argv[1] : "tests/data/ggml-conversions.txt");
    test_round_trips();
    test_policies_on_types();
    test_posshift_sinks_on_types();
    test_typed_kernels_bit_exact();
    test_prerope_rotated_in_kernels();
    test_bytes_and_refusals();
    test_edges_of_range();
    test_range_by_layout();
    (void)ref_attend; (void)rel_err_ff; /* shared helpers this file has no use for */
    return tu_summary("test_types");
}
