/* Engines with their own attention, and the sequence life cycle: kve_observe, kve_accumulate,
   kve_attention_positions, kve_store_n, kve_remove, kve_shift, kve_cache_copy, saved state, and
   n_threads. Each property is checked against a second cache built the direct way (storing the
   final sequence, attending with the library), not against recorded numbers. */
#include <stdint.h>
#define KVEVICT_IMPLEMENTATION
#include "kvevict.h"
#include "testutil.h"

#define L 2
#define H 4
#define HK 2
#define D 16
#define MAXCAP 96

/* one policy setting of the matrix */
typedef struct lc_case {
    const char *name;
    kve_policy_config policy;
} lc_case;

static kve_config lc_config(const lc_case *pc, int32_t capacity, kve_key_storage keys, kve_type kt,
                            kve_type vt)
{
    kve_config c;
    memset(&c, 0, sizeof c);
    c.n_layers = L; c.n_heads = H; c.n_kv_heads = HK; c.head_dim = D; c.capacity = capacity;
    c.key_storage = keys; c.k_type = kt; c.v_type = vt;
    c.policy = pc->policy;
    return c;
}

/* the token at (layer, position) and the query that goes with it: the same numbers whichever
   cache they are given to */
static void lc_token(int32_t layer, int64_t pos, unsigned salt, float *k, float *v, float *q)
{
    tu_seed((unsigned long long)pos * 7919ull + (unsigned long long)layer * 104729ull + salt);
    tu_fill(k, HK * D, 1.0f);
    tu_fill(v, HK * D, 1.0f);
    tu_fill(q, H * D, 1.0f);
}

/* stores token pos in every layer and attends with the library; out: [L][H*D] */
static kve_result lc_step(kve_cache *c, int64_t pos, unsigned salt, float *out)
{
    float k[HK * D], v[HK * D], q[H * D];
    int32_t l;
    kve_result r;
    for (l = 0; l < L; l++) {
        lc_token(l, pos, salt, k, v, q);
        if ((r = kve_store(c, l, pos, k, v, NULL)) != KVE_OK) return r;
        if ((r = kve_attend(c, l, q, out + (size_t)l * H * D)) != KVE_OK) return r;
    }
    return KVE_OK;
}

/* An engine's own attention, following the manual's recipe: rotate the query at query_pos and
   each key at key_pos[slot] (unless -1), softmax of q.k / sqrt(head_dim), weighted values.
   Written independently of the library's kernels, in double. weights: [H][capacity] or NULL. */
static void engine_attend(const kve_cache *c, int32_t layer, const float *q, float *out,
                          float *weights)
{
    const kve_config *cfg = kve_cache_config(c);
    int32_t h, g, s, i, G = H / HK;
    static int64_t key_pos[MAXCAP];
    static float keys[MAXCAP][D], vals[MAXCAP][D];
    for (h = 0; h < HK; h++) {
        int64_t qpos;
        int32_t n = kve_length(c, layer, h);
        CHECK_RESULT(kve_attention_positions(c, layer, h, &qpos, key_pos), KVE_OK);
        CHECK(qpos >= 0, "a query position below 0");
        for (s = 0; s < n; s++) {
            CHECK(key_pos[s] >= (cfg->key_storage == KVE_KEYS_PRE_ROPE ? 0 : -1),
                  "slot %d: key position %lld", s, (long long)key_pos[s]);
            kve_read_key(c, layer, h, s, keys[s]);
            kve_read_value(c, layer, h, s, vals[s]);
            if (key_pos[s] >= 0) kve_rope_apply(cfg, keys[s], key_pos[s]);
        }
        for (g = 0; g < G; g++) {
            int32_t hq = h * G + g;
            float qr[D];
            double lg[MAXCAP], mx = -INFINITY, sum = 0.0, acc[D];
            memcpy(qr, q + (size_t)hq * D, sizeof qr);
            if (qpos >= 0) kve_rope_apply(cfg, qr, qpos);
            for (s = 0; s < n; s++) {
                double dot = 0.0;
                for (i = 0; i < D; i++) dot += (double)qr[i] * keys[s][i];
                lg[s] = dot / sqrt((double)D);
                mx = lg[s] > mx ? lg[s] : mx;
            }
            for (s = 0; s < n; s++) sum += (lg[s] = exp(lg[s] - mx));
            for (i = 0; i < D; i++) acc[i] = 0.0;
            for (s = 0; s < n; s++)
                for (i = 0; i < D; i++) acc[i] += lg[s] / sum * vals[s][i];
            for (i = 0; i < D; i++) out[(size_t)hq * D + i] = (float)acc[i];
            if (weights)
                for (s = 0; s < n; s++) weights[(size_t)hq * cfg->capacity + s] = (float)(lg[s] / sum);
        }
    }
}

/* where layer 0 starts in a saved state: the 24-byte header, then 36 configuration fields */
#define LC_LAYER0 (24 + 36 * 8)

/* the policies every life-cycle test runs (fields not named take the library's defaults) */
static lc_case lc_cases[] = {
    {"full", {.kind = KVE_POLICY_FULL}},
    {"streaming pos-shift", {.kind = KVE_POLICY_STREAMINGLLM, .budget = 24, .sinks = 4,
                             .pos_shift = KVE_POS_SHIFT_ON}},
    {"streaming no shift", {.kind = KVE_POLICY_STREAMINGLLM, .budget = 24, .sinks = 3,
                            .pos_shift = KVE_POS_SHIFT_OFF}},
    {"snapkv evict", {.kind = KVE_POLICY_SNAPKV, .budget = 24, .window = 8, .kernel = 5,
                      .decode = KVE_DECODE_EVICT, .evict_batch = 4}},
    {"pyramidkv evict", {.kind = KVE_POLICY_PYRAMIDKV, .budget = 24, .window = 8, .kernel = 5,
                         .pooling = KVE_POOL_AVG, .gqa = KVE_REDUCE_MAX, .beta = 4,
                         .decode = KVE_DECODE_EVICT, .evict_batch = 4}},
    {"h2o", {.kind = KVE_POLICY_H2O, .budget = 24, .window = 8}},
    {"knorm evict", {.kind = KVE_POLICY_KNORM, .budget = 24, .window = 4,
                     .decode = KVE_DECODE_EVICT, .evict_batch = 3}},
    {"tova evict", {.kind = KVE_POLICY_TOVA, .budget = 24, .decode = KVE_DECODE_EVICT}},
    {"knorm pyramid evict", {.kind = KVE_POLICY_KNORM, .budget = 24, .window = 8,
                             .gqa = KVE_REDUCE_MAX, .beta = 4, .decode = KVE_DECODE_EVICT,
                             .evict_batch = 2, .allocation = KVE_ALLOCATION_PYRAMID}},
    {"observed evict", {.kind = KVE_POLICY_OBSERVED_ATTENTION, .budget = 24, .window = 4,
                        .decode = KVE_DECODE_EVICT, .evict_batch = 2}},
    {"expected evict", {.kind = KVE_POLICY_EXPECTED_ATTENTION, .budget = 24, .window = 2,
                        .sinks = 2, .decode = KVE_DECODE_EVICT, .evict_batch = 3,
                        .n_future_positions = 16}},
    {"lagkv evict", {.kind = KVE_POLICY_LAGKV, .budget = 24, .window = 2, .sinks = 2,
                     .decode = KVE_DECODE_EVICT, .evict_batch = 4, .lag_size = 4}},
    {"streaming no sinks", {.kind = KVE_POLICY_STREAMINGLLM, .budget = 20, .sinks = KVE_NO_SINKS,
                            .pos_shift = KVE_POS_SHIFT_ON}},
    {"keydiff evict", {.kind = KVE_POLICY_KEYDIFF, .budget = 24, .window = 3,
                       .decode = KVE_DECODE_EVICT, .evict_batch = 2}},
    {"random evict", {.kind = KVE_POLICY_RANDOM, .budget = 24, .window = 2, .seed = 9,
                      .decode = KVE_DECODE_EVICT, .evict_batch = 5}},
};
#define N_CASES ((int)(sizeof lc_cases / sizeof lc_cases[0]))

static const kve_key_storage lc_storages[2] = {KVE_KEYS_POST_ROPE, KVE_KEYS_PRE_ROPE};

static size_t lc_save(const kve_cache *c, unsigned char **blob);
static int lc_state_is(const kve_cache *c, const unsigned char *blob, size_t n);

/* 1b. SimLayerKV evicts only when a prompt is compressed: after a lazy layer's compression the
   engine's attention still equals kve_attend, both key storages */
static void test_engine_attention_simlayerkv(void)
{
    static const lc_case slk = {"simlayerkv", {.kind = KVE_POLICY_SIMLAYERKV, .window = 2,
                                               .sinks = 2, .n_recent = 6, .lazy_threshold = 1e-6}};
    int si, l;
    for (si = 0; si < 2; si++) {
        kve_config cfg = lc_config(&slk, 48, lc_storages[si], KVE_TYPE_F32, KVE_TYPE_F32);
        tu_cache t;
        int64_t pos;
        double worst = 0.0;
        CHECK_RESULT(tu_open(&t, &cfg), KVE_OK);
        for (pos = 0; pos < 40; pos++) {
            float k[HK * D], v[HK * D], q[H * D], lib[H * D], eng[H * D];
            if (pos == 30) { /* the prompt: compressed to 2 sinks + 4 recent tokens */
                CHECK_RESULT(kve_compress_all(&t.c), KVE_OK);
                CHECK(kve_length(&t.c, 0, 0) == 6 && kve_length(&t.c, 1, 1) == 6,
                      "SimLayerKV: %d tokens after a lazy compression", kve_length(&t.c, 0, 0));
            }
            for (l = 0; l < L; l++) {
                lc_token(l, pos, 1, k, v, q);
                CHECK_RESULT(kve_store(&t.c, l, pos, k, v, NULL), KVE_OK);
                engine_attend(&t.c, l, q, eng, NULL);
                CHECK_RESULT(kve_attend(&t.c, l, q, lib), KVE_OK);
                worst = fmax(worst, rel_err_ff(eng, lib, H * D));
            }
        }
        CHECK(worst < 1e-5, "SimLayerKV, %s keys: engine attention differs by %.3g",
              si ? "pre-RoPE" : "post-RoPE", worst);
        tu_close(&t);
    }
}

