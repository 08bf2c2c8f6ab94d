/* Property tests: each checks kvevict.h against something written without it (a double-precision
   reference, the manual's own numbers, a brute-force model), where small bugs hide:
     rope        partial rotary, theta and linear scaling, both layouts, keys stored before and
                 after RoPE, positions on both sides of the pre-RoPE angle table, StreamingLLM's
                 pos-shift with gaps between positions
     numerics    logits far beyond expf's range, long head_dim, many equal logits, keys that all
                 score zero, a query that sees no key
     defaults    every default the manual promises, as its numbers, and zero fields behaving
                 exactly like those numbers written out
     boundaries  the PyramidKV schedule on and around every branch boundary, budget checks at
                 capacity - 1, capacity and capacity + 1, compression before any attention, H2O's
                 recent window and ties, the checker on a broken ring
     blocks      kve_pool1d, kve_select_top, kve_keep_slots and kve_window_scores on inputs the
                 built-in policies never give them, and SnapKV rebuilt from them as a user policy
     decode      SnapKV's decode-time eviction against a reference scoring of the recorded queries
   The reference here follows the manual's words, not the library's code. */
#define KVEVICT_IMPLEMENTATION
#include "kvevict.h"
#include "testutil.h"

#define MAXD 256

/* ---- references ------------------------------------------------------------------------------ */
/* RoPE as the manual states it, from the config the user wrote: zero fields take the manual's
   numbers (interleaved, rope_dims = head_dim, theta 10000, linear factor 1) */
static void ref_rotate(const kve_config *c, double *x, double pos)
{
    int layout = c->rope_layout == KVE_ROPE_HALF ? 2 : c->rope_layout == KVE_ROPE_NONE ? 3 : 1;
    int rot = c->rope_dims ? c->rope_dims : c->head_dim;
    double theta = c->rope_theta != 0.0 ? c->rope_theta : 10000.0;
    double factor = c->rope_linear_factor != 0.0 ? c->rope_linear_factor : 1.0;
    ref_rope(x, c->head_dim, rot, layout, theta, pos / factor);
}

/* One query row against n keys (all before RoPE), in double: the query rotated at qpos, key j at
   kpos[j]; keys with visible[j] == 0 are masked. out[d] and probs[n] may be NULL. With no visible
   key the output and the weights are zero. */
static void ref_attn(const kve_config *c, const float *q, double qpos, const float *const *keys,
                     const float *const *vals, const double *kpos, const unsigned char *visible,
                     int n, double *out, double *probs)
{
    int d = c->head_dim, i, j;
    double qd[MAXD], kd[MAXD], mx = -INFINITY, sum = 0;
    double *lg = (double *)tu_alloc((size_t)(n ? n : 1) * sizeof(double));
    for (i = 0; i < d; i++) qd[i] = q[i];
    ref_rotate(c, qd, qpos);
    for (j = 0; j < n; j++) {
        double dot = 0;
        if (visible && !visible[j]) { lg[j] = -INFINITY; continue; }
        for (i = 0; i < d; i++) kd[i] = keys[j][i];
        ref_rotate(c, kd, kpos[j]);
        for (i = 0; i < d; i++) dot += qd[i] * kd[i];
        lg[j] = dot / sqrt((double)d);
        if (lg[j] > mx) mx = lg[j];
    }
    for (j = 0; j < n; j++) sum += (lg[j] = mx == -INFINITY ? 0.0 : exp(lg[j] - mx));
    if (out) for (i = 0; i < d; i++) out[i] = 0;
    for (j = 0; j < n; j++) {
        double p = sum > 0 ? lg[j] / sum : 0.0;
        if (probs) probs[j] = p;
        if (out) for (i = 0; i < d; i++) out[i] += p * vals[j][i];
    }
    free(lg);
}

/* the tokens a test stored, by position, to look up what a slot must hold */
typedef struct history {
    int n, Hk, d, H;
    int64_t *pos;
    float *k, *v, *q;
} history;

static void hist_init(history *h, int max, int H, int Hk, int d)
{
    h->n = 0; h->H = H; h->Hk = Hk; h->d = d;
    h->pos = (int64_t *)tu_alloc((size_t)max * sizeof(int64_t));
    h->k = (float *)tu_alloc((size_t)max * Hk * d * sizeof(float));
    h->v = (float *)tu_alloc((size_t)max * Hk * d * sizeof(float));
    h->q = (float *)tu_alloc((size_t)max * H * d * sizeof(float));
}
static void hist_free(history *h) { free(h->pos); free(h->k); free(h->v); free(h->q); }
/* makes random q, k, v for the next token and records them */
static int hist_next(history *h, int64_t pos, float scale)
{
    int i = h->n++;
    h->pos[i] = pos;
    tu_fill(h->q + (size_t)i * h->H * h->d, (size_t)h->H * h->d, scale);
    tu_fill(h->k + (size_t)i * h->Hk * h->d, (size_t)h->Hk * h->d, scale);
    tu_fill(h->v + (size_t)i * h->Hk * h->d, (size_t)h->Hk * h->d, 1.0f);
    return i;
}
static int hist_find(const history *h, int64_t pos)
{
    int i;
    for (i = 0; i < h->n; i++)
        if (h->pos[i] == pos) return i;
    return -1;
}
static const float *hist_k(const history *h, int i, int kvh) { return h->k + ((size_t)i * h->Hk + kvh) * h->d; }
static const float *hist_v(const history *h, int i, int kvh) { return h->v + ((size_t)i * h->Hk + kvh) * h->d; }
static const float *hist_q(const history *h, int i, int head) { return h->q + ((size_t)i * h->H + head) * h->d; }

/* compares one attention output (all heads) with the reference over what the cache holds; key
   positions are the true ones unless eff_pos gives them per slot (same for every KV head).
   Returns the worst relative error; weights (per head, stride capacity) are compared when given. */
static double compare_attention(const kve_cache *c, const kve_config *user_cfg, const history *h,
                                const float *q, int64_t qpos, const float *out,
                                const double *eff_pos, const float *weights, double *worst_w)
{
    int H = c->cfg.n_heads, G = c->group, d = c->cfg.head_dim, head, j;
    double worst = 0, ref[MAXD];
    for (head = 0; head < H; head++) {
        int kvh = head / G, n = kve_length(c, 0, kvh);
        const float **kp = (const float **)tu_alloc((size_t)n * sizeof(float *));
        const float **vp = (const float **)tu_alloc((size_t)n * sizeof(float *));
        double *kpos = (double *)tu_alloc((size_t)n * sizeof(double));
        double *probs = (double *)tu_alloc((size_t)n * sizeof(double));
        unsigned char *vis = (unsigned char *)tu_alloc((size_t)n);
        for (j = 0; j < n; j++) {
            int64_t p = kve_slot_position(c, 0, kvh, j);
            int i = hist_find(h, p);
            if (i < 0) { CHECK(0, "slot %d holds position %lld that was never stored", j, (long long)p); return 1e9; }
            kp[j] = hist_k(h, i, kvh);
            vp[j] = hist_v(h, i, kvh);
            kpos[j] = eff_pos ? eff_pos[j] : (double)p;
            vis[j] = p <= qpos;
        }
        ref_attn(user_cfg, q + (size_t)head * d, (double)qpos, kp, vp, kpos, vis, n, ref, probs);
        worst = fmax(worst, rel_err_fd(out + (size_t)head * d, ref, (size_t)d));
        if (weights && worst_w)
            for (j = 0; j < n; j++)
                *worst_w = fmax(*worst_w, fabs(weights[(size_t)head * c->cfg.capacity + j] - probs[j]));
        free(kp); free(vp); free(kpos); free(probs); free(vis);
    }
    return worst;
}

/* ---- rope: every RoPE setting, both key storages, against the reference --------------------- */
static void rope_case(kve_rope_layout layout, int32_t rot, double theta, double factor,
                      kve_key_storage keys, int H, int Hk, int d)
{
    /* positions below the angle table's end, exactly at it (the capacity), and far beyond */
    static const int64_t positions[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,
                                        24, 25, 31, 47, 48, 100, 1000, 123457};
    int n = (int)(sizeof positions / sizeof positions[0]), s;
    kve_config cfg;
    tu_cache t;
    history h;
    float out[16 * MAXD], *w;
    double worst = 0, worst_w = 0;
    kve_attend_options opt;
    memset(&cfg, 0, sizeof cfg);
    cfg.n_layers = 1; cfg.n_heads = H; cfg.n_kv_heads = Hk; cfg.head_dim = d; cfg.capacity = 24;
    cfg.rope_layout = layout; cfg.rope_dims = rot; cfg.rope_theta = theta;
    cfg.rope_linear_factor = factor; cfg.key_storage = keys;
    CHECK_RESULT(tu_open(&t, &cfg), KVE_OK);
    hist_init(&h, n, H, Hk, d);
    w = (float *)tu_alloc((size_t)H * 24 * sizeof(float));
    memset(&opt, 0, sizeof opt);
    opt.weights = w;
    tu_seed((unsigned long long)(layout * 1000 + rot * 10 + (int)factor + keys * 7 + d));
    for (s = 0; s < n; s++) {
        int i = hist_next(&h, positions[s], 1.0f);
        CHECK_RESULT(kve_store(&t.c, 0, positions[s], hist_k(&h, i, 0), hist_v(&h, i, 0), NULL), KVE_OK);
        CHECK_RESULT(kve_attend_ex(&t.c, 0, hist_q(&h, i, 0), out, &opt), KVE_OK);
        worst = fmax(worst, compare_attention(&t.c, &cfg, &h, hist_q(&h, i, 0), positions[s], out,
                                              NULL, w, &worst_w));
    }
    CHECK(worst < 2e-5 && worst_w < 2e-6,
          "rope layout %d dims %d theta %g factor %g keys %d (H %d Hk %d d %d): output error %g, weight error %g",
          (int)layout, rot, theta, factor, (int)keys, H, Hk, d, worst, worst_w);
    free(w);
    hist_free(&h);
    tu_close(&t);
}

static void test_rope_variants(void)
{
    static const kve_rope_layout layouts[] = {KVE_ROPE_DEFAULT, KVE_ROPE_HALF};
    static const int32_t rots[] = {0, 20, 6};
    static const double thetas[] = {0.0, 1e6}, factors[] = {0.0, 2.5};
    int a, b, c2, e, keys;
    for (a = 0; a < 2; a++)
        for (b = 0; b < 3; b++)
            for (c2 = 0; c2 < 2; c2++)
                for (e = 0; e < 2; e++)
                    for (keys = 1; keys <= 2; keys++)
                        rope_case(layouts[a], rots[b], thetas[c2], factors[e], (kve_key_storage)keys,
                                  6, 2, 40); /* 3 query heads per KV head, head_dim 40: 16 + 16 + 8 */
    /* other group sizes and head_dims that are not a multiple of 16 */
    rope_case(KVE_ROPE_HALF, 0, 0.0, 0.0, KVE_KEYS_PRE_ROPE, 12, 2, 24);  /* 6 per KV head */
    rope_case(KVE_ROPE_DEFAULT, 10, 0.0, 4.0, KVE_KEYS_POST_ROPE, 10, 2, 18); /* 5 per KV head */
    rope_case(KVE_ROPE_DEFAULT, 0, 0.0, 0.0, KVE_KEYS_PRE_ROPE, 2, 1, 2);
    rope_case(KVE_ROPE_HALF, 0, 0.0, 0.0, KVE_KEYS_POST_ROPE, 7, 7, 34);
    /* no rotation: any head_dim, odd ones included */
    rope_case(KVE_ROPE_NONE, 0, 0.0, 0.0, KVE_KEYS_POST_ROPE, 4, 2, 7);
    rope_case(KVE_ROPE_NONE, 0, 0.0, 0.0, KVE_KEYS_PRE_ROPE, 3, 1, 33);
}

