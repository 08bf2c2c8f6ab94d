/* Policy tests: selections against an independent double-precision reference of SPEC's
   SnapKV / PyramidKV / H2O, StreamingLLM against a naive reference and across storage modes,
   decode-time eviction, user policies, and invalid parameters. */
#define KVEVICT_IMPLEMENTATION
#include "kvevict.h"
#include "testutil.h"

/* ---- reference selection (SPEC.md, written out again in double precision) ---------------- */
typedef struct sel_case {
    const char *name;
    kve_policy_kind kind;
    int H, Hk, d, L, w, C, kernel, n_layers, layer;
    kve_pooling pooling;
    kve_reduce gqa;
} sel_case;

/* reference pooled score per prefix position of KV head kvh */
static void ref_scores(const sel_case *sc, const float *q, const float *k, int kvh, double *score)
{
    int G = sc->H / sc->Hk, L = sc->L, d = sc->d, P = L - sc->w, g, i, j, x;
    double *rows = (double *)tu_alloc((size_t)G * P * sizeof(double));
    double *lg = (double *)tu_alloc((size_t)L * sizeof(double));
    double *red = (double *)tu_alloc((size_t)P * sizeof(double));
    int first_q = sc->kind == KVE_POLICY_H2O ? 0 : L - sc->w;
    for (g = 0; g < G; g++) {
        int h = kvh * G + g;
        for (i = first_q; i < L; i++) {
            double mx = -INFINITY, sum = 0;
            for (j = 0; j <= i; j++) {
                double dot = 0;
                for (x = 0; x < d; x++) dot += (double)q[((size_t)i * sc->H + h) * d + x] * k[((size_t)j * sc->Hk + kvh) * d + x];
                lg[j] = dot / sqrt((double)d);
                if (lg[j] > mx) mx = lg[j];
            }
            for (j = 0; j <= i; j++) sum += (lg[j] = exp(lg[j] - mx));
            for (j = 0; j < P && j <= i; j++) rows[g * P + j] += lg[j] / sum;
        }
    }
    for (j = 0; j < P; j++) {
        double a = rows[j];
        for (g = 1; g < G; g++) a = sc->gqa == KVE_REDUCE_MAX ? fmax(a, rows[g * P + j]) : a + rows[g * P + j];
        red[j] = sc->gqa == KVE_REDUCE_MAX ? a : a / G;
    }
    for (j = 0; j < P; j++) {
        int half = sc->kernel / 2, lo = j - half, hi = j + half;
        double a = sc->pooling == KVE_POOL_MAX ? -INFINITY : 0;
        if (sc->kind == KVE_POLICY_H2O || sc->kernel == 1) { score[j] = red[j]; continue; }
        for (x = lo < 0 ? 0 : lo; x <= hi && x < P; x++)
            a = sc->pooling == KVE_POOL_MAX ? fmax(a, red[x]) : a + red[x];
        score[j] = sc->pooling == KVE_POOL_MAX ? a : a / sc->kernel;
    }
    free(rows); free(lg); free(red);
}

static void run_selection(const sel_case *sc)
{
    kve_config cfg;
    tu_cache t;
    int L = sc->L, H = sc->H, Hk = sc->Hk, d = sc->d, i, h;
    float *q = (float *)tu_alloc((size_t)L * H * d * sizeof(float));
    float *k = (float *)tu_alloc((size_t)L * Hk * d * sizeof(float));
    float *out = (float *)tu_alloc((size_t)L * H * d * sizeof(float));
    long expect_prefix;
    memset(&cfg, 0, sizeof cfg);
    cfg.n_layers = sc->n_layers; cfg.n_heads = H; cfg.n_kv_heads = Hk; cfg.head_dim = d;
    cfg.capacity = L > sc->C ? L : sc->C;
    cfg.rope_layout = KVE_ROPE_NONE;
    cfg.policy.kind = sc->kind;
    cfg.policy.budget = sc->C; cfg.policy.window = sc->w; cfg.policy.kernel = sc->kernel;
    cfg.policy.pooling = sc->pooling; cfg.policy.gqa = sc->gqa;
    cfg.policy.decode = KVE_DECODE_GROW;
    CHECK_RESULT(tu_open(&t, &cfg), KVE_OK);
    tu_seed((unsigned long long)(L * 31 + sc->C + sc->kernel * 7 + H));
    tu_fill(q, (size_t)L * H * d, 1.5f);
    tu_fill(k, (size_t)L * Hk * d, 1.5f);
    for (i = 0; i < L; i++) CHECK_RESULT(kve_store(&t.c, sc->layer, i, k + (size_t)i * Hk * d, k, NULL), KVE_OK);
    CHECK_RESULT(kve_prefill(&t.c, sc->layer, L, q, NULL, out), KVE_OK);
    CHECK_RESULT(kve_compress(&t.c, sc->layer), KVE_OK);
    CHECK_RESULT(kve_check(&t.c), KVE_OK);
    if (sc->kind == KVE_POLICY_PYRAMIDKV)
        expect_prefix = ref_pyramid_prefix(sc->C, sc->w, 20, sc->n_layers, sc->layer, L);
    else
        expect_prefix = L < sc->C ? -1 : sc->C - sc->w;
    for (h = 0; h < Hk; h++) {
        int n = kve_length(&t.c, sc->layer, h), P = L - sc->w, j;
        unsigned char *kept = (unsigned char *)tu_alloc((size_t)L);
        double *score = (double *)tu_alloc((size_t)P * sizeof(double));
        double min_kept = INFINITY, max_dropped = -INFINITY;
        int window_ok = 1;
        for (j = 0; j < n; j++) kept[kve_slot_position(&t.c, sc->layer, h, j)] = 1;
        if (expect_prefix < 0) {
            CHECK(n == L, "%s head %d: keeps %d of %d, expected all", sc->name, h, n, L);
        } else {
            CHECK(n == expect_prefix + sc->w, "%s head %d: keeps %d, expected %ld", sc->name, h, n,
                  expect_prefix + sc->w);
            for (j = P; j < L; j++) window_ok &= kept[j];
            CHECK(window_ok, "%s head %d: window not kept", sc->name, h);
            ref_scores(sc, q, k, h, score);
            for (j = 0; j < P; j++) {
                if (kept[j]) min_kept = fmin(min_kept, score[j]);
                else max_dropped = fmax(max_dropped, score[j]);
            }
            CHECK(expect_prefix == 0 || expect_prefix == P || min_kept >= max_dropped - 1e-5 * fabs(max_dropped),
                  "%s head %d: kept score %.9g < dropped %.9g", sc->name, h, min_kept, max_dropped);
        }
        /* bytes reported for the layer follow the lengths */
        free(kept); free(score);
    }
    {
        size_t expect = 0;
        for (h = 0; h < Hk; h++) expect += (size_t)kve_length(&t.c, sc->layer, h) * d * 2 * sizeof(float);
        CHECK(kve_layer_bytes(&t.c, sc->layer) == expect, "%s: layer bytes", sc->name);
    }
    free(q); free(k); free(out);
    tu_close(&t);
}

static void test_selections(void)
{
    static const sel_case cases[] = {
        {"snapkv avg", KVE_POLICY_SNAPKV, 2, 2, 16, 64, 8, 24, 5, 1, 0, KVE_POOL_AVG, KVE_REDUCE_MEAN},
        {"snapkv max", KVE_POLICY_SNAPKV, 2, 2, 16, 64, 8, 24, 7, 1, 0, KVE_POOL_MAX, KVE_REDUCE_MEAN},
        {"snapkv L < C", KVE_POLICY_SNAPKV, 2, 2, 16, 20, 8, 24, 5, 1, 0, KVE_POOL_AVG, KVE_REDUCE_MEAN},
        {"snapkv L == C", KVE_POLICY_SNAPKV, 2, 2, 16, 24, 8, 24, 5, 1, 0, KVE_POOL_AVG, KVE_REDUCE_MEAN},
        {"snapkv kernel 1", KVE_POLICY_SNAPKV, 3, 3, 8, 50, 4, 20, 1, 1, 0, KVE_POOL_AVG, KVE_REDUCE_MEAN},
        {"snapkv gqa 8:1 mean", KVE_POLICY_SNAPKV, 16, 2, 16, 80, 8, 32, 5, 1, 0, KVE_POOL_AVG, KVE_REDUCE_MEAN},
        {"snapkv gqa 8:1 max", KVE_POLICY_SNAPKV, 8, 1, 16, 80, 8, 32, 5, 1, 0, KVE_POOL_AVG, KVE_REDUCE_MAX},
        {"pyramidkv L0", KVE_POLICY_PYRAMIDKV, 2, 2, 16, 64, 8, 24, 5, 5, 0, KVE_POOL_AVG, KVE_REDUCE_MEAN},
        {"pyramidkv L2", KVE_POLICY_PYRAMIDKV, 4, 2, 16, 64, 8, 24, 5, 5, 2, KVE_POOL_AVG, KVE_REDUCE_MEAN},
        {"pyramidkv deep, C-w = 0", KVE_POLICY_PYRAMIDKV, 2, 2, 16, 64, 8, 24, 5, 5, 4, KVE_POOL_AVG, KVE_REDUCE_MEAN},
        {"pyramidkv one layer", KVE_POLICY_PYRAMIDKV, 2, 2, 16, 64, 8, 24, 5, 1, 0, KVE_POOL_AVG, KVE_REDUCE_MEAN},
        {"pyramidkv uniform", KVE_POLICY_PYRAMIDKV, 2, 2, 16, 28, 8, 24, 5, 4, 3, KVE_POOL_AVG, KVE_REDUCE_MEAN},
        {"h2o", KVE_POLICY_H2O, 2, 2, 16, 64, 8, 24, 1, 1, 0, KVE_POOL_NONE, KVE_REDUCE_MEAN},
        {"h2o gqa 8:1 max", KVE_POLICY_H2O, 8, 1, 16, 64, 8, 24, 1, 1, 0, KVE_POOL_NONE, KVE_REDUCE_MAX},
    };
    int i;
    for (i = 0; i < (int)(sizeof cases / sizeof cases[0]); i++) run_selection(&cases[i]);
}

static void test_pyramid_schedule(void)
{
    int32_t b[5];
    long sum = 0;
    int l;
    CHECK_RESULT(kve_pyramid_budgets(24, 8, 20, 4, 40, b), KVE_OK);
    CHECK(b[0] == 40 && b[1] == 30 && b[2] == 20 && b[3] == 10, "schedule 40/30/20/10: %d %d %d %d", b[0], b[1], b[2], b[3]);
    CHECK_RESULT(kve_pyramid_budgets(24, 8, 20, 4, 28, b), KVE_OK);
    CHECK(b[0] == 24 && b[3] == 24, "uniform branch");
    CHECK_RESULT(kve_pyramid_budgets(24, 8, 20, 4, 20, b), KVE_OK);
    CHECK(b[0] == 20 && b[3] == 20, "keep-all branch");
    CHECK_RESULT(kve_pyramid_budgets(24, 8, 20, 1, 100, b), KVE_OK);
    CHECK(b[0] == 24, "one layer is SnapKV");
    CHECK_RESULT(kve_pyramid_budgets(24, 8, 20, 5, 64, b), KVE_OK);
    CHECK(b[4] == 8, "deepest layer keeps only the window: %d", b[4]);
    /* the floor quirk: the mean budget is at least C */
    {
        int32_t bb[32];
        kve_pyramid_budgets(2048, 32, 20, 32, 100000, bb);
        for (l = 0; l < 32; l++) sum += bb[l];
        CHECK(sum >= 32L * 2048 && bb[0] > bb[31], "pyramid mean %ld / 32 vs C 2048", sum);
    }
    CHECK_RESULT(kve_pyramid_budgets(24, 24, 20, 4, 40, b), KVE_ERROR_WINDOW_TOO_LARGE);
    CHECK_RESULT(kve_pyramid_budgets(24, 8, 0, 4, 40, b), KVE_ERROR_INVALID_PARAMETER);
    CHECK_RESULT(kve_pyramid_budgets(24, 8, 20, 0, 40, b), KVE_ERROR_INVALID_DIMENSIONS);
    CHECK_RESULT(kve_pyramid_budgets(24, 8, 20, 4, 40, NULL), KVE_ERROR_NULL_ARGUMENT);
}

