/* compare.c - KV-cache policies side by side on a real model (llama2.c checkpoint format).

   build/compare --model M --tokenizer T --text F [--tokens N] [--mode stream|prompt|needle]
                 [--prompt-tokens P] [--continuation G] [--decode grow|evict] [--equal-memory]
                 --policy SPEC [--policy SPEC ...] [--csv OUT.csv] [--svg OUT.svg] [--explain]
                 [--kv-type f32|f16|bf16|q8_0] [--k-type T] [--v-type T]
                 [--attention library|engine] [--threads N] [--progress S]

   (compare --help says what each option does.) Every argument is checked before any file is
   read, and the --csv and --svg files are created before the run; exit status 2 for a bad
   argument, 1 for a file that cannot be read or written or a run that fails.
   The text: stories separated by lines "<|endoftext|>", each encoded with a leading BOS, one after
   another; the first N tokens are used (default: all).
   SPEC: full | streamingllm:capacity=C[,sinks=S][,pos_shift=0|1][,decode=grow|evict]
         | snapkv:capacity=C[,window=W][,kernel=K][,pooling=max|avg|none][,gqa=mean|max|sum]
                  [,decode=grow|evict][,evict_batch=B]
         | pyramidkv:(as snapkv)[,beta=B] | h2o:capacity=C[,window=W][,gqa=..][,decode=..]
         | random:capacity=C[,window=W][,seed=S][,decode=..]
                  (the engine's own baseline, a kve_policy_vtable in engine.h: keeps the
                  window and a random choice of the older tokens)
         | knorm | keydiff | tova | lagkv | observed_attention | expected_attention
           | random_scorer
                  :capacity=C[,window=W][,...] (kvpress's scorers; lagkv also sinks, lag_size,
                  cross_scoring; expected_attention sinks, n_future_positions; random_scorer
                  seed: the library's KVE_POLICY_RANDOM)
         | simlayerkv[:lazy_threshold=T][,n_recent=N][,window=W][,sinks=S]
                  (kvpress SimLayerKV: lazy layers keep their sinks and newest N - W tokens,
                  the others all; no capacity, prompt and needle modes only)
         and for every selecting method [,allocation=uniform|pyramid|adakv][,alpha_safeguard=A]
                  [,chunk_length=N] (compare --help lists every method's parameters)
   stream: teacher forcing one token at a time over the whole stream, each policy keeping the
           cache within its capacity (which counts the current token); scores every next token.
   prompt: segments of P prompt tokens (384) + G continuation tokens (64): prefill the prompt
           with the full cache, compress it to the policy's capacity, feed the G tokens and score
           their predictions: NLL, KL divergence from the full cache's distribution, top-1
           agreement, and the K/V bytes held. Every policy then does the same (--decode, or its
           own decode=): grow by the continuation (the default, SnapKV's and PyramidKV's
           reference) or evict to stay at its capacity. StreamingLLM compresses to its sinks and
           the most recent tokens; with decode=evict a prompt longer than its capacity streams
           through its cache token by token instead. The first policy given is the one the
           others are paired with, segment by segment, for the KL differences.
   --csv: one row per scored token, "policy,t,nll" (prompt mode adds segment,kl,top1), t being
   the stream index of the token fed (nll is that of the token after it). --svg: NLL against t,
   a moving average, one line per policy. --kv-type (or --k-type, --v-type): how the policies'
   caches store K and V (default f32; prompt mode's full-cache reference stays f32), to see what
   a storage type costs in quality next to the memory it saves. --attention: who computes
   attention, kvevict (kve_attend, kve_prefill; the default) or the engine itself over the K/V
   buffers (engine_attention in examples/engine.h, kvevict only storing, scoring and evicting);
   both give the same numbers, up to float rounding. Defaults of the library's parameters:
   kvevict.h.
   needle: passkey retrieval (needle in a haystack) with a model that can copy; its own options,
           examples/needle.h (compare --mode needle --help). */
#define KVEVICT_IMPLEMENTATION
#include "kvevict.h"
#include "examples/engine.h"
#include "examples/needle.h"

#define MAX_POLICIES 16
#define MAX_TOKENS (1 << 30) /* a full cache over the whole stream: kvevict's largest capacity */
#define MAX_THREADS 1024

static kve_type g_kv_types[2] = {KVE_TYPE_F32, KVE_TYPE_F32}; /* K, V of the policies' caches */
static const char *const g_type_names[] = {"f32", "f32", "f16", "bf16", "q8_0"};
static int g_own_attention; /* --attention engine: the engine's own attention (engine.h) */
static int g_threads = 1;   /* --threads: kvevict's OpenMP threads per call */
static double g_progress_every = 5.0; /* --progress: seconds between progress lines, 0: none */

typedef struct kv_meter {   /* K/V bytes held, sampled at each scored token */
    size_t peak;
    double sum;
    long samples;
} kv_meter;

typedef struct result {
    policy_spec spec;        /* spec.text points to label */
    char label[320];         /* the spec as run (--equal-memory may change its capacity) */
    int n;                   /* scored tokens */
    int *t, *segment;        /* stream index of the input token; prompt segment */
    double *nll, *kl;
    unsigned char *top1;
    kv_meter kv;             /* prompt mode: during the continuations */
    double seconds;
    long long tokens_run;
} result;

static void kv_meter_add(kv_meter *k, size_t bytes)
{
    if (bytes > k->peak) k->peak = bytes;
    k->sum += (double)bytes;
    k->samples++;
}

static double kv_mean(const kv_meter *k) { return k->samples ? k->sum / (double)k->samples : 0.0; }

static void free_scores(result *r)
{
    free(r->t); free(r->segment); free(r->nll); free(r->kl); free(r->top1);
    r->t = r->segment = NULL;
    r->nll = r->kl = NULL;
    r->top1 = NULL;
    r->n = 0;
}

static void alloc_scores(result *r, int n)
{
    free_scores(r);
    r->t = (int *)xmalloc((size_t)n * sizeof(int));
    r->segment = (int *)xmalloc((size_t)n * sizeof(int));
    r->nll = (double *)xmalloc((size_t)n * sizeof(double));
    r->kl = (double *)xmalloc((size_t)n * sizeof(double));
    r->top1 = (unsigned char *)xmalloc((size_t)n);
}

