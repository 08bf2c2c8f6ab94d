/* Core tests: RoPE, the caller-owned cache, attention, and every error path. */
#define KVEVICT_IMPLEMENTATION
#include "kvevict.h"
#include "testutil.h"
#ifdef _OPENMP
#include <omp.h>
#endif

static kve_config rope_cfg(int d, int rot, kve_rope_layout layout)
{
    kve_config c;
    memset(&c, 0, sizeof c);
    c.head_dim = d;
    c.rope_dims = rot;
    c.rope_layout = layout;
    return c;
}

static void test_rope_closed_form(void)
{
    int li, d = 64, i;
    kve_rope_layout layouts[2] = {KVE_ROPE_INTERLEAVED, KVE_ROPE_HALF};
    int64_t positions[5] = {0, 1, 17, 4095, 100000};
    for (li = 0; li < 2; li++) {
        int pi;
        for (pi = 0; pi < 5; pi++) {
            kve_config c = rope_cfg(d, 0, layouts[li]);
            float x[64];
            double ref[64], err = 0;
            tu_fill(x, 64, 1.0f);
            for (i = 0; i < d; i++) ref[i] = x[i];
            ref_rope(ref, d, d, li + 1, 10000.0, (double)positions[pi]);
            CHECK_RESULT(kve_rope_apply(&c, x, positions[pi]), KVE_OK);
            for (i = 0; i < d; i++) err = fmax(err, fabs(x[i] - ref[i]));
            CHECK(err < 1e-5, "rope layout %d pos %lld: error %g", li, (long long)positions[pi], err);
        }
    }
}

static void test_rope_group(void)
{
    /* R(a) R(b) = R(a+b), and shifting by delta moves a rotated vector from p to p+delta */
    int li, i;
    for (li = 0; li < 2; li++) {
        kve_config c = rope_cfg(32, 0, li ? KVE_ROPE_HALF : KVE_ROPE_INTERLEAVED);
        float x[32], y[32], z[32];
        double e1 = 0, e2 = 0;
        tu_fill(x, 32, 1.0f);
        memcpy(y, x, sizeof x);
        memcpy(z, x, sizeof x);
        kve_rope_apply(&c, x, 123);
        kve_rope_apply(&c, x, 456);
        kve_rope_apply(&c, y, 579);
        for (i = 0; i < 32; i++) e1 = fmax(e1, fabs(x[i] - y[i]));
        CHECK(e1 < 1e-5, "R(123)R(456) != R(579): %g", e1);
        kve_rope_apply(&c, z, 1000);
        CHECK_RESULT(kve_rope_shift(&c, z, -421), KVE_OK);
        for (i = 0; i < 32; i++) e2 = fmax(e2, fabs(z[i] - y[i]));
        CHECK(e2 < 1e-5, "R(-421)R(1000) != R(579): %g", e2);
    }
}

static void test_rope_half_vs_interleaved(void)
{
    /* the half layout on a de-interleaved vector equals the interleaved layout, re-ordered */
    kve_config ci = rope_cfg(16, 0, KVE_ROPE_INTERLEAVED), ch = rope_cfg(16, 0, KVE_ROPE_HALF);
    float x[16], y[16];
    int i;
    double e = 0;
    tu_fill(x, 16, 1.0f);
    for (i = 0; i < 8; i++) {
        y[i] = x[2 * i];
        y[i + 8] = x[2 * i + 1];
    }
    kve_rope_apply(&ci, x, 77);
    kve_rope_apply(&ch, y, 77);
    for (i = 0; i < 8; i++) e = fmax(e, fmax(fabs(y[i] - x[2 * i]), fabs(y[i + 8] - x[2 * i + 1])));
    CHECK(e < 1e-6, "half vs interleaved: %g", e);
}

static void test_rope_partial(void)
{
    int li, i;
    for (li = 0; li < 2; li++) {
        kve_config c = rope_cfg(32, 16, li ? KVE_ROPE_HALF : KVE_ROPE_INTERLEAVED);
        float x[32], orig[32];
        double ref[32], e = 0;
        tu_fill(x, 32, 1.0f);
        memcpy(orig, x, sizeof x);
        for (i = 0; i < 32; i++) ref[i] = x[i];
        ref_rope(ref, 32, 16, li + 1, 10000.0, 321.0);
        kve_rope_apply(&c, x, 321);
        for (i = 0; i < 32; i++) e = fmax(e, fabs(x[i] - ref[i]));
        CHECK(e < 1e-5, "partial rotary layout %d: %g", li, e);
        CHECK(memcmp(x + 16, orig + 16, 16 * sizeof(float)) == 0, "tail dims must stay unrotated");
    }
}

static void test_rope_large_positions(void)
{
    /* a key at 10^7 rotates as accurately as one at 10 (double-precision reference) */
    kve_config c = rope_cfg(128, 0, KVE_ROPE_INTERLEAVED);
    int64_t pos[2] = {10, 10000000};
    double err[2];
    int pi, i;
    for (pi = 0; pi < 2; pi++) {
        float x[128];
        double ref[128], e = 0;
        tu_seed(5);
        tu_fill(x, 128, 1.0f);
        for (i = 0; i < 128; i++) ref[i] = x[i];
        ref_rope(ref, 128, 128, 1, 10000.0, (double)pos[pi]);
        kve_rope_apply(&c, x, pos[pi]);
        for (i = 0; i < 128; i++) e = fmax(e, fabs(x[i] - ref[i]));
        err[pi] = e;
    }
    CHECK(err[1] < 1e-6 && err[1] < 4 * err[0] + 1e-7, "rope at 1e7: error %g (at 10: %g)", err[1], err[0]);
    {
        /* linear scaling: factor 4 at position 4p equals factor 1 at p */
        kve_config c4 = c;
        float x[128], y[128];
        double e = 0;
        c4.rope_linear_factor = 4.0;
        tu_fill(x, 128, 1.0f);
        memcpy(y, x, sizeof x);
        kve_rope_apply(&c4, x, 4000);
        kve_rope_apply(&c, y, 1000);
        for (i = 0; i < 128; i++) e = fmax(e, fabs(x[i] - y[i]));
        CHECK(e < 1e-6, "linear factor: %g", e);
    }
}