static void test_pool_and_select(void)
{
    float in[6] = {1, 5, 2, 2, 9, 0}, out[6];
    unsigned char keep[6];
    int32_t order[6];
    CHECK_RESULT(kve_pool1d(in, 6, 3, KVE_POOL_AVG, out), KVE_OK);
    CHECK(fabsf(out[0] - 2.0f) < 1e-6 && fabsf(out[5] - 3.0f) < 1e-6 && fabsf(out[2] - 3.0f) < 1e-6,
          "avg pool counts the zero padding: %g %g %g", out[0], out[2], out[5]);
    CHECK_RESULT(kve_pool1d(in, 6, 3, KVE_POOL_MAX, out), KVE_OK);
    CHECK(out[0] == 5 && out[5] == 9 && out[3] == 9, "max pool");
    CHECK_RESULT(kve_pool1d(in, 6, 4, KVE_POOL_MAX, out), KVE_ERROR_EVEN_KERNEL);
    CHECK_RESULT(kve_pool1d(in, 6, 3, KVE_POOL_MAX, in), KVE_ERROR_INVALID_PARAMETER);
    {
        float s[6] = {3, 7, 7, 1, 7, NAN};
        CHECK_RESULT(kve_select_top(s, 6, 2, keep, order), KVE_OK);
        CHECK(keep[1] && keep[2] && !keep[4], "ties go to the lower index");
        CHECK_RESULT(kve_select_top(s, 6, 5, keep, order), KVE_OK);
        CHECK(!keep[5] && keep[3], "NaN ranks lowest");
        CHECK_RESULT(kve_select_top(s, 6, 7, keep, order), KVE_ERROR_INVALID_COUNT);
    }
}

/* ---- StreamingLLM ---------------------------------------------------------------------- */
/* naive reference: a list of kept tokens; positions are cache indices (pos-shift) or true */
static double streaming_vs_reference(int sinks, int recent, int pos_shift, kve_key_storage keys,
                                     kve_rope_layout layout, int steps)
{
    int H = 4, Hk = 2, d = 16, G = 2, cap = sinks + recent + 1, s, h, j;
    kve_config cfg;
    tu_cache t;
    float q[64], k[32], v[32], out[64];
    float *allk = (float *)tu_alloc((size_t)steps * 32 * sizeof(float));
    float *allv = (float *)tu_alloc((size_t)steps * 32 * sizeof(float));
    int *kept = (int *)tu_alloc((size_t)(cap + 1) * sizeof(int));
    int nkept = 0;
    double worst = 0, ref[16];
    memset(&cfg, 0, sizeof cfg);
    cfg.n_layers = 1; cfg.n_heads = H; cfg.n_kv_heads = Hk; cfg.head_dim = d; cfg.capacity = cap;
    cfg.rope_layout = layout; cfg.key_storage = keys;
    cfg.policy.kind = KVE_POLICY_STREAMINGLLM;
    cfg.policy.sinks = sinks ? sinks : KVE_NO_SINKS;
    cfg.policy.pos_shift = pos_shift ? KVE_POS_SHIFT_ON : KVE_POS_SHIFT_OFF;
    CHECK_RESULT(tu_open(&t, &cfg), KVE_OK);
    tu_seed((unsigned long long)(sinks * 100 + recent + pos_shift * 7 + keys));
    for (s = 0; s < steps; s++) {
        tu_fill(q, 64, 1.0f); tu_fill(k, 32, 1.0f); tu_fill(v, 32, 1.0f);
        memcpy(allk + (size_t)s * 32, k, sizeof k);
        memcpy(allv + (size_t)s * 32, v, sizeof v);
        CHECK_RESULT(kve_store(&t.c, 0, s, k, v, NULL), KVE_OK);
        CHECK_RESULT(kve_attend(&t.c, 0, q, out), KVE_OK);
        kept[nkept++] = s;
        for (h = 0; h < H; h++) {
            const float *kp[64], *vp[64];
            double kpos[64];
            for (j = 0; j < nkept; j++) {
                kp[j] = allk + (size_t)kept[j] * 32 + (h / G) * d;
                vp[j] = allv + (size_t)kept[j] * 32 + (h / G) * d;
                kpos[j] = pos_shift ? j : kept[j];
            }
            ref_attend(q + h * d, pos_shift ? nkept - 1 : s, kp, vp, kpos, nkept, d,
                       layout == KVE_ROPE_HALF ? 2 : 1, 10000.0, ref, NULL);
            worst = fmax(worst, rel_err_fd(out + h * d, ref, (size_t)d));
        }
        if (nkept > sinks + recent) { /* evict: keep the first sinks and the last recent */
            memmove(kept + sinks, kept + sinks + 1, (size_t)(nkept - sinks - 1) * sizeof(int));
            nkept--;
        }
        CHECK(kve_length(&t.c, 0, 1) <= cap, "length within capacity");
    }
    CHECK_RESULT(kve_check(&t.c), KVE_OK);
    free(allk); free(allv); free(kept);
    tu_close(&t);
    return worst;
}

static void test_streaming_reference(void)
{
    int ps, keys, li, i;
    struct { int sinks, recent; } shapes[] = {{4, 12}, {0, 10}, {3, 0}, {1, 1}};
    for (i = 0; i < 4; i++)
        for (ps = 0; ps <= 1; ps++)
            for (keys = 1; keys <= 2; keys++)
                for (li = 0; li < 2; li++) {
                    double e = streaming_vs_reference(shapes[i].sinks, shapes[i].recent, ps,
                                                      (kve_key_storage)keys,
                                                      li ? KVE_ROPE_HALF : KVE_ROPE_INTERLEAVED, 150);
                    CHECK(e < 1e-5, "streaming sinks=%d recent=%d pos_shift=%d keys=%d layout=%d: %g",
                          shapes[i].sinks, shapes[i].recent, ps, keys, li, e);
                }
}

/* 10,000 steps: pre-RoPE and post-RoPE storage agree, with pos-shift and without */
static void test_streaming_long(void)
{
    int ps, s, H = 8, Hk = 2, d = 32, cap = 64;
    for (ps = 0; ps <= 1; ps++) {
        kve_config cfg;
        tu_cache a, b;
        float q[256], k[64], v[64], oa[256], ob[256];
        double worst = 0;
        int moved = 0;
        memset(&cfg, 0, sizeof cfg);
        cfg.n_layers = 1; cfg.n_heads = H; cfg.n_kv_heads = Hk; cfg.head_dim = d; cfg.capacity = cap;
        cfg.policy.kind = KVE_POLICY_STREAMINGLLM;
        cfg.policy.pos_shift = ps ? KVE_POS_SHIFT_ON : KVE_POS_SHIFT_OFF;
        cfg.key_storage = KVE_KEYS_POST_ROPE;
        tu_open(&a, &cfg);
        cfg.key_storage = KVE_KEYS_PRE_ROPE;
        tu_open(&b, &cfg);
        tu_seed(77 + (unsigned long long)ps);
        for (s = 0; s < 10000; s++) {
            int32_t sa[2], sb[2];
            tu_fill(q, 256, 1.0f); tu_fill(k, 64, 1.0f); tu_fill(v, 64, 1.0f);
            kve_store(&a.c, 0, s, k, v, sa);
            kve_store(&b.c, 0, s, k, v, sb);
            kve_attend(&a.c, 0, q, oa);
            kve_attend(&b.c, 0, q, ob);
            worst = fmax(worst, rel_err_ff(oa, ob, 256));
            /* the new token overwrote exactly the oldest recent slot: a ring, nothing moved */
            if (s >= cap) moved |= sa[0] != 4 + (s - cap) % (cap - 4);
        }
        CHECK(worst < 1e-4, "pre vs post RoPE over 10,000 steps, pos_shift=%d: %g", ps, worst);
        CHECK(!moved, "eviction must reuse the ring slot");
        CHECK_RESULT(kve_check(&a.c), KVE_OK);
        CHECK_RESULT(kve_check(&b.c), KVE_OK);
        tu_close(&a); tu_close(&b);
    }
}

/* ---- decode-time eviction ---------------------------------------------------------------- */
static void test_snapkv_decode_evict(void)
{
    int H = 4, Hk = 2, d = 16, s, over = 0, window_ok = 1, shrank = 0, l;
    kve_policy_kind kinds[2] = {KVE_POLICY_SNAPKV, KVE_POLICY_PYRAMIDKV};
    int ki;
    for (ki = 0; ki < 2; ki++) {
        kve_config cfg;
        tu_cache t;
        float q[64], k[32], v[32], out[64];
        memset(&cfg, 0, sizeof cfg);
        cfg.n_layers = 3; cfg.n_heads = H; cfg.n_kv_heads = Hk; cfg.head_dim = d; cfg.capacity = 64;
        cfg.policy.kind = kinds[ki]; cfg.policy.budget = 32; cfg.policy.window = 8;
        cfg.policy.decode = KVE_DECODE_EVICT; cfg.policy.evict_batch = 4;
        CHECK_RESULT(tu_open(&t, &cfg), KVE_OK);
        tu_seed(21);
        for (s = 0; s < 400; s++) {
            tu_fill(q, 64, 1.0f); tu_fill(k, 32, 1.0f); tu_fill(v, 32, 1.0f);
            for (l = 0; l < 3; l++) {
                int before = kve_length(&t.c, l, 0), j, p, after;
                CHECK_RESULT(kve_store(&t.c, l, s, k, v, NULL), KVE_OK);
                CHECK_RESULT(kve_attend(&t.c, l, q, out), KVE_OK);
                after = kve_length(&t.c, l, 0);
                over |= after > kve_layer_budget(&t.c, l);
                shrank |= after < before;
                for (p = s - 7 < 0 ? 0 : s - 7; p <= s; p++) {
                    int found = 0;
                    for (j = 0; j < after; j++) found |= kve_slot_position(&t.c, l, 0, j) == p;
                    window_ok &= found;
                }
            }
        }
        CHECK(!over, "%d: a layer exceeded its budget", ki);
        CHECK(shrank, "%d: decode eviction never ran", ki);
        CHECK(window_ok, "%d: a token of the recent window was evicted", ki);
        CHECK_RESULT(kve_check(&t.c), KVE_OK);
        if (ki == 1) CHECK(kve_layer_budget(&t.c, 0) > kve_layer_budget(&t.c, 2), "pyramid budgets shrink with depth");
        tu_close(&t);
    }
    {
        /* the reference behaviour: compress the prompt, then grow until the buffer is full */
        kve_config cfg;
        tu_cache t;
        float q[64] = {0}, k[32] = {0}, v[32] = {0}, out[64];
        memset(&cfg, 0, sizeof cfg);
        cfg.n_layers = 1; cfg.n_heads = H; cfg.n_kv_heads = Hk; cfg.head_dim = d; cfg.capacity = 48;
        cfg.policy.kind = KVE_POLICY_SNAPKV; cfg.policy.budget = 24; cfg.policy.window = 8;
        tu_open(&t, &cfg);
        for (s = 0; s < 40; s++) kve_store(&t.c, 0, s, k, v, NULL);
        CHECK_RESULT(kve_compress(&t.c, 0), KVE_ERROR_NO_QUERIES);
        kve_attend(&t.c, 0, q, out);
        CHECK_RESULT(kve_compress(&t.c, 0), KVE_OK);
        CHECK(kve_length(&t.c, 0, 0) == 24, "compressed to the budget");
        for (s = 40; s < 64; s++) CHECK_RESULT(kve_store(&t.c, 0, s, k, v, NULL), KVE_OK);
        CHECK(kve_length(&t.c, 0, 0) == 48, "grows after compression");
        CHECK_RESULT(kve_store(&t.c, 0, 64, k, v, NULL), KVE_ERROR_CACHE_FULL);
        tu_close(&t);
    }
}

/* H2O decode: the evicted token is the lightest by accumulated attention outside the window */
static void test_h2o_decode(void)
{
    int H = 4, Hk = 1, d = 16, budget = 16, w = 4, s, j, h, steps = 300, bad = 0, evictions = 0;
    kve_config cfg;
    tu_cache t;
    float q[64], k[16], v[16], out[64], wts[4 * 16];
    double *acc = (double *)tu_alloc((size_t)steps * sizeof(double) * 4);
    kve_attend_options opt;
    memset(&cfg, 0, sizeof cfg);
    cfg.n_layers = 1; cfg.n_heads = H; cfg.n_kv_heads = Hk; cfg.head_dim = d; cfg.capacity = budget;
    cfg.policy.kind = KVE_POLICY_H2O; cfg.policy.budget = budget; cfg.policy.window = w;
    CHECK_RESULT(tu_open(&t, &cfg), KVE_OK);
    memset(&opt, 0, sizeof opt);
    opt.weights = wts;
    tu_seed(5);
    for (s = 0; s < steps; s++) {
        int64_t before[16];
        int nb = kve_length(&t.c, 0, 0), evicted = -1;
        for (j = 0; j < nb; j++) before[j] = kve_slot_position(&t.c, 0, 0, j);
        tu_fill(q, 64, 2.0f); tu_fill(k, 16, 2.0f); tu_fill(v, 16, 1.0f);
        CHECK_RESULT(kve_store(&t.c, 0, s, k, v, NULL), KVE_OK);
        if (nb == budget) {
            /* which position left? it must have had the least mean accumulated weight */
            for (j = 0; j < nb; j++) {
                int still = 0, x;
                for (x = 0; x < kve_length(&t.c, 0, 0); x++) still |= kve_slot_position(&t.c, 0, 0, x) == before[j];
                if (!still) evicted = (int)before[j];
            }
            evictions++;
            if (evicted < 0) bad = 1;
            else {
                double ev = 0;
                for (h = 0; h < H; h++) ev += acc[evicted * 4 + h];
                for (j = 0; j < nb; j++) {
                    double other = 0;
                    if (before[j] == evicted || before[j] > s - w) continue;
                    for (h = 0; h < H; h++) other += acc[before[j] * 4 + h];
                    if (ev > other + 1e-4) bad = 1;
                }
                if (evicted > s - w) bad = 1;
            }
        }
        CHECK_RESULT(kve_attend_ex(&t.c, 0, q, out, &opt), KVE_OK);
        for (h = 0; h < H; h++)
            for (j = 0; j < kve_length(&t.c, 0, 0); j++)
                acc[kve_slot_position(&t.c, 0, 0, j) * 4 + h] += wts[h * budget + j];
    }
    CHECK(evictions == steps - budget, "evictions %d", evictions);
    CHECK(!bad, "H2O evicted a token that was not the lightest outside the recent window");
    {
        /* the library's accumulated scores match the sum of reported weights */
        double e = 0;
        for (j = 0; j < budget; j++) {
            int64_t p = kve_slot_position(&t.c, 0, 0, j);
            e = fmax(e, fabs(kve_scores(&t.c, 0, 1)[j] - acc[p * 4 + 1]));
        }
        CHECK(e < 1e-4, "accumulated scores differ by %g", e);
    }
    CHECK_RESULT(kve_check(&t.c), KVE_OK);
    free(acc);
    tu_close(&t);
}