/* 1. the engine's attention equals kve_attend for every policy, storage, type, after evictions */
static void test_engine_attention(void)
{
    static const kve_type types[2] = {KVE_TYPE_F32, KVE_TYPE_F16};
    int ci, si, ti, l;
    for (ci = 0; ci < N_CASES; ci++)
        for (si = 0; si < 2; si++)
            for (ti = 0; ti < 2; ti++) {
                kve_config cfg = lc_config(&lc_cases[ci], 48, lc_storages[si], types[ti], types[ti]);
                tu_cache t;
                int64_t pos;
                double worst = 0.0;
                int evicted = 0;
                CHECK_RESULT(tu_open(&t, &cfg), KVE_OK);
                for (pos = 0; pos < 90; pos++) {
                    float k[HK * D], v[HK * D], q[H * D], lib[H * D], eng[H * D];
                    for (l = 0; l < L; l++) {
                        lc_token(l, pos, 1, k, v, q);
                        if (kve_store(&t.c, l, pos, k, v, NULL) != KVE_OK) break;
                        engine_attend(&t.c, l, q, eng, NULL);
                        CHECK_RESULT(kve_attend(&t.c, l, q, lib), KVE_OK);
                        worst = fmax(worst, rel_err_ff(eng, lib, H * D));
                    }
                    if (l < L) break;
                    evicted |= kve_length(&t.c, 0, 0) < pos + 1;
                }
                CHECK(worst < 1e-5, "%s, %s keys, type %d: engine attention differs by %.3g",
                      lc_cases[ci].name, si ? "pre-RoPE" : "post-RoPE", (int)types[ti], worst);
                CHECK(ci == 0 || evicted, "%s: no eviction happened", lc_cases[ci].name);
                CHECK(ci != 0 || pos == 48, "full: the cache filled at 48 tokens (%lld)", (long long)pos);
                tu_close(&t);
            }
}

/* 2. kve_observe then kve_compress keeps what kve_prefill then kve_compress keeps */
static void test_observe_compress(void)
{
    int ci, si;
    for (ci = 3; ci <= 4; ci++) /* SnapKV, PyramidKV */
        for (si = 0; si < 2; si++) {
            kve_config cfg = lc_config(&lc_cases[ci], 64, lc_storages[si], KVE_TYPE_F32, KVE_TYPE_F32);
            tu_cache a, b;
            static float qs[60 * H * D], outs[60 * H * D];
            float k[HK * D], v[HK * D];
            int32_t l, h, s, n = 60, same = 1;
            CHECK_RESULT(tu_open(&a, &cfg), KVE_OK);
            CHECK_RESULT(tu_open(&b, &cfg), KVE_OK);
            for (l = 0; l < L; l++) {
                for (s = 0; s < n; s++) {
                    lc_token(l, s, 2, k, v, qs + (size_t)s * H * D);
                    kve_store(&a.c, l, s, k, v, NULL);
                    kve_store(&b.c, l, s, k, v, NULL);
                }
                CHECK_RESULT(kve_prefill(&a.c, l, n, qs, NULL, outs), KVE_OK);
                CHECK_RESULT(kve_observe(&b.c, l, n, qs, NULL), KVE_OK);
            }
            CHECK_RESULT(kve_compress_all(&a.c), KVE_OK);
            CHECK_RESULT(kve_compress_all(&b.c), KVE_OK);
            for (l = 0; l < L; l++)
                for (h = 0; h < HK; h++) {
                    same &= kve_length(&a.c, l, h) == kve_length(&b.c, l, h);
                    for (s = 0; s < kve_length(&a.c, l, h); s++)
                        same &= kve_slot_position(&a.c, l, h, s) == kve_slot_position(&b.c, l, h, s);
                }
            CHECK(same && kve_length(&a.c, 0, 0) < n, "%s: observe+compress kept other tokens",
                  lc_cases[ci].name);
            tu_close(&a);
            tu_close(&b);
        }
}

static void lc_store_range(kve_cache *c, int64_t from, int64_t to, unsigned salt)
{
    static float out[L * H * D];
    int64_t p;
    for (p = from; p < to; p++) lc_step(c, p, salt, out);
}

static kve_result lc_never_room(kve_cache *c, int32_t layer, int32_t *write_slot, void *user)
{
    (void)c; (void)layer; (void)write_slot; (void)user;
    return KVE_ERROR_CACHE_FULL;
}

/* 3. kve_accumulate of kve_attend's weights gives H2O the same scores and evictions */
static void test_accumulate(void)
{
    kve_config cfg = lc_config(&lc_cases[5], 48, KVE_KEYS_POST_ROPE, KVE_TYPE_F32, KVE_TYPE_F32);
    tu_cache a, b, e;
    static float w[H * 48], we[H * 48];
    int64_t pos;
    int32_t l, h, s, same = 1;
    double worst = 0.0;
    kve_attend_options opt;
    memset(&opt, 0, sizeof opt);
    opt.weights = w;
    CHECK_RESULT(tu_open(&a, &cfg), KVE_OK);
    CHECK_RESULT(tu_open(&b, &cfg), KVE_OK);
    CHECK_RESULT(tu_open(&e, &cfg), KVE_OK);
    for (pos = 0; pos < 80; pos++)
        for (l = 0; l < L; l++) {
            float k[HK * D], v[HK * D], q[H * D], out[H * D];
            lc_token(l, pos, 3, k, v, q);
            kve_store(&a.c, l, pos, k, v, NULL);
            kve_store(&b.c, l, pos, k, v, NULL);
            kve_store(&e.c, l, pos, k, v, NULL);
            CHECK_RESULT(kve_attend_ex(&a.c, l, q, out, &opt), KVE_OK);
            CHECK_RESULT(kve_observe(&b.c, l, 1, q, NULL), KVE_OK);
            CHECK_RESULT(kve_accumulate(&b.c, l, w), KVE_OK);
            /* an engine that computes its own weights: close, not bit-identical */
            engine_attend(&e.c, l, q, out, we);
            CHECK_RESULT(kve_observe(&e.c, l, 1, q, NULL), KVE_OK);
            CHECK_RESULT(kve_accumulate(&e.c, l, we), KVE_OK);
        }
    for (l = 0; l < L; l++)
        for (h = 0; h < H; h++) {
            int32_t n = kve_length(&a.c, l, h / 2);
            same &= n == kve_length(&b.c, l, h / 2) && n == 24;
            same &= memcmp(kve_scores(&a.c, l, h), kve_scores(&b.c, l, h), (size_t)n * 4) == 0;
            worst = fmax(worst, rel_err_ff(kve_scores(&e.c, l, h), kve_scores(&a.c, l, h), (size_t)n));
            for (s = 0; s < n; s++)
                same &= kve_slot_position(&a.c, l, h / 2, s) == kve_slot_position(&b.c, l, h / 2, s);
        }
    CHECK(same, "H2O: accumulating attend's weights gave other scores or evictions");
    CHECK(worst < 1e-5, "H2O: an engine's own weights give scores off by %.3g", worst);
    {
        kve_config fc = lc_config(&lc_cases[3], 48, KVE_KEYS_POST_ROPE, KVE_TYPE_F32, KVE_TYPE_F32);
        tu_cache f;
        CHECK_RESULT(tu_open(&f, &fc), KVE_OK);
        CHECK_RESULT(kve_accumulate(&f.c, 0, w), KVE_ERROR_WRONG_POLICY);
        tu_close(&f);
    }
    {   /* a custom policy with scores whose KV heads hold different counts: each query head's
           row gets the weights of its own KV head's slots, no more, no fewer */
        static const kve_policy_vtable scored = {"scored", 1, lc_never_room, NULL};
        kve_config cc = lc_config(&lc_cases[0], 16, KVE_KEYS_POST_ROPE, KVE_TYPE_F32, KVE_TYPE_F32);
        tu_cache t;
        unsigned char keep[16] = {1, 0, 1, 0, 1, 0, 1, 0, 1, 0};
        int32_t hq, ok = 1;
        cc.policy.kind = KVE_POLICY_CUSTOM;
        cc.policy.custom = &scored;
        CHECK_RESULT(tu_open(&t, &cc), KVE_OK);
        lc_store_range(&t.c, 0, 10, 30);
        CHECK_RESULT(kve_keep_slots(&t.c, 0, 1, keep), KVE_OK); /* KV head 1: 5 tokens */
        for (hq = 0; hq < H; hq++)
            for (s = 0; s < 16; s++) w[hq * 16 + s] = 1.0f + (float)s;
        for (hq = 0; hq < H; hq++) memset(kve_scores(&t.c, 0, hq), 0, 16 * sizeof(float));
        CHECK_RESULT(kve_accumulate(&t.c, 0, w), KVE_OK);
        for (hq = 0; hq < H; hq++) {
            int32_t n = kve_length(&t.c, 0, hq / 2);
            for (s = 0; s < 16; s++) ok &= kve_scores(&t.c, 0, hq)[s] == (s < n ? 1.0f + (float)s : 0.0f);
        }
        CHECK(ok, "kve_accumulate: a query head got another KV head's slots");
        tu_close(&t);
    }
    w[1] = NAN;
    CHECK_RESULT(kve_accumulate(&b.c, 0, w), KVE_ERROR_NOT_FINITE);
    CHECK_RESULT(kve_accumulate(&b.c, L, we), KVE_ERROR_INDEX_OUT_OF_RANGE);
    CHECK_RESULT(kve_accumulate(&b.c, 0, NULL), KVE_ERROR_NULL_ARGUMENT);
    tu_close(&a);
    tu_close(&b);
    tu_close(&e);
}

/* the attention of the token at pos (stored now) in every layer, into out */
static int lc_same_steps(kve_cache *a, kve_cache *b, int64_t from, int64_t to, unsigned salt,
                         double *worst)
{
    static float oa[L * H * D], ob[L * H * D];
    int64_t pos;
    int same = 1;
    for (pos = from; pos < to; pos++) {
        if (lc_step(a, pos, salt, oa) != KVE_OK || lc_step(b, pos, salt, ob) != KVE_OK) return 0;
        same &= memcmp(oa, ob, sizeof oa) == 0;
        if (worst) *worst = fmax(*worst, rel_err_ff(oa, ob, L * H * D));
    }
    return same;
}