/* ---- attention against a naive double reference ----------------------------------------- */
typedef struct tok { float *q, *k, *v; } tok;

/* user policy for the test: overwrite a pseudo-random slot, so slot order gets scrambled */
static kve_result scramble_make_room(kve_cache *c, int32_t layer, int32_t *ws, void *user)
{
    int32_t h, n = kve_length(c, layer, 0);
    unsigned *state = (unsigned *)user;
    *state = *state * 1103515245u + 12345u;
    for (h = 0; h < c->cfg.n_kv_heads; h++) ws[h] = (int32_t)((*state >> 8) % (unsigned)(n - 1));
    return KVE_OK;
}
static const kve_policy_vtable scramble_vtable = {"scramble", 0, scramble_make_room, NULL};

static void attention_case(int H, int Hk, int d, kve_key_storage keys, int scramble,
                           kve_rope_layout layout, double *worst)
{
    kve_config cfg;
    tu_cache t;
    int cap = 48, steps = scramble ? 120 : 40, s, h, j, G = H / Hk;
    unsigned state = 7;
    float *q = (float *)tu_alloc((size_t)H * d * sizeof(float));
    float *k = (float *)tu_alloc((size_t)Hk * d * sizeof(float));
    float *v = (float *)tu_alloc((size_t)Hk * d * sizeof(float));
    float *out = (float *)tu_alloc((size_t)H * d * sizeof(float));
    float **pk = (float **)tu_alloc((size_t)steps * Hk * sizeof(float *));
    float **pv = (float **)tu_alloc((size_t)steps * Hk * sizeof(float *));
    double *ref = (double *)tu_alloc((size_t)d * sizeof(double));
    memset(&cfg, 0, sizeof cfg);
    cfg.n_layers = 2; cfg.n_heads = H; cfg.n_kv_heads = Hk; cfg.head_dim = d; cfg.capacity = cap;
    cfg.key_storage = keys;
    cfg.rope_layout = layout;
    if (scramble) {
        cfg.policy.kind = KVE_POLICY_CUSTOM;
        cfg.policy.custom = &scramble_vtable;
        cfg.policy.custom_user = &state;
    }
    CHECK_RESULT(tu_open(&t, &cfg), KVE_OK);
    tu_seed((unsigned long long)(H * 1000 + Hk * 10 + d + keys + scramble));
    for (s = 0; s < steps; s++) {
        int64_t pos = 3 + 2 * s; /* positions need not be consecutive */
        tu_fill(q, (size_t)H * d, 1.0f);
        tu_fill(k, (size_t)Hk * d, 1.0f);
        tu_fill(v, (size_t)Hk * d, 1.0f);
        for (h = 0; h < Hk; h++) {
            pk[s * Hk + h] = (float *)tu_alloc((size_t)d * sizeof(float));
            pv[s * Hk + h] = (float *)tu_alloc((size_t)d * sizeof(float));
            memcpy(pk[s * Hk + h], k + h * d, (size_t)d * sizeof(float));
            memcpy(pv[s * Hk + h], v + h * d, (size_t)d * sizeof(float));
        }
        CHECK_RESULT(kve_store(&t.c, 1, pos, k, v, NULL), KVE_OK);
        CHECK_RESULT(kve_attend(&t.c, 1, q, out), KVE_OK);
        if (s % 7 != 6 && s != steps - 1) continue;
        for (h = 0; h < H; h++) {
            int kvh = h / G, n = kve_length(&t.c, 1, kvh);
            const float **keys_ = (const float **)tu_alloc((size_t)n * sizeof(float *));
            const float **vals = (const float **)tu_alloc((size_t)n * sizeof(float *));
            double *kp = (double *)tu_alloc((size_t)n * sizeof(double));
            for (j = 0; j < n; j++) {
                int64_t p = kve_slot_position(&t.c, 1, kvh, j);
                int idx = (int)((p - 3) / 2);
                keys_[j] = pk[idx * Hk + kvh];
                vals[j] = pv[idx * Hk + kvh];
                kp[j] = (double)p;
            }
            ref_attend(q + h * d, (double)pos, keys_, vals, kp, n, d, layout == KVE_ROPE_HALF ? 2 : 1,
                       10000.0, ref, NULL);
            {
                double e = rel_err_fd(out + h * d, ref, (size_t)d);
                if (e > *worst) *worst = e;
            }
            free(keys_); free(vals); free(kp);
        }
    }
    if (scramble) {
        /* the scrambled cache really is out of order */
        int unordered = 0;
        for (j = 1; j < kve_length(&t.c, 1, 0); j++)
            unordered |= kve_slot_position(&t.c, 1, 0, j) < kve_slot_position(&t.c, 1, 0, j - 1);
        CHECK(unordered, "scrambled cache should hold slots out of position order");
    }
    CHECK_RESULT(kve_check(&t.c), KVE_OK);
    for (s = 0; s < steps * Hk; s++) { free(pk[s]); free(pv[s]); }
    free(pk); free(pv); free(q); free(k); free(v); free(out); free(ref);
    tu_close(&t);
}