/* ---- user policies ---------------------------------------------------------------------- */
static kve_result newest_half_make_room(kve_cache *c, int32_t layer, int32_t *ws, void *user)
{
    /* drops the older half of every head, through the public building blocks */
    int32_t h, s;
    unsigned char keep[64];
    (void)ws;
    ++*(int *)user;
    for (h = 0; h < c->cfg.n_kv_heads; h++) {
        int32_t n = kve_length(c, layer, h);
        int64_t newest = kve_slot_position(c, layer, h, 0);
        for (s = 1; s < n; s++) if (kve_slot_position(c, layer, h, s) > newest) newest = kve_slot_position(c, layer, h, s);
        for (s = 0; s < n; s++) keep[s] = kve_slot_position(c, layer, h, s) > newest - n / 2;
        kve_keep_slots(c, layer, h, keep);
    }
    return KVE_OK;
}
static kve_result lazy_make_room(kve_cache *c, int32_t layer, int32_t *ws, void *user)
{
    (void)c; (void)layer; (void)ws; (void)user;
    return KVE_OK; /* makes no room: the library must refuse to overflow */
}

static void test_custom_policy(void)
{
    static const kve_policy_vtable halves = {"newest-half", 0, newest_half_make_room, NULL};
    static const kve_policy_vtable lazy = {"lazy", 0, lazy_make_room, NULL};
    kve_config cfg;
    tu_cache t;
    float k[16] = {0}, v[16] = {0};
    int calls = 0, s, ok = 1;
    memset(&cfg, 0, sizeof cfg);
    cfg.n_layers = 1; cfg.n_heads = 2; cfg.n_kv_heads = 2; cfg.head_dim = 8; cfg.capacity = 16;
    cfg.rope_layout = KVE_ROPE_NONE; /* keys stored as given, so k[0] stays the position */
    cfg.policy.kind = KVE_POLICY_CUSTOM; cfg.policy.custom = &halves; cfg.policy.custom_user = &calls;
    CHECK_RESULT(tu_open(&t, &cfg), KVE_OK);
    for (s = 0; s < 100; s++) {
        k[0] = k[8] = v[0] = v[8] = (float)s;
        ok &= kve_store(&t.c, 0, s, k, v, NULL) == KVE_OK;
        ok &= kve_check(&t.c) == KVE_OK;
    }
    CHECK(ok && calls > 0, "custom policy ran (%d calls)", calls);
    for (s = 0; s < kve_length(&t.c, 0, 1); s++)
        CHECK(((const float *)kve_key(&t.c, 0, 1, s))[0] == (float)kve_slot_position(&t.c, 0, 1, s), "compaction kept k with its position");
    tu_close(&t);
    cfg.policy.custom = &lazy;
    CHECK_RESULT(tu_open(&t, &cfg), KVE_OK);
    for (s = 0; s < 16; s++) kve_store(&t.c, 0, s, k, v, NULL);
    CHECK_RESULT(kve_store(&t.c, 0, 16, k, v, NULL), KVE_ERROR_POLICY_FAILED);
    tu_close(&t);
    cfg.policy.custom = NULL;
    {
        size_t bytes;
        CHECK_RESULT(kve_cache_size(&cfg, &bytes), KVE_ERROR_NULL_ARGUMENT);
    }
}


/* ---- the kvpress scorers beyond the golden cases ------------------------------------------ */
/* kept positions of head h, sorted, into out; returns the count */
static int kept_positions(const kve_cache *c, int32_t l, int32_t h, int64_t *out)
{
    int n = kve_length(c, l, h), i, j;
    for (i = 0; i < n; i++) out[i] = kve_slot_position(c, l, h, i);
    for (i = 1; i < n; i++)
        for (j = i; j > 0 && out[j - 1] > out[j]; j--) {
            int64_t t = out[j]; out[j] = out[j - 1]; out[j - 1] = t;
        }
    return n;
}

/* a prompt of L tokens through a scorer, then kve_compress of layer 0 */
static void prompt_through(tu_cache *t, int L, unsigned long long seed)
{
    int p;
    float q[4 * 16], k[2 * 16], v[2 * 16], out[4 * 16];
    tu_seed(seed);
    for (p = 0; p < L; p++) {
        tu_fill(q, 64, 1.0f); tu_fill(k, 32, 1.0f); tu_fill(v, 32, 1.0f);
        CHECK_RESULT(kve_store(&t->c, 0, p, k, v, NULL), KVE_OK);
        CHECK_RESULT(kve_attend(&t->c, 0, q, out), KVE_OK);
    }
}

static kve_config scorer_config(kve_policy_kind kind, kve_key_storage keys)
{
    kve_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.n_layers = 1; cfg.n_heads = 4; cfg.n_kv_heads = 2; cfg.head_dim = 16; cfg.capacity = 48;
    cfg.rope_layout = KVE_ROPE_HALF; cfg.key_storage = keys;
    cfg.policy.kind = kind; cfg.policy.budget = 20; cfg.policy.lag_size = 6;
    return cfg;
}

/* scorers that read keys score the rotated keys: pre-RoPE and post-RoPE storage keep the same
   tokens (the golden cases hold keys already rotated, so they cannot see this) */
static void test_scorers_key_storage(void)
{
    static const kve_policy_kind kinds[] = {KVE_POLICY_KNORM, KVE_POLICY_KEYDIFF, KVE_POLICY_LAGKV,
                                            KVE_POLICY_TOVA, KVE_POLICY_OBSERVED_ATTENTION,
                                            KVE_POLICY_RANDOM};
    size_t ki;
    for (ki = 0; ki < sizeof kinds / sizeof kinds[0]; ki++) {
        int64_t a[48], b[48];
        int h, na, nb;
        tu_cache pre, post;
        kve_config cp = scorer_config(kinds[ki], KVE_KEYS_PRE_ROPE);
        kve_config cq = scorer_config(kinds[ki], KVE_KEYS_POST_ROPE);
        CHECK_RESULT(tu_open(&pre, &cp), KVE_OK);
        CHECK_RESULT(tu_open(&post, &cq), KVE_OK);
        prompt_through(&pre, 40, 5 + ki);
        prompt_through(&post, 40, 5 + ki);
        CHECK_RESULT(kve_compress(&pre.c, 0), KVE_OK);
        CHECK_RESULT(kve_compress(&post.c, 0), KVE_OK);
        CHECK_RESULT(kve_check(&pre.c), KVE_OK);
        for (h = 0; h < 2; h++) {
            na = kept_positions(&pre.c, 0, h, a);
            nb = kept_positions(&post.c, 0, h, b);
            CHECK(na == 20 && nb == 20 && !memcmp(a, b, sizeof(int64_t) * 20),
                  "kind %d head %d: pre-RoPE keeps other tokens than post-RoPE", (int)kinds[ki], h);
        }
        tu_close(&pre);
        tu_close(&post);
    }
}

/* keydiff against its definition written out again: -cos(k, mean of unit keys), rotated keys */
static void test_keydiff_reference(void)
{
    kve_config cfg = scorer_config(KVE_POLICY_KEYDIFF, KVE_KEYS_PRE_ROPE);
    tu_cache t;
    static float keys[40][2][16];
    int p, h, i, j;
    CHECK_RESULT(tu_open(&t, &cfg), KVE_OK);
    prompt_through(&t, 40, 77);
    for (p = 0; p < 40; p++)
        for (h = 0; h < 2; h++) {
            CHECK_RESULT(kve_read_key(&t.c, 0, h, p, keys[p][h]), KVE_OK);
            kve_rope_apply(&cfg, keys[p][h], p);
        }
    CHECK_RESULT(kve_compress(&t.c, 0), KVE_OK);
    for (h = 0; h < 2; h++) {
        double anchor[16] = {0}, an = 0, score[40], worst_kept = 1e300, best_dropped = -1e300;
        unsigned char kept[40] = {0};
        for (p = 0; p < 40; p++) {
            double nn = 0;
            for (i = 0; i < 16; i++) nn += (double)keys[p][h][i] * keys[p][h][i];
            for (i = 0; i < 16; i++) anchor[i] += keys[p][h][i] / sqrt(nn) / 40.0;
        }
        for (i = 0; i < 16; i++) an += anchor[i] * anchor[i];
        for (p = 0; p < 40; p++) {
            double dot = 0, nn = 0;
            for (i = 0; i < 16; i++) {
                dot += keys[p][h][i] * anchor[i];
                nn += (double)keys[p][h][i] * keys[p][h][i];
            }
            score[p] = -dot / sqrt(nn * an);
        }
        for (j = 0; j < kve_length(&t.c, 0, h); j++) kept[kve_slot_position(&t.c, 0, h, j)] = 1;
        for (p = 0; p < 40; p++) {
            if (kept[p] && score[p] < worst_kept) worst_kept = score[p];
            if (!kept[p] && score[p] > best_dropped) best_dropped = score[p];
        }
        CHECK(worst_kept > best_dropped, "keydiff head %d: kept %.9g below dropped %.9g", h,
              worst_kept, best_dropped);
    }
    tu_close(&t);
}

/* random: reproducible by seed, another seed another selection; knorm keeps the small keys */
static void test_random_and_knorm(void)
{
    kve_config cfg = scorer_config(KVE_POLICY_RANDOM, KVE_KEYS_POST_ROPE);
    tu_cache a, b, c;
    int64_t pa[48], pb[48], pc[48];
    int na, nb, nc;
    cfg.policy.seed = 11;
    CHECK_RESULT(tu_open(&a, &cfg), KVE_OK);
    CHECK_RESULT(tu_open(&b, &cfg), KVE_OK);
    cfg.policy.seed = 12;
    CHECK_RESULT(tu_open(&c, &cfg), KVE_OK);
    prompt_through(&a, 40, 1); prompt_through(&b, 40, 2); prompt_through(&c, 40, 1);
    kve_compress(&a.c, 0); kve_compress(&b.c, 0); kve_compress(&c.c, 0);
    na = kept_positions(&a.c, 0, 1, pa); nb = kept_positions(&b.c, 0, 1, pb);
    nc = kept_positions(&c.c, 0, 1, pc);
    CHECK(na == 20 && nb == 20 && !memcmp(pa, pb, sizeof pa[0] * 20), "random: one seed, two selections");
    CHECK(nc == 20 && memcmp(pa, pc, sizeof pa[0] * 20), "random: two seeds, one selection");
    na = kept_positions(&a.c, 0, 0, pb);
    CHECK(memcmp(pa, pb, sizeof pa[0] * 20), "random: both heads keep the same tokens");
    tu_close(&a); tu_close(&b); tu_close(&c);
    {
        kve_config kc = scorer_config(KVE_POLICY_KNORM, KVE_KEYS_POST_ROPE);
        tu_cache t;
        float x[16], kept_max = 0, dropped_min = 1e30f;
        int s, i;
        unsigned char held[40] = {0};
        static float norms[40];
        CHECK_RESULT(tu_open(&t, &kc), KVE_OK);
        prompt_through(&t, 40, 3);
        for (s = 0; s < 40; s++) {
            float nn = 0;
            kve_read_key(&t.c, 0, 1, s, x);
            for (i = 0; i < 16; i++) nn += x[i] * x[i];
            norms[kve_slot_position(&t.c, 0, 1, s)] = nn;
        }
        kve_compress(&t.c, 0);
        for (s = 0; s < kve_length(&t.c, 0, 1); s++) held[kve_slot_position(&t.c, 0, 1, s)] = 1;
        for (s = 0; s < 40; s++) {
            if (held[s] && norms[s] > kept_max) kept_max = norms[s];
            if (!held[s] && norms[s] < dropped_min) dropped_min = norms[s];
        }
        CHECK(kve_length(&t.c, 0, 1) == 20 && kept_max < dropped_min, "knorm kept a larger key");
        tu_close(&t);
    }
}

