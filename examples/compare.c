/* compare.c - KV-cache policies side by side on a real model (llama2.c checkpoint format).

   build/compare --model M --tokenizer T --text F [--tokens N] [--mode stream|prompt]
                 [--prompt-tokens P] [--continuation G]
                 --policy SPEC [--policy SPEC ...] [--csv OUT.csv] [--svg OUT.svg]
                 [--kv-type f32|f16|bf16|q8_0] [--k-type T] [--v-type T]
                 [--attention library|engine]

   The text: stories separated by lines "<|endoftext|>", each encoded with a leading BOS, one after
   another; the first N tokens are used (default: all).
   SPEC: full | streamingllm:capacity=C[,sinks=S][,pos_shift=0|1]
         | snapkv:capacity=C[,window=W][,kernel=K][,pooling=max|avg|none][,gqa=mean|max|sum]
                  [,decode=grow|evict][,evict_batch=B]
         | pyramidkv:(as snapkv)[,beta=B] | h2o:capacity=C[,window=W][,gqa=..][,decode=..]
         | random:capacity=C[,window=W][,seed=S]   (keeps the window and random older tokens)
   stream: teacher forcing one token at a time over the whole stream, each policy keeping the
           cache within its capacity (which counts the current token); scores every next token.
   prompt: segments of P prompt tokens (384) + G continuation tokens (64): prefill the prompt
           with the full cache, compress with the policy, feed the G tokens and score their
           predictions: NLL, KL divergence from the full cache's distribution, top-1 agreement.
           (StreamingLLM has no prompt compression: a prompt longer than its capacity streams
           through its cache token by token.) SnapKV, PyramidKV and H2O grow after the prompt
           (decode=grow) unless given decode=evict. The first policy given is the one the
           others are paired with, segment by segment, for the KL differences.
   --csv: one row per scored token, "policy,t,nll" (prompt mode adds segment,kl,top1), t being
   the stream index of the token fed (nll is that of the token after it). --svg: NLL against t,
   a moving average, one line per policy. --kv-type (or --k-type, --v-type): how the policies'
   caches store K and V (default f32; prompt mode's full-cache reference stays f32), to see what
   a storage type costs in quality next to the memory it saves. --attention: who computes
   attention, kvevict (kve_attend, kve_prefill; the default) or the engine itself over the K/V
   buffers (engine_attention in examples/engine.h, kvevict only storing, scoring and evicting);
   both give the same numbers, up to float rounding. Defaults of the library's parameters:
   kvevict.h. */
#define KVEVICT_IMPLEMENTATION
#include "kvevict.h"
#include "examples/engine.h"

#define MAX_POLICIES 16

static kve_type g_kv_types[2] = {KVE_TYPE_F32, KVE_TYPE_F32}; /* K, V of the policies' caches */
static const char *const g_type_names[] = {"f32", "f32", "f16", "bf16", "q8_0"};
static int g_own_attention; /* --attention engine: the engine's own attention (engine.h) */

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

typedef struct result {
    policy_spec spec;
    int n;                   /* scored tokens */
    int *t, *segment;        /* stream index of the input token; prompt segment */
    double *nll, *kl;
    unsigned char *top1;
    size_t peak_bytes;       /* prompt mode: after compression */
    double seconds;
    long long tokens_run;
} result;

/* ---- the text ------------------------------------------------------------------------------- */
static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *s;
    long n;
    if (!f) {
        fprintf(stderr, "error: cannot open text '%s': %s\n", path, strerror(errno));
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    s = (char *)xmalloc((size_t)n + 1);
    if (n < 0 || fread(s, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "error: cannot read text '%s'\n", path);
        fclose(f);
        free(s);
        return NULL;
    }
    s[n] = '\0';
    fclose(f);
    return s;
}

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
                    cap = 2 * (n + (int)(b - a) + 2);
                    out = (int *)realloc(out, (size_t)cap * sizeof(int));
                    if (!out) { fprintf(stderr, "error: out of memory\n"); exit(1); }
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
static void progress(const char *what, int done, int total, double t0, double *last)
{
    double now = now_seconds();
    if (now - t0 > 2.0 && now - *last > 5.0) {
        fprintf(stderr, "compare: %s %d/%d, %.0f s\n", what, done, total, now - t0);
        *last = now;
    }
}

