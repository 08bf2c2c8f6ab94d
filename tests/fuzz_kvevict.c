/* libFuzzer target for kvevict.h.

   The input bytes become a cache configuration (every policy, both key storages, all RoPE layouts,
   default, head-major and padded custom strides, odd sizes, capacities of 1, invalid values) and then
   a sequence of calls: store (NaN/Inf values, repeated, skipping and huge positions, positions past
   2^31 and up to the limit), attend, prefill, compress, keep_slots, reset, RoPE, the building blocks
   and every inspection function with indices in and out of range. After every call:
     - kve_check() must pass,
     - an error must be a named one, and a failed call must leave the cache as it was,
     - a stored token must be in the slot kve_store reports, with the values given,
     - attention over finite, moderate inputs must be finite and inside the range of the values,
   and at the end no float outside the (layer, head, slot) vectors may have been written.

   make fuzz         builds it with clang -fsanitize=fuzzer,address,undefined and runs it on
                     tests/fuzz-corpus for FUZZ_SECONDS
   Replay or smoke-test without libFuzzer (any compiler, valgrind):
       cc -std=c11 -O1 -g -I. -DFUZZ_STANDALONE tests/fuzz_kvevict.c -o build/fuzz_replay -lm
       build/fuzz_replay FILE...          run the given inputs
       build/fuzz_replay --random N       run N pseudo-random inputs
       FUZZ_TRACE=1 build/fuzz_replay FILE   also prints the decoded configuration and each call

   The defects it finds get a minimal regression test in tests/test_reliability.c (regress_*). */
#define KVEVICT_IMPLEMENTATION
#include "kvevict.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* f32 K/V buffers sized in floats, as most tests use them (the library counts bytes) */
/* a stride given in floats, as bytes (huge ones, meant to overflow, stay huge) */
static size_t f32_stride(size_t floats) { return floats > SIZE_MAX / sizeof(float) ? floats & ~(size_t)3 : floats * sizeof(float); }

static kve_result f32_buffer_floats(const kve_config *cfg, kve_layout layout, size_t *floats)
{
    size_t kb = 0, vb = 0;
    kve_result r = kve_buffer_bytes(cfg, layout, floats ? &kb : NULL, &vb);
    if (floats) *floats = kb / sizeof(float);
    return r;
}

#define MAX_OPS 256
#define GUARD 16

static int g_trace; /* standalone replay: FUZZ_TRACE=1 prints the configuration and each call */

/* stop at the first UBSan report even when built with recoverable checks */
const char *__ubsan_default_options(void);
const char *__ubsan_default_options(void) { return "halt_on_error=1:print_stacktrace=1"; }

#define FZ_ASSERT(cond, ...)                                                               \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "fuzz_kvevict: check failed at line %d: ", __LINE__);          \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fputc('\n', stderr);                                                           \
            abort();                                                                       \
        }                                                                                  \
    } while (0)

/* ---- reading the input ---------------------------------------------------------------------- */
typedef struct fz_in {
    const uint8_t *p;
    size_t n, i;
} fz_in;

static unsigned fz_byte(fz_in *f) { return f->i < f->n ? f->p[f->i++] : 0u; }
static unsigned fz_u16(fz_in *f)
{
    unsigned a = fz_byte(f);
    return a | fz_byte(f) << 8;
}
static int fz_more(const fz_in *f) { return f->i < f->n; }

static uint32_t fz_rng(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

static void *fz_alloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) abort();
    return p;
}

static int fz_named(kve_result r)
{
    return strcmp(kve_result_string(r), kve_result_string((kve_result)-9999)) != 0;
}

/* ---- vectors: a mode byte and a seed byte give n floats ------------------------------------- */
typedef struct fz_vec {
    int finite; /* acceptable input: no NaN/Inf, no magnitude above KVE_MAX_ABS_VALUE */
    int tame;   /* and |x| <= 4 */
} fz_vec;

#ifndef KVE_MAX_ABS_VALUE
#define KVE_MAX_ABS_VALUE INFINITY
#endif

static fz_vec fz_values(fz_in *f, float *x, size_t n)
{
    unsigned mode = fz_byte(f), seed = fz_byte(f);
    uint32_t s = 0x9e3779b9u ^ (seed * 0x01000193u) ^ (mode << 24);
    fz_vec r = {1, 1};
    size_t i;
    for (i = 0; i < n; i++) x[i] = (float)((int32_t)(fz_rng(&s) >> 8) - (1 << 23)) / 2097152.0f;
    switch (mode % 10) {
    case 4:
        memset(x, 0, n * sizeof *x);
        break;
    case 5:
        if (n) x[seed % n] = NAN;
        r.finite = r.tame = 0;
        break;
    case 6:
        if (n) x[seed % n] = (seed & 1) ? INFINITY : -INFINITY;
        r.finite = r.tame = 0;
        break;
    case 7: /* large, tiny, denormal and negative zero, still harmless */
        for (i = 0; i < n; i++) {
            uint32_t b = fz_rng(&s) % 4;
            x[i] = b == 0 ? x[i] * 1e6f : b == 1 ? x[i] * 1e-30f : b == 2 ? 1e-41f : -0.0f;
        }
        r.tame = 0;
        break;
    case 8: /* large: up to the limit, and sometimes beyond it (sums could overflow) */
        for (i = 0; i < n; i++) {
            uint32_t b = fz_rng(&s) % 8;
            x[i] *= b < 4 ? 1e12f : b < 6 ? KVE_MAX_ABS_VALUE / 2 : b == 6 ? 1e30f : 1.5e38f;
        }
        r.tame = 0;
        break;
    default:
        break;
    }
    for (i = 0; i < n; i++)
        if (!(fabsf(x[i]) <= KVE_MAX_ABS_VALUE)) r.finite = r.tame = 0;
    return r;
}

/* ---- user policies ------------------------------------------------------------------------ */
typedef struct fz_user {
    int variant; /* 0 overwrite oldest, 1 drop via keep_slots, 2 misbehave, 3 drop + compress */
    uint32_t rng;
} fz_user;

