/* Reliability tests for kvevict.h:
     nothing lost   every policy through a prompt and 5,000 decode steps; after every step each kept
                    slot must hold exactly the K/V written for its position, the kept set must be the
                    one the policy's rules give (an independent model of each policy), protected tokens
                    must be present, kve_check() must pass, and nothing outside the vectors is written
     bad input      every public function with NULL pointers, zero/negative sizes, short buffers,
                    overlapping strides, misaligned pointers, mismatched heads: a named error each, and
                    a failed call leaves the cache as it was
     determinism    every policy keeps the same slots and gives bit-identical outputs with 1 and 2
                    OpenMP threads and from run to run
     checker        kve_check() notices broken bookkeeping
     regressions    defects found in kvevict.h, one minimal test each; the comment above each states
                    the defect as found and the contract the test holds the library to
   KVEVICT_LONG=1 in the environment runs ten times as many decode steps; KVEVICT_QUICK=1 a tenth of
   them (for slow checkers such as valgrind). */
#define KVEVICT_IMPLEMENTATION
#include "kvevict.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

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

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RL_CLANG_SANITIZED 1
#endif
#endif

/* ---- counters -------------------------------------------------------------------------------- */
static int g_passed, g_failed;
static const char *g_test = "";

#define EXPECT(cond, ...)                                                                  \
    do {                                                                                   \
        if (cond) {                                                                        \
            g_passed++;                                                                    \
        } else {                                                                           \
            g_failed++;                                                                    \
            fprintf(stderr, "FAIL [%s] %s:%d: ", g_test, __FILE__, __LINE__);              \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fputc('\n', stderr);                                                           \
        }                                                                                  \
    } while (0)

#define EXPECT_RESULT(expr, want)                                                          \
    do {                                                                                   \
        kve_result r_ = (expr);                                                            \
        EXPECT(r_ == (want), "%s returned %d (%s), expected %s", #expr, (int)r_,           \
               kve_result_string(r_), #want);                                              \
    } while (0)

static int g_long, g_quick; /* KVEVICT_LONG, KVEVICT_QUICK */

static void *xalloc(size_t bytes)
{
    void *p = calloc(bytes ? bytes : 1, 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(3);
    }
    return p;
}

/* ---- recognisable values ------------------------------------------------------------------- */
static uint32_t mix32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

enum { PAT_K = 1, PAT_V = 2, PAT_Q = 3 };

/* a value in [-1, 1), exact in float, that depends on (what, layer, head, position, index) */
static float pattern(uint32_t what, int32_t l, int32_t h, int64_t pos, int32_t i)
{
    uint32_t x = mix32(what * 0x9e3779b9u ^ (uint32_t)l);
    x = mix32(x ^ (uint32_t)h * 0x85ebca6bu);
    x = mix32(x ^ (uint32_t)(uint64_t)pos);
    x = mix32(x ^ (uint32_t)((uint64_t)pos >> 32));
    x = mix32(x ^ (uint32_t)i * 0xc2b2ae35u);
    return (float)((int32_t)(x >> 8) - (1 << 23)) / 8388608.0f;
}

static uint64_t g_rng = 0x243f6a8885a308d3ull;
static void rng_seed(uint64_t s) { g_rng = s * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull; }
static uint64_t rng_next(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}
static float rng_float(void) /* [-1, 1) */
{
    return (float)((int32_t)(rng_next() >> 40) - (1 << 23)) / 8388608.0f;
}

static int same_bits(float a, float b)
{
    uint32_t x, y;
    memcpy(&x, &a, 4);
    memcpy(&y, &b, 4);
    return x == y;
}

/* ---- reference RoPE in double (written for these tests) ------------------------------------- */
/* rc: a resolved config */
static void ref_rotate(const kve_config *rc, double *x, double pos)
{
    int32_t half = rc->rope_dims / 2, i;
    if (rc->rope_layout == KVE_ROPE_NONE) return;
    for (i = 0; i < half; i++) {
        double f = pow(rc->rope_theta, -2.0 * (double)i / (double)rc->rope_dims);
        double a = pos / rc->rope_linear_factor * f, cs = cos(a), sn = sin(a);
        int32_t ia = rc->rope_layout == KVE_ROPE_HALF ? i : 2 * i;
        int32_t ib = rc->rope_layout == KVE_ROPE_HALF ? i + half : 2 * i + 1;
        double xa = x[ia], xb = x[ib];
        x[ia] = xa * cs - xb * sn;
        x[ib] = xb * cs + xa * sn;
    }
}

/* ---- a cache over buffers with guard zones and padding that must stay untouched ------------- */
#define GUARD 64
static const uint32_t SENTINEL = 0x7fa5a5a5u; /* a NaN nobody writes by accident */

typedef struct tcache {
    kve_cache c;
    kve_config cfg, rc; /* as given, resolved */
    float *kraw, *vraw, *k, *v;
    size_t floats;          /* floats handed to the library per buffer */
    unsigned char *covered; /* [floats] 1 where some (layer, head, slot) vector lives */
    void *mem;
    size_t bytes;
    size_t ls, hs, ss;
} tcache;

static void fill_sentinel(float *x, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) memcpy(&x[i], &SENTINEL, 4);
}

static kve_result tc_open(tcache *t, const kve_config *cfg, kve_layout layout)
{
    kve_buffers b;
    kve_result r;
    size_t L, Hk, cap, d, l, h, s, i, lib_floats;
    memset(t, 0, sizeof *t);
    t->cfg = *cfg;
    if ((r = kve_config_resolve(cfg, &t->rc)) != KVE_OK) return r;
    L = (size_t)t->rc.n_layers; Hk = (size_t)t->rc.n_kv_heads;
    cap = (size_t)t->rc.capacity; d = (size_t)t->rc.head_dim;
    if (layout == KVE_LAYOUT_DEFAULT) {
        t->ss = Hk * d; t->hs = d; t->ls = cap * Hk * d;
    } else if (layout == KVE_LAYOUT_HEAD_MAJOR) {
        t->ss = d; t->hs = cap * d; t->ls = Hk * cap * d;
    } else { /* padded head-major: gaps between vectors, heads and layers */
        t->ss = d + 3; t->hs = cap * t->ss + 5; t->ls = Hk * t->hs + 7;
    }
    t->floats = (L - 1) * t->ls + (Hk - 1) * t->hs + (cap - 1) * t->ss + d +
                (layout == KVE_LAYOUT_STRIDES ? 2 : 0);
    if (layout != KVE_LAYOUT_STRIDES) {
        if ((r = f32_buffer_floats(cfg, layout, &lib_floats)) != KVE_OK) return r;
        EXPECT(lib_floats == t->floats, "kve_buffer_floats gave %zu floats, layout needs %zu",
               lib_floats, t->floats);
    }
    t->kraw = (float *)xalloc((t->floats + 2 * GUARD) * sizeof(float));
    t->vraw = (float *)xalloc((t->floats + 2 * GUARD) * sizeof(float));
    fill_sentinel(t->kraw, t->floats + 2 * GUARD);
    fill_sentinel(t->vraw, t->floats + 2 * GUARD);
    t->k = t->kraw + GUARD;
    t->v = t->vraw + GUARD;
    t->covered = (unsigned char *)xalloc(t->floats);
    for (l = 0; l < L; l++)
        for (h = 0; h < Hk; h++)
            for (s = 0; s < cap; s++)
                for (i = 0; i < d; i++) t->covered[l * t->ls + h * t->hs + s * t->ss + i] = 1;
    if ((r = kve_cache_size(cfg, &t->bytes)) != KVE_OK) return r;
    t->mem = xalloc(t->bytes);
    memset(&b, 0, sizeof b);
    b.k = t->k; b.v = t->v;
    b.k_bytes = sizeof(float) * (t->floats); b.v_bytes = sizeof(float) * (t->floats);
    b.layout = layout;
    if (layout == KVE_LAYOUT_STRIDES) {
        b.k_layer_stride = b.v_layer_stride = f32_stride(t->ls); b.k_head_stride = b.v_head_stride = f32_stride(t->hs); b.k_slot_stride = b.v_slot_stride = f32_stride(t->ss);
    }
    return kve_cache_init(cfg, &b, t->mem, t->bytes, &t->c);
}

/* floats outside every vector (guards, padding) that no longer hold the sentinel */
static size_t tc_touched_outside(const tcache *t)
{
    size_t i, bad = 0, n = t->floats + 2 * GUARD;
    uint32_t x, y;
    for (i = 0; i < n; i++) {
        int inside = i >= GUARD && i < GUARD + t->floats && t->covered[i - GUARD];
        if (inside) continue;
        memcpy(&x, &t->kraw[i], 4);
        memcpy(&y, &t->vraw[i], 4);
        bad += (x != SENTINEL) + (y != SENTINEL);
    }
    return bad;
}

static void tc_close(tcache *t)
{
    free(t->kraw); free(t->vraw); free(t->covered); free(t->mem);
    memset(t, 0, sizeof *t);
}

static kve_config base_config(int32_t L, int32_t H, int32_t Hk, int32_t d, int32_t cap)
{
    kve_config c;
    memset(&c, 0, sizeof c);
    c.n_layers = L; c.n_heads = H; c.n_kv_heads = Hk; c.head_dim = d; c.capacity = cap;
    return c;
}

/* ============================================================================================= */
/* Nothing lost                                                                                   */
/* ============================================================================================= */

/* user policies for the test: 1 overwrites the oldest slot, 2 drops the two oldest via keep_slots */
static kve_result cp_oldest(kve_cache *c, int32_t l, int32_t *ws, void *u)
{
    int32_t h, s, Hk = c->cfg.n_kv_heads, budget = kve_layer_budget(c, l);
    (void)u;
    for (h = 0; h < Hk; h++) {
        int32_t n = kve_length(c, l, h), best = -1;
        if (n < budget) continue;
        for (s = 0; s < n; s++)
            if (best < 0 || kve_slot_position(c, l, h, s) < kve_slot_position(c, l, h, best)) best = s;
        ws[h] = best;
    }
    return KVE_OK;
}

static kve_result cp_drop2(kve_cache *c, int32_t l, int32_t *ws, void *u)
{
    int32_t h, s, Hk = c->cfg.n_kv_heads, budget = kve_layer_budget(c, l);
    unsigned char keep[256];
    (void)ws; (void)u;
    for (h = 0; h < Hk; h++) {
        int32_t n = kve_length(c, l, h), a = -1, b = -1;
        kve_result r;
        if (n < budget) continue;
        if (n > 256) return KVE_ERROR_POLICY_FAILED;
        for (s = 0; s < n; s++) {
            int64_t p = kve_slot_position(c, l, h, s);
            if (a < 0 || p < kve_slot_position(c, l, h, a)) { b = a; a = s; }
            else if (b < 0 || p < kve_slot_position(c, l, h, b)) b = s;
        }
        for (s = 0; s < n; s++) keep[s] = s != a && s != b;
        if ((r = kve_keep_slots(c, l, h, keep)) != KVE_OK) return r;
    }
    return KVE_OK;
}

static const kve_policy_vtable vt_oldest = {"test-oldest", 0, cp_oldest, NULL};
static const kve_policy_vtable vt_drop2 = {"test-drop2", 1, cp_drop2, NULL};

typedef struct nl_spec {
    const char *name;
    kve_policy_kind kind;
    kve_key_storage storage;
    kve_rope_layout rope;
    kve_layout layout;
    int32_t n_layers, n_heads, n_kv_heads, head_dim, capacity;
    int32_t budget, window, kernel, sinks, evict_batch, beta;
    kve_pooling pooling;
    kve_reduce gqa;
    kve_pos_shift pos_shift;
    int custom; /* 1: vt_oldest, 2: vt_drop2 */
    int32_t prompt, steps, attend_every;
    int32_t gap; /* 0: positions 0, 1, 2, ...; g: every third token skips g positions */
} nl_spec;

typedef struct nl_state {
    const nl_spec *sp;
    tcache t;
    int32_t L, H, Hk, G, d, cap, S, W;
    kve_policy_kind kind;
    int64_t npos;      /* positions used: 0 .. npos-1 */
    int64_t stored;    /* tokens stored per layer so far */
    int compressed;
    int64_t *mpos;     /* model: [L][Hk][cap] kept positions, ascending */
    int32_t *mlen;     /* [L][Hk] */
    int32_t *lbud;     /* [L] decode budget */
    float *mscore;     /* [L][H][npos] accumulated attention per position (policies with scores) */
    float *expk;       /* [L][Hk][npos][d] key expected in the slot of a position */
    float *expv;       /* [L][Hk][npos][d] value written for a position */
    int32_t *slot_of;  /* [npos] scratch: slot of a position */
    int64_t *mark;     /* [npos] scratch for set comparison */
    int64_t round;
    int64_t *prev_pos; /* [L][cap] StreamingLLM: slot positions of head 0 before the step */
    int64_t evicted;   /* StreamingLLM: the position the model evicts for this token, or -1 */
    float *q, *out, *w, *kin, *vin, *fs, *seq;
    int32_t *slots;
    unsigned char *keep;
    int reported;
} nl_state;

/* the position of the t-th token stored */
static int64_t pos_of(const nl_state *s, int64_t t) { return t + (int64_t)s->sp->gap * (t / 3); }

static int64_t *m_pos(nl_state *s, int32_t l, int32_t h)
{
    return s->mpos + ((size_t)l * (size_t)s->Hk + (size_t)h) * (size_t)s->cap;
}
static int32_t *m_len(nl_state *s, int32_t l, int32_t h) { return s->mlen + (size_t)l * (size_t)s->Hk + (size_t)h; }
static float *m_score(nl_state *s, int32_t l, int32_t head)
{
    return s->mscore + ((size_t)l * (size_t)s->H + (size_t)head) * (size_t)s->npos;
}
static float *m_expk(nl_state *s, int32_t l, int32_t h, int64_t pos)
{
    return s->expk + (((size_t)l * (size_t)s->Hk + (size_t)h) * (size_t)s->npos + (size_t)pos) * (size_t)s->d;
}

static float *m_expv(nl_state *s, int32_t l, int32_t h, int64_t pos)
{
    return s->expv + (((size_t)l * (size_t)s->Hk + (size_t)h) * (size_t)s->npos + (size_t)pos) * (size_t)s->d;
}

static void m_keep(nl_state *s, int32_t l, int32_t h, const unsigned char *keep)
{
    int64_t *p = m_pos(s, l, h);
    int32_t n = *m_len(s, l, h), i, o = 0;
    for (i = 0; i < n; i++)
        if (keep[i]) p[o++] = p[i];
    *m_len(s, l, h) = o;
}

/* reference pooling: MAX over the window clipped to [0, n); AVG sums it and divides by kernel */
static void ref_pool(const float *in, int32_t n, int32_t kernel, kve_pooling mode, float *out)
{
    int32_t i, j, half = kernel / 2;
    for (i = 0; i < n; i++) {
        int32_t lo = i - half < 0 ? 0 : i - half, hi = i + half > n - 1 ? n - 1 : i + half;
        float a = mode == KVE_POOL_MAX ? -INFINITY : 0.0f;
        for (j = lo; j <= hi; j++) a = mode == KVE_POOL_MAX ? (in[j] > a ? in[j] : a) : a + in[j];
        out[i] = mode == KVE_POOL_MAX ? a : a / (float)kernel;
    }
}

/* keep[i] = 1 for the k best of score[0..n): higher first, ties to the lower index, NaN last */
static void ref_top(const float *score, int32_t n, int32_t k, unsigned char *keep)
{
    int32_t r, i;
    memset(keep, 0, (size_t)n);
    for (r = 0; r < k; r++) {
        int32_t best = -1;
        for (i = 0; i < n; i++) {
            if (keep[i]) continue;
            if (best < 0) { best = i; continue; }
            if (score[best] != score[best]) { if (score[i] == score[i]) best = i; continue; }
            if (score[i] > score[best]) best = i;
        }
        keep[best] = 1;
    }
}

static float reduce_group(const float *x, int32_t G, size_t stride, kve_reduce mode)
{
    float a = x[0];
    int32_t g;
    for (g = 1; g < G; g++) {
        float y = x[(size_t)g * stride];
        a = mode == KVE_REDUCE_MAX ? (y > a ? y : a) : a + y;
    }
    return mode == KVE_REDUCE_MEAN ? a / (float)G : a;
}

/* reference shrink: keep the `protect` newest and the best target-protect older by score
   (score[j] for the model's j-th oldest token), pooled if asked */
static void m_shrink(nl_state *s, int32_t l, int32_t h, int32_t target, int32_t protect,
                     const float *score, int pool)
{
    const kve_policy_config *p = &s->t.rc.policy;
    int32_t n = *m_len(s, l, h), prefix, j;
    if (target >= n) return;
    if (protect > target) protect = target;
    prefix = n - protect;
    if (pool && p->kernel > 1) ref_pool(score, prefix, p->kernel, p->pooling, s->seq);
    else memcpy(s->seq, score, (size_t)prefix * sizeof(float));
    ref_top(s->seq, prefix, target - protect, s->keep);
    for (j = prefix; j < n; j++) s->keep[j] = 1;
    m_keep(s, l, h, s->keep);
}