/* 4. remove, then store: as if the removed tokens had never been stored */
static void test_remove(void)
{
    int ci, si;
    for (ci = 0; ci < N_CASES; ci++)
        for (si = 0; si < 2; si++) {
            kve_config cfg = lc_config(&lc_cases[ci], 64, lc_storages[si], KVE_TYPE_F32, KVE_TYPE_F32);
            tu_cache a, b;
            int64_t p;
            /* policies that sum what queries saw keep the removed queries' share (the manual says
               so): for them the comparison stops before the first eviction; the others go on
               well past their budgets */
            kve_policy_kind kind = lc_cases[ci].policy.kind;
            int64_t end = kind == KVE_POLICY_H2O || kind == KVE_POLICY_OBSERVED_ATTENTION ||
                                  kind == KVE_POLICY_EXPECTED_ATTENTION ? 20 : 60;
            CHECK_RESULT(tu_open(&a, &cfg), KVE_OK);
            CHECK_RESULT(tu_open(&b, &cfg), KVE_OK);
            /* a rejected draft: 12 stored (no layer evicts yet), the last 4 removed, then others */
            lc_store_range(&a.c, 0, 12, 4);
            CHECK_RESULT(kve_remove(&a.c, 8, INT64_MAX), KVE_OK);
            CHECK(kve_newest_position(&a.c, 1) == 7, "%s: newest after removal %lld",
                  lc_cases[ci].name, (long long)kve_newest_position(&a.c, 1));
            CHECK_RESULT(kve_check(&a.c), KVE_OK);
            lc_store_range(&b.c, 0, 8, 4);
            CHECK(lc_same_steps(&a.c, &b.c, 8, end, 5, NULL),
                  "%s, %s: remove-then-store differs from storing directly", lc_cases[ci].name,
                  si ? "pre" : "post");
            tu_close(&a);
            tu_close(&b);
            /* a range in the middle (an edited turn), then storing goes on above the newest */
            CHECK_RESULT(tu_open(&a, &cfg), KVE_OK);
            CHECK_RESULT(tu_open(&b, &cfg), KVE_OK);
            lc_store_range(&a.c, 0, 12, 4);
            CHECK_RESULT(kve_remove(&a.c, 4, 7), KVE_OK);
            CHECK_RESULT(kve_check(&a.c), KVE_OK);
            for (p = 0; p < 12; p++) {
                static float out[L * H * D];
                if (p >= 4 && p < 7) continue;
                lc_step(&b.c, p, 4, out);
            }
            CHECK(lc_same_steps(&a.c, &b.c, 12, end + 6, 6, NULL),
                  "%s, %s: a middle removal differs from storing directly", lc_cases[ci].name,
                  si ? "pre" : "post");
            tu_close(&a);
            tu_close(&b);
        }
}

/* removal without attention (no scores, no queries): the whole state, every policy's rings
   included, is the state of a cache that stored the kept tokens only */
static void test_remove_state(void)
{
    int ci, si;
    for (ci = 0; ci < N_CASES; ci++)
        for (si = 0; si < 2; si++) {
            kve_config cfg = lc_config(&lc_cases[ci], 64, lc_storages[si], KVE_TYPE_F16, KVE_TYPE_F32);
            tu_cache a, b;
            float k[HK * D], v[HK * D], q[H * D];
            unsigned char *blob;
            size_t n;
            int32_t l;
            int64_t p;
            CHECK_RESULT(tu_open(&a, &cfg), KVE_OK);
            CHECK_RESULT(tu_open(&b, &cfg), KVE_OK);
            for (l = 0; l < L; l++)
                for (p = 0; p < 20; p++) {
                    lc_token(l, p, 33, k, v, q);
                    kve_store(&a.c, l, p, k, v, NULL);
                    if (p < 10 || p >= 13) kve_store(&b.c, l, p, k, v, NULL);
                }
            CHECK_RESULT(kve_remove(&a.c, 10, 13), KVE_OK);
            n = lc_save(&b.c, &blob);
            CHECK(lc_state_is(&a.c, blob, n), "%s, %s: the state after a removal is not the direct one",
                  lc_cases[ci].name, si ? "pre" : "post");
            free(blob);
            tu_close(&a);
            tu_close(&b);
        }
}

/* removal after evictions and inside the sinks: the invariants hold and the cache goes on */
static void test_remove_after_eviction(void)
{
    int ci, si;
    for (ci = 1; ci < N_CASES; ci++)
        for (si = 0; si < 2; si++) {
            kve_config cfg = lc_config(&lc_cases[ci], 48, lc_storages[si], KVE_TYPE_F16, KVE_TYPE_F32);
            tu_cache a;
            int32_t l, h, s, ok = 1;
            CHECK_RESULT(tu_open(&a, &cfg), KVE_OK);
            lc_store_range(&a.c, 0, 70, 7);
            CHECK_RESULT(kve_remove(&a.c, 65, 70), KVE_OK);
            CHECK_RESULT(kve_check(&a.c), KVE_OK);
            CHECK_RESULT(kve_remove(&a.c, 1, 3), KVE_OK); /* inside StreamingLLM's sinks */
            CHECK_RESULT(kve_check(&a.c), KVE_OK);
            for (l = 0; l < L; l++)
                for (h = 0; h < HK; h++)
                    for (s = 0; s < kve_length(&a.c, l, h); s++) {
                        int64_t p = kve_slot_position(&a.c, l, h, s);
                        ok &= !(p >= 65 && p < 70) && !(p >= 1 && p < 3);
                    }
            CHECK(ok, "%s: a removed position is still held", lc_cases[ci].name);
            lc_store_range(&a.c, 66, 100, 8);
            CHECK_RESULT(kve_check(&a.c), KVE_OK);
            CHECK(kve_newest_position(&a.c, 0) == 99, "%s: storing did not resume", lc_cases[ci].name);
            CHECK_RESULT(kve_remove(&a.c, 0, INT64_MAX), KVE_OK);
            CHECK(kve_newest_position(&a.c, 0) == -1 && kve_length(&a.c, 1, 1) == 0,
                  "%s: removing everything left tokens", lc_cases[ci].name);
            CHECK_RESULT(kve_check(&a.c), KVE_OK);
            {   /* emptied, it behaves as a new cache, evictions included */
                tu_cache b;
                CHECK_RESULT(tu_open(&b, &cfg), KVE_OK);
                float q[3 * H * D], out[3 * H * D];
                lc_store_range(&a.c, 0, 2, 9);
                lc_store_range(&b.c, 0, 2, 9);
                memset(q, 0, sizeof q);
                /* it holds 2 tokens again, not what was stored before */
                CHECK_RESULT(kve_prefill(&a.c, 0, 3, q, NULL, out), KVE_ERROR_INVALID_COUNT);
                CHECK(lc_same_steps(&a.c, &b.c, 2, 80, 9, NULL),
                      "%s, %s: an emptied cache differs from a new one", lc_cases[ci].name,
                      si ? "pre" : "post");
                tu_close(&b);
            }
            CHECK_RESULT(kve_check(&a.c), KVE_OK);
            tu_close(&a);
        }
    {
        kve_config cfg = lc_config(&lc_cases[0], 8, KVE_KEYS_POST_ROPE, KVE_TYPE_F32, KVE_TYPE_F32);
        tu_cache a;
        CHECK_RESULT(tu_open(&a, &cfg), KVE_OK);
        CHECK_RESULT(kve_remove(&a.c, -1, 4), KVE_ERROR_POSITION);
        CHECK_RESULT(kve_remove(&a.c, 4, 4), KVE_ERROR_POSITION);
        CHECK_RESULT(kve_remove(NULL, 0, 4), KVE_ERROR_NULL_ARGUMENT);
        CHECK_RESULT(kve_remove(&a.c, 0, 4), KVE_OK); /* nothing there: fine */
        tu_close(&a);
    }
}

/* removing inside StreamingLLM's sinks makes later tokens sinks: close to storing without them */
static void test_remove_sinks(void)
{
    int si;
    for (si = 0; si < 2; si++) {
        kve_config cfg = lc_config(&lc_cases[1], 64, lc_storages[si], KVE_TYPE_F32, KVE_TYPE_F32);
        tu_cache a, b;
        int64_t p;
        double worst = 0.0;
        static float out[L * H * D];
        CHECK_RESULT(tu_open(&a, &cfg), KVE_OK);
        CHECK_RESULT(tu_open(&b, &cfg), KVE_OK);
        lc_store_range(&a.c, 0, 10, 26);
        CHECK_RESULT(kve_remove(&a.c, 1, 3), KVE_OK);
        for (p = 0; p < 10; p++)
            if (p < 1 || p >= 3) lc_step(&b.c, p, 26, out);
        /* on past the budget: the pos-shifted sinks are rotated from their copies */
        lc_same_steps(&a.c, &b.c, 10, 60, 27, &worst);
        CHECK(worst < 1e-5, "%s: removal inside the sinks differs by %.3g", si ? "pre" : "post", worst);
        tu_close(&a);
        tu_close(&b);
        /* after the ring wrapped, back to two tokens: the sinks are filled again, with copies */
        CHECK_RESULT(tu_open(&a, &cfg), KVE_OK);
        CHECK_RESULT(tu_open(&b, &cfg), KVE_OK);
        lc_store_range(&a.c, 0, 40, 34);
        CHECK_RESULT(kve_remove(&a.c, 2, INT64_MAX), KVE_OK);
        lc_store_range(&b.c, 0, 2, 34);
        CHECK(lc_same_steps(&a.c, &b.c, 2, 60, 35, NULL),
              "%s: sinks refilled after a removal differ from a new cache's", si ? "pre" : "post");
        tu_close(&a);
        tu_close(&b);
    }
}

