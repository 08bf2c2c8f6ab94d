/* bench.c - kvevict benchmark: decode attention against the machine's read bandwidth, and the cost
   of eviction next to attention. Built by `make bench` (-O3 -march=native -fopenmp) and run as
   build/bench [--quick]. Prints tables, then one name=value line per headline figure; every figure
   is a ratio of two timings taken in this process. bench/README.md explains each figure.

   Timing: clock_gettime(CLOCK_MONOTONIC), a warm-up call first, then the median of repetitions
   (bandwidth and peak baselines: the best repetition, as a machine limit). */
#define _POSIX_C_SOURCE 200809L
#define KVEVICT_IMPLEMENTATION
#include "kvevict.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* f32 K/V buffers sized in floats, as most tests use them (the library counts bytes) */
static kve_result f32_buffer_floats(const kve_config *cfg, kve_layout layout, size_t *floats)
{
    size_t kb = 0, vb = 0;
    kve_result r = kve_buffer_bytes(cfg, layout, floats ? &kb : NULL, &vb);
    if (floats) *floats = kb / sizeof(float);
    return r;
}

#ifdef _OPENMP
#include <omp.h>
#define B_OMP(x) _Pragma(x)
#else
#define B_OMP(x)
#endif

/* ---- utilities ------------------------------------------------------------------------------ */
static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void die(const char *what, kve_result r)
{
    fprintf(stderr, "bench: %s: %s\n", what, kve_result_string(r));
    exit(1);
}

static void check(kve_result r, const char *what)
{
    if (r != KVE_OK) die(what, r);
}

static void *xalloc(size_t bytes)
{
    size_t rounded = (bytes + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, rounded ? rounded : 64);
    if (!p) {
        fprintf(stderr, "bench: out of memory (%zu bytes)\n", bytes);
        exit(1);
    }
    return p;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(const double *x, int n)
{
    double *t = (double *)xalloc((size_t)n * sizeof(double)), m;
    memcpy(t, x, (size_t)n * sizeof(double));
    qsort(t, (size_t)n, sizeof(double), cmp_double);
    m = n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
    free(t);
    return m;
}

static double best(const double *x, int n)
{
    double b = x[0];
    int i;
    for (i = 1; i < n; i++) b = x[i] < b ? x[i] : b;
    return b;
}

/* repetitions so that a call of `once` seconds fills about `budget` seconds, within [lo, hi] */
static int reps_for(double once, double budget, int lo, int hi)
{
    double r = once > 0 ? budget / once : hi;
    int n = r > hi ? hi : (int)r;
    return n < lo ? lo : n;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng_next(void)
{
    uint64_t x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545f4914f6cdd1dull;
}
/* uniform in [-1, 1) */
static void rand_fill(float *x, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) x[i] = (float)(rng_next() >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

static void set_threads(int t)
{
#ifdef _OPENMP
    omp_set_num_threads(t);
#else
    (void)t;
#endif
}

static int max_threads(void)
{
#ifdef _OPENMP
    return omp_get_num_procs() >= 2 ? 2 : 1;
#else
    return 1;
#endif
}

static size_t llc_bytes(void)
{
    long v = -1;
#ifdef _SC_LEVEL3_CACHE_SIZE
    v = sysconf(_SC_LEVEL3_CACHE_SIZE);
#endif
    if (v <= 0) {
        FILE *f = fopen("/sys/devices/system/cpu/cpu0/cache/index3/size", "r");
        if (f) {
            long kb;
            if (fscanf(f, "%ldK", &kb) == 1) v = kb * 1024;
            fclose(f);
        }
    }
    return v > 0 ? (size_t)v : (size_t)32 << 20;
}

/* 1-minute load average, or -1 where the system does not tell */
static double load_average(void)
{
    double v = -1.0;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &v) != 1) v = -1.0;
        fclose(f);
    }
    return v;
}

static volatile float sink_f; /* keeps results of the baselines alive */

/* ---- figures -------------------------------------------------------------------------------- */
#define MAX_FIGURES 256
static char fig_name[MAX_FIGURES][96];
static double fig_value[MAX_FIGURES];
static int n_figures;

static void figure(double value, const char *fmt, ...)
{
    va_list ap;
    if (n_figures >= MAX_FIGURES) return;
    va_start(ap, fmt);
    vsnprintf(fig_name[n_figures], sizeof fig_name[0], fmt, ap);
    va_end(ap);
    fig_value[n_figures++] = value;
}

/* ---- machine baselines -------------------------------------------------------------------- */
/* Peak: a register-blocked multiply-add loop, 128 independent lanes (8 AVX-512 registers). */
#define PEAK_LANES 128
static float peak_kernel(long iters, float seed)
{
    float a[PEAK_LANES], s = 0.0f;
    const float m = 0.9999999f, c = 1e-7f;
    long it;
    int j;
    for (j = 0; j < PEAK_LANES; j++) a[j] = seed + (float)j * 1e-3f;
    for (it = 0; it < iters; it++)
        for (j = 0; j < PEAK_LANES; j++) a[j] = fmaf(a[j], m, c);
    for (j = 0; j < PEAK_LANES; j++) s += a[j];
    return s;
}

/* GFLOP/s of `threads` threads running the peak loop at once, best of 7 */
static double measure_peak(int threads)
{
    const long iters = 2000000;
    double t[7];
    int r;
    set_threads(threads);
    for (r = 0; r < 7; r++) {
        double t0 = now_s();
        float acc = 0.0f;
        B_OMP("omp parallel reduction(+ : acc)")
        acc += peak_kernel(iters, 1.0f);
        sink_f = acc;
        t[r] = now_s() - t0;
    }
    return (double)threads * (double)iters * PEAK_LANES * 2.0 / best(t, 7) * 1e-9;
}

/* Read bandwidth: sum of floats with 128 independent lanes, no stores. */
static float stream_sum(const float *x, size_t n)
{
    float acc[128], s = 0.0f;
    size_t i = 0;
    int j;
    for (j = 0; j < 128; j++) acc[j] = 0.0f;
    for (; i + 128 <= n; i += 128)
        for (j = 0; j < 128; j++) acc[j] += x[i + j];
    for (; i < n; i++) acc[0] += x[i];
    for (j = 0; j < 128; j++) s += acc[j];
    return s;
}

/* One pass over the bytes decode attention reads: the K and V rows [0, n) of every KV head, the
   heads spread over the threads the way the library spreads them. Returns seconds. */
static double stream_pass(float *const *kseg, float *const *vseg, int nseg, size_t seg_floats)
{
    double t0 = now_s();
    float acc = 0.0f;
    int i;
    B_OMP("omp parallel for schedule(static) reduction(+ : acc)")
    for (i = 0; i < nseg; i++) acc += stream_sum(kseg[i], seg_floats) + stream_sum(vseg[i], seg_floats);
    sink_f = acc;
    return now_s() - t0;
}

/* ---- model shapes ------------------------------------------------------------------------- */
typedef struct shape {
    const char *name;
    int32_t heads, kv_heads, dim;
} shape;
static const shape LLAMA2 = {"llama2", 32, 32, 128}; /* Llama-2-7B layer */
static const shape LLAMA3 = {"llama3", 32, 8, 128};  /* Llama-3-8B layer */
static const shape PROMPT = {"h4kv2", 4, 2, 128};   /* 4 query heads sharing 2 KV heads (figure 4) */
static const shape MQA = {"mqa", 32, 1, 128};        /* multi-query: one KV head (flash-decoding) */

/* ---- a cache with caller-owned buffers ------------------------------------------------------ */
typedef struct bcache {
    kve_config cfg;
    kve_cache c;
    float *k, *v;
    size_t floats;
    void *mem;
    size_t mem_bytes;
} bcache;

