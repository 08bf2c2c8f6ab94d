/* Reader of golden case files (kvevict-case 1), shared by build/kvcase and build/judge.
   Format: one record a line, '#' starts a comment; scalar "key value" lines, vector lines
   "q <count> <floats>", "k <count> <floats>", expectations "score", "keep", "rekey", and stream
   "step" lines. Errors name the file and line. */
#ifndef GOLDEN_CASE_H
#define GOLDEN_CASE_H

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GC_MAX_HEADS 64

typedef struct gc_step {
    float *q, *k, *v;
    double *out; /* NULL when the file has no expectation */
} gc_step;

typedef struct gc_case {
    char kind[16], policy[32], pooling[16], gqa[16], rope[16], allocation[16], scorer[32];
    char first[32]; /* composed: the policy of the first press ("" when absent) */
    char vectors[16]; /* select: "pre_rope" when q and k are BEFORE RoPE (then `rope`, `rope_theta`
                         say how to rotate them); "" or "post_rope": already rotated */
    long n_layers, layer, n_heads, n_kv_heads, head_dim, q_len, window, capacity, kernel, beta;
    long steps, sinks, recent, pos_shift;
    long lag_size, cross_scoring, n_sink, chunk_length; /* kvpress parameters, by its names; -1 when
                                                           absent (cross_scoring: 0) */
    long n_future_positions, use_covariance, use_vnorm; /* expected attention; -1 when absent */
    long rerotate; /* select: 1 = kvpress KeyRerotationPress (kept keys renumbered 0..n-1); 0 when absent */
    long n_recent, n_last, n_initial; /* SimLayerKV; -1 when absent */
    long block_size;                  /* blockpress; -1 when absent */
    double lazy_threshold;            /* SimLayerKV; 0 when absent */
    double epsilon;                                      /* expected attention; 0 when absent */
    double rope_theta, compression_ratio, alpha_safeguard;
    double first_compression_ratio; /* composed: the first press's ratio (0 when absent) */
    float *q, *k, *v; /* select: [head][token][dim], [kv_head][token][dim] (k and v) */
    long q_count, k_count, v_count;
    /* expectations (judge only) */
    double *score[GC_MAX_HEADS];
    long score_n[GC_MAX_HEADS];
    long *keep[GC_MAX_HEADS];
    long keep_n[GC_MAX_HEADS];
    double *rekey[GC_MAX_HEADS]; /* rerotate: rekey_n[h] keys of head_dim values, by new position */
    long rekey_n[GC_MAX_HEADS];
    gc_step *step;
    long n_steps_read;
} gc_case;

static const char *gc_file;
static long gc_line;

static void gc_fail(const char *msg, const char *detail)
{
    if (gc_line > 0) fprintf(stderr, "%s:%ld: ", gc_file, gc_line);
    else fprintf(stderr, "%s: ", gc_file);
    fprintf(stderr, "%s%s%s\n", msg, detail ? ": " : "", detail ? detail : "");
    exit(2);
}

static char *gc_token(char **p)
{
    char *s = *p, *t;
    while (*s && isspace((unsigned char)*s)) s++;
    if (!*s) return NULL;
    t = s;
    while (*s && !isspace((unsigned char)*s)) s++;
    if (*s) *s++ = 0;
    *p = s;
    return t;
}

static long gc_long(char **p, const char *what)
{
    char *t = gc_token(p), *end;
    long v;
    if (!t) gc_fail("missing integer", what);
    errno = 0;
    v = strtol(t, &end, 10);
    if (*end || errno) gc_fail("not an integer", what);
    return v;
}

static double gc_double(char **p, const char *what)
{
    char *t = gc_token(p), *end;
    double v;
    if (!t) gc_fail("missing number", what);
    errno = 0;
    v = strtod(t, &end);
    if (*end || errno == ERANGE) gc_fail("not a number", what);
    return v;
}

static void *gc_alloc(size_t n, size_t size)
{
    void *p;
    if (n == 0) n = 1;
    if (n > ((size_t)1 << 28)) gc_fail("count too large", NULL);
    p = calloc(n, size);
    if (!p) gc_fail("out of memory", NULL);
    return p;
}