static void test_attention_reference(void)
{
    struct { int H, Hk, d; } shapes[] = {{4, 4, 64}, {8, 2, 64}, {8, 1, 128}, {16, 2, 128}, {4, 4, 128}, {8, 8, 64}};
    int i, keys, scramble;
    for (i = 0; i < (int)(sizeof shapes / sizeof shapes[0]); i++)
        for (keys = 1; keys <= 2; keys++)
            for (scramble = 0; scramble <= 1; scramble++) {
                double worst = 0;
                attention_case(shapes[i].H, shapes[i].Hk, shapes[i].d, (kve_key_storage)keys,
                               scramble, i % 2 ? KVE_ROPE_HALF : KVE_ROPE_INTERLEAVED, &worst);
                CHECK(worst < 1e-5, "attention H=%d Hk=%d d=%d keys=%d scramble=%d: rel error %g",
                      shapes[i].H, shapes[i].Hk, shapes[i].d, keys, scramble, worst);
            }
}

/* pre-RoPE and post-RoPE storage, and the three layouts, give the same outputs */
static void test_storage_and_layouts_agree(void)
{
    int H = 8, Hk = 2, d = 64, cap = 64, steps = 60, s, mode;
    float q[512], k[128], v[128], out[4][512];
    kve_cache caches[4];
    void *mems[4];
    float *bufs[8];
    kve_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.n_layers = 3; cfg.n_heads = H; cfg.n_kv_heads = Hk; cfg.head_dim = d; cfg.capacity = cap;
    for (mode = 0; mode < 4; mode++) {
        kve_config c = cfg;
        kve_buffers b;
        size_t floats, bytes;
        memset(&b, 0, sizeof b);
        c.key_storage = mode == 1 ? KVE_KEYS_PRE_ROPE : KVE_KEYS_POST_ROPE;
        f32_buffer_floats(&c, KVE_LAYOUT_DEFAULT, &floats);
        if (mode == 3) {
            /* padded custom strides: [layer][kv_head][slot] with 8 spare floats per vector */
            b.layout = KVE_LAYOUT_STRIDES;
            size_t slot = (size_t)d + 8, head = slot * cap + 16, layer = head * Hk;
            b.k_slot_stride = b.v_slot_stride = f32_stride(slot);
            b.k_head_stride = b.v_head_stride = f32_stride(head);
            b.k_layer_stride = b.v_layer_stride = f32_stride(layer);
            floats = layer * 3;
        } else if (mode == 2) {
            b.layout = KVE_LAYOUT_HEAD_MAJOR;
        }
        kve_cache_size(&c, &bytes);
        bufs[2 * mode] = (float *)tu_alloc(floats * sizeof(float));
        bufs[2 * mode + 1] = (float *)tu_alloc(floats * sizeof(float));
        mems[mode] = tu_alloc(bytes);
        b.k = bufs[2 * mode]; b.v = bufs[2 * mode + 1]; b.k_bytes = sizeof(float) * (floats); b.v_bytes = sizeof(float) * (floats);
        CHECK_RESULT(kve_cache_init(&c, &b, mems[mode], bytes, &caches[mode]), KVE_OK);
    }
    tu_seed(11);
    for (s = 0; s < steps; s++) {
        double e = 0;
        tu_fill(q, 512, 1.0f); tu_fill(k, 128, 1.0f); tu_fill(v, 128, 1.0f);
        for (mode = 0; mode < 4; mode++) {
            kve_store(&caches[mode], 2, s, k, v, NULL);
            CHECK_RESULT(kve_attend(&caches[mode], 2, q, out[mode]), KVE_OK);
        }
        e = rel_err_ff(out[1], out[0], 512);
        CHECK(e < 1e-5, "pre vs post RoPE step %d: %g", s, e);
        CHECK(memcmp(out[2], out[0], sizeof out[0]) == 0, "head-major layout differs at step %d", s);
        CHECK(memcmp(out[3], out[0], sizeof out[0]) == 0, "strided layout differs at step %d", s);
    }
    for (mode = 0; mode < 4; mode++) { free(bufs[2 * mode]); free(bufs[2 * mode + 1]); free(mems[mode]); }
}

/* prefill is causal and equals token-by-token decode; attention weights are reported */
static void test_prefill_and_weights(void)
{
    int H = 4, Hk = 2, d = 16, n = 20, i, h, s;
    kve_config cfg;
    tu_cache a, b;
    float *q = (float *)tu_alloc((size_t)n * H * d * sizeof(float));
    float *k = (float *)tu_alloc((size_t)n * Hk * d * sizeof(float));
    float *v = (float *)tu_alloc((size_t)n * Hk * d * sizeof(float));
    float *out = (float *)tu_alloc((size_t)n * H * d * sizeof(float));
    float one[64], w[4 * 32], wk[2 * 32], wmax[2 * 32];
    kve_attend_options opt;
    memset(&cfg, 0, sizeof cfg);
    cfg.n_layers = 1; cfg.n_heads = H; cfg.n_kv_heads = Hk; cfg.head_dim = d; cfg.capacity = 32;
    tu_open(&a, &cfg);
    tu_open(&b, &cfg);
    tu_seed(3);
    tu_fill(q, (size_t)n * H * d, 1.0f); tu_fill(k, (size_t)n * Hk * d, 1.0f); tu_fill(v, (size_t)n * Hk * d, 1.0f);
    for (i = 0; i < n; i++) kve_store(&a.c, 0, 100 + i, k + i * Hk * d, v + i * Hk * d, NULL);
    CHECK_RESULT(kve_prefill(&a.c, 0, n, q, NULL, out), KVE_OK);
    for (i = 0; i < n; i++) {
        kve_store(&b.c, 0, 100 + i, k + i * Hk * d, v + i * Hk * d, NULL);
        kve_attend(&b.c, 0, q + i * H * d, one);
        CHECK(rel_err_ff(out + i * H * d, one, (size_t)H * d) < 1e-6, "prefill row %d differs from decode", i);
    }
    memset(&opt, 0, sizeof opt);
    opt.weights = w;
    kve_attend_ex(&b.c, 0, q, one, &opt);
    for (h = 0; h < H; h++) {
        double sum = 0;
        for (s = 0; s < n; s++) sum += w[h * 32 + s];
        CHECK(fabs(sum - 1.0) < 1e-5, "weights of head %d sum to %g", h, sum);
    }
    opt.weights = wk; opt.weights_reduce = KVE_REDUCE_MEAN;
    kve_attend_ex(&b.c, 0, q, one, &opt);
    opt.weights = wmax; opt.weights_reduce = KVE_REDUCE_MAX;
    kve_attend_ex(&b.c, 0, q, one, &opt);
    for (s = 0; s < n; s++) {
        CHECK(fabs(wk[s] - 0.5f * (w[s] + w[32 + s])) < 1e-6, "mean weight slot %d", s);
        CHECK(wmax[32 + s] == fmaxf(w[64 + s], w[96 + s]), "max weight slot %d", s);
    }
    free(q); free(k); free(v); free(out);
    tu_close(&a); tu_close(&b);
}