static void bc_init(bcache *b, const kve_config *cfg)
{
    kve_buffers buf;
    memset(b, 0, sizeof *b);
    b->cfg = *cfg;
    check(f32_buffer_floats(cfg, KVE_LAYOUT_HEAD_MAJOR, &b->floats), "kve_buffer_floats");
    check(kve_cache_size(cfg, &b->mem_bytes), "kve_cache_size");
    b->k = (float *)xalloc(b->floats * sizeof(float));
    b->v = (float *)xalloc(b->floats * sizeof(float));
    b->mem = xalloc(b->mem_bytes);
    memset(&buf, 0, sizeof buf);
    buf.k = b->k;
    buf.v = b->v;
    buf.k_bytes = buf.v_bytes = sizeof(float) * (b->floats);
    buf.layout = KVE_LAYOUT_HEAD_MAJOR;
    check(kve_cache_init(cfg, &buf, b->mem, b->mem_bytes, &b->c), "kve_cache_init");
}

static void bc_free(bcache *b)
{
    free(b->k);
    free(b->v);
    free(b->mem);
    memset(b, 0, sizeof *b);
}

static kve_config make_cfg(const shape *s, int32_t layers, int32_t capacity, kve_policy_kind kind)
{
    kve_config c;
    memset(&c, 0, sizeof c);
    c.n_layers = layers;
    c.n_heads = s->heads;
    c.n_kv_heads = s->kv_heads;
    c.head_dim = s->dim;
    c.capacity = capacity;
    c.policy.kind = kind;
    return c;
}

/* per-token k, v (and q) vectors of one shape */
typedef struct tokgen {
    float *k, *v, *q;
} tokgen;

static void tg_init(tokgen *t, const shape *s)
{
    t->k = (float *)xalloc((size_t)s->kv_heads * (size_t)s->dim * sizeof(float));
    t->v = (float *)xalloc((size_t)s->kv_heads * (size_t)s->dim * sizeof(float));
    t->q = (float *)xalloc((size_t)s->heads * (size_t)s->dim * sizeof(float));
}
static void tg_free(tokgen *t)
{
    free(t->k);
    free(t->v);
    free(t->q);
}
static void tg_next(tokgen *t, const shape *s)
{
    rand_fill(t->k, (size_t)s->kv_heads * (size_t)s->dim);
    rand_fill(t->v, (size_t)s->kv_heads * (size_t)s->dim);
    rand_fill(t->q, (size_t)s->heads * (size_t)s->dim);
}

/* ---- the baseline a llama2.c-style engine has: scalar, key by key ---------------------------- */
/* K and V in that engine's layout, [slot][kv_head][dim]; q arrives before RoPE and is rotated here
   pair by pair in float, then each query head scores every key with a scalar dot product, takes a
   softmax over its score row and sums the values. Query heads run in parallel. */
static void naive_attend(const shape *s, const float *kc, const float *vc, int32_t n, int64_t pos,
                         const float *q_in, float *q, float *att, float *out)
{
    int32_t H = s->heads, d = s->dim, kv_dim = s->kv_heads * d, group = s->heads / s->kv_heads, h, i;
    for (i = 0; i < H * d; i += 2) {
        float freq = 1.0f / powf(10000.0f, (float)(i % d) / (float)d);
        float angle = (float)pos * freq, cr = cosf(angle), ci = sinf(angle);
        float x0 = q_in[i], x1 = q_in[i + 1];
        q[i] = x0 * cr - x1 * ci;
        q[i + 1] = x0 * ci + x1 * cr;
    }
    B_OMP("omp parallel for schedule(static)")
    for (h = 0; h < H; h++) {
        const float *qh = q + (size_t)h * (size_t)d;
        float *a = att + (size_t)h * (size_t)n, *o = out + (size_t)h * (size_t)d;
        float mx, sum = 0.0f;
        int32_t t, j;
        for (t = 0; t < n; t++) {
            const float *kt = kc + (size_t)t * (size_t)kv_dim + (size_t)(h / group) * (size_t)d;
            float score = 0.0f;
            for (j = 0; j < d; j++) score += qh[j] * kt[j];
            a[t] = score / sqrtf((float)d);
        }
        mx = a[0];
        for (t = 1; t < n; t++)
            if (a[t] > mx) mx = a[t];
        for (t = 0; t < n; t++) {
            a[t] = expf(a[t] - mx);
            sum += a[t];
        }
        for (t = 0; t < n; t++) a[t] /= sum;
        for (j = 0; j < d; j++) o[j] = 0.0f;
        for (t = 0; t < n; t++) {
            const float *vt = vc + (size_t)t * (size_t)kv_dim + (size_t)(h / group) * (size_t)d;
            float w = a[t];
            for (j = 0; j < d; j++) o[j] += w * vt[j];
        }
    }
}

/* ---- EXPERIMENT (not the library): a one-pass blocked decode attention ------------------------ */
/* What a fused kernel reaches on the same buffers, to show what the hardware allows; the headline
   figures time the library. Per KV head, all G query heads at once; keys and values read once, in
   blocks of 16 tokens, with an online softmax (running max, rescale), no score row in memory:
     logits: per key a 16-lane partial product (8 multiply-adds over head_dim 128), then the 16
             partial vectors of a block folded together in 4 halving steps (a transposed
             reduction the compiler turns into shuffles), instead of one horizontal sum per key;
     max, sum: fixed-order trees over the 16 logits of a block (vectorisable);
     values: out_g += p_g[j] * v_j with fmaf over head_dim (vectorised by the loop vectoriser).
   Interleaved RoPE of q with the angles computed once per position for all heads. */
#define EXP_BLOCK 16
#define EXP_MAX_G 32
#define EXP_MAX_D 256

static void exp_exp16(float *x)
{
    kve__exp_inplace(x, 16); /* the library's branch-free exp (this file holds the implementation) */
}

/* logits of one query row against nb <= 16 keys (rows of d floats, d a multiple of 16) */
static inline void exp_logits16(const float *q, const float *k, int32_t nb, int32_t d, float *out)
{
    float P[16][16], A[8][16], B[4][16], C[2][16];
    int32_t j, l, i, m;
    for (j = 0; j < nb; j++) {
        const float *kj = k + (size_t)j * (size_t)d;
        float a[16];
        for (l = 0; l < 16; l++) a[l] = q[l] * kj[l];
        for (i = 16; i < d; i += 16)
            for (l = 0; l < 16; l++) a[l] += q[i + l] * kj[i + l];
        memcpy(P[j], a, sizeof a);
    }
    for (; j < 16; j++) memset(P[j], 0, sizeof P[j]);
    for (j = 0; j < 8; j++) /* A[j]: 8 partials of key 2j, then 8 of key 2j+1 */
        for (l = 0; l < 8; l++) {
            A[j][l] = P[2 * j][l] + P[2 * j][l + 8];
            A[j][l + 8] = P[2 * j + 1][l] + P[2 * j + 1][l + 8];
        }
    for (j = 0; j < 4; j++) /* B[j]: 4 partials of keys 4j .. 4j+3 */
        for (l = 0; l < 4; l++) {
            B[j][l] = A[2 * j][l] + A[2 * j][l + 4];
            B[j][l + 4] = A[2 * j][l + 8] + A[2 * j][l + 12];
            B[j][l + 8] = A[2 * j + 1][l] + A[2 * j + 1][l + 4];
            B[j][l + 12] = A[2 * j + 1][l + 8] + A[2 * j + 1][l + 12];
        }
    for (j = 0; j < 2; j++) /* C[j]: 2 partials of keys 8j .. 8j+7 */
        for (l = 0; l < 2; l++)
            for (m = 0; m < 4; m++) {
                C[j][m * 2 + l] = B[2 * j][m * 4 + l] + B[2 * j][m * 4 + l + 2];
                C[j][8 + m * 2 + l] = B[2 * j + 1][m * 4 + l] + B[2 * j + 1][m * 4 + l + 2];
            }
    for (l = 0; l < 8; l++) {
        out[l] = C[0][2 * l] + C[0][2 * l + 1];
        out[8 + l] = C[1][2 * l] + C[1][2 * l + 1];
    }
}

