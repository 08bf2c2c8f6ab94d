/* Small shared helpers for the unit tests: counters, a deterministic RNG, cache setup and
   double-precision reference RoPE/attention written independently of the library. */
#ifndef TESTUTIL_H
#define TESTUTIL_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int tu_passed, tu_failed;

#define CHECK(cond, ...)                                                    \
    do {                                                                    \
        if (cond) tu_passed++;                                              \
        else {                                                              \
            tu_failed++;                                                    \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);            \
            fprintf(stderr, __VA_ARGS__);                                   \
            fprintf(stderr, "\n");                                          \
        }                                                                   \
    } while (0)

#define CHECK_RESULT(expr, expected)                                                        \
    do {                                                                                    \
        kve_result got_ = (expr);                                                           \
        CHECK(got_ == (expected), "%s returned %d (%s), expected %s", #expr, (int)got_,     \
              kve_result_string(got_), #expected);                                          \
    } while (0)

static int tu_summary(const char *name)
{
    printf("%s: %d passed, %d failed\n", name, tu_passed, tu_failed);
    return tu_failed ? 1 : 0;
}

static unsigned long long tu_rng_state = 0x9e3779b97f4a7c15ull;
static void tu_seed(unsigned long long s) { tu_rng_state = s * 0x9e3779b97f4a7c15ull + 1; }
static double tu_uniform(void) /* [0, 1) */
{
    tu_rng_state ^= tu_rng_state << 13;
    tu_rng_state ^= tu_rng_state >> 7;
    tu_rng_state ^= tu_rng_state << 17;
    return (double)(tu_rng_state >> 11) / 9007199254740992.0;
}
static float tu_normal(void)
{
    double u = tu_uniform() + 1e-12, v = tu_uniform();
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}
static void tu_fill(float *x, size_t n, float scale)
{
    size_t i;
    for (i = 0; i < n; i++) x[i] = scale * tu_normal();
}

static void *tu_alloc(size_t bytes)
{
    void *p = calloc(bytes ? bytes : 1, 1);
    if (!p) { fprintf(stderr, "out of memory\n"); exit(3); }
    return p;
}

/* f32 K/V buffers sized in floats, as most tests use them (the library counts bytes) */
static kve_result f32_buffer_floats(const kve_config *cfg, kve_layout layout, size_t *floats) __attribute__((unused));
static kve_result f32_buffer_floats(const kve_config *cfg, kve_layout layout, size_t *floats)
{
    size_t kb = 0, vb = 0;
    kve_result r = kve_buffer_bytes(cfg, layout, floats ? &kb : NULL, &vb);
    if (floats) *floats = kb / sizeof(float);
    return r;
}

/* a stride given in floats, as bytes (huge ones, meant to overflow, stay huge) */
static size_t f32_stride(size_t floats) __attribute__((unused));
static size_t f32_stride(size_t floats) { return floats > SIZE_MAX / sizeof(float) ? floats & ~(size_t)3 : floats * sizeof(float); }

/* PyramidKV's schedule as SPEC gives it: prefix tokens layer `layer` keeps from a prompt of L
   tokens, -1 for all of them */
static long ref_pyramid_prefix(long C, long w, long beta, long n_layers, long layer, long L) __attribute__((unused));
static long ref_pyramid_prefix(long C, long w, long beta, long n_layers, long layer, long L)
{
    long mn, mx;
    if (L < C) return -1;
    if (L < 2 * (C - w)) return C - w;
    mn = (C - w) / beta;
    mx = 2 * (C - w) - mn;
    if (mx >= L - w) { mx = L - w; mn = 2 * (C - w) - mx; }
    if (n_layers == 1) return C - w;
    return mx - layer * ((mx - mn) / (n_layers - 1));
}

/* a cache with its own buffers (default layout) */
typedef struct tu_cache {
    kve_cache c;
    float *k, *v;
    void *mem;
    size_t floats;
} tu_cache;

static kve_result tu_open(tu_cache *t, const kve_config *cfg)
{
    size_t bytes, kb, vb;
    kve_buffers b;
    kve_result r;
    memset(t, 0, sizeof *t);
    if ((r = kve_buffer_bytes(cfg, KVE_LAYOUT_DEFAULT, &kb, &vb)) != KVE_OK) return r;
    if ((r = kve_cache_size(cfg, &bytes)) != KVE_OK) return r;
    t->floats = kb / sizeof(float); /* for f32 caches */
    t->k = (float *)tu_alloc(kb);
    t->v = (float *)tu_alloc(vb);
    t->mem = tu_alloc(bytes);
    memset(&b, 0, sizeof b);
    b.k = t->k; b.v = t->v; b.k_bytes = kb; b.v_bytes = vb;
    return kve_cache_init(cfg, &b, t->mem, bytes, &t->c);
}

static void tu_close(tu_cache *t)
{
    free(t->k); free(t->v); free(t->mem);
    memset(t, 0, sizeof *t);
}

/* reference RoPE in double. layout 1 interleaved, 2 half, 3 none */
static void ref_rope(double *x, int d, int rot, int layout, double theta, double pos)
{
    /* the frequencies of the last (theta, rot) asked for: the reference is called per key
       (rot <= 1024, the largest head_dim) */
    static double freq[512], freq_theta = 0;
    static int freq_rot = 0;
    int i, half = rot / 2;
    if (theta != freq_theta || rot != freq_rot) {
        for (i = 0; i < half; i++) freq[i] = pow(theta, -2.0 * i / rot);
        freq_theta = theta; freq_rot = rot;
    }
    for (i = 0; i < half && layout != 3; i++) {
        double f = freq[i], a = pos * f, c = cos(a), s = sin(a);
        int ia = layout == 1 ? 2 * i : i, ib = layout == 1 ? 2 * i + 1 : i + half;
        double xa = x[ia], xb = x[ib];
        x[ia] = xa * c - xb * s;
        x[ib] = xb * c + xa * s;
    }
    (void)d;
}

/* reference attention of one query head over n keys (pre-RoPE) at given positions */
static void ref_attend(const float *q, double qpos, const float *const *keys, const float *const *vals,
                       const double *kpos, int n, int d, int layout, double theta, double *out,
                       double *probs) __attribute__((unused));
static void ref_attend(const float *q, double qpos, const float *const *keys, const float *const *vals,
                       const double *kpos, int n, int d, int layout, double theta, double *out,
                       double *probs)
{
    double qd[1024], kd[1024], mx = -INFINITY, sum = 0;
    double *lg = (double *)tu_alloc((size_t)n * sizeof(double));
    int i, j;
    for (i = 0; i < d; i++) qd[i] = q[i];
    ref_rope(qd, d, d, layout, theta, qpos);
    for (j = 0; j < n; j++) {
        double dot = 0;
        for (i = 0; i < d; i++) kd[i] = keys[j][i];
        ref_rope(kd, d, d, layout, theta, kpos[j]);
        for (i = 0; i < d; i++) dot += qd[i] * kd[i];
        lg[j] = dot / sqrt((double)d);
        if (lg[j] > mx) mx = lg[j];
    }
    for (j = 0; j < n; j++) sum += (lg[j] = exp(lg[j] - mx));
    for (i = 0; i < d; i++) out[i] = 0;
    for (j = 0; j < n; j++) {
        double p = lg[j] / sum;
        if (probs) probs[j] = p;
        for (i = 0; i < d; i++) out[i] += p * vals[j][i];
    }
    free(lg);
}

/* max |a-b| / max |b| */
static double rel_err_fd(const float *a, const double *b, size_t n) __attribute__((unused));
static double rel_err_fd(const float *a, const double *b, size_t n)
{
    double e = 0, s = 0;
    size_t i;
    for (i = 0; i < n; i++) {
        e = fmax(e, fabs(a[i] - b[i]));
        s = fmax(s, fabs(b[i]));
    }
    return e / (s > 0 ? s : 1);
}
static double rel_err_ff(const float *a, const float *b, size_t n)
{
    double e = 0, s = 0;
    size_t i;
    for (i = 0; i < n; i++) {
        e = fmax(e, fabs((double)a[i] - b[i]));
        s = fmax(s, fabs((double)b[i]));
    }
    return e / (s > 0 ? s : 1);
}

#endif