/* OpenMP: bit-identical outputs with 1 and 2 threads */
static void test_threads_identical(void)
{
#ifdef _OPENMP
    int H = 32, Hk = 8, d = 128, cap = 512, s, t;
    kve_config cfg;
    tu_cache c;
    float *q = (float *)tu_alloc((size_t)H * d * sizeof(float));
    float *k = (float *)tu_alloc((size_t)Hk * d * sizeof(float));
    float *out[2];
    memset(&cfg, 0, sizeof cfg);
    cfg.n_layers = 1; cfg.n_heads = H; cfg.n_kv_heads = Hk; cfg.head_dim = d; cfg.capacity = cap;
    tu_open(&c, &cfg);
    tu_seed(9);
    for (s = 0; s < cap; s++) {
        tu_fill(k, (size_t)Hk * d, 1.0f);
        kve_store(&c.c, 0, s, k, k, NULL);
    }
    tu_fill(q, (size_t)H * d, 1.0f);
    for (t = 0; t < 2; t++) {
        out[t] = (float *)tu_alloc((size_t)H * d * sizeof(float));
        omp_set_num_threads(t + 1);
        kve_attend(&c.c, 0, q, out[t]);
    }
    CHECK(memcmp(out[0], out[1], (size_t)H * d * sizeof(float)) == 0, "1 and 2 threads differ");
    free(out[0]); free(out[1]); free(q); free(k);
    tu_close(&c);
#endif
}

/* Flash-decoding: one KV head of 3500 tokens is cut into chunks of 1024 whose partial softmaxes
   are combined; the chunks get keys of different scales, so their maxima differ and every
   combination weight is used. Output and weights against the double reference, and the same
   bits for 1, 2 and 3 threads, in both key storages. */
static void test_split_attention(void)
{
    enum { H = 4, D = 64, CAP = 3500 };
    static const float chunk_scale[4] = {0.5f, 2.0f, 1.0f, 1.5f};
    static const int32_t threads[3] = {1, 2, 3};
    float *keys = (float *)tu_alloc((size_t)CAP * D * sizeof(float));
    float *vals = (float *)tu_alloc((size_t)CAP * D * sizeof(float));
    float *w = (float *)tu_alloc((size_t)H * CAP * sizeof(float));
    float *w_first = (float *)tu_alloc((size_t)H * CAP * sizeof(float));
    const float **kr = (const float **)tu_alloc((size_t)CAP * sizeof(float *));
    const float **vr = (const float **)tu_alloc((size_t)CAP * sizeof(float *));
    double *kpos = (double *)tu_alloc((size_t)CAP * sizeof(double));
    double *probs = (double *)tu_alloc((size_t)CAP * sizeof(double)), ref[D];
    float q[H * D], out[H * D], out_first[H * D];
    int keys_mode, ti, j, h;
    tu_seed(4242);
    for (j = 0; j < CAP; j++) {
        tu_fill(keys + (size_t)j * D, D, chunk_scale[j / 1024]);
        tu_fill(vals + (size_t)j * D, D, 1.0f);
        kr[j] = keys + (size_t)j * D;
        vr[j] = vals + (size_t)j * D;
        kpos[j] = (double)j;
    }
    tu_fill(q, H * D, 1.0f);
    for (keys_mode = 1; keys_mode <= 2; keys_mode++)
        for (ti = 0; ti < 3; ti++) {
            kve_config cfg;
            tu_cache t;
            kve_attend_options opt;
            memset(&cfg, 0, sizeof cfg);
            cfg.n_layers = 1; cfg.n_heads = H; cfg.n_kv_heads = 1; cfg.head_dim = D; cfg.capacity = CAP;
            cfg.key_storage = (kve_key_storage)keys_mode;
            cfg.n_threads = threads[ti];
            CHECK_RESULT(tu_open(&t, &cfg), KVE_OK);
            for (j = 0; j < CAP; j++) CHECK_RESULT(kve_store(&t.c, 0, j, kr[j], vr[j], NULL), KVE_OK);
            memset(&opt, 0, sizeof opt);
            opt.weights = w;
            CHECK_RESULT(kve_attend_ex(&t.c, 0, q, out, &opt), KVE_OK);
            if (ti == 0) {
                for (h = 0; h < H; h++) {
                    double e;
                    ref_attend(q + h * D, (double)(CAP - 1), kr, vr, kpos, CAP, D, 1, 10000.0, ref, probs);
                    e = rel_err_fd(out + h * D, ref, D);
                    CHECK(e < 1e-5, "split attention, keys %d, head %d: output rel error %g", keys_mode, h, e);
                    e = rel_err_fd(w + (size_t)h * CAP, probs, CAP);
                    CHECK(e < 1e-5, "split attention, keys %d, head %d: weights rel error %g", keys_mode, h, e);
                }
                memcpy(out_first, out, sizeof out);
                memcpy(w_first, w, (size_t)H * CAP * sizeof(float));
            } else {
                CHECK(memcmp(out, out_first, sizeof out) == 0, "split attention: n_threads %d changed the output",
                      (int)threads[ti]);
                CHECK(memcmp(w, w_first, (size_t)H * CAP * sizeof(float)) == 0,
                      "split attention: n_threads %d changed the weights", (int)threads[ti]);
            }
            tu_close(&t);
        }
    free(keys); free(vals); free(w); free(w_first); free(kr); free(vr); free(kpos); free(probs);
}