static inline void exp_head(const float *qs, const float *kh, const float *vh, int32_t n, int32_t G,
                     int32_t d, float *out)
{
    float acc[EXP_MAX_G][EXP_MAX_D], m[EXP_MAX_G], l[EXP_MAX_G], p[EXP_MAX_G][EXP_BLOCK];
    int32_t g, b0, j, i;
    for (g = 0; g < G; g++) {
        m[g] = -INFINITY;
        l[g] = 0.0f;
        for (i = 0; i < d; i++) acc[g][i] = 0.0f;
    }
    for (b0 = 0; b0 < n; b0 += EXP_BLOCK) {
        int32_t nb = n - b0 < EXP_BLOCK ? n - b0 : EXP_BLOCK;
        const float *kb = kh + (size_t)b0 * (size_t)d, *vb = vh + (size_t)b0 * (size_t)d;
        for (g = 0; g < G; g++) {
            float t8[8], t4[4], bm, b2;
            exp_logits16(qs + (size_t)g * (size_t)d, kb, nb, d, p[g]);
            for (j = nb; j < 16; j++) p[g][j] = -INFINITY;
            for (j = 0; j < 8; j++) t8[j] = p[g][j] > p[g][j + 8] ? p[g][j] : p[g][j + 8];
            for (j = 0; j < 4; j++) t4[j] = t8[j] > t8[j + 4] ? t8[j] : t8[j + 4];
            bm = t4[0] > t4[2] ? t4[0] : t4[2];
            b2 = t4[1] > t4[3] ? t4[1] : t4[3];
            bm = bm > b2 ? bm : b2;
            if (bm > m[g]) { /* a new running max: rescale what was summed so far */
                float r = m[g] == -INFINITY ? 0.0f : expf(m[g] - bm);
                for (i = 0; i < d; i++) acc[g][i] *= r;
                l[g] *= r;
                m[g] = bm;
            }
            for (j = 0; j < 16; j++) p[g][j] -= m[g];
            exp_exp16(p[g]);
            for (j = 0; j < 8; j++) t8[j] = p[g][j] + p[g][j + 8];
            for (j = 0; j < 4; j++) t4[j] = t8[j] + t8[j + 4];
            l[g] += (t4[0] + t4[2]) + (t4[1] + t4[3]);
        }
        for (j = 0; j < nb; j++) {
            const float *vj = vb + (size_t)j * (size_t)d;
            for (g = 0; g < G; g++) {
                float w = p[g][j], *a = acc[g];
                for (i = 0; i < d; i++) a[i] = fmaf(w, vj[i], a[i]);
            }
        }
    }
    for (g = 0; g < G; g++)
        for (i = 0; i < d; i++) out[(size_t)g * (size_t)d + i] = acc[g][i] / l[g];
}

static void exp_attend(const bcache *b, int32_t layer, int32_t n, int64_t pos, const float *q_in,
                       float *qs, float *out)
{
    const kve_config *c = &b->cfg;
    int32_t Hk = c->n_kv_heads, G = c->n_heads / c->n_kv_heads, d = c->head_dim, h, i;
    float cs[EXP_MAX_D / 2], sn[EXP_MAX_D / 2], scale = 1.0f / sqrtf((float)d);
    for (i = 0; i < d / 2; i++) {
        double a = (double)pos * pow(10000.0, -2.0 * (double)i / (double)d);
        cs[i] = (float)cos(a);
        sn[i] = (float)sin(a);
    }
    for (h = 0; h < c->n_heads; h++)
        for (i = 0; i < d / 2; i++) {
            const float *x = q_in + (size_t)h * (size_t)d;
            float a = x[2 * i], bb = x[2 * i + 1];
            qs[(size_t)h * (size_t)d + 2 * i] = (a * cs[i] - bb * sn[i]) * scale;
            qs[(size_t)h * (size_t)d + 2 * i + 1] = (bb * cs[i] + a * sn[i]) * scale;
        }
    B_OMP("omp parallel for schedule(static)")
    for (h = 0; h < Hk; h++)
        if (d == 128) /* a constant head_dim lets the compiler unroll the inner loops */
            exp_head(qs + (size_t)h * (size_t)G * 128, kve_key(&b->c, layer, h, 0),
                     kve_value(&b->c, layer, h, 0), n, G, 128, out + (size_t)h * (size_t)G * 128);
        else
            exp_head(qs + (size_t)h * (size_t)G * (size_t)d, kve_key(&b->c, layer, h, 0),
                     kve_value(&b->c, layer, h, 0), n, G, d, out + (size_t)h * (size_t)G * (size_t)d);
}

static float max_abs_diff(const float *a, const float *b, size_t n)
{
    float m = 0.0f;
    size_t i;
    for (i = 0; i < n; i++) {
        float x = fabsf(a[i] - b[i]);
        m = x > m ? x : m;
    }
    return m;
}

/* ---- 1, 2: decode attention against bandwidth, peak and the naive loop ----------------------- */
static int quick;
static double peak_gflops[3];
static size_t llc;