/* ---- the text ------------------------------------------------------------------------------- */
/* encodes each story (leading BOS, surrounding whitespace trimmed) until `want` tokens (0: all) */
static int *encode_stories(const tokenizer *tok, char *text, int want, int *n_out)
{
    int n = 0, cap = 1024, *out = (int *)xmalloc((size_t)cap * sizeof(int));
    char *story = text, *line = text;
    for (;;) {
        char *eol = strchr(line, '\n'), *end = eol ? eol : line + strlen(line);
        size_t len = (size_t)(end - line);
        int sep = len >= 13 && strncmp(line, "<|endoftext|>", 13) == 0 &&
                  (len == 13 || (len == 14 && line[13] == '\r'));
        if (sep || !eol) {
            char *a = story, *b = sep ? line : end, keep;
            while (a < b && (*a == ' ' || *a == '\n' || *a == '\r' || *a == '\t')) a++;
            while (b > a && (b[-1] == ' ' || b[-1] == '\n' || b[-1] == '\r' || b[-1] == '\t')) b--;
            if (b > a) {
                keep = *b;
                *b = '\0';
                if (n + (b - a) + 2 > cap) {
                    int *grown;
                    cap = 2 * (n + (int)(b - a) + 2);
                    if (!(grown = (int *)realloc(out, (size_t)cap * sizeof(int)))) {
                        fprintf(stderr, "error: out of memory\n");
                        free(out);
                        exit(1);
                    }
                    out = grown;
                }
                n += tok_encode(tok, a, 1, out + n);
                *b = keep;
            }
            story = eol ? eol + 1 : end;
        }
        if (!eol || (want > 0 && n >= want)) break;
        line = eol + 1;
    }
    *n_out = want > 0 && n > want ? want : n;
    return out;
}

/* ---- progress ----------------------------------------------------------------------------- */
/* A line on stderr every --progress seconds: done of total, the time so far and the time left at
   the recent rate (the full cache slows down as it grows, so the rate since the start would
   promise too little). */
typedef struct progress {
    char what[400];
    const char *unit;
    int total, last_done;
    double start, last_time;
} progress;

static void progress_start(progress *p, const char *what, const char *unit, int total)
{
    snprintf(p->what, sizeof p->what, "%s", what);
    p->unit = unit;
    p->total = total;
    p->last_done = 0;
    p->start = p->last_time = now_seconds();
}

static void progress_step(progress *p, int done)
{
    double now = now_seconds(), rate;
    if (g_progress_every <= 0.0 || now - p->last_time < g_progress_every || done <= p->last_done)
        return;
    rate = (double)(done - p->last_done) / (now - p->last_time);
    fprintf(stderr, "compare: %s: %d/%d %s, %.1f s elapsed, about %.1f s left\n", p->what, done,
            p->total, p->unit, now - p->start, (double)(p->total - done) / rate);
    p->last_time = now;
    p->last_done = done;
}

/* log-softmax in double precision: out[i] = log p(i) */
static void log_softmax(const float *logits, int n, double *out)
{
    double mx = logits[0], sum = 0.0, lse;
    int i;
    for (i = 1; i < n; i++) mx = logits[i] > mx ? logits[i] : mx;
    for (i = 0; i < n; i++) sum += exp((double)logits[i] - mx);
    lse = mx + log(sum);
    for (i = 0; i < n; i++) out[i] = (double)logits[i] - lse;
}