/* SnapKV's recorded queries of removed positions are dropped: window scores as if never seen */
static void test_remove_queries(void)
{
    kve_config cfg = lc_config(&lc_cases[3], 64, KVE_KEYS_POST_ROPE, KVE_TYPE_F32, KVE_TYPE_F32);
    tu_cache a, b;
    float sa[64], sb[64];
    cfg.policy.decode = KVE_DECODE_GROW; /* no eviction: the same tokens everywhere */
    int64_t p;
    CHECK_RESULT(tu_open(&a, &cfg), KVE_OK);
    CHECK_RESULT(tu_open(&b, &cfg), KVE_OK);
    lc_store_range(&a.c, 0, 30, 10); /* 30 queries recorded in a window of 8: the ring wrapped */
    CHECK_RESULT(kve_remove(&a.c, 26, 28), KVE_OK);
    for (p = 0; p < 30; p++) {
        static float out[L * H * D];
        if (p == 26 || p == 27) continue;
        lc_step(&b.c, p, 10, out);
    }
    CHECK_RESULT(kve_window_scores(&a.c, 1, 1, KVE_REDUCE_MEAN, sa), KVE_OK);
    CHECK_RESULT(kve_window_scores(&b.c, 1, 1, KVE_REDUCE_MEAN, sb), KVE_OK);
    /* b holds 8 queries, a the 6 left of its 8: compare a against 6 of b's */
    {
        tu_cache c;
        CHECK_RESULT(tu_open(&c, &cfg), KVE_OK);
        for (p = 0; p < 30; p++) {
            float k[HK * D], v[HK * D], q[H * D];
            int32_t l;
            if (p == 26 || p == 27) continue;
            for (l = 0; l < L; l++) {
                lc_token(l, p, 10, k, v, q);
                kve_store(&c.c, l, p, k, v, NULL);
                if (p >= 22) kve_observe(&c.c, l, 1, q, NULL); /* 22..25, 28, 29 */
            }
        }
        CHECK_RESULT(kve_window_scores(&c.c, 1, 1, KVE_REDUCE_MEAN, sb), KVE_OK);
        CHECK(memcmp(sa, sb, 28 * sizeof(float)) == 0,
              "SnapKV: the queries of removed tokens still count");
        tu_close(&c);
    }
    tu_close(&a);
    tu_close(&b);
}

/* 5. shift: the same as storing at the shifted positions */
static void test_shift(void)
{
    int ci, si;
    for (ci = 0; ci < N_CASES; ci++)
        for (si = 0; si < 2; si++) {
            kve_config cfg = lc_config(&lc_cases[ci], 64, lc_storages[si], KVE_TYPE_F32, KVE_TYPE_F32);
            tu_cache a, b;
            int64_t p;
            double worst = 0.0;
            int same;
            /* no eviction before the shift: both caches hold the same tokens (pyramid budgets are
               below 20 in deep layers) */
            if (lc_cases[ci].policy.kind == KVE_POLICY_PYRAMIDKV || lc_cases[ci].policy.allocation == KVE_ALLOCATION_PYRAMID) cfg.policy.decode = KVE_DECODE_GROW;
            CHECK_RESULT(tu_open(&a, &cfg), KVE_OK);
            CHECK_RESULT(tu_open(&b, &cfg), KVE_OK);
            /* llama.cpp's context shift: keep 4, discard 6, move the rest back by 6 */
            lc_store_range(&a.c, 0, 20, 11);
            CHECK_RESULT(kve_remove(&a.c, 4, 10), KVE_OK);
            CHECK_RESULT(kve_shift(&a.c, 10, 20, -6), KVE_OK);
            CHECK_RESULT(kve_check(&a.c), KVE_OK);
            CHECK(kve_newest_position(&a.c, 0) == 13, "shift: newest %lld",
                  (long long)kve_newest_position(&a.c, 0));
            /* b: the same vectors stored at the new positions (and attended there) */
            for (p = 0; p < 20; p++) {
                float k[HK * D], v[HK * D], q[H * D];
                int32_t l;
                if (p >= 4 && p < 10) continue;
                for (l = 0; l < L; l++) {
                    float out[H * D];
                    int64_t at = p < 4 ? p : p - 6;
                    lc_token(l, p, 11, k, v, q);
                    kve_store(&b.c, l, at, k, v, NULL);
                    kve_attend(&b.c, l, q, out);
                }
            }
            if (ci == 3) { /* SnapKV: the recorded queries moved with their tokens */
                float wa[64], wb[64];
                CHECK_RESULT(kve_window_scores(&a.c, 1, 0, KVE_REDUCE_MEAN, wa), KVE_OK);
                CHECK_RESULT(kve_window_scores(&b.c, 1, 0, KVE_REDUCE_MEAN, wb), KVE_OK);
                worst = fmax(worst, rel_err_ff(wa, wb, (size_t)kve_length(&a.c, 1, 0)));
            }
            same = lc_same_steps(&a.c, &b.c, 14, 30, 12, &worst);
            /* observed_attention divides a token's attention by its distance to the newest
               position (the queries that saw it, in a cache that was never shifted), expected
               attention keeps the statistics of removed queries and looks ahead of the newest
               position: a shift changes both, as the manual says */
            if (lc_cases[ci].policy.kind == KVE_POLICY_OBSERVED_ATTENTION ||
                lc_cases[ci].policy.kind == KVE_POLICY_EXPECTED_ATTENTION) {
                tu_close(&a);
                tu_close(&b);
                continue;
            }
            CHECK(worst < 1e-5, "%s, %s: shifted cache differs by %.3g", lc_cases[ci].name,
                  si ? "pre" : "post", worst);
            /* pre-RoPE keys are rotated where they are read: nothing rounds */
            CHECK(!si || same, "%s, pre-RoPE: a shifted cache is not bit-identical", lc_cases[ci].name);
            tu_close(&a);
            tu_close(&b);
        }
}

/* shift errors leave the cache unchanged (compared through its saved state) */
static size_t lc_save(const kve_cache *c, unsigned char **blob)
{
    size_t n = 0, written = 0;
    CHECK_RESULT(kve_state_size(c, &n), KVE_OK);
    *blob = (unsigned char *)tu_alloc(n);
    CHECK_RESULT(kve_state_save(c, *blob, n, &written), KVE_OK);
    CHECK(written == n, "saved %zu of %zu bytes", written, n);
    return n;
}

static int lc_state_is(const kve_cache *c, const unsigned char *blob, size_t n)
{
    unsigned char *now;
    size_t m = lc_save(c, &now);
    int same = m == n && memcmp(now, blob, n) == 0;
    free(now);
    return same;
}

static void test_shift_errors(void)
{
    kve_config cfg = lc_config(&lc_cases[1], 64, KVE_KEYS_POST_ROPE, KVE_TYPE_F32, KVE_TYPE_F32);
    tu_cache a;
    unsigned char *blob;
    size_t n;
    CHECK_RESULT(tu_open(&a, &cfg), KVE_OK);
    lc_store_range(&a.c, 0, 20, 13);
    n = lc_save(&a.c, &blob);
    CHECK_RESULT(kve_shift(&a.c, 10, 20, -1), KVE_ERROR_SHIFT_ORDER);  /* onto token 9 */
    CHECK_RESULT(kve_shift(&a.c, 5, 10, 10), KVE_ERROR_SHIFT_ORDER);   /* past tokens 10.. */
    CHECK_RESULT(kve_shift(&a.c, 5, 10, 1), KVE_ERROR_SHIFT_ORDER);    /* onto token 10 */
    CHECK_RESULT(kve_shift(&a.c, 0, 20, -1), KVE_ERROR_SHIFT_ORDER);   /* below 0 */
    CHECK_RESULT(kve_shift(&a.c, 0, 20, KVE_MAX_POSITION), KVE_ERROR_SHIFT_ORDER);
    CHECK_RESULT(kve_shift(&a.c, 5, 3, 1), KVE_ERROR_POSITION);
    CHECK(lc_state_is(&a.c, blob, n), "a refused shift changed the cache");
    CHECK_RESULT(kve_shift(&a.c, 10, 20, 5), KVE_OK); /* a gap is fine */
    CHECK_RESULT(kve_shift(&a.c, 100, 200, -50), KVE_OK); /* nothing there */
    CHECK(kve_newest_position(&a.c, 0) == 24, "shift into a gap: newest %lld",
          (long long)kve_newest_position(&a.c, 0));
    CHECK_RESULT(kve_check(&a.c), KVE_OK);
    free(blob);
    tu_close(&a);
    {   /* an f16 key whose rounded pairs lie just above f16's range once rotated again: refused,
           never stored as Inf */
        kve_config fc;
        int64_t p;
        int refused = 0, finite = 1;
        memset(&fc, 0, sizeof fc);
        fc.n_layers = 1; fc.n_heads = 1; fc.head_dim = 2; fc.capacity = 4; fc.k_type = KVE_TYPE_F16;
        for (p = 1; p < 400; p++) {
            float k[2] = {65515.0f, 0.0f}, v[2] = {1.0f, 1.0f}, x[2];
            kve_result r;
            CHECK_RESULT(tu_open(&a, &fc), KVE_OK);
            CHECK_RESULT(kve_store(&a.c, 0, p, k, v, NULL), KVE_OK);
            r = kve_shift(&a.c, p, p + 1, 1);
            refused += r == KVE_ERROR_OUT_OF_TYPE_RANGE;
            kve_read_key(&a.c, 0, 0, 0, x);
            finite &= isfinite(x[0]) && isfinite(x[1]);
            tu_close(&a);
        }
        CHECK(refused > 0 && finite, "f16 keys re-rotated past the range: %d refused, finite %d", refused, finite);
    }
}