static void bench_attention(const shape *s, const int32_t *sizes, int nsizes)
{
    int32_t cap = sizes[nsizes - 1], Hk = s->kv_heads, d = s->dim, H = s->heads, n = 0, h;
    size_t kv_dim = (size_t)Hk * (size_t)d;
    bcache b;
    tokgen tg;
    kve_config cfg = make_cfg(s, 1, cap, KVE_POLICY_FULL);
    float *naive_k, *naive_v, *naive_q, *att, *out_lib, *out_ref, *qs;
    float **kseg, **vseg;
    int si, t;

    bc_init(&b, &cfg);
    tg_init(&tg, s);
    naive_k = (float *)xalloc((size_t)cap * kv_dim * sizeof(float));
    naive_v = (float *)xalloc((size_t)cap * kv_dim * sizeof(float));
    naive_q = (float *)xalloc((size_t)H * (size_t)d * sizeof(float));
    qs = (float *)xalloc((size_t)H * (size_t)d * sizeof(float));
    att = (float *)xalloc((size_t)H * (size_t)cap * sizeof(float));
    out_lib = (float *)xalloc((size_t)H * (size_t)d * sizeof(float));
    out_ref = (float *)xalloc((size_t)H * (size_t)d * sizeof(float));
    kseg = (float **)xalloc((size_t)Hk * sizeof(float *));
    vseg = (float **)xalloc((size_t)Hk * sizeof(float *));
    for (h = 0; h < Hk; h++) {
        kseg[h] = kve_key(&b.c, 0, h, 0);
        vseg[h] = kve_value(&b.c, 0, h, 0);
    }

    for (si = 0; si < nsizes; si++) {
        int32_t target = sizes[si];
        size_t bytes = 2 * (size_t)Hk * (size_t)target * (size_t)d * sizeof(float);
        double flops = 4.0 * (double)H * (double)target * (double)d;
        int in_llc = bytes <= llc;
        set_threads(max_threads());
        for (; n < target; n++) {
            tg_next(&tg, s);
            check(kve_store(&b.c, 0, n, tg.k, tg.v, NULL), "kve_store");
            for (h = 0; h < Hk; h++) { /* the same (rotated) vectors in the llama2.c layout */
                memcpy(naive_k + (size_t)n * kv_dim + (size_t)h * (size_t)d, kve_key(&b.c, 0, h, n),
                       (size_t)d * sizeof(float));
                memcpy(naive_v + (size_t)n * kv_dim + (size_t)h * (size_t)d, kve_value(&b.c, 0, h, n),
                       (size_t)d * sizeof(float));
            }
        }
        rand_fill(tg.q, (size_t)H * (size_t)d);
        for (t = 1; t <= max_threads(); t++) {
            double bw, once, t_lib, t_naive, t_exp, *tl, *te, ts[8], tn[3];
            int rounds = quick ? 3 : 5, per, r, k, nt = 0;
            float diff_naive, diff_exp;
            set_threads(t);
            /* warm-ups (and the outputs compared below) */
            stream_pass(kseg, vseg, Hk, (size_t)target * (size_t)d);
            exp_attend(&b, 0, target, target - 1, tg.q, qs, out_ref);
            once = now_s();
            check(kve_attend(&b.c, 0, tg.q, out_lib), "kve_attend");
            once = now_s() - once;
            diff_exp = max_abs_diff(out_lib, out_ref, (size_t)H * (size_t)d);
            /* rounds of: one read pass, `per` library calls, `per` experiment calls, so that the
               baseline and the figure see the same state of the machine */
            per = reps_for(once * rounds, quick ? 0.25 : 1.0, 1, 41);
            tl = (double *)xalloc((size_t)(rounds * per) * sizeof(double));
            te = (double *)xalloc((size_t)(rounds * per) * sizeof(double));
            for (r = 0; r < rounds; r++) {
                ts[r] = stream_pass(kseg, vseg, Hk, (size_t)target * (size_t)d);
                for (k = 0; k < per; k++) {
                    double t0 = now_s();
                    kve_attend(&b.c, 0, tg.q, out_lib);
                    tl[nt + k] = now_s() - t0;
                }
                for (k = 0; k < per; k++) {
                    double t0 = now_s();
                    exp_attend(&b, 0, target, target - 1, tg.q, qs, out_ref);
                    te[nt + k] = now_s() - t0;
                }
                nt += per;
            }
            bw = (double)bytes / best(ts, rounds) * 1e-9;
            t_lib = median(tl, nt);
            t_exp = median(te, nt);
            free(tl);
            free(te);
            /* the naive loop (3 calls after a warm-up: it is slow) */
            naive_attend(s, naive_k, naive_v, target, target - 1, tg.q, naive_q, att, out_ref);
            diff_naive = max_abs_diff(out_lib, out_ref, (size_t)H * (size_t)d);
            for (r = 0; r < 3; r++) {
                double t0 = now_s();
                naive_attend(s, naive_k, naive_v, target, target - 1, tg.q, naive_q, att, out_ref);
                tn[r] = now_s() - t0;
            }
            t_naive = median(tn, 3);
            {
                double lib_gbs = (double)bytes / t_lib * 1e-9, gf = flops / t_lib * 1e-9;
                double ratio = lib_gbs / bw;
                printf("%-7s %6d %2d %8.1f %-4s %8.1f %9.3f %8.1f %6.3f %7.1f %7.1f %9.3f %7.1f "
                       "%8.1f %6.3f %8.1e %8.1e\n",
                       s->name, target, t, (double)bytes / (1 << 20), in_llc ? "yes" : "no", bw,
                       t_lib * 1e3, lib_gbs, ratio, gf, peak_gflops[t], t_naive * 1e3,
                       t_naive / t_lib, (double)bytes / t_exp * 1e-9,
                       (double)bytes / t_exp * 1e-9 / bw, (double)diff_naive, (double)diff_exp);
                fflush(stdout);
                figure(ratio, "attn_bw_ratio_%s_%d_t%d", s->name, target, t);
                figure(t_naive / t_lib, "attn_speedup_vs_naive_%s_%d_t%d", s->name, target, t);
                if (in_llc) figure(gf / peak_gflops[t], "attn_flops_ratio_%s_%d_t%d", s->name, target, t);
                figure((double)bytes / t_exp * 1e-9 / bw, "exp_fused_bw_ratio_%s_%d_t%d", s->name, target, t);
            }
        }
    }
    free(kseg);
    free(vseg);
    free(naive_k);
    free(naive_v);
    free(naive_q);
    free(qs);
    free(att);
    free(out_lib);
    free(out_ref);
    tg_free(&tg);
    bc_free(&b);
}

/* ---- 3, 5, 6: decode steps with eviction ---------------------------------------------------- */
/* One decode step = kve_store (which evicts when the layer is full) + kve_attend. */
typedef struct stepper {
    const char *label;
    bcache b;
    int32_t layer;
    int64_t pos;
    double *t_store, *t_attend, *t_step; /* per timed step */
    unsigned char *evicted;
    int n_timed, max_timed;
} stepper;

static void st_init(stepper *st, const char *label, const kve_config *cfg, int32_t layer, int max_timed)
{
    memset(st, 0, sizeof *st);
    st->label = label;
    bc_init(&st->b, cfg);
    st->layer = layer;
    st->max_timed = max_timed;
    st->t_store = (double *)xalloc((size_t)max_timed * sizeof(double));
    st->t_attend = (double *)xalloc((size_t)max_timed * sizeof(double));
    st->t_step = (double *)xalloc((size_t)max_timed * sizeof(double));
    st->evicted = (unsigned char *)xalloc((size_t)max_timed);
}

static void st_free(stepper *st)
{
    free(st->t_store);
    free(st->t_attend);
    free(st->t_step);
    free(st->evicted);
    bc_free(&st->b);
}

/* stores `count` tokens without attention (a prompt), using the shared token stream */
static void st_fill(stepper *st, const shape *s, tokgen *tg, int32_t count)
{
    int32_t i;
    for (i = 0; i < count; i++) {
        tg_next(tg, s);
        check(kve_store(&st->b.c, st->layer, st->pos++, tg->k, tg->v, NULL), "kve_store (fill)");
    }
}

/* one decode step; timed when `timed` */
static void st_step(stepper *st, const shape *s, tokgen *tg, float *out, int timed)
{
    double t0, t1, t2;
    int32_t before = kve_length(&st->b.c, st->layer, 0), after;
    tg_next(tg, s);
    t0 = now_s();
    check(kve_store(&st->b.c, st->layer, st->pos++, tg->k, tg->v, NULL), "kve_store (step)");
    t1 = now_s();
    check(kve_attend(&st->b.c, st->layer, tg->q, out), "kve_attend (step)");
    t2 = now_s();
    after = kve_length(&st->b.c, st->layer, 0);
    if (timed && st->n_timed < st->max_timed) {
        st->t_store[st->n_timed] = t1 - t0;
        st->t_attend[st->n_timed] = t2 - t1;
        st->t_step[st->n_timed] = t2 - t0;
        st->evicted[st->n_timed] = after <= before;
        st->n_timed++;
    }
}

/* median of the store times of steps that evicted (evicted = 1) or did not (0) */
static double st_median_store(const stepper *st, int evicted, int *count)
{
    double *x = (double *)xalloc((size_t)(st->n_timed + 1) * sizeof(double)), m = 0.0;
    int i, k = 0;
    for (i = 0; i < st->n_timed; i++)
        if (st->evicted[i] == evicted) x[k++] = st->t_store[i];
    if (k > 0) m = median(x, k);
    free(x);
    *count = k;
    return m;
}

/* ratio of a over b: the median over rounds of (median of a's times in the round) / (median of
   b's); a and b hold `rounds` blocks of `per` times each */
static double paired_ratio(const double *a, const double *b, int rounds, int per)
{
    double *q = (double *)xalloc((size_t)rounds * sizeof(double)), m;
    int r;
    for (r = 0; r < rounds; r++)
        q[r] = median(a + (size_t)r * (size_t)per, per) / median(b + (size_t)r * (size_t)per, per);
    m = median(q, rounds);
    free(q);
    return m;
}

static kve_config streaming_cfg(const shape *s, int32_t cap, kve_pos_shift ps, kve_key_storage ks)
{
    kve_config c = make_cfg(s, 1, cap, KVE_POLICY_STREAMINGLLM);
    c.policy.pos_shift = ps;
    c.key_storage = ks;
    return c;
}

/* Variants of one measurement (pos-shift on/off, pre-RoPE; H2O/FULL) share the same K/V buffers
   and bookkeeping block: each turn initialises its cache on them and refills it with the same
   tokens, so all variants read the same physical memory (caches of their own would sit
   differently in the shared L3; measured, that alone moves a ratio by up to 30%). */
typedef struct variant {
    const char *label;
    kve_config cfg;
    double *t_step, *t_store, *t_attend; /* rounds * per_block timed steps */
    int n_timed;
} variant;