/* window scores of (l, h) from the library, in the model's token order */
static int window_scores_by_token(nl_state *s, int32_t l, int32_t h, float *out)
{
    int32_t n = kve_length(&s->t.c, l, h), j, sl;
    kve_result r = kve_window_scores(&s->t.c, l, h, s->t.rc.policy.gqa, s->fs);
    if (r != KVE_OK) return 0;
    for (sl = 0; sl < n; sl++) s->slot_of[kve_slot_position(&s->t.c, l, h, sl)] = sl;
    for (j = 0; j < *m_len(s, l, h); j++) out[j] = s->fs[s->slot_of[m_pos(s, l, h)[j]]];
    return 1;
}

/* group-reduced accumulated scores of (l, h) from the model, in token order */
static void acc_scores_by_token(nl_state *s, int32_t l, int32_t h, float *out)
{
    int32_t j;
    for (j = 0; j < *m_len(s, l, h); j++)
        out[j] = reduce_group(m_score(s, l, h * s->G) + m_pos(s, l, h)[j], s->G, (size_t)s->npos,
                              s->t.rc.policy.gqa);
}

static int64_t ref_pyramid_prefix(int64_t C, int64_t w, int64_t beta, int64_t nl, int64_t layer,
                                  int64_t len)
{
    int64_t mn, mx;
    if (len < C) return -1;
    if (len < 2 * (C - w)) return C - w;
    mn = (C - w) / beta;
    mx = 2 * (C - w) - mn;
    if (mx >= len - w) {
        mx = len - w;
        mn = 2 * (C - w) - mx;
    }
    if (nl == 1) return C - w;
    return mx - layer * ((mx - mn) / (nl - 1));
}

static void nl_fail(nl_state *s, int *ok, const char *fmt, int64_t a, int64_t b, int64_t c)
{
    *ok = 0;
    if (s->reported < 5) {
        s->reported++;
        fprintf(stderr, "FAIL [nothing lost: %s] ", s->sp->name);
        fprintf(stderr, fmt, (long long)a, (long long)b, (long long)c);
        fputc('\n', stderr);
    }
}

/* the effective position the key of kept token j of (l, h) is rotated at (post-RoPE storage) */
static int64_t nl_eff(nl_state *s, int32_t l, int32_t h, int32_t j)
{
    const int64_t *p = m_pos(s, l, h);
    int32_t n = *m_len(s, l, h);
    if (s->kind == KVE_POLICY_STREAMINGLLM && s->t.rc.policy.pos_shift == KVE_POS_SHIFT_ON &&
        j < s->S && n > s->S)
        return p[s->S] - s->S + j; /* the sinks sit right before the oldest recent token */
    return p[j];
}

/* compares the library's state with the model; returns 1 if all agree */
static int nl_verify(nl_state *s, int64_t step, int deep)
{
    int ok = 1;
    int32_t l, h, j, sl, i, d = s->d;
    kve_cache *c = &s->t.c;
    kve_result r = kve_check(c);
    size_t bytes = 0;
    if (r != KVE_OK) nl_fail(s, &ok, "step %lld: kve_check returned %lld%.0lld", step, r, 0);
    for (l = 0; l < s->L; l++) {
        for (h = 0; h < s->Hk; h++) {
            int32_t n = kve_length(c, l, h), mn = *m_len(s, l, h);
            const int64_t *mp = m_pos(s, l, h);
            bytes += (size_t)n;
            if (n != mn) {
                nl_fail(s, &ok, "step %lld: layer/head %lld holds %lld tokens", step, l * 100 + h, n);
                nl_fail(s, &ok, "step %lld: ... the policy keeps %lld%.0lld", step, mn, 0);
                continue;
            }
            /* same set of positions: mark the model's, then visit the library's */
            s->round += 2;
            for (j = 0; j < mn; j++) s->mark[mp[j]] = s->round;
            for (sl = 0; sl < n; sl++) {
                int64_t p = kve_slot_position(c, l, h, sl);
                if (p < 0 || p >= s->npos || s->mark[p] != s->round) {
                    nl_fail(s, &ok, "step %lld: slot %lld holds position %lld, not kept by the policy "
                            "(or twice)", step, sl, p);
                    continue;
                }
                s->mark[p] = s->round + 1;
                s->slot_of[p] = sl;
            }
            if (!ok) continue;
            /* protected tokens */
            if (s->stored > 0 && mp[mn - 1] != pos_of(s, s->stored - 1))
                nl_fail(s, &ok, "step %lld: newest position %lld missing (head %lld)", step,
                        pos_of(s, s->stored - 1), h);
            if (s->kind == KVE_POLICY_STREAMINGLLM) {
                int64_t recent = s->t.rc.policy.budget - s->S;
                for (j = 0; j < s->S && j < s->stored; j++)
                    if (mp[j] != pos_of(s, j))
                        nl_fail(s, &ok, "step %lld: sink %lld missing (head %lld)", step, pos_of(s, j), h);
                for (j = 0; j < recent && j < s->stored - s->S; j++)
                    if (mp[mn - 1 - j] != pos_of(s, s->stored - 1 - j))
                        nl_fail(s, &ok, "step %lld: recent position %lld missing (head %lld)", step,
                                pos_of(s, s->stored - 1 - j), h);
            } else if (s->compressed && s->kind != KVE_POLICY_FULL && s->kind != KVE_POLICY_CUSTOM) {
                for (j = 0; j < s->W && j < mn; j++)
                    if (mp[mn - 1 - j] != pos_of(s, s->stored - 1 - j))
                        nl_fail(s, &ok, "step %lld: window position %lld missing (head %lld)", step,
                                pos_of(s, s->stored - 1 - j), h);
            }
            /* contents */
            for (j = 0; j < mn; j++) {
                int64_t p = mp[j], eff = nl_eff(s, l, h, j);
                const float *kp = kve_key(c, l, h, s->slot_of[p]), *vp = kve_value(c, l, h, s->slot_of[p]);
                const float *ek = m_expk(s, l, h, p), *ev = m_expv(s, l, h, p);
                double sink[KVE_MAX_HEAD_DIM];
                if (!kp || !vp) {
                    nl_fail(s, &ok, "step %lld: no key/value pointer for slot %lld%.0lld", step,
                            s->slot_of[p], 0);
                    continue;
                }
                for (i = 0; i < d; i++)
                    if (!same_bits(vp[i], ev[i])) {
                        nl_fail(s, &ok, "step %lld: value of position %lld wrong at %lld", step, p, i);
                        break;
                    }
                if (eff != p) { /* a re-rotated sink */
                    for (i = 0; i < d; i++) sink[i] = pattern(PAT_K, l, h, p, i);
                    ref_rotate(&s->t.rc, sink, (double)eff);
                }
                for (i = 0; i < d; i++) {
                    double want = eff != p ? sink[i] : (double)ek[i];
                    int good = s->t.rc.key_storage == KVE_KEYS_PRE_ROPE ? same_bits(kp[i], ek[i])
                                                                        : fabs(kp[i] - want) <= 1e-5;
                    if (!good) {
                        nl_fail(s, &ok, "step %lld: key of position %lld wrong at %lld", step, p, i);
                        break;
                    }
                }
                if (deep && s->t.rc.key_storage == KVE_KEYS_POST_ROPE) {
                    /* undo the rotation with the library's own shift: back to the written key */
                    float x[KVE_MAX_HEAD_DIM];
                    memcpy(x, kp, (size_t)d * sizeof(float));
                    if (kve_rope_shift(&s->t.cfg, x, -eff) != KVE_OK)
                        nl_fail(s, &ok, "step %lld: kve_rope_shift(-%lld) failed%.0lld", step, eff, 0);
                    for (i = 0; i < d; i++)
                        if (fabs(x[i] - pattern(PAT_K, l, h, p, i)) > 2e-5) {
                            nl_fail(s, &ok, "step %lld: un-rotated key of position %lld wrong at %lld",
                                    step, p, i);
                            break;
                        }
                }
            }
            /* accumulated scores travel with their tokens */
            if (s->mscore) {
                int32_t g;
                for (g = 0; g < s->G; g++) {
                    const float *row = kve_scores(c, l, h * s->G + g);
                    if (!row) {
                        nl_fail(s, &ok, "step %lld: kve_scores(%lld, %lld) is NULL", step, l, h * s->G + g);
                        continue;
                    }
                    for (j = 0; j < mn; j++) {
                        int64_t p = mp[j];
                        if (!same_bits(row[s->slot_of[p]], m_score(s, l, h * s->G + g)[p])) {
                            nl_fail(s, &ok, "step %lld: score of position %lld (query head %lld) wrong",
                                    step, p, h * s->G + g);
                            break;
                        }
                    }
                }
            }
        }
    }
    if (kve_bytes_in_use(c) != bytes * (size_t)d * 2 * sizeof(float))
        nl_fail(s, &ok, "step %lld: kve_bytes_in_use %lld, lengths say %lld", step,
                (int64_t)kve_bytes_in_use(c), (int64_t)(bytes * (size_t)d * 2 * sizeof(float)));
    if (deep && tc_touched_outside(&s->t))
        nl_fail(s, &ok, "step %lld: %lld floats outside the vectors were written%.0lld", step,
                (int64_t)tc_touched_outside(&s->t), 0);
    return ok;
}

/* what the policy must do to (l, *) before the token at `pos` is stored */
static int nl_predict(nl_state *s, int32_t l)
{
    int32_t h, need = 0, budget = s->lbud[l];
    const kve_policy_config *p = &s->t.rc.policy;
    for (h = 0; h < s->Hk; h++)
        if (*m_len(s, l, h) >= (s->compressed || s->kind == KVE_POLICY_STREAMINGLLM ||
                                        s->kind == KVE_POLICY_CUSTOM ? budget : s->cap))
            need = 1;
    s->evicted = -1;
    if (!need) return 1;
    if (s->kind == KVE_POLICY_STREAMINGLLM) s->evicted = m_pos(s, l, 0)[s->S];
    for (h = 0; h < s->Hk; h++) {
        int32_t n = *m_len(s, l, h);
        switch (s->kind) {
        case KVE_POLICY_STREAMINGLLM: /* the oldest recent token goes */
            memset(s->keep, 1, (size_t)n);
            s->keep[s->S] = 0;
            m_keep(s, l, h, s->keep);
            break;
        case KVE_POLICY_SNAPKV:
        case KVE_POLICY_PYRAMIDKV: {
            int32_t target = budget - p->evict_batch;
            if (n < budget) break;
            if (target < p->window) target = p->window;
            if (target >= budget) target = budget - 1;
            if (!window_scores_by_token(s, l, h, s->fs + s->cap)) return 0;
            m_shrink(s, l, h, target, p->window, s->fs + s->cap, 1);
            break;
        }
        case KVE_POLICY_H2O: {
            int32_t j, victim = -1;
            float best = 0.0f;
            if (n < budget) break;
            acc_scores_by_token(s, l, h, s->fs + s->cap);
            if (n > budget) {
                m_shrink(s, l, h, budget - 1, p->window - 1, s->fs + s->cap, 0);
                break;
            }
            /* the lightest token outside the window-1 newest (the new one completes the window) */
            for (j = 0; j < n - (p->window - 1); j++)
                if (victim < 0 || s->fs[s->cap + j] < best) {
                    victim = j;
                    best = s->fs[s->cap + j];
                }
            memset(s->keep, 1, (size_t)n);
            if (victim >= 0) s->keep[victim] = 0;
            m_keep(s, l, h, s->keep);
            break;
        }
        case KVE_POLICY_CUSTOM:
            if (n < budget) break;
            memset(s->keep, 1, (size_t)n);
            s->keep[0] = 0;
            if (s->sp->custom == 2) s->keep[1] = 0;
            m_keep(s, l, h, s->keep);
            break;
        default:
            break;
        }
    }
    return 1;
}

/* stores position pos in every layer (attending after each if asked); returns 0 on a failure */
static int nl_token(nl_state *s, int64_t pos, int attend, int64_t step)
{
    int32_t l, h, i, g, ok = 1;
    kve_cache *c = &s->t.c;
    for (l = 0; l < s->L; l++) {
        kve_result r;
        if (s->kind == KVE_POLICY_STREAMINGLLM)
            for (i = 0; i < s->cap; i++) s->prev_pos[(size_t)l * (size_t)s->cap + (size_t)i] = kve_slot_position(c, l, 0, i);
        if (!nl_predict(s, l)) {
            nl_fail(s, &ok, "step %lld: window scores unavailable before storing %lld%.0lld", step, pos, 0);
            return 0;
        }
        for (h = 0; h < s->Hk; h++)
            for (i = 0; i < s->d; i++) {
                s->kin[h * s->d + i] = pattern(PAT_K, l, h, pos, i);
                s->vin[h * s->d + i] = pattern(PAT_V, l, h, pos, i);
            }
        r = kve_store(c, l, pos, s->kin, s->vin, s->slots);
        if (r != KVE_OK) {
            nl_fail(s, &ok, "step %lld: kve_store(layer %lld) returned %lld", step, l, r);
            return 0;
        }
        for (h = 0; h < s->Hk; h++) {
            int64_t *mp = m_pos(s, l, h);
            mp[(*m_len(s, l, h))++] = pos;
            if (kve_slot_position(c, l, h, s->slots[h]) != pos)
                nl_fail(s, &ok, "step %lld: the slot kve_store reported does not hold %lld%.0lld", step, pos, 0);
        }
        if (s->kind == KVE_POLICY_STREAMINGLLM) {
            /* eviction overwrites the oldest recent slot and nothing else moves */
            const int64_t *prev = s->prev_pos + (size_t)l * (size_t)s->cap;
            for (i = 0; i < s->cap; i++) {
                int64_t now = kve_slot_position(c, l, 0, i);
                if (i == s->slots[0]) {
                    if (prev[i] != s->evicted)
                        nl_fail(s, &ok, "step %lld: slot %lld held %lld, not the oldest recent token",
                                step, i, prev[i]);
                } else if (now != prev[i]) {
                    nl_fail(s, &ok, "step %lld: slot %lld changed from %lld", step, i, prev[i]);
                }
            }
        }
        if (attend) {
            kve_attend_options opt;
            memset(&opt, 0, sizeof opt);
            opt.weights = s->w;
            for (i = 0; i < s->H * s->d; i++) s->q[i] = pattern(PAT_Q, l, i / s->d, pos, i % s->d);
            r = kve_attend_ex(c, l, s->q, s->out, &opt);
            if (r != KVE_OK) {
                nl_fail(s, &ok, "step %lld: kve_attend(layer %lld) returned %lld", step, l, r);
                return 0;
            }
            if (s->mscore)
                for (h = 0; h < s->Hk; h++)
                    for (g = 0; g < s->G; g++) {
                        int32_t head = h * s->G + g, n = kve_length(c, l, h);
                        for (i = 0; i < n; i++)
                            m_score(s, l, head)[kve_slot_position(c, l, h, i)] +=
                                s->w[(size_t)head * (size_t)s->cap + (size_t)i];
                    }
        }
    }
    s->stored++;
    return ok;
}