static kve_result fz_make_room(kve_cache *c, int32_t l, int32_t *ws, void *user)
{
    fz_user *u = (fz_user *)user;
    int32_t h, s, Hk = c->cfg.n_kv_heads, budget = kve_layer_budget(c, l);
    for (h = 0; h < Hk; h++) {
        int32_t n = kve_length(c, l, h);
        if (n < budget && u->variant != 2) continue;
        if (u->variant == 0) {
            int32_t best = 0;
            for (s = 1; s < n; s++)
                if (kve_slot_position(c, l, h, s) < kve_slot_position(c, l, h, best)) best = s;
            ws[h] = n > 0 ? best : -1;
        } else if (u->variant == 2) {
            uint32_t r = fz_rng(&u->rng);
            if (r % 7 == 0) return KVE_ERROR_INVALID_PARAMETER;
            ws[h] = (int32_t)(r % 5) - 2 + (r & 8 ? n : 0); /* sometimes out of range */
        } else {
            unsigned char *keep = (unsigned char *)fz_alloc((size_t)n);
            kve_result r;
            int32_t kept = 0;
            for (s = 0; s < n; s++) {
                keep[s] = (fz_rng(&u->rng) % 4) != 0;
                kept += keep[s];
            }
            if (kept == n && n > 0) keep[fz_rng(&u->rng) % (uint32_t)n] = 0;
            r = kve_keep_slots(c, l, h, keep);
            free(keep);
            if (r != KVE_OK) return r;
        }
    }
    return KVE_OK;
}

static kve_result fz_compress(kve_cache *c, int32_t l, void *user)
{
    fz_user *u = (fz_user *)user;
    int32_t h;
    for (h = 0; h < c->cfg.n_kv_heads; h++) {
        int32_t n = kve_length(c, l, h), k = n / 2, s;
        float *score = (float *)fz_alloc((size_t)n * sizeof(float));
        unsigned char *keep = (unsigned char *)fz_alloc((size_t)n);
        int32_t *order = (int32_t *)fz_alloc((size_t)n * sizeof(int32_t));
        kve_result r = kve_window_scores(c, l, h, KVE_REDUCE_MAX, score);
        if (r == KVE_OK) r = kve_select_top(score, n, k, keep, order);
        if (r == KVE_OK) { /* the newest token stays */
            int32_t newest = 0;
            for (s = 1; s < n; s++)
                if (kve_slot_position(c, l, h, s) > kve_slot_position(c, l, h, newest)) newest = s;
            if (n > 0) keep[newest] = 1;
            r = kve_keep_slots(c, l, h, keep);
        }
        free(score); free(keep); free(order);
        if (r != KVE_OK && r != KVE_ERROR_NO_QUERIES) return r;
    }
    (void)u;
    return KVE_OK;
}

static const kve_policy_vtable fz_vt[2][2] = {
    {{"fuzz", 0, fz_make_room, NULL}, {"fuzz-scores", 1, fz_make_room, NULL}},
    {{"fuzz-compress", 0, fz_make_room, fz_compress}, {"fuzz-compress-scores", 1, fz_make_room, fz_compress}},
};

/* a user scorer reading what a scorer may read: rotated keys, positions, a recorded query */
static kve_result fz_scorer(const kve_cache *c, int32_t l, int32_t h, float *score, void *u)
{
    float k[KVE_MAX_HEAD_DIM];
    int64_t qp = -1;
    const float *q = kve_recorded_query(c, l, 0, &qp);
    int32_t s;
    (void)u;
    for (s = 0; s < kve_length(c, l, h); s++) {
        kve_result r = kve_read_rotated_key(c, l, h, s, k);
        if (r != KVE_OK) return r;
        score[s] = k[0] + (q ? q[0] : 0.0f) + (float)(kve_slot_position(c, l, h, s) % 7);
    }
    return KVE_OK;
}

/* ---- the harness ---------------------------------------------------------------------------- */
typedef struct fz_state {
    kve_cache c;
    kve_config cfg, rc;
    fz_user user;
    float *kraw, *vraw, *k, *v;
    size_t floats;
    unsigned char *covered;
    void *mem;
    size_t mem_bytes;
    int32_t L, H, Hk, d, cap;
    int64_t newest[3];
    double vmax[3];   /* largest |v| stored in a layer since the last reset */
    int tame[3];      /* every value stored in the layer since the last reset was tame */
    /* snapshot for "a failed call changes nothing" */
    float *sk, *sv;
    int64_t *spos;
    int32_t *slen;
    kve_cache sc;
} fz_state;

static const uint32_t SENTINEL = 0x7fa5a5a5u;

static void fz_snap(fz_state *s)
{
    int32_t l, h, i;
    s->sc = s->c;
    memcpy(s->sk, s->k, s->floats * sizeof(float));
    memcpy(s->sv, s->v, s->floats * sizeof(float));
    for (l = 0; l < s->L; l++)
        for (h = 0; h < s->Hk; h++) {
            s->slen[l * s->Hk + h] = kve_length(&s->c, l, h);
            for (i = 0; i < s->cap; i++)
                s->spos[((size_t)l * (size_t)s->Hk + (size_t)h) * (size_t)s->cap + (size_t)i] =
                    kve_slot_position(&s->c, l, h, i);
        }
}

static int fz_unchanged(const fz_state *s)
{
    int32_t l, h, i;
    if (memcmp(&s->sc, &s->c, sizeof s->c) != 0) return 0;
    if (memcmp(s->sk, s->k, s->floats * sizeof(float)) != 0) return 0;
    if (memcmp(s->sv, s->v, s->floats * sizeof(float)) != 0) return 0;
    for (l = 0; l < s->L; l++)
        for (h = 0; h < s->Hk; h++) {
            if (s->slen[l * s->Hk + h] != kve_length(&s->c, l, h)) return 0;
            for (i = 0; i < s->cap; i++)
                if (s->spos[((size_t)l * (size_t)s->Hk + (size_t)h) * (size_t)s->cap + (size_t)i] !=
                    kve_slot_position(&s->c, l, h, i))
                    return 0;
        }
    return 1;
}

/* the call failed: it must say why, and (unless a user policy ran) have changed nothing */
static void fz_failed(fz_state *s, kve_result r, const char *what, int policy_ran)
{
    FZ_ASSERT(fz_named(r), "%s returned an unnamed result %d", what, (int)r);
    if (!(policy_ran && s->rc.policy.kind == KVE_POLICY_CUSTOM))
        FZ_ASSERT(fz_unchanged(s), "%s failed with %s but changed the cache", what, kve_result_string(r));
}

static void fz_check(fz_state *s, const char *after)
{
    kve_result r = kve_check(&s->c);
    int32_t l, h;
    FZ_ASSERT(r == KVE_OK, "kve_check after %s: %s", after, kve_result_string(r));
    for (l = 0; l < s->L; l++)
        for (h = 0; h < s->Hk; h++) {
            int32_t n = kve_length(&s->c, l, h);
            FZ_ASSERT(n >= 0 && n <= s->cap, "length %d after %s", (int)n, after);
            /* StreamingLLM keeps its budget from the start, unless it grows after a compressed
               prompt (decode = KVE_DECODE_GROW: the layer budget is then the capacity) */
            if (s->rc.policy.kind == KVE_POLICY_STREAMINGLLM)
                FZ_ASSERT(n <= kve_layer_budget(&s->c, l), "StreamingLLM holds %d > layer budget %d after %s",
                          (int)n, (int)kve_layer_budget(&s->c, l), after);
        }
}

