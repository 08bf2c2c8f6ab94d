/* needle.h - compare --mode needle: passkey retrieval (needle in a haystack) under each policy.

   build/compare --mode needle --model M --tokenizer T --text F --policy SPEC [--policy SPEC ...]
                 [--context N] [--depths D,D,...] [--trials T] [--seed S] [--decode grow|evict]
                 [--no-space] [--csv OUT.csv] [--svg OUT.svg] [--attention library|engine]
                 [--threads N] [--progress S]

   The task (the format models/stories260K-passkey.bin was fine-tuned on, models/README.md):
       BOS, filler text with the needle
           " The pass key is D D D D D. Remember it. D D D D D is the pass key."
       at a given depth, then " What is the pass key? The pass key is" and the space token that
       precedes the first digit: exactly N tokens (--context, default 256).
   The filler: the stories of --text (separated by lines "<|endoftext|>"), each encoded without
   BOS and joined into one stream, as in training; each task takes a span of it (the passkey
   model's training spans came from the first 80% of data/tinystories-valid-68.txt). Depth d puts
   the needle after floor(d * F + 0.5) of the F filler tokens (0: right after BOS, 1: right before
   the question). Each (depth, trial) draws its own five digits and filler offset from --seed, the
   depth and the trial number, so every policy answers the same tasks, and a task does not change
   when other depths or trials are added.
   Per policy and task: the whole prompt is prefilled into a cache large enough for all of it
   (the full cache's attention), then compressed to the policy's capacity (kve_compress_all), as
   compare's prompt mode does; the first answer token comes from the prefill, the others are
   decoded greedily from the compressed cache. So the first digit is the full cache's: a policy
   that keeps nothing of the needle still gets it, and about 28% of the digits (the first, and
   chance for the others); exact recall is what tells. A cache that cannot hold the prompt
   (StreamingLLM with decode=evict) streams it token by token instead, evicting as it goes.
   The answer reads D, " ", D, " ", D, " ", D, " ", D: nine tokens are generated and the digits
   are read at generated tokens 1, 3, 5, 7 and 9; digit i is right if that token is the digit
   token of the passkey's i-th digit (any other token there is wrong). Exact recall: all five
   right. With --no-space the prompt ends before the space token, the model generates it, and the
   digits are read at generated tokens 2, 4, 6, 8 and 10.

   Use it from compare.c, after engine.h:  if --mode needle is given, return needle_main(argc,
   argv). Every name here starts with needle_. */
#ifndef KVEVICT_EXAMPLES_NEEDLE_H
#define KVEVICT_EXAMPLES_NEEDLE_H

#include "examples/engine.h"

#include <ctype.h>
#include <math.h>

/* tasks run side by side on OpenMP's threads when the build has it (compare's has) */
#if defined(_OPENMP) && !defined(KVEVICT_NO_OPENMP)
#include <omp.h>
#define NEEDLE_OMP(x) _Pragma(x)
#define NEEDLE_THREAD() omp_get_thread_num()
#else
#define NEEDLE_OMP(x)
#define NEEDLE_THREAD() 0
#endif

#define NEEDLE_MAX_POLICIES 64
#define NEEDLE_MAX_DEPTHS 101
#define NEEDLE_MAX_TRIALS 100000
#define NEEDLE_MAX_CONTEXT (1 << 20)
#define NEEDLE_MAX_FILLER (1 << 22)  /* tokens of --text encoded at most: plenty of spans */
#define NEEDLE_MAX_THREADS 1024
#define NEEDLE_DIGITS 5
#define NEEDLE_ANSWER_TOKENS 9       /* D " " D " " D " " D " " D */
#define NEEDLE_PIECE_BYTES 2048      /* a long story is encoded in pieces of about this size */

static const char needle_question_text[] = "What is the pass key? The pass key is";

typedef struct needle_policy {
    policy_spec spec;       /* spec.text points to label */
    char label[256];
    unsigned char *right;   /* [depth][trial]: digits right, 0..5 */
    double seconds;         /* summed over the threads */
} needle_policy;

/* a thread's own caches, one per policy, and buffers */
typedef struct needle_worker {
    engine e[NEEDLE_MAX_POLICIES];
    random_policy rnd[NEEDLE_MAX_POLICIES];
    double seconds[NEEDLE_MAX_POLICIES];
    int *prompt;
    float *logits;
} needle_worker;

typedef struct needle_options {
    const char *model, *tokenizer, *text, *csv, *svg;
    int context, trials, n_depths, n_policies, no_space, own_attention, threads;
    uint64_t seed;
    double depths[NEEDLE_MAX_DEPTHS], progress;
    kve_decode_mode decode;
} needle_options;

/* the tokens a task is made of, fixed by the tokenizer */
typedef struct needle_vocab {
    int space, digit[10];
    int needle_len;         /* tokens of the needle, the same for every passkey */
    int question[64], question_len; /* the question, and the space token unless --no-space */
} needle_vocab;

typedef struct needle_task {
    int digits[NEEDLE_DIGITS];
    int start;              /* where its filler span starts in the stream */
    int at;                 /* filler tokens before the needle */
    uint64_t seed;          /* the random policy's stream for this task */
} needle_task;