static void alloc_scores(result *r, int n)
{
    r->t = (int *)xmalloc((size_t)n * sizeof(int));
    r->segment = (int *)xmalloc((size_t)n * sizeof(int));
    r->nll = (double *)xmalloc((size_t)n * sizeof(double));
    r->kl = (double *)xmalloc((size_t)n * sizeof(double));
    r->top1 = (unsigned char *)xmalloc((size_t)n);
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
static int run_stream(const model *m, result *r, const int *tokens, int n)
{
    random_policy rnd;
    kve_policy_config pc;
    int32_t slots;
    engine e;
    int t, V = m->vocab_size;
    float *logits = (float *)xmalloc((size_t)V * sizeof(float));
    double *lp = (double *)xmalloc((size_t)V * sizeof(double)), t0 = now_seconds(), last = t0;
    memset(&rnd, 0, sizeof rnd);
    if (spec_setup(&r->spec, m, 1, n, &rnd, &pc, &slots) ||
        engine_open(&e, m, &pc, slots, 1, g_kv_types))
        return 1;
    e.own_attention = g_own_attention;
    alloc_scores(r, n);
    for (t = 0; t + 1 < n; t++) {
        kve_result kr = engine_run(&e, &tokens[t], 1, t, logits);
        size_t bytes = kve_bytes_in_use(&e.cache);
        if (kr != KVE_OK) {
            fprintf(stderr, "error: %s at token %d: %s\n", r->spec.text, t, kve_result_string(kr));
            return 1;
        }
        log_softmax(logits, V, lp);
        r->t[r->n] = t;
        r->segment[r->n] = 0;
        r->nll[r->n++] = -lp[tokens[t + 1]];
        if (bytes > r->peak_bytes) r->peak_bytes = bytes;
        progress(r->spec.text, t + 1, n - 1, t0, &last);
    }
    r->seconds = now_seconds() - t0;
    r->tokens_run = n - 1;
    engine_close(&e);
    free(rnd.slots); free(rnd.mark); free(logits); free(lp);
    return 0;
}

/* ---- prompt mode: prefill, compress, continue ---------------------------------------------- */
/* One segment through engine e: the P prompt tokens (one prefill if they fit in the cache, then
   kve_compress_all; else token by token, the policy evicting as it goes, which is what
   StreamingLLM does), then the G continuation tokens, scored. ref: the full cache's
   log-probabilities of the G predictions, NULL while computing them (into lp). */
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
        const double *q = ref ? ref + (size_t)i * V : NULL; /* the full cache's */
        size_t bytes;
        if ((kr = engine_run(e, &seg[P + i], 1, P + i, logits)) != KVE_OK) break;
        log_softmax(logits, V, out);
        if (!ref) continue;
        for (j = 0; j < V; j++) kl += exp(q[j]) * (q[j] - out[j]);
        r->t[r->n] = offset + P + i;
        r->segment[r->n] = s;
        r->nll[r->n] = -out[seg[P + i + 1]];
        r->kl[r->n] = kl;
        r->top1[r->n++] = argmax_d(out, V) == argmax_d(q, V);
        bytes = kve_bytes_in_use(&e->cache);
        if (bytes > r->peak_bytes) r->peak_bytes = bytes;
    }
    return kr;
}