/* mode 0: a decode step is kve_store (evicting once full) + kve_attend; mode 1: kve_attend alone */
static void run_variants(const shape *s, variant *v, int nv, int32_t fill, int rounds, int warm,
                         int per_block, int mode)
{
    size_t floats = 0, mem_bytes = 0, f, m;
    float *k, *vb, *out = (float *)xalloc((size_t)s->heads * (size_t)s->dim * sizeof(float));
    void *mem;
    kve_buffers buf;
    tokgen tg;
    int r, i, j;
    for (i = 0; i < nv; i++) {
        check(f32_buffer_floats(&v[i].cfg, KVE_LAYOUT_HEAD_MAJOR, &f), "kve_buffer_floats");
        check(kve_cache_size(&v[i].cfg, &m), "kve_cache_size");
        floats = f > floats ? f : floats;
        mem_bytes = m > mem_bytes ? m : mem_bytes;
        v[i].t_step = (double *)xalloc((size_t)(rounds * per_block) * sizeof(double));
        v[i].t_store = (double *)xalloc((size_t)(rounds * per_block) * sizeof(double));
        v[i].t_attend = (double *)xalloc((size_t)(rounds * per_block) * sizeof(double));
        v[i].n_timed = 0;
    }
    k = (float *)xalloc(floats * sizeof(float));
    vb = (float *)xalloc(floats * sizeof(float));
    mem = xalloc(mem_bytes);
    memset(&buf, 0, sizeof buf);
    buf.k = k;
    buf.v = vb;
    buf.k_bytes = buf.v_bytes = sizeof(float) * (floats);
    buf.layout = KVE_LAYOUT_HEAD_MAJOR;
    tg_init(&tg, s);
    for (r = 0; r < rounds; r++)
        for (i = 0; i < nv; i++) {
            variant *x = &v[r % 2 ? nv - 1 - i : i]; /* alternating order */
            kve_cache c;
            int64_t pos = 0;
            check(kve_cache_init(&x->cfg, &buf, mem, mem_bytes, &c), "kve_cache_init");
            rng_state = 1000 + (uint64_t)r; /* the same tokens for every variant of a round */
            for (j = 0; j < fill; j++) {
                tg_next(&tg, s);
                check(kve_store(&c, 0, pos++, tg.k, tg.v, NULL), "kve_store (fill)");
            }
            for (j = 0; j < warm + per_block; j++) {
                double t0, t1, t2;
                if (mode == 0) tg_next(&tg, s);
                t0 = now_s();
                if (mode == 0) check(kve_store(&c, 0, pos++, tg.k, tg.v, NULL), "kve_store (step)");
                t1 = now_s();
                check(kve_attend(&c, 0, tg.q, out), "kve_attend (step)");
                t2 = now_s();
                if (j >= warm) {
                    x->t_store[x->n_timed] = t1 - t0;
                    x->t_attend[x->n_timed] = t2 - t1;
                    x->t_step[x->n_timed] = t2 - t0;
                    x->n_timed++;
                }
            }
        }
    tg_free(&tg);
    free(k);
    free(vb);
    free(mem);
    free(out);
}

static void free_variants(variant *v, int nv)
{
    int i;
    for (i = 0; i < nv; i++) {
        free(v[i].t_step);
        free(v[i].t_store);
        free(v[i].t_attend);
    }
}

static void bench_streaming(const shape *s, int32_t cap, int threads)
{
    variant v[3];
    int rounds = quick ? 3 : 11, per_block = cap <= 1024 ? (quick ? 12 : 24) : (quick ? 4 : 8);
    int warm = cap <= 1024 ? 4 : 3, i;
    double m_off, r_on, r_pre, s_off, s_on;
    memset(v, 0, sizeof v);
    v[0].label = "pos-shift off";
    v[0].cfg = streaming_cfg(s, cap, KVE_POS_SHIFT_OFF, KVE_KEYS_POST_ROPE);
    v[1].label = "pos-shift on";
    v[1].cfg = streaming_cfg(s, cap, KVE_POS_SHIFT_ON, KVE_KEYS_POST_ROPE);
    v[2].label = "pre-RoPE";
    v[2].cfg = streaming_cfg(s, cap, KVE_POS_SHIFT_ON, KVE_KEYS_PRE_ROPE);
    set_threads(threads);
    /* full, and the ring has turned: every timed step evicts */
    run_variants(s, v, 3, cap + 8, rounds, warm, per_block, 0);
    m_off = median(v[0].t_step, v[0].n_timed);
    r_on = paired_ratio(v[1].t_step, v[0].t_step, rounds, per_block);
    r_pre = paired_ratio(v[2].t_step, v[1].t_step, rounds, per_block);
    for (i = 0; i < 3; i++)
        printf("%-7s %6d %2d %-14s %9.3f %9.3f %9.3f %7.3f\n", s->name, cap, threads, v[i].label,
               median(v[i].t_step, v[i].n_timed) * 1e3, median(v[i].t_store, v[i].n_timed) * 1e3,
               median(v[i].t_attend, v[i].n_timed) * 1e3, median(v[i].t_step, v[i].n_timed) / m_off);
    /* the attention work of pos-shift on and off is the same; only the store differs */
    s_off = median(v[0].t_store, v[0].n_timed);
    s_on = median(v[1].t_store, v[1].n_timed);
    printf("%-7s %6d %2d %-14s posshift_overhead %.3f (store alone: %.3f), prerope_overhead "
           "%.3f; per-round pairs\n",
           s->name, cap, threads, "figures", r_on, 1.0 + (s_on - s_off) / m_off, r_pre);
    fflush(stdout);
    figure(r_on, "posshift_overhead_%s_%d_t%d", s->name, cap, threads);
    figure(r_pre, "prerope_overhead_%s_%d_t%d", s->name, cap, threads);
    free_variants(v, 3);
}

/* H2O's score accumulation inside attention, against plain attention on the same tokens */
static void bench_h2o_decode(const shape *s, int32_t n, int threads)
{
    variant v[2];
    int rounds = quick ? 3 : 11, per_block = n <= 1024 ? (quick ? 12 : 24) : (quick ? 4 : 8);
    int warm = n <= 1024 ? 4 : 3;
    double mf, mh, ratio;
    memset(v, 0, sizeof v);
    v[0].label = "full";
    v[0].cfg = make_cfg(s, 1, n, KVE_POLICY_FULL);
    v[1].label = "h2o";
    v[1].cfg = make_cfg(s, 1, n, KVE_POLICY_H2O);
    set_threads(threads);
    run_variants(s, v, 2, n, rounds, warm, per_block, 1);
    mf = median(v[0].t_attend, v[0].n_timed);
    mh = median(v[1].t_attend, v[1].n_timed);
    ratio = paired_ratio(v[1].t_attend, v[0].t_attend, rounds, per_block);
    printf("%-7s %6d %2d %-14s %9.3f %9.3f %7.3f\n", s->name, n, threads, "h2o scores", mf * 1e3,
           mh * 1e3, ratio);
    fflush(stdout);
    figure(ratio, "h2o_decode_overhead_%s_%d_t%d", s->name, n, threads);
    free_variants(v, 2);
}