/* ---- options ------------------------------------------------------------------------------- */
static void needle_usage(FILE *out)
{
    fprintf(out,
"usage: compare --mode needle --model M --tokenizer T --text F --policy SPEC [--policy SPEC ...]\n"
"               [options]\n"
"Passkey retrieval: a 5-digit passkey hidden at some depth of filler text, then asked for.\n"
"For models/stories260K-passkey.bin (stories260K itself cannot retrieve).\n"
"  --model M, --tokenizer T   a llama2.c checkpoint and its tokenizer\n"
"  --text F           filler: UTF-8 text, stories separated by lines \"<|endoftext|>\", encoded\n"
"                     without BOS and joined; each task takes a span of it\n"
"  --policy SPEC      up to %d; full, streamingllm:capacity=32, snapkv:capacity=32,window=8,\n"
"                     snapkv:capacity=32,window=8,kernel=31, pyramidkv:capacity=32,window=8,\n"
"                     h2o:capacity=32,window=8, random:capacity=32,window=8\n"
"                     (all parameters: the top of examples/compare.c)\n"
"  --context N        prompt tokens, %d <= N <= %d (256): BOS, the filler with the needle,\n"
"                     the question and the space token before the first digit; the smallest N\n"
"                     (no filler) depends on the tokenizer, tok512 gives 79\n"
"  --depths D,D,...   where the needle goes: the share of the filler before it, 0 (right after\n"
"                     BOS) to 1 (right before the question); up to %d (0,0.1,...,1)\n"
"  --trials T         tasks per depth, 1 <= T <= %d (10); each its own passkey and filler span\n"
"  --seed S           the tasks' random seed, an integer >= 0 (1); the same seed, the same tasks\n"
"  --decode grow|evict  for every policy that does not set decode= itself: after the prompt is\n"
"                     compressed the cache grows by the answer (grow, the default) or stays at\n"
"                     its capacity by evicting (evict)\n"
"  --no-space         end the prompt at \"... The pass key is\", before the space token: the\n"
"                     model generates the space, and the token that retrieves the first digit\n"
"                     is not in the prompt (nor in SnapKV's observation window)\n"
"  --csv OUT.csv      one row per policy and task: policy,depth,trial,correct,digits (correct:\n"
"                     1 if all five digits are right; digits: how many are right)\n"
"  --svg OUT.svg      heatmap of exact recall: depth by policy, a panel per method (policies\n"
"                     that differ only in capacity share one, a column per capacity)\n"
"  --attention library|engine    who attends: kvevict (the default) or the engine over the\n"
"                     K/V buffers; the same numbers up to float rounding\n"
"  --threads N        OpenMP threads running tasks side by side, each with its own caches,\n"
"                     0 <= N <= %d: 0 (the default) OpenMP's choice; kvevict's calls stay on\n"
"                     one thread; the numbers do not depend on it (no effect without OpenMP)\n"
"  --progress S       a progress line on stderr every S seconds (5; 0: none)\n"
"  -h, --help         this text\n"
"Per policy and task: the prompt is prefilled whole, compressed to the policy's capacity\n"
"(kve_compress_all; StreamingLLM keeps its sinks and the most recent tokens), and the answer\n"
"decoded greedily: 9 tokens, the digits read at generated tokens 1, 3, 5, 7, 9 (the first comes\n"
"from the prefill). Exact recall: all five digits right. Every argument is checked before any\n"
"file is read. Exit status: 0 done, 1 a file that cannot be read or written or a failed run,\n"
"2 a bad argument (a context too short for the needle and question, or longer than the\n"
"filler, included).\n",
            NEEDLE_MAX_POLICIES, 2, NEEDLE_MAX_CONTEXT, NEEDLE_MAX_DEPTHS, NEEDLE_MAX_TRIALS,
            NEEDLE_MAX_THREADS);
}

/* an integer in [min, max]; message and -1 otherwise */
static int needle_int_arg(const char *name, const char *v, int min, int max)
{
    char *end;
    long x;
    errno = 0;
    x = strtol(v, &end, 10);
    if (end == v || *end || errno == ERANGE || x < min || x > max) {
        fprintf(stderr, "error: %s needs an integer from %d to %d, got '%s'\n", name, min, max, v);
        return -1;
    }
    return (int)x;
}

/* "0,0.25,1": numbers in [0, 1], each once */
static int needle_parse_depths(const char *v, needle_options *o)
{
    const char *p = v;
    o->n_depths = 0;
    for (;;) {
        char *end;
        double d;
        int i;
        errno = 0;
        d = strtod(p, &end);
        if (end == p || (*end && *end != ',') || errno == ERANGE || !isfinite(d) || d < 0.0 ||
            d > 1.0 || isspace((unsigned char)*p)) {
            fprintf(stderr, "error: --depths needs a comma-separated list of numbers from 0 to 1 "
                    "(the share of the filler before the needle), got '%s'\n", v);
            return 1;
        }
        d += 0.0; /* -0 is 0 */
        for (i = 0; i < o->n_depths; i++)
            if (o->depths[i] == d) {
                fprintf(stderr, "error: --depths gives %g twice in '%s'\n", d, v);
                return 1;
            }
        if (o->n_depths == NEEDLE_MAX_DEPTHS) {
            fprintf(stderr, "error: --depths gives more than %d depths\n", NEEDLE_MAX_DEPTHS);
            return 1;
        }
        o->depths[o->n_depths++] = d;
        if (!*end) return 0;
        p = end + 1;
    }
}