/* FNV-1a over the bits of n floats */
static void digest_floats(unsigned long long *digest, const float *x, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        unsigned int bits;
        memcpy(&bits, &x[i], 4);
        *digest = (*digest ^ bits) * 1099511628211ull;
    }
}

/* one KV head of 3000 tokens: the flash-decoding chunks, digested for tests/omp_identical.sh */
static void print_split_digest(void)
{
    int H = 8, d = 64, cap = 3000, s;
    kve_config cfg;
    tu_cache c;
    float q[8 * 64], k[64], v[64], out[8 * 64];
    unsigned long long digest = 1469598103934665603ull;
    memset(&cfg, 0, sizeof cfg);
    cfg.n_layers = 1; cfg.n_heads = H; cfg.n_kv_heads = 1; cfg.head_dim = d; cfg.capacity = cap;
    tu_open(&c, &cfg);
    tu_seed(11);
    for (s = 0; s < cap; s++) {
        tu_fill(k, (size_t)d, s < 1500 ? 1.0f : 2.0f);
        tu_fill(v, (size_t)d, 1.0f);
        CHECK_RESULT(kve_store(&c.c, 0, s, k, v, NULL), KVE_OK);
        if (s % 250 != 249) continue;
        tu_fill(q, (size_t)H * d, 1.0f);
        CHECK_RESULT(kve_attend(&c.c, 0, q, out), KVE_OK);
        digest_floats(&digest, out, (size_t)H * d);
    }
    printf("attention digest (one KV head in chunks) %016llx\n", digest);
    tu_close(&c);
}

/* a bit-exact digest of a large attention (GQA 4:1, 512 slots, scrambled by H2O eviction), printed
   so that builds with and without OpenMP can be compared (tests/omp_identical.sh) */
static void print_attention_digest(void)
{
    int H = 32, Hk = 8, d = 128, cap = 256, s;
    kve_config cfg;
    tu_cache c;
    float *q = (float *)tu_alloc((size_t)H * d * sizeof(float));
    float *k = (float *)tu_alloc((size_t)Hk * d * sizeof(float));
    float *out = (float *)tu_alloc((size_t)H * d * sizeof(float));
    unsigned long long digest = 1469598103934665603ull;
    memset(&cfg, 0, sizeof cfg);
    cfg.n_layers = 1; cfg.n_heads = H; cfg.n_kv_heads = Hk; cfg.head_dim = d; cfg.capacity = cap;
    cfg.policy.kind = KVE_POLICY_H2O; cfg.policy.window = 16;
    tu_open(&c, &cfg);
    tu_seed(10);
    for (s = 0; s < 2 * cap; s++) {
        tu_fill(k, (size_t)Hk * d, 1.0f);
        tu_fill(q, (size_t)H * d, 1.0f);
        CHECK_RESULT(kve_store(&c.c, 0, s, k, k, NULL), KVE_OK);
        CHECK_RESULT(kve_attend(&c.c, 0, q, out), KVE_OK);
        digest_floats(&digest, out, (size_t)H * d);
    }
    printf("attention digest %016llx\n", digest);
    free(q); free(k); free(out);
    tu_close(&c);
}

/* ---- errors ----------------------------------------------------------------------------- */
static kve_config small_cfg(void)
{
    kve_config c;
    memset(&c, 0, sizeof c);
    c.n_layers = 2; c.n_heads = 4; c.n_kv_heads = 2; c.head_dim = 8; c.capacity = 16;
    return c;
}