static int run_prompt(const model *m, result *res, int n_pol, const int *tokens, int n, int P,
                      int G)
{
    int S = (n - 1) / (P + G), V = m->vocab_size, s, p;
    engine ref, e[MAX_POLICIES];
    random_policy rnd[MAX_POLICIES];
    kve_policy_config full;
    float *logits = (float *)xmalloc((size_t)V * sizeof(float));
    double *ref_lp = (double *)xmalloc((size_t)G * (size_t)V * sizeof(double));
    double *lp = (double *)xmalloc((size_t)V * sizeof(double)), t0 = now_seconds(), last = t0;
    if (S < 1) {
        fprintf(stderr, "error: prompt mode needs at least %d tokens, the text gave %d\n",
                P + G + 1, n);
        return 1;
    }
    memset(&full, 0, sizeof full);
    memset(rnd, 0, sizeof rnd);
    if (engine_open(&ref, m, &full, P + G, P, NULL)) return 1;
    ref.own_attention = g_own_attention;
    for (p = 0; p < n_pol; p++) {
        kve_policy_config pc;
        int32_t slots;
        if (spec_setup(&res[p].spec, m, 0, P + G, &rnd[p], &pc, &slots) ||
            engine_open(&e[p], m, &pc, slots, P, g_kv_types))
            return 1;
        e[p].own_attention = g_own_attention;
        alloc_scores(&res[p], S * G);
    }
    for (s = 0; s < S; s++) {
        const int *seg = tokens + (size_t)s * (size_t)(P + G);
        kve_result kr = run_segment(&ref, seg, P, G, NULL, ref_lp, logits, NULL, s, 0);
        if (kr != KVE_OK) {
            fprintf(stderr, "error: full cache, segment %d: %s\n", s, kve_result_string(kr));
            return 1;
        }
        for (p = 0; p < n_pol; p++) {
            double ts = now_seconds();
            kr = run_segment(&e[p], seg, P, G, ref_lp, lp, logits, &res[p], s, s * (P + G));
            if (kr != KVE_OK) {
                fprintf(stderr, "error: %s, segment %d: %s\n", res[p].spec.text, s,
                        kve_result_string(kr));
                return 1;
            }
            res[p].seconds += now_seconds() - ts;
            res[p].tokens_run += P + G;
        }
        progress("segment", s + 1, S, t0, &last);
    }
    engine_close(&ref);
    for (p = 0; p < n_pol; p++) {
        engine_close(&e[p]);
        free(rnd[p].slots);
        free(rnd[p].mark);
    }
    free(logits); free(ref_lp); free(lp);
    return 0;
}

/* ---- output ------------------------------------------------------------------------------- */
static void format_bytes(char *out, size_t n, size_t bytes)
{
    if (bytes >= (size_t)1 << 20) snprintf(out, n, "%.2f MiB", (double)bytes / 1048576.0);
    else snprintf(out, n, "%.1f KiB", (double)bytes / 1024.0);
}

/* "nll (ppl)" over scored tokens with lo <= t < hi */
static void range_cell(char *out, size_t n, const result *r, int lo, int hi)
{
    double sum = 0.0;
    int i, count = 0;
    for (i = 0; i < r->n; i++)
        if (r->t[i] >= lo && r->t[i] < hi) {
            sum += r->nll[i];
            count++;
        }
    if (count == 0) snprintf(out, n, "-");
    else snprintf(out, n, "%.3f (%.2f)", sum / count, exp(sum / count));
}

static void print_stream_table(const model *m, const result *res, int n_pol, int n_tokens, int w)
{
    int b[4], p, k;
    char head[3][32];
    b[0] = 0; b[3] = n_tokens - 1; /* scored tokens: t in [0, n - 1) */
    b[1] = m->seq_len < b[3] ? m->seq_len : b[3];
    b[2] = 4 * m->seq_len < b[3] ? 4 * m->seq_len : b[3];
    for (k = 0; k < 3; k++) snprintf(head[k], sizeof head[k], "[%d,%d)", b[k], b[k + 1]);
    printf("stream mode, %d tokens, training context %d, %s attention: mean NLL (perplexity) of "
           "the next token\n", n_tokens, m->seq_len, g_own_attention ? "engine" : "library");
    printf("%-*s  %-16s %-16s %-16s %12s %9s\n", w, "policy", head[0], head[1], head[2], "peak KV",
           "tok/s");
    for (p = 0; p < n_pol; p++) {
        char c[3][32], kv[32];
        for (k = 0; k < 3; k++) range_cell(c[k], sizeof c[k], &res[p], b[k], b[k + 1]);
        format_bytes(kv, sizeof kv, res[p].peak_bytes);
        printf("%-*s  %-16s %-16s %-16s %12s %9.0f\n", w, res[p].spec.text, c[0], c[1], c[2], kv,
               (double)res[p].tokens_run / res[p].seconds);
    }
}