/* 6. copy: an independent cache; the source is untouched by what the copy does */
static void test_copy(void)
{
    int ci;
    for (ci = 0; ci < N_CASES; ci++) {
        kve_config cfg = lc_config(&lc_cases[ci], 96, KVE_KEYS_POST_ROPE, KVE_TYPE_BF16, KVE_TYPE_F32);
        tu_cache a, ref;
        kve_cache b;
        kve_buffers buf;
        size_t kb, vb, bytes;
        void *kbuf, *vbuf, *mem;
        unsigned char *before;
        size_t nb;
        CHECK_RESULT(tu_open(&a, &cfg), KVE_OK);
        CHECK_RESULT(tu_open(&ref, &cfg), KVE_OK);
        /* the copy in another layout */
        kve_buffer_bytes(&cfg, KVE_LAYOUT_HEAD_MAJOR, &kb, &vb);
        kve_cache_size(&cfg, &bytes);
        kbuf = tu_alloc(kb); vbuf = tu_alloc(vb); mem = tu_alloc(bytes);
        memset(&buf, 0, sizeof buf);
        buf.k = kbuf; buf.v = vbuf; buf.k_bytes = kb; buf.v_bytes = vb;
        buf.layout = KVE_LAYOUT_HEAD_MAJOR;
        CHECK_RESULT(kve_cache_init(&cfg, &buf, mem, bytes, &b), KVE_OK);
        lc_store_range(&a.c, 0, 60, 14);
        lc_store_range(&ref.c, 0, 60, 14);
        CHECK_RESULT(kve_cache_copy(&b, &a.c), KVE_OK);
        nb = lc_save(&a.c, &before);
        CHECK(lc_state_is(&b, before, nb), "%s: the copy's state differs", lc_cases[ci].name);
        lc_store_range(&b, 60, 75, 15); /* the copy diverges */
        CHECK(lc_state_is(&a.c, before, nb), "%s: the source changed", lc_cases[ci].name);
        CHECK(lc_same_steps(&a.c, &ref.c, 60, 70, 16, NULL), "%s: the source attends differently",
              lc_cases[ci].name);
        free(before);
        free(kbuf); free(vbuf); free(mem);
        tu_close(&a);
        tu_close(&ref);
    }
    {
        kve_config cfg = lc_config(&lc_cases[0], 16, KVE_KEYS_POST_ROPE, KVE_TYPE_F32, KVE_TYPE_F32);
        kve_config other = cfg;
        tu_cache a, o;
        kve_cache moved;
        other.n_threads = 1; /* a runtime setting: still the same configuration */
        CHECK_RESULT(tu_open(&a, &cfg), KVE_OK);
        CHECK_RESULT(tu_open(&o, &other), KVE_OK);
        lc_store_range(&a.c, 0, 5, 17);
        CHECK_RESULT(kve_cache_copy(&o.c, &a.c), KVE_OK);
        tu_close(&o);
        other.policy.kind = KVE_POLICY_STREAMINGLLM;
        CHECK_RESULT(tu_open(&o, &other), KVE_OK);
        CHECK_RESULT(kve_cache_copy(&o.c, &a.c), KVE_ERROR_STATE_CONFIG);
        tu_close(&o);
        /* a struct copy shares memory: once the original changes the cache, the copy is stale
           and every call refuses it */
        memcpy(&moved, &a.c, sizeof moved);
        CHECK_RESULT(kve_check(&moved), KVE_OK); /* nothing changed yet: a move is fine */
        lc_store_range(&a.c, 5, 6, 17);
        CHECK_RESULT(kve_check(&moved), KVE_ERROR_MOVED_CACHE);
        CHECK_RESULT(kve_store(&moved, 0, 9, a.k, a.v, NULL), KVE_ERROR_MOVED_CACHE);
        CHECK_RESULT(kve_cache_copy(&moved, &a.c), KVE_ERROR_MOVED_CACHE);
        CHECK(kve_length(&moved, 0, 0) == -1, "a stale copy still answers");
        memcpy(&moved, &a.c, sizeof moved); /* a move: the new struct works, the old one is stale */
        lc_store_range(&moved, 6, 7, 17);
        CHECK_RESULT(kve_check(&moved), KVE_OK);
        CHECK_RESULT(kve_check(&a.c), KVE_ERROR_MOVED_CACHE);
        memcpy(&a.c, &moved, sizeof moved);
        /* a cache on the same buffers is not a copy */
        {
            kve_buffers buf;
            kve_cache twin;
            size_t bytes;
            void *mem;
            memset(&buf, 0, sizeof buf);
            buf.k = a.k; buf.v = a.v;
            kve_buffer_bytes(&cfg, KVE_LAYOUT_DEFAULT, &buf.k_bytes, &buf.v_bytes);
            kve_cache_size(&cfg, &bytes);
            mem = tu_alloc(bytes);
            CHECK_RESULT(kve_cache_init(&cfg, &buf, mem, bytes, &twin), KVE_OK);
            CHECK_RESULT(kve_cache_copy(&twin, &a.c), KVE_ERROR_OVERLAPPING_BUFFERS);
            free(mem);
        }
        tu_close(&a);
    }
}

/* 7. saved state: round trip, and every corruption refused with the cache unchanged */
static void test_state(void)
{
    int ci, si;
    for (ci = 0; ci < N_CASES; ci++)
        for (si = 0; si < 2; si++) {
            kve_config cfg = lc_config(&lc_cases[ci], 96, lc_storages[si], si ? KVE_TYPE_F16 : KVE_TYPE_F32,
                                       si ? KVE_TYPE_BF16 : KVE_TYPE_F32);
            tu_cache a, b, ref;
            unsigned char *blob, *other;
            size_t n, m, i;
            int refused = 1, unchanged = 1, named = 1;
            CHECK_RESULT(tu_open(&a, &cfg), KVE_OK);
            CHECK_RESULT(tu_open(&b, &cfg), KVE_OK);
            CHECK_RESULT(tu_open(&ref, &cfg), KVE_OK);
            lc_store_range(&a.c, 0, 70, 18);
            lc_store_range(&ref.c, 0, 70, 18);
            n = lc_save(&a.c, &blob);
            lc_store_range(&b.c, 0, 9, 19); /* b holds something else */
            m = lc_save(&b.c, &other);
            /* every single-bit flip, every truncation: a named error, b unchanged */
            /* every bit of the header, configuration and first bookkeeping; a sample after */
            for (i = 0; i < n * 8; i += i < 8 * 512 ? 1 : 97) {
                kve_result r;
                blob[i / 8] ^= (unsigned char)(1u << (i % 8));
                r = kve_state_load(&b.c, blob, n);
                blob[i / 8] ^= (unsigned char)(1u << (i % 8));
                refused &= r != KVE_OK;
                named &= r == KVE_ERROR_STATE_CORRUPT || r == KVE_ERROR_STATE_FORMAT;
            }
            for (i = 0; i < n; i += 1 + i / 16) {
                kve_result r = kve_state_load(&b.c, blob, i);
                refused &= r != KVE_OK;
                named &= r == KVE_ERROR_STATE_CORRUPT || r == KVE_ERROR_STATE_FORMAT;
            }
            unchanged &= lc_state_is(&b.c, other, m);
            CHECK(refused && named && unchanged, "%s: a corrupted state was %s", lc_cases[ci].name,
                  !refused ? "loaded" : !named ? "refused without a state error" : "partly loaded");
            /* the round trip: b becomes a, bit for bit, and goes on as a does */
            CHECK_RESULT(kve_state_load(&b.c, blob, n), KVE_OK);
            CHECK_RESULT(kve_check(&b.c), KVE_OK);
            CHECK(lc_state_is(&b.c, blob, n), "%s: save(load(x)) != x", lc_cases[ci].name);
            CHECK(lc_same_steps(&b.c, &ref.c, 70, 90, 20, NULL), "%s, %s: a loaded cache attends differently",
                  lc_cases[ci].name, si ? "pre" : "post");
            free(blob);
            free(other);
            tu_close(&a);
            tu_close(&b);
            tu_close(&ref);
        }
}

/* a state whose checksum is right but whose content is not (as a crafted file would be) */
static void lc_fix_checksum(unsigned char *blob, size_t n)
{
    uint64_t h = 0xcbf29ce484222325u;
    size_t i;
    int j;
    for (i = 0; i + 8 <= n - 8; i += 8) {
        uint64_t w = 0;
        for (j = 7; j >= 0; j--) w = (w << 8) | blob[i + (size_t)j];
        h = (h ^ w) * 0x100000001b3u;
    }
    for (; i < n - 8; i++) h = (h ^ blob[i]) * 0x100000001b3u;
    for (j = 0; j < 8; j++) blob[n - 8 + (size_t)j] = (unsigned char)(h >> (8 * j));
}