static int fz_open(fz_state *s, fz_in *f)
{
    kve_config *c = &s->cfg;
    unsigned b;
    kve_layout layout;
    kve_buffers bu;
    kve_result r, r2;
    size_t bytes = 0, floats = 0, count[3], stride[3], pad[3], i, l, h, sl;
    int order[3], perm, short_by_one;
    static const int perms[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
    static const int32_t dims[8] = {1, 2, 3, 4, 5, 6, 8, 16};
    /* the last two of each overflow the angles (refused) or make them huge (accepted) */
    static const double thetas[4] = {0, 10000, 5e-324, 1e-3}, factors[4] = {0, 2.5, 1e-310, 1e-9};
    memset(c, 0, sizeof *c);
    c->n_layers = 1 + (int32_t)(fz_byte(f) % 3);
    b = fz_byte(f);
    c->n_kv_heads = 1 + (int32_t)(b % 4);
    c->n_heads = c->n_kv_heads * (1 + (int32_t)((b >> 2) % 3)) + ((b & 0x80) ? 1 : 0);
    b = fz_byte(f);
    c->head_dim = dims[b % 8];
    switch ((b >> 3) % 4) {
    case 0: c->rope_dims = 0; break;
    case 1: c->rope_dims = c->head_dim & ~1; break;
    case 2: c->rope_dims = 2; break;
    default: c->rope_dims = (int32_t)(b >> 5); break;
    }
    b = fz_byte(f);
    c->capacity = b == 255 ? 0 : 1 + (int32_t)(b % 40);
    b = fz_byte(f);
    c->rope_layout = (kve_rope_layout)(b % 4);
    c->key_storage = (kve_key_storage)((b >> 2) % 3);
    c->rope_theta = thetas[(b >> 4) % 4];
    c->rope_linear_factor = factors[(b >> 6) % 4];
    b = fz_byte(f);
    c->policy.kind = (kve_policy_kind)(b % 16); /* every kind, KVE_POLICY_SIMLAYERKV the last */
    c->policy.pooling = (kve_pooling)((b >> 3) % 4);
    c->policy.gqa = (kve_reduce)((b >> 5) % 4);
    c->policy.budget = (int32_t)(fz_byte(f) % (unsigned)(c->capacity + 2));
    b = fz_byte(f);
    c->policy.window = (int32_t)(b % 9);
    c->policy.kernel = (int32_t)((b >> 4) % 8);
    b = fz_byte(f);
    c->policy.sinks = (int32_t)(b % 7) - 1;
    c->policy.pos_shift = (kve_pos_shift)((b >> 3) % 3);
    c->policy.decode = (kve_decode_mode)((b >> 5) % 3);
    b = fz_byte(f);
    c->policy.evict_batch = (int32_t)(b % 8);
    c->policy.beta = (int32_t)((b >> 3) % 6);
    b = fz_byte(f);
    s->user.variant = (int)(b % 4);
    s->user.rng = 0x1234567u + b;
    c->policy.custom = &fz_vt[s->user.variant == 3][(b >> 2) & 1];
    c->policy.custom_user = &s->user;
    c->policy.scorer = fz_scorer;
    b = fz_byte(f); /* the scorer core: allocation, ratio, chunks, LagKV, the AdaKV safeguard */
    c->policy.allocation = (kve_allocation)(b % 4);
    c->policy.compression_ratio = (b >> 2) % 4 == 3 ? 0.5 : (b >> 2) % 4 == 2 ? 0.25 : 0.0;
    c->policy.chunk_length = (b >> 4) % 4 == 3 ? 3 : 0;
    c->policy.lag_size = (int32_t)((b >> 6) % 4);
    c->policy.alpha_safeguard = (b >> 6) == 1 ? KVE_NO_SAFEGUARD : (b >> 6) == 2 ? 1.0 : 0.0;
    c->policy.cross_scoring = (int32_t)((b >> 5) & 1);
    c->policy.seed = b;
    c->policy.n_recent = (int32_t)(b % 9); /* SimLayerKV: n_recent, and a threshold 0 (= 1), .1-.3 */
    c->policy.lazy_threshold = 0.1 * (double)((b >> 3) % 4);
    layout = (kve_layout)((b >> 3) % 3);
    b = fz_byte(f);
    pad[0] = b % 3; pad[1] = (b >> 2) % 5; pad[2] = b >> 5;
    b = fz_byte(f);
    perm = (int)(b % 6);

    r = kve_config_resolve(c, &s->rc);
    if (g_trace)
        fprintf(stderr, "config: layers %d heads %d/%d head_dim %d rope_dims %d capacity %d rope %d keys %d "
                "policy %d budget %d window %d kernel %d sinks %d decode %d layout %d: %s\n",
                (int)c->n_layers, (int)c->n_heads, (int)c->n_kv_heads, (int)c->head_dim, (int)c->rope_dims,
                (int)c->capacity, (int)c->rope_layout, (int)c->key_storage, (int)c->policy.kind,
                (int)c->policy.budget, (int)c->policy.window, (int)c->policy.kernel, (int)c->policy.sinks,
                (int)c->policy.decode, (int)layout, kve_result_string(r));
    r2 = kve_cache_size(c, &bytes);
    FZ_ASSERT(r2 == r, "kve_cache_size %d, kve_config_resolve %d", (int)r2, (int)r);
    r2 = f32_buffer_floats(c, KVE_LAYOUT_DEFAULT, &floats);
    FZ_ASSERT(r2 == r, "kve_buffer_floats %d, kve_config_resolve %d", (int)r2, (int)r);
    if (r != KVE_OK) {
        FZ_ASSERT(fz_named(r), "unnamed configuration error %d", (int)r);
        return 0;
    }
    s->L = s->rc.n_layers; s->H = s->rc.n_heads; s->Hk = s->rc.n_kv_heads;
    s->d = s->rc.head_dim; s->cap = s->rc.capacity;

    /* strides: nest (layer, head, slot) in the chosen order, padding each level */
    count[0] = (size_t)s->L; count[1] = (size_t)s->Hk; count[2] = (size_t)s->cap;
    for (i = 0; i < 3; i++) order[i] = perms[perm][i]; /* order[2] is the innermost */
    if (layout == KVE_LAYOUT_DEFAULT) {
        stride[2] = (size_t)s->Hk * (size_t)s->d; stride[1] = (size_t)s->d;
        stride[0] = (size_t)s->cap * stride[2];
    } else if (layout == KVE_LAYOUT_HEAD_MAJOR) {
        stride[2] = (size_t)s->d; stride[1] = (size_t)s->cap * (size_t)s->d;
        stride[0] = (size_t)s->Hk * stride[1];
    } else {
        size_t inner = (size_t)s->d;
        for (i = 3; i-- > 0;) {
            stride[order[i]] = inner + pad[i];
            inner = stride[order[i]] * count[order[i]];
        }
    }
    s->floats = 0;
    for (i = 0; i < 3; i++) s->floats += stride[i] * (count[i] - 1);
    s->floats += (size_t)s->d;
    if (layout != KVE_LAYOUT_STRIDES)
        FZ_ASSERT(s->floats == floats, "kve_buffer_floats %zu, layout needs %zu", floats, s->floats);
    b = fz_byte(f);
    short_by_one = b % 4 == 2;
    if (b % 4 == 1) s->floats += 3;
    else if (short_by_one) s->floats -= 1; /* one float short (of at least one: head_dim >= 1) */

    s->kraw = (float *)fz_alloc((s->floats + 2 * GUARD) * sizeof(float));
    s->vraw = (float *)fz_alloc((s->floats + 2 * GUARD) * sizeof(float));
    for (i = 0; i < s->floats + 2 * GUARD; i++) {
        memcpy(&s->kraw[i], &SENTINEL, 4);
        memcpy(&s->vraw[i], &SENTINEL, 4);
    }
    s->k = s->kraw + GUARD;
    s->v = s->vraw + GUARD;
    s->covered = (unsigned char *)calloc(s->floats + 1, 1);
    if (!s->covered) abort();
    for (l = 0; l < count[0]; l++)
        for (h = 0; h < count[1]; h++)
            for (sl = 0; sl < count[2]; sl++) {
                size_t at = l * stride[0] + h * stride[1] + sl * stride[2];
                for (i = 0; i < (size_t)s->d && at + i < s->floats; i++) s->covered[at + i] = 1;
            }
    s->mem_bytes = bytes;
    s->mem = fz_alloc(bytes);
    s->sk = (float *)fz_alloc(s->floats * sizeof(float));
    s->sv = (float *)fz_alloc(s->floats * sizeof(float));
    s->slen = (int32_t *)fz_alloc((size_t)s->L * (size_t)s->Hk * sizeof(int32_t));
    s->spos = (int64_t *)fz_alloc((size_t)s->L * (size_t)s->Hk * (size_t)s->cap * sizeof(int64_t));
    memset(&bu, 0, sizeof bu);
    bu.k = s->k; bu.v = s->v;
    bu.k_bytes = bu.v_bytes = sizeof(float) * (s->floats);
    bu.layout = layout;
    bu.k_layer_stride = bu.v_layer_stride = f32_stride(stride[0]); bu.k_head_stride = bu.v_head_stride = f32_stride(stride[1]); bu.k_slot_stride = bu.v_slot_stride = f32_stride(stride[2]);
    r = kve_cache_init(c, &bu, s->mem, bytes, &s->c);
    if (r != KVE_OK) {
        FZ_ASSERT(fz_named(r), "unnamed init error %d", (int)r);
        FZ_ASSERT(short_by_one && r == KVE_ERROR_BUFFER_TOO_SMALL,
                  "a valid configuration and buffers were refused: %s", kve_result_string(r));
        return 0;
    }
    FZ_ASSERT(!short_by_one, "init accepted a buffer one float short");
    for (l = 0; l < (size_t)s->L; l++) {
        s->newest[l] = -1;
        s->vmax[l] = 0;
        s->tame[l] = 1;
    }
    return 1;
}

static void fz_close(fz_state *s)
{
    size_t i, bad = 0;
    uint32_t x, y;
    if (s->kraw) {
        for (i = 0; i < s->floats + 2 * GUARD; i++) {
            int inside = i >= GUARD && i < GUARD + s->floats && s->covered[i - GUARD];
            if (inside) continue;
            memcpy(&x, &s->kraw[i], 4);
            memcpy(&y, &s->vraw[i], 4);
            bad += (x != SENTINEL) + (y != SENTINEL);
        }
        FZ_ASSERT(bad == 0, "%zu floats outside the (layer, head, slot) vectors were written", bad);
    }
    free(s->kraw); free(s->vraw); free(s->covered); free(s->mem);
    free(s->sk); free(s->sv); free(s->slen); free(s->spos);
}

static int64_t fz_position(fz_in *f, int64_t newest)
{
    unsigned b = fz_byte(f), e;
    if (b < 200) return newest + 1;
    e = fz_byte(f);
    if (b < 215) return newest + 1 + (int64_t)e;
    if (b < 222) return newest;                                   /* repeated */
    if (b < 226) return newest - (int64_t)e;                      /* going back */
    if (b < 230) return -1 - (int64_t)e;                          /* negative */
    if (b < 236) return KVE_MAX_POSITION - (int64_t)e;            /* near the limit */
    if (b < 240) return KVE_MAX_POSITION + 1 + (int64_t)e;        /* past it */
    if (b < 246) return ((int64_t)1 << 31) - 3 + (int64_t)(e % 8); /* around 2^31 */
    if (b < 250) return ((int64_t)1 << 32) + (int64_t)e;
    return newest + 1 + ((int64_t)fz_u16(f) << 12);
}

static void op_store(fz_state *s, fz_in *f)
{
    int32_t l = (int32_t)(fz_byte(f) % (unsigned)(s->L + 1)); /* sometimes out of range */
    size_t n = (size_t)s->Hk * (size_t)s->d, i;
    float *k = (float *)fz_alloc(n * sizeof(float)), *v = (float *)fz_alloc(n * sizeof(float));
    int32_t *slots = (int32_t *)fz_alloc((size_t)s->Hk * sizeof(int32_t));
    fz_vec kv, vv;
    int64_t pos = fz_position(f, l < s->L ? s->newest[l] : 0);
    kve_result r;
    kv = fz_values(f, k, n);
    vv = fz_values(f, v, n);
    fz_snap(s);
    r = kve_store(&s->c, l, pos, k, v, slots);
    if (l >= s->L) {
        FZ_ASSERT(r == KVE_ERROR_INDEX_OUT_OF_RANGE, "store to layer %d: %s", (int)l, kve_result_string(r));
    } else if (pos < 0 || pos > KVE_MAX_POSITION || pos <= s->newest[l]) {
        FZ_ASSERT(r == KVE_ERROR_POSITION, "store at %lld after %lld: %s", (long long)pos,
                  (long long)s->newest[l], kve_result_string(r));
    } else if (!kv.finite || !vv.finite) {
        FZ_ASSERT(r == KVE_ERROR_NOT_FINITE, "store of NaN/Inf: %s", kve_result_string(r));
    }
    if (r != KVE_OK) {
        fz_failed(s, r, "kve_store", 1);
        if (l < s->L && r != KVE_ERROR_POSITION && r != KVE_ERROR_NOT_FINITE) {
            kve_policy_kind kind = s->rc.policy.kind;
            /* every policy but FULL and custom ones evicts, unless it grows (decode = GROW) */
            FZ_ASSERT(r != KVE_ERROR_CACHE_FULL || kind == KVE_POLICY_FULL || kind == KVE_POLICY_CUSTOM ||
                      s->rc.policy.decode == KVE_DECODE_GROW ||
                      (kind == KVE_POLICY_H2O && s->rc.policy.decode != KVE_DECODE_EVICT),
                      "CACHE_FULL from an evicting policy");
            FZ_ASSERT(r != KVE_ERROR_NO_QUERIES || kind == KVE_POLICY_SNAPKV || kind == KVE_POLICY_PYRAMIDKV ||
                      kind == KVE_POLICY_CUSTOM || kind == KVE_POLICY_TOVA ||
                      kind == KVE_POLICY_EXPECTED_ATTENTION,
                      "NO_QUERIES from a policy that does not score windows");
            FZ_ASSERT(kind == KVE_POLICY_CUSTOM || kind == KVE_POLICY_H2O || r == KVE_ERROR_CACHE_FULL ||
                      r == KVE_ERROR_NO_QUERIES, "store failed with %s", kve_result_string(r));
        }
    } else {
        int32_t h;
        FZ_ASSERT(l < s->L, "store to a missing layer succeeded");
        s->newest[l] = pos;
        if (!vv.tame || !kv.tame) s->tame[l] = 0;
        for (h = 0; h < s->Hk; h++) {
            const float *vp = kve_value(&s->c, l, h, slots[h]), *kp = kve_key(&s->c, l, h, slots[h]);
            FZ_ASSERT(slots[h] >= 0 && slots[h] < kve_length(&s->c, l, h), "store reported slot %d", (int)slots[h]);
            FZ_ASSERT(kve_slot_position(&s->c, l, h, slots[h]) == pos, "the reported slot does not hold the token");
            FZ_ASSERT(memcmp(vp, v + (size_t)h * (size_t)s->d, (size_t)s->d * sizeof(float)) == 0,
                      "stored value differs from the one given");
            if (s->rc.key_storage == KVE_KEYS_PRE_ROPE || s->rc.rope_layout == KVE_ROPE_NONE)
                FZ_ASSERT(memcmp(kp, k + (size_t)h * (size_t)s->d, (size_t)s->d * sizeof(float)) == 0,
                          "stored key differs from the one given");
            for (i = 0; i < (size_t)s->d; i++) {
                double a = fabs((double)v[(size_t)h * (size_t)s->d + i]);
                if (a > s->vmax[l]) s->vmax[l] = a;
            }
        }
    }
    free(k); free(v); free(slots);
}

static void op_attend(fz_state *s, fz_in *f)
{
    int32_t l = (int32_t)(fz_byte(f) % (unsigned)s->L), h, s2, i;
    unsigned b = fz_byte(f);
    size_t hd = (size_t)s->H * (size_t)s->d;
    float *q = (float *)fz_alloc(hd * sizeof(float)), *out = (float *)fz_alloc(hd * sizeof(float));
    kve_attend_options opt;
    size_t wn = (size_t)(b & 1 ? s->Hk : s->H) * (size_t)s->cap;
    float *w = (float *)fz_alloc(wn * sizeof(float));
    fz_vec qv = fz_values(f, q, hd);
    int empty = 0, all_one = 1, use_opt;
    double vmax = 0;
    kve_result r;
    memset(&opt, 0, sizeof opt);
    opt.weights = w;
    opt.weights_reduce = (kve_reduce)(b & 1 ? 1 + (b >> 1) % 3 : 0);
    if (b & 0x80) opt.weights_reduce = (kve_reduce)7;
    for (h = 0; h < s->Hk; h++) {
        int32_t n = kve_length(&s->c, l, h);
        empty |= n == 0;
        all_one &= n == 1;
        for (s2 = 0; s2 < n; s2++) {
            const float *vp = kve_value(&s->c, l, h, s2);
            for (i = 0; i < s->d; i++) vmax = fmax(vmax, fabs((double)vp[i]));
        }
    }
    fz_snap(s);
    /* (b >> 1) & 3: 0 kve_attend, 1 kve_attend_ex without options, 2 and 3 with weights */
    use_opt = ((b >> 1) & 3) >= 2;
    r = ((b >> 1) & 3) == 0 ? kve_attend(&s->c, l, q, out) : kve_attend_ex(&s->c, l, q, out, use_opt ? &opt : NULL);
    if (r != KVE_OK) {
        fz_failed(s, r, "kve_attend", 0);
        FZ_ASSERT(r == KVE_ERROR_EMPTY || r == KVE_ERROR_NOT_FINITE || r == KVE_ERROR_INVALID_ENUM,
                  "attend failed with %s", kve_result_string(r));
        FZ_ASSERT(r != KVE_ERROR_EMPTY || empty, "EMPTY on a layer with tokens");
        FZ_ASSERT(r != KVE_ERROR_NOT_FINITE || !qv.finite, "NOT_FINITE for a finite query");
    } else {
        FZ_ASSERT(!empty && qv.finite, "attend succeeded on an empty layer or a NaN query");
        if (qv.tame && s->tame[l]) {
            for (i = 0; i < (int32_t)hd; i++)
                FZ_ASSERT(isfinite(out[i]) && fabs(out[i]) <= vmax * (1 + 1e-4) + 1e-6,
                          "attention output %g outside the values' range %g", out[i], vmax);
            if (use_opt && opt.weights_reduce != KVE_REDUCE_MAX) {
                int32_t rows = b & 1 ? s->Hk : s->H;
                for (h = 0; h < rows; h++) {
                    int32_t kvh = b & 1 ? h : h / (s->H / s->Hk), n = kve_length(&s->c, l, kvh);
                    double sum = 0, want = opt.weights_reduce == KVE_REDUCE_SUM ? s->H / s->Hk : 1;
                    for (s2 = 0; s2 < n; s2++) sum += w[(size_t)h * (size_t)s->cap + (size_t)s2];
                    FZ_ASSERT(fabs(sum - want) < 1e-3 * want, "attention weights sum to %g, not %g", sum, want);
                }
            }
        }
        if (all_one && qv.finite) {
            /* one token per head: the output is its value, exactly */
            for (h = 0; h < s->Hk; h++) {
                const float *vp = kve_value(&s->c, l, h, 0);
                int32_t g, G = s->H / s->Hk;
                for (g = 0; g < G; g++)
                    FZ_ASSERT(memcmp(out + ((size_t)h * (size_t)G + (size_t)g) * (size_t)s->d, vp,
                                     (size_t)s->d * sizeof(float)) == 0 || !s->tame[l],
                              "attention over one token is not its value");
            }
        }
    }
    free(q); free(out); free(w);
}

static void op_prefill(fz_state *s, fz_in *f)
{
    int32_t l = (int32_t)(fz_byte(f) % (unsigned)s->L), nq = (int32_t)(fz_byte(f) % (unsigned)(s->cap + 3)) - 1;
    unsigned b = fz_byte(f);
    size_t hd = (size_t)s->H * (size_t)s->d, nqq = nq > 0 ? (size_t)nq : 1;
    float *q = (float *)fz_alloc(nqq * hd * sizeof(float)), *out = (float *)fz_alloc(nqq * hd * sizeof(float));
    int64_t *qp = (int64_t *)fz_alloc(nqq * sizeof(int64_t));
    fz_vec qv = fz_values(f, q, nq > 0 ? (size_t)nq * hd : 0);
    kve_result r;
    int32_t i;
    if (nq > 0) { /* positions ending at the newest, with gaps */
        int64_t p = s->newest[l];
        for (i = nq - 1; i >= 0; i--) {
            qp[i] = p;
            p -= 1 + (int64_t)((b >> (i % 8)) & 1);
        }
        if ((b & 0xc0) == 0xc0) qp[0] = qp[nq - 1] + 1; /* out of order */
    }
    fz_snap(s);
    r = kve_prefill(&s->c, l, nq, q, (b & 1) ? qp : NULL, out);
    if (r != KVE_OK) {
        fz_failed(s, r, "kve_prefill", 0);
        FZ_ASSERT(r == KVE_ERROR_EMPTY || r == KVE_ERROR_NOT_FINITE || r == KVE_ERROR_INVALID_COUNT ||
                  r == KVE_ERROR_POSITION, "prefill failed with %s", kve_result_string(r));
        FZ_ASSERT(r != KVE_ERROR_NOT_FINITE || !qv.finite, "NOT_FINITE for finite queries");
    } else if (qv.tame && s->tame[l]) {
        for (i = 0; i < nq * (int32_t)hd; i++)
            FZ_ASSERT(isfinite(out[i]) && fabs(out[i]) <= s->vmax[l] * (1 + 1e-4) + 1e-6,
                      "prefill output %g outside the values' range %g", out[i], s->vmax[l]);
    }
    free(q); free(out); free(qp);
}

static void op_keep_slots(fz_state *s, fz_in *f)
{
    int32_t l = (int32_t)(fz_byte(f) % (unsigned)s->L), h = (int32_t)(fz_byte(f) % (unsigned)s->Hk);
    int32_t n = kve_length(&s->c, l, h), i, kept = 0, j;
    uint32_t seed = 77u + fz_byte(f);
    unsigned char *keep = (unsigned char *)fz_alloc((size_t)(n > 0 ? n : 1));
    int64_t *pos = (int64_t *)fz_alloc((size_t)(n > 0 ? n : 1) * sizeof(int64_t));
    float *vals = (float *)fz_alloc((size_t)(n > 0 ? n : 1) * (size_t)s->d * sizeof(float));
    kve_result r;
    for (i = 0; i < n; i++) {
        keep[i] = (unsigned char)(fz_rng(&seed) % 3 != 0);
        if (kve_slot_position(&s->c, l, h, i) == s->newest[l]) keep[i] = 1; /* the newest stays */
        kept += keep[i] != 0;
        pos[i] = kve_slot_position(&s->c, l, h, i);
        memcpy(vals + (size_t)i * (size_t)s->d, kve_value(&s->c, l, h, i), (size_t)s->d * sizeof(float));
    }
    fz_snap(s);
    r = kve_keep_slots(&s->c, l, h, keep);
    if (s->rc.policy.kind == KVE_POLICY_STREAMINGLLM) { /* its slot layout is fixed */
        FZ_ASSERT(r == KVE_ERROR_WRONG_POLICY, "keep_slots on StreamingLLM: %s", kve_result_string(r));
        fz_failed(s, r, "kve_keep_slots", 0);
        free(keep); free(pos); free(vals);
        return;
    }
    FZ_ASSERT(r == KVE_OK, "keep_slots failed: %s", kve_result_string(r));
    FZ_ASSERT(kve_length(&s->c, l, h) == kept, "keep_slots kept %d of %d", (int)kve_length(&s->c, l, h), (int)kept);
    for (i = 0; i < n; i++) { /* each kept token is still there, with its value */
        int found = 0;
        if (!keep[i]) continue;
        for (j = 0; j < kept; j++)
            if (kve_slot_position(&s->c, l, h, j) == pos[i]) {
                found = 1;
                FZ_ASSERT(memcmp(kve_value(&s->c, l, h, j), vals + (size_t)i * (size_t)s->d,
                                 (size_t)s->d * sizeof(float)) == 0, "keep_slots moved a value away from its token");
            }
        FZ_ASSERT(found, "keep_slots lost position %lld", (long long)pos[i]);
    }
    free(keep); free(pos); free(vals);
}

static void op_compress(fz_state *s, fz_in *f)
{
    unsigned b = fz_byte(f);
    int32_t l = (int32_t)(b % (unsigned)(s->L + 1));
    kve_result r;
    kve_policy_kind kind = s->rc.policy.kind;
    r = (b & 0x80) ? kve_compress_all(&s->c) : kve_compress(&s->c, l);
    FZ_ASSERT(fz_named(r), "unnamed compress result");
    if (!(b & 0x80) && l >= s->L) FZ_ASSERT(r == KVE_ERROR_INDEX_OUT_OF_RANGE, "compress of layer %d", (int)l);
    else if (kind == KVE_POLICY_FULL || kind == KVE_POLICY_STREAMINGLLM ||
             (kind == KVE_POLICY_H2O && s->rc.policy.chunk_length == 0))
        FZ_ASSERT(r == KVE_OK, "compress failed with %s", kve_result_string(r));
    else if (kind != KVE_POLICY_CUSTOM) /* ChunkKV: heads that kve_keep_slots made differ */
        FZ_ASSERT(r == KVE_OK || r == KVE_ERROR_NO_QUERIES ||
                  (r == KVE_ERROR_UNSUPPORTED &&
                   (s->rc.policy.chunk_length > 0 || kind == KVE_POLICY_SIMLAYERKV)),
                  "compress failed with %s", kve_result_string(r));
}

static void op_rope(fz_state *s, fz_in *f)
{
    unsigned b = fz_byte(f);
    int64_t p = (int64_t)fz_u16(f) << ((b >> 1) % 40);
    size_t d = (size_t)s->d, i;
    float *x = (float *)fz_alloc(d * sizeof(float)), *y = (float *)fz_alloc(d * sizeof(float));
    fz_vec xv = fz_values(f, x, d);
    double n0 = 0, n1 = 0, e = 0;
    kve_result r;
    if (b & 0x80) p = -p;
    memcpy(y, x, d * sizeof(float));
    r = (b & 1) ? kve_rope_shift(&s->cfg, x, p) : kve_rope_apply(&s->cfg, x, p);
    FZ_ASSERT(fz_named(r), "unnamed RoPE result");
    if (r != KVE_OK) {
        FZ_ASSERT(memcmp(x, y, d * sizeof(float)) == 0, "a failed rotation changed its vector");
        FZ_ASSERT(r == KVE_ERROR_POSITION || r == KVE_ERROR_NOT_FINITE, "RoPE failed with %s", kve_result_string(r));
        FZ_ASSERT(r != KVE_ERROR_POSITION || p < 0 || p > KVE_MAX_POSITION, "POSITION for %lld", (long long)p);
    } else if (xv.tame) {
        for (i = 0; i < d; i++) { n0 += (double)y[i] * y[i]; n1 += (double)x[i] * x[i]; }
        FZ_ASSERT(fabs(sqrt(n1) - sqrt(n0)) <= 1e-5 * sqrt(n0) + 1e-6, "rotation changed the norm: %g -> %g",
                  sqrt(n0), sqrt(n1));
        if (kve_rope_shift(&s->cfg, x, -p) == KVE_OK && llabs((long long)p) < ((long long)1 << 30)) {
            for (i = 0; i < d; i++) e = fmax(e, fabs((double)x[i] - y[i]));
            FZ_ASSERT(e < 1e-4, "R(-p)R(p) is not the identity: error %g at p = %lld", e, (long long)p);
        }
    }
    free(x); free(y);
}

static void op_blocks(fz_state *s, fz_in *f)
{
    unsigned b = fz_byte(f);
    int32_t n = (int32_t)(fz_byte(f) % 50) - (b & 0x80 ? 1 : 0), k = (int32_t)(fz_byte(f) % 52) - 1, i, j;
    int32_t kernel = (int32_t)(fz_byte(f) % 10) - 1, nn = n > 0 ? n : 1;
    float *in = (float *)fz_alloc((size_t)nn * sizeof(float)), *out = (float *)fz_alloc((size_t)nn * sizeof(float));
    unsigned char *keep = (unsigned char *)fz_alloc((size_t)nn);
    int32_t *order = (int32_t *)fz_alloc((size_t)nn * sizeof(int32_t));
    int32_t *bud = (int32_t *)fz_alloc(70 * sizeof(int32_t));
    kve_pooling mode = (kve_pooling)((b >> 1) % 5);
    kve_result r;
    fz_vec iv;
    (void)s;
    iv = fz_values(f, in, (size_t)nn);
    for (i = 0; i < nn; i++)
        if ((b & 0x40) && i % 5 == 0) in[i] = NAN;
    switch (b % 3) {
    case 0:
        r = kve_pool1d(in, n, kernel, mode, (b & 0x20) ? in : out);
        FZ_ASSERT(fz_named(r), "unnamed pool1d result");
        if (r == KVE_OK && !(b & 0x20) && !(b & 0x40) && iv.finite && n > 0 &&
            (mode == KVE_POOL_MAX || mode == KVE_POOL_DEFAULT))
            for (i = 0; i < n; i++) {
                float m = in[i];
                for (j = i - kernel / 2; j <= i + kernel / 2; j++)
                    if (j >= 0 && j < n && in[j] > m) m = in[j];
                FZ_ASSERT(out[i] == m, "max pooling: %g, expected %g", out[i], m);
            }
        break;
    case 1:
        r = kve_select_top(in, n, k, keep, order);
        FZ_ASSERT(fz_named(r), "unnamed select_top result");
        FZ_ASSERT(r == KVE_OK || n < 0 || k < 0 || k > n, "select_top failed with %s", kve_result_string(r));
        if (r == KVE_OK) {
            int32_t marked = 0;
            for (i = 0; i < n; i++) marked += keep[i] != 0;
            FZ_ASSERT(marked == k, "select_top marked %d of %d", (int)marked, (int)k);
            for (i = 0; i < n; i++) /* nothing left out ranks before anything kept */
                for (j = 0; j < n; j++)
                    if (keep[i] && !keep[j]) {
                        int ni = in[i] != in[i], nj = in[j] != in[j], j_first;
                        if (ni != nj) j_first = ni;
                        else if (!ni && in[j] != in[i]) j_first = in[j] > in[i];
                        else j_first = j < i;
                        FZ_ASSERT(!j_first, "select_top dropped index %d for %d", (int)j, (int)i);
                    }
        }
        break;
    default: {
        int32_t budget = (int32_t)(fz_u16(f) % 300) - 5, window = (int32_t)(fz_byte(f) % 40) - 1;
        int32_t beta = (int32_t)(fz_byte(f) % 25) - 1, layers = (int32_t)(fz_byte(f) % 66) - 1;
        int64_t len = (int64_t)fz_u16(f) << (fz_byte(f) % 40);
        r = kve_pyramid_budgets(budget, window, beta, layers, len, (b & 0x10) ? NULL : bud);
        FZ_ASSERT(fz_named(r), "unnamed pyramid_budgets result");
        if (r == KVE_OK)
            for (i = 0; i + 1 < layers; i++)
                FZ_ASSERT(bud[i] >= bud[i + 1] && bud[i + 1] >= 0, "pyramid budgets grow with depth");
        break;
    }
    }
    free(in); free(out); free(keep); free(order); free(bud);
}

static void op_inspect(fz_state *s, fz_in *f)
{
    int32_t l = (int32_t)(fz_byte(f) % (unsigned)(s->L + 2)) - 1;
    int32_t h = (int32_t)(fz_byte(f) % (unsigned)(s->H + 2)) - 1;
    int32_t sl = (int32_t)(fz_byte(f) % (unsigned)(s->cap + 2)) - 1;
    int valid = l >= 0 && l < s->L && h >= 0 && h < s->Hk, i;
    int32_t n = kve_length(&s->c, l, h);
    int64_t p = kve_slot_position(&s->c, l, h, sl);
    float *kp = kve_key(&s->c, l, h, sl), *vp = kve_value(&s->c, l, h, sl);
    float *sc = kve_scores(&s->c, l, h);
    size_t total = 0;
    volatile float sink = 0;
    FZ_ASSERT(valid ? n >= 0 && n <= s->cap : n == -1, "kve_length(%d, %d) = %d", (int)l, (int)h, (int)n);
    FZ_ASSERT(valid && sl >= 0 && sl < n ? p >= 0 && p <= s->newest[l] : p == -1, "kve_slot_position = %lld", (long long)p);
    FZ_ASSERT((kp != NULL) == (valid && sl >= 0 && sl < s->cap) && (vp != NULL) == (kp != NULL), "kve_key/kve_value");
    if (kp)
        for (i = 0; i < s->d; i++) sink += kp[i] + vp[i]; /* inside the buffers: ASan would tell */
    {
        int has = s->rc.policy.kind == KVE_POLICY_H2O ||
                  s->rc.policy.kind == KVE_POLICY_OBSERVED_ATTENTION ||
                  s->rc.policy.kind == KVE_POLICY_SCORER ||
                  (s->rc.policy.kind == KVE_POLICY_CUSTOM && s->rc.policy.custom->wants_scores);
        FZ_ASSERT((sc != NULL) == (has && l >= 0 && l < s->L && h >= 0 && h < s->H), "kve_scores(%d, %d)",
                  (int)l, (int)h);
    }
    if (sc) {
        for (i = 0; i < s->cap; i++) sink += sc[i];
    }
    FZ_ASSERT(kve_newest_position(&s->c, l) == (l >= 0 && l < s->L ? s->newest[l] : -1),
              "kve_newest_position(%d) = %lld", (int)l, (long long)kve_newest_position(&s->c, l));
    FZ_ASSERT(kve_cache_config(&s->c) && memcmp(kve_cache_config(&s->c), &s->rc, sizeof s->rc) == 0,
              "kve_cache_config differs from the resolved configuration");
    if (l >= 0 && l < s->L) {
        int32_t bud = kve_layer_budget(&s->c, l), hh;
        size_t lb = kve_layer_bytes(&s->c, l);
        FZ_ASSERT(bud >= 1 && bud <= s->cap, "kve_layer_budget = %d", (int)bud);
        for (hh = 0; hh < s->Hk; hh++) total += (size_t)kve_length(&s->c, l, hh);
        FZ_ASSERT(lb == total * (size_t)s->d * 2 * sizeof(float), "kve_layer_bytes = %zu", lb);
    } else {
        FZ_ASSERT(kve_layer_budget(&s->c, l) == -1 && kve_layer_bytes(&s->c, l) == 0, "layer out of range");
    }
    (void)sink;
}

static void op_window_scores(fz_state *s, fz_in *f)
{
    int32_t l = (int32_t)(fz_byte(f) % (unsigned)s->L), h = (int32_t)(fz_byte(f) % (unsigned)s->Hk);
    kve_reduce red = (kve_reduce)(fz_byte(f) % 5);
    int32_t n = kve_length(&s->c, l, h), i;
    float *out = (float *)fz_alloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    kve_result r;
    fz_snap(s);
    r = kve_window_scores(&s->c, l, h, red, out);
    if (r != KVE_OK) {
        fz_failed(s, r, "kve_window_scores", 0);
        FZ_ASSERT(r == KVE_ERROR_NO_QUERIES || r == KVE_ERROR_INVALID_ENUM, "window scores: %s", kve_result_string(r));
    } else {
        /* each recorded query adds at most 1; TOVA records only the newest, whatever its window */
        int32_t recorded = s->rc.policy.kind == KVE_POLICY_TOVA ? 1 : s->rc.policy.window;
        double lim = (double)recorded * (red == KVE_REDUCE_SUM ? s->H / s->Hk : 1) * (1 + 1e-4);
        FZ_ASSERT(fz_unchanged(s), "kve_window_scores changed the cache");
        if (s->tame[l])
            for (i = 0; i < n; i++)
                FZ_ASSERT(out[i] >= 0 && out[i] <= lim, "window score %g outside [0, %g]", out[i], lim);
    }
    free(out);
}

static void run_input(const uint8_t *data, size_t size)
{
    fz_in f;
    fz_state s;
    int op;
    memset(&s, 0, sizeof s);
    f.p = data; f.n = size; f.i = 0;
    if (!fz_open(&s, &f)) {
        fz_close(&s);
        return;
    }
    fz_check(&s, "init");
    for (op = 0; op < MAX_OPS && fz_more(&f); op++) {
        unsigned kind = fz_byte(&f);
        const char *name = "?";
        switch (kind % 16) {
        case 0: case 1: case 2: case 3: case 4: op_store(&s, &f); name = "store"; break;
        case 5: case 6: op_attend(&s, &f); name = "attend"; break;
        case 7: op_prefill(&s, &f); name = "prefill"; break;
        case 8: op_compress(&s, &f); name = "compress"; break;
        case 9: op_keep_slots(&s, &f); name = "keep_slots"; break;
        case 10:
            if (fz_byte(&f) % 4 == 0) {
                int32_t l;
                FZ_ASSERT(kve_cache_reset(&s.c) == KVE_OK, "reset failed");
                for (l = 0; l < s.L; l++) {
                    s.newest[l] = -1; s.vmax[l] = 0; s.tame[l] = 1;
                    FZ_ASSERT(kve_length(&s.c, l, 0) == 0, "reset kept tokens");
                }
            }
            name = "reset";
            break;
        case 11: op_rope(&s, &f); name = "rope"; break;
        case 12: op_window_scores(&s, &f); name = "window_scores"; break;
        case 13: op_blocks(&s, &f); name = "building blocks"; break;
        default: op_inspect(&s, &f); name = "inspection"; break;
        }
        fz_check(&s, name);
        if (g_trace) {
            int32_t l;
            fprintf(stderr, "  %-16s lengths", name);
            for (l = 0; l < s.L; l++) fprintf(stderr, " %d", (int)kve_length(&s.c, l, 0));
            fputc('\n', stderr);
        }
    }
    fz_close(&s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    run_input(data, size);
    return 0;
}

#ifdef FUZZ_STANDALONE
int main(int argc, char **argv)
{
    int i, ran = 0;
    const char *t = getenv("FUZZ_TRACE");
    g_trace = t && *t && strcmp(t, "0") != 0;
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--random") == 0 && i + 1 < argc) {
            long n = strtol(argv[++i], NULL, 10), j;
            uint32_t seed = 2463534242u;
            uint8_t buf[4096];
            for (j = 0; j < n; j++) {
                size_t len = 16 + fz_rng(&seed) % (sizeof buf - 16), b;
                for (b = 0; b < len; b++) buf[b] = (uint8_t)fz_rng(&seed);
                /* mostly well-formed: valid heads, stores and attends */
                buf[1] &= 0x7f;
                buf[3] = (uint8_t)(buf[3] % 40);
                run_input(buf, len);
                ran++;
            }
        } else {
            FILE *fp = fopen(argv[i], "rb");
            static uint8_t buf[1 << 20];
            size_t len;
            if (!fp) {
                fprintf(stderr, "cannot open %s\n", argv[i]);
                return 2;
            }
            len = fread(buf, 1, sizeof buf, fp);
            fclose(fp);
            run_input(buf, len);
            ran++;
        }
    }
    printf("fuzz_kvevict: %d inputs ran without a finding\n", ran);
    return 0;
}
#endif