static void nothing_lost(const nl_spec *sp)
{
    nl_state st, *s = &st;
    kve_config cfg = base_config(sp->n_layers, sp->n_heads, sp->n_kv_heads, sp->head_dim, sp->capacity);
    kve_result r;
    /* FULL keeps everything: its capacity bounds the run, and a longer one tests nothing new */
    int64_t pos, step, steps = g_long && sp->kind != KVE_POLICY_FULL ? sp->steps * 10
                                                                      : g_quick ? sp->steps / 10 : sp->steps;
    int32_t l, h, i, j;
    int ok = 1;
    memset(s, 0, sizeof *s);
    s->sp = sp;
    g_test = sp->name;
    cfg.key_storage = sp->storage;
    cfg.rope_layout = sp->rope;
    cfg.policy.kind = sp->kind;
    cfg.policy.budget = sp->budget;
    cfg.policy.window = sp->window;
    cfg.policy.kernel = sp->kernel;
    cfg.policy.sinks = sp->sinks;
    cfg.policy.evict_batch = sp->evict_batch;
    cfg.policy.beta = sp->beta;
    cfg.policy.pooling = sp->pooling;
    cfg.policy.gqa = sp->gqa;
    cfg.policy.pos_shift = sp->pos_shift;
    if (sp->kind == KVE_POLICY_SNAPKV || sp->kind == KVE_POLICY_PYRAMIDKV)
        cfg.policy.decode = KVE_DECODE_EVICT;
    if (sp->custom) cfg.policy.custom = sp->custom == 1 ? &vt_oldest : &vt_drop2;
    r = tc_open(&s->t, &cfg, sp->layout);
    EXPECT(r == KVE_OK, "%s: cache init returned %s", sp->name, kve_result_string(r));
    if (r != KVE_OK) {
        tc_close(&s->t);
        return;
    }
    s->L = s->t.rc.n_layers; s->H = s->t.rc.n_heads; s->Hk = s->t.rc.n_kv_heads;
    s->G = s->H / s->Hk; s->d = s->t.rc.head_dim; s->cap = s->t.rc.capacity;
    s->kind = s->t.rc.policy.kind;
    s->S = s->kind == KVE_POLICY_STREAMINGLLM ? s->t.rc.policy.sinks : 0;
    s->W = s->t.rc.policy.window;
    s->npos = pos_of(s, sp->prompt + steps) + 1;
    s->mpos = (int64_t *)xalloc((size_t)s->L * (size_t)s->Hk * (size_t)s->cap * sizeof(int64_t));
    s->mlen = (int32_t *)xalloc((size_t)s->L * (size_t)s->Hk * sizeof(int32_t));
    s->lbud = (int32_t *)xalloc((size_t)s->L * sizeof(int32_t));
    if (s->t.rc.policy.kind == KVE_POLICY_H2O || sp->custom == 2)
        s->mscore = (float *)xalloc((size_t)s->L * (size_t)s->H * (size_t)s->npos * sizeof(float));
    s->expk = (float *)xalloc((size_t)s->L * (size_t)s->Hk * (size_t)s->npos * (size_t)s->d * sizeof(float));
    s->expv = (float *)xalloc((size_t)s->L * (size_t)s->Hk * (size_t)s->npos * (size_t)s->d * sizeof(float));
    s->slot_of = (int32_t *)xalloc((size_t)s->npos * sizeof(int32_t));
    s->mark = (int64_t *)xalloc((size_t)s->npos * sizeof(int64_t));
    s->prev_pos = (int64_t *)xalloc((size_t)s->L * (size_t)s->cap * sizeof(int64_t));
    s->q = (float *)xalloc((size_t)sp->prompt * (size_t)s->H * (size_t)s->d * sizeof(float) + 64 * sizeof(float) * (size_t)s->H * (size_t)s->d);
    s->out = (float *)xalloc((size_t)sp->prompt * (size_t)s->H * (size_t)s->d * sizeof(float) + 64 * sizeof(float) * (size_t)s->H * (size_t)s->d);
    s->w = (float *)xalloc((size_t)s->H * (size_t)s->cap * sizeof(float));
    s->kin = (float *)xalloc((size_t)s->Hk * (size_t)s->d * sizeof(float));
    s->vin = (float *)xalloc((size_t)s->Hk * (size_t)s->d * sizeof(float));
    s->fs = (float *)xalloc(2 * (size_t)s->cap * sizeof(float));
    s->seq = (float *)xalloc((size_t)s->cap * sizeof(float));
    s->slots = (int32_t *)xalloc((size_t)s->Hk * sizeof(int32_t));
    s->keep = (unsigned char *)xalloc((size_t)s->cap);

    /* expected stored keys: the written pattern, rotated at its position when stored post-RoPE */
    for (l = 0; l < s->L; l++)
        for (h = 0; h < s->Hk; h++)
            for (pos = 0; pos < s->npos; pos++) {
                double x[KVE_MAX_HEAD_DIM];
                float *e = m_expk(s, l, h, pos), *ev = m_expv(s, l, h, pos);
                for (i = 0; i < s->d; i++) {
                    x[i] = pattern(PAT_K, l, h, pos, i);
                    ev[i] = pattern(PAT_V, l, h, pos, i);
                }
                if (s->t.rc.key_storage == KVE_KEYS_POST_ROPE) ref_rotate(&s->t.rc, x, (double)pos);
                for (i = 0; i < s->d; i++) e[i] = (float)x[i];
            }

    /* decode budgets, computed here from the policy's definition */
    for (l = 0; l < s->L; l++) {
        const kve_policy_config *p = &s->t.rc.policy;
        if (s->kind == KVE_POLICY_FULL) s->lbud[l] = s->cap;
        else if (s->kind == KVE_POLICY_PYRAMIDKV)
            s->lbud[l] = (int32_t)(ref_pyramid_prefix(p->budget, p->window, p->beta, s->L, l,
                                                      (int64_t)1 << 52) + p->window);
        else s->lbud[l] = p->budget;
        EXPECT(kve_layer_budget(&s->t.c, l) == s->lbud[l], "%s: kve_layer_budget(%d) = %d, expected %d",
               sp->name, (int)l, (int)kve_layer_budget(&s->t.c, l), (int)s->lbud[l]);
    }
    if (!s->mscore) EXPECT(kve_scores(&s->t.c, 0, 0) == NULL, "%s: scores kept without a user", sp->name);

    /* the prompt */
    if (s->kind == KVE_POLICY_STREAMINGLLM) {
        for (i = 0; i < sp->prompt && ok; i++) {
            ok = nl_token(s, pos_of(s, i), 1, -sp->prompt + i);
            if (ok) ok = nl_verify(s, -sp->prompt + i, 0);
        }
    } else {
        int64_t *qpos = (int64_t *)xalloc((size_t)sp->prompt * sizeof(int64_t));
        for (i = 0; i < sp->prompt && ok; i++) ok = nl_token(s, pos_of(s, i), 0, -sp->prompt + i);
        for (i = 0; i < sp->prompt; i++) qpos[i] = pos_of(s, i);
        for (l = 0; l < s->L && ok; l++) {
            for (i = 0; i < sp->prompt * s->H * s->d; i++)
                s->q[i] = pattern(PAT_Q, l, (i / s->d) % s->H, pos_of(s, i / (s->H * s->d)), i % s->d);
            r = kve_prefill(&s->t.c, l, sp->prompt, s->q, sp->gap ? qpos : NULL, s->out);
            if (r != KVE_OK) nl_fail(s, &ok, "prefill of layer %lld returned %lld%.0lld", l, r, 0);
            if (s->mscore && ok)
                for (h = 0; h < s->Hk; h++)
                    for (j = 0; j < s->G; j++) {
                        const float *row = kve_scores(&s->t.c, l, h * s->G + j);
                        for (i = 0; i < kve_length(&s->t.c, l, h); i++)
                            m_score(s, l, h * s->G + j)[kve_slot_position(&s->t.c, l, h, i)] = row[i];
                    }
        }
        if (ok) ok = nl_verify(s, 0, 1);
        /* compression, predicted from the policy's rules */
        if (ok && (s->kind == KVE_POLICY_SNAPKV || s->kind == KVE_POLICY_PYRAMIDKV ||
                   s->kind == KVE_POLICY_H2O)) {
            const kve_policy_config *p = &s->t.rc.policy;
            for (l = 0; l < s->L && ok; l++)
                for (h = 0; h < s->Hk; h++) {
                    int32_t n = *m_len(s, l, h);
                    int64_t keep_prefix = s->kind == KVE_POLICY_PYRAMIDKV
                        ? ref_pyramid_prefix(p->budget, p->window, p->beta, s->L, l, n)
                        : (n < p->budget ? -1 : p->budget - p->window);
                    if (keep_prefix < 0) continue;
                    if (s->kind == KVE_POLICY_H2O) acc_scores_by_token(s, l, h, s->fs + s->cap);
                    else if (!window_scores_by_token(s, l, h, s->fs + s->cap))
                        nl_fail(s, &ok, "no window scores for layer %lld head %lld%.0lld", l, h, 0);
                    m_shrink(s, l, h, (int32_t)keep_prefix + p->window, p->window, s->fs + s->cap,
                             s->kind != KVE_POLICY_H2O);
                }
            r = kve_compress_all(&s->t.c);
            if (r != KVE_OK) nl_fail(s, &ok, "kve_compress_all returned %lld%.0lld%.0lld", r, 0, 0);
            s->compressed = 1;
            if (ok) ok = nl_verify(s, 0, 1);
        }
        free(qpos);
    }
    EXPECT(ok, "%s: prompt phase failed", sp->name);

    /* decoding */
    for (step = 1; step <= steps && ok; step++) {
        pos = pos_of(s, sp->prompt + step - 1);
        ok = nl_token(s, pos, sp->attend_every <= 1 || step % sp->attend_every == 0, step);
        if (ok) ok = nl_verify(s, step, step % 97 == 0 || step == steps);
        if (ok) g_passed++;
        else g_failed++;
    }
    EXPECT(ok, "%s: stopped at decode step %lld of %lld", sp->name, (long long)(step - 1), (long long)steps);
    EXPECT(tc_touched_outside(&s->t) == 0, "%s: the library wrote outside the K/V vectors", sp->name);

    free(s->mpos); free(s->mlen); free(s->lbud); free(s->mscore); free(s->expk); free(s->expv); free(s->slot_of);
    free(s->mark); free(s->prev_pos); free(s->q); free(s->out); free(s->w); free(s->kin);
    free(s->vin); free(s->fs); free(s->seq); free(s->slots); free(s->keep);
    tc_close(&s->t);
}

static void test_nothing_lost(void)
{
    /* name, kind, storage, rope, layout, L, H, Hk, d, capacity,
       budget, window, kernel, sinks, evict_batch, beta, pooling, gqa, pos_shift, custom,
       prompt, steps, attend_every, gap */
    static const nl_spec specs[] = {
        {"full post-RoPE", KVE_POLICY_FULL, KVE_KEYS_POST_ROPE, KVE_ROPE_INTERLEAVED, KVE_LAYOUT_DEFAULT,
         2, 2, 1, 8, 5100, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 40, 5000, 25, 0},
        {"full pre-RoPE", KVE_POLICY_FULL, KVE_KEYS_PRE_ROPE, KVE_ROPE_HALF, KVE_LAYOUT_HEAD_MAJOR,
         2, 2, 1, 8, 5100, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 40, 5000, 25, 0},
        {"streamingllm pos-shift post-RoPE", KVE_POLICY_STREAMINGLLM, KVE_KEYS_POST_ROPE,
         KVE_ROPE_INTERLEAVED, KVE_LAYOUT_DEFAULT, 2, 4, 2, 16, 64, 48, 0, 0, 4, 0, 0, 0, 0, 0, 0,
         60, 5000, 1, 0},
        {"streamingllm pos-shift pre-RoPE", KVE_POLICY_STREAMINGLLM, KVE_KEYS_PRE_ROPE, KVE_ROPE_HALF,
         KVE_LAYOUT_STRIDES, 2, 4, 2, 16, 64, 48, 0, 0, 4, 0, 0, 0, 0, 0, 0, 60, 5000, 1, 0},
        {"streamingllm true positions post-RoPE", KVE_POLICY_STREAMINGLLM, KVE_KEYS_POST_ROPE,
         KVE_ROPE_HALF, KVE_LAYOUT_HEAD_MAJOR, 2, 4, 2, 16, 40, 33, 0, 0, 3, 0, 0, 0, 0,
         KVE_POS_SHIFT_OFF, 0, 60, 5000, 1, 0},
        {"streamingllm no sinks post-RoPE", KVE_POLICY_STREAMINGLLM, KVE_KEYS_POST_ROPE,
         KVE_ROPE_INTERLEAVED, KVE_LAYOUT_DEFAULT, 1, 2, 2, 16, 20, 20, 0, 0, KVE_NO_SINKS, 0, 0, 0,
         0, 0, 0, 30, 5000, 1, 0},
        {"snapkv post-RoPE", KVE_POLICY_SNAPKV, KVE_KEYS_POST_ROPE, KVE_ROPE_INTERLEAVED,
         KVE_LAYOUT_STRIDES, 2, 4, 2, 16, 64, 40, 8, 5, 0, 6, 0, KVE_POOL_MAX, KVE_REDUCE_MEAN, 0, 0,
         60, 5000, 1, 0},
        {"snapkv pre-RoPE", KVE_POLICY_SNAPKV, KVE_KEYS_PRE_ROPE, KVE_ROPE_HALF, KVE_LAYOUT_DEFAULT,
         2, 4, 2, 16, 64, 40, 8, 3, 0, 0, 0, KVE_POOL_AVG, KVE_REDUCE_MAX, 0, 0, 60, 5000, 1, 0},
        {"pyramidkv post-RoPE", KVE_POLICY_PYRAMIDKV, KVE_KEYS_POST_ROPE, KVE_ROPE_INTERLEAVED,
         KVE_LAYOUT_HEAD_MAJOR, 3, 4, 2, 16, 64, 24, 8, 5, 0, 4, 4, KVE_POOL_MAX, KVE_REDUCE_MEAN, 0,
         0, 60, 5000, 1, 0},
        {"pyramidkv pre-RoPE", KVE_POLICY_PYRAMIDKV, KVE_KEYS_PRE_ROPE, KVE_ROPE_HALF, KVE_LAYOUT_DEFAULT,
         3, 4, 2, 16, 64, 24, 8, 1, 0, 0, 4, KVE_POOL_AVG, KVE_REDUCE_SUM, 0, 0, 60, 5000, 1, 0},
        {"h2o post-RoPE", KVE_POLICY_H2O, KVE_KEYS_POST_ROPE, KVE_ROPE_INTERLEAVED, KVE_LAYOUT_DEFAULT,
         2, 4, 2, 16, 64, 40, 8, 0, 0, 0, 0, 0, KVE_REDUCE_MEAN, 0, 0, 60, 5000, 1, 0},
        {"h2o pre-RoPE", KVE_POLICY_H2O, KVE_KEYS_PRE_ROPE, KVE_ROPE_HALF, KVE_LAYOUT_STRIDES,
         2, 4, 2, 16, 64, 40, 8, 0, 0, 0, 0, 0, KVE_REDUCE_MAX, 0, 0, 60, 5000, 1, 0},
        {"user policy (overwrite oldest) post-RoPE", KVE_POLICY_CUSTOM, KVE_KEYS_POST_ROPE,
         KVE_ROPE_INTERLEAVED, KVE_LAYOUT_DEFAULT, 2, 4, 2, 16, 64, 32, 0, 0, 0, 0, 0, 0, 0, 0, 1,
         20, 5000, 1, 0},
        {"user policy (keep_slots) pre-RoPE", KVE_POLICY_CUSTOM, KVE_KEYS_PRE_ROPE, KVE_ROPE_HALF,
         KVE_LAYOUT_STRIDES, 2, 4, 2, 16, 64, 32, 0, 0, 0, 0, 0, 0, 0, 0, 2, 20, 5000, 1, 0},
        /* positions that skip: every third token jumps ahead */
        {"streamingllm pos-shift post-RoPE, position gaps", KVE_POLICY_STREAMINGLLM, KVE_KEYS_POST_ROPE,
         KVE_ROPE_HALF, KVE_LAYOUT_DEFAULT, 2, 4, 2, 16, 32, 24, 0, 0, 4, 0, 0, 0, 0, 0, 0, 40, 5000, 1, 5},
        {"snapkv post-RoPE, position gaps", KVE_POLICY_SNAPKV, KVE_KEYS_POST_ROPE, KVE_ROPE_INTERLEAVED,
         KVE_LAYOUT_DEFAULT, 2, 4, 2, 16, 64, 40, 8, 5, 0, 6, 0, KVE_POOL_MAX, KVE_REDUCE_MEAN, 0, 0,
         60, 5000, 1, 2},
        {"h2o pre-RoPE, position gaps", KVE_POLICY_H2O, KVE_KEYS_PRE_ROPE, KVE_ROPE_INTERLEAVED,
         KVE_LAYOUT_HEAD_MAJOR, 2, 4, 2, 16, 64, 40, 8, 0, 0, 0, 0, 0, KVE_REDUCE_MEAN, 0, 0, 60, 5000,
         1, 9},
    };
    size_t i;
    for (i = 0; i < sizeof specs / sizeof specs[0]; i++) nothing_lost(&specs[i]);
}

/* ============================================================================================= */
/* Bad input                                                                                      */
/* ============================================================================================= */

/* the observable state of a cache, to show that a failed call changed nothing */
typedef struct snapshot {
    kve_cache c;
    float *k, *v, *scores;
    int64_t *pos;
    int32_t *len, *budget;
} snapshot;