static int argmax_d(const double *x, int n)
{
    int i, b = 0;
    for (i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* ---- stream mode: teacher forcing through the whole stream ---------------------------------- */
static int run_stream(const model *m, result *r, const int *tokens, int n, int index, int n_pol)
{
    random_policy rnd;
    kve_policy_config pc;
    int32_t slots;
    engine e;
    progress pr;
    char what[400];
    int t, V = m->vocab_size, status = 1;
    float *logits = (float *)xmalloc((size_t)V * sizeof(float));
    double *lp = (double *)xmalloc((size_t)V * sizeof(double)), t0 = now_seconds();
    memset(&rnd, 0, sizeof rnd);
    memset(&e, 0, sizeof e);
    if (spec_setup(&r->spec, m, 1, n, &rnd, &pc, &slots) ||
        engine_open(&e, m, &pc, slots, 1, g_kv_types, g_threads))
        goto done;
    e.own_attention = g_own_attention;
    alloc_scores(r, n);
    snprintf(what, sizeof what, "%s (policy %d of %d)", r->spec.text, index + 1, n_pol);
    progress_start(&pr, what, "tokens", n - 1);
    for (t = 0; t + 1 < n; t++) {
        kve_result kr = engine_run(&e, &tokens[t], 1, t, logits);
        if (kr != KVE_OK) {
            fprintf(stderr, "error: %s at token %d: %s\n", r->spec.text, t, kve_result_string(kr));
            goto done;
        }
        log_softmax(logits, V, lp);
        r->t[r->n] = t;
        r->segment[r->n] = 0;
        r->kl[r->n] = 0.0;
        r->top1[r->n] = 1;
        r->nll[r->n++] = -lp[tokens[t + 1]];
        kv_meter_add(&r->kv, kve_bytes_in_use(&e.cache));
        progress_step(&pr, t + 1);
    }
    r->seconds = now_seconds() - t0;
    r->tokens_run = n - 1;
    status = 0;
done:
    engine_close(&e);
    free(rnd.slots); free(rnd.mark); free(logits); free(lp);
    return status;
}

/* ---- prompt mode: prefill, compress, continue ---------------------------------------------- */
/* One segment through engine e: the P prompt tokens (one prefill if they fit in the cache, then
   kve_compress_all; else token by token, the policy evicting as it goes, which is what
   StreamingLLM with decode=evict does), then the G continuation tokens, scored into r, with the
   K/V bytes held after each. ref: the full cache's log-probabilities of the G predictions; NULL
   while computing them (into lp, G rows; r is then the full cache's own result). */
static kve_result run_segment(engine *e, const int *seg, int P, int G, const double *ref,
                              double *lp, float *logits, result *r, int s, int offset)
{
    int V = e->m->vocab_size, i, j;
    kve_result kr = KVE_OK;
    kve_cache_reset(&e->cache);
    if (P <= e->capacity) {
        if ((kr = engine_run(e, seg, P, 0, NULL)) == KVE_OK) kr = kve_compress_all(&e->cache);
    } else {
        for (i = 0; i < P && kr == KVE_OK; i++) kr = engine_run(e, &seg[i], 1, i, NULL);
    }
    for (i = 0; i < G && kr == KVE_OK; i++) {
        double *out = ref ? lp : lp + (size_t)i * V, kl = 0.0;
        const double *q = ref ? ref + (size_t)i * V : out; /* the full cache's */
        if ((kr = engine_run(e, &seg[P + i], 1, P + i, logits)) != KVE_OK) break;
        log_softmax(logits, V, out);
        if (ref)
            for (j = 0; j < V; j++) kl += exp(q[j]) * (q[j] - out[j]);
        r->t[r->n] = offset + P + i;
        r->segment[r->n] = s;
        r->nll[r->n] = -out[seg[P + i + 1]];
        r->kl[r->n] = kl;
        r->top1[r->n++] = argmax_d(out, V) == argmax_d(q, V);
        kv_meter_add(&r->kv, kve_bytes_in_use(&e->cache));
    }
    return kr;
}

/* ref_res: the full cache's own scores and memory, for --explain */
static int run_prompt(const model *m, result *res, int n_pol, const int *tokens, int n, int P,
                      int G, result *ref_res)
{
    int S = (n - 1) / (P + G), V = m->vocab_size, s, p, status = 1;
    engine ref, e[MAX_POLICIES];
    random_policy rnd[MAX_POLICIES];
    kve_policy_config full;
    progress pr;
    float *logits = (float *)xmalloc((size_t)V * sizeof(float));
    double *ref_lp = (double *)xmalloc((size_t)G * (size_t)V * sizeof(double));
    double *lp = (double *)xmalloc((size_t)V * sizeof(double));
    memset(&full, 0, sizeof full);
    memset(rnd, 0, sizeof rnd);
    memset(&ref, 0, sizeof ref);
    memset(e, 0, sizeof e);
    if (engine_open(&ref, m, &full, P + G, P, NULL, g_threads)) goto done;
    ref.own_attention = g_own_attention;
    alloc_scores(ref_res, S * G);
    for (p = 0; p < n_pol; p++) {
        kve_policy_config pc;
        int32_t slots;
        if (spec_setup(&res[p].spec, m, 0, P + G, &rnd[p], &pc, &slots) ||
            engine_open(&e[p], m, &pc, slots, P, g_kv_types, g_threads))
            goto done;
        e[p].own_attention = g_own_attention;
        alloc_scores(&res[p], S * G);
    }
    progress_start(&pr, "prompt mode", "segments", S);
    for (s = 0; s < S; s++) {
        const int *seg = tokens + (size_t)s * (size_t)(P + G);
        kve_result kr = run_segment(&ref, seg, P, G, NULL, ref_lp, logits, ref_res, s,
                                    s * (P + G));
        if (kr != KVE_OK) {
            fprintf(stderr, "error: full cache, segment %d: %s\n", s, kve_result_string(kr));
            goto done;
        }
        for (p = 0; p < n_pol; p++) {
            double ts = now_seconds();
            kr = run_segment(&e[p], seg, P, G, ref_lp, lp, logits, &res[p], s, s * (P + G));
            if (kr != KVE_OK) {
                fprintf(stderr, "error: %s, segment %d: %s\n", res[p].spec.text, s,
                        kve_result_string(kr));
                goto done;
            }
            res[p].seconds += now_seconds() - ts;
            res[p].tokens_run += P + G;
        }
        progress_step(&pr, s + 1);
    }
    status = 0;
done:
    engine_close(&ref);
    for (p = 0; p < n_pol; p++) {
        engine_close(&e[p]);
        free(rnd[p].slots);
        free(rnd[p].mark);
    }
    free(logits); free(ref_lp); free(lp);
    return status;
}

/* ---- --equal-memory ------------------------------------------------------------------------ */
/* The peak K/V bytes a spec holds during a continuation, run as run_prompt runs it, on one
   segment: the count of tokens held does not depend on the text, so every segment peaks alike. */
static int probe_peak(const model *m, const policy_spec *spec, const int *seg, int P, int G,
                      size_t *peak)
{
    random_policy rnd;
    kve_policy_config pc;
    int32_t slots;
    engine e;
    result scratch;
    kve_result kr;
    float *logits = (float *)xmalloc((size_t)m->vocab_size * sizeof(float));
    double *lp = (double *)xmalloc((size_t)G * (size_t)m->vocab_size * sizeof(double));
    int status = 1;
    memset(&rnd, 0, sizeof rnd);
    memset(&e, 0, sizeof e);
    memset(&scratch, 0, sizeof scratch);
    if (spec_setup(spec, m, 0, P + G, &rnd, &pc, &slots) ||
        engine_open(&e, m, &pc, slots, P, g_kv_types, g_threads))
        goto done;
    alloc_scores(&scratch, G);
    if ((kr = run_segment(&e, seg, P, G, NULL, lp, logits, &scratch, 0, 0)) != KVE_OK) {
        fprintf(stderr, "error: --equal-memory: %s: %s\n", spec->text, kve_result_string(kr));
        goto done;
    }
    *peak = scratch.kv.peak;
    status = 0;
done:
    engine_close(&e);
    free_scores(&scratch);
    free(rnd.slots); free(rnd.mark); free(logits); free(lp);
    return status;
}

/* the smallest capacity the spec's other parameters allow (spec_parse's checks) */
static int32_t min_capacity(const policy_spec *s)
{
    int32_t window = s->cfg.window ? s->cfg.window : spec_default_window(s->cfg.kind);
    if (s->cfg.kind == KVE_POLICY_STREAMINGLLM)
        return s->cfg.sinks == KVE_NO_SINKS ? 1 : (s->cfg.sinks ? s->cfg.sinks : 4) + 1;
    return window + 1;
}

/* the label with its capacity=N replaced by the capacity it runs with */
static void relabel(result *r, const char *given, int32_t capacity)
{
    const char *at = strstr(given, "capacity="), *rest;
    if (!at) return;
    rest = at + strlen("capacity=");
    while (*rest >= '0' && *rest <= '9') rest++;
    snprintf(r->label, sizeof r->label, "%.*scapacity=%d%s", (int)(at - given), given,
             (int)capacity, rest);
}

/* Gives each policy but full and the first other one the capacity whose peak K/V bytes during a
   continuation come closest to the first one's (the smaller capacity on a tie), searched on the
   first segment; the peak grows with the capacity. */
static int equalize_memory(const model *m, result *res, int n_pol, const int *tokens, int P,
                           int G)
{
    int p, first = -1;
    size_t target;
    for (p = 0; p < n_pol && first < 0; p++)
        if (res[p].spec.cfg.kind != KVE_POLICY_FULL) first = p;
    if (probe_peak(m, &res[first].spec, tokens, P, G, &target)) return 1;
    printf("equal memory: %s holds at most %zu bytes of K/V in a continuation; the others (full "
           "aside) get the capacity that comes closest:\n", res[first].spec.text, target);
    for (p = first + 1; p < n_pol; p++) {
        policy_spec trial = res[p].spec;
        char given[sizeof res[p].label];
        int32_t lo = min_capacity(&trial), hi = P + G, best;
        size_t peak_lo = 0, peak_hi = 0, peak;
        if (trial.cfg.kind == KVE_POLICY_FULL) continue;
        /* the smallest capacity in [lo, hi] whose peak reaches the target (hi if none does) */
        while (lo < hi) {
            int32_t mid = lo + (hi - lo) / 2;
            trial.capacity = mid;
            if (probe_peak(m, &trial, tokens, P, G, &peak)) return 1;
            if (peak >= target) hi = mid;
            else lo = mid + 1;
        }
        best = lo;
        trial.capacity = best;
        if (probe_peak(m, &trial, tokens, P, G, &peak_hi)) return 1;
        if (best > min_capacity(&trial)) { /* one below may come closer from underneath */
            trial.capacity = best - 1;
            if (probe_peak(m, &trial, tokens, P, G, &peak_lo)) return 1;
            if (target - peak_lo <= (peak_hi > target ? peak_hi - target : target - peak_hi)) {
                best--;
                peak_hi = peak_lo;
            }
        }
        snprintf(given, sizeof given, "%s", res[p].label);
        res[p].spec.capacity = best;
        relabel(&res[p], given, best);
        if (strcmp(given, res[p].label))
            printf("  %s -> %s: %zu bytes\n", given, res[p].label, peak_hi);
        else
            printf("  %s as given: %zu bytes\n", given, peak_hi);
    }
    return 0;
}

/* ---- output ------------------------------------------------------------------------------- */
static void format_bytes(char *out, size_t n, double bytes)
{
    if (bytes >= 1048576.0) snprintf(out, n, "%.2f MiB", bytes / 1048576.0);
    else snprintf(out, n, "%.1f KiB", bytes / 1024.0);
}

/* mean NLL over scored tokens with lo <= t < hi; the count in *count */
static double range_mean(const result *r, int lo, int hi, int *count)
{
    double sum = 0.0;
    int i;
    *count = 0;
    for (i = 0; i < r->n; i++)
        if (r->t[i] >= lo && r->t[i] < hi) {
            sum += r->nll[i];
            ++*count;
        }
    return *count ? sum / *count : 0.0;
}

/* "nll (ppl)" over scored tokens with lo <= t < hi */
static void range_cell(char *out, size_t n, const result *r, int lo, int hi)
{
    int count;
    double mean = range_mean(r, lo, hi, &count);
    if (count == 0) snprintf(out, n, "-");
    else snprintf(out, n, "%.3f (%.2f)", mean, exp(mean));
}

/* the stream table's ranges: before the training context, up to 4 times it, the rest */
static void stream_bounds(const model *m, int n_tokens, int b[4])
{
    b[0] = 0; b[3] = n_tokens - 1; /* scored tokens: t in [0, n - 1) */
    b[1] = m->seq_len < b[3] ? m->seq_len : b[3];
    b[2] = 4 * m->seq_len < b[3] ? 4 * m->seq_len : b[3];
}

static void print_stream_table(const model *m, const result *res, int n_pol, int n_tokens, int w)
{
    int b[4], p, k;
    char head[3][32];
    stream_bounds(m, n_tokens, b);
    for (k = 0; k < 3; k++) /* a stream too short to reach a range: no positions to name */
        if (b[k] < b[k + 1]) snprintf(head[k], sizeof head[k], "[%d,%d)", b[k], b[k + 1]);
        else snprintf(head[k], sizeof head[k], "(none)");
    printf("stream mode, %d tokens, training context %d, %s attention: mean NLL (perplexity) of "
           "the next token\n", n_tokens, m->seq_len, g_own_attention ? "engine" : "library");
    printf("%-*s  %-16s %-16s %-16s %12s %9s\n", w, "policy", head[0], head[1], head[2], "peak KV",
           "tok/s");
    for (p = 0; p < n_pol; p++) {
        char c[3][32], kv[32];
        for (k = 0; k < 3; k++) range_cell(c[k], sizeof c[k], &res[p], b[k], b[k + 1]);
        format_bytes(kv, sizeof kv, (double)res[p].kv.peak);
        printf("%-*s  %-16s %-16s %-16s %12s %9.0f\n", w, res[p].spec.text, c[0], c[1], c[2], kv,
               (double)res[p].tokens_run / res[p].seconds);
    }
}

/* --explain, stream mode: how the NLL after the training context compares with the NLL before
   it, in words that follow the ratio, and the memory held */
static void explain_stream(const model *m, const result *res, int n_pol, int n_tokens)
{
    int b[4], p, k, last = 0, count;
    double full_peak = 0.0;
    stream_bounds(m, n_tokens, b);
    for (k = 1; k < 3; k++)
        if (b[k + 1] > b[k]) last = k; /* the range furthest past the training context */
    for (p = 0; p < n_pol; p++)
        if (res[p].spec.cfg.kind == KVE_POLICY_FULL && (double)res[p].kv.peak > full_peak)
            full_peak = (double)res[p].kv.peak;
    printf("\n");
    for (p = 0; p < n_pol; p++) {
        const result *r = &res[p];
        double before = range_mean(r, b[0], b[1], &count), after, ratio;
        char kv[32], full_kv[32];
        format_bytes(kv, sizeof kv, (double)r->kv.peak);
        format_bytes(full_kv, sizeof full_kv, full_peak);
        if (last == 0) {
            printf("%s: next-token NLL %.2f over positions [0,%d); the stream stays within the "
                   "%d-token training context, so it shows nothing about what lies beyond",
                   r->spec.text, before, b[1], m->seq_len);
        } else {
            after = range_mean(r, b[last], b[last + 1], &count);
            ratio = after / before;
            printf("%s: next-token NLL %s %.2f before position %d to ", r->spec.text,
                   ratio >= 1.0 ? "rises from" : "falls from", before, b[1]);
            if (last == 2) /* the range just past the training context too: how it gets there */
                printf("%.2f over positions [%d,%d) and ", range_mean(r, b[1], b[2], &count),
                       b[1], b[2]);
            printf("%.2f over positions [%d,%d)", after, b[last], b[last + 1]);
            if (ratio > 2.0)
                printf(": it more than doubles (x%.1f): this far past the %d-token training "
                       "context it breaks down", ratio, m->seq_len);
            else if (ratio > 1.1)
                printf(": up %.0f%%, the model degrades beyond its %d-token training context",
                       100.0 * (ratio - 1.0), m->seq_len);
            else if (ratio >= 0.9)
                printf(": within 10%% (%+.0f%%), it holds up beyond the %d-token training context",
                       100.0 * (ratio - 1.0), m->seq_len);
            else
                printf(": down %.0f%%, no loss beyond the %d-token training context",
                       100.0 * (1.0 - ratio), m->seq_len);
        }
        if (r->spec.cfg.kind == KVE_POLICY_FULL || full_peak <= 0.0)
            printf("; it holds at most %s of K/V.\n", kv);
        else
            printf("; it holds at most %s of K/V, %.0f%% of the full cache's %s.\n", kv,
                   100.0 * (double)r->kv.peak / full_peak, full_kv);
    }
}

/* a segment's mean KL (top1 = 0) or top-1 agreement (top1 = 1) */
static double segment_mean(const result *r, int s, int top1)
{
    double sum = 0.0;
    int i, count = 0;
    for (i = 0; i < r->n; i++)
        if (r->segment[i] == s) {
            sum += top1 ? (double)r->top1[i] : r->kl[i];
            count++;
        }
    return count ? sum / count : 0.0;
}

/* mean and standard error over segments of policy a's value minus policy b's */
static void paired(const result *a, const result *b, int S, int top1, double *mean, double *se,
                   int *lower)
{
    double sum = 0.0, sq = 0.0;
    int s;
    *lower = 0;
    for (s = 0; s < S; s++) {
        double d = segment_mean(a, s, top1) - segment_mean(b, s, top1);
        sum += d;
        sq += d * d;
        *lower += d < 0.0;
    }
    *mean = sum / S;
    *se = S > 1 ? sqrt(fmax(sq - S * *mean * *mean, 0.0) / (S - 1) / S) : 0.0;
}

typedef struct summary { double nll, kl, top1; } summary;

static summary summarize(const result *r)
{
    summary s = {0.0, 0.0, 0.0};
    int i;
    for (i = 0; i < r->n; i++) {
        s.nll += r->nll[i];
        s.kl += r->kl[i];
        s.top1 += r->top1[i];
    }
    if (r->n) {
        s.nll /= r->n;
        s.kl /= r->n;
        s.top1 /= r->n;
    }
    return s;
}

static void print_prompt_table(const result *res, int n_pol, int P, int G, int w,
                               const char *decode)
{
    int p, S = res[0].n / G;
    printf("prompt mode, %d segments of %d prompt + %d continuation tokens, decode=%s (where a "
           "policy does not say), %s attention: the %d continuation predictions per segment, "
           "against the full cache\n", S, P, G, decode, g_own_attention ? "engine" : "library",
           G);
    printf("%-*s  %8s %8s %10s %7s %14s %14s %9s\n", w, "policy", "NLL", "PPL", "KL", "top-1",
           "peak KV", "mean KV", "tok/s");
    for (p = 0; p < n_pol; p++) {
        const result *r = &res[p];
        summary sm = summarize(r);
        char peak[32], mean[32];
        format_bytes(peak, sizeof peak, (double)r->kv.peak);
        format_bytes(mean, sizeof mean, kv_mean(&r->kv));
        printf("%-*s  %8.4f %8.3f %10.5f %7.4f %14s %14s %9.0f\n", w, r->spec.text, sm.nll,
               exp(sm.nll), sm.kl, sm.top1, peak, mean, (double)r->tokens_run / r->seconds);
    }
    printf("(peak and mean KV: the K/V bytes held after each continuation token, once the prompt "
           "is compressed; the prefill holds the whole prompt)\n");
    if (n_pol < 2) return;
    printf("\nKL and top-1 paired by segment against %s: mean difference +- standard error, "
           "segments won (lower KL)\n", res[0].spec.text);
    for (p = 1; p < n_pol; p++) {
        double kl, kl_se, top1, top1_se;
        int wins, unused;
        paired(&res[p], &res[0], S, 0, &kl, &kl_se, &wins);
        paired(&res[p], &res[0], S, 1, &top1, &top1_se, &unused);
        printf("%-*s  KL %+10.5f +- %.5f   top-1 %+8.4f +- %.4f   wins %d/%d\n", w,
               res[p].spec.text, kl, kl_se, top1, top1_se, wins, S);
    }
}

/* --explain, prompt mode: how far each policy's predictions are from the full cache's, in words
   that follow the KL, and at what share of the full cache's memory */
static void explain_prompt(const result *res, int n_pol, const result *ref)
{
    summary full = summarize(ref);
    char full_peak[32];
    int p;
    format_bytes(full_peak, sizeof full_peak, (double)ref->kv.peak);
    printf("\n");
    for (p = 0; p < n_pol; p++) {
        const result *r = &res[p];
        summary sm = summarize(r);
        double share = ref->kv.peak ? (double)r->kv.peak / (double)ref->kv.peak : 0.0;
        char peak[32], mean[32];
        format_bytes(peak, sizeof peak, (double)r->kv.peak);
        format_bytes(mean, sizeof mean, kv_mean(&r->kv));
        printf("%s: %s the full cache's predictions (KL %.4f, top-1 agreement %.1f%%), NLL %.3f "
               "against the full cache's %.3f (%+.1f%%), ", r->spec.text,
               sm.kl == 0.0 ? "the same as" : sm.kl < 0.01 ? "close to"
               : sm.kl < 0.1 ? "noticeably different from" : "far from",
               sm.kl, 100.0 * sm.top1, sm.nll, full.nll, 100.0 * (sm.nll / full.nll - 1.0));
        if (share < 1.0)
            printf("holding %.0f%% of its peak K/V memory (%s against %s; mean %s).\n",
                   100.0 * share, peak, full_peak, mean);
        else
            printf("saving no memory (peak K/V %s, the full cache's %s; mean %s).\n", peak,
                   full_peak, mean);
    }
}

static int write_csv(FILE *f, const result *res, int n_pol, int prompt)
{
    int p, i;
    fprintf(f, prompt ? "policy,t,nll,segment,kl,top1\n" : "policy,t,nll\n");
    for (p = 0; p < n_pol; p++)
        for (i = 0; i < res[p].n; i++) {
            fprintf(f, "\"%s\",%d,%.6f", res[p].spec.text, res[p].t[i], res[p].nll[i]);
            if (prompt)
                fprintf(f, ",%d,%.6g,%d", res[p].segment[i], res[p].kl[i], res[p].top1[i]);
            fputc('\n', f);
        }
    return ferror(f) != 0;
}

/* text with XML's special characters escaped (a model's file name may hold '&') */
static void svg_text(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '&') fputs("&amp;", f);
        else if (*s == '<') fputs("&lt;", f);
        else if (*s == '>') fputs("&gt;", f);
        else if (*s == '"') fputs("&quot;", f);
        else fputc(*s, f);
    }
}