static void test_state_content(void)
{
    kve_config cfg = lc_config(&lc_cases[1], 32, KVE_KEYS_POST_ROPE, KVE_TYPE_F32, KVE_TYPE_F32);
    tu_cache a, b;
    unsigned char *blob, *other, *bad;
    size_t n, m, i, small;
    int unchanged = 1, caught = 0, tried = 0;
    CHECK_RESULT(tu_open(&a, &cfg), KVE_OK);
    CHECK_RESULT(tu_open(&b, &cfg), KVE_OK);
    lc_store_range(&a.c, 0, 40, 21);
    lc_store_range(&b.c, 0, 3, 22);
    n = lc_save(&a.c, &blob);
    m = lc_save(&b.c, &other);
    bad = (unsigned char *)tu_alloc(n);
    /* every 8-byte field after the configuration set to values a file could hold */
    for (i = LC_LAYER0; i + 8 <= n - 8; i += i < 2048 ? 4 : 60) {
        static const uint64_t values[] = {0, 1, 0xffffffffu, 0x7fffffffffffffffull,
                                          0xffffffffffffffffull, 47, 1000};
        size_t vi;
        for (vi = 0; vi < sizeof values / sizeof values[0]; vi++) {
            kve_result r;
            int j;
            memcpy(bad, blob, n);
            for (j = 0; j < 8; j++) bad[i + (size_t)j] = (unsigned char)(values[vi] >> (8 * j));
            if (memcmp(bad, blob, n) == 0) continue;
            lc_fix_checksum(bad, n);
            r = kve_state_load(&b.c, bad, n);
            tried++;
            if (r != KVE_OK) {
                caught++;
                unchanged &= r == KVE_ERROR_STATE_CORRUPT;
                unchanged &= lc_state_is(&b.c, other, m);
            } else { /* accepted (a float that is still finite): it must be consistent */
                float q[H * D], out[H * D];
                int32_t l, j, finite = 1;
                CHECK_RESULT(kve_check(&b.c), KVE_OK);
                for (j = 0; j < H * D; j++) q[j] = 0.01f * (float)j;
                for (l = 0; l < L; l++) {
                    CHECK_RESULT(kve_attend(&b.c, l, q, out), KVE_OK);
                    for (j = 0; j < H * D; j++) finite &= isfinite(out[j]) != 0;
                }
                CHECK(finite, "an accepted state attends to non-finite values");
                CHECK_RESULT(kve_state_load(&b.c, other, m), KVE_OK);
            }
        }
    }
    CHECK(unchanged, "an inconsistent state changed the cache or gave another error");
    {   /* a pre-RoPE sink copy too large for f16 keys: it would be re-rotated into the buffer */
        kve_config fc = cfg;
        tu_cache f;
        unsigned char *fb;
        size_t fn, at;
        int32_t len, j;
        float big = 70000.0f;
        uint32_t bits;
        fc.k_type = KVE_TYPE_F16;
        CHECK_RESULT(tu_open(&f, &fc), KVE_OK);
        lc_store_range(&f.c, 0, 40, 21);
        fn = lc_save(&f.c, &fb);
        len = kve_length(&f.c, 0, 0);
        /* layer 0, head 0: after its length, positions (8), K rows (2 * D), V rows (4 * D) */
        at = LC_LAYER0 + 24 + 4 + (size_t)len * (8 + 2 * D + 4 * D);
        memcpy(&bits, &big, 4);
        for (j = 0; j < 4; j++) fb[at + (size_t)j] = (unsigned char)(bits >> (8 * j));
        lc_fix_checksum(fb, fn);
        CHECK_RESULT(kve_state_load(&f.c, fb, fn), KVE_ERROR_STATE_CORRUPT);
        free(fb);
        tu_close(&f);
    }
    CHECK(caught > 0 && tried > 0, "no inconsistent state refused (%d tried)", tried);
    /* fields whose every change here is inconsistent: layer 0's limit, newest, stored, ring_next,
       head 0's length and first position (offsets after the 24-byte header and 34 config fields) */
    {
        static const struct { size_t at; int bytes; uint64_t value; } edits[] = {
            {LC_LAYER0, 4, 0}, {LC_LAYER0, 4, 33}, {LC_LAYER0, 4, 1}, {LC_LAYER0, 4, 32}, {LC_LAYER0 + 4, 8, 1000}, {LC_LAYER0 + 4, 8, 38}, {LC_LAYER0 + 12, 8, 3}, {LC_LAYER0 + 20, 4, 0},
            {LC_LAYER0 + 20, 4, 24}, {LC_LAYER0 + 24, 4, 25}, {LC_LAYER0 + 24, 4, 0}, {LC_LAYER0 + 28, 8, 39}, {LC_LAYER0 + 28, 8, 1}};
        size_t e;
        for (e = 0; e < sizeof edits / sizeof edits[0]; e++) {
            int j;
            memcpy(bad, blob, n);
            for (j = 0; j < edits[e].bytes; j++)
                bad[edits[e].at + (size_t)j] = (unsigned char)(edits[e].value >> (8 * j));
            lc_fix_checksum(bad, n);
            CHECK_RESULT(kve_state_load(&b.c, bad, n), KVE_ERROR_STATE_CORRUPT);
        }
        CHECK(lc_state_is(&b.c, other, m), "an inconsistent state changed the cache");
    }
    /* another configuration, another version, not a state, a small buffer */
    {
        kve_config oc = cfg;
        tu_cache o;
        size_t written = 0;
        oc.policy.sinks = 2;
        CHECK_RESULT(tu_open(&o, &oc), KVE_OK);
        CHECK_RESULT(kve_state_load(&o.c, blob, n), KVE_ERROR_STATE_CONFIG);
        tu_close(&o);
        CHECK(blob[8] == 3 && blob[9] == 0 && blob[10] == 0 && blob[11] == 0,
              "the saved state is not version 3");
        memcpy(bad, blob, n);
        bad[8] = 2; /* the version before, whose configuration had 34 fields */
        lc_fix_checksum(bad, n);
        CHECK_RESULT(kve_state_load(&b.c, bad, n), KVE_ERROR_STATE_FORMAT);
        bad[8] = 4;
        lc_fix_checksum(bad, n);
        CHECK_RESULT(kve_state_load(&b.c, bad, n), KVE_ERROR_STATE_FORMAT);
        CHECK_RESULT(kve_state_load(&b.c, "hello", 5), KVE_ERROR_STATE_FORMAT);
        CHECK_RESULT(kve_state_load(&b.c, NULL, n), KVE_ERROR_NULL_ARGUMENT);
        kve_state_size(&a.c, &small);
        CHECK_RESULT(kve_state_save(&a.c, bad, small - 1, &written), KVE_ERROR_BUFFER_TOO_SMALL);
        CHECK(written == 0, "a refused save reports bytes written");
        CHECK(lc_state_is(&b.c, other, m), "a refused load changed the cache");
    }
    free(blob); free(other); free(bad);
    tu_close(&a);
    tu_close(&b);
}

/* a blob with one field changed, its checksum right: refused, the cache unchanged */
static void lc_expect_corrupt(kve_cache *c, const unsigned char *blob, size_t n, size_t at,
                              int bytes, uint64_t value, const char *what)
{
    unsigned char *bad = (unsigned char *)tu_alloc(n), *before;
    size_t nb = lc_save(c, &before);
    int j;
    memcpy(bad, blob, n);
    for (j = 0; j < bytes; j++) bad[at + (size_t)j] = (unsigned char)(value >> (8 * j));
    lc_fix_checksum(bad, n);
    CHECK(kve_state_load(c, bad, n) == KVE_ERROR_STATE_CORRUPT, "%s: not refused", what);
    CHECK(lc_state_is(c, before, nb), "%s: the cache changed", what);
    free(bad);
    free(before);
}

static uint64_t lc_get(const unsigned char *blob, size_t at, int bytes)
{
    uint64_t v = 0;
    int j;
    for (j = bytes - 1; j >= 0; j--) v = (v << 8) | blob[at + (size_t)j];
    return v;
}

/* each invariant of a saved state on its own: one inconsistency that no other check sees */
static void test_state_invariants(void)
{
    /* SnapKV, f32 K/V, no eviction: layer 0 starts at LC_LAYER0 (header 24 + configuration) with
       limit (4), newest, stored (8 each), ring_next (4); then per KV head its length (4), the
       positions (8 each) and the K and V rows (4 * D bytes each); then the recorded queries */
    kve_config cfg = lc_config(&lc_cases[3], 32, KVE_KEYS_POST_ROPE, KVE_TYPE_F32, KVE_TYPE_F32);
    tu_cache a, b;
    unsigned char *blob, *grown;
    size_t n, head0 = LC_LAYER0 + 24, head1, queries;
    int32_t len;
    cfg.policy.decode = KVE_DECODE_GROW;
    CHECK_RESULT(tu_open(&a, &cfg), KVE_OK);
    CHECK_RESULT(tu_open(&b, &cfg), KVE_OK);
    lc_store_range(&a.c, 0, 12, 36);
    lc_store_range(&b.c, 0, 3, 37);
    n = lc_save(&a.c, &blob);
    len = kve_length(&a.c, 0, 0);
    CHECK(len == 12 && lc_get(blob, head0, 4) == 12, "state layout: head 0 holds %d", len);
    head1 = head0 + 4 + (size_t)len * (8 + 8 * D);
    queries = head1 + 4 + (size_t)len * (8 + 8 * D);
    CHECK(lc_get(blob, queries, 4) == 8, "state layout: %d recorded queries", (int)lc_get(blob, queries, 4));
    lc_expect_corrupt(&b.c, blob, n, head0 + 4 + 8, 8, 0, "a position twice in a head");
    lc_expect_corrupt(&b.c, blob, n, LC_LAYER0 + 12, 8, 11, "fewer tokens stored than held");
    lc_expect_corrupt(&b.c, blob, n, queries + 4 + (8 + (size_t)H * D * 4), 8,
                      lc_get(blob, queries + 4, 8), "two recorded queries at one position");
    /* eight bytes more before the checksum, the size field and checksum made right */
    grown = (unsigned char *)tu_alloc(n + 8);
    memcpy(grown, blob, n - 8);
    memset(grown + n - 8, 0, 8);
    {
        int j;
        for (j = 0; j < 8; j++) grown[16 + j] = (unsigned char)((uint64_t)(n + 8) >> (8 * j));
    }
    lc_fix_checksum(grown, n + 8);
    CHECK_RESULT(kve_state_load(&b.c, grown, n + 8), KVE_ERROR_STATE_CORRUPT);
    free(grown);
    free(blob);
    tu_close(&a);
    {   /* StreamingLLM whose ring has wrapped: ring_next in range but not at the oldest token */
        kve_config sc = lc_config(&lc_cases[1], 32, KVE_KEYS_POST_ROPE, KVE_TYPE_F32, KVE_TYPE_F32);
        tu_cache t;
        uint64_t next;
        CHECK_RESULT(tu_open(&t, &sc), KVE_OK);
        lc_store_range(&t.c, 0, 50, 38);
        n = lc_save(&t.c, &blob);
        next = lc_get(blob, LC_LAYER0 + 20, 4);
        lc_expect_corrupt(&t.c, blob, n, LC_LAYER0 + 20, 4, next + 1 < 24 ? next + 1 : 4,
                          "a ring whose next slot is not the oldest");
        /* and kve_check on a limit that is neither the budget nor the capacity */
        t.c.limit[0] = 28; /* room for the 24 held, yet neither 24 nor 32 */
        CHECK_RESULT(kve_check(&t.c), KVE_ERROR_CORRUPT);
        t.c.limit[0] = 24;
        CHECK_RESULT(kve_check(&t.c), KVE_OK);
        free(blob);
        tu_close(&t);
    }
    tu_close(&b);
}

