/* generate.c - endless text from a prompt, with a KV cache of fixed size (StreamingLLM default).

   build/generate --model M --tokenizer T [--prompt TEXT] [--steps N] [--policy SPEC]
                  [--temp T] [--topp P] [--seed S]

   Prints the tokens as they come. The cache holds at most `capacity` tokens per layer, whatever
   the length of the run: 100,000 tokens (--steps 100000) use the memory of 100, and --steps 0 runs
   until interrupted. Positions keep counting past the model's training context; StreamingLLM's
   pos-shift keeps the distances the model sees inside it. Any policy of compare works here
   (SnapKV, PyramidKV and H2O evict as they go; full needs --steps > 0 and grows). Arguments are
   checked before any file is read; exit status 2 for bad arguments, 1 for a file or run error. */
#define KVEVICT_IMPLEMENTATION
#include "kvevict.h"
#include "examples/engine.h"

#include <ctype.h>

typedef struct prob_index { double p; int i; } prob_index;

static int by_prob(const void *a, const void *b)
{
    double x = ((const prob_index *)a)->p, y = ((const prob_index *)b)->p;
    return (x < y) - (x > y);
}

/* temp 0: the most likely token; else a draw from the smallest set of most likely tokens whose
   probabilities (of softmax(logits / temp)) add up to topp */
static int sample(const float *logits, int n, double temp, double topp, prob_index *pi,
                  uint64_t *rng)
{
    double mx = logits[0], sum = 0.0, cum = 0.0, r;
    int i, m;
    for (i = 1; i < n; i++) mx = logits[i] > mx ? logits[i] : mx;
    if (temp <= 0.0) {
        for (i = 0; logits[i] != mx; i++) {}
        return i;
    }
    for (i = 0; i < n; i++) {
        pi[i].p = exp(((double)logits[i] - mx) / temp);
        pi[i].i = i;
        sum += pi[i].p;
    }
    qsort(pi, (size_t)n, sizeof *pi, by_prob);
    for (m = 0; m < n && (cum < topp * sum || topp <= 0.0); m++) cum += pi[m].p;
    r = (double)random_u32(rng) / 4294967296.0 * cum;
    for (i = 0; i < m - 1; i++)
        if ((r -= pi[i].p) < 0.0) break;
    return pi[i].i;
}

/* peak resident memory in kB, where the system tells (Linux); -1 elsewhere */
static long peak_rss_kb(void)
{
    char line[256];
    long kb = -1;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %ld", &kb) == 1) break;
    fclose(f);
    return kb;
}

static void print_piece(const char *p)
{
    /* a lone byte that is not printable (part of a UTF-8 character is fine) is left out */
    if (p[0] && !p[1] && !isprint((unsigned char)p[0]) && !isspace((unsigned char)p[0]) &&
        (unsigned char)p[0] < 0x80)
        return;
    fputs(p, stdout);
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: generate --model M --tokenizer T [--prompt TEXT] [--steps N] [--policy SPEC]\n"
            "                [--temp T] [--topp P] [--seed S]\n"
            "  --steps N     tokens to generate after the prompt (1000; 0 = until interrupted)\n"
            "  --policy SPEC the cache policy (streamingllm:capacity=256,sinks=4); any policy of\n"
            "                compare that evicts (decode=grow cannot stay within a capacity)\n"
            "  --temp T      sampling temperature, a finite number >= 0 (1.0; 0 = greedy)\n"
            "  --topp P      nucleus sampling: draw from the most likely tokens whose\n"
            "                probabilities add up to P, 0 < P <= 1 (0.9; 1 = all tokens)\n"
            "  --seed S      the sampler's seed, an integer from 0 to 2^64-1 (1)\n"
            "exit status: 0 done, 1 a file or the run failed, 2 bad arguments\n");
}

/* a finite number in [lo, hi] (lo itself excluded if lo_open); message and nonzero otherwise */
static int number_arg(const char *name, const char *v, double lo, int lo_open, double hi,
                      const char *meaning, double *out)
{
    char *end;
    double x;
    errno = 0;
    x = strtod(v, &end);
    if (end == v || *end || errno == ERANGE || !isfinite(x) || x < lo || (lo_open && x == lo) ||
        x > hi) {
        fprintf(stderr, "error: %s needs %s, got '%s'\n", name, meaning, v);
        return 2;
    }
    *out = x;
    return 0;
}

/* a decimal integer in [0, max], no sign; message and nonzero otherwise */
static int count_arg(const char *name, const char *v, unsigned long long max, const char *meaning,
                     unsigned long long *out)
{
    char *end;
    unsigned long long x;
    errno = 0;
    x = strtoull(v, &end, 10);
    /* strtoull would take "-1" as 2^64-1 and skip leading spaces */
    if (v[0] < '0' || v[0] > '9' || *end || errno == ERANGE || x > max) {
        fprintf(stderr, "error: %s needs %s, got '%s'\n", name, meaning, v);
        return 2;
    }
    *out = x;
    return 0;
}

/* positions end at KVE_MAX_POSITION; half of it leaves room for any prompt */
#define MAX_STEPS ((unsigned long long)KVE_MAX_POSITION / 2)