/* a user scorer: the library allocates and selects; keeps what the scorer ranks highest */
static kve_result newest_even_scorer(const kve_cache *c, int32_t l, int32_t h, float *score, void *u)
{
    int32_t s;
    int *calls = (int *)u;
    (*calls)++;
    for (s = 0; s < kve_length(c, l, h); s++) {
        int64_t p = kve_slot_position(c, l, h, s);
        score[s] = (float)(p % 2 == 0 ? 1000 + p : p);
    }
    return KVE_OK;
}

static kve_result failing_scorer(const kve_cache *c, int32_t l, int32_t h, float *score, void *u)
{
    (void)c; (void)l; (void)h; (void)score; (void)u;
    return KVE_ERROR_POLICY_FAILED;
}

static void test_user_scorer_and_decode(void)
{
    kve_config cfg = scorer_config(KVE_POLICY_SCORER, KVE_KEYS_POST_ROPE);
    tu_cache t;
    int calls = 0, p, h, over = 0;
    int64_t kept[48];
    cfg.policy.scorer = newest_even_scorer;
    cfg.policy.custom_user = &calls;
    CHECK_RESULT(tu_open(&t, &cfg), KVE_OK);
    prompt_through(&t, 40, 9);
    CHECK_RESULT(kve_compress(&t.c, 0), KVE_OK);
    CHECK(calls == 2, "user scorer called %d times for 2 heads", calls);
    for (h = 0; h < 2; h++) {
        int n = kept_positions(&t.c, 0, h, kept), ok = n == 20;
        for (p = 0; p < n; p++) ok &= kept[p] == 2 * p;
        CHECK(ok, "user scorer head %d: not the 20 even positions", h);
    }
    tu_close(&t);
    cfg.policy.scorer = failing_scorer;
    CHECK_RESULT(tu_open(&t, &cfg), KVE_OK);
    prompt_through(&t, 30, 9);
    CHECK_RESULT(kve_compress(&t.c, 0), KVE_ERROR_POLICY_FAILED);
    tu_close(&t);
    /* decode eviction: TOVA evicts one token per step once full, never the newest */
    cfg = scorer_config(KVE_POLICY_TOVA, KVE_KEYS_PRE_ROPE);
    cfg.policy.decode = KVE_DECODE_EVICT;
    CHECK_RESULT(tu_open(&t, &cfg), KVE_OK);
    {
        float q[64], k[32], v[32], out[64];
        int newest_held = 1;
        tu_seed(4);
        for (p = 0; p < 100; p++) {
            tu_fill(q, 64, 1.0f); tu_fill(k, 32, 1.0f); tu_fill(v, 32, 1.0f);
            CHECK_RESULT(kve_store(&t.c, 0, p, k, v, NULL), KVE_OK);
            CHECK_RESULT(kve_attend(&t.c, 0, q, out), KVE_OK);
            over |= kve_length(&t.c, 0, 0) > 20 || (p >= 19 && kve_length(&t.c, 0, 1) != 20);
            kept_positions(&t.c, 0, 1, kept);
            newest_held &= kept[kve_length(&t.c, 0, 1) - 1] == p;
        }
        CHECK(!over, "TOVA decode: not one eviction per token at the budget");
        CHECK(newest_held, "TOVA decode: the newest token was evicted");
        CHECK_RESULT(kve_check(&t.c), KVE_OK);
    }
    tu_close(&t);
}

/* TOVA keeps the query's own token even when the query ignores it (kvpress scores it highest) */
static void test_tova_keeps_own_token(void)
{
    kve_config cfg = scorer_config(KVE_POLICY_TOVA, KVE_KEYS_PRE_ROPE);
    tu_cache t;
    float q[64], k[32], v[32], out[64];
    int p, h, i, held;
    CHECK_RESULT(tu_open(&t, &cfg), KVE_OK);
    prompt_through(&t, 39, 8);
    tu_fill(q, 64, 1.0f); tu_fill(v, 32, 1.0f);
    for (h = 0; h < 2; h++) /* the key points away from its group's queries */
        for (i = 0; i < 16; i++) k[h * 16 + i] = -4.0f * (q[(2 * h) * 16 + i] + q[(2 * h + 1) * 16 + i]);
    CHECK_RESULT(kve_store(&t.c, 0, 39, k, v, NULL), KVE_OK);
    CHECK_RESULT(kve_attend(&t.c, 0, q, out), KVE_OK);
    CHECK_RESULT(kve_compress(&t.c, 0), KVE_OK);
    for (h = 0; h < 2; h++) {
        held = 0;
        for (p = 0; p < kve_length(&t.c, 0, h); p++) held |= kve_slot_position(&t.c, 0, h, p) == 39;
        CHECK(held && kve_length(&t.c, 0, h) == 20, "TOVA head %d dropped the query's own token", h);
    }
    tu_close(&t);
}

/* LagKV at exactly sinks + 2 lags scores its first lag (the spread, not the age): tokens of
   falling amplitude, the next lag spanning [-1, 1] in every dimension, keep the oldest */
static void test_lagkv_scored_at_boundary(void)
{
    kve_config cfg;
    tu_cache t;
    float k[8], q[8], out[8];
    int p, i, kept2 = 0, kept3 = 0;
    memset(&cfg, 0, sizeof cfg);
    cfg.n_layers = 1; cfg.n_heads = 1; cfg.head_dim = 8; cfg.capacity = 16;
    cfg.policy.kind = KVE_POLICY_LAGKV; cfg.policy.sinks = 2; cfg.policy.lag_size = 4;
    cfg.policy.budget = 8;
    CHECK_RESULT(tu_open(&t, &cfg), KVE_OK);
    for (p = 0; p < 10; p++) {
        for (i = 0; i < 8; i++) {
            if (p >= 2 && p < 6) k[i] = (float)(6 - p) * (i % 2 ? 0.2f : -0.2f); /* the first lag */
            else k[i] = (float)((i + p) % 3) - 1.0f;
            q[i] = 0.1f;
        }
        CHECK_RESULT(kve_store(&t.c, 0, p, k, k, NULL), KVE_OK);
        CHECK_RESULT(kve_attend(&t.c, 0, q, out), KVE_OK);
    }
    CHECK_RESULT(kve_compress(&t.c, 0), KVE_OK);
    for (i = 0; i < kve_length(&t.c, 0, 0); i++) {
        kept2 |= kve_slot_position(&t.c, 0, 0, i) == 2;
        kept3 |= kve_slot_position(&t.c, 0, 0, i) == 3;
    }
    CHECK(kve_length(&t.c, 0, 0) == 8 && kept2 && kept3,
          "LagKV at sinks + 2 lags kept by age, not by spread");
    tu_close(&t);
}

/* LagKV written out again (kvpress LagKVPress.score) in double precision, both modes: the kept
   tokens are a top-k of the reference scores */
static void lagkv_reference(float (*key)[8], float (*val)[8], int n, int S, int lag,
                            int cross, double *score)
{
    int lags = (n - S) / lag, u, t, o, i, which;
    for (t = 0; t < n; t++) score[t] = 1.0;
    for (u = 0; u + 1 < lags; u++) {
        double sc[2][64], sum;
        for (which = 0; which < 2; which++) {
            float (*x)[8] = which ? val : key;
            double top = -1e300;
            for (t = 0; t < lag; t++) {
                double z[8], mean = 0, var = 0;
                for (i = 0; i < 8; i++) {
                    double lo = 1e300, hi = -1e300;
                    for (o = 0; o < lag; o++) {
                        double y = x[S + (u + 1) * lag + o][i];
                        lo = y < lo ? y : lo;
                        hi = y > hi ? y : hi;
                    }
                    z[i] = (x[S + u * lag + t][i] - lo) / (hi - lo);
                    mean += z[i] / 8;
                }
                for (i = 0; i < 8; i++) var += (z[i] - mean) * (z[i] - mean);
                sc[which][t] = sqrt(var / 7);
                top = sc[which][t] > top ? sc[which][t] : top;
            }
            for (sum = 0, t = 0; t < lag; t++) sum += (sc[which][t] = exp(sc[which][t] - top));
            for (t = 0; t < lag; t++) sc[which][t] /= sum;
        }
        for (t = 0; t < lag; t++) {
            double v = (sc[0][t] + sc[1][t]) / 2;
            int rank = 0;
            for (o = 0; o < lag; o++) rank += (sc[0][o] + sc[1][o]) / 2 < v;
            score[S + u * lag + t] = cross ? v : (double)rank / lag;
        }
    }
}

static void test_lagkv_reference(void)
{
    int run;
    /* rank mode once; by value (cross_scoring) over many draws: there the scores' scale counts */
    for (run = 0; run < 40; run++) {
        int cross = run > 0;
        kve_config cfg;
        tu_cache t;
        static float key[40][8], val[40][8];
        float q[8], out[8];
        double score[40], worst_kept = 1e300, best_dropped = -1e300;
        unsigned char kept[40] = {0};
        int p, i;
        memset(&cfg, 0, sizeof cfg);
        cfg.n_layers = 1; cfg.n_heads = 1; cfg.head_dim = 8; cfg.capacity = 40;
        cfg.rope_layout = KVE_ROPE_NONE; /* the reference reads the keys as given */
        cfg.policy.kind = KVE_POLICY_LAGKV; cfg.policy.sinks = 3; cfg.policy.lag_size = 6;
        cfg.policy.budget = 24; cfg.policy.cross_scoring = cross;
        CHECK_RESULT(tu_open(&t, &cfg), KVE_OK);
        tu_seed(91 + (unsigned long long)run);
        for (p = 0; p < 40; p++) {
            for (i = 0; i < 8; i++) {
                key[p][i] = tu_normal() * (1.0f + (float)(p % 5));
                val[p][i] = tu_normal();
                q[i] = tu_normal();
            }
            CHECK_RESULT(kve_store(&t.c, 0, p, key[p], val[p], NULL), KVE_OK);
            CHECK_RESULT(kve_attend(&t.c, 0, q, out), KVE_OK);
        }
        lagkv_reference(key, val, 40, 3, 6, cross, score);
        CHECK_RESULT(kve_compress(&t.c, 0), KVE_OK);
        for (i = 0; i < kve_length(&t.c, 0, 0); i++) kept[kve_slot_position(&t.c, 0, 0, i)] = 1;
        for (p = 0; p < 40; p++) {
            if (kept[p] && score[p] < worst_kept) worst_kept = score[p];
            if (!kept[p] && score[p] > best_dropped) best_dropped = score[p];
        }
        CHECK(kve_length(&t.c, 0, 0) == 24 && worst_kept >= best_dropped - 1e-6,
              "LagKV cross_scoring %d: kept %.9g below dropped %.9g", cross, worst_kept, best_dropped);
        tu_close(&t);
    }
}

/* PyramidKV's kvpress budgets (compression_ratio) written out again: Python's round() */
static long py_round(double x)
{
    double f = floor(x);
    if (x - f > 0.5 || (x - f == 0.5 && fmod(f, 2.0) != 0.0)) f += 1.0;
    return (long)f;
}

static void test_pyramid_ratio_budgets(void)
{
    static const double ratios[] = {0.3, 0.5, 0.6, 0.75};
    static const int betas[] = {2, 5, 20}, lens[] = {40, 57, 100};
    size_t ri, bi, li;
    int l, checked = 0, rounded_up = 0;
    for (ri = 0; ri < 4; ri++)
        for (bi = 0; bi < 3; bi++)
            for (li = 0; li < 3; li++) {
                kve_config cfg;
                tu_cache t;
                int L = lens[li], p, i;
                double w = 8, keep = L * (1 - ratios[ri]), maxc = w + keep, mn, mx;
                float k[16], v[16];
                memset(&cfg, 0, sizeof cfg);
                cfg.n_layers = 4; cfg.n_heads = 2; cfg.n_kv_heads = 2; cfg.head_dim = 8; cfg.capacity = 100;
                cfg.policy.kind = KVE_POLICY_KNORM; cfg.policy.allocation = KVE_ALLOCATION_PYRAMID;
                cfg.policy.window = 8; cfg.policy.beta = betas[bi];
                cfg.policy.compression_ratio = ratios[ri];
                CHECK_RESULT(tu_open(&t, &cfg), KVE_OK);
                for (p = 0; p < L; p++) {
                    for (i = 0; i < 16; i++) k[i] = v[i] = (float)((p * 7 + i) % 11) - 5.0f;
                    for (l = 0; l < 4; l++) CHECK_RESULT(kve_store(&t.c, l, p, k, v, NULL), KVE_OK);
                }
                mn = (maxc - w) / betas[bi];
                mx = (maxc - w) * 2 - mn;
                if (mx >= L - w) {
                    mx = L - w;
                    mn = (maxc - w) * 2 - mx;
                }
                for (l = 0; l < 4; l++) {
                    long want;
                    if (!(L >= mx && mx >= mn && mn >= w)) want = py_round(keep);
                    else want = py_round(mx - l * ((mx - mn) / 3));
                    if (want > L) want = L;
                    rounded_up += want > (long)(mx - l * ((mx - mn) / 3));
                    CHECK_RESULT(kve_compress(&t.c, l), KVE_OK);
                    CHECK(kve_length(&t.c, l, 0) == want, "PyramidKV ratio %.2f beta %d L %d layer %d: "
                          "keeps %d, kvpress %ld", ratios[ri], betas[bi], L, l,
                          kve_length(&t.c, l, 0), want);
                    checked++;
                }
                tu_close(&t);
            }
    CHECK(checked == 144 && rounded_up > 0, "PyramidKV ratio: no budget rounded up (%d)", rounded_up);
}