/* 0 to go on, 1 after --help (exit 0), 2 after a message (exit 2) */
static int needle_parse_args(int argc, char **argv, needle_options *o, needle_policy *pol)
{
    static const char *const value_options[] = {
        "--model", "--tokenizer", "--text", "--policy", "--context", "--depths", "--trials",
        "--seed", "--decode", "--csv", "--svg", "--attention", "--threads", "--progress",
        "--mode"};
    int i, k, n_values = (int)(sizeof value_options / sizeof value_options[0]);
    memset(o, 0, sizeof *o);
    o->context = 256;
    o->trials = 10;
    o->seed = 1;
    o->threads = 0;
    o->progress = 5.0;
    o->decode = KVE_DECODE_GROW;
    for (i = 0; i <= 10; i++) o->depths[i] = i / 10.0;
    o->n_depths = 11;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            needle_usage(stdout);
            return 1;
        }
        if (!strcmp(a, "--no-space")) {
            o->no_space = 1;
            continue;
        }
        for (k = 0; k < n_values && strcmp(a, value_options[k]); k++) {}
        if (k == n_values) {
            fprintf(stderr, "error: unknown option '%s' for --mode needle (compare --mode needle "
                    "--help lists them)\n", a);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "error: %s needs a value\n", a);
            return 2;
        }
        v = argv[++i];
        if (!strcmp(a, "--model")) o->model = v;
        else if (!strcmp(a, "--tokenizer")) o->tokenizer = v;
        else if (!strcmp(a, "--text")) o->text = v;
        else if (!strcmp(a, "--csv")) o->csv = v;
        else if (!strcmp(a, "--svg")) o->svg = v;
        else if (!strcmp(a, "--mode")) {
            if (strcmp(v, "needle")) {
                fprintf(stderr, "error: --mode is given as needle and as '%s'\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--context")) {
            if ((o->context = needle_int_arg(a, v, 2, NEEDLE_MAX_CONTEXT)) < 0) return 2;
        } else if (!strcmp(a, "--trials")) {
            if ((o->trials = needle_int_arg(a, v, 1, NEEDLE_MAX_TRIALS)) < 0) return 2;
        } else if (!strcmp(a, "--threads")) { /* tasks side by side, 0: OpenMP's choice */
            if ((o->threads = needle_int_arg(a, v, 0, NEEDLE_MAX_THREADS)) < 0) return 2;
        } else if (!strcmp(a, "--depths")) {
            if (needle_parse_depths(v, o)) return 2;
        } else if (!strcmp(a, "--seed")) {
            char *end;
            errno = 0;
            o->seed = strtoull(v, &end, 10);
            if (end == v || *end || errno == ERANGE || !isdigit((unsigned char)v[0])) {
                fprintf(stderr, "error: --seed needs an integer >= 0, got '%s'\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--progress")) {
            char *end;
            errno = 0;
            o->progress = strtod(v, &end);
            if (end == v || *end || errno == ERANGE || !isfinite(o->progress) ||
                o->progress < 0.0) {
                fprintf(stderr, "error: --progress needs seconds, a number >= 0 (0: no progress "
                        "lines), got '%s'\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--decode")) {
            if (strcmp(v, "grow") && strcmp(v, "evict")) {
                fprintf(stderr, "error: --decode is grow or evict, not '%s'\n", v);
                return 2;
            }
            o->decode = !strcmp(v, "grow") ? KVE_DECODE_GROW : KVE_DECODE_EVICT;
        } else if (!strcmp(a, "--attention")) {
            if (strcmp(v, "library") && strcmp(v, "engine")) {
                fprintf(stderr, "error: --attention is library (kvevict attends) or engine (the "
                        "engine's own attention), not '%s'\n", v);
                return 2;
            }
            o->own_attention = !strcmp(v, "engine");
        } else { /* --policy */
            needle_policy *p = &pol[o->n_policies];
            if (o->n_policies == NEEDLE_MAX_POLICIES) {
                fprintf(stderr, "error: at most %d policies\n", NEEDLE_MAX_POLICIES);
                return 2;
            }
            if (strlen(v) >= sizeof p->label) {
                fprintf(stderr, "error: policy spec too long: '%s'\n", v);
                return 2;
            }
            snprintf(p->label, sizeof p->label, "%s", v);
            if (spec_parse(p->label, &p->spec)) return 2;
            o->n_policies++;
        }
    }
    if (!o->model || !o->tokenizer || !o->text || o->n_policies == 0) {
        fprintf(stderr, "error: --model, --tokenizer, --text and a --policy are needed (compare "
                "--mode needle --help)\n");
        return 2;
    }
    if (o->csv && o->svg && !strcmp(o->csv, o->svg)) {
        fprintf(stderr, "error: --csv and --svg are the same file '%s'\n", o->csv);
        return 2;
    }
    for (i = 0; i < o->n_policies; i++) {
        policy_spec *s = &pol[i].spec;
        /* every policy grows or evicts alike, unless it says which itself (as in prompt mode) */
        spec_take_decode(s, o->decode);
    }
    return 0;
}

/* ---- the filler ---------------------------------------------------------------------------- */
/* appends the tokens of text[0..len) (no BOS) to *out, growing it */
static void needle_append(const tokenizer *tok, const char *text, size_t len, int **out, int *n,
                          int *cap)
{
    char *piece = (char *)xmalloc(len + 1);
    memcpy(piece, text, len);
    piece[len] = '\0';
    if ((size_t)*n + len + 2 > (size_t)*cap) {
        int *grown;
        *cap = 2 * (*n + (int)len + 2);
        if (!(grown = (int *)realloc(*out, (size_t)*cap * sizeof(int)))) {
            fprintf(stderr, "error: out of memory\n");
            exit(1);
        }
        *out = grown;
    }
    *n += tok_encode(tok, piece, 0, *out + *n);
    free(piece);
}

/* The filler stream: each story (between lines "<|endoftext|>", surrounding whitespace trimmed)
   encoded without BOS, one after another, up to NEEDLE_MAX_FILLER tokens. A story longer than
   NEEDLE_PIECE_BYTES is encoded in pieces cut after a newline (or a space), since the encoder's
   time grows with the square of its input: a text without separators stays quick. */
static int *needle_encode_filler(const tokenizer *tok, const char *text, int *n_out)
{
    int n = 0, cap = 4096, *out = (int *)xmalloc((size_t)cap * sizeof(int));
    const char *story = text, *line = text;
    for (;;) {
        const char *eol = strchr(line, '\n'), *end = eol ? eol : line + strlen(line);
        size_t len = (size_t)(end - line);
        int sep = len >= 13 && strncmp(line, "<|endoftext|>", 13) == 0 &&
                  (len == 13 || (len == 14 && line[13] == '\r'));
        if (sep || !eol) {
            const char *a = story, *b = sep ? line : end;
            while (a < b && (*a == ' ' || *a == '\n' || *a == '\r' || *a == '\t')) a++;
            while (b > a && (b[-1] == ' ' || b[-1] == '\n' || b[-1] == '\r' || b[-1] == '\t')) b--;
            while (a < b && n < NEEDLE_MAX_FILLER) {
                const char *cut = b;
                if (b - a > NEEDLE_PIECE_BYTES) {
                    const char *c = a + NEEDLE_PIECE_BYTES;
                    while (c > a && c[-1] != '\n') c--;
                    if (c == a) /* no newline: after a space, else at a UTF-8 boundary */
                        for (c = a + NEEDLE_PIECE_BYTES; c > a && c[-1] != ' '; c--) {}
                    if (c == a)
                        for (c = a + NEEDLE_PIECE_BYTES; ((unsigned char)*c & 0xC0) == 0x80; c--) {}
                    cut = c;
                }
                needle_append(tok, a, (size_t)(cut - a), &out, &n, &cap);
                a = cut;
            }
            story = eol ? eol + 1 : end;
        }
        if (!eol || n >= NEEDLE_MAX_FILLER) break;
        line = eol + 1;
    }
    *n_out = n < NEEDLE_MAX_FILLER ? n : NEEDLE_MAX_FILLER;
    return out;
}

/* ---- the task ------------------------------------------------------------------------------ */
/* the needle of a passkey: " The pass key is D D D D D. Remember it. D D D D D is the pass key."
   (its leading space is the encoder's dummy prefix) */
static int needle_encode_needle(const tokenizer *tok, const int *digits, int *out)
{
    char key[2 * NEEDLE_DIGITS], text[160];
    int i;
    for (i = 0; i < NEEDLE_DIGITS; i++) {
        key[2 * i] = (char)('0' + digits[i]);
        key[2 * i + 1] = i + 1 < NEEDLE_DIGITS ? ' ' : '\0';
    }
    snprintf(text, sizeof text, "The pass key is %s. Remember it. %s is the pass key.", key, key);
    /* tok_encode works in the tokenizer's scratch buffer: one thread at a time */
    NEEDLE_OMP("omp critical(needle_tokenizer)")
    i = tok_encode(tok, text, 0, out);
    return i;
}

/* The tokens the task needs: each digit a token of its own after the space token, in the needle
   and in the answer, or a message (the tokenizer is not tok512-like) and nonzero. */
static int needle_vocab_init(const tokenizer *tok, int no_space, needle_vocab *v)
{
    char text[sizeof needle_question_text + 16];
    int buf[160], i, j, n, digits[NEEDLE_DIGITS];
    v->space = tok_lookup(tok, " ");
    for (i = 0; i < 10; i++) {
        char s[2];
        s[0] = (char)('0' + i);
        s[1] = '\0';
        v->digit[i] = tok_lookup(tok, s);
        if (v->digit[i] < 0 || v->space < 0) {
            fprintf(stderr, "error: the tokenizer has no token for %s: needle mode needs the "
                    "digits and the space as tokens of their own (as tok512.bin has)\n",
                    v->space < 0 ? "the space" : s);
            return 1;
        }
    }
    /* the needle: as long for every passkey, with every digit a token of its own */
    v->needle_len = -1;
    for (i = 0; i < 10; i++) {
        int found = 0;
        for (j = 0; j < NEEDLE_DIGITS; j++) digits[j] = (i + j) % 10;
        n = needle_encode_needle(tok, digits, buf);
        for (j = 0; j < n; j++) found += buf[j] == v->digit[(i + found % NEEDLE_DIGITS) % 10];
        if ((v->needle_len >= 0 && n != v->needle_len) || found != 2 * NEEDLE_DIGITS) {
            fprintf(stderr, "error: the tokenizer does not encode the passkey as one token per "
                    "digit (needle mode needs a tok512-like vocabulary)\n");
            return 1;
        }
        v->needle_len = n;
    }
    /* the question: the answer's first digit must follow it and the space token */
    snprintf(text, sizeof text, "%s 7", needle_question_text);
    n = tok_encode(tok, text, 0, buf);
    v->question_len = tok_encode(tok, needle_question_text, 0, v->question);
    if (n != v->question_len + 2 || buf[n - 2] != v->space || buf[n - 1] != v->digit[7] ||
        memcmp(buf, v->question, (size_t)v->question_len * sizeof(int))) {
        fprintf(stderr, "error: the tokenizer does not encode the answer as the space token and "
                "a digit token after the question (needle mode needs a tok512-like "
                "vocabulary)\n");
        return 1;
    }
    if (!no_space) v->question[v->question_len++] = v->space;
    return 0;
}

/* splitmix64: a well-mixed 64-bit stream from any seed */
static uint64_t needle_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* The task of (depth, trial): drawn from the seed, the depth (to a millionth) and the trial
   alone, so that it does not depend on the other depths or trials asked for. F: filler tokens,
   S: tokens in the stream (S >= F). */
static void needle_make_task(uint64_t seed, double depth, int trial, int F, int S, needle_task *t)
{
    uint64_t s = seed, key = (uint64_t)llround(depth * 1e6);
    int i;
    needle_next(&s);
    s ^= needle_next(&key);
    needle_next(&s);
    s ^= (uint64_t)trial * 0xD1B54A32D192ED03ull;
    for (i = 0; i < NEEDLE_DIGITS; i++) t->digits[i] = (int)(needle_next(&s) % 10);
    t->start = (int)(needle_next(&s) % (uint64_t)(S - F + 1));
    t->at = (int)floor(depth * F + 0.5);
    t->seed = needle_next(&s) | 1;
}

/* BOS, the filler span with the needle at its place, the question: N tokens into p */
static int needle_build_prompt(const tokenizer *tok, const needle_vocab *v, const int *stream,
                               int F, const needle_task *t, int *p)
{
    int n = 0, needle[160];
    if (needle_encode_needle(tok, t->digits, needle) != v->needle_len) return -1;
    p[n++] = TOKEN_BOS;
    memcpy(p + n, stream + t->start, (size_t)t->at * sizeof(int));
    n += t->at;
    memcpy(p + n, needle, (size_t)v->needle_len * sizeof(int));
    n += v->needle_len;
    memcpy(p + n, stream + t->start + t->at, (size_t)(F - t->at) * sizeof(int));
    n += F - t->at;
    memcpy(p + n, v->question, (size_t)v->question_len * sizeof(int));
    return n + v->question_len;
}

static int needle_argmax(const float *x, int n)
{
    int i, b = 0;
    for (i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* One task through engine e: prefill the N prompt tokens (token by token when they do not fit,
   which is what StreamingLLM with decode=evict does), compress, decode the answer greedily. The
   count of digits right in *right, the answer's tokens in answer (G of them). */
static kve_result needle_answer(engine *e, const needle_vocab *v, const int *prompt, int N,
                                const needle_task *t, int no_space, float *logits, int *answer,
                                int *right)
{
    int G = NEEDLE_ANSWER_TOKENS + no_space, i, next;
    kve_result kr = KVE_OK;
    kve_cache_reset(&e->cache);
    if (N <= e->capacity) {
        if ((kr = engine_run(e, prompt, N, 0, logits)) == KVE_OK) kr = kve_compress_all(&e->cache);
    } else {
        for (i = 0; i < N && kr == KVE_OK; i++) kr = engine_run(e, &prompt[i], 1, i, logits);
    }
    for (i = 0; i < G && kr == KVE_OK; i++) {
        answer[i] = next = needle_argmax(logits, e->m->vocab_size);
        if (i + 1 < G) kr = engine_run(e, &next, 1, N + i, logits);
    }
    *right = 0;
    for (i = 0; i < NEEDLE_DIGITS && kr == KVE_OK; i++)
        *right += answer[no_space + 2 * i] == v->digit[t->digits[i]];
    return kr;
}

/* ---- output -------------------------------------------------------------------------------- */
/* the spec without its capacity=N: the policies that differ only in capacity share a key */
static void needle_method_key(const char *spec, char *out, size_t n)
{
    const char *colon = strchr(spec, ':'), *item;
    size_t len = 0;
    if (!colon) {
        snprintf(out, n, "%s", spec);
        return;
    }
    len = (size_t)snprintf(out, n, "%.*s", (int)(colon - spec), spec);
    for (item = colon + 1; *item && len < n;) {
        const char *comma = strchr(item, ','), *stop = comma ? comma : item + strlen(item);
        if (strncmp(item, "capacity=", 9) != 0)
            len += (size_t)snprintf(out + len, n - len, "%c%.*s", strchr(out, ':') ? ',' : ':',
                                    (int)(stop - item), item);
        item = comma ? comma + 1 : stop;
    }
}

static void needle_svg_text(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '&') fputs("&amp;", f);
        else if (*s == '<') fputs("&lt;", f);
        else if (*s == '>') fputs("&gt;", f);
        else if (*s == '"') fputs("&quot;", f);
        else fputc(*s, f);
    }
}

/* red (0) - yellow (0.5) - green (1), the usual needle-in-a-haystack scale */
static void needle_color(double x, int rgb[3])
{
    static const int stop[3][3] = {{215, 48, 39}, {254, 224, 139}, {26, 152, 80}};
    int i, k = x < 0.5 ? 0 : 1;
    double t = x < 0.5 ? 2.0 * x : 2.0 * x - 1.0;
    for (i = 0; i < 3; i++)
        rgb[i] = (int)lround(stop[k][i] + t * (stop[k + 1][i] - stop[k][i]));
}

/* Exact recall by depth: a panel per method (the policies that differ only in capacity), a
   column per capacity, a row per depth and one for all depths; each cell coloured by its recall
   and labelled with it in percent. Panels wrap to keep the picture about 1100 pixels wide. */
static int needle_write_svg(FILE *f, const needle_options *o, const needle_policy *pol,
                            const char *title)
{
    const double CW = 48, CH = 20, LABEL = 64, GAP = 28, TOP = 78, HEAD = 40, MAXW = 1100;
    char key[NEEDLE_MAX_POLICIES][256];
    int group[NEEDLE_MAX_POLICIES], order[NEEDLE_MAX_POLICIES], first[NEEDLE_MAX_POLICIES + 1];
    int n_groups = 0, P = o->n_policies, D = o->n_depths, T = o->trials, p, q, g, d, i;
    double panel_x[NEEDLE_MAX_POLICIES], panel_y[NEEDLE_MAX_POLICIES], width = 0, x, y;
    double panel_h = HEAD + CH * (D + 1) + 6, height;
    /* groups in order of first appearance, members by capacity (stable) */
    for (p = 0; p < P; p++) {
        needle_method_key(pol[p].spec.text, key[p], sizeof key[p]);
        for (g = 0; g < p && strcmp(key[g], key[p]); g++) {}
        group[p] = g == p ? n_groups++ : group[g];
    }
    for (g = 0, i = 0; g < n_groups; g++) {
        first[g] = i;
        for (p = 0; p < P; p++)
            if (group[p] == g) {
                for (q = i; q > first[g] && pol[order[q - 1]].spec.capacity > pol[p].spec.capacity;
                     q--)
                    order[q] = order[q - 1];
                order[q] = p;
                i++;
            }
    }
    first[n_groups] = P;
    /* panel positions */
    x = LABEL;
    y = TOP;
    for (g = 0; g < n_groups; g++) {
        int cols = first[g + 1] - first[g];
        double w = cols * CW, tw = 7.0 * (double)strlen(key[order[first[g]]]) + 8;
        if (tw > w) w = tw;
        if (x > LABEL && x + w > MAXW) {
            x = LABEL;
            y += panel_h + GAP;
        }
        panel_x[g] = x;
        panel_y[g] = y;
        x += w + GAP;
        if (x > width) width = x;
    }
    if (width < 720) width = 720;
    height = y + panel_h + 70;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
            "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" "
            "fill=\"white\"/>\n<text x=\"16\" y=\"24\" font-size=\"15\" font-weight=\"bold\">",
            width, height);
    needle_svg_text(f, title);
    fprintf(f, "</text>\n<text x=\"16\" y=\"44\" fill=\"#333\">Cells: exact recall of the 5-digit "
            "passkey, %% of %d trials (the row \"all\": of every depth). Rows: needle depth, the "
            "share of the filler before the needle</text>\n<text x=\"16\" y=\"60\" fill=\"#333\">"
            "(0: right after BOS, 1: right before the question). Columns: capacity, tokens kept "
            "per layer and KV head after the prompt.</text>\n", T);
    for (g = 0; g < n_groups; g++) {
        double px = panel_x[g], py = panel_y[g];
        int cols = first[g + 1] - first[g];
        fprintf(f, "<g class=\"panel\">\n<text x=\"%.1f\" y=\"%.1f\" font-weight=\"bold\">", px,
                py + 14);
        needle_svg_text(f, key[order[first[g]]]);
        fprintf(f, "</text>\n");
        if (px == LABEL) { /* depth labels left of the first panel of a row */
            for (d = 0; d <= D; d++) {
                double cy = py + HEAD + CH * d + (d == D ? 6 : 0) + CH / 2 + 4;
                if (d < D)
                    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n",
                            px - 6, cy, o->depths[d]);
                else
                    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" "
                            "font-weight=\"bold\">all</text>\n", px - 6, cy);
            }
            fprintf(f, "<text transform=\"translate(%.1f,%.1f) rotate(-90)\" "
                    "text-anchor=\"middle\">needle depth</text>\n", 16.0,
                    py + HEAD + CH * D / 2);
        }
        for (i = 0; i < cols; i++) {
            const needle_policy *r = &pol[order[first[g] + i]];
            double cx = px + CW * i;
            char head[32];
            long exact_all = 0;
            if (r->spec.cfg.kind == KVE_POLICY_FULL) snprintf(head, sizeof head, "-");
            else snprintf(head, sizeof head, "%d", (int)r->spec.capacity);
            fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" fill=\"#333\">%s"
                    "</text>\n", cx + CW / 2, py + HEAD - 6, head);
            for (d = 0; d <= D; d++) {
                long exact = 0;
                int rgb[3], t;
                double share, cy = py + HEAD + CH * d + (d == D ? 6 : 0);
                if (d < D) {
                    for (t = 0; t < T; t++) exact += r->right[(size_t)d * T + t] == NEEDLE_DIGITS;
                    exact_all += exact;
                    share = (double)exact / T;
                } else {
                    share = (double)exact_all / ((double)T * D);
                }
                needle_color(share, rgb);
                fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
                        "fill=\"rgb(%d,%d,%d)\" stroke=\"white\"><title>", cx, cy, CW, CH, rgb[0],
                        rgb[1], rgb[2]);
                needle_svg_text(f, r->spec.text);
                if (d < D) fprintf(f, ", depth %g: ", o->depths[d]);
                else fprintf(f, ", all depths: ");
                fprintf(f, "%.1f%% exact recall</title></rect><text x=\"%.1f\" y=\"%.1f\" "
                        "text-anchor=\"middle\" font-size=\"11\" fill=\"%s\">%.0f</text>\n",
                        100.0 * share, cx + CW / 2, cy + CH / 2 + 4,
                        0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] < 140 ? "white" : "black",
                        100.0 * share);
            }
        }
        fprintf(f, "</g>\n");
    }
    /* the colour scale */
    y = height - 36;
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\">exact recall (%%):</text>\n", LABEL, y + 14);
    for (i = 0; i <= 10; i++) {
        int rgb[3];
        needle_color(i / 10.0, rgb);
        fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"30\" height=\"18\" fill=\"rgb(%d,%d,%d)\"/>"
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"11\" "
                "fill=\"%s\">%d</text>\n", LABEL + 110 + 30 * i, y, rgb[0], rgb[1], rgb[2],
                LABEL + 125 + 30 * i, y + 13,
                0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] < 140 ? "white" : "black",
                10 * i);
    }
    fprintf(f, "</svg>\n");
    return ferror(f) != 0;
}