static void test_config_errors(void)
{
    kve_config c = small_cfg(), out;
    size_t bytes;
    CHECK_RESULT(kve_config_resolve(NULL, &out), KVE_ERROR_NULL_ARGUMENT);
    CHECK_RESULT(kve_config_resolve(&c, NULL), KVE_ERROR_NULL_ARGUMENT);
    CHECK_RESULT(kve_cache_size(&c, NULL), KVE_ERROR_NULL_ARGUMENT);
    CHECK_RESULT(kve_config_resolve(&c, &out), KVE_OK);
    CHECK(out.rope_theta == 10000.0 && out.rope_dims == 8 && out.rope_layout == KVE_ROPE_INTERLEAVED &&
          out.key_storage == KVE_KEYS_POST_ROPE && out.policy.kind == KVE_POLICY_FULL &&
          out.policy.budget == 16 && out.rope_linear_factor == 1.0, "defaults not filled in");
    c = small_cfg(); c.n_layers = 0; CHECK_RESULT(kve_cache_size(&c, &bytes), KVE_ERROR_INVALID_DIMENSIONS);
    c = small_cfg(); c.n_heads = -4; CHECK_RESULT(kve_cache_size(&c, &bytes), KVE_ERROR_INVALID_DIMENSIONS);
    c = small_cfg(); c.head_dim = 0; CHECK_RESULT(kve_cache_size(&c, &bytes), KVE_ERROR_INVALID_DIMENSIONS);
    c = small_cfg(); c.head_dim = 4096; CHECK_RESULT(kve_cache_size(&c, &bytes), KVE_ERROR_INVALID_DIMENSIONS);
    c = small_cfg(); c.n_kv_heads = 8; CHECK_RESULT(kve_cache_size(&c, &bytes), KVE_ERROR_INVALID_DIMENSIONS);
    c = small_cfg(); c.n_kv_heads = 3; CHECK_RESULT(kve_cache_size(&c, &bytes), KVE_ERROR_HEADS_NOT_DIVISIBLE);
    c = small_cfg(); c.capacity = 0; CHECK_RESULT(kve_cache_size(&c, &bytes), KVE_ERROR_INVALID_CAPACITY);
    c = small_cfg(); c.capacity = -1; CHECK_RESULT(kve_cache_size(&c, &bytes), KVE_ERROR_INVALID_CAPACITY);
    c = small_cfg(); c.rope_dims = 5; CHECK_RESULT(kve_cache_size(&c, &bytes), KVE_ERROR_INVALID_ROPE);
    c = small_cfg(); c.rope_dims = 10; CHECK_RESULT(kve_cache_size(&c, &bytes), KVE_ERROR_INVALID_ROPE);
    c = small_cfg(); c.rope_theta = -1; CHECK_RESULT(kve_cache_size(&c, &bytes), KVE_ERROR_INVALID_ROPE);
    c = small_cfg(); c.rope_theta = NAN; CHECK_RESULT(kve_cache_size(&c, &bytes), KVE_ERROR_INVALID_ROPE);
    c = small_cfg(); c.rope_linear_factor = -2; CHECK_RESULT(kve_cache_size(&c, &bytes), KVE_ERROR_INVALID_ROPE);
    c = small_cfg(); c.rope_layout = (kve_rope_layout)9; CHECK_RESULT(kve_cache_size(&c, &bytes), KVE_ERROR_INVALID_ENUM);
    c = small_cfg(); c.key_storage = (kve_key_storage)-1; CHECK_RESULT(kve_cache_size(&c, &bytes), KVE_ERROR_INVALID_ENUM);
    c = small_cfg(); c.policy.kind = (kve_policy_kind)42; CHECK_RESULT(kve_cache_size(&c, &bytes), KVE_ERROR_INVALID_ENUM);
    c = small_cfg(); c.n_layers = 60000; c.n_heads = 4096; c.n_kv_heads = 4096; c.head_dim = 1024;
    c.capacity = KVE_MAX_CAPACITY;
    {
        size_t floats;
        kve_result r1 = f32_buffer_floats(&c, KVE_LAYOUT_DEFAULT, &floats);
        kve_result r2 = kve_cache_size(&c, &bytes);
        CHECK(r1 == KVE_ERROR_SIZE_OVERFLOW || sizeof(size_t) > 8, "huge buffer: %s", kve_result_string(r1));
        /* the bookkeeping fits 64 bits here; it must not have wrapped around */
        CHECK(r2 == KVE_ERROR_SIZE_OVERFLOW ||
              (r2 == KVE_OK && bytes / 8 / 4096 / 60000 >= (size_t)KVE_MAX_CAPACITY),
              "huge cache: %s, %zu bytes", kve_result_string(r2), bytes);
    }
}

static void test_init_errors(void)
{
    kve_config c = small_cfg();
    kve_cache cache;
    kve_buffers b;
    size_t floats, bytes;
    float *k, *v;
    char *mem;
    f32_buffer_floats(&c, KVE_LAYOUT_DEFAULT, &floats);
    kve_cache_size(&c, &bytes);
    k = (float *)tu_alloc((floats + 1) * sizeof(float));
    v = (float *)tu_alloc(floats * sizeof(float));
    mem = (char *)tu_alloc(bytes + 8);
    memset(&b, 0, sizeof b);
    b.k = k; b.v = v; b.k_bytes = sizeof(float) * (floats); b.v_bytes = sizeof(float) * (floats);
    CHECK_RESULT(kve_cache_init(&c, &b, mem, bytes, NULL), KVE_ERROR_NULL_ARGUMENT);
    CHECK_RESULT(kve_cache_init(NULL, &b, mem, bytes, &cache), KVE_ERROR_NULL_ARGUMENT);
    CHECK_RESULT(kve_cache_init(&c, NULL, mem, bytes, &cache), KVE_ERROR_NULL_ARGUMENT);
    CHECK_RESULT(kve_cache_init(&c, &b, NULL, bytes, &cache), KVE_ERROR_NULL_ARGUMENT);
    CHECK_RESULT(kve_cache_init(&c, &b, mem, bytes - 1, &cache), KVE_ERROR_MEMORY_TOO_SMALL);
    CHECK_RESULT(kve_cache_init(&c, &b, mem + 1, bytes, &cache), KVE_ERROR_MISALIGNED);
    b.k = (float *)((char *)k + 2);
    CHECK_RESULT(kve_cache_init(&c, &b, mem, bytes, &cache), KVE_ERROR_MISALIGNED);
    b.k = k;
    b.k_bytes = sizeof(float) * (floats - 1);
    CHECK_RESULT(kve_cache_init(&c, &b, mem, bytes, &cache), KVE_ERROR_BUFFER_TOO_SMALL);
    b.k_bytes = sizeof(float) * (floats);
    b.v_bytes = sizeof(float) * (0);
    CHECK_RESULT(kve_cache_init(&c, &b, mem, bytes, &cache), KVE_ERROR_BUFFER_TOO_SMALL);
    b.v_bytes = sizeof(float) * (floats);
    b.layout = KVE_LAYOUT_STRIDES;
    b.k_slot_stride = b.v_slot_stride = f32_stride(4); b.k_head_stride = b.v_head_stride = f32_stride(8 * 16); b.k_layer_stride = b.v_layer_stride = f32_stride(8 * 16 * 2); /* slot < head_dim */
    CHECK_RESULT(kve_cache_init(&c, &b, mem, bytes, &cache), KVE_ERROR_OVERLAPPING_STRIDES);
    b.k_slot_stride = b.v_slot_stride = f32_stride(8); b.k_head_stride = b.v_head_stride = f32_stride(8); b.k_layer_stride = b.v_layer_stride = f32_stride(8 * 16 * 2);   /* heads alias slots */
    CHECK_RESULT(kve_cache_init(&c, &b, mem, bytes, &cache), KVE_ERROR_OVERLAPPING_STRIDES);
    b.k_slot_stride = b.v_slot_stride = f32_stride(16); b.k_head_stride = b.v_head_stride = f32_stride(8); b.k_layer_stride = b.v_layer_stride = f32_stride(8 * 16 * 2); /* interleaved: fine */
    CHECK_RESULT(kve_cache_init(&c, &b, mem, bytes, &cache), KVE_OK);
    b.layout = (kve_layout)7;
    CHECK_RESULT(kve_cache_init(&c, &b, mem, bytes, &cache), KVE_ERROR_INVALID_ENUM);
    b.layout = KVE_LAYOUT_DEFAULT;
    CHECK_RESULT(kve_cache_init(&c, &b, mem, bytes, &cache), KVE_OK);
    CHECK(kve_bytes_in_use(&cache) == 0, "new cache holds nothing");
    free(k); free(v); free(mem);
}