/* NLL against position, a moving average over `avg` scored tokens, one line per policy, each
   with its own colour and dash pattern. The first is drawn widest and each later one narrower
   on top of it, the dashes shifted a little: two policies with the same numbers (StreamingLLM
   with a capacity the stream never reaches, and full) still both show. context: the training
   context, a labelled vertical line (0: none). */
static int write_svg(FILE *f, const result *res, int n_pol, const char *title, int context,
                     int avg)
{
    static const char *const color[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                        "#9467bd", "#8c564b", "#e377c2", "#17becf"};
    static const char *const dash[] = {"none", "10,4", "3,3", "12,3,3,3",
                                       "6,6", "1,3", "14,3,3,3,3,3", "8,2,2,2"};
    const double W = 900, L = 64, R = 20, T = 40, PH = 360;
    double xmax = 1, ymax = 1, xstep, ystep;
    int p, i, k;
    for (p = 0; p < n_pol; p++) { /* the axes' ranges */
        double sum = 0.0;
        for (i = 0; i < res[p].n; i++) {
            sum += res[p].nll[i] - (i >= avg ? res[p].nll[i - avg] : 0.0);
            if (sum / (i < avg ? i + 1 : avg) > ymax) ymax = sum / (i < avg ? i + 1 : avg);
            if (res[p].t[i] + 1 > xmax) xmax = res[p].t[i] + 1;
        }
    }
    ymax = ceil(ymax);
    for (xstep = 1; xmax / xstep > 10;) /* 1, 2, 5, 10, 20, 50, ... */
        xstep *= fmod(log10(xstep), 1.0) < 0.2 ? 2 : (fmod(log10(xstep), 1.0) < 0.5 ? 2.5 : 2);
    ystep = ymax > 10 ? 2 : (ymax > 3 ? 1 : 0.5);
#define SX(x) (L + (W - L - R) * (x) / xmax)
#define SY(y) (T + PH - PH * (y) / ymax)
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
            "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" "
            "fill=\"white\"/>\n<text x=\"%.0f\" y=\"22\" font-size=\"14\">", W,
            T + PH + 50 + 18 * n_pol, L);
    svg_text(f, title);
    fprintf(f, "</text>\n");
    for (k = 0; k * ystep <= ymax; k++)
        fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n", L, W - R,
                SY(k * ystep), SY(k * ystep), L - 6, SY(k * ystep) + 4, k * ystep);
    for (k = 0; k * xstep <= xmax; k++)
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%g</text>\n",
                SX(k * xstep), T + PH + 16, k * xstep);
    fprintf(f, "<text class=\"x-label\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">token "
            "position (NLL: moving average over %d tokens)</text>\n", (L + W - R) / 2,
            T + PH + 34, avg);
    fprintf(f, "<text class=\"y-label\" transform=\"translate(18,%.1f) rotate(-90)\" "
            "text-anchor=\"middle\">NLL of the next token (nats)</text>\n", T + PH / 2);
    for (p = 0; p < n_pol; p++) {
        const result *r = &res[p];
        double sum = 0.0, width = 3.5 - 2.5 * p / (n_pol > 1 ? n_pol - 1 : 1);
        int every = r->n / 1500 + 1;
        /* (colour, dash) differs for every pair of the 16 policies: the dash index runs ahead */
        const char *c = color[p % 8], *d = dash[(p + p / 8) % 8];
        fprintf(f, "<polyline class=\"policy\" fill=\"none\" stroke=\"%s\" stroke-width=\"%.2f\" "
                "stroke-dasharray=\"%s\" stroke-dashoffset=\"%d\" stroke-linejoin=\"round\" "
                "points=\"", c, width, d, 2 * p);
        for (i = 0; i < r->n; i++) {
            sum += r->nll[i] - (i >= avg ? r->nll[i - avg] : 0.0);
            if (i % every == 0 || i == r->n - 1)
                fprintf(f, "%.1f,%.1f ", SX(r->t[i]), SY(sum / (i < avg ? i + 1 : avg)));
        }
        fprintf(f, "\"/>\n<line x1=\"%.0f\" x2=\"%.0f\" y1=\"%.0f\" y2=\"%.0f\" stroke=\"%s\" "
                "stroke-width=\"%.2f\" stroke-dasharray=\"%s\"/><text x=\"%.0f\" y=\"%.0f\">", L,
                L + 36, T + PH + 56 + 18 * p, T + PH + 56 + 18 * p, c, width, d, L + 44,
                T + PH + 60 + 18 * p);
        svg_text(f, r->spec.text);
        fprintf(f, "</text>\n");
    }
    if (context > 0 && context < xmax) /* over the lines, so that they do not hide it */
        fprintf(f, "<line class=\"context\" x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" "
                "stroke=\"#444\" stroke-dasharray=\"2,3\"/><text x=\"%.1f\" y=\"%.1f\" "
                "fill=\"#444\">training context: %d tokens</text>\n", SX(context), SX(context), T,
                T + PH, SX(context) + 4, T + 14, context);