/* kve_compress_chunk: each chunk is selected exactly as a cache holding only that chunk would
   select it (kvpress ChunkPress), and the tokens before it stay */
static void test_compress_chunk(void)
{
    static const kve_policy_kind kinds[] = {KVE_POLICY_KNORM, KVE_POLICY_KEYDIFF, KVE_POLICY_LAGKV,
                                            KVE_POLICY_SNAPKV, KVE_POLICY_TOVA, KVE_POLICY_RANDOM};
    size_t ki;
    for (ki = 0; ki < sizeof kinds / sizeof kinds[0]; ki++) {
        kve_config cfg = scorer_config(kinds[ki], ki % 2 ? KVE_KEYS_PRE_ROPE : KVE_KEYS_POST_ROPE);
        tu_cache a, b;
        static float q[30][64], k[30][32], v[30][32], out[10 * 64];
        int chunk, p, h, same = 1, older_stay = 1;
        cfg.policy.compression_ratio = 0.5;
        cfg.policy.lag_size = 3;
        cfg.policy.sinks = 2;
        cfg.policy.window = kinds[ki] == KVE_POLICY_SNAPKV ? 3 : 0;
        cfg.policy.kernel = kinds[ki] == KVE_POLICY_SNAPKV ? 3 : 0;
        tu_seed(300 + ki);
        for (p = 0; p < 30; p++) {
            tu_fill(q[p], 64, 1.0f); tu_fill(k[p], 32, 1.0f); tu_fill(v[p], 32, 1.0f);
        }
        CHECK_RESULT(tu_open(&a, &cfg), KVE_OK);
        for (chunk = 0; chunk < 3; chunk++) {
            int64_t ka[48], kb[48];
            int na, nb, i, held_before = kve_length(&a.c, 0, 0);
            CHECK_RESULT(kve_store_n(&a.c, 0, 10, NULL, k[10 * chunk], v[10 * chunk]), KVE_OK);
            CHECK_RESULT(kve_prefill(&a.c, 0, 10, q[10 * chunk], NULL, out), KVE_OK);
            CHECK_RESULT(kve_compress_chunk(&a.c, 0, 10 * chunk), KVE_OK);
            CHECK_RESULT(kve_check(&a.c), KVE_OK);
            older_stay &= kve_length(&a.c, 0, 0) == held_before + 5;
            /* the same chunk alone */
            CHECK_RESULT(tu_open(&b, &cfg), KVE_OK);
            for (p = 10 * chunk; p < 10 * chunk + 10; p++)
                CHECK_RESULT(kve_store(&b.c, 0, p, k[p], v[p], NULL), KVE_OK);
            CHECK_RESULT(kve_prefill(&b.c, 0, 10, q[10 * chunk], NULL, out), KVE_OK);
            CHECK_RESULT(kve_compress(&b.c, 0), KVE_OK);
            for (h = 0; h < 2; h++) {
                na = kept_positions(&a.c, 0, h, ka);
                nb = kept_positions(&b.c, 0, h, kb);
                for (i = 0; i < na && ka[i] < 10 * chunk; i++) {}
                same &= na - i == nb && !memcmp(ka + i, kb, (size_t)nb * sizeof(int64_t));
            }
            tu_close(&b);
        }
        /* afterwards a whole-layer compression sees every token again */
        CHECK_RESULT(kve_compress(&a.c, 0), KVE_OK);
        CHECK(kve_length(&a.c, 0, 1) == 7, "kind %d: after the chunks, kve_compress keeps %d of 15",
              (int)kinds[ki], kve_length(&a.c, 0, 1));
        CHECK(same, "kind %d: a chunk is not selected as it would be alone", (int)kinds[ki]);
        CHECK(older_stay, "kind %d: compressing a chunk changed the tokens before it", (int)kinds[ki]);
        tu_close(&a);
    }
    {
        kve_config cfg = scorer_config(KVE_POLICY_KNORM, KVE_KEYS_POST_ROPE);
        tu_cache t;
        CHECK_RESULT(tu_open(&t, &cfg), KVE_OK);
        CHECK_RESULT(kve_compress_chunk(&t.c, 0, 0), KVE_ERROR_INVALID_PARAMETER); /* no ratio */
        tu_close(&t);
        cfg.policy.compression_ratio = 0.5;
        CHECK_RESULT(tu_open(&t, &cfg), KVE_OK);
        CHECK_RESULT(kve_compress_chunk(&t.c, 0, -1), KVE_ERROR_INVALID_PARAMETER);
        CHECK_RESULT(kve_compress_chunk(&t.c, 1, 0), KVE_ERROR_INDEX_OUT_OF_RANGE);
        CHECK_RESULT(kve_compress_chunk(&t.c, 0, 0), KVE_OK); /* nothing held: nothing to do */
        tu_close(&t);
        cfg.policy.allocation = KVE_ALLOCATION_ADAKV;
        CHECK_RESULT(tu_open(&t, &cfg), KVE_OK);
        CHECK_RESULT(kve_compress_chunk(&t.c, 0, 0), KVE_ERROR_UNSUPPORTED);
        tu_close(&t);
        cfg = scorer_config(KVE_POLICY_STREAMINGLLM, KVE_KEYS_POST_ROPE);
        cfg.policy.compression_ratio = 0.5;
        CHECK_RESULT(tu_open(&t, &cfg), KVE_OK);
        CHECK_RESULT(kve_compress_chunk(&t.c, 0, 0), KVE_ERROR_WRONG_POLICY);
        tu_close(&t);
    }
}

/* kve_compress_with, then kve_compress: one policy after another (kvpress ComposedPress) equals
   the second policy run on what the first kept */
static void test_compress_with(void)
{
    kve_config own = scorer_config(KVE_POLICY_KNORM, KVE_KEYS_POST_ROPE), first;
    kve_policy_config keydiff;
    tu_cache a, b, c;
    static float q[40][64], k[40][32], v[40][32];
    float out[64];
    int p, h, same = 1;
    own.policy.compression_ratio = 0.5;
    memset(&keydiff, 0, sizeof keydiff);
    keydiff.kind = KVE_POLICY_KEYDIFF;
    keydiff.compression_ratio = 0.25;
    first = own;
    first.policy = keydiff;
    CHECK_RESULT(tu_open(&a, &own), KVE_OK);
    CHECK_RESULT(tu_open(&b, &first), KVE_OK);
    CHECK_RESULT(tu_open(&c, &own), KVE_OK);
    tu_seed(55);
    for (p = 0; p < 40; p++) {
        tu_fill(q[p], 64, 1.0f); tu_fill(k[p], 32, 1.0f); tu_fill(v[p], 32, 1.0f);
        CHECK_RESULT(kve_store(&a.c, 0, p, k[p], v[p], NULL), KVE_OK);
        CHECK_RESULT(kve_store(&b.c, 0, p, k[p], v[p], NULL), KVE_OK);
    }
    CHECK_RESULT(kve_compress_with(&a.c, 0, &keydiff), KVE_OK);
    CHECK_RESULT(kve_compress(&a.c, 0), KVE_OK);
    CHECK_RESULT(kve_compress(&b.c, 0), KVE_OK);
    /* c: the second policy over head 1's survivors of the first (knorm scores each token alone) */
    for (p = 0; p < 40; p++) {
        int held = 0, s;
        for (s = 0; s < kve_length(&b.c, 0, 1); s++) held |= kve_slot_position(&b.c, 0, 1, s) == p;
        if (held) CHECK_RESULT(kve_store(&c.c, 0, p, k[p], v[p], NULL), KVE_OK);
    }
    CHECK_RESULT(kve_compress(&c.c, 0), KVE_OK);
    {
        int64_t ka[48], kc[48];
        int na = kept_positions(&a.c, 0, 1, ka), nc = kept_positions(&c.c, 0, 1, kc);
        same = na == 15 && nc == 15 && !memcmp(ka, kc, sizeof ka[0] * 15);
    }
    CHECK(same, "keydiff then knorm differs from knorm over keydiff's survivors");
    tu_close(&a); tu_close(&b); tu_close(&c);

    /* what the cache does not record is refused; its own newest token stays */
    {
        kve_config sc = scorer_config(KVE_POLICY_SNAPKV, KVE_KEYS_PRE_ROPE);
        kve_policy_config other;
        int held = 0;
        sc.policy.window = 4;
        CHECK_RESULT(tu_open(&a, &sc), KVE_OK);
        tu_seed(56);
        for (p = 0; p < 40; p++) {
            float qq[64], kk[32], vv[32];
            tu_fill(qq, 64, 1.0f); tu_fill(kk, 32, 1.0f); tu_fill(vv, 32, 1.0f);
            if (p == 39) for (h = 0; h < 32; h++) kk[h] *= 40.0f; /* knorm would drop it */
            CHECK_RESULT(kve_store(&a.c, 0, p, kk, vv, NULL), KVE_OK);
            CHECK_RESULT(kve_attend(&a.c, 0, qq, out), KVE_OK);
        }
        memset(&other, 0, sizeof other);
        CHECK_RESULT(kve_compress_with(&a.c, 0, NULL), KVE_ERROR_NULL_ARGUMENT);
        other.kind = KVE_POLICY_SNAPKV; other.window = 8; other.budget = 20;
        CHECK_RESULT(kve_compress_with(&a.c, 0, &other), KVE_ERROR_UNSUPPORTED); /* 8 > 4 recorded */
        other.kind = KVE_POLICY_OBSERVED_ATTENTION; other.window = 0;
        CHECK_RESULT(kve_compress_with(&a.c, 0, &other), KVE_ERROR_UNSUPPORTED); /* no scores */
        other.kind = KVE_POLICY_KNORM; other.allocation = KVE_ALLOCATION_ADAKV;
        CHECK_RESULT(kve_compress_with(&a.c, 0, &other), KVE_ERROR_UNSUPPORTED);
        other.allocation = KVE_ALLOCATION_DEFAULT; other.compression_ratio = 2.0;
        CHECK_RESULT(kve_compress_with(&a.c, 0, &other), KVE_ERROR_INVALID_PARAMETER);
        other.kind = KVE_POLICY_STREAMINGLLM; other.compression_ratio = 0.0;
        CHECK_RESULT(kve_compress_with(&a.c, 0, &other), KVE_ERROR_WRONG_POLICY);
        CHECK_RESULT(kve_compress_with(&a.c, 3, &other), KVE_ERROR_INDEX_OUT_OF_RANGE);
        other.kind = KVE_POLICY_KNORM; other.compression_ratio = 0.5;
        CHECK(kve_length(&a.c, 0, 0) == 40, "a refused composition changed the cache");
        CHECK_RESULT(kve_compress_with(&a.c, 0, &other), KVE_OK);
        CHECK_RESULT(kve_check(&a.c), KVE_OK);
        for (p = 0; p < kve_length(&a.c, 0, 0); p++) held |= kve_slot_position(&a.c, 0, 0, p) == 39;
        CHECK(held && kve_length(&a.c, 0, 0) == 20, "SnapKV cache: knorm dropped its newest token");
        other.kind = KVE_POLICY_TOVA; other.compression_ratio = 0.5;
        CHECK_RESULT(kve_compress_with(&a.c, 0, &other), KVE_OK); /* one recorded query is enough */
        CHECK(kve_length(&a.c, 0, 0) == 10, "TOVA after knorm keeps %d", kve_length(&a.c, 0, 0));
        tu_close(&a);
    }
}

/* expected attention written out again (kvpress ExpectedAttentionPress) in double precision with
   explicit rotation matrices: the kept tokens are a top-k of the reference scores */