static void snap_take(snapshot *sn, const tcache *t)
{
    int32_t L = t->rc.n_layers, Hk = t->rc.n_kv_heads, H = t->rc.n_heads, cap = t->rc.capacity;
    int32_t l, h, s;
    sn->c = t->c;
    sn->k = (float *)xalloc(t->floats * sizeof(float));
    sn->v = (float *)xalloc(t->floats * sizeof(float));
    memcpy(sn->k, t->k, t->floats * sizeof(float));
    memcpy(sn->v, t->v, t->floats * sizeof(float));
    sn->len = (int32_t *)xalloc((size_t)L * (size_t)Hk * sizeof(int32_t));
    sn->pos = (int64_t *)xalloc((size_t)L * (size_t)Hk * (size_t)cap * sizeof(int64_t));
    sn->budget = (int32_t *)xalloc((size_t)L * sizeof(int32_t));
    sn->scores = (float *)xalloc((size_t)L * (size_t)H * (size_t)cap * sizeof(float));
    for (l = 0; l < L; l++) {
        sn->budget[l] = kve_layer_budget(&t->c, l);
        for (h = 0; h < Hk; h++) {
            sn->len[l * Hk + h] = kve_length(&t->c, l, h);
            for (s = 0; s < cap; s++)
                sn->pos[((size_t)l * (size_t)Hk + (size_t)h) * (size_t)cap + (size_t)s] =
                    kve_slot_position(&t->c, l, h, s);
        }
        for (h = 0; h < H; h++) {
            const float *row = kve_scores(&t->c, l, h);
            if (row) memcpy(sn->scores + ((size_t)l * (size_t)H + (size_t)h) * (size_t)cap, row,
                            (size_t)cap * sizeof(float));
        }
    }
}

static int snap_same(const snapshot *sn, const tcache *t)
{
    snapshot now;
    int32_t L = t->rc.n_layers, Hk = t->rc.n_kv_heads, H = t->rc.n_heads, cap = t->rc.capacity;
    int same;
    snap_take(&now, t);
    same = memcmp(&sn->c, &now.c, sizeof now.c) == 0 &&
           memcmp(sn->k, now.k, t->floats * sizeof(float)) == 0 &&
           memcmp(sn->v, now.v, t->floats * sizeof(float)) == 0 &&
           memcmp(sn->len, now.len, (size_t)L * (size_t)Hk * sizeof(int32_t)) == 0 &&
           memcmp(sn->pos, now.pos, (size_t)L * (size_t)Hk * (size_t)cap * sizeof(int64_t)) == 0 &&
           memcmp(sn->budget, now.budget, (size_t)L * sizeof(int32_t)) == 0 &&
           memcmp(sn->scores, now.scores, (size_t)L * (size_t)H * (size_t)cap * sizeof(float)) == 0;
    free(now.k); free(now.v); free(now.len); free(now.pos); free(now.budget); free(now.scores);
    return same;
}

static void snap_free(snapshot *sn)
{
    free(sn->k); free(sn->v); free(sn->len); free(sn->pos); free(sn->budget); free(sn->scores);
}