static double segment_kl(const result *r, int s)
{
    double sum = 0.0;
    int i, count = 0;
    for (i = 0; i < r->n; i++)
        if (r->segment[i] == s) {
            sum += r->kl[i];
            count++;
        }
    return count ? sum / count : 0.0;
}

static void print_prompt_table(const result *res, int n_pol, int P, int G, int w)
{
    int p, i, s, S = res[0].n / G;
    printf("prompt mode, %d segments of %d prompt + %d continuation tokens, %s attention: the %d "
           "continuation predictions per segment, against the full cache\n", S, P, G,
           g_own_attention ? "engine" : "library", G);
    printf("%-*s  %8s %8s %10s %7s %14s %9s\n", w, "policy", "NLL", "PPL", "KL", "top-1",
           "peak KV", "tok/s");
    for (p = 0; p < n_pol; p++) {
        const result *r = &res[p];
        double nll = 0.0, kl = 0.0, top = 0.0;
        char kv[32];
        for (i = 0; i < r->n; i++) {
            nll += r->nll[i];
            kl += r->kl[i];
            top += r->top1[i];
        }
        format_bytes(kv, sizeof kv, r->peak_bytes);
        printf("%-*s  %8.4f %8.3f %10.5f %7.4f %14s %9.0f\n", w, r->spec.text, nll / r->n,
               exp(nll / r->n), kl / r->n, top / r->n, kv, (double)r->tokens_run / r->seconds);
    }
    printf("(peak KV: during the continuation, after compression; the prefill holds the whole "
           "prompt)\n");
    if (n_pol < 2) return;
    printf("\nKL paired by segment against %s: mean difference +- standard error, segments won "
           "(lower KL)\n", res[0].spec.text);
    for (p = 1; p < n_pol; p++) {
        double sum = 0.0, sq = 0.0, mean, se;
        int wins = 0;
        for (s = 0; s < S; s++) {
            double d = segment_kl(&res[p], s) - segment_kl(&res[0], s);
            sum += d;
            sq += d * d;
            wins += d < 0.0;
        }
        mean = sum / S;
        se = S > 1 ? sqrt((sq - S * mean * mean) / (S - 1) / S) : 0.0;
        printf("%-*s  %+10.5f +- %.5f   wins %d/%d\n", w, res[p].spec.text, mean, se, wins, S);
    }
}

static int write_csv(const char *path, const result *res, int n_pol, int prompt)
{
    FILE *f = fopen(path, "w");
    int p, i;
    if (!f) {
        fprintf(stderr, "error: cannot write '%s': %s\n", path, strerror(errno));
        return 1;
    }
    fprintf(f, prompt ? "policy,t,nll,segment,kl,top1\n" : "policy,t,nll\n");
    for (p = 0; p < n_pol; p++)
        for (i = 0; i < res[p].n; i++) {
            fprintf(f, "\"%s\",%d,%.6f", res[p].spec.text, res[p].t[i], res[p].nll[i]);
            if (prompt)
                fprintf(f, ",%d,%.6g,%d", res[p].segment[i], res[p].kl[i], res[p].top1[i]);
            fputc('\n', f);
        }
    return fclose(f) != 0;
}