static float *gc_floats(char **p, long n, const char *what)
{
    float *x = (float *)gc_alloc((size_t)n, sizeof(float));
    long i;
    for (i = 0; i < n; i++) x[i] = (float)gc_double(p, what);
    return x;
}

static void gc_no_more(char **p)
{
    if (gc_token(p)) gc_fail("unexpected extra values at end of line", NULL);
}

static void gc_need(long v, long lo, const char *what)
{
    if (v < lo) gc_fail("missing or out-of-range parameter", what);
}

/* expectations = 0: score/keep/out lines are skipped unread (the runner never looks at them) */
static void gc_read(const char *path, gc_case *c, int expectations)
{
    FILE *f = fopen(path, "r");
    static char line[1 << 22];
    int header = 0;
    memset(c, 0, sizeof *c);
    c->n_layers = 1;
    c->rope_theta = 10000.0;
    c->beta = 20;
    c->n_kv_heads = -1;
    c->pos_shift = -1;
    c->window = -1;
    c->lag_size = c->n_sink = c->chunk_length = -1;
    c->n_future_positions = c->use_covariance = c->use_vnorm = -1;
    c->n_recent = c->n_last = c->n_initial = c->block_size = -1;
    c->cross_scoring = 0;
    c->alpha_safeguard = -1.0;
    gc_file = path;
    gc_line = 0;
    if (!f) gc_fail("cannot open", strerror(errno));
    while (fgets(line, sizeof line, f)) {
        char *p = line, *key;
        gc_line++;
        if (!strchr(line, '\n') && !feof(f)) gc_fail("line too long", NULL);
        key = gc_token(&p);
        if (!key || key[0] == '#') continue;
        if (!header) {
            if (strcmp(key, "kvevict-case") || gc_long(&p, "version") != 1)
                gc_fail("not a kvevict-case 1 file", NULL);
            header = 1;
            continue;
        }
#define GC_STR(name)                                                              \
    if (!strcmp(key, #name)) {                                                    \
        char *t = gc_token(&p);                                                   \
        if (!t || strlen(t) >= sizeof c->name) gc_fail("bad value for", #name);   \
        strcpy(c->name, t);                                                       \
        continue;                                                                 \
    }
#define GC_LONG(name)                          \
    if (!strcmp(key, #name)) {                 \
        c->name = gc_long(&p, #name);          \
        gc_no_more(&p);                        \
        continue;                              \
    }
        GC_STR(kind) GC_STR(policy) GC_STR(pooling) GC_STR(gqa) GC_STR(rope) GC_STR(allocation)
        GC_STR(scorer) GC_STR(first) GC_STR(vectors)
        GC_LONG(lag_size) GC_LONG(cross_scoring) GC_LONG(n_sink) GC_LONG(chunk_length)
        GC_LONG(n_future_positions) GC_LONG(use_covariance) GC_LONG(use_vnorm) GC_LONG(rerotate)
        GC_LONG(n_recent) GC_LONG(n_last) GC_LONG(n_initial) GC_LONG(block_size)
        GC_LONG(n_layers) GC_LONG(layer) GC_LONG(n_heads) GC_LONG(n_kv_heads) GC_LONG(head_dim)
        GC_LONG(q_len) GC_LONG(window) GC_LONG(capacity) GC_LONG(kernel) GC_LONG(beta)
        GC_LONG(steps) GC_LONG(sinks) GC_LONG(recent) GC_LONG(pos_shift)
        if (!strcmp(key, "reference")) continue;
#define GC_DOUBLE(name)                        \
    if (!strcmp(key, #name)) {                 \
        c->name = gc_double(&p, #name);        \
        gc_no_more(&p);                        \
        continue;                              \
    }
        GC_DOUBLE(rope_theta) GC_DOUBLE(compression_ratio) GC_DOUBLE(alpha_safeguard)
        GC_DOUBLE(first_compression_ratio) GC_DOUBLE(epsilon) GC_DOUBLE(lazy_threshold)
        if (!strcmp(key, "q") || !strcmp(key, "k") || !strcmp(key, "v")) {
            long n = gc_long(&p, key);
            gc_need(n, 1, key);
            if (key[0] == 'q') c->q = gc_floats(&p, c->q_count = n, "q");
            else if (key[0] == 'k') c->k = gc_floats(&p, c->k_count = n, "k");
            else c->v = gc_floats(&p, c->v_count = n, "v");
            gc_no_more(&p);
            continue;
        }
        if (!strcmp(key, "score") || !strcmp(key, "keep")) {
            long h, n, i;
            if (!expectations) continue;
            h = gc_long(&p, "kv_head");
            n = gc_long(&p, "count");
            if (h < 0 || h >= GC_MAX_HEADS || n < 0) gc_fail("bad head or count", key);
            if (key[0] == 's') {
                c->score[h] = (double *)gc_alloc((size_t)n, sizeof(double));
                c->score_n[h] = n;
                for (i = 0; i < n; i++) c->score[h][i] = gc_double(&p, "score");
            } else {
                c->keep[h] = (long *)gc_alloc((size_t)n, sizeof(long));
                c->keep_n[h] = n;
                for (i = 0; i < n; i++) c->keep[h][i] = gc_long(&p, "keep");
            }
            gc_no_more(&p);
            continue;
        }
        if (!strcmp(key, "rekey")) { /* rekey <kv_head> <n keys> <n*head_dim floats> */
            long h, n, i;
            if (!expectations) continue;
            gc_need(c->head_dim, 1, "head_dim (before the rekey lines)");
            h = gc_long(&p, "kv_head");
            n = gc_long(&p, "count");
            if (h < 0 || h >= GC_MAX_HEADS || n < 0 || n > (1L << 24) / c->head_dim)
                gc_fail("bad head or count", key);
            if (c->rekey[h]) gc_fail("repeated rekey line for head", NULL);
            c->rekey[h] = (double *)gc_alloc((size_t)(n * c->head_dim), sizeof(double));
            c->rekey_n[h] = n;
            for (i = 0; i < n * c->head_dim; i++) c->rekey[h][i] = gc_double(&p, "rekey");
            gc_no_more(&p);
            continue;
        }
        if (!strcmp(key, "step")) {
            long t = gc_long(&p, "step"), dq, dk;
            char *tag;
            gc_need(c->steps, 1, "steps (before the step lines)");
            gc_need(c->n_heads, 1, "n_heads");
            gc_need(c->head_dim, 1, "head_dim");
            if (c->n_kv_heads < 0) c->n_kv_heads = c->n_heads;
            if (t < 0 || t >= c->steps) gc_fail("step index out of range", NULL);
            if (t != c->n_steps_read) gc_fail("steps out of order", NULL);
            if (!c->step) c->step = (gc_step *)gc_alloc((size_t)c->steps, sizeof(gc_step));
            dq = c->n_heads * c->head_dim;
            dk = c->n_kv_heads * c->head_dim;
            tag = gc_token(&p);
            if (!tag || strcmp(tag, "q")) gc_fail("expected 'q' in step line", NULL);
            c->step[t].q = gc_floats(&p, dq, "step q");
            tag = gc_token(&p);
            if (!tag || strcmp(tag, "k")) gc_fail("expected 'k' in step line", NULL);
            c->step[t].k = gc_floats(&p, dk, "step k");
            tag = gc_token(&p);
            if (!tag || strcmp(tag, "v")) gc_fail("expected 'v' in step line", NULL);
            c->step[t].v = gc_floats(&p, dk, "step v");
            tag = gc_token(&p);
            if (tag) {
                long i;
                if (strcmp(tag, "out")) gc_fail("expected 'out' in step line", NULL);
                if (expectations) {
                    c->step[t].out = (double *)gc_alloc((size_t)dq, sizeof(double));
                    for (i = 0; i < dq; i++) c->step[t].out[i] = gc_double(&p, "step out");
                    gc_no_more(&p);
                }
            } else {
                gc_no_more(&p);
            }
            c->n_steps_read++;
            continue;
        }
        gc_fail("unknown key", key);
    }
    fclose(f);
    if (!header) gc_fail("empty file or missing kvevict-case header", NULL);
    gc_line = 0;
    if (c->n_kv_heads < 0) c->n_kv_heads = c->n_heads;
    gc_need(c->n_heads, 1, "n_heads");
    gc_need(c->n_kv_heads, 1, "n_kv_heads");
    gc_need(c->head_dim, 1, "head_dim");
    if (c->n_heads > GC_MAX_HEADS || c->n_heads % c->n_kv_heads)
        gc_fail("n_heads must be a multiple of n_kv_heads and at most 64", NULL);
    if (!strcmp(c->kind, "select")) {
        gc_need(c->q_len, 1, "q_len");
        /* a budget: a capacity, or kvpress's compression ratio; SimLayerKV keeps whole layers
           or their sinks and recent tokens (lazy_threshold), its window is n_last */
        if (!strcmp(c->policy, "simlayerkv")) {
            gc_need(c->n_last, 1, "n_last");
            gc_need(c->n_recent, 1, "n_recent");
            gc_need(c->n_initial, 0, "n_initial");
            if (!(c->lazy_threshold > 0.0 && c->lazy_threshold <= 1.0))
                gc_fail("lazy_threshold must be in (0, 1]", NULL);
        } else if (!strcmp(c->policy, "blockpress")) {
            gc_need(c->block_size, 1, "block_size");
            if (!(c->compression_ratio > 0.0 && c->compression_ratio < 1.0))
                gc_fail("a blockpress case needs compression_ratio", NULL);
        } else {
            gc_need(c->window, c->compression_ratio > 0.0 ? 0 : 1, "window");
            if (c->compression_ratio <= 0.0) gc_need(c->capacity, 1, "capacity");
        }
        if (c->compression_ratio < 0.0 || c->compression_ratio >= 1.0)
            gc_fail("compression_ratio must be in [0, 1)", NULL);
        if (c->first_compression_ratio < 0.0 || c->first_compression_ratio >= 1.0)
            gc_fail("first_compression_ratio must be in [0, 1)", NULL);
        gc_need(c->n_layers, 1, "n_layers");
        if (c->layer < 0 || c->layer >= c->n_layers) gc_fail("layer out of range", NULL);
        if (!c->q || c->q_count != c->n_heads * c->q_len * c->head_dim)
            gc_fail("q missing or of the wrong size", NULL);
        if (!c->k || c->k_count != c->n_kv_heads * c->q_len * c->head_dim)
            gc_fail("k missing or of the wrong size", NULL);
        if (c->v && c->v_count != c->k_count) gc_fail("v of the wrong size", NULL);
        if (c->vectors[0] && strcmp(c->vectors, "pre_rope") && strcmp(c->vectors, "post_rope"))
            gc_fail("vectors must be pre_rope or post_rope", c->vectors);
        if (!strcmp(c->vectors, "pre_rope") && !c->rope[0])
            gc_fail("vectors pre_rope needs a rope line (interleaved | half)", NULL);
        if (c->use_covariance < -1 || c->use_covariance > 1 || c->use_vnorm < -1 || c->use_vnorm > 1)
            gc_fail("use_covariance and use_vnorm must be 0 or 1", NULL);
        if (c->rerotate != 0 && c->rerotate != 1) gc_fail("rerotate must be 0 or 1", NULL);
    } else if (!strcmp(c->kind, "stream")) {
        gc_need(c->steps, 1, "steps");
        gc_need(c->recent, 0, "recent");
        gc_need(c->sinks, 0, "sinks");
        if (c->pos_shift != 0 && c->pos_shift != 1) gc_fail("pos_shift must be 0 or 1", NULL);
        if (c->n_steps_read != c->steps) gc_fail("fewer step lines than steps", NULL);
    } else {
        gc_fail("kind must be select or stream", c->kind);
    }
}

static void gc_free(gc_case *c)
{
    long i;
    free(c->q);
    free(c->k);
    free(c->v);
    for (i = 0; i < GC_MAX_HEADS; i++) {
        free(c->score[i]);
        free(c->keep[i]);
        free(c->rekey[i]);
    }
    for (i = 0; c->step && i < c->n_steps_read; i++) {
        free(c->step[i].q);
        free(c->step[i].k);
        free(c->step[i].v);
        free(c->step[i].out);
    }
    free(c->step);
}

#endif