/* a call on a live cache that must fail with `want` and leave the cache as it was */
#define BAD_CALL(t, expr, want)                                                            \
    do {                                                                                   \
        snapshot sn_;                                                                      \
        snap_take(&sn_, (t));                                                              \
        EXPECT_RESULT(expr, want);                                                         \
        EXPECT(snap_same(&sn_, (t)), "%s changed the cache although it failed", #expr);    \
        snap_free(&sn_);                                                                   \
    } while (0)

static int named(kve_result r)
{
    return strcmp(kve_result_string(r), kve_result_string((kve_result)-9999)) != 0;
}

/* invalid configurations: case i mutates a valid config; returns 0 past the last case */
static int bad_config_case(int i, kve_config *c, const char **name, kve_result *want)
{
    int n = 0;
#define BAD_CFG(text, assign, err)                                                         \
    if (i == n++) {                                                                        \
        *name = text;                                                                      \
        assign;                                                                            \
        *want = err;                                                                       \
        return 1;                                                                          \
    }
    BAD_CFG("n_layers = 0", c->n_layers = 0, KVE_ERROR_INVALID_DIMENSIONS)
    BAD_CFG("n_layers = -1", c->n_layers = -1, KVE_ERROR_INVALID_DIMENSIONS)
    BAD_CFG("n_layers above KVE_MAX_LAYERS", c->n_layers = KVE_MAX_LAYERS + 1, KVE_ERROR_INVALID_DIMENSIONS)
    BAD_CFG("n_heads = 0", c->n_heads = 0, KVE_ERROR_INVALID_DIMENSIONS)
    BAD_CFG("n_heads = -4", c->n_heads = -4, KVE_ERROR_INVALID_DIMENSIONS)
    BAD_CFG("n_heads above KVE_MAX_HEADS", (c->n_heads = KVE_MAX_HEADS + 2, c->n_kv_heads = 2), KVE_ERROR_INVALID_DIMENSIONS)
    BAD_CFG("n_kv_heads = -2", c->n_kv_heads = -2, KVE_ERROR_INVALID_DIMENSIONS)
    BAD_CFG("n_kv_heads > n_heads", c->n_kv_heads = 8, KVE_ERROR_INVALID_DIMENSIONS)
    BAD_CFG("n_heads 6 over n_kv_heads 4", (c->n_heads = 6, c->n_kv_heads = 4), KVE_ERROR_HEADS_NOT_DIVISIBLE)
    BAD_CFG("n_heads 4 over n_kv_heads 3", c->n_kv_heads = 3, KVE_ERROR_HEADS_NOT_DIVISIBLE)
    BAD_CFG("head_dim = 0", c->head_dim = 0, KVE_ERROR_INVALID_DIMENSIONS)
    BAD_CFG("head_dim = -8", c->head_dim = -8, KVE_ERROR_INVALID_DIMENSIONS)
    BAD_CFG("head_dim above KVE_MAX_HEAD_DIM", c->head_dim = KVE_MAX_HEAD_DIM + 2, KVE_ERROR_INVALID_DIMENSIONS)
    BAD_CFG("capacity = 0", c->capacity = 0, KVE_ERROR_INVALID_CAPACITY)
    BAD_CFG("capacity = -1", c->capacity = -1, KVE_ERROR_INVALID_CAPACITY)
    BAD_CFG("capacity above KVE_MAX_CAPACITY", c->capacity = KVE_MAX_CAPACITY + 1, KVE_ERROR_INVALID_CAPACITY)
    BAD_CFG("odd rope_dims", c->rope_dims = 3, KVE_ERROR_INVALID_ROPE)
    BAD_CFG("rope_dims > head_dim", c->rope_dims = 10, KVE_ERROR_INVALID_ROPE)
    BAD_CFG("rope_dims < 0", c->rope_dims = -2, KVE_ERROR_INVALID_ROPE)
    BAD_CFG("odd head_dim with RoPE on all dims", c->head_dim = 7, KVE_ERROR_INVALID_ROPE)
    BAD_CFG("rope_theta < 0", c->rope_theta = -10000.0, KVE_ERROR_INVALID_ROPE)
    BAD_CFG("rope_theta NaN", c->rope_theta = NAN, KVE_ERROR_INVALID_ROPE)
    BAD_CFG("rope_theta Inf", c->rope_theta = INFINITY, KVE_ERROR_INVALID_ROPE)
    BAD_CFG("rope_linear_factor < 0", c->rope_linear_factor = -2.0, KVE_ERROR_INVALID_ROPE)
    BAD_CFG("rope_linear_factor Inf", c->rope_linear_factor = INFINITY, KVE_ERROR_INVALID_ROPE)
    BAD_CFG("rope_layout out of range", c->rope_layout = (kve_rope_layout)9, KVE_ERROR_INVALID_ENUM)
    BAD_CFG("rope_layout negative", c->rope_layout = (kve_rope_layout)-1, KVE_ERROR_INVALID_ENUM)
    BAD_CFG("key_storage out of range", c->key_storage = (kve_key_storage)5, KVE_ERROR_INVALID_ENUM)
    BAD_CFG("policy kind out of range", c->policy.kind = (kve_policy_kind)42, KVE_ERROR_INVALID_ENUM)
    BAD_CFG("pooling out of range", c->policy.pooling = (kve_pooling)9, KVE_ERROR_INVALID_ENUM)
    BAD_CFG("gqa reduce out of range", c->policy.gqa = (kve_reduce)9, KVE_ERROR_INVALID_ENUM)
    BAD_CFG("pos_shift out of range", c->policy.pos_shift = (kve_pos_shift)9, KVE_ERROR_INVALID_ENUM)
    BAD_CFG("decode mode out of range", c->policy.decode = (kve_decode_mode)9, KVE_ERROR_INVALID_ENUM)
    BAD_CFG("budget < 0", c->policy.budget = -1, KVE_ERROR_INVALID_PARAMETER)
    BAD_CFG("window < 0", c->policy.window = -1, KVE_ERROR_INVALID_PARAMETER)
    BAD_CFG("kernel < 0", c->policy.kernel = -3, KVE_ERROR_INVALID_PARAMETER)
    BAD_CFG("beta < 0", c->policy.beta = -1, KVE_ERROR_INVALID_PARAMETER)
    BAD_CFG("evict_batch < 0", c->policy.evict_batch = -1, KVE_ERROR_INVALID_PARAMETER)
    BAD_CFG("sinks below KVE_NO_SINKS", c->policy.sinks = -2, KVE_ERROR_INVALID_PARAMETER)
    BAD_CFG("budget above capacity", c->policy.budget = 17, KVE_ERROR_BUDGET_ABOVE_CAPACITY)
    BAD_CFG("StreamingLLM sinks = budget",
            (c->policy.kind = KVE_POLICY_STREAMINGLLM, c->policy.budget = 4, c->policy.sinks = 4),
            KVE_ERROR_TOO_MANY_SINKS)
    BAD_CFG("StreamingLLM default sinks, capacity 3",
            (c->policy.kind = KVE_POLICY_STREAMINGLLM, c->capacity = 3), KVE_ERROR_TOO_MANY_SINKS)
    BAD_CFG("SnapKV even kernel", (c->policy.kind = KVE_POLICY_SNAPKV, c->policy.window = 4, c->policy.kernel = 4),
            KVE_ERROR_EVEN_KERNEL)
    BAD_CFG("SnapKV window = budget", (c->policy.kind = KVE_POLICY_SNAPKV, c->policy.budget = 8, c->policy.window = 8),
            KVE_ERROR_WINDOW_TOO_LARGE)
    BAD_CFG("SnapKV default window 32 above capacity 16", c->policy.kind = KVE_POLICY_SNAPKV,
            KVE_ERROR_WINDOW_TOO_LARGE)
    BAD_CFG("H2O window > budget", (c->policy.kind = KVE_POLICY_H2O, c->policy.budget = 4, c->policy.window = 6),
            KVE_ERROR_WINDOW_TOO_LARGE)
    BAD_CFG("PyramidKV evicting, top layer above capacity",
            (c->policy.kind = KVE_POLICY_PYRAMIDKV, c->policy.budget = 12, c->policy.window = 2,
             c->policy.decode = KVE_DECODE_EVICT),
            KVE_ERROR_BUDGET_ABOVE_CAPACITY)
    BAD_CFG("user policy without vtable", c->policy.kind = KVE_POLICY_CUSTOM, KVE_ERROR_NULL_ARGUMENT)
    {
        static const kve_policy_vtable no_make_room = {"broken", 0, NULL, NULL};
        BAD_CFG("user policy without make_room",
                (c->policy.kind = KVE_POLICY_CUSTOM, c->policy.custom = &no_make_room), KVE_ERROR_NULL_ARGUMENT)
    }
#undef BAD_CFG
    return 0;
}

static void test_bad_configs(void)
{
    int i;
    g_test = "bad input: configurations";
    for (i = 0;; i++) {
        kve_config c = base_config(2, 4, 2, 8, 16), out;
        const char *name = "";
        kve_result want = KVE_OK;
        size_t bytes = 123, floats = 456;
        kve_cache cache;
        kve_buffers b;
        float kb[2 * 16 * 2 * 8], vb[2 * 16 * 2 * 8];
        double mem[4096];
        kve_result r;
        if (!bad_config_case(i, &c, &name, &want)) break;
        EXPECT(named(want), "%s: expected error has no name", name);
        r = kve_config_resolve(&c, &out);
        EXPECT(r == want, "kve_config_resolve, %s: %s, expected %s", name, kve_result_string(r), kve_result_string(want));
        r = kve_cache_size(&c, &bytes);
        EXPECT(r == want && bytes == 0, "kve_cache_size, %s: %s (bytes %zu), expected %s", name,
               kve_result_string(r), bytes, kve_result_string(want));
        r = f32_buffer_floats(&c, KVE_LAYOUT_DEFAULT, &floats);
        EXPECT(r == want && floats == 0, "kve_buffer_floats, %s: %s, expected %s", name,
               kve_result_string(r), kve_result_string(want));
        memset(&b, 0, sizeof b);
        b.k = kb; b.v = vb; b.k_bytes = b.v_bytes = sizeof(float) * (sizeof kb / sizeof kb[0]);
        r = kve_cache_init(&c, &b, mem, sizeof mem, &cache);
        EXPECT(r == want, "kve_cache_init, %s: %s, expected %s", name, kve_result_string(r), kve_result_string(want));
        EXPECT(kve_check(&cache) == KVE_ERROR_NULL_ARGUMENT, "%s: a failed init left a usable cache", name);
    }
    EXPECT(i >= 45, "only %d configuration cases", i);
}

/* every kve_result has its own message; unknown values get one too */
static void test_result_strings(void)
{
    int e, f, last = 0;
    g_test = "bad input: result strings";
    for (e = -1; e > -100; e--)
        if (named((kve_result)e)) last = e;
    EXPECT(last <= KVE_ERROR_WRONG_POLICY, "the lowest named result is %d", last);
    for (e = 0; e >= last; e--) {
        EXPECT(kve_result_string((kve_result)e) != NULL && named((kve_result)e), "result %d has no name", e);
        for (f = e - 1; f >= last; f--)
            EXPECT(strcmp(kve_result_string((kve_result)e), kve_result_string((kve_result)f)) != 0,
                   "results %d and %d share a message", e, f);
    }
    EXPECT(kve_result_string((kve_result)7) != NULL, "no string for an unknown result");
}

static void test_bad_init(void)
{
    kve_config c = base_config(2, 4, 2, 8, 16);
    size_t bytes, floats, need;
    kve_buffers b, b2;
    kve_cache cache;
    float *k, *v;
    unsigned char *mem;
    g_test = "bad input: kve_cache_init";
    EXPECT_RESULT(kve_cache_size(&c, &bytes), KVE_OK);
    EXPECT_RESULT(f32_buffer_floats(&c, KVE_LAYOUT_DEFAULT, &floats), KVE_OK);
    EXPECT(floats == 2 * 16 * 2 * 8, "kve_buffer_floats = %zu", floats);
    need = floats;
    k = (float *)xalloc((need + 8) * sizeof(float));
    v = (float *)xalloc((need + 8) * sizeof(float));
    mem = (unsigned char *)xalloc(bytes + 64);
    memset(&b, 0, sizeof b);
    b.k = k; b.v = v; b.k_bytes = sizeof(float) * (need); b.v_bytes = sizeof(float) * (need);

    EXPECT_RESULT(kve_config_resolve(NULL, &c), KVE_ERROR_NULL_ARGUMENT);
    EXPECT_RESULT(kve_config_resolve(&c, NULL), KVE_ERROR_NULL_ARGUMENT);
    EXPECT_RESULT(kve_cache_size(NULL, &floats), KVE_ERROR_NULL_ARGUMENT);
    EXPECT(floats == 0, "kve_cache_size left %zu in *bytes after failing", floats);
    EXPECT_RESULT(kve_cache_size(&c, NULL), KVE_ERROR_NULL_ARGUMENT);
    EXPECT_RESULT(f32_buffer_floats(NULL, KVE_LAYOUT_DEFAULT, &floats), KVE_ERROR_NULL_ARGUMENT);
    EXPECT_RESULT(f32_buffer_floats(&c, KVE_LAYOUT_DEFAULT, NULL), KVE_ERROR_NULL_ARGUMENT);
    EXPECT_RESULT(f32_buffer_floats(&c, KVE_LAYOUT_STRIDES, &floats), KVE_ERROR_INVALID_ENUM);
    EXPECT_RESULT(f32_buffer_floats(&c, (kve_layout)7, &floats), KVE_ERROR_INVALID_ENUM);

    EXPECT_RESULT(kve_cache_init(&c, &b, mem, bytes, NULL), KVE_ERROR_NULL_ARGUMENT);
    EXPECT_RESULT(kve_cache_init(NULL, &b, mem, bytes, &cache), KVE_ERROR_NULL_ARGUMENT);
    EXPECT_RESULT(kve_cache_init(&c, NULL, mem, bytes, &cache), KVE_ERROR_NULL_ARGUMENT);
    EXPECT_RESULT(kve_cache_init(&c, &b, NULL, bytes, &cache), KVE_ERROR_NULL_ARGUMENT);
    b2 = b; b2.k = NULL;
    EXPECT_RESULT(kve_cache_init(&c, &b2, mem, bytes, &cache), KVE_ERROR_NULL_ARGUMENT);
    b2 = b; b2.v = NULL;
    EXPECT_RESULT(kve_cache_init(&c, &b2, mem, bytes, &cache), KVE_ERROR_NULL_ARGUMENT);
    EXPECT_RESULT(kve_cache_init(&c, &b, mem, 0, &cache), KVE_ERROR_MEMORY_TOO_SMALL);
    EXPECT_RESULT(kve_cache_init(&c, &b, mem, bytes - 1, &cache), KVE_ERROR_MEMORY_TOO_SMALL);
    EXPECT_RESULT(kve_cache_init(&c, &b, mem + 4, bytes, &cache), KVE_ERROR_MISALIGNED);
    b2 = b; b2.k = (float *)(void *)((unsigned char *)k + 2);
    EXPECT_RESULT(kve_cache_init(&c, &b2, mem, bytes, &cache), KVE_ERROR_MISALIGNED);
    b2 = b; b2.v = (float *)(void *)((unsigned char *)v + 1);
    EXPECT_RESULT(kve_cache_init(&c, &b2, mem, bytes, &cache), KVE_ERROR_MISALIGNED);
    b2 = b; b2.k_bytes = sizeof(float) * (need - 1); /* capacity above what the K buffer holds */
    EXPECT_RESULT(kve_cache_init(&c, &b2, mem, bytes, &cache), KVE_ERROR_BUFFER_TOO_SMALL);
    b2 = b; b2.v_bytes = sizeof(float) * (0);
    EXPECT_RESULT(kve_cache_init(&c, &b2, mem, bytes, &cache), KVE_ERROR_BUFFER_TOO_SMALL);
    b2 = b; b2.layout = (kve_layout)9;
    EXPECT_RESULT(kve_cache_init(&c, &b2, mem, bytes, &cache), KVE_ERROR_INVALID_ENUM);
    b2 = b; b2.layout = (kve_layout)-1;
    EXPECT_RESULT(kve_cache_init(&c, &b2, mem, bytes, &cache), KVE_ERROR_INVALID_ENUM);
    /* strides: [layer][kv_head][slot] of 8 floats is 16*8 per head, 2*16*8 per layer */
    b2 = b; b2.layout = KVE_LAYOUT_STRIDES; b2.k_slot_stride = b2.v_slot_stride = f32_stride(8); b2.k_head_stride = b2.v_head_stride = f32_stride(128); b2.k_layer_stride = b2.v_layer_stride = f32_stride(256);
    EXPECT_RESULT(kve_cache_init(&c, &b2, mem, bytes, &cache), KVE_OK);
    b2.k_slot_stride = b2.v_slot_stride = f32_stride(7); /* vectors overlap */
    EXPECT_RESULT(kve_cache_init(&c, &b2, mem, bytes, &cache), KVE_ERROR_OVERLAPPING_STRIDES);
    b2.k_slot_stride = b2.v_slot_stride = f32_stride(8); b2.k_head_stride = b2.v_head_stride = f32_stride(120); /* heads overlap */
    EXPECT_RESULT(kve_cache_init(&c, &b2, mem, bytes, &cache), KVE_ERROR_OVERLAPPING_STRIDES);
    b2.k_head_stride = b2.v_head_stride = f32_stride(128); b2.k_layer_stride = b2.v_layer_stride = f32_stride(128); /* layers on top of heads */
    EXPECT_RESULT(kve_cache_init(&c, &b2, mem, bytes, &cache), KVE_ERROR_OVERLAPPING_STRIDES);
    b2.k_layer_stride = b2.v_layer_stride = f32_stride(0);
    EXPECT_RESULT(kve_cache_init(&c, &b2, mem, bytes, &cache), KVE_ERROR_OVERLAPPING_STRIDES);
    b2.k_layer_stride = b2.v_layer_stride = f32_stride(256); b2.k_slot_stride = b2.v_slot_stride = f32_stride(0); b2.k_head_stride = b2.v_head_stride = f32_stride(0);
    EXPECT_RESULT(kve_cache_init(&c, &b2, mem, bytes, &cache), KVE_ERROR_OVERLAPPING_STRIDES);
    b2.k_slot_stride = b2.v_slot_stride = f32_stride(9); b2.k_head_stride = b2.v_head_stride = f32_stride(16 * 9 + 1); b2.k_layer_stride = b2.v_layer_stride = f32_stride(2 * (16 * 9 + 1) + 3); /* padded */
    EXPECT_RESULT(kve_cache_init(&c, &b2, mem, bytes, &cache), KVE_ERROR_BUFFER_TOO_SMALL);
    b2.k_slot_stride = b2.v_slot_stride = f32_stride(8); b2.k_head_stride = b2.v_head_stride = f32_stride(128); b2.k_layer_stride = b2.v_layer_stride = f32_stride(SIZE_MAX / 2); /* layer 1 far away */
    EXPECT_RESULT(kve_cache_init(&c, &b2, mem, bytes, &cache), KVE_ERROR_BUFFER_TOO_SMALL);
    b2.k_layer_stride = b2.v_layer_stride = f32_stride(256); b2.k_slot_stride = b2.v_slot_stride = f32_stride(SIZE_MAX / 4);
    EXPECT_RESULT(kve_cache_init(&c, &b2, mem, bytes, &cache), KVE_ERROR_SIZE_OVERFLOW);
    /* K, V and the bookkeeping block must be separate */
    b2 = b; b2.v = k;
    EXPECT_RESULT(kve_cache_init(&c, &b2, mem, bytes, &cache), KVE_ERROR_OVERLAPPING_BUFFERS);
    {
        float *kv = (float *)xalloc((need + need / 2) * sizeof(float));
        b2 = b; b2.k = kv; b2.v = kv + need / 2; /* V starts inside K */
        EXPECT_RESULT(kve_cache_init(&c, &b2, mem, bytes, &cache), KVE_ERROR_OVERLAPPING_BUFFERS);
        EXPECT_RESULT(kve_cache_init(&c, &b, (void *)(k + 8), bytes, &cache), KVE_ERROR_OVERLAPPING_BUFFERS);
        free(kv);
    }
    /* after any failed init the cache refuses every call */
    {
        float q[32] = {0}, o[32];
        EXPECT_RESULT(kve_store(&cache, 0, 0, q, q, NULL), KVE_ERROR_NULL_ARGUMENT);
        EXPECT_RESULT(kve_attend(&cache, 0, q, o), KVE_ERROR_NULL_ARGUMENT);
        EXPECT_RESULT(kve_cache_reset(&cache), KVE_ERROR_NULL_ARGUMENT);
        EXPECT_RESULT(kve_check(&cache), KVE_ERROR_NULL_ARGUMENT);
        EXPECT(kve_length(&cache, 0, 0) == -1, "kve_length on a failed cache");
        EXPECT(kve_cache_config(&cache) == NULL && kve_newest_position(&cache, 0) == -1,
               "inspection of a failed cache");
    }
    EXPECT_RESULT(kve_cache_reset(NULL), KVE_ERROR_NULL_ARGUMENT);
    EXPECT_RESULT(kve_check(NULL), KVE_ERROR_NULL_ARGUMENT);
    EXPECT_RESULT(kve_cache_init(&c, &b, mem, bytes, &cache), KVE_OK);
    free(k); free(v); free(mem);
}

static void test_bad_rope(void)
{
    kve_config c = base_config(0, 0, 0, 8, 0);
    float x[8] = {1, 2, 3, 4, 5, 6, 7, 8}, y[8];
    g_test = "bad input: RoPE";
    memcpy(y, x, sizeof x);
    EXPECT_RESULT(kve_rope_apply(NULL, x, 0), KVE_ERROR_NULL_ARGUMENT);
    EXPECT_RESULT(kve_rope_apply(&c, NULL, 0), KVE_ERROR_NULL_ARGUMENT);
    EXPECT_RESULT(kve_rope_apply(&c, x, -1), KVE_ERROR_POSITION);
    EXPECT_RESULT(kve_rope_apply(&c, x, KVE_MAX_POSITION + 1), KVE_ERROR_POSITION);
    EXPECT_RESULT(kve_rope_apply(&c, x, INT64_MAX), KVE_ERROR_POSITION);
    EXPECT_RESULT(kve_rope_shift(&c, x, -KVE_MAX_POSITION - 1), KVE_ERROR_POSITION);
    EXPECT_RESULT(kve_rope_shift(&c, x, INT64_MIN), KVE_ERROR_POSITION);
    EXPECT(memcmp(x, y, sizeof x) == 0, "a failed rotation changed the vector");
    x[3] = NAN;
    EXPECT_RESULT(kve_rope_apply(&c, x, 5), KVE_ERROR_NOT_FINITE);
    x[3] = INFINITY;
    EXPECT_RESULT(kve_rope_shift(&c, x, 5), KVE_ERROR_NOT_FINITE);
    x[3] = 1e30f;
    EXPECT_RESULT(kve_rope_apply(&c, x, 5), KVE_ERROR_NOT_FINITE);
    x[3] = 4;
    c.head_dim = 0;
    EXPECT_RESULT(kve_rope_apply(&c, x, 5), KVE_ERROR_INVALID_DIMENSIONS);
    c.head_dim = -8;
    EXPECT_RESULT(kve_rope_apply(&c, x, 5), KVE_ERROR_INVALID_DIMENSIONS);
    c.head_dim = 8; c.rope_dims = 5;
    EXPECT_RESULT(kve_rope_apply(&c, x, 5), KVE_ERROR_INVALID_ROPE);
    c.rope_dims = 0; c.rope_theta = -1;
    EXPECT_RESULT(kve_rope_shift(&c, x, 5), KVE_ERROR_INVALID_ROPE);
    c.rope_theta = 0; c.rope_layout = (kve_rope_layout)11;
    EXPECT_RESULT(kve_rope_apply(&c, x, 5), KVE_ERROR_INVALID_ENUM);
    EXPECT(memcmp(x, y, sizeof x) == 0, "a failed rotation changed the vector");
    c.rope_layout = KVE_ROPE_DEFAULT;
    EXPECT_RESULT(kve_rope_apply(&c, x, KVE_MAX_POSITION), KVE_OK);
    EXPECT_RESULT(kve_rope_shift(&c, x, -KVE_MAX_POSITION), KVE_OK);
}

/* a user policy that misbehaves in the way selected by *user */
static kve_result cp_broken(kve_cache *c, int32_t l, int32_t *ws, void *user)
{
    int mode = *(const int *)user, h;
    (void)l;
    for (h = 0; h < c->cfg.n_kv_heads; h++) {
        if (mode == 0) ws[h] = kve_length(c, l, h);      /* one past the end */
        else if (mode == 1) ws[h] = 1 << 30;             /* far outside */
        else if (mode == 2) ws[h] = -1;                  /* leaves a full head full */
    }
    return mode == 3 ? KVE_ERROR_INVALID_PARAMETER : KVE_OK;
}

static void test_bad_calls(void)
{
    tcache t;
    kve_config c = base_config(2, 4, 2, 8, 16);
    float k[16], v[16], q[4 * 8 * 20], o[4 * 8 * 20], w[4 * 16], sc[16];
    int64_t qp[4];
    int32_t slots[2], bud[4], i, order[16];
    unsigned char keep[16];
    kve_attend_options opt;
    g_test = "bad input: calls";
    for (i = 0; i < 16; i++) k[i] = v[i] = 0.25f * (float)(i % 5) - 0.5f;
    for (i = 0; i < 4 * 8 * 20; i++) q[i] = 0.1f * (float)(i % 7);
    memset(&opt, 0, sizeof opt);

    c.policy.kind = KVE_POLICY_SNAPKV; c.policy.budget = 8; c.policy.window = 2; c.policy.kernel = 3;
    c.policy.decode = KVE_DECODE_EVICT;
    EXPECT_RESULT(tc_open(&t, &c, KVE_LAYOUT_DEFAULT), KVE_OK);
    /* on an empty cache */
    BAD_CALL(&t, kve_attend(&t.c, 0, q, o), KVE_ERROR_EMPTY);
    BAD_CALL(&t, kve_prefill(&t.c, 0, 1, q, NULL, o), KVE_ERROR_EMPTY);
    BAD_CALL(&t, kve_window_scores(&t.c, 0, 0, KVE_REDUCE_MEAN, sc), KVE_ERROR_NO_QUERIES);
    for (i = 0; i < 10; i++) EXPECT_RESULT(kve_store(&t.c, 0, i, k, v, slots), KVE_OK);
    for (i = 0; i < 3; i++) EXPECT_RESULT(kve_store(&t.c, 1, 2 * i, k, v, slots), KVE_OK);
    /* kve_store */
    BAD_CALL(&t, kve_store(NULL, 0, 10, k, v, NULL), KVE_ERROR_NULL_ARGUMENT);
    BAD_CALL(&t, kve_store(&t.c, -1, 10, k, v, NULL), KVE_ERROR_INDEX_OUT_OF_RANGE);
    BAD_CALL(&t, kve_store(&t.c, 2, 10, k, v, NULL), KVE_ERROR_INDEX_OUT_OF_RANGE);
    BAD_CALL(&t, kve_store(&t.c, 0, 10, NULL, v, NULL), KVE_ERROR_NULL_ARGUMENT);
    BAD_CALL(&t, kve_store(&t.c, 0, 10, k, NULL, NULL), KVE_ERROR_NULL_ARGUMENT);
    BAD_CALL(&t, kve_store(&t.c, 0, -1, k, v, NULL), KVE_ERROR_POSITION);
    BAD_CALL(&t, kve_store(&t.c, 0, 9, k, v, NULL), KVE_ERROR_POSITION);  /* the newest again */
    BAD_CALL(&t, kve_store(&t.c, 0, 3, k, v, NULL), KVE_ERROR_POSITION);  /* going back */
    BAD_CALL(&t, kve_store(&t.c, 0, KVE_MAX_POSITION + 1, k, v, NULL), KVE_ERROR_POSITION);
    BAD_CALL(&t, kve_store(&t.c, 0, INT64_MIN, k, v, NULL), KVE_ERROR_POSITION);
    k[13] = NAN;
    BAD_CALL(&t, kve_store(&t.c, 0, 10, k, v, NULL), KVE_ERROR_NOT_FINITE);
    k[13] = 0; v[0] = -INFINITY;
    BAD_CALL(&t, kve_store(&t.c, 0, 10, k, v, NULL), KVE_ERROR_NOT_FINITE);
    v[0] = nextafterf(KVE_MAX_ABS_VALUE, INFINITY); /* finite, but sums could overflow */
    BAD_CALL(&t, kve_store(&t.c, 0, 10, k, v, NULL), KVE_ERROR_NOT_FINITE);
    v[0] = 0; k[2] = -3e38f;
    BAD_CALL(&t, kve_store(&t.c, 0, 10, k, v, NULL), KVE_ERROR_NOT_FINITE);
    k[2] = 0;
    /* kve_attend */
    BAD_CALL(&t, kve_attend(NULL, 0, q, o), KVE_ERROR_NULL_ARGUMENT);
    BAD_CALL(&t, kve_attend(&t.c, 0, NULL, o), KVE_ERROR_NULL_ARGUMENT);
    BAD_CALL(&t, kve_attend(&t.c, 0, q, NULL), KVE_ERROR_NULL_ARGUMENT);
    BAD_CALL(&t, kve_attend(&t.c, 5, q, o), KVE_ERROR_INDEX_OUT_OF_RANGE);
    BAD_CALL(&t, kve_attend(&t.c, INT32_MIN, q, o), KVE_ERROR_INDEX_OUT_OF_RANGE);
    q[31] = NAN;
    BAD_CALL(&t, kve_attend(&t.c, 0, q, o), KVE_ERROR_NOT_FINITE);
    q[31] = -1e20f;
    BAD_CALL(&t, kve_attend(&t.c, 0, q, o), KVE_ERROR_NOT_FINITE);
    q[31] = 0;
    opt.weights = w; opt.weights_reduce = (kve_reduce)8;
    BAD_CALL(&t, kve_attend_ex(&t.c, 0, q, o, &opt), KVE_ERROR_INVALID_ENUM);
    /* kve_prefill */
    BAD_CALL(&t, kve_prefill(NULL, 0, 1, q, NULL, o), KVE_ERROR_NULL_ARGUMENT);
    BAD_CALL(&t, kve_prefill(&t.c, 0, 1, NULL, NULL, o), KVE_ERROR_NULL_ARGUMENT);
    BAD_CALL(&t, kve_prefill(&t.c, 0, 1, q, NULL, NULL), KVE_ERROR_NULL_ARGUMENT);
    BAD_CALL(&t, kve_prefill(&t.c, 3, 1, q, NULL, o), KVE_ERROR_INDEX_OUT_OF_RANGE);
    BAD_CALL(&t, kve_prefill(&t.c, 0, 0, q, NULL, o), KVE_ERROR_INVALID_COUNT);
    BAD_CALL(&t, kve_prefill(&t.c, 0, -3, q, NULL, o), KVE_ERROR_INVALID_COUNT);
    BAD_CALL(&t, kve_prefill(&t.c, 0, 11, q, NULL, o), KVE_ERROR_INVALID_COUNT); /* 10 stored */
    BAD_CALL(&t, kve_prefill(&t.c, 1, 4, q, NULL, o), KVE_ERROR_INVALID_COUNT);  /* 3 stored */
    qp[0] = 2; qp[1] = 2;
    BAD_CALL(&t, kve_prefill(&t.c, 0, 2, q, qp, o), KVE_ERROR_POSITION);
    qp[0] = 5; qp[1] = 3;
    BAD_CALL(&t, kve_prefill(&t.c, 0, 2, q, qp, o), KVE_ERROR_POSITION);
    qp[0] = -1; qp[1] = 3;
    BAD_CALL(&t, kve_prefill(&t.c, 0, 2, q, qp, o), KVE_ERROR_POSITION);
    qp[0] = 8; qp[1] = 10; /* after the newest */
    BAD_CALL(&t, kve_prefill(&t.c, 0, 2, q, qp, o), KVE_ERROR_POSITION);
    q[40] = INFINITY;
    BAD_CALL(&t, kve_prefill(&t.c, 0, 2, q, NULL, o), KVE_ERROR_NOT_FINITE);
    q[40] = 2e15f;
    BAD_CALL(&t, kve_prefill(&t.c, 0, 2, q, NULL, o), KVE_ERROR_NOT_FINITE);
    q[40] = 0;
    /* kve_compress: SnapKV cannot score without queries */
    BAD_CALL(&t, kve_compress(NULL, 0), KVE_ERROR_NULL_ARGUMENT);
    BAD_CALL(&t, kve_compress(&t.c, 2), KVE_ERROR_INDEX_OUT_OF_RANGE);
    BAD_CALL(&t, kve_compress(&t.c, -1), KVE_ERROR_INDEX_OUT_OF_RANGE);
    BAD_CALL(&t, kve_compress_all(NULL), KVE_ERROR_NULL_ARGUMENT);
    /* kve_window_scores */
    BAD_CALL(&t, kve_window_scores(NULL, 0, 0, KVE_REDUCE_MEAN, sc), KVE_ERROR_NULL_ARGUMENT);
    BAD_CALL(&t, kve_window_scores(&t.c, 0, 0, KVE_REDUCE_MEAN, NULL), KVE_ERROR_NULL_ARGUMENT);
    BAD_CALL(&t, kve_window_scores(&t.c, 2, 0, KVE_REDUCE_MEAN, sc), KVE_ERROR_INDEX_OUT_OF_RANGE);
    BAD_CALL(&t, kve_window_scores(&t.c, 0, 2, KVE_REDUCE_MEAN, sc), KVE_ERROR_INDEX_OUT_OF_RANGE);
    BAD_CALL(&t, kve_window_scores(&t.c, 0, -1, KVE_REDUCE_MEAN, sc), KVE_ERROR_INDEX_OUT_OF_RANGE);
    BAD_CALL(&t, kve_window_scores(&t.c, 0, 0, (kve_reduce)6, sc), KVE_ERROR_INVALID_ENUM);
    BAD_CALL(&t, kve_window_scores(&t.c, 0, 0, KVE_REDUCE_MEAN, sc), KVE_ERROR_NO_QUERIES);
    /* kve_keep_slots */
    memset(keep, 1, sizeof keep);
    BAD_CALL(&t, kve_keep_slots(NULL, 0, 0, keep), KVE_ERROR_NULL_ARGUMENT);
    BAD_CALL(&t, kve_keep_slots(&t.c, 0, 0, NULL), KVE_ERROR_NULL_ARGUMENT);
    BAD_CALL(&t, kve_keep_slots(&t.c, 2, 0, keep), KVE_ERROR_INDEX_OUT_OF_RANGE);
    BAD_CALL(&t, kve_keep_slots(&t.c, 0, 2, keep), KVE_ERROR_INDEX_OUT_OF_RANGE);
    BAD_CALL(&t, kve_keep_slots(&t.c, 0, -1, keep), KVE_ERROR_INDEX_OUT_OF_RANGE);
    /* decode eviction needs queries: fill layer 0 to capacity, then one more */
    for (i = 10; i < 16; i++) EXPECT_RESULT(kve_store(&t.c, 0, i, k, v, NULL), KVE_OK);
    BAD_CALL(&t, kve_store(&t.c, 0, 16, k, v, NULL), KVE_ERROR_NO_QUERIES);
    /* inspection: out of range gives -1, NULL or 0 */
    EXPECT(kve_length(NULL, 0, 0) == -1 && kve_length(&t.c, 2, 0) == -1 && kve_length(&t.c, 0, 2) == -1 &&
           kve_length(&t.c, -1, 0) == -1 && kve_length(&t.c, 0, -1) == -1, "kve_length out of range");
    EXPECT(kve_slot_position(NULL, 0, 0, 0) == -1 && kve_slot_position(&t.c, 0, 0, 16) == -1 &&
           kve_slot_position(&t.c, 1, 0, 3) == -1 && kve_slot_position(&t.c, 0, 0, -1) == -1 &&
           kve_slot_position(&t.c, 0, 3, 0) == -1, "kve_slot_position out of range");
    EXPECT(kve_key(NULL, 0, 0, 0) == NULL && kve_key(&t.c, 0, 0, 16) == NULL && kve_key(&t.c, 0, 0, -1) == NULL &&
           kve_key(&t.c, 2, 0, 0) == NULL && kve_value(&t.c, 0, 2, 0) == NULL &&
           kve_value(&t.c, 0, 0, 16) == NULL && kve_value(NULL, 0, 0, 0) == NULL, "kve_key/kve_value out of range");
    EXPECT(kve_key(&t.c, 1, 1, 15) == t.k + 256 + 15 * 16 + 8, "kve_key addresses the wrong float");
    EXPECT(kve_scores(&t.c, 0, 0) == NULL && kve_scores(NULL, 0, 0) == NULL, "kve_scores without a scoring policy");
    EXPECT(kve_layer_budget(NULL, 0) == -1 && kve_layer_budget(&t.c, 2) == -1 && kve_layer_budget(&t.c, -1) == -1,
           "kve_layer_budget out of range");
    EXPECT(kve_layer_bytes(NULL, 0) == 0 && kve_layer_bytes(&t.c, 2) == 0, "kve_layer_bytes out of range");
    EXPECT(kve_bytes_in_use(NULL) == 0, "kve_bytes_in_use(NULL)");
    EXPECT(kve_newest_position(NULL, 0) == -1 && kve_newest_position(&t.c, 2) == -1 &&
           kve_newest_position(&t.c, -1) == -1, "kve_newest_position out of range");
    EXPECT(kve_newest_position(&t.c, 0) == 15 && kve_newest_position(&t.c, 1) == 4,
           "kve_newest_position = %lld, %lld", (long long)kve_newest_position(&t.c, 0),
           (long long)kve_newest_position(&t.c, 1));
    EXPECT(kve_cache_config(NULL) == NULL, "kve_cache_config(NULL)");
    EXPECT(kve_cache_config(&t.c) != NULL && memcmp(kve_cache_config(&t.c), &t.rc, sizeof t.rc) == 0,
           "kve_cache_config differs from kve_config_resolve");
    EXPECT(kve_layer_bytes(&t.c, 0) == 2 * 16 * 8 * 2 * sizeof(float), "kve_layer_bytes = %zu",
           kve_layer_bytes(&t.c, 0));
    EXPECT_RESULT(kve_check(&t.c), KVE_OK);
    tc_close(&t);

    /* FULL: a full layer is an error, and the failed store changes nothing */
    c = base_config(1, 2, 2, 8, 4);
    EXPECT_RESULT(tc_open(&t, &c, KVE_LAYOUT_HEAD_MAJOR), KVE_OK);
    for (i = 0; i < 4; i++) EXPECT_RESULT(kve_store(&t.c, 0, 100 + i, k, v, NULL), KVE_OK);
    BAD_CALL(&t, kve_store(&t.c, 0, 104, k, v, NULL), KVE_ERROR_CACHE_FULL);
    EXPECT_RESULT(kve_compress(&t.c, 0), KVE_OK); /* nothing to compress */
    EXPECT(kve_length(&t.c, 0, 0) == 4, "compress of FULL changed the length");
    tc_close(&t);

    /* SnapKV growing: full at capacity */
    c = base_config(1, 2, 1, 8, 6);
    c.policy.kind = KVE_POLICY_SNAPKV; c.policy.budget = 4; c.policy.window = 2; c.policy.kernel = 1;
    EXPECT_RESULT(tc_open(&t, &c, KVE_LAYOUT_DEFAULT), KVE_OK);
    for (i = 0; i < 6; i++) EXPECT_RESULT(kve_store(&t.c, 0, i, k, v, NULL), KVE_OK);
    BAD_CALL(&t, kve_store(&t.c, 0, 6, k, v, NULL), KVE_ERROR_CACHE_FULL);
    tc_close(&t);

    /* StreamingLLM's slot layout is fixed: keep_slots does not apply */
    c = base_config(1, 2, 2, 8, 8);
    c.policy.kind = KVE_POLICY_STREAMINGLLM; c.policy.sinks = 2;
    EXPECT_RESULT(tc_open(&t, &c, KVE_LAYOUT_DEFAULT), KVE_OK);
    for (i = 0; i < 10; i++) EXPECT_RESULT(kve_store(&t.c, 0, i, k, v, NULL), KVE_OK);
    memset(keep, 1, sizeof keep);
    keep[3] = 0;
    BAD_CALL(&t, kve_keep_slots(&t.c, 0, 0, keep), KVE_ERROR_WRONG_POLICY);
    /* the largest magnitude accepted is KVE_MAX_ABS_VALUE itself */
    k[0] = KVE_MAX_ABS_VALUE; v[5] = -KVE_MAX_ABS_VALUE;
    EXPECT_RESULT(kve_store(&t.c, 0, 10, k, v, NULL), KVE_OK);
    k[0] = 0; v[5] = 0;
    EXPECT_RESULT(kve_check(&t.c), KVE_OK);
    tc_close(&t);

    /* misbehaving user policies */
    for (i = 0; i < 4; i++) {
        static int modes[4] = {0, 1, 2, 3};
        static const kve_policy_vtable broken = {"broken", 0, cp_broken, NULL};
        int32_t j;
        c = base_config(1, 2, 2, 4, 3);
        c.policy.kind = KVE_POLICY_CUSTOM; c.policy.custom = &broken; c.policy.custom_user = &modes[i];
        EXPECT_RESULT(tc_open(&t, &c, KVE_LAYOUT_DEFAULT), KVE_OK);
        for (j = 0; j < 3; j++) EXPECT_RESULT(kve_store(&t.c, 0, j, k, v, NULL), KVE_OK);
        BAD_CALL(&t, kve_store(&t.c, 0, 3, k, v, NULL),
                 i == 3 ? KVE_ERROR_INVALID_PARAMETER : KVE_ERROR_POLICY_FAILED);
        EXPECT_RESULT(kve_check(&t.c), KVE_OK);
        tc_close(&t);
    }

    /* the building blocks */
    {
        float in[5] = {1, 5, 2, 4, 3}, out[5];
        EXPECT_RESULT(kve_pool1d(NULL, 5, 3, KVE_POOL_MAX, out), KVE_ERROR_NULL_ARGUMENT);
        EXPECT_RESULT(kve_pool1d(in, 5, 3, KVE_POOL_MAX, NULL), KVE_ERROR_NULL_ARGUMENT);
        EXPECT_RESULT(kve_pool1d(in, -1, 3, KVE_POOL_MAX, out), KVE_ERROR_INVALID_COUNT);
        EXPECT_RESULT(kve_pool1d(in, 5, 0, KVE_POOL_MAX, out), KVE_ERROR_EVEN_KERNEL);
        EXPECT_RESULT(kve_pool1d(in, 5, 4, KVE_POOL_MAX, out), KVE_ERROR_EVEN_KERNEL);
        EXPECT_RESULT(kve_pool1d(in, 5, -3, KVE_POOL_MAX, out), KVE_ERROR_EVEN_KERNEL);
        EXPECT_RESULT(kve_pool1d(in, 5, 3, (kve_pooling)9, out), KVE_ERROR_INVALID_ENUM);
        EXPECT_RESULT(kve_pool1d(in, 5, 3, KVE_POOL_AVG, in), KVE_ERROR_INVALID_PARAMETER);
        EXPECT(in[1] == 5 && in[4] == 3, "a failed pool1d wrote its input");
        EXPECT_RESULT(kve_pool1d(in, 0, 3, KVE_POOL_MAX, out), KVE_OK);
        EXPECT_RESULT(kve_select_top(NULL, 5, 2, keep, order), KVE_ERROR_NULL_ARGUMENT);
        EXPECT_RESULT(kve_select_top(in, 5, 2, NULL, order), KVE_ERROR_NULL_ARGUMENT);
        EXPECT_RESULT(kve_select_top(in, 5, 2, keep, NULL), KVE_ERROR_NULL_ARGUMENT);
        EXPECT_RESULT(kve_select_top(in, -1, 0, keep, order), KVE_ERROR_INVALID_COUNT);
        EXPECT_RESULT(kve_select_top(in, 5, -1, keep, order), KVE_ERROR_INVALID_COUNT);
        EXPECT_RESULT(kve_select_top(in, 5, 6, keep, order), KVE_ERROR_INVALID_COUNT);
        EXPECT_RESULT(kve_select_top(in, 0, 0, keep, order), KVE_OK);
        EXPECT_RESULT(kve_pyramid_budgets(64, 8, 20, 4, 100, NULL), KVE_ERROR_NULL_ARGUMENT);
        EXPECT_RESULT(kve_pyramid_budgets(64, 8, 20, 0, 100, bud), KVE_ERROR_INVALID_DIMENSIONS);
        EXPECT_RESULT(kve_pyramid_budgets(64, 8, 20, -2, 100, bud), KVE_ERROR_INVALID_DIMENSIONS);
        EXPECT_RESULT(kve_pyramid_budgets(64, 8, 20, KVE_MAX_LAYERS + 1, 100, bud), KVE_ERROR_INVALID_DIMENSIONS);
        EXPECT_RESULT(kve_pyramid_budgets(64, -1, 20, 4, 100, bud), KVE_ERROR_INVALID_PARAMETER);
        EXPECT_RESULT(kve_pyramid_budgets(64, 8, 0, 4, 100, bud), KVE_ERROR_INVALID_PARAMETER);
        EXPECT_RESULT(kve_pyramid_budgets(64, 8, -5, 4, 100, bud), KVE_ERROR_INVALID_PARAMETER);
        EXPECT_RESULT(kve_pyramid_budgets(64, 8, 20, 4, -1, bud), KVE_ERROR_INVALID_PARAMETER);
        EXPECT_RESULT(kve_pyramid_budgets(0, 0, 20, 4, 100, bud), KVE_ERROR_INVALID_PARAMETER);
        EXPECT_RESULT(kve_pyramid_budgets(-64, 8, 20, 4, 100, bud), KVE_ERROR_INVALID_PARAMETER);
        EXPECT_RESULT(kve_pyramid_budgets(8, 8, 20, 4, 100, bud), KVE_ERROR_WINDOW_TOO_LARGE);
    }
}

/* ============================================================================================= */
/* Determinism                                                                                    */
/* ============================================================================================= */

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = (const unsigned char *)p;
    size_t i;
    for (i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

typedef struct det_result {
    uint64_t hash;
    int64_t *pos; /* [L][Hk][cap], -1 past the length */
    kve_result error;
} det_result;

static void det_run(const kve_config *cfg, int32_t prompt, int32_t steps, det_result *res)
{
    tcache t;
    int32_t L, H, Hk, d, cap, l, h, s, i, step;
    size_t hd;
    float *q, *out, *k, *v;
    kve_result r;
    res->hash = 0xcbf29ce484222325ull;
    res->pos = NULL;
    res->error = KVE_OK;
    if ((r = tc_open(&t, cfg, KVE_LAYOUT_DEFAULT)) != KVE_OK) {
        res->error = r;
        tc_close(&t);
        return;
    }
    L = t.rc.n_layers; H = t.rc.n_heads; Hk = t.rc.n_kv_heads; d = t.rc.head_dim; cap = t.rc.capacity;
    hd = (size_t)H * (size_t)d;
    q = (float *)xalloc((size_t)prompt * hd * sizeof(float));
    out = (float *)xalloc((size_t)prompt * hd * sizeof(float));
    k = (float *)xalloc((size_t)Hk * (size_t)d * sizeof(float));
    v = (float *)xalloc((size_t)Hk * (size_t)d * sizeof(float));
    rng_seed(77);
#define DET_TRY(call)                                                                      \
    do {                                                                                   \
        if ((r = (call)) != KVE_OK && res->error == KVE_OK) res->error = r;                \
    } while (0)
    for (i = 0; i < prompt; i++)
        for (l = 0; l < L; l++) {
            for (s = 0; s < Hk * d; s++) { k[s] = 1.5f * rng_float(); v[s] = rng_float(); }
            DET_TRY(kve_store(&t.c, l, i, k, v, NULL));
        }
    for (l = 0; l < L; l++) {
        for (i = 0; i < prompt * (int32_t)hd; i++) q[i] = 1.5f * rng_float();
        DET_TRY(kve_prefill(&t.c, l, prompt, q, NULL, out));
        res->hash = fnv(res->hash, out, (size_t)prompt * hd * sizeof(float));
    }
    DET_TRY(kve_compress_all(&t.c));
    for (step = 0; step < steps; step++)
        for (l = 0; l < L; l++) {
            for (s = 0; s < Hk * d; s++) { k[s] = 1.5f * rng_float(); v[s] = rng_float(); }
            for (s = 0; s < (int32_t)hd; s++) q[s] = 1.5f * rng_float();
            DET_TRY(kve_store(&t.c, l, prompt + step, k, v, NULL));
            DET_TRY(kve_attend(&t.c, l, q, out));
            res->hash = fnv(res->hash, out, hd * sizeof(float));
            for (h = 0; h < Hk; h++) {
                int32_t n = kve_length(&t.c, l, h);
                res->hash = fnv(res->hash, &n, sizeof n);
                for (s = 0; s < n; s++) {
                    int64_t p = kve_slot_position(&t.c, l, h, s);
                    res->hash = fnv(res->hash, &p, sizeof p);
                }
            }
        }
#undef DET_TRY
    res->pos = (int64_t *)xalloc((size_t)L * (size_t)Hk * (size_t)cap * sizeof(int64_t));
    for (l = 0; l < L; l++)
        for (h = 0; h < Hk; h++)
            for (s = 0; s < cap; s++)
                res->pos[((size_t)l * (size_t)Hk + (size_t)h) * (size_t)cap + (size_t)s] =
                    kve_slot_position(&t.c, l, h, s);
    free(q); free(out); free(k); free(v);
    tc_close(&t);
}

static void set_threads(int n)
{
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}

/* The library splits work over KV heads with OpenMP once a call is large enough; the sizes here are
   chosen so that prefill, compression and decode attention all take the parallel path. */
#ifdef KVE__OMP_MIN_WORK
#define DET_MIN_WORK KVE__OMP_MIN_WORK
#else
#define DET_MIN_WORK 262144
#endif

static void test_determinism(void)
{
    /* budgets relative to the prompt P: all of them evict during the decode steps */
    struct { const char *name; kve_policy_kind kind; kve_key_storage st; int32_t budget_less, window, sinks; } pol[] = {
        {"full", KVE_POLICY_FULL, KVE_KEYS_POST_ROPE, 0, 0, 0},
        {"streamingllm post-RoPE", KVE_POLICY_STREAMINGLLM, KVE_KEYS_POST_ROPE, 10, 0, 4},
        {"streamingllm pre-RoPE", KVE_POLICY_STREAMINGLLM, KVE_KEYS_PRE_ROPE, 10, 0, 4},
        {"snapkv", KVE_POLICY_SNAPKV, KVE_KEYS_POST_ROPE, 20, 16, 0},
        {"pyramidkv", KVE_POLICY_PYRAMIDKV, KVE_KEYS_PRE_ROPE, -1, 16, 0},
        {"h2o", KVE_POLICY_H2O, KVE_KEYS_POST_ROPE, 20, 16, 0},
        {"user policy", KVE_POLICY_CUSTOM, KVE_KEYS_PRE_ROPE, 10, 0, 0},
    };
    size_t i;
    /* 32 query heads of 64: decode attention over P keys is parallel when P*32*64 reaches the
       threshold (quick mode, for valgrind, keeps the sizes small and mostly serial) */
    int32_t H = g_quick ? 8 : 32, Hk = H / 4, d = 64;
    int32_t P = (int32_t)((DET_MIN_WORK + H * d - 1) / (H * d)) * 5 / 4;
    int32_t steps = g_long ? 500 : g_quick ? 8 : 64;
#ifdef _OPENMP
    int saved = omp_get_max_threads();
#endif
    g_test = "determinism";
    if (P < 160) P = 160;
    if (g_quick) P = 64;
    for (i = 0; i < sizeof pol / sizeof pol[0]; i++) {
        int32_t cap = pol[i].kind == KVE_POLICY_FULL ? P + steps : 2 * P;
        kve_config c = base_config(2, H, Hk, d, cap);
        det_result a, b, a2;
        size_t n = (size_t)2 * (size_t)Hk * (size_t)cap;
        c.key_storage = pol[i].st;
        c.policy.kind = pol[i].kind;
        c.policy.budget = pol[i].budget_less < 0 ? P * 5 / 8 : pol[i].budget_less > 0 ? P - pol[i].budget_less : 0;
        c.policy.window = pol[i].window;
        c.policy.sinks = pol[i].sinks;
        c.policy.beta = 4;
        c.policy.custom = &vt_oldest;
        if (pol[i].kind == KVE_POLICY_SNAPKV || pol[i].kind == KVE_POLICY_PYRAMIDKV) c.policy.decode = KVE_DECODE_EVICT;
        set_threads(1);
        det_run(&c, P, steps, &a);
        det_run(&c, P, steps, &a2);
        set_threads(2);
        det_run(&c, P, steps, &b);
        EXPECT(a.error == KVE_OK && b.error == KVE_OK && a2.error == KVE_OK, "%s: a call failed: %s",
               pol[i].name, kve_result_string(a.error != KVE_OK ? a.error : b.error != KVE_OK ? b.error : a2.error));
        EXPECT(a.pos && b.pos && memcmp(a.pos, b.pos, n * sizeof(int64_t)) == 0,
               "%s: 1 and 2 threads keep different slots", pol[i].name);
        EXPECT(a.hash == b.hash, "%s: 1 and 2 threads differ (outputs or slots): %016llx vs %016llx",
               pol[i].name, (unsigned long long)a.hash, (unsigned long long)b.hash);
        EXPECT(a.pos && a2.pos && memcmp(a.pos, a2.pos, n * sizeof(int64_t)) == 0 && a.hash == a2.hash,
               "%s: two runs with the same inputs differ", pol[i].name);
        free(a.pos); free(b.pos); free(a2.pos);
    }
#ifdef _OPENMP
    omp_set_num_threads(saved);
#endif
}

/* ============================================================================================= */
/* The invariant checker notices broken bookkeeping                                               */
/* ============================================================================================= */

static void test_checker(void)
{
    tcache t;
    kve_config c = base_config(1, 2, 2, 4, 8);
    float k[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    int32_t i;
    int64_t save;
    g_test = "checker";
    c.policy.kind = KVE_POLICY_STREAMINGLLM; c.policy.sinks = 2; c.policy.budget = 6;
    EXPECT_RESULT(tc_open(&t, &c, KVE_LAYOUT_DEFAULT), KVE_OK);
    for (i = 0; i < 9; i++) EXPECT_RESULT(kve_store(&t.c, 0, i, k, k, NULL), KVE_OK);
    EXPECT_RESULT(kve_check(&t.c), KVE_OK);
    /* the bookkeeping is reached through the cache's fields on purpose: only a broken library
       (or a stray write) would put it in these states */
    save = t.c.pos[3];
    t.c.pos[3] = t.c.pos[4]; /* a duplicate position */
    EXPECT_RESULT(kve_check(&t.c), KVE_ERROR_CORRUPT);
    t.c.pos[3] = 99; /* after the newest */
    EXPECT_RESULT(kve_check(&t.c), KVE_ERROR_CORRUPT);
    t.c.pos[3] = -5;
    EXPECT_RESULT(kve_check(&t.c), KVE_ERROR_CORRUPT);
    t.c.pos[3] = save;
    t.c.pos[7] = 3; /* a stale position past the length */
    EXPECT_RESULT(kve_check(&t.c), KVE_ERROR_CORRUPT);
    t.c.pos[7] = -1;
    t.c.len[1] = 5; /* heads of a StreamingLLM layer disagree */
    EXPECT_RESULT(kve_check(&t.c), KVE_ERROR_CORRUPT);
    t.c.len[1] = 9; /* above the capacity */
    EXPECT_RESULT(kve_check(&t.c), KVE_ERROR_CORRUPT);
    t.c.len[1] = 6;
    save = t.c.pos[0]; t.c.pos[0] = t.c.pos[1]; t.c.pos[1] = save; /* sinks out of order */
    t.c.pos[8] = t.c.pos[0]; t.c.pos[9] = t.c.pos[1];
    EXPECT_RESULT(kve_check(&t.c), KVE_ERROR_CORRUPT);
    save = t.c.pos[0]; t.c.pos[0] = t.c.pos[1]; t.c.pos[1] = save;
    t.c.pos[8] = t.c.pos[0]; t.c.pos[9] = t.c.pos[1];
    EXPECT_RESULT(kve_check(&t.c), KVE_OK);

    /* Regression (checker): kve_check() did not check that the sinks are the oldest tokens nor that
       StreamingLLM's ring points at the oldest recent slot, so these broken states passed.
       Slots now hold positions 0 1 6 7 8 5 (sinks 0, 1; ring over slots 2..5, next = slot 5). */
    save = t.c.pos[1];
    t.c.pos[1] = 3; t.c.pos[9] = 3; /* a sink newer than... */
    t.c.pos[5] = 2; t.c.pos[13] = 2; /* ...a recent token: sinks are no longer the first tokens */
    EXPECT(kve_check(&t.c) == KVE_ERROR_CORRUPT,
           "regression: kve_check accepts a StreamingLLM sink newer than a recent token");
    t.c.pos[1] = save; t.c.pos[9] = save; t.c.pos[5] = 5; t.c.pos[13] = 5;
    EXPECT_RESULT(kve_check(&t.c), KVE_OK);
    t.c.ring_next[0] = 3; /* the next store would evict position 7, not the oldest recent (5) */
    EXPECT(kve_check(&t.c) == KVE_ERROR_CORRUPT,
           "regression: kve_check accepts a StreamingLLM ring that does not point at the oldest recent slot");
    t.c.ring_next[0] = 9; /* outside the ring: the next store fails */
    EXPECT(kve_check(&t.c) == KVE_ERROR_CORRUPT,
           "regression: kve_check accepts a StreamingLLM ring index outside the ring");
    t.c.ring_next[0] = 5;
    EXPECT_RESULT(kve_check(&t.c), KVE_OK);
    tc_close(&t);
}

/* ============================================================================================= */
/* Regressions: defects of kvevict.h. Each test states the contract it holds the library to.      */
/* ============================================================================================= */

/* Regression: kve_store accepted finite keys that RoPE rotation overflows to
   +-Inf; kve_attend then sees -Inf/NaN logits and returns zeros (or NaN) with KVE_OK. Contract:
   either the store is refused (KVE_ERROR_NOT_FINITE) or attention over one token returns its value. */
static void regress_overflowing_finite_values(void)
{
    tcache t;
    kve_config c = base_config(1, 1, 1, 4, 4);
    float k[4] = {3e38f, -3e38f, 3e38f, -3e38f}, v[4] = {1, 2, 3, 4}, q[4] = {3e38f, 3e38f, 3e38f, 3e38f};
    float o[4] = {0};
    kve_result r;
    g_test = "regression: finite values that overflow";
    EXPECT_RESULT(tc_open(&t, &c, KVE_LAYOUT_DEFAULT), KVE_OK);
    r = kve_store(&t.c, 0, 5, k, v, NULL);
    if (r == KVE_OK) {
        const float *kp = kve_key(&t.c, 0, 0, 0);
        int i, finite = 1;
        for (i = 0; i < 4; i++) finite &= isfinite(kp[i]) != 0;
        EXPECT(finite, "regression: kve_store accepted a finite key and stored Inf (%g %g %g %g)",
               kp[0], kp[1], kp[2], kp[3]);
        EXPECT_RESULT(kve_attend(&t.c, 0, q, o), KVE_OK);
        EXPECT(o[0] == 1 && o[1] == 2 && o[2] == 3 && o[3] == 4,
               "regression: attention over one token returned (%g %g %g %g), not its value", o[0], o[1],
               o[2], o[3]);
    } else {
        EXPECT(r == KVE_ERROR_NOT_FINITE, "refused with %s", kve_result_string(r));
    }
    tc_close(&t);

    /* finite inputs whose dot product is Inf - Inf: kve__exp_inplace converts NaN to int (undefined
       behaviour, reported by clang's -fsanitize=undefined) and the output is NaN. Skipped under
       clang's sanitizers, which would stop this program; tests/fuzz_kvevict.c finds it. */
#ifndef RL_CLANG_SANITIZED
    c = base_config(1, 1, 1, 2, 4);
    c.rope_layout = KVE_ROPE_NONE;
    EXPECT_RESULT(tc_open(&t, &c, KVE_LAYOUT_DEFAULT), KVE_OK);
    {
        float k0[2] = {0, 0}, k1[2] = {3e38f, -3e38f}, v2[2] = {1, 2}, q2[2] = {3e38f, 3e38f}, o2[2] = {0, 0};
        kve_result r0 = kve_store(&t.c, 0, 0, k0, v2, NULL), r1 = kve_store(&t.c, 0, 1, k1, v2, NULL);
        EXPECT(r0 == KVE_OK, "store of a zero key: %s", kve_result_string(r0));
        if (r1 == KVE_OK) {
            EXPECT_RESULT(kve_attend(&t.c, 0, q2, o2), KVE_OK);
            EXPECT(isfinite(o2[0]) && isfinite(o2[1]),
                   "regression: attention over finite inputs returned (%g %g)", o2[0], o2[1]);
        } else {
            EXPECT(r1 == KVE_ERROR_NOT_FINITE, "refused with %s", kve_result_string(r1));
        }
    }
    tc_close(&t);
#endif
}

/* Regression: kve_cache_init accepted a V buffer that is the K buffer, and a bookkeeping block
   inside the K buffer; every store then overwrites keys with values (or bookkeeping with keys).
   Contract (the manual: "init checks ... that no two vectors overlap"): init refuses. */
static void regress_aliased_buffers(void)
{
    kve_config c = base_config(1, 2, 2, 4, 8);
    size_t floats, bytes;
    float *buf;
    kve_buffers b;
    kve_cache cache;
    kve_result r;
    g_test = "regression: aliased buffers";
    f32_buffer_floats(&c, KVE_LAYOUT_DEFAULT, &floats);
    kve_cache_size(&c, &bytes);
    buf = (float *)xalloc((2 * floats + bytes / sizeof(float) + 64) * sizeof(float));
    memset(&b, 0, sizeof b);
    b.k = buf; b.v = buf; b.k_bytes = b.v_bytes = sizeof(float) * (floats);
    r = kve_cache_init(&c, &b, buf + 2 * floats + 16, bytes, &cache);
    EXPECT(r != KVE_OK, "regression: kve_cache_init accepted V == K (returned %s)", kve_result_string(r));
    b.v = buf + floats / 2; /* half of V on top of K */
    r = kve_cache_init(&c, &b, buf + 2 * floats + 16, bytes, &cache);
    EXPECT(r != KVE_OK, "regression: kve_cache_init accepted overlapping K and V (returned %s)",
           kve_result_string(r));
    b.v = buf + floats;
    r = kve_cache_init(&c, &b, buf + 2 * floats + 16, bytes, &cache);
    EXPECT(r == KVE_OK, "separate K, V and bookkeeping refused: %s", kve_result_string(r));
    r = kve_cache_init(&c, &b, buf + 16, bytes, &cache); /* bookkeeping inside K */
    EXPECT(r != KVE_OK, "regression: kve_cache_init accepted bookkeeping memory inside the K buffer");
    free(buf);
}

/* Regression: kve_keep_slots on a StreamingLLM cache broke its sink/ring bookkeeping: the kept
   slots are compacted into the sink slots, kve_check() reports KVE_ERROR_CORRUPT, later stores still
   succeed, and in post-RoPE pos-shift mode the next sink update overwrites a kept token's key with a
   sink's. Contract: either kve_keep_slots refuses (cache unchanged) or every kept token survives. */
static void regress_keep_slots_streaming(void)
{
    tcache t;
    kve_config c = base_config(1, 2, 2, 4, 8);
    float k[8], v[8];
    unsigned char keep[8] = {0, 1, 1, 1, 1, 1, 1, 1};
    int32_t i, h, s;
    int64_t p;
    kve_result r;
    g_test = "regression: keep_slots on StreamingLLM";
    c.policy.kind = KVE_POLICY_STREAMINGLLM; c.policy.sinks = 2; c.policy.budget = 6;
    EXPECT_RESULT(tc_open(&t, &c, KVE_LAYOUT_DEFAULT), KVE_OK);
    for (p = 0; p < 10; p++) {
        for (i = 0; i < 8; i++) { k[i] = pattern(PAT_K, 0, i / 4, p, i % 4); v[i] = pattern(PAT_V, 0, i / 4, p, i % 4); }
        EXPECT_RESULT(kve_store(&t.c, 0, p, k, v, NULL), KVE_OK);
    }
    {
        snapshot sn;
        snap_take(&sn, &t);
        r = kve_keep_slots(&t.c, 0, 0, keep);
        if (r == KVE_OK) r = kve_keep_slots(&t.c, 0, 1, keep);
        if (r != KVE_OK) EXPECT(snap_same(&sn, &t), "refused keep_slots changed the cache");
        snap_free(&sn);
    }
    if (r == KVE_OK) {
        EXPECT(kve_check(&t.c) == KVE_OK, "regression: kve_keep_slots left a StreamingLLM cache that "
               "kve_check calls corrupt (%s)", kve_result_string(kve_check(&t.c)));
        for (p = 10; p < 12; p++) {
            for (i = 0; i < 8; i++) { k[i] = pattern(PAT_K, 0, i / 4, p, i % 4); v[i] = pattern(PAT_V, 0, i / 4, p, i % 4); }
            kve_store(&t.c, 0, p, k, v, NULL);
        }
        /* every kept token still has its own value and (un-rotated) key */
        for (h = 0; h < 2; h++)
            for (s = 0; s < kve_length(&t.c, 0, h); s++) {
                double x[4];
                const float *kp = kve_key(&t.c, 0, h, s), *vp = kve_value(&t.c, 0, h, s);
                int good = 1;
                p = kve_slot_position(&t.c, 0, h, s);
                if (p < 2) continue; /* the first two tokens may be sinks at a shifted position */
                for (i = 0; i < 4; i++) x[i] = pattern(PAT_K, 0, h, p, i);
                ref_rotate(&t.rc, x, (double)p);
                for (i = 0; i < 4; i++)
                    good &= same_bits(vp[i], pattern(PAT_V, 0, h, p, i)) && fabs(kp[i] - x[i]) < 1e-5;
                EXPECT(good, "regression: after kve_keep_slots, slot %d (position %lld) lost its K/V",
                       (int)s, (long long)p);
            }
    }
    tc_close(&t);
}

/* Regression: H2O protected the recent window by position distance (pos >= newest - (window-2)),
   not by count, so with positions that skip (allowed: "strictly increasing") fewer than `window`
   recent tokens are protected. Contract (manual: "+ the window most recent tokens"): the `window`
   most recent tokens are always kept. */
static void regress_h2o_window_with_gaps(void)
{
    tcache t;
    kve_config c = base_config(1, 1, 1, 4, 8);
    float k[4], v[4], q[4], o[4];
    int32_t i, j, s;
    g_test = "regression: H2O window with position gaps";
    c.policy.kind = KVE_POLICY_H2O; c.policy.budget = 6; c.policy.window = 4;
    EXPECT_RESULT(tc_open(&t, &c, KVE_LAYOUT_DEFAULT), KVE_OK);
    for (i = 0; i < 14; i++) {
        int64_t pos = 10 * (int64_t)i;
        int all = 1;
        for (j = 0; j < 4; j++) { k[j] = pattern(PAT_K, 0, 0, pos, j); v[j] = k[j]; q[j] = pattern(PAT_Q, 0, 0, pos, j); }
        EXPECT_RESULT(kve_store(&t.c, 0, pos, k, v, NULL), KVE_OK);
        EXPECT_RESULT(kve_attend(&t.c, 0, q, o), KVE_OK);
        for (j = 0; j < 4 && j <= i; j++) {
            int found = 0;
            for (s = 0; s < kve_length(&t.c, 0, 0); s++) found |= kve_slot_position(&t.c, 0, 0, s) == pos - 10 * j;
            all &= found;
        }
        EXPECT(all, "regression: after storing position %lld, one of the 4 most recent tokens is gone",
               (long long)pos);
    }
    tc_close(&t);
}

/* Regression: a failed kve_compress changed the cache. SnapKV with decode = EVICT and no recorded
   queries: kve__snap_compress sets limit[layer] = budget before scoring fails with
   KVE_ERROR_NO_QUERIES, so the layer can no longer grow to capacity. Contract (manual: "a failed
   call leaves the cache as it was"): after the failed compress the layer stores exactly as before. */
static void regress_failed_compress_changes_limit(void)
{
    tcache t, ctl;
    kve_config c = base_config(1, 1, 1, 4, 16);
    float k[4] = {1, 0, 0, 1}, v[4] = {1, 2, 3, 4};
    int32_t i;
    g_test = "regression: failed compress";
    c.policy.kind = KVE_POLICY_SNAPKV; c.policy.budget = 8; c.policy.window = 2; c.policy.decode = KVE_DECODE_EVICT;
    EXPECT_RESULT(tc_open(&t, &c, KVE_LAYOUT_DEFAULT), KVE_OK);
    EXPECT_RESULT(tc_open(&ctl, &c, KVE_LAYOUT_DEFAULT), KVE_OK);
    for (i = 0; i < 12; i++) {
        EXPECT_RESULT(kve_store(&t.c, 0, i, k, v, NULL), KVE_OK);
        EXPECT_RESULT(kve_store(&ctl.c, 0, i, k, v, NULL), KVE_OK);
    }
    EXPECT_RESULT(kve_compress(&t.c, 0), KVE_ERROR_NO_QUERIES);
    for (i = 12; i < 16; i++) {
        kve_result want = kve_store(&ctl.c, 0, i, k, v, NULL), got = kve_store(&t.c, 0, i, k, v, NULL);
        EXPECT(want == KVE_OK, "control store %d: %s", (int)i, kve_result_string(want));
        EXPECT(got == want, "regression: after a failed kve_compress, storing position %d returns %s "
               "(an untouched cache: %s)", (int)i, kve_result_string(got), kve_result_string(want));
    }
    tc_close(&t);
    tc_close(&ctl);
}

/* Regression: a compression ratio that rounds a layer's share down to 0 emptied it, newest token
   included, although the policy protects its newest tokens (window > 0): kve_check then failed.
   Contract (manual, Budgets): such a compression keeps at least the newest token. */
static void regress_ratio_keeps_newest(void)
{
    int kind;
    static const kve_policy_kind kinds[] = {KVE_POLICY_OBSERVED_ATTENTION, KVE_POLICY_SNAPKV,
                                            KVE_POLICY_KNORM};
    for (kind = 0; kind < 3; kind++) {
        tcache t;
        kve_config c = base_config(1, 2, 1, 4, 8);
        float k[4] = {1, 0, 0, 1}, v[4] = {1, 2, 3, 4}, q[8] = {1, 0, 0, 1, 0, 1, 1, 0}, o[8];
        g_test = "regression: a ratio that rounds to 0 keeps the newest token";
        c.policy.kind = kinds[kind]; c.policy.window = 3; c.policy.compression_ratio = 0.9;
        EXPECT_RESULT(tc_open(&t, &c, KVE_LAYOUT_DEFAULT), KVE_OK);
        EXPECT_RESULT(kve_store(&t.c, 0, 5, k, v, NULL), KVE_OK);
        EXPECT_RESULT(kve_attend(&t.c, 0, q, o), KVE_OK);
        EXPECT_RESULT(kve_compress(&t.c, 0), KVE_OK);
        EXPECT(kve_length(&t.c, 0, 0) == 1, "policy kind %d, window 3, ratio 0.9, one token: %d kept, "
               "want 1", (int)kinds[kind], (int)kve_length(&t.c, 0, 0));
        EXPECT(kve_slot_position(&t.c, 0, 0, 0) == 5, "the kept token is position %lld, want 5",
               (long long)kve_slot_position(&t.c, 0, 0, 0));
        EXPECT_RESULT(kve_check(&t.c), KVE_OK);
        tc_close(&t);
    }
}

/* Regression: PyramidKV's allocation over a scorer with window 0 and a small budget gave the last
   layer a decode budget of 0, a layer that cannot hold its newest token. Contract (manual,
   Allocations): evicting while decoding, such a configuration is refused. */
static void regress_pyramid_zero_layer_budget(void)
{
    kve_config c = base_config(2, 1, 1, 4, 128), out;
    g_test = "regression: a PyramidKV layer budget of 0";
    c.policy.kind = KVE_POLICY_KEYDIFF; c.policy.budget = 2; c.policy.window = 0;
    c.policy.allocation = KVE_ALLOCATION_PYRAMID; c.policy.decode = KVE_DECODE_EVICT;
    EXPECT_RESULT(kve_config_resolve(&c, &out), KVE_ERROR_INVALID_PARAMETER);
    c.policy.budget = 40; /* both layers keep at least one token */
    EXPECT_RESULT(kve_config_resolve(&c, &out), KVE_OK);
    c.policy.budget = 2; c.policy.decode = KVE_DECODE_GROW; /* prompt compression only: allowed */
    EXPECT_RESULT(kve_config_resolve(&c, &out), KVE_OK);
}

/* Regression: an odd head_dim without RoPE was refused with KVE_ERROR_INVALID_ROPE, because
   rope_dims defaults to head_dim even for KVE_ROPE_NONE. Contract (manual: "head_dim <= 1024, even
   with RoPE"): with KVE_ROPE_NONE an odd head_dim works. */
static void regress_odd_head_dim_without_rope(void)
{
    tcache t;
    kve_config c = base_config(1, 1, 1, 5, 4);
    kve_result r;
    float k[5] = {1, 0, 0, 0, 0}, v[5] = {1, 2, 3, 4, 5}, o[5] = {0};
    g_test = "regression: odd head_dim without RoPE";
    c.rope_layout = KVE_ROPE_NONE;
    r = tc_open(&t, &c, KVE_LAYOUT_DEFAULT);
    EXPECT(r == KVE_OK, "regression: head_dim 5 with KVE_ROPE_NONE refused: %s", kve_result_string(r));
    if (r == KVE_OK) {
        EXPECT_RESULT(kve_store(&t.c, 0, 0, k, v, NULL), KVE_OK);
        EXPECT_RESULT(kve_attend(&t.c, 0, k, o), KVE_OK);
        EXPECT(o[0] == 1 && o[4] == 5, "one-token attention gave %g .. %g", o[0], o[4]);
    }
    tc_close(&t);
}

/* Regression: with positions that skip, StreamingLLM pos-shift moved the sinks by one common shift
   (oldest - sinks - first sink position), so sink i lands at oldest - sinks + (pos_i - pos_0) and
   the later sinks fall at or after the oldest recent token (even "in the future" of the query).
   Contract (manual: "places the sinks right before the oldest recent token"): sink i is rotated at
   oldest - sinks + i. Checked on the stored post-RoPE keys. */
static void regress_sink_shift_with_gaps(void)
{
    tcache t;
    kve_config c = base_config(1, 1, 1, 4, 4);
    float k[4], v[4];
    int32_t i, j;
    g_test = "regression: sink placement with position gaps";
    c.policy.kind = KVE_POLICY_STREAMINGLLM; c.policy.sinks = 2; c.policy.budget = 4;
    EXPECT_RESULT(tc_open(&t, &c, KVE_LAYOUT_DEFAULT), KVE_OK);
    for (i = 0; i < 5; i++) { /* positions 0 10 20 30 40: keeps sinks 0, 10 and recent 30, 40 */
        for (j = 0; j < 4; j++) { k[j] = pattern(PAT_K, 0, 0, 10 * i, j); v[j] = k[j]; }
        EXPECT_RESULT(kve_store(&t.c, 0, 10 * i, k, v, NULL), KVE_OK);
    }
    for (i = 0; i < 2; i++) {
        double x[4];
        const float *kp = kve_key(&t.c, 0, 0, i);
        double err = 0;
        EXPECT(kve_slot_position(&t.c, 0, 0, i) == 10 * i, "slot %d holds %lld", (int)i,
               (long long)kve_slot_position(&t.c, 0, 0, i));
        for (j = 0; j < 4; j++) x[j] = pattern(PAT_K, 0, 0, 10 * i, j);
        ref_rotate(&t.rc, x, 30.0 - 2 + i);
        for (j = 0; j < 4; j++) err = fmax(err, fabs(kp[j] - x[j]));
        EXPECT(err < 1e-5, "regression: sink %d (position %d) is not rotated at %d, right before the "
               "oldest recent token 30 (error %g)", (int)i, (int)(10 * i), (int)(28 + i), err);
    }
    tc_close(&t);
}

/* Regression: kve_config_resolve accepted positive, finite rope_linear_factor and rope_theta values
   for which (pos / factor) * freq_i overflows to Inf (factor 1e-310; theta 5e-324, where freq_i =
   theta^(-2i/rope_dims) reaches 1e313): cos/sin are NaN, so every key is stored as NaN, attention
   returns zeros with KVE_OK (and with a finite logit beside the NaN ones, kve__exp_inplace converts
   NaN to int: undefined behaviour). kve_rope_apply returns KVE_OK with a NaN vector. Contract: the
   configuration is refused (KVE_ERROR_INVALID_ROPE), or keys stay finite and attention over tokens
   that all hold the value v returns v. */
static void regress_extreme_rope_parameters(void)
{
    int variant;
    g_test = "regression: extreme RoPE parameters";
    for (variant = 0; variant < 2; variant++) {
        tcache t;
        kve_config c = base_config(1, 1, 1, 64, 4);
        float k[64], v[64], q[64], o[64], x[64];
        int32_t i;
        kve_result r;
        if (variant == 0) c.rope_linear_factor = 1e-310;
        else c.rope_theta = 5e-324;
        for (i = 0; i < 64; i++) { k[i] = q[i] = 0.125f; v[i] = (float)i; x[i] = 0.5f; }
        r = kve_rope_apply(&c, x, 3);
        if (r == KVE_OK)
            EXPECT(isfinite(x[0]) && isfinite(x[63]), "regression: kve_rope_apply with %s gave (%g .. %g)",
                   variant ? "theta 5e-324" : "linear factor 1e-310", x[0], x[63]);
        else
            EXPECT(r == KVE_ERROR_INVALID_ROPE, "kve_rope_apply refused with %s", kve_result_string(r));
        r = tc_open(&t, &c, KVE_LAYOUT_DEFAULT);
        if (r == KVE_OK) {
            int finite = 1;
            EXPECT_RESULT(kve_store(&t.c, 0, 1, k, v, NULL), KVE_OK);
            EXPECT_RESULT(kve_store(&t.c, 0, 2, k, v, NULL), KVE_OK);
            for (i = 0; i < 64; i++) finite &= isfinite(((const float *)kve_key(&t.c, 0, 0, 0))[i]) != 0;
            EXPECT(finite, "regression: with %s a stored key is not finite",
                   variant ? "theta 5e-324" : "linear factor 1e-310");
            EXPECT_RESULT(kve_attend(&t.c, 0, q, o), KVE_OK);
            EXPECT(fabs(o[1] - 1) < 1e-5 && fabs(o[63] - 63) < 1e-4,
                   "regression: with %s attention over two tokens holding v returned (%g .. %g), not v",
                   variant ? "theta 5e-324" : "linear factor 1e-310", o[1], o[63]);
        } else {
            EXPECT(r == KVE_ERROR_INVALID_ROPE, "refused with %s", kve_result_string(r));
        }
        tc_close(&t);
    }
}

/* ============================================================================================= */

static double wall_seconds(void)
{
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void run(const char *name, void (*fn)(void))
{
    double t0 = wall_seconds();
    int before = g_failed;
    fn();
    printf("  %-44s %7.2f s%s\n", name, wall_seconds() - t0, g_failed > before ? "  (failures)" : "");
    fflush(stdout);
}

int main(void)
{
    const char *e = getenv("KVEVICT_LONG"), *e2 = getenv("KVEVICT_QUICK");
    g_long = e && *e && strcmp(e, "0") != 0;
    g_quick = !g_long && e2 && *e2 && strcmp(e2, "0") != 0;
    run("result strings", test_result_strings);
    run("bad input: configurations", test_bad_configs);
    run("bad input: kve_cache_init", test_bad_init);
    run("bad input: RoPE", test_bad_rope);
    run("bad input: calls", test_bad_calls);
    run("checker", test_checker);
    run("determinism (1 and 2 threads, two runs)", test_determinism);
    run("nothing lost (every policy)", test_nothing_lost);
    run("regression: overflowing finite values", regress_overflowing_finite_values);
    run("regression: aliased buffers", regress_aliased_buffers);
    run("regression: keep_slots on StreamingLLM", regress_keep_slots_streaming);
    run("regression: H2O window with gaps", regress_h2o_window_with_gaps);
    run("regression: failed compress", regress_failed_compress_changes_limit);
    run("regression: odd head_dim without RoPE", regress_odd_head_dim_without_rope);
    run("regression: sink placement with gaps", regress_sink_shift_with_gaps);
    run("regression: extreme RoPE parameters", regress_extreme_rope_parameters);
    run("regression: a ratio that rounds to 0 keeps the newest token", regress_ratio_keeps_newest);
    run("regression: a PyramidKV layer budget of 0", regress_pyramid_zero_layer_budget);
    printf("test_reliability: %d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