/* NLL against position, a moving average over `avg` scored tokens, one line per policy */
static int write_svg(const char *path, const result *res, int n_pol, const char *title,
                     int context, int avg)
{
    static const char *color[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                  "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"};
    const double W = 900, L = 60, R = 20, T = 40, PH = 360;
    double xmax = 1, ymax = 1, xstep, ystep;
    int p, i, k;
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "error: cannot write '%s': %s\n", path, strerror(errno));
        return 1;
    }
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
            "fill=\"white\"/>\n<text x=\"%.0f\" y=\"22\" font-size=\"14\">%s</text>\n", W,
            T + PH + 50 + 18 * n_pol, L, title);
    for (k = 0; k * ystep <= ymax; k++)
        fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n", L, W - R,
                SY(k * ystep), SY(k * ystep), L - 6, SY(k * ystep) + 4, k * ystep);
    for (k = 0; k * xstep <= xmax; k++)
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%g</text>\n",
                SX(k * xstep), T + PH + 16, k * xstep);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">token position (NLL: moving "
            "average over %d tokens)</text>\n", (L + W - R) / 2, T + PH + 34, avg);
    fprintf(f, "<text transform=\"translate(16,%.1f) rotate(-90)\" text-anchor=\"middle\">"
            "NLL of the next token (nats)</text>\n", T + PH / 2);
    if (context > 0 && context < xmax)
        fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#888\" "
                "stroke-dasharray=\"4,4\"/><text x=\"%.1f\" y=\"%.1f\" fill=\"#555\">training "
                "context (%d)</text>\n", SX(context), SX(context), T, T + PH, SX(context) + 4,
                T + 14, context);
    for (p = 0; p < n_pol; p++) {
        const result *r = &res[p];
        double sum = 0.0;
        int every = r->n / 1500 + 1;
        /* from the fourth line on dashed, so that a line hidden under a later one still shows */
        const char *dash = p < 3 ? "" : " stroke-dasharray=\"6,4\"";
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"",
                color[p % 8], dash);
        for (i = 0; i < r->n; i++) {
            sum += r->nll[i] - (i >= avg ? r->nll[i - avg] : 0.0);
            if (i % every == 0 || i == r->n - 1)
                fprintf(f, "%.1f,%.1f ", SX(r->t[i]), SY(sum / (i < avg ? i + 1 : avg)));
        }
        fprintf(f, "\"/>\n<line x1=\"%.0f\" x2=\"%.0f\" y1=\"%.0f\" y2=\"%.0f\" stroke=\"%s\" "
                "stroke-width=\"3\"%s/><text x=\"%.0f\" y=\"%.0f\">%s</text>\n", L, L + 24,
                T + PH + 56 + 18 * p, T + PH + 56 + 18 * p, color[p % 8], dash, L + 32,
                T + PH + 60 + 18 * p, r->spec.text);
    }
#undef SX
#undef SY
    fprintf(f, "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" "
            "stroke=\"#444\"/>\n</svg>\n", L, T, W - L - R, PH);
    return fclose(f) != 0;
}

/* ---- main ---------------------------------------------------------------------------------- */
static void usage(void)
{
    fprintf(stderr,
            "usage: compare --model M --tokenizer T --text F [--tokens N] [--mode stream|prompt]\n"
            "               [--prompt-tokens P] [--continuation G]\n"
            "               --policy SPEC [--policy SPEC ...] [--csv OUT.csv] [--svg OUT.svg]\n"
            "               [--kv-type f32|f16|bf16|q8_0] [--k-type T] [--v-type T]\n"
            "               [--attention library|engine]  (who attends: kvevict, the default,\n"
            "                                              or the engine over the K/V buffers)\n"
            "SPEC: full, streamingllm:capacity=256,sinks=4,pos_shift=1,\n"
            "      snapkv:capacity=128,window=8, pyramidkv:capacity=128,window=8,\n"
            "      h2o:capacity=128,window=8, random:capacity=128,window=8\n"
            "      (all parameters: the top of examples/compare.c)\n");
    exit(2);
}

static int int_arg(const char *name, const char *v, int min)
{
    char *end;
    long x = strtol(v, &end, 10);
    if (*end || x < min || x > (1 << 30)) {
        fprintf(stderr, "error: %s needs an integer >= %d, got '%s'\n", name, min, v);
        exit(2);
    }
    return (int)x;
}