static int needle_write_csv(FILE *f, const needle_options *o, const needle_policy *pol)
{
    int p, d, t;
    fprintf(f, "policy,depth,trial,correct,digits\n");
    for (p = 0; p < o->n_policies; p++)
        for (d = 0; d < o->n_depths; d++)
            for (t = 0; t < o->trials; t++) {
                int right = pol[p].right[(size_t)d * o->trials + t];
                fprintf(f, "\"%s\",%g,%d,%d,%d\n", pol[p].spec.text, o->depths[d], t,
                        right == NEEDLE_DIGITS, right);
            }
    return ferror(f) != 0;
}

/* exact recall and digit accuracy of a policy over depths [d0, d1) */
static void needle_accuracy(const needle_options *o, const needle_policy *r, int d0, int d1,
                            double *exact, double *digits)
{
    long e = 0, g = 0, n = 0;
    int d, t;
    for (d = d0; d < d1; d++)
        for (t = 0; t < o->trials; t++) {
            int right = r->right[(size_t)d * o->trials + t];
            e += right == NEEDLE_DIGITS;
            g += right;
            n++;
        }
    *exact = n ? (double)e / n : 0.0;
    *digits = n ? (double)g / (NEEDLE_DIGITS * n) : 0.0;
}

static void needle_print_table(const needle_options *o, const needle_policy *pol,
                               const needle_vocab *v, const char *model_name, double seconds)
{
    int p, d, w = 6, F = o->context - 1 - v->needle_len - v->question_len;
    for (p = 0; p < o->n_policies; p++)
        if ((int)strlen(pol[p].spec.text) > w) w = (int)strlen(pol[p].spec.text);
    printf("needle mode (%s): passkey retrieval, context %d tokens (BOS + %d filler + needle %d "
           "+ question %d%s), %d depth%s x %d trial%s, seed %llu, decode=%s, %s attention\n",
           model_name, o->context, F, v->needle_len, v->question_len,
           o->no_space ? ", no space token" : " with the space token", o->n_depths,
           o->n_depths == 1 ? "" : "s", o->trials, o->trials == 1 ? "" : "s",
           (unsigned long long)o->seed, o->decode == KVE_DECODE_GROW ? "grow" : "evict",
           o->own_attention ? "engine" : "library");
    printf("exact: all 5 digits right, %%; digits: digits right, %%; time: seconds on the policy "
           "(summed over threads); then exact recall (%%) by depth (the share of the filler "
           "before the needle)\n");
    printf("%-*s  %6s %6s %7s |", w, "policy", "exact", "digits", "time s");
    for (d = 0; d < o->n_depths; d++) printf(" %4g", o->depths[d]);
    printf("\n");
    for (p = 0; p < o->n_policies; p++) {
        double exact, digits;
        needle_accuracy(o, &pol[p], 0, o->n_depths, &exact, &digits);
        printf("%-*s  %6.1f %6.1f %7.2f |", w, pol[p].spec.text, 100.0 * exact, 100.0 * digits,
               pol[p].seconds);
        for (d = 0; d < o->n_depths; d++) {
            needle_accuracy(o, &pol[p], d, d + 1, &exact, &digits);
            printf(" %4.0f", 100.0 * exact);
        }
        printf("\n");
    }
    printf("elapsed %.1f s: %d polic%s x %d task%s\n", seconds, o->n_policies,
           o->n_policies == 1 ? "y" : "ies", o->n_depths * o->trials,
           o->n_depths * o->trials == 1 ? "" : "s");
}