#undef SX
#undef SY
    fprintf(f, "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" "
            "stroke=\"#444\"/>\n</svg>\n", L, T, W - L - R, PH);
    return ferror(f) != 0;
}

/* ---- main ---------------------------------------------------------------------------------- */
static void usage(FILE *out)
{
    fprintf(out,
"usage: compare --model M --tokenizer T --text F --policy SPEC [--policy SPEC ...] [options]\n"
"  --model M, --tokenizer T   a llama2.c checkpoint and its tokenizer\n"
"  --text F           UTF-8 text, stories separated by lines \"<|endoftext|>\"\n"
"  --policy SPEC      up to %d; NAME:param=value,... e.g. snapkv:capacity=128,window=8,\n"
"                     knorm:capacity=64,allocation=adakv (every method below)\n"
"  --tokens N         use the first N tokens of the text, 2 <= N <= %d (default: all)\n"
"  --mode stream      (default) teacher forcing through the whole text, each policy kept within\n"
"                     its capacity: the next-token NLL before, around and after the training\n"
"                     context\n"
"  --mode prompt      segments of P prompt + G continuation tokens: the prompt is prefilled,\n"
"                     compressed to each policy's capacity, and the G predictions that follow\n"
"                     are compared with the full cache's (NLL, KL, top-1, K/V bytes held)\n"
"  --mode needle      passkey retrieval at every depth of a long context, with its own options:\n"
"                     compare --mode needle --help\n"
"  --prompt-tokens P, --continuation G   prompt mode's segments (384 and 64)\n"
"  --decode grow|evict  prompt mode, for every policy that does not set decode= itself: after\n"
"                     the prompt the cache grows by the continuation (grow, the default) or\n"
"                     stays at its capacity by evicting (evict)\n"
"  --equal-memory     prompt mode: compare at equal memory. Runs the first segment with the\n"
"                     first policy other than full and takes the most K/V bytes it holds after\n"
"                     a continuation token; then gives each later policy (full aside) the\n"
"                     capacity, between its smallest valid one and P + G, whose peak over that\n"
"                     segment comes closest to it (the smaller capacity on a tie), and runs it\n"
"                     with that capacity, shown in the tables and files in place of the given\n"
"  --explain          after the table, a sentence per policy on what its numbers show\n"
"  --csv OUT.csv      every scored token; --svg OUT.svg: NLL against position\n"
"  --kv-type f32|f16|bf16|q8_0   how the policies' caches store K and V (--k-type, --v-type)\n"
"  --attention library|engine    who attends: kvevict (the default) or the engine over the\n"
"                     K/V buffers; the same numbers up to float rounding\n"
"  --threads N        kvevict's OpenMP threads per call, 0 <= N <= %d: 1 (the default; a\n"
"                     model this small gains nothing from threads), 0 OpenMP's choice, N at most\n"
"                     N; the numbers do not depend on it\n"
"  --progress S       a progress line on stderr every S seconds (5; 0: none)\n"
"  -h, --help         this text\n"
"Every argument is checked before any file is read. Exit status: 0 done, 1 a file that\n"
"cannot be read or written or a failed run, 2 a bad argument.\n",
            MAX_POLICIES, MAX_TOKENS, MAX_THREADS);
    fprintf(out, "methods and their parameters (capacity: tokens kept per layer and KV head):\n");
    for (size_t m = 0; m < sizeof policy_names / sizeof policy_names[0]; m++)
        fprintf(out, "  %-19s %s\n", policy_names[m].name,
                policy_names[m].params[0] ? policy_names[m].params : "(none)");
    fprintf(out, "  allocation=uniform|pyramid|adakv, alpha_safeguard=0..1 (AdaKV), chunk_length=N\n"
                 "  (ChunkKV: whole chunks), decode=grow|evict; meanings and defaults: kvevict.h,\n"
                 "  POLICIES and SCORERS AND ALLOCATIONS. random is the engine's own baseline (a\n"
                 "  kve_policy_vtable in examples/engine.h), random_scorer the library's seeded\n"
                 "  scorer (KVE_POLICY_RANDOM).\n");
}