int main(int argc, char **argv)
{
    const char *model_path = NULL, *tok_path = NULL, *text_path = NULL, *csv = NULL, *svg = NULL;
    int want = 0, prompt = 0, P = 384, G = 64, n_pol = 0, n, i, *tokens, w = 6;
    result res[MAX_POLICIES];
    model m;
    tokenizer tok;
    char *text, title[512];
    memset(res, 0, sizeof res);
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) usage();
        if (!v) {
            fprintf(stderr, "error: %s needs a value\n", a);
            usage();
        }
        i++;
        if (!strcmp(a, "--model")) model_path = v;
        else if (!strcmp(a, "--tokenizer")) tok_path = v;
        else if (!strcmp(a, "--text")) text_path = v;
        else if (!strcmp(a, "--tokens")) want = int_arg(a, v, 2);
        else if (!strcmp(a, "--prompt-tokens")) P = int_arg(a, v, 1);
        else if (!strcmp(a, "--continuation")) G = int_arg(a, v, 1);
        else if (!strcmp(a, "--csv")) csv = v;
        else if (!strcmp(a, "--svg")) svg = v;
        else if (!strcmp(a, "--kv-type")) {
            if (type_arg(a, v, &g_kv_types[0])) return 2;
            g_kv_types[1] = g_kv_types[0];
        } else if (!strcmp(a, "--k-type")) {
            if (type_arg(a, v, &g_kv_types[0])) return 2;
        } else if (!strcmp(a, "--v-type")) {
            if (type_arg(a, v, &g_kv_types[1])) return 2;
        }
        else if (!strcmp(a, "--attention")) {
            if (strcmp(v, "library") && strcmp(v, "engine")) {
                fprintf(stderr, "error: --attention is library (kvevict attends) or engine (the "
                        "engine's own attention), not '%s'\n", v);
                return 2;
            }
            g_own_attention = !strcmp(v, "engine");
        } else if (!strcmp(a, "--mode")) {
            if (strcmp(v, "stream") && strcmp(v, "prompt")) {
                fprintf(stderr, "error: --mode is stream or prompt, not '%s'\n", v);
                return 2;
            }
            prompt = !strcmp(v, "prompt");
        } else if (!strcmp(a, "--policy")) {
            if (n_pol == MAX_POLICIES) {
                fprintf(stderr, "error: at most %d policies\n", MAX_POLICIES);
                return 2;
            }
            if (spec_parse(v, &res[n_pol].spec)) return 2;
            if ((int)strlen(v) > w) w = (int)strlen(v);
            n_pol++;
        } else {
            fprintf(stderr, "error: unknown option '%s'\n", a);
            usage();
        }
    }
    if (!model_path || !tok_path || !text_path || n_pol == 0) {
        fprintf(stderr, "error: --model, --tokenizer, --text and a --policy are needed\n");
        usage();
    }
    if (model_load(&m, model_path)) return 1;
    if (tok_load(&tok, tok_path, m.vocab_size)) return 1;
    if (!(text = read_file(text_path))) return 1;
    tokens = encode_stories(&tok, text, want, &n);
    if (want > 0 && n < want) fprintf(stderr, "compare: the text has only %d tokens\n", n);
    fprintf(stderr, "compare: %d tokens: \"", n);
    for (i = 1; i < n && i < 12; i++) fputs(tok_decode(&tok, tokens[i - 1], tokens[i]), stderr);
    fprintf(stderr, "...\"\n");
    if (n < 2) {
        fprintf(stderr, "error: the text gives %d tokens, too few to score\n", n);
        return 1;
    }
    if (g_kv_types[0] != KVE_TYPE_F32 || g_kv_types[1] != KVE_TYPE_F32)
        printf("K/V stored as %s (K) and %s (V)\n", g_type_names[g_kv_types[0]],
               g_type_names[g_kv_types[1]]);
    if (prompt) {
        if (run_prompt(&m, res, n_pol, tokens, n, P, G)) return 1;
        print_prompt_table(res, n_pol, P, G, w);
    } else {
        for (i = 0; i < n_pol; i++) {
            if (run_stream(&m, &res[i], tokens, n)) return 1;
            if (res[i].seconds > 2.0)
                fprintf(stderr, "compare: %s done in %.1f s\n", res[i].spec.text, res[i].seconds);
        }
        print_stream_table(&m, res, n_pol, n, w);
    }
    if (csv && write_csv(csv, res, n_pol, prompt)) return 1;
    snprintf(title, sizeof title, "%s: next-token NLL, %s mode, %d tokens",
             strrchr(model_path, '/') ? strrchr(model_path, '/') + 1 : model_path,
             prompt ? "prompt" : "stream", n);
    if (svg && write_svg(svg, res, n_pol, title, prompt ? 0 : m.seq_len, prompt ? 32 : 128))
        return 1;
    for (i = 0; i < n_pol; i++) {
        free(res[i].t); free(res[i].segment); free(res[i].nll); free(res[i].kl); free(res[i].top1);
    }
    free(tokens);
    free(text);
    tok_free(&tok);
    model_free(&m);
    return 0;
}