/* one eviction (kve_store on a full layer) of each policy against one kve_attend of that cache */
static void bench_evict_step(const shape *s, int32_t cap, int threads)
{
    static const char *names[4] = {"streamingllm", "h2o", "snapkv", "pyramidkv"};
    tokgen tg;
    float *out = (float *)xalloc((size_t)s->heads * (size_t)s->dim * sizeof(float));
    int p;
    set_threads(threads);
    tg_init(&tg, s);
    for (p = 0; p < 4; p++) {
        kve_config c;
        stepper st;
        int32_t layer = 0, batch = 32, layers = 1;
        int events, max_timed, i, ne, na;
        double ev, app, att;
        if (p == 0) c = streaming_cfg(s, cap, KVE_POS_SHIFT_ON, KVE_KEYS_POST_ROPE);
        else if (p == 1) c = make_cfg(s, 1, cap, KVE_POLICY_H2O);
        else if (p == 2) c = make_cfg(s, 1, cap, KVE_POLICY_SNAPKV);
        else {
            /* PyramidKV's per-layer budgets need layers: 8 layers, mean budget cap/2, layer 2 timed */
            layers = 8;
            layer = 2;
            c = make_cfg(s, layers, cap, KVE_POLICY_PYRAMIDKV);
            c.policy.budget = cap / 2;
        }
        if (p >= 2) {
            c.policy.decode = KVE_DECODE_EVICT;
            c.policy.evict_batch = batch;
        }
        events = quick ? 3 : 5;
        max_timed = p >= 2 ? events * (batch + 1) : (quick ? 40 : 120);
        st_init(&st, names[p], &c, layer, max_timed);
        rng_state = 4242;
        /* a prompt, then decode steps (which record the queries the scoring policies need) until
           the layer is full and has evicted at least once */
        st_fill(&st, s, &tg, kve_layer_budget(&st.b.c, layer) - 40);
        for (i = 0; i < 40 + (p >= 2 ? batch + 2 : 4); i++) st_step(&st, s, &tg, out, 0);
        for (i = 0; i < max_timed; i++) st_step(&st, s, &tg, out, 1);
        ev = st_median_store(&st, 1, &ne);
        app = st_median_store(&st, 0, &na);
        att = median(st.t_attend, st.n_timed);
        printf("%-7s %6d %2d %-14s %4d %9.3f %9.3f %9.3f %7.3f %7.3f\n", s->name, cap, threads,
               names[p], ne, att * 1e3, ev * 1e3, na ? app * 1e3 : 0.0, ev / att,
               p >= 2 ? ev / att / batch : ev / att);
        fflush(stdout);
        figure(ev / att, "evict_step_overhead_%s_%s_%d_t%d", names[p], s->name, cap, threads);
        /* per generated token: snapkv/pyramidkv evict once per batch, the others every token */
        figure(p >= 2 ? ev / att / batch : ev / att, "evict_step_overhead_per_token_%s_%s_%d_t%d",
               names[p], s->name, cap, threads);
        st_free(&st);
    }
    tg_free(&tg);
    free(out);
}

/* ---- 4: prompt compression against the prefill's causal attention --------------------------- */
typedef struct snapshot {
    void *mem;
    float *k, *v;
    size_t floats, kv_off;
    kve_cache c;
} snapshot;

/* saves the state of one layer (and all bookkeeping) so a destructive call can be repeated */
static void snap_save(snapshot *sn, const bcache *b, int32_t layer)
{
    size_t per_layer = b->floats / (size_t)b->cfg.n_layers;
    sn->mem = xalloc(b->mem_bytes);
    memcpy(sn->mem, b->mem, b->mem_bytes);
    sn->floats = per_layer;
    sn->kv_off = (size_t)layer * per_layer;
    sn->k = (float *)xalloc(per_layer * sizeof(float));
    sn->v = (float *)xalloc(per_layer * sizeof(float));
    memcpy(sn->k, b->k + sn->kv_off, per_layer * sizeof(float));
    memcpy(sn->v, b->v + sn->kv_off, per_layer * sizeof(float));
    sn->c = b->c;
}

static void snap_restore(const snapshot *sn, bcache *b)
{
    memcpy(b->mem, sn->mem, b->mem_bytes);
    memcpy(b->k + sn->kv_off, sn->k, sn->floats * sizeof(float));
    memcpy(b->v + sn->kv_off, sn->v, sn->floats * sizeof(float));
    b->c = sn->c;
}

static void snap_free(snapshot *sn)
{
    free(sn->mem);
    free(sn->k);
    free(sn->v);
}

static double time_compress(bcache *b, int32_t layer, int reps)
{
    snapshot sn;
    double *t = (double *)xalloc((size_t)reps * sizeof(double)), m;
    int r;
    snap_save(&sn, b, layer);
    check(kve_compress(&b->c, layer), "kve_compress (warm-up)");
    for (r = 0; r < reps; r++) {
        double t0;
        snap_restore(&sn, b);
        t0 = now_s();
        check(kve_compress(&b->c, layer), "kve_compress");
        t[r] = now_s() - t0;
    }
    m = median(t, reps);
    snap_free(&sn);
    free(t);
    return m;
}

static void bench_compress(int32_t L, int threads)
{
    const shape *s = &PROMPT;
    const int32_t budget = 1024, pyr_layers = 32, pyr_layer = 16;
    size_t hd = (size_t)s->heads * (size_t)s->dim;
    float *q = (float *)xalloc((size_t)L * hd * sizeof(float));
    float *out = (float *)xalloc((size_t)L * hd * sizeof(float));
    tokgen tg;
    bcache snap, pyr;
    kve_config cs = make_cfg(s, 1, L, KVE_POLICY_SNAPKV);
    kve_config cp = make_cfg(s, pyr_layers, L, KVE_POLICY_PYRAMIDKV);
    double t_pre, t_snap, t_pyr, *tp;
    int reps_pre = quick || L > 4096 ? 1 : 3, r, reps_c = quick ? 5 : 9;
    int32_t i;
    cs.policy.budget = budget;
    cp.policy.budget = budget;
    set_threads(threads);
    tg_init(&tg, s);
    bc_init(&snap, &cs);
    bc_init(&pyr, &cp);
    rng_state = 99;
    rand_fill(q, (size_t)L * hd);
    for (i = 0; i < L; i++) {
        tg_next(&tg, s);
        check(kve_store(&snap.c, 0, i, tg.k, tg.v, NULL), "kve_store");
        check(kve_store(&pyr.c, pyr_layer, i, tg.k, tg.v, NULL), "kve_store");
    }
    /* the prefill's causal attention of all L prompt tokens, on the SnapKV cache */
    tp = (double *)xalloc((size_t)(reps_pre + 1) * sizeof(double));
    for (r = 0; r < reps_pre + (L <= 4096 ? 1 : 0); r++) {
        double t0 = now_s();
        check(kve_prefill(&snap.c, 0, L, q, NULL, out), "kve_prefill");
        tp[r] = now_s() - t0;
    }
    t_pre = L <= 4096 ? median(tp + 1, reps_pre) : median(tp, reps_pre);
    free(tp);
    /* the PyramidKV cache holds the same tokens; it needs only the observation window's queries,
       which a prefill of the last `window` prompt tokens records exactly as the full one does */
    check(kve_prefill(&pyr.c, pyr_layer, 32, q + (size_t)(L - 32) * hd, NULL, out), "kve_prefill");
    t_snap = time_compress(&snap, 0, reps_c);
    t_pyr = time_compress(&pyr, pyr_layer, reps_c);
    /* prefill flops: q.k and p.v over the causal prefix of every query, 4 * d per (query, key) */
    printf("%-8s %6d %2d %10.1f %7.1f %10.3f %8.4f %10.3f %8.4f %6d %6d\n", s->name, L, threads,
           t_pre * 1e3, 4.0 * s->heads * ((double)L * (L + 1) / 2) * s->dim / t_pre * 1e-9,
           t_snap * 1e3, t_snap / t_pre, t_pyr * 1e3, t_pyr / t_pre, kve_length(&snap.c, 0, 0),
           kve_length(&pyr.c, pyr_layer, 0));
    fflush(stdout);
    figure(t_snap / t_pre, "snapkv_compress_over_prefill_%s_%d_t%d", s->name, L, threads);
    figure(t_pyr / t_pre, "pyramidkv_compress_over_prefill_%s_%d_t%d", s->name, L, threads);
    bc_free(&snap);
    bc_free(&pyr);
    tg_free(&tg);
    free(q);
    free(out);
}

/* ---- main ----------------------------------------------------------------------------------- */
#define RUN(section) (!only || strcmp(only, section) == 0)

/* ---- 7: storage types --------------------------------------------------------------------- */
static volatile uint64_t sink_u;

/* integer sum of 32-bit words in 128 lanes (any bit pattern: no float assists on NaN or
   denormal data), the same loop as stream_sum reading floats; may_alias lets it read a buffer
   written as halves or bytes */