static void rotation_matrix(kve_rope_layout layout, int d, double angle_scale, double pos,
                            double *R)
{
    int i, half = d / 2;
    memset(R, 0, sizeof(double) * (size_t)(d * d));
    for (i = 0; i < half; i++) {
        int a = layout == KVE_ROPE_HALF ? i : 2 * i, b = layout == KVE_ROPE_HALF ? i + half : 2 * i + 1;
        double th = pos * angle_scale * pow(10000.0, -2.0 * i / d);
        R[a * d + a] = cos(th); R[a * d + b] = -sin(th);
        R[b * d + a] = sin(th); R[b * d + b] = cos(th);
    }
}

static void test_expected_attention_reference(void)
{
    enum { H = 4, HK = 2, D = 16, L = 40, S = 4, NF = 16, KEEP = 20 };
    int li, si;
    for (li = 0; li < 2; li++)
        for (si = 0; si < 2; si++) {
            kve_rope_layout layout = li ? KVE_ROPE_HALF : KVE_ROPE_INTERLEAVED;
            kve_config cfg;
            tu_cache t;
            static float q[L][H * D], k[L][HK * D], v[L][HK * D];
            static double kr[L][HK * D], Rm[D * D], R[D * D];
            int p, h, g, i, j, n;
            double worst = 0.0;
            memset(&cfg, 0, sizeof cfg);
            cfg.n_layers = 1; cfg.n_heads = H; cfg.n_kv_heads = HK; cfg.head_dim = D; cfg.capacity = L;
            cfg.rope_layout = layout; cfg.key_storage = si ? KVE_KEYS_PRE_ROPE : KVE_KEYS_POST_ROPE;
            cfg.policy.kind = KVE_POLICY_EXPECTED_ATTENTION; cfg.policy.budget = KEEP;
            cfg.policy.n_future_positions = NF; cfg.policy.sinks = S;
            CHECK_RESULT(tu_open(&t, &cfg), KVE_OK);
            tu_seed(400 + (unsigned long long)(2 * li + si));
            for (p = 0; p < L; p++) {
                tu_fill(q[p], H * D, 1.0f); tu_fill(k[p], HK * D, 1.0f); tu_fill(v[p], HK * D, 1.0f);
                for (i = 0; i < HK * D; i++) v[p][i] *= 1.0f + (float)(p % 3); /* value norms differ */
                CHECK_RESULT(kve_store(&t.c, 0, p, k[p], v[p], NULL), KVE_OK);
            }
            {
                float *o = (float *)tu_alloc(sizeof(float) * L * H * D);
                CHECK_RESULT(kve_prefill(&t.c, 0, L, q[0], NULL, o), KVE_OK);
                free(o);
            }
            /* keys after RoPE at their positions, and the rotation averaged over the future */
            for (p = 0; p < L; p++) {
                rotation_matrix(layout, D, 1.0, p, R);
                for (h = 0; h < HK; h++)
                    for (i = 0; i < D; i++) {
                        double x = 0;
                        for (j = 0; j < D; j++) x += R[i * D + j] * k[p][h * D + j];
                        kr[p][h * D + i] = x;
                    }
            }
            memset(Rm, 0, sizeof Rm);
            for (p = L; p < L + NF; p++) {
                rotation_matrix(layout, D, 1.0, p, R);
                for (i = 0; i < D * D; i++) Rm[i] += R[i] / NF;
            }
            CHECK_RESULT(kve_compress(&t.c, 0), KVE_OK);
            for (h = 0; h < HK; h++) {
                double score[L], top = -1e300, worst_kept = 1e300, best_dropped = -1e300;
                unsigned char kept[L] = {0};
                for (p = 0; p < L; p++) score[p] = 0;
                for (g = 0; g < H / HK; g++) {
                    int qh = h * (H / HK) + g;
                    double mu[D] = {0}, cov[D][D], mr[D], cr[D][D], tmp[D][D], lg[L], mx = -1e300, sum = 0;
                    int a, b2;
                    memset(cov, 0, sizeof cov);
                    for (p = S; p < L; p++)
                        for (i = 0; i < D; i++) mu[i] += q[p][qh * D + i] / (L - S);
                    for (p = S; p < L; p++)
                        for (a = 0; a < D; a++)
                            for (b2 = 0; b2 < D; b2++)
                                cov[a][b2] += (q[p][qh * D + a] - mu[a]) * (q[p][qh * D + b2] - mu[b2]) / (L - S);
                    for (a = 0; a < D; a++) {
                        mr[a] = 0;
                        for (b2 = 0; b2 < D; b2++) mr[a] += Rm[a * D + b2] * mu[b2];
                    }
                    for (a = 0; a < D; a++)
                        for (b2 = 0; b2 < D; b2++) {
                            tmp[a][b2] = 0;
                            for (i = 0; i < D; i++) tmp[a][b2] += Rm[a * D + i] * cov[i][b2];
                        }
                    for (a = 0; a < D; a++)
                        for (b2 = 0; b2 < D; b2++) {
                            cr[a][b2] = 0;
                            for (i = 0; i < D; i++) cr[a][b2] += tmp[a][i] * Rm[b2 * D + i];
                        }
                    for (p = S; p < L; p++) {
                        const double *key = kr[p] + h * D;
                        double m = 0, quad = 0;
                        for (a = 0; a < D; a++) m += mr[a] * key[a];
                        for (a = 0; a < D; a++)
                            for (b2 = 0; b2 < D; b2++) quad += key[a] * cr[a][b2] * key[b2];
                        lg[p] = m / sqrt((double)D) + quad / D / 2;
                        mx = lg[p] > mx ? lg[p] : mx;
                    }
                    for (p = S; p < L; p++) sum += exp(lg[p] - mx);
                    for (p = S; p < L; p++) score[p] += exp(lg[p] - mx) / sum / (H / HK);
                }
                for (p = S; p < L; p++) {
                    double vn = 0;
                    for (i = 0; i < D; i++) vn += (double)v[p][h * D + i] * v[p][h * D + i];
                    score[p] *= sqrt(vn);
                    top = score[p] > top ? score[p] : top;
                }
                for (p = 0; p < S; p++) score[p] = top + 1;
                n = kve_length(&t.c, 0, h);
                for (i = 0; i < n; i++) kept[kve_slot_position(&t.c, 0, h, i)] = 1;
                for (p = 0; p < L; p++) {
                    if (kept[p] && score[p] < worst_kept) worst_kept = score[p];
                    if (!kept[p] && score[p] > best_dropped) best_dropped = score[p];
                }
                worst = fmax(worst, best_dropped - worst_kept);
                CHECK(n == KEEP && worst_kept >= best_dropped * (1 - 1e-5),
                      "expected attention (%s, %s) head %d: kept %.9g below dropped %.9g",
                      li ? "half" : "interleaved", si ? "pre" : "post", h, worst_kept, best_dropped);
            }
            tu_close(&t);
        }
}

/* per-layer budgets (kvpress PerLayerCompressionPress): kve_compress_with, one ratio a layer */
static void test_per_layer_ratios(void)
{
    static const double ratios[3] = {0.2, 0.5, 0.75};
    kve_config cfg = scorer_config(KVE_POLICY_KNORM, KVE_KEYS_POST_ROPE);
    tu_cache t;
    float k[32], v[32];
    int p, l, ok = 1;
    cfg.n_layers = 3;
    CHECK_RESULT(tu_open(&t, &cfg), KVE_OK);
    tu_seed(71);
    for (p = 0; p < 40; p++) {
        tu_fill(k, 32, 1.0f); tu_fill(v, 32, 1.0f);
        for (l = 0; l < 3; l++) CHECK_RESULT(kve_store(&t.c, l, p, k, v, NULL), KVE_OK);
    }
    for (l = 0; l < 3; l++) {
        kve_policy_config layer_policy = cfg.policy;
        layer_policy.compression_ratio = ratios[l];
        CHECK_RESULT(kve_compress_with(&t.c, l, &layer_policy), KVE_OK);
        ok &= kve_length(&t.c, l, 0) == (int)(40 * (1 - ratios[l])) &&
              kve_length(&t.c, l, 1) == (int)(40 * (1 - ratios[l]));
    }
    CHECK(ok, "per-layer ratios: %d %d %d tokens", kve_length(&t.c, 0, 0), kve_length(&t.c, 1, 0),
          kve_length(&t.c, 2, 0));
    CHECK_RESULT(kve_check(&t.c), KVE_OK);
    tu_close(&t);
}

static kve_result minus_key_norm(const kve_cache *c, int32_t l, int32_t h, float *score, void *u)
{
    float x[16];
    int32_t s, i;
    (void)u;
    for (s = 0; s < kve_length(c, l, h); s++) {
        kve_read_rotated_key(c, l, h, s, x);
        score[s] = 0.0f;
        for (i = 0; i < 16; i++) score[s] -= x[i] * x[i];
    }
    return KVE_OK;
}

/* kve_rerotate: after a compression, the cache attends as one where each head's kept tokens had
   been stored at positions 0, 1, ... (kvpress KeyRerotationPress), in both key storages */
static void test_rerotate(void)
{
    int si;
    for (si = 0; si < 2; si++) {
        kve_config cfg = scorer_config(KVE_POLICY_KNORM, si ? KVE_KEYS_PRE_ROPE : KVE_KEYS_POST_ROPE);
        tu_cache a, b;
        static float q[60][64], k[60][32], v[60][32];
        float oa[64], ob[64], kk[32], vv[32];
        double worst = 0.0;
        int p, h, i, r;
        int64_t kept[2][48];
        cfg.policy.compression_ratio = 0.5;
        cfg.policy.kind = KVE_POLICY_SCORER; /* knorm's choice, with queries recorded */
        cfg.policy.scorer = minus_key_norm;
        cfg.policy.window = 2;
        CHECK_RESULT(tu_open(&a, &cfg), KVE_OK);
        CHECK_RESULT(tu_open(&b, &cfg), KVE_OK);
        tu_seed(610 + (unsigned long long)si);
        for (p = 0; p < 60; p++) {
            tu_fill(q[p], 64, 1.0f); tu_fill(k[p], 32, 1.0f); tu_fill(v[p], 32, 1.0f);
        }
        for (p = 0; p < 40; p++) {
            CHECK_RESULT(kve_store(&a.c, 0, p, k[p], v[p], NULL), KVE_OK);
            CHECK_RESULT(kve_attend(&a.c, 0, q[p], oa), KVE_OK);
        }
        CHECK_RESULT(kve_compress(&a.c, 0), KVE_OK);
        for (h = 0; h < 2; h++) CHECK(kept_positions(&a.c, 0, h, kept[h]) == 20, "rerotate: kept");
        CHECK_RESULT(kve_rerotate(&a.c, 0), KVE_OK);
        CHECK_RESULT(kve_check(&a.c), KVE_OK);
        CHECK(kve_recorded_query(&a.c, 0, 0, NULL) == NULL, "rerotate: a query at an old position");
        CHECK(kve_newest_position(&a.c, 0) == 19, "rerotate: newest %lld",
              (long long)kve_newest_position(&a.c, 0));
        /* b: each head's kept tokens stored directly at 0 .. 19 */
        for (r = 0; r < 20; r++) {
            for (h = 0; h < 2; h++)
                for (i = 0; i < 16; i++) {
                    kk[h * 16 + i] = k[kept[h][r]][h * 16 + i];
                    vv[h * 16 + i] = v[kept[h][r]][h * 16 + i];
                }
            CHECK_RESULT(kve_store(&b.c, 0, r, kk, vv, NULL), KVE_OK);
        }
        for (p = 40; p < 60; p++) { /* the continuation, at the renumbered positions */
            CHECK_RESULT(kve_store(&a.c, 0, p - 20, k[p], v[p], NULL), KVE_OK);
            CHECK_RESULT(kve_store(&b.c, 0, p - 20, k[p], v[p], NULL), KVE_OK);
            CHECK_RESULT(kve_attend(&a.c, 0, q[p], oa), KVE_OK);
            CHECK_RESULT(kve_attend(&b.c, 0, q[p], ob), KVE_OK);
            for (i = 0; i < 64; i++) worst = fmax(worst, fabs(oa[i] - ob[i]));
        }
        CHECK(worst < 1e-5, "rerotate (%s): differs from storing at consecutive positions by %.3g",
              si ? "pre" : "post", worst);
        tu_close(&a);
        tu_close(&b);
    }
    {
        kve_config cfg = scorer_config(KVE_POLICY_STREAMINGLLM, KVE_KEYS_POST_ROPE);
        tu_cache t;
        CHECK_RESULT(tu_open(&t, &cfg), KVE_OK);
        CHECK_RESULT(kve_rerotate(&t.c, 0), KVE_ERROR_WRONG_POLICY);
        CHECK_RESULT(kve_rerotate(&t.c, 1), KVE_ERROR_INDEX_OUT_OF_RANGE);
        tu_close(&t);
    }
}

/* a compression that dropped the newest token (kvpress's scorers protect nothing): the layer's
   newest position stays; a later shift past it moves it to the largest position held */