static void test_call_errors(void)
{
    kve_config c = small_cfg();
    tu_cache t;
    float q[32] = {0}, k[16] = {0}, v[16] = {0}, out[32];
    int i;
    c.capacity = 4;
    tu_open(&t, &c);
    CHECK_RESULT(kve_attend(&t.c, 0, q, out), KVE_ERROR_EMPTY);
    CHECK_RESULT(kve_prefill(&t.c, 0, 1, q, NULL, out), KVE_ERROR_EMPTY);
    CHECK_RESULT(kve_store(NULL, 0, 0, k, v, NULL), KVE_ERROR_NULL_ARGUMENT);
    CHECK_RESULT(kve_store(&t.c, 0, 0, NULL, v, NULL), KVE_ERROR_NULL_ARGUMENT);
    CHECK_RESULT(kve_store(&t.c, 2, 0, k, v, NULL), KVE_ERROR_INDEX_OUT_OF_RANGE);
    CHECK_RESULT(kve_store(&t.c, -1, 0, k, v, NULL), KVE_ERROR_INDEX_OUT_OF_RANGE);
    CHECK_RESULT(kve_store(&t.c, 0, -5, k, v, NULL), KVE_ERROR_POSITION);
    CHECK_RESULT(kve_store(&t.c, 0, KVE_MAX_POSITION + 1, k, v, NULL), KVE_ERROR_POSITION);
    k[3] = NAN;
    CHECK_RESULT(kve_store(&t.c, 0, 0, k, v, NULL), KVE_ERROR_NOT_FINITE);
    k[3] = 0; v[15] = INFINITY;
    CHECK_RESULT(kve_store(&t.c, 0, 0, k, v, NULL), KVE_ERROR_NOT_FINITE);
    v[15] = 0;
    CHECK(kve_length(&t.c, 0, 0) == 0, "failed stores must not change the cache");
    CHECK_RESULT(kve_store(&t.c, 0, 10, k, v, NULL), KVE_OK);
    CHECK_RESULT(kve_store(&t.c, 0, 10, k, v, NULL), KVE_ERROR_POSITION);
    CHECK_RESULT(kve_store(&t.c, 0, 9, k, v, NULL), KVE_ERROR_POSITION);
    for (i = 11; i < 14; i++) CHECK_RESULT(kve_store(&t.c, 0, i, k, v, NULL), KVE_OK);
    CHECK_RESULT(kve_store(&t.c, 0, 14, k, v, NULL), KVE_ERROR_CACHE_FULL);
    CHECK(kve_length(&t.c, 0, 1) == 4, "full cache keeps its tokens");
    q[0] = NAN;
    CHECK_RESULT(kve_attend(&t.c, 0, q, out), KVE_ERROR_NOT_FINITE);
    q[0] = 0;
    CHECK_RESULT(kve_attend(&t.c, 0, NULL, out), KVE_ERROR_NULL_ARGUMENT);
    CHECK_RESULT(kve_attend(&t.c, 0, q, NULL), KVE_ERROR_NULL_ARGUMENT);
    CHECK_RESULT(kve_attend(&t.c, 5, q, out), KVE_ERROR_INDEX_OUT_OF_RANGE);
    {
        kve_attend_options opt;
        memset(&opt, 0, sizeof opt);
        opt.weights_reduce = (kve_reduce)99;
        CHECK_RESULT(kve_attend_ex(&t.c, 0, q, out, &opt), KVE_ERROR_INVALID_ENUM);
    }
    CHECK_RESULT(kve_prefill(&t.c, 0, 0, q, NULL, out), KVE_ERROR_INVALID_COUNT);
    CHECK_RESULT(kve_prefill(&t.c, 0, 5, q, NULL, out), KVE_ERROR_INVALID_COUNT);
    {
        int64_t qp[2] = {12, 11};
        float q2[64] = {0}, o2[64];
        CHECK_RESULT(kve_prefill(&t.c, 0, 2, q2, qp, o2), KVE_ERROR_POSITION);
        qp[0] = 13; qp[1] = 14;
        CHECK_RESULT(kve_prefill(&t.c, 0, 2, q2, qp, o2), KVE_ERROR_POSITION);
    }
    CHECK_RESULT(kve_compress(&t.c, 3), KVE_ERROR_INDEX_OUT_OF_RANGE);
    CHECK_RESULT(kve_compress(NULL, 0), KVE_ERROR_NULL_ARGUMENT);
    CHECK_RESULT(kve_keep_slots(&t.c, 0, 2, (const unsigned char *)"x"), KVE_ERROR_INDEX_OUT_OF_RANGE);
    CHECK_RESULT(kve_keep_slots(&t.c, 0, 0, NULL), KVE_ERROR_NULL_ARGUMENT);
    CHECK(kve_key(&t.c, 0, 0, 4) == NULL && kve_value(&t.c, 2, 0, 0) == NULL, "accessors range-check");
    CHECK(kve_slot_position(&t.c, 0, 0, 4) == -1 && kve_length(&t.c, 0, 2) == -1, "inspection range-checks");
    CHECK(kve_scores(&t.c, 0, 0) == NULL, "full policy keeps no scores");
    {
        float sc[4];
        CHECK_RESULT(kve_window_scores(&t.c, 0, 0, KVE_REDUCE_MEAN, sc), KVE_ERROR_NO_QUERIES);
    }
    /* rope errors */
    {
        kve_config r = rope_cfg(8, 0, KVE_ROPE_INTERLEAVED);
        float x[8] = {0};
        CHECK_RESULT(kve_rope_apply(&r, x, -1), KVE_ERROR_POSITION);
        CHECK_RESULT(kve_rope_shift(&r, x, KVE_MAX_POSITION + 1), KVE_ERROR_POSITION);
        CHECK_RESULT(kve_rope_apply(NULL, x, 0), KVE_ERROR_NULL_ARGUMENT);
        CHECK_RESULT(kve_rope_apply(&r, NULL, 0), KVE_ERROR_NULL_ARGUMENT);
        x[1] = NAN;
        CHECK_RESULT(kve_rope_apply(&r, x, 0), KVE_ERROR_NOT_FINITE);
        r.rope_dims = 3;
        x[1] = 0;
        CHECK_RESULT(kve_rope_apply(&r, x, 0), KVE_ERROR_INVALID_ROPE);
    }
    /* the checker notices broken bookkeeping */
    CHECK_RESULT(kve_check(&t.c), KVE_OK);
    t.c.pos[1] = t.c.pos[0];
    CHECK_RESULT(kve_check(&t.c), KVE_ERROR_CORRUPT);
    CHECK_RESULT(kve_check(NULL), KVE_ERROR_NULL_ARGUMENT);
    CHECK_RESULT(kve_cache_reset(&t.c), KVE_OK);
    CHECK_RESULT(kve_check(&t.c), KVE_OK);
    CHECK(kve_length(&t.c, 0, 0) == 0 && kve_bytes_in_use(&t.c) == 0, "reset empties the cache");
    tu_close(&t);
}