typedef uint32_t __attribute__((may_alias)) word_alias;
static uint32_t stream_words(const unsigned char *p, size_t bytes)
{
    const word_alias *x = (const word_alias *)(const void *)p;
    uint32_t acc[128], s = 0;
    size_t i, n = bytes / 4;
    int j;
    for (j = 0; j < 128; j++) acc[j] = 0;
    for (i = 0; i + 128 <= n; i += 128)
        for (j = 0; j < 128; j++) acc[j] += x[i + j];
    for (j = 0; j < 128; j++) s += acc[j];
    return s;
}

/* one pass over the K and V bytes of every KV head, heads over the threads as the library does */
static double stream_heads(unsigned char *const *kh, unsigned char *const *vh, int nh, size_t kb,
                           size_t vb)
{
    double t0 = now_s();
    uint32_t acc = 0;
    int i;
    B_OMP("omp parallel for schedule(static) reduction(+ : acc)")
    for (i = 0; i < nh; i++) acc += stream_words(kh[i], kb) + stream_words(vh[i], vb);
    sink_u = acc;
    return now_s() - t0;
}

/* The last-level cache as this machine behaves: read bandwidth over doubling sizes; the largest
   size read at least 1.4x as fast as 1 GiB is still in some cache. (The OS's figure can be a
   virtual machine's fiction.) */
static size_t measure_llc(void)
{
    size_t max = (size_t)1 << 30, sz, found = (size_t)4 << 20;
    unsigned char *buf = (unsigned char *)xalloc(max);
    double bw_big, bw[12];
    int i = 0, k;
    memset(buf, 1, max);
    set_threads(1);
    for (sz = (size_t)4 << 20; sz <= max && i < 12; sz *= 2, i++) {
        double best_t = 1e30;
        unsigned char *p = buf;
        for (k = 0; k < 4; k++) {
            double t = stream_heads(&p, &p, 1, sz / 2, sz / 2);
            best_t = t < best_t ? t : best_t;
        }
        bw[i] = (double)sz / best_t;
    }
    bw_big = bw[i - 1];
    for (k = 0, sz = (size_t)4 << 20; k < i; k++, sz *= 2)
        if (bw[k] >= 1.4 * bw_big) found = sz;
    free(buf);
    return found;
}

static const char *const type_names[] = {"f32", "f32", "f16", "bf16", "q8_0"};

/* The arithmetic of decode attention per token and KV head at type `type`, in seconds, with the
   rows in cache: one KV head with the shape's group of query heads, one thread, the difference of
   the best call at 768 and at 256 tokens over 512 (so the per-call work, the query's rotation and
   the thread launch, drops out). Scaled to a layer, it bounds what overlapping memory and
   arithmetic can give: a layer cannot take less than its arithmetic, whatever the memory does. */
static double arith_per_token(const shape *s, kve_type type)
{
    enum { FEW = 256, MANY = 768 };
    shape one = *s;
    kve_config cfg;
    bcache b;
    tokgen tg;
    float *out;
    double t_call[2];
    int32_t i = 0, m;
    one.kv_heads = 1;
    one.heads = s->heads / s->kv_heads;
    cfg = make_cfg(&one, 1, MANY, KVE_POLICY_FULL);
    cfg.k_type = cfg.v_type = type;
    bc_init(&b, &cfg); /* its buffers are the type's bytes (K and V at the same type) */
    out = (float *)xalloc((size_t)one.heads * (size_t)one.dim * sizeof(float));
    tg_init(&tg, &one);
    set_threads(1);
    for (m = 0; m < 2; m++) {
        int32_t n = m == 0 ? FEW : MANY, r;
        double fastest = 1e30;
        for (; i < n; i++) {
            tg_next(&tg, &one);
            check(kve_store(&b.c, 0, i, tg.k, tg.v, NULL), "kve_store");
        }
        for (r = 0; r < (quick ? 1000 : 4000); r++) {
            double t0 = now_s();
            kve_attend(&b.c, 0, tg.q, out);
            t0 = now_s() - t0;
            fastest = t0 < fastest ? t0 : fastest;
        }
        t_call[m] = fastest;
    }
    tg_free(&tg);
    bc_free(&b);
    free(out);
    return (t_call[1] - t_call[0]) / (double)(MANY - FEW);
}

/* decode attention (FULL policy, n tokens, head-major) with K and V at each type: its speed as a
   ratio of the read bandwidth of the same bytes, measured in the same rounds */
static void bench_types(const shape *s, int32_t n)
{
    static const kve_type types[4] = {KVE_TYPE_F32, KVE_TYPE_F16, KVE_TYPE_BF16, KVE_TYPE_Q8_0};
    double t_att[4][3];
    int ti, t, h, Hk = s->kv_heads;
    memset(t_att, 0, sizeof t_att);
    for (ti = 0; ti < 4; ti++) {
        double arith = arith_per_token(s, types[ti]) * (double)Hk * (double)n; /* one thread */
        kve_config cfg = make_cfg(s, 1, n, KVE_POLICY_FULL);
        kve_buffers buf;
        kve_cache c;
        size_t kb, vb, mb;
        unsigned char *kbuf, *vbuf, **kh, **vh;
        void *mem;
        tokgen tg;
        float *out = (float *)xalloc((size_t)s->heads * (size_t)s->dim * sizeof(float));
        int32_t i;
        cfg.k_type = cfg.v_type = types[ti];
        check(kve_buffer_bytes(&cfg, KVE_LAYOUT_HEAD_MAJOR, &kb, &vb), "kve_buffer_bytes");
        check(kve_cache_size(&cfg, &mb), "kve_cache_size");
        kbuf = (unsigned char *)xalloc(kb);
        vbuf = (unsigned char *)xalloc(vb);
        mem = xalloc(mb);
        memset(&buf, 0, sizeof buf);
        buf.k = kbuf; buf.v = vbuf; buf.k_bytes = kb; buf.v_bytes = vb;
        buf.layout = KVE_LAYOUT_HEAD_MAJOR;
        check(kve_cache_init(&cfg, &buf, mem, mb, &c), "kve_cache_init");
        tg_init(&tg, s);
        for (i = 0; i < n; i++) {
            tg_next(&tg, s);
            check(kve_store(&c, 0, i, tg.k, tg.v, NULL), "kve_store");
        }
        rand_fill(tg.q, (size_t)s->heads * (size_t)s->dim);
        kh = (unsigned char **)xalloc((size_t)Hk * sizeof(*kh));
        vh = (unsigned char **)xalloc((size_t)Hk * sizeof(*vh));
        for (h = 0; h < Hk; h++) {
            kh[h] = (unsigned char *)kve_key(&c, 0, h, 0);
            vh[h] = (unsigned char *)kve_value(&c, 0, h, 0);
        }
        for (t = 1; t <= max_threads(); t++) {
            int rounds = quick ? 3 : 5, per, r, k, nt = 0;
            double once, ts[8], *tl, bw, t_lib, t_read, ceiling, bytes = (double)(kb + vb);
            set_threads(t);
            stream_heads(kh, vh, Hk, kb / (size_t)Hk, vb / (size_t)Hk);
            once = now_s();
            check(kve_attend(&c, 0, tg.q, out), "kve_attend");
            once = now_s() - once;
            per = reps_for(once * rounds, quick ? 0.25 : 1.0, 1, 41);
            tl = (double *)xalloc((size_t)(rounds * per) * sizeof(double));
            for (r = 0; r < rounds; r++) {
                ts[r] = stream_heads(kh, vh, Hk, kb / (size_t)Hk, vb / (size_t)Hk);
                for (k = 0; k < per; k++) {
                    double t0 = now_s();
                    kve_attend(&c, 0, tg.q, out);
                    tl[nt++] = now_s() - t0;
                }
            }
            bw = bytes / best(ts, rounds) * 1e-9;
            t_lib = median(tl, nt);
            t_att[ti][t] = t_lib;
            /* the best ratio with this arithmetic, split evenly over the threads and fully
               overlapped with the reads */
            t_read = bytes / (bw * 1e9);
            ceiling = t_read >= arith / t ? 1.0 : t_read / (arith / t);
            printf("%-7s %6d %2d %-5s %8.1f %-4s %9.1f %9.3f %8.1f %6.3f %8.3f %7.3f\n", s->name, n,
                   t, type_names[types[ti]], bytes / (1 << 20), bytes <= (double)llc ? "yes" : "no",
                   bw, t_lib * 1e3, bytes / t_lib * 1e-9, bytes / t_lib * 1e-9 / bw,
                   arith / t * 1e3, ceiling);
            fflush(stdout);
            figure(bytes / t_lib * 1e-9 / bw, "attn_bw_ratio_%s_%s_%d_t%d", type_names[types[ti]],
                   s->name, n, t);
            figure(ceiling, "attn_bw_ceiling_%s_%s_%d_t%d", type_names[types[ti]], s->name, n, t);
            free(tl);
        }
        free(kh); free(vh); free(kbuf); free(vbuf); free(mem); free(out);
        tg_free(&tg);
    }
    for (t = 1; t <= max_threads(); t++)
        figure(t_att[0][t] / t_att[1][t], "type_speedup_f16_%s_%d_t%d", s->name, n, t);
}