static void test_dropped_newest(void)
{
    kve_config cfg = scorer_config(KVE_POLICY_KNORM, KVE_KEYS_POST_ROPE);
    tu_cache t;
    float k[32], v[32];
    int p, i, held = 0;
    cfg.policy.compression_ratio = 0.5;
    CHECK_RESULT(tu_open(&t, &cfg), KVE_OK);
    tu_seed(808);
    for (p = 0; p < 40; p++) {
        tu_fill(k, 32, 1.0f); tu_fill(v, 32, 1.0f);
        if (p == 39) for (i = 0; i < 32; i++) k[i] *= 50.0f; /* the longest key: knorm drops it */
        CHECK_RESULT(kve_store(&t.c, 0, p, k, v, NULL), KVE_OK);
    }
    CHECK_RESULT(kve_compress(&t.c, 0), KVE_OK);
    for (i = 0; i < kve_length(&t.c, 0, 0); i++) held |= kve_slot_position(&t.c, 0, 0, i) == 39;
    CHECK(!held && kve_newest_position(&t.c, 0) == 39, "knorm kept its newest token, or forgot it");
    CHECK_RESULT(kve_check(&t.c), KVE_OK);
    CHECK_RESULT(kve_store(&t.c, 0, 39, k, v, NULL), KVE_ERROR_POSITION); /* not again */
    CHECK_RESULT(kve_shift(&t.c, 20, 39, 30), KVE_OK);
    CHECK(kve_newest_position(&t.c, 0) >= 50, "after the shift the newest is %lld, below a token held",
          (long long)kve_newest_position(&t.c, 0));
    CHECK_RESULT(kve_check(&t.c), KVE_OK);
    CHECK_RESULT(kve_store(&t.c, 0, kve_newest_position(&t.c, 0) + 1, k, v, NULL), KVE_OK);
    tu_close(&t);
    {
        kve_config big = scorer_config(KVE_POLICY_KNORM, KVE_KEYS_POST_ROPE);
        size_t bytes;
        big.n_heads = 4; big.n_kv_heads = 4; big.capacity = KVE_MAX_CAPACITY;
        big.policy.allocation = KVE_ALLOCATION_ADAKV;
        /* AdaKV counts a layer's candidates in int32: 4 heads x 2^30 slots do not fit */
        CHECK_RESULT(kve_cache_size(&big, &bytes), KVE_ERROR_SIZE_OVERFLOW);
        big.n_kv_heads = 1;
        CHECK_RESULT(kve_cache_size(&big, &bytes), KVE_OK);
    }
}

/* multiplies every stored key of layer 0, KV head `head` (f32, head_dim 16) by `factor` */
static void scale_head_keys(tu_cache *t, int32_t head, float factor)
{
    int32_t s, i;
    for (s = 0; s < kve_length(&t->c, 0, head); s++) {
        float *k = (float *)kve_key(&t->c, 0, head, s);
        for (i = 0; i < 16; i++) k[i] *= factor;
    }
}

/* AdaKV: heads keep different counts summing to the layer's total; memory in use shrinks by
   exactly the dropped rows; alpha 1 is uniform */
static void test_adakv_allocation(void)
{
    kve_config cfg = scorer_config(KVE_POLICY_KNORM, KVE_KEYS_POST_ROPE);
    tu_cache t, u;
    int total = 0, h, differ = 0;
    size_t row = 2 * 16 * sizeof(float);
    cfg.policy.allocation = KVE_ALLOCATION_ADAKV;
    cfg.policy.alpha_safeguard = KVE_NO_SAFEGUARD;
    CHECK_RESULT(tu_open(&t, &cfg), KVE_OK);
    prompt_through(&t, 40, 13);
    scale_head_keys(&t, 1, 3.0f); /* knorm then prefers head 0's tokens */
    CHECK_RESULT(kve_compress(&t.c, 0), KVE_OK);
    for (h = 0; h < 2; h++) total += kve_length(&t.c, 0, h);
    differ = kve_length(&t.c, 0, 0) > kve_length(&t.c, 0, 1);
    CHECK(total == 40 && differ, "AdaKV: %d + %d tokens", kve_length(&t.c, 0, 0), kve_length(&t.c, 0, 1));
    CHECK(kve_bytes_in_use(&t.c) == (size_t)total * row, "AdaKV: %zu bytes in use", kve_bytes_in_use(&t.c));
    CHECK_RESULT(kve_check(&t.c), KVE_OK);
    cfg.policy.alpha_safeguard = 1.0;
    CHECK_RESULT(tu_open(&u, &cfg), KVE_OK);
    prompt_through(&u, 40, 13);
    CHECK_RESULT(kve_compress(&u.c, 0), KVE_OK);
    CHECK(kve_length(&u.c, 0, 0) == 20 && kve_length(&u.c, 0, 1) == 20, "AdaKV alpha 1: not uniform");
    tu_close(&t);
    tu_close(&u);
    /* alpha_safeguard 0 is the manual's 0.20: the head whose every token scores below the other's
       keeps exactly its int(20 * 0.20) = 4 best, the other head the remaining 36 */
    cfg.policy.alpha_safeguard = 0.0;
    CHECK_RESULT(tu_open(&u, &cfg), KVE_OK);
    prompt_through(&u, 40, 13);
    scale_head_keys(&u, 1, 100.0f);
    CHECK_RESULT(kve_compress(&u.c, 0), KVE_OK);
    CHECK(kve_length(&u.c, 0, 1) == 4 && kve_length(&u.c, 0, 0) == 36,
          "AdaKV default safeguard: %d + %d tokens, not 36 + 4", kve_length(&u.c, 0, 0),
          kve_length(&u.c, 0, 1));
    tu_close(&u);
}

static void test_invalid_policy_params(void)
{
    kve_config c;
    size_t bytes;
    memset(&c, 0, sizeof c);
    c.n_layers = 4; c.n_heads = 4; c.n_kv_heads = 2; c.head_dim = 8; c.capacity = 64;
#define EXPECT_POLICY(field_setup, expected)            \
    do {                                                \
        kve_config x = c;                               \
        field_setup;                                    \
        CHECK_RESULT(kve_cache_size(&x, &bytes), expected); \
    } while (0)
    EXPECT_POLICY((x.policy.kind = KVE_POLICY_SNAPKV, x.policy.window = 8, x.policy.kernel = 4), KVE_ERROR_EVEN_KERNEL);
    EXPECT_POLICY((x.policy.kind = KVE_POLICY_PYRAMIDKV, x.policy.window = 8, x.policy.kernel = 6), KVE_ERROR_EVEN_KERNEL);
    EXPECT_POLICY((x.policy.kind = KVE_POLICY_SNAPKV, x.policy.budget = 16, x.policy.window = 16), KVE_ERROR_WINDOW_TOO_LARGE);
    EXPECT_POLICY((x.policy.kind = KVE_POLICY_H2O, x.policy.budget = 8, x.policy.window = 32), KVE_ERROR_WINDOW_TOO_LARGE);
    EXPECT_POLICY((x.policy.kind = KVE_POLICY_SNAPKV, x.policy.budget = 65, x.policy.window = 8), KVE_ERROR_BUDGET_ABOVE_CAPACITY);
    EXPECT_POLICY((x.policy.kind = KVE_POLICY_PYRAMIDKV, x.policy.budget = 48, x.policy.window = 8,
                   x.policy.decode = KVE_DECODE_EVICT), KVE_ERROR_BUDGET_ABOVE_CAPACITY);
    EXPECT_POLICY((x.policy.kind = KVE_POLICY_STREAMINGLLM, x.policy.sinks = 64), KVE_ERROR_TOO_MANY_SINKS);
    EXPECT_POLICY((x.policy.kind = KVE_POLICY_STREAMINGLLM, x.policy.sinks = 4, x.policy.budget = 4), KVE_ERROR_TOO_MANY_SINKS);
    EXPECT_POLICY((x.policy.kind = KVE_POLICY_STREAMINGLLM, x.policy.sinks = -7), KVE_ERROR_INVALID_PARAMETER);
    EXPECT_POLICY((x.policy.kind = KVE_POLICY_SNAPKV, x.policy.window = -1), KVE_ERROR_INVALID_PARAMETER);
    EXPECT_POLICY((x.policy.kind = KVE_POLICY_SNAPKV, x.policy.window = 8, x.policy.pooling = (kve_pooling)9), KVE_ERROR_INVALID_ENUM);
    EXPECT_POLICY((x.policy.kind = KVE_POLICY_STREAMINGLLM, x.policy.sinks = 63), KVE_OK);
    EXPECT_POLICY((x.policy.kind = KVE_POLICY_STREAMINGLLM, x.policy.sinks = KVE_NO_SINKS, x.capacity = 1), KVE_OK);
    EXPECT_POLICY((x.policy.kind = KVE_POLICY_SNAPKV, x.policy.window = 8, x.policy.kernel = 1), KVE_OK);
    /* the scorers and allocations */
    EXPECT_POLICY((x.policy.kind = KVE_POLICY_KNORM, x.policy.compression_ratio = 1.0), KVE_ERROR_INVALID_PARAMETER);
    EXPECT_POLICY((x.policy.kind = KVE_POLICY_KNORM, x.policy.compression_ratio = -0.1), KVE_ERROR_INVALID_PARAMETER);
    EXPECT_POLICY((x.policy.kind = KVE_POLICY_KNORM, x.policy.compression_ratio = NAN), KVE_ERROR_INVALID_PARAMETER);
    EXPECT_POLICY((x.policy.kind = KVE_POLICY_KNORM, x.policy.compression_ratio = 0.999), KVE_OK);
    EXPECT_POLICY((x.policy.kind = KVE_POLICY_KNORM, x.policy.alpha_safeguard = 1.5), KVE_ERROR_INVALID_PARAMETER);
    EXPECT_POLICY((x.policy.kind = KVE_POLICY_KNORM, x.policy.alpha_safeguard = NAN), KVE_ERROR_INVALID_PARAMETER);
    EXPECT_POLICY((x.policy.kind = KVE_POLICY_KNORM, x.policy.alpha_safeguard = 1.0), KVE_OK);
    EXPECT_POLICY((x.policy.kind = KVE_POLICY_LAGKV, x.policy.lag_size = -1), KVE_ERROR_INVALID_PARAMETER);
    EXPECT_POLICY((x.policy.kind = KVE_POLICY_KNORM, x.policy.chunk_length = -1), KVE_ERROR_INVALID_PARAMETER);
    EXPECT_POLICY((x.policy.kind = KVE_POLICY_SCORER), KVE_ERROR_NULL_ARGUMENT);
    EXPECT_POLICY((x.policy.kind = KVE_POLICY_KNORM, x.policy.allocation = KVE_ALLOCATION_ADAKV,
                   x.policy.decode = KVE_DECODE_EVICT), KVE_ERROR_UNSUPPORTED);
    EXPECT_POLICY((x.policy.kind = KVE_POLICY_KNORM, x.policy.allocation = KVE_ALLOCATION_ADAKV), KVE_OK);
    EXPECT_POLICY((x.policy.kind = KVE_POLICY_STREAMINGLLM, x.policy.allocation = KVE_ALLOCATION_ADAKV), KVE_ERROR_UNSUPPORTED);
    EXPECT_POLICY((x.policy.kind = KVE_POLICY_FULL, x.policy.compression_ratio = 0.5), KVE_ERROR_UNSUPPORTED);
    EXPECT_POLICY((x.policy.kind = KVE_POLICY_STREAMINGLLM, x.policy.compression_ratio = 0.5), KVE_OK);
    EXPECT_POLICY((x.policy.kind = KVE_POLICY_KNORM, x.policy.chunk_length = 4,
                   x.policy.allocation = KVE_ALLOCATION_PYRAMID), KVE_ERROR_UNSUPPORTED);
    EXPECT_POLICY((x.policy.kind = KVE_POLICY_KNORM, x.policy.budget = 8, x.policy.window = 8), KVE_ERROR_WINDOW_TOO_LARGE);
    EXPECT_POLICY((x.policy.kind = KVE_POLICY_KNORM, x.policy.budget = 1), KVE_OK); /* window 0 */
    EXPECT_POLICY((x.policy.kind = KVE_POLICY_EXPECTED_ATTENTION, x.policy.n_future_positions = -1), KVE_ERROR_INVALID_PARAMETER);
    EXPECT_POLICY((x.policy.kind = KVE_POLICY_EXPECTED_ATTENTION, x.policy.epsilon = -1e-3), KVE_ERROR_INVALID_PARAMETER);
    EXPECT_POLICY((x.policy.kind = KVE_POLICY_EXPECTED_ATTENTION, x.policy.epsilon = NAN), KVE_ERROR_INVALID_PARAMETER);
    EXPECT_POLICY((x.policy.kind = KVE_POLICY_EXPECTED_ATTENTION, x.policy.epsilon = 0.5, x.policy.no_covariance = 1), KVE_OK);
#undef EXPECT_POLICY
}