/* an integer in [min, max]; message and -1 otherwise */
static int int_arg(const char *name, const char *v, int min, int max, const char *meaning)
{
    char *end;
    long x;
    errno = 0;
    x = strtol(v, &end, 10);
    if (end == v || *end || errno == ERANGE || x < min || x > max) {
        fprintf(stderr, "error: %s needs an integer from %d to %d%s, got '%s'\n", name, min, max,
                meaning, v);
        return -1;
    }
    return (int)x;
}

static int type_arg(const char *name, const char *v, kve_type *out)
{
    int i;
    for (i = 1; i < 5; i++)
        if (!strcmp(v, g_type_names[i])) {
            *out = (kve_type)i;
            return 0;
        }
    fprintf(stderr, "error: %s is f32, f16, bf16 or q8_0, not '%s'\n", name, v);
    return 2;
}

/* options taking a value, then flags */
static const char *const g_value_options[] = {
    "--model", "--tokenizer", "--text", "--tokens", "--mode", "--prompt-tokens",
    "--continuation", "--policy", "--csv", "--svg", "--kv-type", "--k-type", "--v-type",
    "--attention", "--threads", "--decode", "--progress"};
static const char *const g_flag_options[] = {"--equal-memory", "--explain"};

static int option_index(const char *a, const char *const *list, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        if (!strcmp(a, list[i])) return (int)i;
    return -1;
}