static FILE *needle_open_output(const char *option, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f)
        fprintf(stderr, "error: cannot write %s file '%s': %s\n", option, path, strerror(errno));
    return f;
}

/* ---- the run ------------------------------------------------------------------------------- */
/* The full cache on up to 5 tasks spread over the depths, before the long run: a model that
   cannot retrieve (stories260K.bin instead of the passkey model) shows at once. The exact
   recalls in *exact of *tasks; nonzero when the run fails. */
static int needle_probe(const model *m, const tokenizer *tok, const needle_vocab *v,
                        const needle_options *o, const int *stream, int S, int *exact, int *tasks)
{
    kve_policy_config full;
    engine e;
    int F = o->context - 1 - v->needle_len - v->question_len, k, n = o->n_depths < 5 ? o->n_depths
                                                                                     : 5;
    int *prompt = (int *)xmalloc((size_t)o->context * sizeof(int)), answer[16], right, status = 1;
    float *logits = (float *)xmalloc((size_t)m->vocab_size * sizeof(float));
    memset(&full, 0, sizeof full);
    *exact = *tasks = 0;
    if (engine_open(&e, m, &full, o->context + NEEDLE_ANSWER_TOKENS + 1, o->context, NULL, 1))
        goto done;
    e.own_attention = o->own_attention;
    for (k = 0; k < n; k++) {
        needle_task t;
        kve_result kr;
        int d = n > 1 ? k * (o->n_depths - 1) / (n - 1) : 0;
        needle_make_task(o->seed, o->depths[d], 0, F, S, &t);
        if (needle_build_prompt(tok, v, stream, F, &t, prompt) != o->context) {
            fprintf(stderr, "error: a passkey's needle does not have %d tokens\n", v->needle_len);
            goto done;
        }
        kr = needle_answer(&e, v, prompt, o->context, &t, o->no_space, logits, answer, &right);
        if (kr != KVE_OK) {
            fprintf(stderr, "error: full cache: %s\n", kve_result_string(kr));
            goto done;
        }
        *exact += right == NEEDLE_DIGITS;
        ++*tasks;
    }
    status = 0;
done:
    engine_close(&e);
    free(prompt);
    free(logits);
    return status;
}