/* ChunkKV keeps whole chunks, and at least one when int(chunks * (1 - ratio)) or the budget's
   share rounds to 0 (the manual's "at least one"): 20 tokens in chunks of 8 (the last of 4) */
static void test_chunkkv_at_least_one_chunk(void)
{
    int by_budget;
    for (by_budget = 0; by_budget <= 1; by_budget++) {
        kve_config cfg = scorer_config(KVE_POLICY_KNORM, KVE_KEYS_POST_ROPE);
        tu_cache t;
        int32_t h, s, n0 = -1;
        int64_t first = -1;
        cfg.policy.chunk_length = 8;
        if (by_budget) cfg.policy.budget = 5; /* 3 chunks x 5 / 20 = 0.75 */
        else { cfg.policy.budget = 0; cfg.policy.compression_ratio = 0.7; } /* 3 x 0.3 = 0.9 */
        CHECK_RESULT(tu_open(&t, &cfg), KVE_OK);
        prompt_through(&t, 20, 77);
        CHECK_RESULT(kve_compress(&t.c, 0), KVE_OK);
        for (h = 0; h < 2; h++) {
            int32_t n = kve_length(&t.c, 0, h);
            int64_t lo = INT64_MAX, hi = -1;
            for (s = 0; s < n; s++) {
                int64_t p = kve_slot_position(&t.c, 0, h, s);
                lo = p < lo ? p : lo;
                hi = p > hi ? p : hi;
            }
            CHECK(n > 0 && lo % 8 == 0 && hi - lo + 1 == n && (n == 8 || (n == 4 && lo == 16)),
                  "ChunkKV (%s): head %d keeps %d tokens from %lld to %lld, not one whole chunk",
                  by_budget ? "budget 5" : "ratio 0.7", h, n, (long long)lo, (long long)hi);
            if (h == 0) { n0 = n; first = lo; }
            else CHECK(n == n0 && lo == first, "ChunkKV: the heads keep different chunks");
        }
        tu_close(&t);
    }
}

/* SimLayerKV against a double-precision reference of kvpress's rule, written from its definition:
   the last w queries (rotated at their positions, keys at theirs) attend causally; their softmax
   weights, averaged over the w queries and every query head, are summed over the first S keys and
   the n_recent keys before the last w; above the threshold the layer keeps the first S and the
   newest n_recent - w tokens, else all. The threshold is put 0.02 above or below the sum. */
static void test_simlayerkv_reference(void)
{
    enum { H = 4, HK = 2, D = 8, LMAX = 40 };
    static float q[LMAX][H * D], k[LMAX][HK * D], v[LMAX][HK * D], out[LMAX * H * D];
    int trial, lazy_seen = 0, full_seen = 0;
    tu_seed(4242);
    for (trial = 0; trial < 48; trial++) {
        kve_key_storage keys = trial % 2 ? KVE_KEYS_PRE_ROPE : KVE_KEYS_POST_ROPE;
        int32_t w = 1 + trial % 3, S = (trial / 3) % 3 * 2, n_recent = w + 1 + (trial / 9) % 6;
        int32_t L = S + n_recent + w + 1 + (int32_t)(tu_uniform() * 12), t, hq, j, i, h;
        double a[LMAX] = {0}, sum = 0.0, threshold;
        int lazy;
        kve_config cfg;
        tu_cache c;
        memset(&cfg, 0, sizeof cfg);
        cfg.n_layers = 1; cfg.n_heads = H; cfg.n_kv_heads = HK; cfg.head_dim = D; cfg.capacity = LMAX;
        cfg.rope_layout = KVE_ROPE_INTERLEAVED; cfg.key_storage = keys;
        cfg.policy.kind = KVE_POLICY_SIMLAYERKV;
        cfg.policy.window = w;
        cfg.policy.sinks = S ? S : KVE_NO_SINKS;
        cfg.policy.n_recent = n_recent;
        for (t = 0; t < L; t++) {
            tu_fill(q[t], H * D, 1.5f);
            tu_fill(k[t], HK * D, 1.5f);
            tu_fill(v[t], HK * D, 1.0f);
        }
        for (t = L - w; t < L; t++) /* the reference: rotated copies, softmax in double */
            for (hq = 0; hq < H; hq++) {
                float qr[D], kr[D];
                double lg[LMAX], mx = -1e300, z = 0.0;
                memcpy(qr, q[t] + hq * D, sizeof qr);
                kve_rope_apply(&cfg, qr, t);
                for (j = 0; j <= t; j++) {
                    double dot = 0.0;
                    memcpy(kr, k[j] + (hq / (H / HK)) * D, sizeof kr);
                    kve_rope_apply(&cfg, kr, j);
                    for (i = 0; i < D; i++) dot += (double)qr[i] * kr[i];
                    lg[j] = dot / sqrt((double)D);
                    if (lg[j] > mx) mx = lg[j];
                }
                for (j = 0; j <= t; j++) z += (lg[j] = exp(lg[j] - mx));
                for (j = 0; j < L - w; j++) a[j] += lg[j] / z / (H * w);
            }
        for (j = 0; j < S; j++) sum += a[j];
        for (j = L - w - n_recent; j < L - w; j++) sum += a[j];
        threshold = sum + (trial % 4 < 2 ? -0.02 : 0.02);
        if (!(threshold > 0.0 && threshold < 1.0)) continue;
        lazy = sum > threshold;
        cfg.policy.lazy_threshold = threshold;
        CHECK_RESULT(tu_open(&c, &cfg), KVE_OK);
        for (t = 0; t < L; t++) CHECK_RESULT(kve_store(&c.c, 0, t, k[t], v[t], NULL), KVE_OK);
        CHECK_RESULT(kve_prefill(&c.c, 0, L, &q[0][0], NULL, out), KVE_OK);
        CHECK_RESULT(kve_compress(&c.c, 0), KVE_OK);
        for (h = 0; h < HK; h++) {
            int32_t n = kve_length(&c.c, 0, h), want = lazy ? S + n_recent - w : L, s, wrong = 0;
            for (s = 0; s < n; s++) {
                int64_t p = kve_slot_position(&c.c, 0, h, s);
                wrong += lazy && !(p < S || p >= L - (n_recent - w));
            }
            CHECK(n == want && wrong == 0, "SimLayerKV trial %d (L %d, w %d, S %d, n_recent %d, sum "
                  "%.4f, threshold %.4f): head %d keeps %d tokens, %d of them wrong, not %d",
                  trial, L, w, S, n_recent, sum, threshold, h, n, wrong, want);
        }
        lazy_seen += lazy;
        full_seen += !lazy;
        tu_close(&c);
    }
    CHECK(lazy_seen > 10 && full_seen > 10, "SimLayerKV: %d lazy and %d full layers tried", lazy_seen,
          full_seen);
}

/* SimLayerKV's defaults as the manual gives them (window 1, sinks 4, n_recent 1024, threshold 1),
   its limits and its errors */
static void test_simlayerkv_defaults_and_errors(void)
{
    kve_config cfg;
    tu_cache c;
    float q[2 * 4], k[4], v[4], out[2 * 4];
    int32_t t, n;
    memset(&cfg, 0, sizeof cfg);
    cfg.n_layers = 1; cfg.n_heads = 2; cfg.n_kv_heads = 1; cfg.head_dim = 4; cfg.capacity = 1040;
    cfg.policy.kind = KVE_POLICY_SIMLAYERKV;
    for (n = 1029; n <= 1030; n++) {
        int threshold_given;
        for (threshold_given = 0; threshold_given <= 1; threshold_given++) {
            /* a threshold of 1e-9: every layer long enough is lazy; none given: 1, none is */
            cfg.policy.lazy_threshold = threshold_given ? 1e-9 : 0.0;
            CHECK_RESULT(tu_open(&c, &cfg), KVE_OK);
            tu_seed(5);
            for (t = 0; t < n; t++) {
                tu_fill(q, 8, 1.0f); tu_fill(k, 4, 1.0f); tu_fill(v, 4, 1.0f);
                CHECK_RESULT(kve_store(&c.c, 0, t, k, v, NULL), KVE_OK);
            }
            CHECK_RESULT(kve_attend(&c.c, 0, q, out), KVE_OK); /* the last query only */
            CHECK_RESULT(kve_compress(&c.c, 0), KVE_OK);
            if (threshold_given && n == 1030) { /* > 4 + 1024 + 1: the first 4 and newest 1023 */
                int32_t s, wrong = 0, len = kve_length(&c.c, 0, 0);
                for (s = 0; s < len; s++) {
                    int64_t p = kve_slot_position(&c.c, 0, 0, s);
                    wrong += !(p < 4 || p >= 1030 - 1023);
                }
                CHECK(len == 1027 && wrong == 0, "SimLayerKV defaults: %d kept, %d wrong", len, wrong);
            } else {
                CHECK(kve_length(&c.c, 0, 0) == n, "SimLayerKV (n %d, threshold %s) compressed a "
                      "layer: %d kept", n, threshold_given ? "1e-9" : "default", kve_length(&c.c, 0, 0));
            }
            tu_close(&c);
        }
    }
    /* a layer long enough with no recorded query */
    cfg.capacity = 64; cfg.policy.n_recent = 8; cfg.policy.lazy_threshold = 0.5;
    CHECK_RESULT(tu_open(&c, &cfg), KVE_OK);
    for (t = 0; t < 20; t++) CHECK_RESULT(kve_store(&c.c, 0, t, k, v, NULL), KVE_OK);
    CHECK_RESULT(kve_compress(&c.c, 0), KVE_ERROR_NO_QUERIES);
    /* the capacity must hold the prompt: nothing is evicted while storing */
    for (t = 20; t < 64; t++) CHECK_RESULT(kve_store(&c.c, 0, t, k, v, NULL), KVE_OK);
    CHECK_RESULT(kve_store(&c.c, 0, 64, k, v, NULL), KVE_ERROR_CACHE_FULL);
    tu_close(&c);
    /* fewer recorded queries than the window: refused too, until the window is full */
    cfg.policy.window = 3;
    CHECK_RESULT(tu_open(&c, &cfg), KVE_OK);
    for (t = 0; t < 20; t++) CHECK_RESULT(kve_store(&c.c, 0, t, k, v, NULL), KVE_OK);
    for (t = 0; t < 3; t++) {
        CHECK_RESULT(kve_compress(&c.c, 0), KVE_ERROR_NO_QUERIES);
        CHECK(kve_length(&c.c, 0, 0) == 20, "SimLayerKV without its window of queries changed the layer");
        CHECK_RESULT(kve_attend(&c.c, 0, q, out), KVE_OK);
    }
    CHECK_RESULT(kve_compress(&c.c, 0), KVE_OK);
    tu_close(&c);
    cfg.policy.window = 0;
    {
        size_t bytes;
        kve_config x = cfg;
        x.policy.lazy_threshold = NAN;
        CHECK_RESULT(kve_cache_size(&x, &bytes), KVE_ERROR_INVALID_PARAMETER);
        x.policy.lazy_threshold = 1.5;
        CHECK_RESULT(kve_cache_size(&x, &bytes), KVE_ERROR_INVALID_PARAMETER);
        x.policy.lazy_threshold = -0.1;
        CHECK_RESULT(kve_cache_size(&x, &bytes), KVE_ERROR_INVALID_PARAMETER);
        x.policy.lazy_threshold = 1.0;
        CHECK_RESULT(kve_cache_size(&x, &bytes), KVE_OK);
        x.policy.n_recent = -1;
        CHECK_RESULT(kve_cache_size(&x, &bytes), KVE_ERROR_INVALID_PARAMETER);
        x.policy.n_recent = 3; x.policy.window = 3; /* n_recent must exceed the window */
        CHECK_RESULT(kve_cache_size(&x, &bytes), KVE_ERROR_INVALID_PARAMETER);
        x.policy.n_recent = 4;
        CHECK_RESULT(kve_cache_size(&x, &bytes), KVE_OK);
        x.policy.decode = KVE_DECODE_EVICT;
        CHECK_RESULT(kve_cache_size(&x, &bytes), KVE_ERROR_UNSUPPORTED);
    }
}

int main(void)
{
    test_selections();
    test_pyramid_schedule();
    test_pool_and_select();
    test_streaming_reference();
    test_streaming_long();
    test_snapkv_decode_evict();
    test_h2o_decode();
    test_custom_policy();
    test_scorers_key_storage();
    test_keydiff_reference();
    test_random_and_knorm();
    test_user_scorer_and_decode();
    test_adakv_allocation();
    test_chunkkv_at_least_one_chunk();
    test_simlayerkv_reference();
    test_simlayerkv_defaults_and_errors();
    test_tova_keeps_own_token();
    test_lagkv_scored_at_boundary();
    test_lagkv_reference();
    test_pyramid_ratio_budgets();
    test_compress_chunk();
    test_compress_with();
    test_expected_attention_reference();
    test_per_layer_ratios();
    test_rerotate();
    test_dropped_newest();
    test_invalid_policy_params();
    return tu_summary("test_policies");
}