/* an output file, created now so that a path that cannot be written fails before the run */
static FILE *open_output(const char *option, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f)
        fprintf(stderr, "error: cannot write %s file '%s': %s\n", option, path, strerror(errno));
    return f;
}

/* --mode needle anywhere on the line: the retrieval evaluation, with its own options */
static int compare_wants_needle(int argc, char **argv)
{
    int i;
    for (i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--mode") && !strcmp(argv[i + 1], "needle")) return 1;
    return 0;
}

int main(int argc, char **argv)
{
    const char *model_path = NULL, *tok_path = NULL, *text_path = NULL, *csv = NULL, *svg = NULL;
    const char *prompt_only = NULL; /* a prompt-mode option given, for the stream-mode check */
    int want = 0, prompt = 0, P = 384, G = 64, n_pol = 0, n = 0, i, *tokens = NULL, w = 6;
    int explain = 0, equal_memory = 0, status = 1;
    kve_decode_mode decode = KVE_DECODE_GROW;
    result res[MAX_POLICIES], ref_res;
    model m;
    tokenizer tok;
    FILE *csv_file = NULL, *svg_file = NULL;
    char *text = NULL, title[512];
    memset(res, 0, sizeof res);
    memset(&ref_res, 0, sizeof ref_res);
    memset(&m, 0, sizeof m);
    memset(&tok, 0, sizeof tok);
    if (compare_wants_needle(argc, argv)) return needle_main(argc, argv);

    /* 1. the arguments, every one, before any file is touched */
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        size_t n_values = sizeof g_value_options / sizeof g_value_options[0];
        size_t n_flags = sizeof g_flag_options / sizeof g_flag_options[0];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (option_index(a, g_flag_options, n_flags) >= 0) {
            if (!strcmp(a, "--explain")) explain = 1;
            else equal_memory = 1, prompt_only = a;
            continue;
        }
        if (option_index(a, g_value_options, n_values) < 0) {
            fprintf(stderr, "error: unknown option '%s' (compare --help lists them)\n", a);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "error: %s needs a value\n", a);
            return 2;
        }
        v = argv[++i];
        if (!strcmp(a, "--model")) model_path = v;
        else if (!strcmp(a, "--tokenizer")) tok_path = v;
        else if (!strcmp(a, "--text")) text_path = v;
        else if (!strcmp(a, "--csv")) csv = v;
        else if (!strcmp(a, "--svg")) svg = v;
        else if (!strcmp(a, "--tokens")) {
            if ((want = int_arg(a, v, 2, MAX_TOKENS, " (the most a cache holds)")) < 0) return 2;
        } else if (!strcmp(a, "--prompt-tokens")) {
            if ((P = int_arg(a, v, 1, MAX_TOKENS, "")) < 0) return 2;
            prompt_only = a;
        } else if (!strcmp(a, "--continuation")) {
            if ((G = int_arg(a, v, 1, MAX_TOKENS, "")) < 0) return 2;
            prompt_only = a;
        } else if (!strcmp(a, "--threads")) {
            if ((g_threads = int_arg(a, v, 0, MAX_THREADS, " (0: OpenMP's choice)")) < 0) return 2;
        } else if (!strcmp(a, "--progress")) {
            char *end;
            errno = 0;
            g_progress_every = strtod(v, &end);
            if (end == v || *end || errno == ERANGE || !isfinite(g_progress_every) ||
                g_progress_every < 0.0) {
                fprintf(stderr, "error: --progress needs seconds, a number >= 0 (0: no progress "
                        "lines), got '%s'\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--kv-type")) {
            if (type_arg(a, v, &g_kv_types[0])) return 2;
            g_kv_types[1] = g_kv_types[0];
        } else if (!strcmp(a, "--k-type")) {
            if (type_arg(a, v, &g_kv_types[0])) return 2;
        } else if (!strcmp(a, "--v-type")) {
            if (type_arg(a, v, &g_kv_types[1])) return 2;
        } else if (!strcmp(a, "--attention")) {
            if (strcmp(v, "library") && strcmp(v, "engine")) {
                fprintf(stderr, "error: --attention is library (kvevict attends) or engine (the "
                        "engine's own attention), not '%s'\n", v);
                return 2;
            }
            g_own_attention = !strcmp(v, "engine");
        } else if (!strcmp(a, "--mode")) {
            if (strcmp(v, "stream") && strcmp(v, "prompt")) {
                fprintf(stderr, "error: --mode is stream, prompt or needle, not '%s'\n", v);
                return 2;
            }
            prompt = !strcmp(v, "prompt");
        } else if (!strcmp(a, "--decode")) {
            if (strcmp(v, "grow") && strcmp(v, "evict")) {
                fprintf(stderr, "error: --decode is grow or evict, not '%s'\n", v);
                return 2;
            }
            decode = !strcmp(v, "grow") ? KVE_DECODE_GROW : KVE_DECODE_EVICT;
            prompt_only = a;
        } else { /* --policy */
            if (n_pol == MAX_POLICIES) {
                fprintf(stderr, "error: at most %d policies\n", MAX_POLICIES);
                return 2;
            }
            snprintf(res[n_pol].label, sizeof res[n_pol].label, "%s", v);
            if (spec_parse(res[n_pol].label, &res[n_pol].spec)) return 2;
            n_pol++;
        }
    }
    if (!model_path || !tok_path || !text_path || n_pol == 0) {
        fprintf(stderr, "error: --model, --tokenizer, --text and a --policy are needed (compare "
                "--help)\n");
        return 2;
    }
    if (!prompt && prompt_only) {
        fprintf(stderr, "error: %s is for --mode prompt\n", prompt_only);
        return 2;
    }
    for (i = 0; i < n_pol; i++) {
        policy_spec *s = &res[i].spec;
        if (!prompt && spec_check_stream(s)) return 2;
        /* prompt mode: every policy grows or evicts alike, unless it says which itself */
        if (prompt) spec_take_decode(s, decode);
    }
    if (prompt && (long long)P + G > MAX_TOKENS) {
        fprintf(stderr, "error: --prompt-tokens + --continuation is at most %d, not %lld\n",
                MAX_TOKENS, (long long)P + G);
        return 2;
    }
    if (prompt && want > 0 && want < P + G + 1) {
        fprintf(stderr, "error: --tokens %d is less than one prompt-mode segment: --prompt-tokens "
                "%d + --continuation %d + 1 (the token the last one predicts) = %d\n", want, P, G,
                P + G + 1);
        return 2;
    }
    if (equal_memory) {
        for (i = 0; i < n_pol && res[i].spec.cfg.kind == KVE_POLICY_FULL; i++) {}
        if (i == n_pol) {
            fprintf(stderr, "error: --equal-memory needs a policy other than full\n");
            return 2;
        }
        for (i = 0; i < n_pol; i++)
            if (res[i].spec.cfg.kind == KVE_POLICY_SIMLAYERKV) {
                fprintf(stderr, "error: --equal-memory: policy '%s' has no capacity to set (what a "
                        "SimLayerKV layer keeps depends on the text)\n", res[i].spec.text);
                return 2;
            }
    }
    if (csv && svg && !strcmp(csv, svg)) {
        fprintf(stderr, "error: --csv and --svg are the same file '%s'\n", csv);
        return 2;
    }

    /* 2. the files: the inputs looked at before the slow loading, the outputs created */
    if (input_file_size("model", model_path) < 0 || input_file_size("tokenizer", tok_path) < 0 ||
        input_file_size("text", text_path) < 0)
        return 1;
    if (csv && !(csv_file = open_output("--csv", csv))) goto done;
    if (svg && !(svg_file = open_output("--svg", svg))) goto done;
    if (model_load(&m, model_path) || tok_load(&tok, tok_path, m.vocab_size) ||
        !(text = read_text(text_path)))
        goto done;
    tokens = encode_stories(&tok, text, want, &n);
    if (want > 0 && n < want) fprintf(stderr, "compare: the text has only %d tokens\n", n);
    if (n < 2) {
        fprintf(stderr, "error: text '%s' gives %d tokens, too few to score (2 at least)\n",
                text_path, n);
        goto done;
    }
    if (prompt && n < P + G + 1) {
        fprintf(stderr, "error: text '%s' gives %d tokens, less than one prompt-mode segment "
                "(%d = --prompt-tokens %d + --continuation %d + 1)\n", text_path, n, P + G + 1, P,
                G);
        goto done;
    }
    fprintf(stderr, "compare: %d tokens: \"", n);
    for (i = 1; i < n && i < 12; i++) fputs(tok_decode(&tok, tokens[i - 1], tokens[i]), stderr);
    fprintf(stderr, "...\"\n");

    /* 3. the run */
    if (g_kv_types[0] != KVE_TYPE_F32 || g_kv_types[1] != KVE_TYPE_F32)
        printf("K/V stored as %s (K) and %s (V)\n", g_type_names[g_kv_types[0]],
               g_type_names[g_kv_types[1]]);
    if (equal_memory && equalize_memory(&m, res, n_pol, tokens, P, G)) goto done;
    for (i = 0; i < n_pol; i++)
        if ((int)strlen(res[i].spec.text) > w) w = (int)strlen(res[i].spec.text);
    if (prompt) {
        if (run_prompt(&m, res, n_pol, tokens, n, P, G, &ref_res)) goto done;
        print_prompt_table(res, n_pol, P, G, w, decode == KVE_DECODE_GROW ? "grow" : "evict");
        if (explain) explain_prompt(res, n_pol, &ref_res);
    } else {
        for (i = 0; i < n_pol; i++) {
            if (run_stream(&m, &res[i], tokens, n, i, n_pol)) goto done;
            if (res[i].seconds > 2.0 && g_progress_every > 0.0)
                fprintf(stderr, "compare: %s done in %.1f s\n", res[i].spec.text, res[i].seconds);
        }
        print_stream_table(&m, res, n_pol, n, w);
        if (explain) explain_stream(&m, res, n_pol, n);
    }
    if (csv_file && write_csv(csv_file, res, n_pol, prompt)) {
        fprintf(stderr, "error: cannot write --csv file '%s'\n", csv);
        goto done;
    }
    snprintf(title, sizeof title, "%s: next-token NLL, %s mode, %d tokens",
             strrchr(model_path, '/') ? strrchr(model_path, '/') + 1 : model_path,
             prompt ? "prompt" : "stream", n);
    if (svg_file &&
        write_svg(svg_file, res, n_pol, title, prompt ? 0 : m.seq_len, prompt ? 32 : 128)) {
        fprintf(stderr, "error: cannot write --svg file '%s'\n", svg);
        goto done;
    }
    status = 0;
done:
    /* an output file is closed (and its write checked) or, when the run failed, removed */
    if (csv_file && fclose(csv_file) != 0 && status == 0) {
        fprintf(stderr, "error: cannot write --csv file '%s'\n", csv);
        status = 1;
    }
    if (svg_file && fclose(svg_file) != 0 && status == 0) {
        fprintf(stderr, "error: cannot write --svg file '%s'\n", svg);
        status = 1;
    }
    if (status != 0) {
        if (csv_file) remove(csv);
        if (svg_file) remove(svg);
    }
    for (i = 0; i < n_pol; i++) free_scores(&res[i]);
    free_scores(&ref_res);
    free(tokens);
    free(text);
    tok_free(&tok);
    model_free(&m);
    return status;
}