/* RoPE parameters the manual refuses */
static void test_rope_refused(void)
{
    kve_config c;
    size_t bytes;
    float x[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    memset(&c, 0, sizeof c);
    c.n_layers = 1; c.n_heads = 1; c.head_dim = 8; c.capacity = 4;
    c.rope_linear_factor = -0.5;
    CHECK_RESULT(kve_cache_size(&c, &bytes), KVE_ERROR_INVALID_ROPE);
    CHECK_RESULT(kve_rope_apply(&c, x, 3), KVE_ERROR_INVALID_ROPE);
    c.rope_linear_factor = NAN;
    CHECK_RESULT(kve_cache_size(&c, &bytes), KVE_ERROR_INVALID_ROPE);
    c.rope_linear_factor = INFINITY;
    CHECK_RESULT(kve_cache_size(&c, &bytes), KVE_ERROR_INVALID_ROPE);
    c.rope_linear_factor = 0.0;
    c.rope_theta = -2.0;
    CHECK_RESULT(kve_cache_size(&c, &bytes), KVE_ERROR_INVALID_ROPE);
    c.rope_theta = 0.0;
    c.rope_dims = 5;
    CHECK_RESULT(kve_cache_size(&c, &bytes), KVE_ERROR_INVALID_ROPE);
    c.rope_dims = 10;
    CHECK_RESULT(kve_cache_size(&c, &bytes), KVE_ERROR_INVALID_ROPE);
    c.rope_dims = 8;
    CHECK_RESULT(kve_cache_size(&c, &bytes), KVE_OK);
    /* angles that overflow at KVE_MAX_POSITION: a tiny linear factor */
    c.rope_linear_factor = 1e-300;
    CHECK_RESULT(kve_cache_size(&c, &bytes), KVE_ERROR_INVALID_ROPE);
    c.rope_linear_factor = 0.0;
    /* RoPE at a position: negative positions only through kve_rope_shift */
    CHECK_RESULT(kve_rope_apply(&c, x, -1), KVE_ERROR_POSITION);
    CHECK_RESULT(kve_rope_shift(&c, x, -1), KVE_OK);
}

/* ---- StreamingLLM pos-shift with gaps between positions, partial rotary and scaling ---------- */
/* The manual: pos-shift places sink i right before the oldest recent token (at oldest - sinks + i);
   the recent tokens and the query keep their positions. Without pos-shift nothing moves. */
static void streaming_case(int sinks, int pos_shift, kve_key_storage keys, kve_rope_layout layout)
{
    int H = 4, Hk = 2, d = 24, budget = 12, cap = 16, steps = 40, s, j, S = sinks;
    kve_config cfg;
    tu_cache t;
    history h;
    int64_t pos = 0;
    int kept[64], nkept = 0;
    float out[4 * 24];
    double worst = 0;
    memset(&cfg, 0, sizeof cfg);
    cfg.n_layers = 1; cfg.n_heads = H; cfg.n_kv_heads = Hk; cfg.head_dim = d; cfg.capacity = cap;
    cfg.rope_layout = layout; cfg.rope_dims = 8; cfg.rope_linear_factor = 2.5;
    cfg.key_storage = keys;
    cfg.policy.kind = KVE_POLICY_STREAMINGLLM;
    cfg.policy.budget = budget;
    cfg.policy.sinks = sinks ? sinks : KVE_NO_SINKS;
    cfg.policy.pos_shift = pos_shift ? KVE_POS_SHIFT_ON : KVE_POS_SHIFT_OFF;
    CHECK_RESULT(tu_open(&t, &cfg), KVE_OK);
    hist_init(&h, steps, H, Hk, d);
    tu_seed((unsigned long long)(sinks * 31 + pos_shift * 7 + keys + layout * 3));
    for (s = 0; s < steps; s++) {
        int i;
        double eff[64];
        pos += 1 + s % 3; /* gaps of 0, 1 and 2 positions */
        i = hist_next(&h, pos, 1.0f);
        CHECK_RESULT(kve_store(&t.c, 0, pos, hist_k(&h, i, 0), hist_v(&h, i, 0), NULL), KVE_OK);
        /* the model's kept set: the first `sinks` stored and the most recent, this one included */
        kept[nkept++] = i;
        if (nkept > budget) {
            memmove(kept + S, kept + S + 1, (size_t)(nkept - S - 1) * sizeof(int));
            nkept--;
        }
        CHECK(kve_length(&t.c, 0, 1) == nkept, "streaming step %d: %d kept, expected %d", s,
              kve_length(&t.c, 0, 1), nkept);
        CHECK_RESULT(kve_attend(&t.c, 0, hist_q(&h, i, 0), out), KVE_OK);
        for (j = 0; j < kve_length(&t.c, 0, 0); j++) {
            int64_t p = kve_slot_position(&t.c, 0, 0, j);
            int k, rank = -1;
            for (k = 0; k < nkept; k++)
                if (h.pos[kept[k]] == p) rank = k;
            CHECK(rank >= 0, "streaming step %d keeps position %lld the model evicted", s, (long long)p);
            if (rank < 0) break;
            eff[j] = (double)p;
            if (pos_shift && S > 0 && nkept > S && rank < S)
                eff[j] = (double)(h.pos[kept[S]] - S + rank);
        }
        worst = fmax(worst, compare_attention(&t.c, &cfg, &h, hist_q(&h, i, 0), pos, out, eff, NULL, NULL));
    }
    CHECK(worst < 2e-5, "streaming sinks %d pos_shift %d keys %d layout %d: error %g", sinks,
          pos_shift, (int)keys, (int)layout, worst);
    CHECK_RESULT(kve_check(&t.c), KVE_OK);
    hist_free(&h);
    tu_close(&t);
}

static void test_streaming_shift(void)
{
    static const int sink_counts[] = {0, 1, 4};
    int a, ps, keys, lay;
    for (a = 0; a < 3; a++)
        for (ps = 0; ps <= 1; ps++)
            for (keys = 1; keys <= 2; keys++)
                for (lay = 0; lay < 2; lay++)
                    streaming_case(sink_counts[a], ps, (kve_key_storage)keys,
                                   lay ? KVE_ROPE_HALF : KVE_ROPE_INTERLEAVED);
}

/* ---- numerics at the edges ------------------------------------------------------------------ */
static int all_finite(const float *x, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

static void test_numeric_edges(void)
{
    int s, i;
    {
        /* logits in the thousands (|q|, |k| ~ 30, head_dim 256): far beyond what expf takes */
        kve_config cfg;
        tu_cache t;
        history h;
        float out[4 * 256], w[4 * 32] = {0}; /* the library writes the first n per head */
        double worst = 0, worst_w = 0;
        kve_attend_options opt;
        int keys;
        for (keys = 1; keys <= 2; keys++) {
            memset(&cfg, 0, sizeof cfg);
            cfg.n_layers = 1; cfg.n_heads = 4; cfg.n_kv_heads = 2; cfg.head_dim = 256; cfg.capacity = 32;
            cfg.key_storage = (kve_key_storage)keys;
            CHECK_RESULT(tu_open(&t, &cfg), KVE_OK);
            hist_init(&h, 32, 4, 2, 256);
            memset(&opt, 0, sizeof opt);
            opt.weights = w;
            tu_seed(77 + keys);
            worst = worst_w = 0;
            for (s = 0; s < 32; s++) {
                int j = hist_next(&h, s, 30.0f);
                CHECK_RESULT(kve_store(&t.c, 0, s, hist_k(&h, j, 0), hist_v(&h, j, 0), NULL), KVE_OK);
                CHECK_RESULT(kve_attend_ex(&t.c, 0, hist_q(&h, j, 0), out, &opt), KVE_OK);
                CHECK(all_finite(out, 4 * 256) && all_finite(w, 4 * 32), "huge logits: not finite at step %d", s);
                worst = fmax(worst, compare_attention(&t.c, &cfg, &h, hist_q(&h, j, 0), s, out, NULL, w, &worst_w));
            }
            CHECK(worst < 1e-3 && worst_w < 1e-3, "huge logits (keys %d): output error %g, weight error %g",
                  keys, worst, worst_w);
            hist_free(&h);
            tu_close(&t);
        }
    }
    {
        /* 300 equal logits (identical keys, then all-zero keys): weights exactly uniform, the
           output the mean of the values */
        kve_config cfg;
        tu_cache t;
        int zero;
        static float v[300][32], w[2 * 300];
        float k[32], q[2 * 32], out[2 * 32];
        kve_attend_options opt;
        for (zero = 0; zero <= 1; zero++) {
            double mean[32] = {0}, e = 0, ew = 0;
            memset(&cfg, 0, sizeof cfg);
            cfg.n_layers = 1; cfg.n_heads = 2; cfg.n_kv_heads = 1; cfg.head_dim = 32; cfg.capacity = 300;
            cfg.rope_layout = KVE_ROPE_NONE;
            CHECK_RESULT(tu_open(&t, &cfg), KVE_OK);
            tu_seed(5 + zero);
            tu_fill(k, 32, zero ? 0.0f : 2.0f);
            tu_fill(q, 64, 3.0f);
            for (s = 0; s < 300; s++) {
                tu_fill(v[s], 32, 1.0f);
                for (i = 0; i < 32; i++) mean[i] += v[s][i] / 300.0;
                CHECK_RESULT(kve_store(&t.c, 0, s, k, v[s], NULL), KVE_OK);
            }
            memset(&opt, 0, sizeof opt);
            opt.weights = w;
            CHECK_RESULT(kve_attend_ex(&t.c, 0, q, out, &opt), KVE_OK);
            for (i = 0; i < 32; i++) e = fmax(e, fmax(fabs(out[i] - mean[i]), fabs(out[32 + i] - mean[i])));
            for (s = 0; s < 600; s++) ew = fmax(ew, fabs(w[s] * 300.0 - 1.0));
            CHECK(e < 1e-5 && ew < 1e-5, "equal logits (zero keys %d): output error %g, weight error %g",
                  zero, e, ew);
            tu_close(&t);
        }
    }
    {
        /* a prefill query before every stored key sees nothing: zero output, not NaN; in
           SnapKV's window scores it adds nothing */
        kve_config cfg;
        tu_cache t;
        history h;
        int64_t qpos[2] = {3, 15};
        float q[2 * 2 * 16], out[2 * 2 * 16], scores[16], w[2 * 16] = {0};
        double ref[16];
        kve_attend_options opt;
        memset(&cfg, 0, sizeof cfg);
        cfg.n_layers = 1; cfg.n_heads = 2; cfg.n_kv_heads = 1; cfg.head_dim = 16; cfg.capacity = 16;
        cfg.policy.kind = KVE_POLICY_SNAPKV; cfg.policy.window = 2; cfg.policy.budget = 16;
        CHECK_RESULT(tu_open(&t, &cfg), KVE_OK);
        hist_init(&h, 16, 2, 1, 16);
        tu_seed(9);
        for (s = 10; s < 20; s++) {
            int j = hist_next(&h, s, 1.0f);
            kve_store(&t.c, 0, s, hist_k(&h, j, 0), hist_v(&h, j, 0), NULL);
        }
        tu_fill(q, 64, 1.0f);
        CHECK_RESULT(kve_prefill(&t.c, 0, 2, q, qpos, out), KVE_OK);
        for (i = 0; i < 32; i++) CHECK(out[i] == 0.0f, "a query that sees no key: out[%d] = %g", i, out[i]);
        CHECK(compare_attention(&t.c, &cfg, &h, q + 32, 15, out + 32, NULL, NULL, NULL) < 1e-5,
              "the second prefill row");
        CHECK_RESULT(kve_window_scores(&t.c, 0, 0, KVE_REDUCE_MEAN, scores), KVE_OK);
        {
            /* the weights of the query at 15 alone, from a fresh cache's attention at 15 */
            tu_cache t2;
            double e = 0;
            cfg.policy.kind = KVE_POLICY_FULL;
            CHECK_RESULT(tu_open(&t2, &cfg), KVE_OK);
            for (s = 10; s < 16; s++) kve_store(&t2.c, 0, s, hist_k(&h, s - 10, 0), hist_v(&h, s - 10, 0), NULL);
            memset(&opt, 0, sizeof opt);
            opt.weights = w; opt.weights_reduce = KVE_REDUCE_MEAN;
            CHECK_RESULT(kve_attend_ex(&t2.c, 0, q + 32, out, &opt), KVE_OK);
            for (i = 0; i < 10; i++) e = fmax(e, isfinite(scores[i]) ? fabs(scores[i] - (i < 6 ? w[i] : 0.0f)) : INFINITY);
            CHECK(e < 1e-6, "window scores with a query that sees nothing: error %g", e);
            tu_close(&t2);
        }
        (void)ref;
        hist_free(&h);
        tu_close(&t);
    }
}

/* H2O: a prefill query that sees no key adds no weight (zeros, not NaN) to the scores */
static void test_h2o_blind_query(void)
{
    kve_config c;
    tu_cache t;
    float q[16], k[8], v[8], out[16];
    int64_t qpos = 5;
    int s, j, finite = 1;
    memset(&c, 0, sizeof c);
    c.n_layers = 1; c.n_heads = 2; c.n_kv_heads = 1; c.head_dim = 8; c.capacity = 8;
    c.policy.kind = KVE_POLICY_H2O; c.policy.budget = 8; c.policy.window = 2;
    CHECK_RESULT(tu_open(&t, &c), KVE_OK);
    tu_seed(6);
    for (s = 10; s < 16; s++) {
        tu_fill(q, 16, 1.0f); tu_fill(k, 8, 1.0f); tu_fill(v, 8, 1.0f);
        kve_store(&t.c, 0, s, k, v, NULL);
        kve_attend(&t.c, 0, q, out);
    }
    CHECK_RESULT(kve_prefill(&t.c, 0, 1, q, &qpos, out), KVE_OK);
    for (j = 0; j < 6; j++) finite &= isfinite(kve_scores(&t.c, 0, 0)[j]) && isfinite(kve_scores(&t.c, 0, 1)[j]);
    CHECK(finite, "H2O scores stay finite after a query that sees no key");
    tu_close(&t);
}

/* a user policy that overwrites slots 0, 1, 2, ... in turn: the newest tokens in the first slots */
static kve_result front_make_room(kve_cache *c, int32_t l, int32_t *ws, void *u)
{
    int32_t *next = (int32_t *)u;
    (void)l;
    ws[0] = (*next)++ % c->cfg.capacity;
    return KVE_OK;
}
static const kve_policy_vtable front_vtable = {"front", 0, front_make_room, NULL};

/* A prefill after decoding: the decode step left probabilities in scratch; a prefill query that
   sees none of the first slots (they hold newer tokens) must not see them either. */
static void test_prefill_after_decode(void)
{
    kve_config cfg;
    tu_cache t;
    history h;
    int s, i, n = 260;
    int32_t next = 0;
    int64_t qpos[3] = {140, 150, 259};
    float q[3 * 2 * 16], out[3 * 2 * 16];
    memset(&cfg, 0, sizeof cfg);
    cfg.n_layers = 1; cfg.n_heads = 2; cfg.n_kv_heads = 1; cfg.head_dim = 16; cfg.capacity = 160;
    cfg.policy.kind = KVE_POLICY_CUSTOM; cfg.policy.custom = &front_vtable; cfg.policy.custom_user = &next;
    CHECK_RESULT(tu_open(&t, &cfg), KVE_OK);
    hist_init(&h, n, 2, 1, 16);
    tu_seed(19);
    for (s = 0; s < n; s++) { /* 0 .. 159 fill the slots, 160 .. 259 overwrite slots 0 .. 99 */
        int j = hist_next(&h, s, 1.0f);
        kve_store(&t.c, 0, s, hist_k(&h, j, 0), hist_v(&h, j, 0), NULL);
    }
    CHECK(kve_slot_position(&t.c, 0, 0, 0) == 160 && kve_slot_position(&t.c, 0, 0, 100) == 100,
          "the first slots hold the newest tokens");
    CHECK_RESULT(kve_attend(&t.c, 0, hist_q(&h, n - 1, 0), out), KVE_OK);
    tu_fill(q, 96, 1.0f);
    CHECK_RESULT(kve_prefill(&t.c, 0, 3, q, qpos, out), KVE_OK);
    for (i = 0; i < 3; i++)
        CHECK(compare_attention(&t.c, &cfg, &h, q + 32 * i, qpos[i], out + 32 * i, NULL, NULL, NULL) < 1e-5,
              "prefill row at position %lld after a decode step", (long long)qpos[i]);
    hist_free(&h);
    tu_close(&t);
}

/* ---- the manual's defaults ------------------------------------------------------------------ */
static void test_manual_defaults(void)
{
    kve_config in, r;
    memset(&in, 0, sizeof in);
    in.n_layers = 2; in.n_heads = 6; in.head_dim = 16; in.capacity = 100;
    CHECK_RESULT(kve_config_resolve(&in, &r), KVE_OK);
    CHECK(r.n_kv_heads == 6, "n_kv_heads defaults to n_heads: %d", r.n_kv_heads);
    CHECK(r.rope_layout == KVE_ROPE_INTERLEAVED, "RoPE layout defaults to interleaved");
    CHECK(r.rope_dims == 16, "rope_dims defaults to head_dim: %d", r.rope_dims);
    CHECK(r.rope_theta == 10000.0, "theta defaults to 10000: %g", r.rope_theta);
    CHECK(r.rope_linear_factor == 1.0, "linear factor defaults to 1: %g", r.rope_linear_factor);
    CHECK(r.key_storage == KVE_KEYS_POST_ROPE, "keys default to post-RoPE");
    CHECK(r.policy.kind == KVE_POLICY_FULL, "the default policy is full");
    CHECK(r.policy.budget == 100, "budget defaults to capacity: %d", r.policy.budget);

    in.policy.kind = KVE_POLICY_SNAPKV;
    CHECK_RESULT(kve_config_resolve(&in, &r), KVE_OK);
    CHECK(r.policy.window == 32 && r.policy.kernel == 7 && r.policy.pooling == KVE_POOL_MAX &&
          r.policy.gqa == KVE_REDUCE_MEAN && r.policy.decode == KVE_DECODE_GROW &&
          r.policy.evict_batch == 32,
          "SnapKV defaults: window %d kernel %d pooling %d gqa %d decode %d evict_batch %d",
          r.policy.window, r.policy.kernel, (int)r.policy.pooling, (int)r.policy.gqa,
          (int)r.policy.decode, r.policy.evict_batch);
    in.policy.window = 10;
    CHECK_RESULT(kve_config_resolve(&in, &r), KVE_OK);
    CHECK(r.policy.evict_batch == 10, "evict_batch defaults to the window: %d", r.policy.evict_batch);
    in.policy.window = 0;
    in.policy.pooling = KVE_POOL_NONE;
    CHECK_RESULT(kve_config_resolve(&in, &r), KVE_OK);
    CHECK(r.policy.kernel == 1, "no pooling is a kernel of 1: %d", r.policy.kernel);
    in.policy.pooling = KVE_POOL_DEFAULT;

    in.policy.kind = KVE_POLICY_PYRAMIDKV;
    CHECK_RESULT(kve_config_resolve(&in, &r), KVE_OK);
    CHECK(r.policy.beta == 20 && r.policy.decode == KVE_DECODE_GROW, "PyramidKV beta %d decode %d",
          r.policy.beta, (int)r.policy.decode);
    in.policy.kind = KVE_POLICY_H2O;
    CHECK_RESULT(kve_config_resolve(&in, &r), KVE_OK);
    CHECK(r.policy.decode == KVE_DECODE_EVICT && r.policy.window == 32 && r.policy.gqa == KVE_REDUCE_MEAN,
          "H2O evicts while decoding by default: decode %d", (int)r.policy.decode);
    in.policy.kind = KVE_POLICY_STREAMINGLLM;
    CHECK_RESULT(kve_config_resolve(&in, &r), KVE_OK);
    CHECK(r.policy.sinks == 4 && r.policy.pos_shift == KVE_POS_SHIFT_ON,
          "StreamingLLM: sinks %d pos_shift %d", r.policy.sinks, (int)r.policy.pos_shift);
    in.policy.sinks = KVE_NO_SINKS;
    CHECK_RESULT(kve_config_resolve(&in, &r), KVE_OK);
    CHECK(r.policy.sinks == 0, "KVE_NO_SINKS is zero sinks: %d", r.policy.sinks);
    in.rope_layout = KVE_ROPE_NONE;
    in.head_dim = 7;
    CHECK_RESULT(kve_config_resolve(&in, &r), KVE_OK);
    CHECK(r.rope_dims == 0, "nothing rotates without RoPE: rope_dims %d", r.rope_dims);
    {
        float a[6] = {-3, -1, -2, -5, -4, -6}, b[6], c[6];
        CHECK_RESULT(kve_pool1d(a, 6, 3, KVE_POOL_DEFAULT, b), KVE_OK);
        CHECK_RESULT(kve_pool1d(a, 6, 3, KVE_POOL_MAX, c), KVE_OK);
        CHECK(memcmp(b, c, sizeof b) == 0, "kve_pool1d pools by max by default");
    }
}

/* zero fields behave exactly like the manual's numbers written out: same outputs, same slots */
typedef struct run_result { float out[64 * 4 * 16]; int64_t kept[3][2][128]; int len[3][2]; } run_result;

static void run_policy_on(tu_cache *tc, run_result *res);

static void run_policy(const kve_config *cfg, run_result *res)
{
    tu_cache t;
    CHECK_RESULT(tu_open(&t, cfg), KVE_OK);
    run_policy_on(&t, res);
    tu_close(&t);
}

/* a prompt (prefilled and compressed where the policy scores), then decoding, on all layers */
static void run_policy_on(tu_cache *tc, run_result *res)
{
    int H = 4, Hk = 2, d = 16, prompt = 110, steps = 60, l, s, h;
    const kve_config *cfg = &tc->c.cfg;
    float *q = (float *)tu_alloc((size_t)prompt * H * d * sizeof(float));
    float *k = (float *)tu_alloc((size_t)(prompt + steps) * Hk * d * sizeof(float));
    float *v = (float *)tu_alloc((size_t)(prompt + steps) * Hk * d * sizeof(float));
    float *out = (float *)tu_alloc((size_t)prompt * H * d * sizeof(float));
    memset(res, 0, sizeof *res);
    tu_seed(42);
    tu_fill(q, (size_t)prompt * H * d, 1.5f);
    tu_fill(k, (size_t)(prompt + steps) * Hk * d, 1.5f);
    tu_fill(v, (size_t)(prompt + steps) * Hk * d, 1.0f);
    for (l = 0; l < 3; l++) {
        for (s = 0; s < prompt; s++)
            CHECK_RESULT(kve_store(&tc->c, l, s, k + (size_t)s * Hk * d, v + (size_t)s * Hk * d, NULL), KVE_OK);
        if (cfg->policy.kind != KVE_POLICY_STREAMINGLLM)
            CHECK_RESULT(kve_prefill(&tc->c, l, 64, q + (size_t)(prompt - 64) * H * d, NULL, out), KVE_OK);
    }
    CHECK_RESULT(kve_compress_all(&tc->c), KVE_OK);
    for (s = 0; s < steps; s++)
        for (l = 0; l < 3; l++) {
            kve_result r = kve_store(&tc->c, l, prompt + s, k + (size_t)(prompt + s) * Hk * d,
                                     v + (size_t)(prompt + s) * Hk * d, NULL);
            if (r == KVE_ERROR_CACHE_FULL) continue;
            CHECK_RESULT(r, KVE_OK);
            CHECK_RESULT(kve_attend(&tc->c, l, q + (size_t)(s % prompt) * H * d, res->out + (size_t)s * H * d), KVE_OK);
        }
    for (l = 0; l < 3; l++)
        for (h = 0; h < Hk; h++) {
            res->len[l][h] = kve_length(&tc->c, l, h);
            for (s = 0; s < res->len[l][h]; s++) res->kept[l][h][s] = kve_slot_position(&tc->c, l, h, s);
        }
    CHECK_RESULT(kve_check(&tc->c), KVE_OK);
    free(q); free(k); free(v); free(out);
}

static void test_defaults_behave_as_written(void)
{
    static const kve_policy_kind kinds[] = {KVE_POLICY_SNAPKV, KVE_POLICY_PYRAMIDKV, KVE_POLICY_H2O,
                                            KVE_POLICY_STREAMINGLLM};
    static run_result a, b;
    int i, evict;
    for (i = 0; i < 4; i++)
        for (evict = 0; evict <= 1; evict++) {
            kve_config zero, written;
            memset(&zero, 0, sizeof zero);
            zero.n_layers = 3; zero.n_heads = 4; zero.n_kv_heads = 2; zero.head_dim = 16;
            zero.capacity = 128;
            zero.policy.kind = kinds[i];
            zero.policy.budget = 72;
            if (evict) zero.policy.decode = KVE_DECODE_EVICT;
            written = zero;
            written.rope_layout = KVE_ROPE_INTERLEAVED; written.rope_dims = 16;
            written.rope_theta = 10000.0; written.rope_linear_factor = 1.0;
            written.key_storage = KVE_KEYS_POST_ROPE;
            written.policy.window = 32; written.policy.kernel = 7;
            written.policy.pooling = KVE_POOL_MAX; written.policy.gqa = KVE_REDUCE_MEAN;
            written.policy.beta = 20; written.policy.evict_batch = 32;
            written.policy.decode = evict || kinds[i] == KVE_POLICY_H2O || kinds[i] == KVE_POLICY_STREAMINGLLM
                                        ? KVE_DECODE_EVICT : KVE_DECODE_GROW;
            written.policy.sinks = 4; written.policy.pos_shift = KVE_POS_SHIFT_ON;
            run_policy(&zero, &a);
            run_policy(&written, &b);
            CHECK(memcmp(&a, &b, sizeof a) == 0, "policy %d decode-evict %d: zero fields differ from the manual's numbers",
                  (int)kinds[i], evict);
        }
}

/* ---- boundaries ---------------------------------------------------------------------------- */
static void test_pyramid_boundaries(void)
{
    static const int Cs[] = {24, 40, 64, 100}, betas[] = {1, 3, 20}, layer_counts[] = {1, 2, 5, 32};
    int32_t got[32];
    int a, b, c2, e, wi, bad = 0, checked = 0;
    for (a = 0; a < 4; a++)
        for (wi = 0; wi < 4; wi++) {
            int C = Cs[a], w = wi == 0 ? 1 : wi == 1 ? 4 : wi == 2 ? 8 : C / 3;
            long Ls[12];
            Ls[0] = 0; Ls[1] = C - 1; Ls[2] = C; Ls[3] = C + 1;
            Ls[4] = 2 * (C - w) - 1; Ls[5] = 2 * (C - w); Ls[6] = 2 * (C - w) + 1;
            Ls[7] = 2 * (C - w) + w; Ls[8] = 3 * C; Ls[9] = 10000;
            Ls[10] = 2 * (C - w) - (C - w) / 20 + w; Ls[11] = Ls[10] + 1;
            for (b = 0; b < 3; b++)
                for (c2 = 0; c2 < 4; c2++)
                    for (e = 0; e < 12; e++) {
                        long L = Ls[e];
                        int l;
                        if (L < 0) continue;
                        CHECK_RESULT(kve_pyramid_budgets(C, w, betas[b], layer_counts[c2], L, got), KVE_OK);
                        for (l = 0; l < layer_counts[c2]; l++) {
                            long k = ref_pyramid_prefix(C, w, betas[b], layer_counts[c2], l, L);
                            long want = k < 0 ? L : k + w;
                            checked++;
                            if (got[l] != want && bad++ < 5)
                                CHECK(0, "pyramid C %d w %d beta %d layers %d L %ld: layer %d keeps %d, expected %ld",
                                      C, w, betas[b], layer_counts[c2], L, l, got[l], want);
                        }
                    }
        }
    CHECK(bad == 0 && checked > 1000, "pyramid schedule: %d of %d budgets wrong", bad, checked);
    {
        /* prompt compression follows the same schedule exactly on the second branch's boundary */
        int C = 40, w = 8, L = 2 * (C - w), H = 2, Hk = 1, d = 8, l, s;
        kve_config cfg;
        tu_cache t;
        float *q = (float *)tu_alloc((size_t)L * H * d * sizeof(float));
        float *k = (float *)tu_alloc((size_t)L * Hk * d * sizeof(float));
        float *out = (float *)tu_alloc((size_t)L * H * d * sizeof(float));
        memset(&cfg, 0, sizeof cfg);
        cfg.n_layers = 4; cfg.n_heads = H; cfg.n_kv_heads = Hk; cfg.head_dim = d; cfg.capacity = L;
        cfg.policy.kind = KVE_POLICY_PYRAMIDKV; cfg.policy.budget = C; cfg.policy.window = w;
        CHECK_RESULT(tu_open(&t, &cfg), KVE_OK);
        tu_seed(8);
        tu_fill(q, (size_t)L * H * d, 1.0f);
        tu_fill(k, (size_t)L * Hk * d, 1.0f);
        for (l = 0; l < 4; l++) {
            for (s = 0; s < L; s++) kve_store(&t.c, l, s, k + (size_t)s * d, k + (size_t)s * d, NULL);
            CHECK_RESULT(kve_prefill(&t.c, l, L, q, NULL, out), KVE_OK);
        }
        CHECK_RESULT(kve_compress_all(&t.c), KVE_OK);
        for (l = 0; l < 4; l++)
            CHECK(kve_length(&t.c, l, 0) == ref_pyramid_prefix(C, w, 20, 4, l, L) + w,
                  "PyramidKV layer %d at L = 2(C - w) keeps %d, expected %ld", l, kve_length(&t.c, l, 0),
                  ref_pyramid_prefix(C, w, 20, 4, l, L) + w);
        free(q); free(k); free(out);
        tu_close(&t);
    }
}

static kve_result size_of(kve_policy_kind kind, int decode, int capacity, int budget, int window,
                          int sinks, int n_layers)
{
    kve_config c;
    size_t bytes;
    memset(&c, 0, sizeof c);
    c.n_layers = n_layers; c.n_heads = 2; c.head_dim = 8; c.capacity = capacity;
    c.policy.kind = kind; c.policy.budget = budget; c.policy.window = window; c.policy.sinks = sinks;
    c.policy.decode = decode ? KVE_DECODE_EVICT : KVE_DECODE_GROW;
    return kve_cache_size(&c, &bytes);
}

static void test_budget_boundaries(void)
{
    static const kve_policy_kind kinds[] = {KVE_POLICY_STREAMINGLLM, KVE_POLICY_SNAPKV,
                                            KVE_POLICY_PYRAMIDKV, KVE_POLICY_H2O};
    int i, dec;
    for (i = 0; i < 4; i++)
        for (dec = 0; dec <= 1; dec++) {
            int layers = kinds[i] == KVE_POLICY_PYRAMIDKV && dec ? 1 : 3;
            CHECK_RESULT(size_of(kinds[i], dec, 40, 39, 8, 4, layers), KVE_OK);
            CHECK_RESULT(size_of(kinds[i], dec, 40, 40, 8, 4, layers), KVE_OK);
            CHECK_RESULT(size_of(kinds[i], dec, 40, 41, 8, 4, layers), KVE_ERROR_BUDGET_ABOVE_CAPACITY);
        }
    /* windows and sinks against the budget */
    for (i = 1; i < 4; i++) {
        CHECK_RESULT(size_of(kinds[i], 0, 40, 20, 19, 0, 3), KVE_OK);
        CHECK_RESULT(size_of(kinds[i], 0, 40, 20, 20, 0, 3), KVE_ERROR_WINDOW_TOO_LARGE);
    }
    CHECK_RESULT(size_of(KVE_POLICY_STREAMINGLLM, 0, 40, 20, 0, 19, 1), KVE_OK);
    CHECK_RESULT(size_of(KVE_POLICY_STREAMINGLLM, 0, 40, 20, 0, 20, 1), KVE_ERROR_TOO_MANY_SINKS);
    {
        /* PyramidKV evicting while decoding: its largest layer budget must fit the capacity */
        int top = (int)ref_pyramid_prefix(40, 8, 20, 4, 0, 1L << 40) + 8;
        CHECK_RESULT(size_of(KVE_POLICY_PYRAMIDKV, 1, top - 1, 40, 8, 0, 4), KVE_ERROR_BUDGET_ABOVE_CAPACITY);
        CHECK_RESULT(size_of(KVE_POLICY_PYRAMIDKV, 1, top, 40, 8, 0, 4), KVE_OK);
        CHECK_RESULT(size_of(KVE_POLICY_PYRAMIDKV, 1, top + 1, 40, 8, 0, 4), KVE_OK);
        CHECK_RESULT(size_of(KVE_POLICY_PYRAMIDKV, 0, top - 1, 40, 8, 0, 4), KVE_OK);
    }
    {
        /* full at capacity: FULL and SnapKV in grow mode refuse the next token, evicting modes
           make room; the layer budget the manual reports */
        static const struct { kve_policy_kind kind; int decode; int full; int32_t budget; } cases[] = {
            {KVE_POLICY_FULL, 0, 1, 12}, {KVE_POLICY_SNAPKV, 0, 1, 12},
            {KVE_POLICY_PYRAMIDKV, 0, 1, 12}, {KVE_POLICY_SNAPKV, 1, 0, 10},
            {KVE_POLICY_H2O, 1, 0, 10}, {KVE_POLICY_STREAMINGLLM, 1, 0, 10},
            {KVE_POLICY_STREAMINGLLM, 0, 1, 12}};
        for (i = 0; i < 7; i++) {
            kve_config c;
            tu_cache t;
            float q[16], k[8], v[8], out[16];
            int s;
            kve_result r = KVE_OK;
            memset(&c, 0, sizeof c);
            c.n_layers = 1; c.n_heads = 2; c.n_kv_heads = 1; c.head_dim = 8; c.capacity = 12;
            c.policy.kind = cases[i].kind; c.policy.budget = cases[i].kind == KVE_POLICY_FULL ? 0 : 10;
            c.policy.window = 4; c.policy.sinks = 2;
            c.policy.decode = cases[i].decode ? KVE_DECODE_EVICT : KVE_DECODE_GROW;
            CHECK_RESULT(tu_open(&t, &c), KVE_OK);
            CHECK(kve_layer_budget(&t.c, 0) == cases[i].budget, "case %d: layer budget %d, expected %d", i,
                  kve_layer_budget(&t.c, 0), cases[i].budget);
            tu_seed(3);
            for (s = 0; s < 13 && r == KVE_OK; s++) {
                tu_fill(q, 16, 1.0f); tu_fill(k, 8, 1.0f); tu_fill(v, 8, 1.0f);
                r = kve_store(&t.c, 0, s, k, v, NULL);
                if (r == KVE_OK) CHECK_RESULT(kve_attend(&t.c, 0, q, out), KVE_OK);
                else CHECK(s == 12, "case %d: refused token %d, expected only the 13th", i, s);
            }
            CHECK(cases[i].full ? r == KVE_ERROR_CACHE_FULL : r == KVE_OK, "case %d: the 13th token gives %s", i,
                  kve_result_string(r));
            CHECK(kve_length(&t.c, 0, 0) <= (cases[i].full ? 12 : 10), "case %d: %d tokens", i, kve_length(&t.c, 0, 0));
            tu_close(&t);
        }
    }
}

/* compressing a layer that was never attended */
static void test_compress_without_attention(void)
{
    static const kve_policy_kind kinds[] = {KVE_POLICY_SNAPKV, KVE_POLICY_PYRAMIDKV, KVE_POLICY_H2O};
    int i, s;
    for (i = 0; i < 3; i++) {
        kve_config c;
        tu_cache t;
        float k[16], v[16];
        memset(&c, 0, sizeof c);
        c.n_layers = 1; c.n_heads = 4; c.n_kv_heads = 2; c.head_dim = 8; c.capacity = 64;
        c.policy.kind = kinds[i]; c.policy.budget = 20; c.policy.window = 5;
        CHECK_RESULT(tu_open(&t, &c), KVE_OK);
        tu_seed(1);
        for (s = 0; s < 19; s++) {
            tu_fill(k, 16, 1.0f); tu_fill(v, 16, 1.0f);
            kve_store(&t.c, 0, s, k, v, NULL);
        }
        CHECK_RESULT(kve_compress(&t.c, 0), KVE_OK); /* below the budget: nothing to do */
        CHECK(kve_length(&t.c, 0, 1) == 19, "policy %d: a short prompt is kept whole", (int)kinds[i]);
        CHECK_RESULT(kve_cache_reset(&t.c), KVE_OK); /* the compressed layer now keeps its budget */
        for (s = 0; s < 50; s++) {
            tu_fill(k, 16, 1.0f); tu_fill(v, 16, 1.0f);
            CHECK_RESULT(kve_store(&t.c, 0, s, k, v, NULL), KVE_OK);
        }
        if (kinds[i] == KVE_POLICY_H2O) {
            /* nothing accumulated: every score ties at zero, and ties keep the lower positions */
            CHECK_RESULT(kve_compress(&t.c, 0), KVE_OK);
            CHECK(kve_length(&t.c, 0, 0) == 20 && kve_length(&t.c, 0, 1) == 20, "H2O keeps its budget");
            for (s = 0; s < 20; s++) {
                int64_t want = s < 15 ? s : 45 + (s - 15), p = -1;
                int j;
                for (j = 0; j < 20; j++)
                    if (kve_slot_position(&t.c, 0, 1, j) == want) p = want;
                CHECK(p == want, "H2O without attention should keep position %lld", (long long)want);
            }
        } else {
            CHECK_RESULT(kve_compress(&t.c, 0), KVE_ERROR_NO_QUERIES);
            CHECK(kve_length(&t.c, 0, 0) == 50, "a refused compression changes nothing");
        }
        CHECK_RESULT(kve_check(&t.c), KVE_OK);
        tu_close(&t);
    }
}

/* H2O decoding: the window - 1 most recently stored tokens (and the new one) stay; of the rest
   the lowest accumulated score goes, ties to the lower position. Scores set through kve_scores. */
static void test_h2o_window_and_ties(void)
{
    int trial;
    for (trial = 0; trial < 3; trial++) {
        kve_config c;
        tu_cache t;
        float q[32], k[16], v[16], out[32];
        int s, head, j, w = 4, budget = 10;
        int64_t target = -1, protect = -1;
        memset(&c, 0, sizeof c);
        c.n_layers = 1; c.n_heads = 4; c.n_kv_heads = 2; c.head_dim = 8; c.capacity = 10;
        c.policy.kind = KVE_POLICY_H2O; c.policy.budget = budget; c.policy.window = w;
        CHECK_RESULT(tu_open(&t, &c), KVE_OK);
        tu_seed(2);
        for (s = 0; s < 16; s++) {
            int64_t before[2][10];
            int n0 = kve_length(&t.c, 0, 0), n1 = kve_length(&t.c, 0, 1);
            for (j = 0; j < n0; j++) before[0][j] = kve_slot_position(&t.c, 0, 0, j);
            for (j = 0; j < n1; j++) before[1][j] = kve_slot_position(&t.c, 0, 1, j);
            if (n0 == budget) {
                /* trial 0: all equal; 1: the newest unprotected token scores lowest; 2: a protected
                   one scores lowest (it must stay), and so does an older one (it goes) */
                for (head = 0; head < 4; head++) {
                    float *row = kve_scores(&t.c, 0, head);
                    for (j = 0; j < budget; j++) row[j] = 1.0f;
                }
                target = trial == 0 ? -1 : s - w;      /* stored w tokens ago: outside the window */
                protect = s - (w - 1);                 /* the oldest of the window - 1 newest */
                for (head = 0; head < 4; head++) {
                    float *row = kve_scores(&t.c, 0, head);
                    for (j = 0; j < budget; j++) {
                        int64_t p = kve_slot_position(&t.c, 0, head / 2, j);
                        if (trial >= 1 && p == target) row[j] = 0.25f;
                        if (trial == 2 && p == protect) row[j] = 0.0f;
                    }
                }
            }
            tu_fill(q, 32, 1.0f); tu_fill(k, 16, 1.0f); tu_fill(v, 16, 1.0f);
            CHECK_RESULT(kve_store(&t.c, 0, s, k, v, NULL), KVE_OK);
            if (n0 == budget) {
                int kv;
                for (kv = 0; kv < 2; kv++) {
                    int64_t gone = -1, lowest = INT64_MAX;
                    for (j = 0; j < budget; j++) {
                        int found = 0, x;
                        for (x = 0; x < budget; x++) found |= kve_slot_position(&t.c, 0, kv, x) == before[kv][j];
                        if (!found) gone = before[kv][j];
                        if (before[kv][j] < lowest) lowest = before[kv][j];
                    }
                    if (trial == 0)
                        CHECK(gone == lowest, "H2O tie: evicted %lld, expected the lowest position %lld",
                              (long long)gone, (long long)lowest);
                    else
                        CHECK(gone == target, "H2O trial %d step %d: evicted %lld, expected %lld", trial, s,
                              (long long)gone, (long long)target);
                }
            }
            CHECK_RESULT(kve_attend(&t.c, 0, q, out), KVE_OK);
        }
        CHECK_RESULT(kve_check(&t.c), KVE_OK);
        tu_close(&t);
    }
}

/* the checker notices a StreamingLLM ring that starts in the wrong place */
static void test_checker_ring(void)
{
    kve_config c;
    tu_cache t;
    float k[8], v[8];
    int s;
    memset(&c, 0, sizeof c);
    c.n_layers = 1; c.n_heads = 1; c.head_dim = 8; c.capacity = 10;
    c.policy.kind = KVE_POLICY_STREAMINGLLM; c.policy.sinks = 2;
    CHECK_RESULT(tu_open(&t, &c), KVE_OK);
    tu_fill(k, 8, 1.0f); tu_fill(v, 8, 1.0f);
    for (s = 0; s < 6; s++) kve_store(&t.c, 0, s, k, v, NULL);
    CHECK_RESULT(kve_check(&t.c), KVE_OK);
    t.c.ring_next[0] = 3; /* before the ring wraps its next slot is the first after the sinks */
    CHECK_RESULT(kve_check(&t.c), KVE_ERROR_CORRUPT);
    t.c.ring_next[0] = 2;
    CHECK_RESULT(kve_check(&t.c), KVE_OK);
    /* reset starts the ring again after the sinks */
    for (s = 6; s < 30; s++) kve_store(&t.c, 0, s, k, v, NULL);
    CHECK_RESULT(kve_cache_reset(&t.c), KVE_OK);
    for (s = 0; s < 6; s++) kve_store(&t.c, 0, s, k, v, NULL);
    CHECK_RESULT(kve_check(&t.c), KVE_OK);
    for (s = 0; s < 6; s++) CHECK(kve_slot_position(&t.c, 0, 0, s) == s, "after reset slot %d holds %lld", s,
                                  (long long)kve_slot_position(&t.c, 0, 0, s));
    tu_close(&t);
}

/* ---- building blocks ----------------------------------------------------------------------- */
static void test_pool_reference(void)
{
    int trial, bad = 0;
    tu_seed(17);
    for (trial = 0; trial < 400; trial++) {
        int n = 1 + trial % 20, kernel = 1 + 2 * (trial / 20 % 5), i, j;
        kve_pooling mode = trial % 3 == 0 ? KVE_POOL_MAX : trial % 3 == 1 ? KVE_POOL_AVG : KVE_POOL_NONE;
        float in[20], out[20];
        double shift = trial % 2 ? -5.0 : 0.0; /* all negative half the time */
        for (i = 0; i < n; i++) in[i] = (float)(tu_normal() + shift);
        CHECK_RESULT(kve_pool1d(in, n, kernel, mode, out), KVE_OK);
        for (i = 0; i < n; i++) {
            double want;
            int lo = i - kernel / 2, hi = i + kernel / 2;
            if (mode == KVE_POOL_NONE) {
                want = in[i];
            } else if (mode == KVE_POOL_MAX) {
                want = -INFINITY;
                for (j = lo; j <= hi; j++)
                    if (j >= 0 && j < n && in[j] > want) want = in[j];
            } else { /* torch avg_pool1d, padding kernel/2 counted as zeros */
                want = 0;
                for (j = lo; j <= hi; j++)
                    if (j >= 0 && j < n) want += in[j];
                want /= kernel;
            }
            if (fabs(out[i] - want) > 1e-5 * (1 + fabs(want)) && bad++ < 3)
                CHECK(0, "pool n %d kernel %d mode %d at %d: %g, expected %g", n, kernel, (int)mode, i, out[i], want);
        }
    }
    CHECK(bad == 0, "pooling: %d wrong values", bad);
    {
        float a[5] = {1, 2, 3, 4, 5};
        CHECK_RESULT(kve_pool1d(a, 5, 1, KVE_POOL_MAX, a), KVE_OK); /* kernel 1 in place is a copy */
        CHECK(a[4] == 5 && a[0] == 1, "kernel 1 in place");
        CHECK_RESULT(kve_pool1d(a, 5, 3, KVE_POOL_AVG, a), KVE_ERROR_INVALID_PARAMETER);
        CHECK_RESULT(kve_pool1d(a, 5, 2, KVE_POOL_AVG, a + 0), KVE_ERROR_EVEN_KERNEL);
        CHECK_RESULT(kve_pool1d(a, 5, 0, KVE_POOL_AVG, a), KVE_ERROR_EVEN_KERNEL);
    }
}

/* brute force: rank by (number before NaN, higher score, lower index), keep the first k */
static void test_select_reference(void)
{
    int trial, bad = 0;
    tu_seed(23);
    for (trial = 0; trial < 600; trial++) {
        int n = trial % 40, k = n ? (int)(tu_uniform() * (n + 1)) : 0, i, j;
        float sc[40];
        unsigned char keep[40], want[40];
        int32_t order[40];
        for (i = 0; i < n; i++) {
            double u = tu_uniform();
            sc[i] = u < 0.1 ? NAN : (float)(int)(u * 6) - 2.0f; /* many ties, negatives, NaN */
        }
        CHECK_RESULT(kve_select_top(sc, n, k, keep, order), KVE_OK);
        for (i = 0; i < n; i++) {
            int rank = 0;
            for (j = 0; j < n; j++) {
                int jn = sc[j] != sc[j], in_ = sc[i] != sc[i];
                int before = jn != in_ ? in_ : (!jn && sc[j] != sc[i]) ? sc[j] > sc[i] : j < i;
                rank += j != i && before;
            }
            want[i] = rank < k;
            if ((keep[i] != 0) != want[i] && bad++ < 3)
                CHECK(0, "select n %d k %d: index %d (score %g) kept %d, expected %d", n, k, i, sc[i], keep[i], want[i]);
        }
    }
    CHECK(bad == 0, "selection: %d wrong", bad);
    {
        float s[3] = {1, 2, 3};
        unsigned char keep[3];
        int32_t order[3];
        CHECK_RESULT(kve_select_top(s, 3, 4, keep, order), KVE_ERROR_INVALID_COUNT);
        CHECK_RESULT(kve_select_top(s, 3, -1, keep, order), KVE_ERROR_INVALID_COUNT);
        CHECK_RESULT(kve_select_top(s, -1, 0, keep, order), KVE_ERROR_INVALID_COUNT);
    }
}

/* a user policy that keeps scores, so kve_keep_slots moves them too */
static kve_result never_make_room(kve_cache *c, int32_t l, int32_t *ws, void *u)
{
    (void)c; (void)l; (void)ws; (void)u;
    return KVE_ERROR_CACHE_FULL;
}
static const kve_policy_vtable scored_vtable = {"scored", 1, never_make_room, NULL};

static void test_keep_slots_moves_everything(void)
{
    int trial;
    for (trial = 0; trial < 20; trial++) {
        kve_config c;
        tu_cache t;
        history h;
        int H = 4, Hk = 2, d = 8, n = 24, s, kvh, g, j;
        unsigned char keep[2][24];
        memset(&c, 0, sizeof c);
        c.n_layers = 2; c.n_heads = H; c.n_kv_heads = Hk; c.head_dim = d; c.capacity = 32;
        c.rope_layout = KVE_ROPE_NONE;
        c.policy.kind = KVE_POLICY_CUSTOM; c.policy.custom = &scored_vtable;
        CHECK_RESULT(tu_open(&t, &c), KVE_OK);
        hist_init(&h, n, H, Hk, d);
        tu_seed((unsigned long long)trial + 100);
        for (s = 0; s < n; s++) {
            int i = hist_next(&h, 5 * s + 1, 1.0f);
            kve_store(&t.c, 1, h.pos[i], hist_k(&h, i, 0), hist_v(&h, i, 0), NULL);
        }
        for (g = 0; g < H; g++) /* a score per (head, position) */
            for (j = 0; j < n; j++) kve_scores(&t.c, 1, g)[j] = (float)(1000 * g + kve_slot_position(&t.c, 1, g / 2, j));
        for (kvh = 0; kvh < Hk; kvh++) {
            for (j = 0; j < n; j++) keep[kvh][j] = tu_uniform() < (trial % 4 + 1) / 5.0;
            keep[kvh][n - 1] |= trial % 2; /* sometimes the newest stays, sometimes not */
        }
        for (kvh = 0; kvh < Hk; kvh++) {
            int64_t was[24];
            int kept = 0, x;
            for (j = 0; j < n; j++) { was[j] = kve_slot_position(&t.c, 1, kvh, j); kept += keep[kvh][j]; }
            CHECK_RESULT(kve_keep_slots(&t.c, 1, kvh, keep[kvh]), KVE_OK);
            CHECK(kve_length(&t.c, 1, kvh) == kept, "keep_slots: %d slots, expected %d", kve_length(&t.c, 1, kvh), kept);
            for (j = 0; j < kve_length(&t.c, 1, kvh); j++) {
                int64_t p = kve_slot_position(&t.c, 1, kvh, j);
                int i = hist_find(&h, p), was_kept = 0;
                for (x = 0; x < n; x++) was_kept |= was[x] == p && keep[kvh][x];
                CHECK(was_kept, "slot %d holds position %lld that was not kept", j, (long long)p);
                if (i < 0) continue;
                CHECK(memcmp(kve_key(&t.c, 1, kvh, j), hist_k(&h, i, kvh), (size_t)d * sizeof(float)) == 0 &&
                      memcmp(kve_value(&t.c, 1, kvh, j), hist_v(&h, i, kvh), (size_t)d * sizeof(float)) == 0,
                      "slot %d: K/V of position %lld not moved with it", j, (long long)p);
                for (g = 0; g < 2; g++)
                    CHECK(kve_scores(&t.c, 1, kvh * 2 + g)[j] == (float)(1000 * (kvh * 2 + g) + p),
                          "slot %d: score of position %lld not moved with it", j, (long long)p);
            }
            CHECK(kve_slot_position(&t.c, 1, kvh, kept) == -1, "past the length there is no position");
        }
        if (trial % 2) CHECK_RESULT(kve_check(&t.c), KVE_OK);
        hist_free(&h);
        tu_close(&t);
    }
    {
        kve_config c;
        tu_cache t;
        unsigned char keep[4] = {1, 1, 1, 1};
        memset(&c, 0, sizeof c);
        c.n_layers = 1; c.n_heads = 1; c.head_dim = 8; c.capacity = 4;
        c.policy.kind = KVE_POLICY_STREAMINGLLM; c.policy.sinks = 1;
        CHECK_RESULT(tu_open(&t, &c), KVE_OK);
        CHECK_RESULT(kve_keep_slots(&t.c, 0, 0, keep), KVE_ERROR_WRONG_POLICY);
        tu_close(&t);
    }
}

/* kve_window_scores against the reference: the last `window` queries, causal, summed per query
   head, reduced over the group; and its bad arguments */
static void window_scores_case(float scale, int d, double tolerance)
{
    kve_config c;
    tu_cache t;
    history h;
    int H = 6, Hk = 2, G = 3, n = 30, w = 7, s, kvh, g, j, m;
    float *q = (float *)tu_alloc((size_t)n * H * d * sizeof(float));
    float *out = (float *)tu_alloc((size_t)n * H * d * sizeof(float));
    float got[64];
    static const kve_reduce modes[] = {KVE_REDUCE_DEFAULT, KVE_REDUCE_MEAN, KVE_REDUCE_MAX, KVE_REDUCE_SUM};
    memset(&c, 0, sizeof c);
    c.n_layers = 1; c.n_heads = H; c.n_kv_heads = Hk; c.head_dim = d; c.capacity = 40;
    c.policy.kind = KVE_POLICY_SNAPKV; c.policy.window = w; c.policy.budget = 20;
    CHECK_RESULT(tu_open(&t, &c), KVE_OK);
    CHECK_RESULT(kve_window_scores(&t.c, 0, 0, KVE_REDUCE_MEAN, got), KVE_ERROR_NO_QUERIES);
    hist_init(&h, n, H, Hk, d);
    tu_seed(31);
    for (s = 0; s < n; s++) {
        int i = hist_next(&h, 2 * s, scale);
        kve_store(&t.c, 0, h.pos[i], hist_k(&h, i, 0), hist_v(&h, i, 0), NULL);
        memcpy(q + (size_t)s * H * d, hist_q(&h, i, 0), (size_t)H * d * sizeof(float));
    }
    {
        int64_t qpos[30];
        for (s = 0; s < n; s++) qpos[s] = h.pos[s];
        CHECK_RESULT(kve_prefill(&t.c, 0, n, q, qpos, out), KVE_OK);
    }
    for (m = 0; m < 4; m++)
        for (kvh = 0; kvh < Hk; kvh++) {
            double rows[3][30], e = 0;
            const float *kp[30], *vp[30];
            double kpos[30], probs[30];
            unsigned char vis[30];
            CHECK_RESULT(kve_window_scores(&t.c, 0, kvh, modes[m], got), KVE_OK);
            memset(rows, 0, sizeof rows);
            for (j = 0; j < n; j++) {
                int i = hist_find(&h, kve_slot_position(&t.c, 0, kvh, j));
                kp[j] = hist_k(&h, i, kvh); vp[j] = hist_v(&h, i, kvh); kpos[j] = (double)h.pos[i];
            }
            for (g = 0; g < G; g++)
                for (s = n - w; s < n; s++) {
                    for (j = 0; j < n; j++) vis[j] = kpos[j] <= h.pos[s];
                    ref_attn(&c, hist_q(&h, s, kvh * G + g), (double)h.pos[s], kp, vp, kpos, vis, n, NULL, probs);
                    for (j = 0; j < n; j++) rows[g][j] += probs[j];
                }
            for (j = 0; j < n; j++) {
                double a = rows[0][j];
                for (g = 1; g < G; g++)
                    a = modes[m] == KVE_REDUCE_MAX ? fmax(a, rows[g][j]) : a + rows[g][j];
                if (modes[m] == KVE_REDUCE_MEAN || modes[m] == KVE_REDUCE_DEFAULT) a /= G;
                e = fmax(e, isfinite(got[j]) ? fabs(got[j] - a) : INFINITY);
            }
            CHECK(e < tolerance, "window scores (|q|, |k| ~ %g, head_dim %d) mode %d head %d: error %g",
                  scale, d, (int)modes[m], kvh, e);
        }
    CHECK_RESULT(kve_window_scores(&t.c, 0, Hk, KVE_REDUCE_MEAN, got), KVE_ERROR_INDEX_OUT_OF_RANGE);
    CHECK_RESULT(kve_window_scores(&t.c, 0, -1, KVE_REDUCE_MEAN, got), KVE_ERROR_INDEX_OUT_OF_RANGE);
    CHECK_RESULT(kve_window_scores(&t.c, 1, 0, KVE_REDUCE_MEAN, got), KVE_ERROR_INDEX_OUT_OF_RANGE);
    CHECK_RESULT(kve_window_scores(&t.c, 0, 0, (kve_reduce)9, got), KVE_ERROR_INVALID_ENUM);
    CHECK(kve_key(&t.c, 0, 0, 40) == NULL && kve_value(&t.c, 0, 0, 40) == NULL && kve_key(&t.c, 0, 0, 39) != NULL,
          "kve_key/kve_value: slots up to capacity - 1");
    free(q); free(out);
    hist_free(&h);
    tu_close(&t);
}

static void test_window_scores_reference(void)
{
    window_scores_case(1.0f, 16, 1e-5);
    window_scores_case(30.0f, 64, 1e-3); /* logits in the hundreds: far beyond expf's range */
}

/* SnapKV written as a user policy from the public blocks gives the built-in selection */
typedef struct blocks_policy { int32_t budget, window, kernel; } blocks_policy;

static kve_result blocks_compress(kve_cache *c, int32_t l, void *user)
{
    const blocks_policy *p = (const blocks_policy *)user;
    int32_t h, n, j, i, order[256], prefix;
    float score[256], seq[256], pooled[256];
    unsigned char keep[256], keep_seq[256];
    kve_result r;
    for (h = 0; h < c->cfg.n_kv_heads; h++) {
        n = kve_length(c, l, h);
        if (n < p->budget) continue;
        if ((r = kve_window_scores(c, l, h, KVE_REDUCE_MEAN, score)) != KVE_OK) return r;
        for (j = 0; j < n; j++) order[j] = j; /* slots by position (insertion sort: small n) */
        for (j = 1; j < n; j++)
            for (i = j; i > 0 && kve_slot_position(c, l, h, order[i]) < kve_slot_position(c, l, h, order[i - 1]); i--) {
                int32_t x = order[i]; order[i] = order[i - 1]; order[i - 1] = x;
            }
        prefix = n - p->window;
        for (j = 0; j < prefix; j++) seq[j] = score[order[j]];
        if ((r = kve_pool1d(seq, prefix, p->kernel, KVE_POOL_MAX, pooled)) != KVE_OK) return r;
        if ((r = kve_select_top(pooled, prefix, p->budget - p->window, keep_seq, order + n)) != KVE_OK) return r;
        memset(keep, 0, (size_t)n);
        for (j = 0; j < n; j++) keep[order[j]] = j >= prefix || keep_seq[j];
        if ((r = kve_keep_slots(c, l, h, keep)) != KVE_OK) return r;
    }
    return KVE_OK;
}
static const kve_policy_vtable blocks_vtable = {"snapkv-from-blocks", 0, never_make_room, blocks_compress};

static void test_policy_from_blocks(void)
{
    int H = 8, Hk = 2, d = 16, n = 100, s, h, j, l;
    blocks_policy bp = {40, 8, 5};
    int64_t qpos[20];
    kve_config cb, cs;
    tu_cache tb, ts;
    float *q = (float *)tu_alloc((size_t)n * H * d * sizeof(float));
    float *k = (float *)tu_alloc((size_t)n * Hk * d * sizeof(float));
    float *out = (float *)tu_alloc((size_t)n * H * d * sizeof(float));
    memset(&cb, 0, sizeof cb);
    cb.n_layers = 2; cb.n_heads = H; cb.n_kv_heads = Hk; cb.head_dim = d; cb.capacity = 128;
    cs = cb;
    cb.policy.kind = KVE_POLICY_CUSTOM; cb.policy.custom = &blocks_vtable; cb.policy.custom_user = &bp;
    cb.policy.window = bp.window; /* the queries a custom policy records */
    cs.policy.kind = KVE_POLICY_SNAPKV; cs.policy.budget = bp.budget; cs.policy.window = bp.window;
    cs.policy.kernel = bp.kernel; cs.policy.pooling = KVE_POOL_MAX;
    CHECK_RESULT(tu_open(&tb, &cb), KVE_OK);
    CHECK_RESULT(tu_open(&ts, &cs), KVE_OK);
    tu_seed(61);
    tu_fill(q, (size_t)n * H * d, 1.5f);
    tu_fill(k, (size_t)n * Hk * d, 1.5f);
    for (l = 0; l < 2; l++) {
        for (s = 0; s < n; s++) {
            kve_store(&tb.c, l, 3 * s, k + (size_t)s * Hk * d, k + (size_t)s * Hk * d, NULL);
            kve_store(&ts.c, l, 3 * s, k + (size_t)s * Hk * d, k + (size_t)s * Hk * d, NULL);
        }
        /* decode-style attention first (recorded queries), then the window in a prefill */
        CHECK_RESULT(kve_attend(&tb.c, l, q, out), KVE_OK);
        CHECK_RESULT(kve_attend(&ts.c, l, q, out), KVE_OK);
        for (s = 0; s < 20; s++) qpos[s] = 3 * (n - 20 + s);
        CHECK_RESULT(kve_prefill(&tb.c, l, 20, q + (size_t)(n - 20) * H * d, qpos, out), KVE_OK);
        CHECK_RESULT(kve_prefill(&ts.c, l, 20, q + (size_t)(n - 20) * H * d, qpos, out), KVE_OK);
    }
    CHECK_RESULT(kve_compress_all(&tb.c), KVE_OK);
    CHECK_RESULT(kve_compress_all(&ts.c), KVE_OK);
    for (l = 0; l < 2; l++)
        for (h = 0; h < Hk; h++) {
            int same = kve_length(&tb.c, l, h) == kve_length(&ts.c, l, h) && kve_length(&ts.c, l, h) == bp.budget;
            for (j = 0; same && j < bp.budget; j++) {
                int x, found = 0;
                for (x = 0; x < bp.budget; x++)
                    found |= kve_slot_position(&tb.c, l, h, j) == kve_slot_position(&ts.c, l, h, x);
                same = found;
            }
            CHECK(same, "layer %d head %d: SnapKV from the blocks keeps other tokens than the built-in", l, h);
        }
    free(q); free(k); free(out);
    tu_close(&tb); tu_close(&ts);
}

/* ---- SnapKV decode-time eviction against a reference scoring ------------------------------ */
static void decode_evict_case(kve_key_storage keys, int evict_batch)
{
    int H = 4, Hk = 2, G = 2, d = 16, w = 6, budget = 24, cap = 48, prompt = 40, steps = 80;
    int s, kvh, j, g, x, evictions = 0;
    kve_config c;
    tu_cache t;
    history h;
    int *qidx = (int *)tu_alloc((size_t)(prompt + steps) * sizeof(int));
    int nq = 0;
    float *qbuf = (float *)tu_alloc((size_t)prompt * H * d * sizeof(float));
    float *out = (float *)tu_alloc((size_t)prompt * H * d * sizeof(float));
    memset(&c, 0, sizeof c);
    c.n_layers = 1; c.n_heads = H; c.n_kv_heads = Hk; c.head_dim = d; c.capacity = cap;
    c.key_storage = keys;
    c.policy.kind = KVE_POLICY_SNAPKV; c.policy.budget = budget; c.policy.window = w;
    c.policy.kernel = 3; c.policy.decode = KVE_DECODE_EVICT; c.policy.evict_batch = evict_batch;
    CHECK_RESULT(tu_open(&t, &c), KVE_OK);
    hist_init(&h, prompt + steps, H, Hk, d);
    tu_seed((unsigned long long)(keys * 10 + evict_batch));
    for (s = 0; s < prompt; s++) {
        int i = hist_next(&h, s, 1.5f);
        kve_store(&t.c, 0, s, hist_k(&h, i, 0), hist_v(&h, i, 0), NULL);
        memcpy(qbuf + (size_t)s * H * d, hist_q(&h, i, 0), (size_t)H * d * sizeof(float));
    }
    CHECK_RESULT(kve_prefill(&t.c, 0, prompt, qbuf, NULL, out), KVE_OK);
    for (s = 0; s < prompt; s++) qidx[nq++] = s;
    CHECK_RESULT(kve_compress(&t.c, 0), KVE_OK);
    for (s = prompt; s < prompt + steps; s++) {
        int n = kve_length(&t.c, 0, 0), i, target = budget - evict_batch < w ? w : budget - evict_batch;
        int64_t expect_min_kept[2];
        double worst_margin = 0;
        int64_t before[2][32];
        double score[2][32];
        if (n >= budget) {
            /* reference: the last w queries score what each head holds (causal, at their positions) */
            for (kvh = 0; kvh < Hk; kvh++) {
                const float *kp[32], *vp[32];
                double kpos[32], probs[32], sum[2][32], red[32], pooled[32];
                unsigned char vis[32];
                int ord[32], m = kve_length(&t.c, 0, kvh);
                memset(sum, 0, sizeof sum);
                for (j = 0; j < m; j++) {
                    int hi = hist_find(&h, kve_slot_position(&t.c, 0, kvh, j));
                    before[kvh][j] = h.pos[hi];
                    kp[j] = hist_k(&h, hi, kvh); vp[j] = hist_v(&h, hi, kvh); kpos[j] = (double)h.pos[hi];
                }
                for (g = 0; g < G; g++)
                    for (x = nq - w; x < nq; x++) {
                        int qi = qidx[x];
                        for (j = 0; j < m; j++) vis[j] = kpos[j] <= h.pos[qi];
                        ref_attn(&c, hist_q(&h, qi, kvh * G + g), (double)h.pos[qi], kp, vp, kpos, vis, m, NULL, probs);
                        for (j = 0; j < m; j++) sum[g][j] += probs[j];
                    }
                /* in position order; the newest w are protected; pool (max, kernel 3) the rest */
                for (j = 0; j < m; j++) ord[j] = j;
                for (j = 1; j < m; j++)
                    for (x = j; x > 0 && kpos[ord[x]] < kpos[ord[x - 1]]; x--) { int y = ord[x]; ord[x] = ord[x - 1]; ord[x - 1] = y; }
                for (j = 0; j < m - w; j++) red[j] = (sum[0][ord[j]] + sum[1][ord[j]]) / 2;
                for (j = 0; j < m - w; j++) {
                    double a = -INFINITY;
                    for (x = j - 1; x <= j + 1; x++)
                        if (x >= 0 && x < m - w) a = fmax(a, red[x]);
                    pooled[j] = a;
                }
                for (j = 0; j < m; j++) score[kvh][j] = INFINITY;
                for (j = 0; j < m - w; j++) score[kvh][ord[j]] = pooled[j];
                expect_min_kept[kvh] = h.pos[hist_find(&h, (int64_t)kpos[ord[m - w]])];
            }
        }
        i = hist_next(&h, s, 1.5f);
        CHECK_RESULT(kve_store(&t.c, 0, s, hist_k(&h, i, 0), hist_v(&h, i, 0), NULL), KVE_OK);
        if (n >= budget) {
            evictions++;
            for (kvh = 0; kvh < Hk; kvh++) {
                double min_kept = INFINITY, max_gone = -INFINITY;
                int m = kve_length(&t.c, 0, kvh), newest_kept = 1;
                CHECK(m == target + 1, "decode evict step %d: %d kept, expected %d", s, m, target + 1);
                for (j = 0; j < n; j++) {
                    int kept = 0;
                    for (x = 0; x < m; x++) kept |= kve_slot_position(&t.c, 0, kvh, x) == before[kvh][j];
                    if (before[kvh][j] >= expect_min_kept[kvh]) newest_kept &= kept;
                    else if (kept) min_kept = fmin(min_kept, score[kvh][j]);
                    else max_gone = fmax(max_gone, score[kvh][j]);
                }
                CHECK(newest_kept, "decode evict step %d head %d: the newest window was not kept", s, kvh);
                worst_margin = fmin(worst_margin, min_kept - max_gone);
            }
            CHECK(worst_margin > -1e-5, "decode evict (keys %d batch %d) step %d: a kept token scores %g below an evicted one",
                  (int)keys, evict_batch, s, -worst_margin);
        }
        CHECK_RESULT(kve_attend(&t.c, 0, hist_q(&h, i, 0), out), KVE_OK);
        qidx[nq++] = i;
    }
    CHECK(evictions >= 3, "decode evict: only %d evictions", evictions);
    CHECK_RESULT(kve_check(&t.c), KVE_OK);
    free(qidx); free(qbuf); free(out);
    hist_free(&h);
    tu_close(&t);
}

static void test_decode_evict_reference(void)
{
    decode_evict_case(KVE_KEYS_POST_ROPE, 5);
    decode_evict_case(KVE_KEYS_PRE_ROPE, 5);
    decode_evict_case(KVE_KEYS_POST_ROPE, 1);
    decode_evict_case(KVE_KEYS_POST_ROPE, 30); /* more than budget - window: keeps the window */
    /* evict_batch = window: the decode steps' own weights are the window scores (no re-scoring) */
    decode_evict_case(KVE_KEYS_POST_ROPE, 6);
    decode_evict_case(KVE_KEYS_PRE_ROPE, 6);
}

/* ---- more refusals and acceptances -------------------------------------------------------- */
static kve_result init_with(const kve_config *c, kve_buffers *b, void *mem, size_t bytes)
{
    kve_cache cache;
    return kve_cache_init(c, b, mem, bytes, &cache);
}

static void test_enums_and_edges(void)
{
    kve_config c, base;
    size_t bytes;
    memset(&base, 0, sizeof base);
    base.n_layers = 1; base.n_heads = 2; base.head_dim = 8; base.capacity = 16;
    /* one past the last value of every enum field */
    c = base; c.rope_layout = (kve_rope_layout)(KVE_ROPE_NONE + 1);
    CHECK_RESULT(kve_cache_size(&c, &bytes), KVE_ERROR_INVALID_ENUM);
    c = base; c.key_storage = (kve_key_storage)(KVE_KEYS_PRE_ROPE + 1);
    CHECK_RESULT(kve_cache_size(&c, &bytes), KVE_ERROR_INVALID_ENUM);
    c = base; c.policy.kind = (kve_policy_kind)(KVE_POLICY_SIMLAYERKV + 1);
    CHECK_RESULT(kve_cache_size(&c, &bytes), KVE_ERROR_INVALID_ENUM);
    c = base; c.policy.allocation = (kve_allocation)(KVE_ALLOCATION_ADAKV + 1);
    CHECK_RESULT(kve_cache_size(&c, &bytes), KVE_ERROR_INVALID_ENUM);
    c = base; c.policy.allocation = (kve_allocation)-1;
    CHECK_RESULT(kve_cache_size(&c, &bytes), KVE_ERROR_INVALID_ENUM);
    c = base; c.policy.pooling = (kve_pooling)(KVE_POOL_NONE + 1);
    CHECK_RESULT(kve_cache_size(&c, &bytes), KVE_ERROR_INVALID_ENUM);
    c = base; c.policy.gqa = (kve_reduce)(KVE_REDUCE_SUM + 1);
    CHECK_RESULT(kve_cache_size(&c, &bytes), KVE_ERROR_INVALID_ENUM);
    c = base; c.policy.pos_shift = (kve_pos_shift)(KVE_POS_SHIFT_OFF + 1);
    CHECK_RESULT(kve_cache_size(&c, &bytes), KVE_ERROR_INVALID_ENUM);
    c = base; c.policy.decode = (kve_decode_mode)(KVE_DECODE_EVICT + 1);
    CHECK_RESULT(kve_cache_size(&c, &bytes), KVE_ERROR_INVALID_ENUM);
    /* the pooling kernel is SnapKV's and PyramidKV's: H2O takes any */
    c = base; c.policy.kind = KVE_POLICY_H2O; c.policy.budget = 10; c.policy.window = 4; c.policy.kernel = 4;
    CHECK_RESULT(kve_cache_size(&c, &bytes), KVE_OK);
    c.policy.kind = KVE_POLICY_SNAPKV;
    CHECK_RESULT(kve_cache_size(&c, &bytes), KVE_ERROR_EVEN_KERNEL);
    /* without RoPE nothing rotates, whatever rope_dims says */
    c = base; c.rope_layout = KVE_ROPE_NONE; c.head_dim = 7; c.rope_dims = 5;
    CHECK_RESULT(kve_cache_size(&c, &bytes), KVE_OK);
    {
        /* custom strides: a dimension of one element may have any stride, even 0 */
        float k[8 * 5], v[8 * 5];
        unsigned char mem[65536];
        kve_buffers b;
        c = base; c.n_heads = 1; c.capacity = 5;
        CHECK_RESULT(kve_cache_size(&c, &bytes), KVE_OK);
        memset(&b, 0, sizeof b);
        b.k = k; b.v = v; b.k_bytes = b.v_bytes = sizeof(float) * (40); b.layout = KVE_LAYOUT_STRIDES;
        b.k_layer_stride = b.v_layer_stride = f32_stride(0); b.k_head_stride = b.v_head_stride = f32_stride(0); b.k_slot_stride = b.v_slot_stride = f32_stride(8);
        CHECK_RESULT(init_with(&c, &b, mem, sizeof mem), KVE_OK);
        b.k_slot_stride = b.v_slot_stride = f32_stride(7);
        CHECK_RESULT(init_with(&c, &b, mem, sizeof mem), KVE_ERROR_OVERLAPPING_STRIDES);
        b.k_slot_stride = b.v_slot_stride = f32_stride(8); b.v_bytes = sizeof(float) * (39);
        CHECK_RESULT(init_with(&c, &b, mem, sizeof mem), KVE_ERROR_BUFFER_TOO_SMALL);
        b.v_bytes = sizeof(float) * (40);
        CHECK_RESULT(init_with(&c, &b, mem, bytes - 1), KVE_ERROR_MEMORY_TOO_SMALL);
        CHECK_RESULT(init_with(&c, &b, mem, bytes), KVE_OK);
    }
    {
        /* the bookkeeping memory may overlap neither buffer */
        static double pool_mem[4096];
        float *pool = (float *)pool_mem; /* K at 0, V at 2048, free from 4096 on */
        kve_buffers b;
        c = base; c.n_heads = 1; c.capacity = 5;
        CHECK_RESULT(kve_cache_size(&c, &bytes), KVE_OK);
        CHECK(bytes < 4096 * sizeof(float), "a small cache: %zu bytes", bytes);
        memset(&b, 0, sizeof b);
        b.k = pool; b.v = pool + 2048; b.k_bytes = b.v_bytes = sizeof(float) * (40);
        CHECK_RESULT(init_with(&c, &b, pool + 4096, bytes), KVE_OK);
        CHECK_RESULT(init_with(&c, &b, pool + 2048 + 32, bytes), KVE_ERROR_OVERLAPPING_BUFFERS); /* in V */
        CHECK_RESULT(init_with(&c, &b, pool + 32, bytes), KVE_ERROR_OVERLAPPING_BUFFERS);        /* in K */
        {
            /* ends a few bytes into V (rounded down to the alignment the memory needs) */
            uintptr_t at = ((uintptr_t)(pool + 2048) + 8 - bytes) & ~(uintptr_t)7;
            CHECK_RESULT(init_with(&c, &b, (void *)at, bytes), KVE_ERROR_OVERLAPPING_BUFFERS);
        }
        b.v = pool + 30;
        CHECK_RESULT(init_with(&c, &b, pool + 4096, bytes), KVE_ERROR_OVERLAPPING_BUFFERS); /* K and V */
    }
}

/* the checker: the newest token is always kept */
static void test_checker_newest(void)
{
    kve_config c;
    tu_cache t;
    float k[8], v[8];
    int s;
    memset(&c, 0, sizeof c);
    c.n_layers = 1; c.n_heads = 1; c.head_dim = 8; c.capacity = 10;
    CHECK_RESULT(tu_open(&t, &c), KVE_OK);
    tu_fill(k, 8, 1.0f); tu_fill(v, 8, 1.0f);
    for (s = 0; s < 5; s++) kve_store(&t.c, 0, 2 * s, k, v, NULL);
    CHECK_RESULT(kve_check(&t.c), KVE_OK);
    t.c.pos[4] = 7; /* positions still unique and not after the newest (8), which is now missing */
    CHECK_RESULT(kve_check(&t.c), KVE_ERROR_CORRUPT);
    t.c.pos[4] = 8;
    t.c.pos[3] = 4; /* a duplicate position */
    CHECK_RESULT(kve_check(&t.c), KVE_ERROR_CORRUPT);
    t.c.pos[3] = 6;
    for (s = 5; s < 10; s++) { /* a position in any slot past the length */
        t.c.pos[s] = 3;
        CHECK_RESULT(kve_check(&t.c), KVE_ERROR_CORRUPT);
        t.c.pos[s] = -1;
    }
    CHECK_RESULT(kve_check(&t.c), KVE_OK);
    tu_close(&t);
}

/* H2O: a prompt stored above the budget and never compressed is shrunk to the budget by the next
   token (the window - 1 newest stay, with the new one the window) */
static void test_h2o_overfull(void)
{
    kve_config c;
    tu_cache t;
    float q[32], k[16], v[16], out[32];
    int s, h, j, w = 5;
    memset(&c, 0, sizeof c);
    c.n_layers = 1; c.n_heads = 4; c.n_kv_heads = 2; c.head_dim = 8; c.capacity = 40;
    c.policy.kind = KVE_POLICY_H2O; c.policy.budget = 20; c.policy.window = w;
    CHECK_RESULT(tu_open(&t, &c), KVE_OK);
    tu_seed(4);
    for (s = 0; s < 30; s++) {
        tu_fill(k, 16, 1.0f); tu_fill(v, 16, 1.0f);
        CHECK_RESULT(kve_store(&t.c, 0, s, k, v, NULL), KVE_OK);
    }
    tu_fill(q, 32, 1.0f);
    CHECK_RESULT(kve_attend(&t.c, 0, q, out), KVE_OK);
    CHECK(kve_length(&t.c, 0, 0) == 30, "an uncompressed prompt may exceed the budget");
    for (; s < 34; s++) {
        tu_fill(k, 16, 1.0f); tu_fill(v, 16, 1.0f);
        CHECK_RESULT(kve_store(&t.c, 0, s, k, v, NULL), KVE_OK);
        CHECK_RESULT(kve_attend(&t.c, 0, q, out), KVE_OK);
        for (h = 0; h < 2; h++) {
            int newest = 0;
            CHECK(kve_length(&t.c, 0, h) == 20, "H2O step %d head %d: %d tokens, budget 20", s, h,
                  kve_length(&t.c, 0, h));
            for (j = 0; j < kve_length(&t.c, 0, h); j++) newest += kve_slot_position(&t.c, 0, h, j) > s - w;
            CHECK(newest == w, "H2O step %d: %d of the %d newest kept", s, newest, w);
        }
    }
    CHECK_RESULT(kve_check(&t.c), KVE_OK);
    tu_close(&t);
}

/* kve_cache_reset gives a cache that behaves exactly like a new one, for every policy */
static void test_reset_is_fresh(void)
{
    static const kve_policy_kind kinds[] = {KVE_POLICY_SNAPKV, KVE_POLICY_PYRAMIDKV, KVE_POLICY_H2O,
                                            KVE_POLICY_STREAMINGLLM, KVE_POLICY_FULL};
    static run_result a, b;
    int i;
    for (i = 0; i < 5; i++) {
        kve_config c;
        tu_cache t;
        float k[32], v[32], q[64], out[64];
        int s, l;
        memset(&c, 0, sizeof c);
        c.n_layers = 3; c.n_heads = 4; c.n_kv_heads = 2; c.head_dim = 16; c.capacity = 128;
        c.policy.kind = kinds[i];
        c.policy.budget = kinds[i] == KVE_POLICY_FULL ? 0 : 72;
        c.policy.decode = kinds[i] == KVE_POLICY_FULL ? KVE_DECODE_DEFAULT : KVE_DECODE_EVICT;
        c.key_storage = i % 2 ? KVE_KEYS_PRE_ROPE : KVE_KEYS_POST_ROPE;
        run_policy(&c, &a);
        /* dirty every part of a cache, reset it, and run the same sequence through it */
        CHECK_RESULT(tu_open(&t, &c), KVE_OK);
        tu_seed(99);
        for (s = 0; s < 127; s++)
            for (l = 0; l < 3; l++) {
                tu_fill(k, 32, 2.0f); tu_fill(v, 32, 2.0f); tu_fill(q, 64, 2.0f);
                if (kve_store(&t.c, l, 1000 + s, k, v, NULL) == KVE_OK) kve_attend(&t.c, l, q, out);
            }
        CHECK_RESULT(kve_cache_reset(&t.c), KVE_OK);
        run_policy_on(&t, &b);
        CHECK(memcmp(&a, &b, sizeof a) == 0, "policy %d: a reset cache differs from a new one", (int)kinds[i]);
        tu_close(&t);
    }
}

/* ---- sizes ---------------------------------------------------------------------------------- */
static void test_size_overflow(void)
{
    /* sink keys alone: 2^16 layers * 2^12 KV heads * 2^26 sinks * 2^10 floats = 2^64 */
    kve_config c;
    size_t bytes = 1;
    memset(&c, 0, sizeof c);
    c.n_layers = 65536; c.n_heads = 4096; c.head_dim = 1024; c.capacity = KVE_MAX_CAPACITY;
    c.policy.kind = KVE_POLICY_STREAMINGLLM; c.policy.sinks = 1 << 26;
    CHECK_RESULT(kve_cache_size(&c, &bytes), KVE_ERROR_SIZE_OVERFLOW);
    CHECK(bytes == 0, "a failed size query reports 0 bytes");
    c.policy.sinks = 1 << 10; /* 2^48 floats: large but representable */
    CHECK_RESULT(kve_cache_size(&c, &bytes), KVE_OK);
    CHECK(bytes > ((size_t)1 << 50), "a huge but valid cache: %zu bytes", bytes);
}

int main(void)
{
    test_rope_variants();
    test_rope_refused();
    test_streaming_shift();
    test_numeric_edges();
    test_prefill_after_decode();
    test_h2o_blind_query();
    test_manual_defaults();
    test_defaults_behave_as_written();
    test_pyramid_boundaries();
    test_budget_boundaries();
    test_compress_without_attention();
    test_h2o_window_and_ties();
    test_checker_ring();
    test_pool_reference();
    test_select_reference();
    test_keep_slots_moves_everything();
    test_window_scores_reference();
    test_policy_from_blocks();
    test_decode_evict_reference();
    test_size_overflow();
    test_enums_and_edges();
    test_checker_newest();
    test_h2o_overfull();
    test_reset_is_fresh();
    (void)ref_attend; (void)rel_err_ff; /* shared helpers this file has no use for */
    return tu_summary("test_properties");
}