/* 8. kve_store_n is n kve_store calls, and checks them all first */
static void test_store_n(void)
{
    kve_config cfg = lc_config(&lc_cases[1], 32, KVE_KEYS_POST_ROPE, KVE_TYPE_F32, KVE_TYPE_F32);
    tu_cache a, b;
    static float k[40 * HK * D], v[40 * HK * D], q[H * D];
    int64_t pos[40];
    int32_t l, i;
    unsigned char *blob;
    size_t n;
    CHECK_RESULT(tu_open(&a, &cfg), KVE_OK);
    CHECK_RESULT(tu_open(&b, &cfg), KVE_OK);
    for (l = 0; l < L; l++) {
        for (i = 0; i < 40; i++) {
            pos[i] = 3 * i + 1;
            lc_token(l, pos[i], 23, k + (size_t)i * HK * D, v + (size_t)i * HK * D, q);
            kve_store(&a.c, l, pos[i], k + (size_t)i * HK * D, v + (size_t)i * HK * D, NULL);
        }
        CHECK_RESULT(kve_store_n(&b.c, l, 40, pos, k, v), KVE_OK);
    }
    n = lc_save(&a.c, &blob);
    CHECK(lc_state_is(&b.c, blob, n), "store_n differs from 40 stores");
    CHECK_RESULT(kve_store_n(&b.c, 0, 2, NULL, k, v), KVE_OK); /* NULL: the next positions */
    CHECK(kve_newest_position(&b.c, 0) == 120, "store_n with NULL positions: newest %lld",
          (long long)kve_newest_position(&b.c, 0));
    free(blob);
    n = lc_save(&b.c, &blob);
    pos[0] = 200; pos[1] = 201; pos[2] = 201;
    CHECK_RESULT(kve_store_n(&b.c, 0, 3, pos, k, v), KVE_ERROR_POSITION);
    pos[2] = 202;
    k[2 * HK * D + 5] = INFINITY;
    CHECK_RESULT(kve_store_n(&b.c, 0, 3, pos, k, v), KVE_ERROR_NOT_FINITE);
    CHECK_RESULT(kve_store_n(&b.c, 0, 0, pos, k, v), KVE_ERROR_INVALID_COUNT);
    CHECK(lc_state_is(&b.c, blob, n), "a refused store_n stored some tokens");
    free(blob);
    tu_close(&a);
    tu_close(&b);
}

/* 9. n_threads changes nothing in the results */
static void test_threads(void)
{
    static const int32_t threads[4] = {1, 2, 3, 0};
    static float first[16 * 64];
    kve_config cfg;
    int ti;
    memset(&cfg, 0, sizeof cfg);
    cfg.n_layers = 1; cfg.n_heads = 16; cfg.n_kv_heads = 8; cfg.head_dim = 64; cfg.capacity = 2048;
    cfg.policy.kind = KVE_POLICY_H2O; cfg.policy.budget = 2000; cfg.policy.window = 16;
    for (ti = 0; ti < 4; ti++) {
        tu_cache t;
        static float k[8 * 64], v[8 * 64], q[16 * 64], out[16 * 64];
        int64_t p;
        cfg.n_threads = threads[ti];
        CHECK_RESULT(tu_open(&t, &cfg), KVE_OK);
        tu_seed(99);
        for (p = 0; p < 2040; p++) {
            tu_fill(k, sizeof k / 4, 1.0f);
            tu_fill(v, sizeof v / 4, 1.0f);
            kve_store(&t.c, 0, p, k, v, NULL);
            if (p % 500 == 0 || p > 2000) {
                tu_fill(q, sizeof q / 4, 1.0f);
                kve_attend(&t.c, 0, q, out);
            }
        }
        if (ti == 0) memcpy(first, out, sizeof out);
        else CHECK(memcmp(first, out, sizeof out) == 0, "n_threads %d changed the result", threads[ti]);
        tu_close(&t);
    }
    cfg.n_threads = -1;
    {
        size_t bytes;
        CHECK_RESULT(kve_cache_size(&cfg, &bytes), KVE_ERROR_INVALID_PARAMETER);
    }
}

/* StreamingLLM as a prompt compression: keep the prompt, compress to sinks + recent, then grow */
static void test_streaming_grow(void)
{
    int si;
    for (si = 0; si < 2; si++) {
        kve_config cfg = lc_config(&lc_cases[1], 64, lc_storages[si], KVE_TYPE_F32, KVE_TYPE_F32);
        kve_config ev;
        tu_cache g, e;
        int32_t l, h, s, same = 1;
        double worst = 0.0;
        kve_result r = KVE_OK;
        int64_t p;
        static float out[L * H * D];
        cfg.policy.decode = KVE_DECODE_GROW;
        ev = cfg;
        ev.policy.decode = KVE_DECODE_EVICT;
        CHECK_RESULT(tu_open(&g, &cfg), KVE_OK);
        CHECK_RESULT(tu_open(&e, &ev), KVE_OK);
        CHECK(kve_layer_budget(&g.c, 0) == 64, "grow: layer budget %d", kve_layer_budget(&g.c, 0));
        lc_store_range(&g.c, 0, 40, 28); /* a prompt longer than the budget: all of it kept */
        lc_store_range(&e.c, 0, 40, 28);
        CHECK(kve_length(&g.c, 1, 1) == 40, "grow: the prompt was evicted (%d)", kve_length(&g.c, 1, 1));
        CHECK_RESULT(kve_compress_all(&g.c), KVE_OK);
        CHECK_RESULT(kve_compress_all(&e.c), KVE_OK);
        CHECK_RESULT(kve_check(&g.c), KVE_OK);
        for (l = 0; l < L; l++)
            for (h = 0; h < HK; h++) { /* the same tokens as the evicting cache: sinks + newest */
                int32_t n = kve_length(&g.c, l, h);
                same &= n == 24 && kve_length(&e.c, l, h) == 24;
                for (s = 0; s < n; s++) {
                    int64_t want = s < 4 ? s : 40 - 24 + s;
                    same &= kve_slot_position(&g.c, l, h, s) == want;
                }
            }
        CHECK(same, "%s: compressed StreamingLLM keeps other tokens", si ? "pre" : "post");
        /* the same attention as the evicting cache over the same tokens (in another slot order) */
        for (l = 0; l < L; l++) {
            float k[HK * D], v[HK * D], q[H * D], og[H * D], oe[H * D];
            lc_token(l, 39, 28, k, v, q);
            CHECK_RESULT(kve_attend(&g.c, l, q, og), KVE_OK);
            CHECK_RESULT(kve_attend(&e.c, l, q, oe), KVE_OK);
            worst = fmax(worst, rel_err_ff(og, oe, H * D));
        }
        CHECK(worst < 1e-5, "%s: compressed StreamingLLM attends differently by %.3g", si ? "pre" : "post", worst);
        /* then it grows until capacity: 24 kept + 40 new */
        for (p = 40; p < 100 && r == KVE_OK; p++) r = lc_step(&g.c, p, 29, out);
        CHECK(r == KVE_ERROR_CACHE_FULL && p - 1 == 80, "grow: full at token %lld with %s", (long long)p - 1,
              kve_result_string(r));
        tu_close(&g);
        tu_close(&e);
    }
}

/* 10. attention positions: what the manual promises, and the smaller fixes */
static void test_positions_and_messages(void)
{
    kve_config cfg = lc_config(&lc_cases[1], 32, KVE_KEYS_PRE_ROPE, KVE_TYPE_F32, KVE_TYPE_F32);
    tu_cache a;
    int64_t qpos, kpos[32];
    int32_t s, n, ok = 1;
    CHECK_RESULT(tu_open(&a, &cfg), KVE_OK);
    lc_store_range(&a.c, 0, 50, 24); /* 4 sinks + 20 recent of 50 */
    CHECK_RESULT(kve_attention_positions(&a.c, 0, 1, &qpos, kpos), KVE_OK);
    n = kve_length(&a.c, 0, 1);
    /* pos-shift numbers the cache 0 .. n-1 in order: the query sits at n - 1 */
    CHECK(qpos == n - 1, "pre-RoPE pos-shift: query at %lld, expected %d", (long long)qpos, n - 1);
    for (s = 0; s < n; s++) {
        int64_t p = kve_slot_position(&a.c, 0, 1, s);
        ok &= s < 4 ? kpos[s] == s : kpos[s] == p - (50 - n) ;
    }
    CHECK(ok, "pre-RoPE pos-shift: key positions are not the cache order");
    CHECK_RESULT(kve_attention_positions(&a.c, 0, 2, &qpos, kpos), KVE_ERROR_INDEX_OUT_OF_RANGE);
    {   /* without RoPE nothing is rotated: -1 everywhere */
        kve_config nc = cfg;
        tu_cache t;
        nc.rope_layout = KVE_ROPE_NONE;
        CHECK_RESULT(tu_open(&t, &nc), KVE_OK);
        lc_store_range(&t.c, 0, 5, 24);
        CHECK_RESULT(kve_attention_positions(&t.c, 1, 0, &qpos, kpos), KVE_OK);
        CHECK(qpos == -1 && kpos[0] == -1 && kpos[4] == -1, "no RoPE: positions %lld %lld",
              (long long)qpos, (long long)kpos[0]);
        tu_close(&t);
    }
    CHECK_RESULT(kve_attention_positions(&a.c, 0, 0, NULL, kpos), KVE_ERROR_NULL_ARGUMENT);
    tu_close(&a);
    CHECK(strstr(kve_result_string(KVE_ERROR_CACHE_FULL), "KVE_DECODE_EVICT") != NULL,
          "the cache-full message does not name KVE_DECODE_EVICT");
    {
        kve_config sc = lc_config(&lc_cases[3], 8, KVE_KEYS_POST_ROPE, KVE_TYPE_F32, KVE_TYPE_F32);
        float k[HK * D], v[HK * D], q[H * D];
        int32_t i;
        sc.policy.decode = KVE_DECODE_GROW; sc.policy.budget = 0; sc.policy.window = 4;
        CHECK_RESULT(tu_open(&a, &sc), KVE_OK);
        CHECK(kve_layer_budget(&a.c, 0) == 8, "grow mode: the layer budget is the capacity");
        for (i = 0; i < 8; i++) {
            lc_token(0, i, 25, k, v, q);
            kve_store(&a.c, 0, i, k, v, NULL);
        }
        CHECK_RESULT(kve_store(&a.c, 0, 8, k, v, NULL), KVE_ERROR_CACHE_FULL);
        CHECK_RESULT(kve_observe(&a.c, 0, 9, q, NULL), KVE_ERROR_INVALID_COUNT);
        CHECK_RESULT(kve_observe(&a.c, 1, 1, q, NULL), KVE_ERROR_EMPTY);
        tu_close(&a);
    }
}