/* One task, every policy, on a worker's caches: results into pol[p].right[k]. Nonzero after a
   message when a policy fails. */
static int needle_task_run(const needle_options *o, const needle_vocab *v, const tokenizer *tok,
                           const int *stream, int S, needle_policy *pol, needle_worker *w, int k)
{
    int F = o->context - 1 - v->needle_len - v->question_len, N = o->context, p, answer[16];
    int d = k / o->trials, t = k % o->trials;
    needle_task task;
    needle_make_task(o->seed, o->depths[d], t, F, S, &task);
    if (needle_build_prompt(tok, v, stream, F, &task, w->prompt) != N) {
        fprintf(stderr, "error: a passkey's needle does not have %d tokens\n", v->needle_len);
        return 1;
    }
    for (p = 0; p < o->n_policies; p++) {
        double t0 = now_seconds();
        int right;
        kve_result kr;
        /* the random policy's choice depends on the task alone, not on the tasks run before */
        w->rnd[p].rng = (pol[p].spec.seed * 0x9E3779B97F4A7C15ull) ^ task.seed;
        if (!w->rnd[p].rng) w->rnd[p].rng = 1;
        kr = needle_answer(&w->e[p], v, w->prompt, N, &task, o->no_space, w->logits, answer,
                           &right);
        if (kr != KVE_OK) {
            fprintf(stderr, "error: %s, depth %g, trial %d: %s\n", pol[p].spec.text,
                    o->depths[d], t, kve_result_string(kr));
            return 1;
        }
        pol[p].right[k] = (unsigned char)right;
        w->seconds[p] += now_seconds() - t0;
    }
    return 0;
}