int main(int argc, char **argv)
{
    static const char *const options[] = {"--model", "--tokenizer", "--prompt", "--policy",
                                          "--steps", "--temp", "--topp", "--seed"};
    const char *model_path = NULL, *tok_path = NULL, *prompt = "";
    const char *policy = "streamingllm:capacity=256,sinks=4";
    long long steps = 1000, step = 0;
    unsigned long long count;
    double temp = 1.0, topp = 0.9, t0, seconds;
    uint64_t rng = 1;
    int i, np = 0, *pt = NULL, token, next, status = 1;
    int64_t pos = 0;
    model m;
    tokenizer tok;
    policy_spec spec;
    random_policy rnd;
    kve_policy_config pc;
    int32_t slots, full_slots;
    engine e;
    kve_result r = KVE_OK;
    float *logits = NULL;
    prob_index *pi = NULL;
    memset(&m, 0, sizeof m);
    memset(&tok, 0, sizeof tok);
    memset(&rnd, 0, sizeof rnd);
    memset(&e, 0, sizeof e);
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        size_t k, n_options = sizeof options / sizeof options[0];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        for (k = 0; k < n_options && strcmp(a, options[k]); k++) {}
        if (k == n_options) {
            fprintf(stderr, "error: unknown option '%s' (generate --help lists them)\n", a);
            return 2;
        }
        if (!v) {
            fprintf(stderr, "error: %s needs a value\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--model")) model_path = v;
        else if (!strcmp(a, "--tokenizer")) tok_path = v;
        else if (!strcmp(a, "--prompt")) prompt = v;
        else if (!strcmp(a, "--policy")) policy = v;
        else if (!strcmp(a, "--steps")) {
            if (count_arg(a, v, MAX_STEPS, "an integer from 0 (endless) to 2251799813685248",
                          &count))
                return 2;
            steps = (long long)count;
        } else if (!strcmp(a, "--temp")) {
            if (number_arg(a, v, 0.0, 0, HUGE_VAL, "a finite number >= 0 (0: greedy)", &temp))
                return 2;
        } else if (!strcmp(a, "--topp")) {
            if (number_arg(a, v, 0.0, 1, 1.0, "a number above 0 and at most 1", &topp)) return 2;
        } else if (!strcmp(a, "--seed")) {
            if (count_arg(a, v, UINT64_MAX, "an integer from 0 to 18446744073709551615", &count))
                return 2;
            rng = (uint64_t)count * 0x9E3779B97F4A7C15ull + 1;
        }
    }
    if (!model_path || !tok_path) {
        fprintf(stderr, "error: --model and --tokenizer are needed (generate --help)\n");
        return 2;
    }
    if (spec_parse(policy, &spec) || spec_check_stream(&spec)) return 2;
    if (spec.cfg.kind == KVE_POLICY_FULL && steps == 0) {
        fprintf(stderr, "error: the full cache grows with every token: give --steps N\n");
        return 2;
    }
    /* both files looked at before the slow loading */
    if (input_file_size("model", model_path) < 0 || input_file_size("tokenizer", tok_path) < 0)
        return 1;
    if (model_load(&m, model_path)) return 1;
    if (tok_load(&tok, tok_path, m.vocab_size)) goto done;
    pt = (int *)xmalloc((strlen(prompt) + 3) * sizeof(int));
    np = tok_encode(&tok, prompt, 1, pt);
    full_slots = np + steps < KVE_MAX_CAPACITY ? (int32_t)(np + steps) : KVE_MAX_CAPACITY;
    if (spec_setup(&spec, &m, 1, full_slots, &rnd, &pc, &slots)) goto done;
    /* generate is one sequence through a tiny model: threads would cost more than they share */
    if (engine_open(&e, &m, &pc, slots, np <= slots ? np : 1, NULL, 1)) goto done;
    logits = (float *)xmalloc((size_t)m.vocab_size * sizeof(float));
    pi = (prob_index *)xmalloc((size_t)m.vocab_size * sizeof(prob_index));

    /* the prompt: one prefill (then compression, for the policies that do it) if it fits in the
       cache, else token by token with the policy evicting as it goes */
    t0 = now_seconds();
    if (np <= slots) {
        if ((r = engine_run(&e, pt, np, 0, logits)) == KVE_OK) r = kve_compress_all(&e.cache);
    } else {
        for (i = 0; i < np && r == KVE_OK; i++) r = engine_run(&e, &pt[i], 1, i, logits);
    }
    for (i = 1; i < np; i++) print_piece(tok_decode(&tok, pt[i - 1], pt[i]));
    token = pt[np - 1];
    pos = np;
    for (step = 0; r == KVE_OK && (steps == 0 || step < steps); step++) {
        next = sample(logits, m.vocab_size, temp, topp, pi, &rng);
        if (next == TOKEN_BOS || next == TOKEN_EOS) fputs("\n", stdout); /* a story ends */
        else print_piece(tok_decode(&tok, token, next));
        fflush(stdout);
        r = engine_run(&e, &next, 1, pos++, logits);
        token = next;
    }
    printf("\n");
    fflush(stdout);
    if (r != KVE_OK) {
        fprintf(stderr, "error: at position %lld: %s\n", (long long)pos - 1, kve_result_string(r));
        goto done;
    }
    seconds = now_seconds() - t0;
    fprintf(stderr, "generate: %lld tokens after a %d-token prompt, %.0f tok/s; KV cache: %zu "
            "bytes in use, %d slots per layer and KV head (%s); peak resident memory: %ld kB\n",
            step, np, (double)(pos) / seconds, kve_bytes_in_use(&e.cache), slots, spec.text,
            peak_rss_kb());
    status = 0;
done:
    engine_close(&e);
    free(rnd.slots); free(rnd.mark); free(pt); free(logits); free(pi);
    tok_free(&tok);
    model_free(&m);
    return status;
}