/* two scorers and two vtables for the configurations that differ only in which one they name */
static kve_result lc_score_up(const kve_cache *c, int32_t l, int32_t h, float *score, void *u)
{
    int32_t s, n = kve_length(c, l, h);
    (void)u;
    for (s = 0; s < n; s++) score[s] = (float)kve_slot_position(c, l, h, s);
    return KVE_OK;
}
static kve_result lc_score_down(const kve_cache *c, int32_t l, int32_t h, float *score, void *u)
{
    int32_t s, n = kve_length(c, l, h);
    (void)u;
    for (s = 0; s < n; s++) score[s] = -(float)kve_slot_position(c, l, h, s);
    return KVE_OK;
}
static const kve_policy_vtable lc_vt_one = {"one", 0, lc_never_room, NULL};
static const kve_policy_vtable lc_vt_two = {"two", 0, lc_never_room, NULL};

/* Variant v of a configuration: *a a valid configuration, *b the same with one field changed
   (to a value that is not its default either). Returns the field's name, NULL past the last. */
static const char *lc_variant(int v, kve_config *a, kve_config *b)
{
    static const char *names[] = {
        "n_layers", "n_heads", "n_kv_heads", "head_dim", "capacity", "rope_layout", "rope_theta",
        "rope_dims", "rope_linear_factor", "key_storage", "k_type", "v_type", "kind", "budget",
        "window", "kernel", "pooling", "gqa", "beta", "sinks", "pos_shift", "decode",
        "evict_batch", "allocation", "compression_ratio", "alpha_safeguard", "lag_size",
        "chunk_length", "cross_scoring", "seed", "n_future_positions", "no_covariance",
        "no_vnorm", "epsilon", "scorer", "custom", "lazy_threshold", "n_recent"};
    kve_policy_config *p = &a->policy, *q;
    if (v >= (int)(sizeof names / sizeof names[0])) return NULL;
    *a = lc_config(&lc_cases[3], 64, KVE_KEYS_POST_ROPE, KVE_TYPE_F32, KVE_TYPE_F32); /* SnapKV */
    switch (v) { /* the kind whose parameter it is */
    case 18: p->kind = KVE_POLICY_PYRAMIDKV; break;
    case 19: case 20: p->kind = KVE_POLICY_STREAMINGLLM; p->decode = KVE_DECODE_GROW; break;
    case 26: case 28: p->kind = KVE_POLICY_LAGKV; p->window = 0; break;
    case 29: p->kind = KVE_POLICY_RANDOM; p->seed = 1; break;
    case 30: case 31: case 32: case 33: p->kind = KVE_POLICY_EXPECTED_ATTENTION; p->window = 0; break;
    case 34: p->kind = KVE_POLICY_SCORER; p->scorer = lc_score_up; break;
    case 35: p->kind = KVE_POLICY_CUSTOM; p->custom = &lc_vt_one; break;
    case 36: case 37: p->kind = KVE_POLICY_SIMLAYERKV; p->window = 0; p->decode = KVE_DECODE_GROW;
             p->evict_batch = 0; p->lazy_threshold = 0.5; p->n_recent = 8; break;
    default: break;
    }
    *b = *a;
    q = &b->policy;
    switch (v) {
    case 0: b->n_layers = 3; break;
    case 1: b->n_heads = 2 * H; break;
    case 2: b->n_kv_heads = 1; break;
    case 3: b->head_dim = 8; break;
    case 4: b->capacity = 80; break;
    case 5: b->rope_layout = KVE_ROPE_HALF; break;
    case 6: b->rope_theta = 500000.0; break;
    case 7: b->rope_dims = 8; break;
    case 8: b->rope_linear_factor = 2.0; break;
    case 9: b->key_storage = KVE_KEYS_PRE_ROPE; break;
    case 10: b->k_type = KVE_TYPE_F16; break;
    case 11: b->v_type = KVE_TYPE_BF16; break;
    case 12: q->kind = KVE_POLICY_H2O; q->kernel = 0; q->pooling = 0; q->decode = 0; q->evict_batch = 0; break;
    case 13: q->budget = 20; break;
    case 14: q->window = 6; break;
    case 15: q->kernel = 3; break;
    case 16: q->pooling = p->pooling == KVE_POOL_AVG ? KVE_POOL_MAX : KVE_POOL_AVG; break;
    case 17: q->gqa = KVE_REDUCE_MAX; break;
    case 18: q->beta = 5; break;
    case 19: q->sinks = 2; break;
    case 20: q->pos_shift = KVE_POS_SHIFT_OFF; break;
    case 21: q->decode = KVE_DECODE_GROW; q->evict_batch = 0; break;
    case 22: q->evict_batch = 2; break;
    case 23: q->allocation = KVE_ALLOCATION_PYRAMID; break;
    case 24: q->compression_ratio = 0.5; break;
    case 25: q->allocation = p->allocation = KVE_ALLOCATION_ADAKV; p->decode = q->decode = KVE_DECODE_GROW;
             p->evict_batch = q->evict_batch = 0; q->alpha_safeguard = 0.5; break;
    case 26: q->lag_size = 8; break;
    case 27: q->chunk_length = 4; break;
    case 28: q->cross_scoring = 1; break;
    case 29: q->seed = 2; break;
    case 30: q->n_future_positions = 64; break;
    case 31: q->no_covariance = 1; break;
    case 32: q->no_vnorm = 1; break;
    case 33: q->epsilon = 0.5; break;
    case 34: q->scorer = lc_score_down; break;
    case 35: q->custom = &lc_vt_two; break;
    case 36: q->lazy_threshold = 0.25; break;
    case 37: q->n_recent = 6; break;
    }
    return names[v];
}

/* Every field of the configuration is part of what a copy and a saved state must match: changed
   alone, it makes kve_cache_copy and kve_state_load refuse, and leaves the destination as it was */
static void test_config_fields(void)
{
    kve_config a, b;
    const char *name;
    int v;
    for (v = 0; (name = lc_variant(v, &a, &b)) != NULL; v++) {
        tu_cache ca, cb;
        unsigned char *blob, *before;
        size_t n, m;
        kve_result ra = tu_open(&ca, &a), rb = tu_open(&cb, &b);
        CHECK(ra == KVE_OK && rb == KVE_OK, "%s: the configurations are refused: %s, %s", name,
              kve_result_string(ra), kve_result_string(rb));
        if (ra != KVE_OK || rb != KVE_OK) {
            if (ra == KVE_OK) tu_close(&ca);
            if (rb == KVE_OK) tu_close(&cb);
            continue;
        }
        lc_store_range(&ca.c, 0, 3, 41);
        if (b.n_heads <= H && b.n_kv_heads <= HK && b.head_dim <= D) /* lc_step's token sizes */
            lc_store_range(&cb.c, 0, 2, 42);
        m = lc_save(&cb.c, &before);
        CHECK(kve_cache_copy(&cb.c, &ca.c) == KVE_ERROR_STATE_CONFIG,
              "%s changed: the copy was not refused", name);
        n = lc_save(&ca.c, &blob);
        /* a saved state holds no function pointers (the manual says so): those two load */
        if (v != 34 && v != 35)
            CHECK(kve_state_load(&cb.c, blob, n) == KVE_ERROR_STATE_CONFIG,
                  "%s changed: the saved state was not refused", name);
        CHECK(lc_state_is(&cb.c, before, m), "%s changed: a refused copy or load wrote", name);
        /* and the other way round */
        CHECK(kve_cache_copy(&ca.c, &cb.c) == KVE_ERROR_STATE_CONFIG,
              "%s changed: the copy back was not refused", name);
        free(blob);
        free(before);
        tu_close(&ca);
        tu_close(&cb);
    }
    CHECK(v == 38, "%d configuration fields tried", v);
}

/* The checksum is the manual's rule (64-bit words, then the trailing bytes one by one), and a flip
   of any bit of a small state is refused, trailing bytes included: states of a one-head f32 cache
   whose length before the checksum is not a multiple of 8 */
static void test_checksum_every_byte(void)
{
    int tokens;
    for (tokens = 1; tokens <= 3; tokens++) {
        kve_config c;
        tu_cache t;
        unsigned char *blob, *copy;
        float k[5] = {1.0f, -2.0f, 0.5f, 3.0f, 0.25f}, v[5] = {0.125f, 4.0f, -1.0f, 2.5f, 1.5f};
        size_t n, bit;
        int refused = 0, tried = 0;
        int64_t pos;
        memset(&c, 0, sizeof c);
        c.n_layers = 1; c.n_heads = 1; c.head_dim = 4 + (tokens == 3); c.capacity = 8;
        c.rope_dims = 4;
        c.policy.kind = KVE_POLICY_FULL;
        CHECK_RESULT(tu_open(&t, &c), KVE_OK);
        for (pos = 0; pos < tokens; pos++) CHECK_RESULT(kve_store(&t.c, 0, pos, k, v, NULL), KVE_OK);
        n = lc_save(&t.c, &blob);
        CHECK((n - 8) % 8 != 0, "%d tokens: %zu bytes before the checksum, a multiple of 8", tokens, n - 8);
        copy = (unsigned char *)malloc(n);
        memcpy(copy, blob, n);
        lc_fix_checksum(copy, n);
        CHECK(memcmp(copy, blob, n) == 0, "%d tokens: the checksum is not the manual's rule", tokens);
        for (bit = 0; bit < 8 * n; bit++) {
            memcpy(copy, blob, n);
            copy[bit / 8] ^= (unsigned char)(1u << (bit % 8));
            tried++;
            refused += kve_state_load(&t.c, copy, n) != KVE_OK;
        }
        CHECK(refused == tried, "%d tokens: %d of %d bit flips loaded", tokens, tried - refused, tried);
        CHECK(lc_state_is(&t.c, blob, n), "%d tokens: a refused load changed the cache", tokens);
        free(copy);
        free(blob);
        tu_close(&t);
    }
}

int main(void)
{
    test_engine_attention();
    test_engine_attention_simlayerkv();
    test_observe_compress();
    test_accumulate();
    test_remove();
    test_remove_after_eviction();
    test_remove_sinks();
    test_remove_state();
    test_remove_queries();
    test_shift();
    test_shift_errors();
    test_copy();
    test_config_fields();
    test_checksum_every_byte();
    test_state();
    test_state_content();
    test_state_invariants();
    test_store_n();
    test_threads();
    test_positions_and_messages();
    test_streaming_grow();
    return tu_summary("test_lifecycle");
}