/* Every policy on every (depth, trial), task k = depth * trials + trial: results into
   pol[p].right. Each thread has its own caches; a task's result does not depend on the thread
   that runs it or on the tasks it ran before. */
static int needle_run(const model *m, const tokenizer *tok, const needle_vocab *v,
                      const needle_options *o, needle_policy *pol, const int *stream, int S)
{
    int N = o->context, P = o->n_policies, K = o->n_depths * o->trials, n_workers = 1, i, p;
    int status = 1, failed = 0, done = 0;
    needle_worker *workers;
    double start = now_seconds(), last = start;
#if defined(_OPENMP) && !defined(KVEVICT_NO_OPENMP)
    n_workers = o->threads ? o->threads : omp_get_max_threads();
#endif
    if (n_workers > K) n_workers = K;
    workers = (needle_worker *)calloc((size_t)n_workers, sizeof *workers);
    if (!workers) {
        fprintf(stderr, "error: out of memory\n");
        return 1;
    }
    for (p = 0; p < P; p++) pol[p].right = (unsigned char *)xmalloc((size_t)K);
    for (i = 0; i < n_workers; i++) {
        needle_worker *w = &workers[i];
        w->prompt = (int *)xmalloc((size_t)N * sizeof(int));
        w->logits = (float *)xmalloc((size_t)m->vocab_size * sizeof(float));
        for (p = 0; p < P; p++) {
            kve_policy_config pc;
            int32_t slots;
            /* a prompt-mode cache: the whole prompt, then the answer (grow); kvevict's calls on
               one thread, the threads being busy with tasks */
            if (spec_setup(&pol[p].spec, m, 0, N + NEEDLE_ANSWER_TOKENS + 1, &w->rnd[p], &pc,
                           &slots) ||
                engine_open(&w->e[p], m, &pc, slots, N, NULL, 1))
                goto done;
            w->e[p].own_attention = o->own_attention;
        }
    }
    NEEDLE_OMP("omp parallel for schedule(dynamic) num_threads(n_workers)")
    for (i = 0; i < K; i++) {
        int stop, count;
        NEEDLE_OMP("omp atomic read")
        stop = failed;
        if (stop) continue;
        if (needle_task_run(o, v, tok, stream, S, pol, &workers[NEEDLE_THREAD()], i)) {
            NEEDLE_OMP("omp atomic write")
            failed = 1;
            continue;
        }
        NEEDLE_OMP("omp atomic capture")
        count = ++done;
        if (o->progress > 0.0 && NEEDLE_THREAD() == 0 && count < K &&
            now_seconds() - last >= o->progress) {
            double now = now_seconds();
            fprintf(stderr, "compare: needle: %d/%d tasks, %.1f s elapsed, about %.1f s left\n",
                    count, K, now - start, (now - start) / count * (K - count));
            last = now;
        }
    }
    if (failed) goto done;
    for (p = 0; p < P; p++)
        for (i = 0; i < n_workers; i++) pol[p].seconds += workers[i].seconds[p];
    status = 0;
done:
    for (i = 0; i < n_workers; i++) {
        for (p = 0; p < P; p++) {
            engine_close(&workers[i].e[p]);
            free(workers[i].rnd[p].slots);
            free(workers[i].rnd[p].mark);
        }
        free(workers[i].prompt);
        free(workers[i].logits);
    }
    free(workers);
    return status;
}