static void test_result_strings(void)
{
    int r, distinct = 1, i;
    const char *seen[32];
    for (r = 0; r >= -27; r--) {
        seen[-r] = kve_result_string((kve_result)r);
        for (i = 0; i < -r; i++) distinct &= strcmp(seen[i], seen[-r]) != 0;
    }
    CHECK(distinct, "every result has its own message");
    CHECK(strcmp(kve_result_string((kve_result)-99), "unknown kve_result") == 0, "unknown result");
}

/* nothing is written outside the caller's buffers: guard zones around K and V */
static void test_no_writes_outside(void)
{
    kve_config c = small_cfg();
    kve_cache cache;
    kve_buffers b;
    size_t floats, bytes, guard = 256, i;
    float *k, *v, q[32], kk[16], vv[16], out[32];
    char *mem;
    int s, clean = 1;
    c.policy.kind = KVE_POLICY_STREAMINGLLM;
    c.policy.sinks = 2;
    f32_buffer_floats(&c, KVE_LAYOUT_DEFAULT, &floats);
    kve_cache_size(&c, &bytes);
    k = (float *)tu_alloc((floats + 2 * guard) * sizeof(float));
    v = (float *)tu_alloc((floats + 2 * guard) * sizeof(float));
    mem = (char *)tu_alloc(bytes + 2 * guard);
    for (i = 0; i < floats + 2 * guard; i++) k[i] = v[i] = 12345.0f;
    memset(mem, 0xAB, bytes + 2 * guard);
    memset(&b, 0, sizeof b);
    b.k = k + guard; b.v = v + guard; b.k_bytes = sizeof(float) * (floats); b.v_bytes = sizeof(float) * (floats);
    CHECK_RESULT(kve_cache_init(&c, &b, mem + guard, bytes, &cache), KVE_OK);
    for (s = 0; s < 100; s++) {
        tu_fill(q, 32, 1.0f); tu_fill(kk, 16, 1.0f); tu_fill(vv, 16, 1.0f);
        kve_store(&cache, s % 2, s, kk, vv, NULL);
        kve_attend(&cache, s % 2, q, out);
    }
    for (i = 0; i < guard; i++)
        clean &= k[i] == 12345.0f && v[i] == 12345.0f && k[guard + floats + i] == 12345.0f &&
                 v[guard + floats + i] == 12345.0f && (unsigned char)mem[i] == 0xAB &&
                 (unsigned char)mem[guard + bytes + i] == 0xAB;
    CHECK(clean, "a write landed outside the caller's buffers");
    free(k); free(v); free(mem);
}

int main(void)
{
    test_rope_closed_form();
    test_rope_group();
    test_rope_half_vs_interleaved();
    test_rope_partial();
    test_rope_large_positions();
    test_attention_reference();
    test_storage_and_layouts_agree();
    test_prefill_and_weights();
    test_threads_identical();
    test_split_attention();
    print_attention_digest();
    print_split_digest();
    test_config_errors();
    test_init_errors();
    test_call_errors();
    test_result_strings();
    test_no_writes_outside();
    return tu_summary("test_core");
}