int main(int argc, char **argv)
{
    static const int32_t sizes_full[4] = {1024, 4096, 16384, 65536}, sizes_quick[2] = {1024, 16384};
    double t_start = now_s();
    int i, t, nsz = 4, ncaps = 2;
    const int32_t *sizes = sizes_full;
    int32_t caps[2] = {1024, 4096}, prompts[2] = {4096, 16384};
    const char *only = NULL;
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) quick = 1;
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) only = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--quick] [--only attention|streaming|h2o|evict|compress|types]\n",
                    argv[0]);
            return 2;
        }
    }
    llc = measure_llc();
    if (quick) { /* 1K and 16K tokens (16K llama2 exceeds the L3), capacity 1K, prompt 4K */
        sizes = sizes_quick;
        nsz = 2;
        ncaps = 1;
    }
    printf("kvevict %d.%d.%d benchmark%s: %d thread(s) available, last-level cache %.0f MiB\n",
           KVEVICT_VERSION_MAJOR, KVEVICT_VERSION_MINOR, KVEVICT_VERSION_PATCH,
           quick ? " (--quick)" : "", max_threads(), (double)llc / (1 << 20));
    printf("(last-level cache measured: the largest size read 1.4x faster than 1 GiB; the OS says %.0f MiB)\n",
           (double)llc_bytes() / (1 << 20));
    printf("load average at start %.2f (other busy processes make every figure noisier)\n",
           load_average());
    printf("K/V layout KVE_LAYOUT_HEAD_MAJOR, keys post-RoPE (interleaved), float32, head_dim 128.\n\n");

    for (t = 1; t <= max_threads(); t++) peak_gflops[t] = measure_peak(t);
    printf("peak (register-blocked FMA loop): %.1f GFLOP/s on 1 thread", peak_gflops[1]);
    if (max_threads() > 1) printf(", %.1f GFLOP/s on 2", peak_gflops[2]);
    printf("\n\n");

    printf("1-2. decode attention (kve_attend, FULL policy). bytes: K+V read; read bw: sum of the same\n"
           "     bytes, same threads, best of reps; flops: 4*heads*n*head_dim; naive: llama2.c-style loop\n"
           "     (its own [slot][kv_head][dim] layout); exp: fused one-pass kernel (experiment, not the library)\n"
           "     mqa: 32 query heads on one KV head, whose chunks of 1024 tokens run on all threads\n");
    printf("%-7s %6s %2s %8s %-4s %8s %9s %8s %6s %7s %7s %9s %7s %8s %6s %8s %8s\n", "config", "n", "t",
           "K+V MiB", "LLC", "read GB/s", "attend ms", "GB/s", "ratio", "GFLOP/s", "peak", "naive ms",
           "speedup", "exp GB/s", "exp r", "naive d", "exp d");
    if (RUN("attention")) {
        static const int32_t sizes_mqa[1] = {65536}; /* 64 MiB: one KV head beyond the cache */
        bench_attention(&LLAMA2, sizes, nsz);
        bench_attention(&LLAMA3, sizes, nsz);
        bench_attention(&MQA, sizes_mqa, 1); /* its chunks split over threads */
    }

    printf("\n3. StreamingLLM decode step (kve_store evicting + kve_attend), capacity n, 4 sinks\n");
    printf("%-7s %6s %2s %-14s %9s %9s %9s %7s\n", "config", "n", "t", "variant", "step ms", "store ms",
           "attend ms", "/off");
    for (i = 0; i < ncaps && RUN("streaming"); i++)
        for (t = 1; t <= max_threads(); t++) {
            bench_streaming(&LLAMA2, caps[i], t);
            bench_streaming(&LLAMA3, caps[i], t);
        }

    printf("\n5. H2O: kve_attend accumulating scores vs FULL policy, n tokens\n");
    printf("%-7s %6s %2s %-14s %9s %9s %7s\n", "config", "n", "t", "", "full ms", "h2o ms", "ratio");
    for (i = 0; i < ncaps && RUN("h2o"); i++)
        for (t = 1; t <= max_threads(); t++) {
            bench_h2o_decode(&LLAMA2, caps[i], t);
            bench_h2o_decode(&LLAMA3, caps[i], t);
        }

    printf("\n6. one eviction (kve_store on a full layer) over one kve_attend of the same cache;\n"
           "   snapkv/pyramidkv: decode EVICT, 32 tokens freed per eviction (per-tok: divided by 32)\n");
    printf("%-7s %6s %2s %-14s %4s %9s %9s %9s %7s %7s\n", "config", "n", "t", "policy", "evs",
           "attend ms", "evict ms", "append ms", "ratio", "per-tok");
    for (i = 0; i < ncaps && RUN("evict"); i++)
        for (t = 1; t <= max_threads(); t++) {
            bench_evict_step(&LLAMA2, caps[i], t);
            bench_evict_step(&LLAMA3, caps[i], t);
        }

    printf("\n4. prompt compression (kve_compress: score, select, compact) over kve_prefill of L tokens;\n"
           "   4 query heads, 2 KV heads, head_dim 128, budget 1024, window 32, kernel 7; PyramidKV: layer 16\n"
           "   of 32; L 16384 once, on all threads\n");
    printf("%-8s %6s %2s %10s %7s %10s %8s %10s %8s %6s %6s\n", "config", "L", "t", "prefill ms",
           "GFLOP/s", "snapkv ms", "ratio", "pyramid ms", "ratio", "kept", "kept");
    /* L = 16384 costs tens of seconds per prefill: one prefill, all threads only */
    for (i = 0; i < (quick ? 1 : 2) && RUN("compress"); i++)
        for (t = i == 0 ? 1 : max_threads(); t <= (quick ? 1 : max_threads()); t++)
            bench_compress(prompts[i], t);

    printf("\n7. storage types: decode attention (kve_attend, FULL) with K and V at each type; bytes at\n"
           "   the type; read bw: the same bytes as integers, same threads, best of the rounds;\n"
           "   arith ms: the same attention's arithmetic, timed with the rows in cache (one KV head,\n"
           "   768 minus 256 tokens) and split over the threads; ceiling: the ratio it leaves, read\n"
           "   time over the larger of read time and arith ms (1: memory bound)\n");
    printf("%-7s %6s %2s %-5s %8s %-4s %9s %9s %8s %6s %8s %7s\n", "config", "n", "t", "type",
           "K+V MiB", "LLC", "read GB/s", "attend ms", "GB/s", "ratio", "arith ms", "ceiling");
    if (RUN("types")) {
        bench_types(&LLAMA2, 16384);
        bench_types(&LLAMA3, quick ? 16384 : 65536);
    }

    printf("\nwall time %.1f s, load average at end %.2f\n\n", now_s() - t_start, load_average());
    for (i = 0; i < n_figures; i++) printf("%s=%.4g\n", fig_name[i], fig_value[i]);
    return 0;
}