static int needle_main(int argc, char **argv)
{
    static needle_policy pol[NEEDLE_MAX_POLICIES];
    needle_options o;
    needle_vocab v;
    model m;
    tokenizer tok;
    FILE *csv = NULL, *svg = NULL;
    char *text = NULL, title[512];
    const char *model_name;
    int *stream = NULL, S = 0, F, i, status, probe_exact, probe_tasks, full_index = -1;
    double start;
    memset(pol, 0, sizeof pol);
    memset(&m, 0, sizeof m);
    memset(&tok, 0, sizeof tok);

    /* 1. the arguments, every one, before any file is touched */
    if ((status = needle_parse_args(argc, argv, &o, pol)) != 0) return status == 1 ? 0 : 2;
    status = 1;

    /* 2. the files: the inputs looked at before the slow loading, the outputs created */
    if (input_file_size("model", o.model) < 0 || input_file_size("tokenizer", o.tokenizer) < 0 ||
        input_file_size("text", o.text) < 0)
        return 1;
    if (o.csv && !(csv = needle_open_output("--csv", o.csv))) goto done;
    if (o.svg && !(svg = needle_open_output("--svg", o.svg))) goto done;
    if (model_load(&m, o.model) || tok_load(&tok, o.tokenizer, m.vocab_size)) goto done;
    if (needle_vocab_init(&tok, o.no_space, &v)) {
        status = 2;
        goto done;
    }
    F = o.context - 1 - v.needle_len - v.question_len;
    if (F < 0) {
        fprintf(stderr, "error: --context %d is too short for the needle and the question: the "
                "smallest is %d (BOS + needle %d + question %d tokens, no filler)\n", o.context,
                1 + v.needle_len + v.question_len, v.needle_len, v.question_len);
        status = 2;
        goto done;
    }
    if (o.context > m.seq_len)
        fprintf(stderr, "compare: needle: warning: --context %d is beyond the model's training "
                "context (%d tokens)\n", o.context, m.seq_len);
    if (!(text = read_text(o.text))) goto done;
    stream = needle_encode_filler(&tok, text, &S);
    if (S < F) {
        fprintf(stderr, "error: text '%s' gives %d tokens of filler, fewer than the %d a "
                "%d-token context needs (%d - BOS - needle %d - question %d); give a longer text "
                "or a smaller --context\n", o.text, S, F, o.context, o.context, v.needle_len,
                v.question_len);
        status = 2;
        goto done;
    }
    model_name = strrchr(o.model, '/') ? strrchr(o.model, '/') + 1 : o.model;

    {   /* the first task's needle and question, decoded: what the model reads */
        needle_task t;
        int *prompt = (int *)xmalloc((size_t)o.context * sizeof(int)), at;
        needle_make_task(o.seed, o.depths[0], 0, F, S, &t);
        needle_build_prompt(&tok, &v, stream, F, &t, prompt);
        at = 1 + t.at;
        fprintf(stderr, "compare: needle: %d-token prompts: BOS, %d filler tokens (from %d), "
                "the needle:\n  \"", o.context, F, S);
        for (i = at; i < at + v.needle_len; i++)
            fputs(tok_decode(&tok, prompt[i - 1], prompt[i]), stderr);
        fprintf(stderr, "\"\n  at depth %g (after %d filler tokens), and the question:\n  \"",
                o.depths[0], t.at);
        for (i = o.context - v.question_len; i < o.context; i++)
            fputs(tok_decode(&tok, prompt[i - 1], prompt[i]), stderr);
        fprintf(stderr, "\"\n");
        free(prompt);
    }

    /* 3. a model that cannot retrieve shows before the long run */
    if (needle_probe(&m, &tok, &v, &o, stream, S, &probe_exact, &probe_tasks)) goto done;
    if (2 * probe_exact < probe_tasks)
        fprintf(stderr, "compare: needle: warning: the full cache recalls the passkey in only %d "
                "of %d tasks: model '%s' probably cannot retrieve (stories260K.bin instead of "
                "stories260K-passkey.bin?), or the filler '%s' is unlike the stories it was "
                "tuned on; every policy will score near zero\n", probe_exact, probe_tasks,
                model_name, o.text);

    /* 4. the run */
    start = now_seconds();
    if (needle_run(&m, &tok, &v, &o, pol, stream, S)) goto done;
    needle_print_table(&o, pol, &v, model_name, now_seconds() - start);
    for (i = 0; i < o.n_policies && full_index < 0; i++)
        if (pol[i].spec.cfg.kind == KVE_POLICY_FULL) full_index = i;
    if (full_index >= 0) {
        double exact, digits;
        needle_accuracy(&o, &pol[full_index], 0, o.n_depths, &exact, &digits);
        /* the passkey model recalls every task on TinyStories filler; well below that, the
           model or the filler is the cause, not the policies */
        if (exact < 0.95)
            printf("warning: the full cache recalls only %.1f%% of the passkeys: model '%s' "
                   "probably cannot retrieve (stories260K.bin instead of "
                   "stories260K-passkey.bin?), or the filler '%s' is unlike the stories it was "
                   "tuned on, so the policies' numbers say little\n", 100.0 * exact, model_name,
                   o.text);
    }
    if (csv && needle_write_csv(csv, &o, pol)) {
        fprintf(stderr, "error: cannot write --csv file '%s'\n", o.csv);
        goto done;
    }
    snprintf(title, sizeof title, "Passkey retrieval, context %d tokens: %s", o.context,
             model_name);
    if (svg && needle_write_svg(svg, &o, pol, title)) {
        fprintf(stderr, "error: cannot write --svg file '%s'\n", o.svg);
        goto done;
    }
    status = 0;
done:
    /* an output file is closed (and its write checked) or, when the run failed, removed */
    if (csv && fclose(csv) != 0 && status == 0) {
        fprintf(stderr, "error: cannot write --csv file '%s'\n", o.csv);
        status = 1;
    }
    if (svg && fclose(svg) != 0 && status == 0) {
        fprintf(stderr, "error: cannot write --svg file '%s'\n", o.svg);
        status = 1;
    }
    if (status != 0) {
        if (csv) remove(o.csv);
        if (svg) remove(o.svg);
    }
    for (i = 0; i < o.n_policies; i++) free(pol[i].right);
    free(stream);
    free(text);
    tok_free(&tok);
    model_free(&m);
    return status;
}

#endif /* KVEVICT_EXAMPLES_NEEDLE_H */
