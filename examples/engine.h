/* engine.h - a small llama2.c-format inference engine on kvevict, shared by the examples.

   It loads a llama2.c checkpoint (shared or separate classifier, grouped-query attention) and its
   tokenizer, and runs the forward pass. kvevict does RoPE, the KV cache and attention: the calls
   in engine_run() marked "kvevict" are the whole integration, the part to copy into an engine.
   An engine that keeps its own attention kernel copies engine_attention() instead (set
   own_attention after engine_open): kvevict then only stores, scores and evicts, and the engine
   attends over the K/V buffers itself, with the same results.

   Use it from one .c file, after kvevict's implementation:
       #define KVEVICT_IMPLEMENTATION
       #include "kvevict.h"
       #include "examples/engine.h"
   Everything here is static. Functions print a message to stderr and return nonzero on error.
   Files are read as little-endian, like llama2.c writes them. */
#ifndef KVEVICT_EXAMPLES_ENGINE_H
#define KVEVICT_EXAMPLES_ENGINE_H

#include "kvevict.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(__unix__) || defined(__APPLE__)
#include <sys/stat.h>
#endif

static void *xmalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "error: out of memory (%zu bytes)\n", bytes);
        exit(1);
    }
    return p;
}

static double now_seconds(void)
{
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The size of an input file (what: "model", "tokenizer", "text"), or -1 after a message naming
   the file and the problem. Checked before opening: a directory opens on some systems and then
   gives a nonsense size, and opening a FIFO waits for a writer. */
static long long input_file_size(const char *what, const char *path)
{
#if defined(__unix__) || defined(__APPLE__)
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "error: cannot open %s '%s': %s\n", what, path, strerror(errno));
        return -1;
    }
    if (S_ISDIR(st.st_mode)) {
        fprintf(stderr, "error: %s '%s' is a directory, not a file\n", what, path);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        fprintf(stderr, "error: %s '%s' is %s, not a regular file (give a file on disk)\n", what,
                path, S_ISFIFO(st.st_mode) ? "a FIFO (named pipe)" : "a device or socket");
        return -1;
    }
    if (st.st_size == 0) {
        fprintf(stderr, "error: %s '%s' is empty\n", what, path);
        return -1;
    }
    return (long long)st.st_size;
#else
    FILE *f = fopen(path, "rb");
    long size = -1;
    if (!f) {
        fprintf(stderr, "error: cannot open %s '%s': %s\n", what, path, strerror(errno));
        return -1;
    }
    if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
    fclose(f);
    if (size < 0) fprintf(stderr, "error: cannot read %s '%s'\n", what, path);
    else if (size == 0) fprintf(stderr, "error: %s '%s' is empty\n", what, path);
    return size > 0 ? (long long)size : -1;
#endif
}

/* ---- the checkpoint ------------------------------------------------------------------------- */
/* The length of the valid UTF-8 sequence at s (1 to 4 bytes), or 0 if none starts there */
static int utf8_sequence(const unsigned char *s, long long left)
{
    int n, i;
    if (s[0] < 0x80) return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf) n = 2;
    else if (s[0] >= 0xe0 && s[0] <= 0xef) n = 3;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4) n = 4;
    else return 0; /* a continuation byte, an overlong 2-byte lead, or past U+10FFFF */
    if (left < n) return 0;
    for (i = 1; i < n; i++)
        if ((s[i] & 0xc0) != 0x80) return 0;
    /* overlong 3/4-byte forms, UTF-16 surrogates, above U+10FFFF */
    if ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] > 0x9f) ||
        (s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] > 0x8f))
        return 0;
    return n;
}

/* The text file, or NULL after a message: UTF-8 text, not a binary file whose bytes would be
   read as tokens (a NUL byte, more than 1% control characters or a byte that is not UTF-8
   tells). */
#if defined(__GNUC__)
static char *read_text(const char *path) __attribute__((unused)); /* not every example reads one */
#endif
static char *read_text(const char *path)
{
    long long size = input_file_size("text", path), i, control = 0;
    FILE *f;
    char *s;
    if (size < 0) return NULL;
    if (!(f = fopen(path, "rb"))) {
        fprintf(stderr, "error: cannot open text '%s': %s\n", path, strerror(errno));
        return NULL;
    }
    s = (char *)xmalloc((size_t)size + 1);
    if (fread(s, 1, (size_t)size, f) != (size_t)size) {
        fprintf(stderr, "error: cannot read text '%s'%s\n", path,
                ferror(f) ? "" : ": it is shorter than its size says");
        fclose(f);
        free(s);
        return NULL;
    }
    fclose(f);
    s[size] = '\0';
    for (i = 0; i < size; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == 0) {
            fprintf(stderr, "error: text '%s' is a binary file, not text (a NUL byte at offset "
                    "%lld); give a UTF-8 text\n", path, i);
            free(s);
            return NULL;
        }
        control += (c < 0x20 && c != '\n' && c != '\r' && c != '\t' && c != '\f') || c == 0x7f;
    }
    if (control * 100 > size) {
        fprintf(stderr, "error: text '%s' is a binary file, not text (%lld of its %lld bytes are "
                "control characters); give a UTF-8 text\n", path, control, size);
        free(s);
        return NULL;
    }
    for (i = 0; i < size;) {
        int n = utf8_sequence((const unsigned char *)s + i, size - i);
        if (n == 0) {
            fprintf(stderr, "error: text '%s' is not UTF-8 (byte 0x%02x at offset %lld starts no "
                    "valid sequence); give a UTF-8 text\n", path, (unsigned char)s[i], i);
            free(s);
            return NULL;
        }
        i += n;
    }
    return s;
}

/* header: 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len), a
   negative vocab_size meaning a separate classifier; then float32 weights in the order below. */
typedef struct model {
    int dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
    int head_dim, kv_dim, shared_classifier;
    float *data; /* every weight, one block */
    const float *emb, *rms_att, *wq, *wk, *wv, *wo, *rms_ffn, *w1, *w2, *w3, *rms_final, *wcls;
} model;

static int model_load(model *m, const char *path)
{
    int32_t h[7];
    long long size;
    size_t floats, n = 0;
    FILE *f;
    memset(m, 0, sizeof *m);
    if ((size = input_file_size("model", path)) < 0) return 1;
    if (!(f = fopen(path, "rb"))) {
        fprintf(stderr, "error: cannot open model '%s': %s\n", path, strerror(errno));
        return 1;
    }
    if (size < (long long)sizeof h || fread(h, sizeof h, 1, f) != 1) {
        fprintf(stderr, "error: model '%s' is truncated: %lld bytes, too short for a llama2.c "
                "header (%zu bytes)\n", path, size, sizeof h);
        fclose(f);
        return 1;
    }
    m->dim = h[0]; m->hidden_dim = h[1]; m->n_layers = h[2]; m->n_heads = h[3];
    m->n_kv_heads = h[4]; m->seq_len = h[6];
    m->shared_classifier = h[5] > 0;
    m->vocab_size = h[5] == INT32_MIN ? 0 : abs(h[5]);
    if (m->dim <= 0 || m->dim > 65536 || m->hidden_dim <= 0 || m->hidden_dim > 262144 ||
        m->n_layers <= 0 || m->n_layers > 1024 || m->n_heads <= 0 || m->n_kv_heads <= 0 ||
        m->n_kv_heads > m->n_heads || m->n_heads % m->n_kv_heads != 0 ||
        m->dim % m->n_heads != 0 || (m->dim / m->n_heads) % 2 != 0 || m->vocab_size <= 0 ||
        m->vocab_size > (1 << 20) || m->seq_len <= 0 || m->seq_len > (1 << 24)) {
        fprintf(stderr,
                "error: model '%s' does not start with a valid llama2.c header (dim %d, "
                "hidden_dim %d, n_layers %d, n_heads %d, n_kv_heads %d, vocab_size %d, "
                "seq_len %d)\n",
                path, h[0], h[1], h[2], h[3], h[4], h[5], h[6]);
        fclose(f);
        return 1;
    }
    m->head_dim = m->dim / m->n_heads;
    m->kv_dim = m->head_dim * m->n_kv_heads;
    {
        size_t d = (size_t)m->dim, L = (size_t)m->n_layers, hd = (size_t)m->hidden_dim;
        size_t kvd = (size_t)m->kv_dim, V = (size_t)m->vocab_size;
        floats = V * d + L * d * 2 + L * d * d * 2 + L * d * kvd * 2 + L * d * hd * 3 + d +
                 (size_t)m->seq_len * (size_t)m->head_dim; /* + unused RoPE tables */
        if (!m->shared_classifier) floats += V * d;
    }
    if ((unsigned long long)size != sizeof h + floats * sizeof(float)) {
        fprintf(stderr, "error: model '%s' is %s: its header (dim %d, %d layers, vocab %d) needs "
                "%zu bytes, the file has %lld\n", path,
                (size_t)size < sizeof h + floats * sizeof(float) ? "truncated" : "too long",
                m->dim, m->n_layers, m->vocab_size, sizeof h + floats * sizeof(float), size);
        fclose(f);
        return 1;
    }
    m->data = (float *)xmalloc(floats * sizeof(float));
    if (fread(m->data, sizeof(float), floats, f) != floats) {
        fprintf(stderr, "error: cannot read the weights of model '%s'\n", path);
        fclose(f);
        free(m->data);
        m->data = NULL;
        return 1;
    }
    fclose(f);
#define ENGINE_TAKE(ptr, count) (ptr = m->data + n, n += (size_t)(count))
    ENGINE_TAKE(m->emb, (size_t)m->vocab_size * m->dim);
    ENGINE_TAKE(m->rms_att, (size_t)m->n_layers * m->dim);
    ENGINE_TAKE(m->wq, (size_t)m->n_layers * m->dim * m->dim);
    ENGINE_TAKE(m->wk, (size_t)m->n_layers * m->dim * m->kv_dim);
    ENGINE_TAKE(m->wv, (size_t)m->n_layers * m->dim * m->kv_dim);
    ENGINE_TAKE(m->wo, (size_t)m->n_layers * m->dim * m->dim);
    ENGINE_TAKE(m->rms_ffn, (size_t)m->n_layers * m->dim);
    ENGINE_TAKE(m->w1, (size_t)m->n_layers * m->dim * m->hidden_dim);
    ENGINE_TAKE(m->w2, (size_t)m->n_layers * m->hidden_dim * m->dim);
    ENGINE_TAKE(m->w3, (size_t)m->n_layers * m->dim * m->hidden_dim);
    ENGINE_TAKE(m->rms_final, m->dim);
    n += (size_t)m->seq_len * (size_t)m->head_dim; /* RoPE tables: kvevict computes its own */
    m->wcls = m->shared_classifier ? m->emb : m->data + n;
#undef ENGINE_TAKE
    return 0;
}

static void model_free(model *m)
{
    free(m->data);
    m->data = NULL;
}

/* ---- the tokenizer -------------------------------------------------------------------------- */
/* int32 max_token_length, then per token: float32 score, int32 length, the bytes. */
typedef struct token_index { const char *str; int id; } token_index;

typedef struct tokenizer {
    int vocab_size, max_len;
    char **piece;
    float *score;
    token_index *sorted; /* pieces by string, for lookup */
    char *buf;           /* two pieces joined */
    char bytes[256][2];  /* the pieces <0x00>..<0xFF> stand for these one-byte strings */
} tokenizer;

static int tok_cmp(const void *a, const void *b)
{
    return strcmp(((const token_index *)a)->str, ((const token_index *)b)->str);
}

static void tok_free(tokenizer *t);

/* on error everything is freed (tok_free is for a loaded tokenizer) */
static int tok_load(tokenizer *t, const char *path, int vocab_size)
{
    int32_t max_len, len;
    int i;
    FILE *f;
    memset(t, 0, sizeof *t);
    if (input_file_size("tokenizer", path) < 0) return 1;
    if (!(f = fopen(path, "rb"))) {
        fprintf(stderr, "error: cannot open tokenizer '%s': %s\n", path, strerror(errno));
        return 1;
    }
    if (fread(&max_len, 4, 1, f) != 1 || max_len <= 0 || max_len > 4096) {
        fprintf(stderr, "error: tokenizer '%s' is not a llama2.c tokenizer (its first 4 bytes, "
                "max_token_length, are not 1..4096)\n", path);
        fclose(f);
        return 1;
    }
    t->vocab_size = vocab_size;
    t->max_len = max_len;
    t->piece = (char **)calloc((size_t)vocab_size, sizeof(char *));
    t->score = (float *)xmalloc((size_t)vocab_size * sizeof(float));
    t->sorted = (token_index *)xmalloc((size_t)vocab_size * sizeof(token_index));
    t->buf = (char *)xmalloc(2 * (size_t)max_len + 2);
    if (!t->piece) {
        fprintf(stderr, "error: out of memory for tokenizer '%s'\n", path);
        fclose(f);
        tok_free(t);
        return 1;
    }
    for (i = 0; i < vocab_size; i++) {
        if (fread(&t->score[i], 4, 1, f) != 1 || fread(&len, 4, 1, f) != 1 || len < 0 ||
            len > max_len || !(t->piece[i] = (char *)malloc((size_t)len + 1)) ||
            fread(t->piece[i], 1, (size_t)len, f) != (size_t)len) {
            fprintf(stderr, "error: tokenizer '%s' is truncated or corrupt at token %d (the model "
                    "has a vocabulary of %d)\n", path, i, vocab_size);
            fclose(f);
            t->vocab_size = i + 1;
            tok_free(t);
            return 1;
        }
        t->piece[i][len] = '\0';
        t->sorted[i].str = t->piece[i];
        t->sorted[i].id = i;
    }
    if (fgetc(f) != EOF) {
        fprintf(stderr, "error: tokenizer '%s' has more than the model's %d tokens\n", path,
                vocab_size);
        fclose(f);
        tok_free(t);
        return 1;
    }
    fclose(f);
    qsort(t->sorted, (size_t)vocab_size, sizeof *t->sorted, tok_cmp);
    for (i = 0; i < 256; i++) {
        t->bytes[i][0] = (char)i;
        t->bytes[i][1] = '\0';
    }
    return 0;
}

static void tok_free(tokenizer *t)
{
    int i;
    for (i = 0; t->piece && i < t->vocab_size; i++) free(t->piece[i]);
    free(t->piece); free(t->score); free(t->sorted); free(t->buf);
    memset(t, 0, sizeof *t);
}

static int tok_lookup(const tokenizer *t, const char *s)
{
    token_index key, *hit;
    key.str = s;
    key.id = 0;
    hit = (token_index *)bsearch(&key, t->sorted, (size_t)t->vocab_size, sizeof key, tok_cmp);
    return hit ? hit->id : -1;
}

enum { TOKEN_BOS = 1, TOKEN_EOS = 2 };

/* llama2.c's encoder (SentencePiece BPE): BOS if asked, a leading space, one token per UTF-8
   character (bytes of characters not in the vocabulary as <0xXX> tokens), then repeatedly merge
   the adjacent pair whose joined piece has the highest score. out holds strlen(text) + 2 ints. */
static int tok_encode(const tokenizer *t, const char *text, int bos, int *out)
{
    int n = 0, i;
    const char *c = text;
    if (bos) out[n++] = TOKEN_BOS;
    if (*text && tok_lookup(t, " ") >= 0) out[n++] = tok_lookup(t, " ");
    while (*c) {
        char ch[5];
        size_t len = 1, j;
        int id;
        while (len < 4 && ((unsigned char)c[len] & 0xC0) == 0x80) len++;
        memcpy(ch, c, len);
        ch[len] = '\0';
        if ((id = tok_lookup(t, ch)) >= 0) out[n++] = id;
        else for (j = 0; j < len; j++) out[n++] = (unsigned char)c[j] + 3;
        c += len;
    }
    for (;;) {
        float best = -1e10f;
        int best_i = -1, best_id = -1;
        for (i = 0; i + 1 < n; i++) {
            size_t a = strlen(t->piece[out[i]]), b = strlen(t->piece[out[i + 1]]);
            int id;
            if (a + b > (size_t)t->max_len) continue;
            memcpy(t->buf, t->piece[out[i]], a);
            memcpy(t->buf + a, t->piece[out[i + 1]], b + 1);
            id = tok_lookup(t, t->buf);
            if (id >= 0 && t->score[id] > best) {
                best = t->score[id];
                best_i = i;
                best_id = id;
            }
        }
        if (best_i < 0) return n;
        out[best_i] = best_id;
        memmove(out + best_i + 1, out + best_i + 2, (size_t)(n - best_i - 2) * sizeof(int));
        n--;
    }
}

/* the text of `token` following `prev`: no leading space after BOS, <0xXX> as the raw byte */
static const char *tok_decode(const tokenizer *t, int prev, int token)
{
    const char *p = t->piece[token];
    unsigned int byte;
    if (prev == TOKEN_BOS && p[0] == ' ') p++;
    if (p[0] == '<' && sscanf(p, "<0x%02X>", &byte) == 1 && byte < 256) return t->bytes[byte];
    return p;
}

/* ---- a random baseline policy (KVE_POLICY_CUSTOM) ------------------------------------------ */
/* Keeps the `window` most recent tokens and a random choice of the older ones, `keep` in all. */
typedef struct random_policy {
    int32_t keep, window, n_kv_heads;
    uint64_t rng;
    int32_t *slots;      /* scratch: capacity entries */
    unsigned char *mark; /* scratch: capacity entries */
} random_policy;

static uint32_t random_u32(uint64_t *s)
{
    *s ^= *s >> 12; *s ^= *s << 25; *s ^= *s >> 27;
    return (uint32_t)((*s * 0x2545F4914F6CDD1Dull) >> 32);
}

/* the slots of (layer, h) holding tokens older than its `recent` newest */
static int32_t random_old_slots(const kve_cache *c, int32_t layer, int32_t h, int32_t recent,
                                int32_t *slots)
{
    int32_t n = kve_length(c, layer, h), s, count = 0;
    int64_t newest = -1;
    for (s = 0; s < n; s++)
        if (kve_slot_position(c, layer, h, s) > newest) newest = kve_slot_position(c, layer, h, s);
    for (s = 0; s < n; s++)
        if (kve_slot_position(c, layer, h, s) <= newest - recent) slots[count++] = s;
    return count;
}

/* a full layer: the new token overwrites a random token outside the window (which it joins) */
static kve_result random_make_room(kve_cache *c, int32_t layer, int32_t *write_slot, void *user)
{
    random_policy *p = (random_policy *)user;
    int32_t h, count;
    for (h = 0; h < p->n_kv_heads; h++) {
        count = random_old_slots(c, layer, h, p->window - 1, p->slots);
        if (count == 0) return KVE_ERROR_POLICY_FAILED;
        write_slot[h] = p->slots[random_u32(&p->rng) % (uint32_t)count];
    }
    return KVE_OK;
}

/* after a prompt: keep the window newest tokens and keep - window random older ones */
static kve_result random_compress(kve_cache *c, int32_t layer, void *user)
{
    random_policy *p = (random_policy *)user;
    int32_t h, n, count, i;
    kve_result r;
    for (h = 0; h < p->n_kv_heads; h++) {
        if ((n = kve_length(c, layer, h)) <= p->keep) continue;
        count = random_old_slots(c, layer, h, p->window, p->slots);
        memset(p->mark, 1, (size_t)n);
        for (i = 0; i < count; i++) { /* shuffle; all but the first keep - window go */
            int32_t j = i + (int32_t)(random_u32(&p->rng) % (uint32_t)(count - i)), t = p->slots[i];
            p->slots[i] = p->slots[j];
            p->slots[j] = t;
            if (i >= p->keep - p->window) p->mark[p->slots[i]] = 0;
        }
        if ((r = kve_keep_slots(c, layer, h, p->mark)) != KVE_OK) return r;
    }
    return KVE_OK;
}

static const kve_policy_vtable random_vtable = {"random", 0, random_make_room, random_compress};

/* ---- policy specs: "name:param=value,param=value" ------------------------------------------- */
typedef struct policy_spec {
    const char *text;         /* as given */
    int random;               /* the random baseline (a custom policy) */
    int32_t capacity;         /* capacity=, 0 if not given */
    kve_policy_config cfg;    /* the other parameters; zero fields take the library's defaults */
    uint64_t seed;
} policy_spec;

static const struct {
    const char *name;
    kve_policy_kind kind;
    const char *params;
} policy_names[] = {
    {"full", KVE_POLICY_FULL, ""},
    {"streamingllm", KVE_POLICY_STREAMINGLLM, "capacity sinks pos_shift decode"},
#define SELECTING "allocation alpha_safeguard beta chunk_length"
    {"snapkv", KVE_POLICY_SNAPKV, "capacity window kernel pooling gqa decode evict_batch " SELECTING},
    {"pyramidkv", KVE_POLICY_PYRAMIDKV,
     "capacity window kernel pooling gqa decode evict_batch " SELECTING},
    {"h2o", KVE_POLICY_H2O, "capacity window gqa decode " SELECTING},
    {"random", KVE_POLICY_CUSTOM, "capacity window seed decode"}, /* the engine's own, above */
    /* kvpress's scorers: window 0 (protect nothing) and no pooling by default */
    {"knorm", KVE_POLICY_KNORM, "capacity window kernel pooling decode evict_batch " SELECTING},
    {"keydiff", KVE_POLICY_KEYDIFF, "capacity window kernel pooling decode evict_batch " SELECTING},
    {"tova", KVE_POLICY_TOVA, "capacity window decode evict_batch " SELECTING},
    {"lagkv", KVE_POLICY_LAGKV,
     "capacity window sinks lag_size cross_scoring decode evict_batch " SELECTING},
    {"observed_attention", KVE_POLICY_OBSERVED_ATTENTION,
     "capacity window gqa decode evict_batch " SELECTING},
    {"expected_attention", KVE_POLICY_EXPECTED_ATTENTION,
     "capacity window sinks n_future_positions decode evict_batch " SELECTING},
    /* the library's seeded random scorer (kvpress RandomPress) */
    {"random_scorer", KVE_POLICY_RANDOM, "capacity window seed decode evict_batch " SELECTING},
    /* lazy layers keep sinks and recent tokens, the others all (kvpress SimLayerKVPress): no
       capacity, the cache holds the whole prompt */
    {"simlayerkv", KVE_POLICY_SIMLAYERKV, "lazy_threshold n_recent window sinks"},
#undef SELECTING
};

/* the window a policy protects by default: kvpress's scorers none, the others 32 */
static int32_t spec_default_window(kve_policy_kind kind)
{
    return kind >= KVE_POLICY_KNORM && kind <= KVE_POLICY_SCORER ? 0 : 32;
}

/* value of an enum parameter by name, -1 if none matches */
static int spec_word(const char *v, const char *const *words, int n)
{
    int i;
    for (i = 0; i < n; i++)
        if (strcmp(v, words[i]) == 0) return i;
    return -1;
}

static int spec_parse(const char *text, policy_spec *s)
{
    static const char *const pooling[] = {"max", "avg", "none"};
    static const char *const gqa[] = {"mean", "max", "sum"}, *const decode[] = {"grow", "evict"};
    static const char *const allocation[] = {"uniform", "pyramid", "adakv"};
    char buf[256], *name = buf, *params, *item;
    size_t i, n_names = sizeof policy_names / sizeof policy_names[0];
    memset(s, 0, sizeof *s);
    s->text = text;
    s->seed = 1;
    if (strlen(text) >= sizeof buf) {
        fprintf(stderr, "error: policy spec too long: '%s'\n", text);
        return 1;
    }
    strcpy(buf, text);
    params = strchr(buf, ':');
    if (params) *params++ = '\0';
    for (i = 0; i < n_names && strcmp(name, policy_names[i].name) != 0; i++) {}
    if (i == n_names) {
        fprintf(stderr, "error: unknown policy '%s' in '%s' (known: full, streamingllm, snapkv, "
                "pyramidkv, h2o, random, knorm, keydiff, tova, lagkv, observed_attention, "
                "expected_attention, random_scorer, simlayerkv)\n",
                name, text);
        return 1;
    }
    s->cfg.kind = policy_names[i].kind;
    s->random = s->cfg.kind == KVE_POLICY_CUSTOM;
    for (item = params ? strtok(params, ",") : NULL; item; item = strtok(NULL, ",")) {
        char *value = strchr(item, '='), *end, key[64];
        long v = 0;
        int word = -1;
        if (!value || value == item || !value[1]) {
            fprintf(stderr, "error: '%s' in policy '%s' is not param=value\n", item, text);
            return 1;
        }
        *value++ = '\0';
        snprintf(key, sizeof key, " %s ", item);
        {
            char allowed[256];
            snprintf(allowed, sizeof allowed, " %s ", policy_names[i].params);
            if (!strstr(allowed, key)) {
                fprintf(stderr, "error: policy %s has no parameter '%s' (it takes: %s)\n",
                        policy_names[i].name, item,
                        policy_names[i].params[0] ? policy_names[i].params : "none");
                return 1;
            }
        }
        if (!strcmp(item, "pooling")) word = spec_word(value, pooling, 3);
        else if (!strcmp(item, "gqa")) word = spec_word(value, gqa, 3);
        else if (!strcmp(item, "decode")) word = spec_word(value, decode, 2);
        else if (!strcmp(item, "allocation")) word = spec_word(value, allocation, 3);
        else if (!strcmp(item, "lazy_threshold")) {
            double a;
            errno = 0;
            a = strtod(value, &end);
            if (*end || errno || !(a > 0.0 && a <= 1.0)) {
                fprintf(stderr, "error: bad value '%s' for lazy_threshold in policy '%s' (above 0, "
                        "at most 1)\n", value, text);
                return 1;
            }
            s->cfg.lazy_threshold = a;
            continue;
        } else if (!strcmp(item, "alpha_safeguard")) {
            double a;
            errno = 0;
            a = strtod(value, &end);
            if (*end || errno || !(a >= 0.0 && a <= 1.0)) {
                fprintf(stderr, "error: bad value '%s' for alpha_safeguard in policy '%s' (0 to "
                        "1)\n", value, text);
                return 1;
            }
            s->cfg.alpha_safeguard = a == 0.0 ? KVE_NO_SAFEGUARD : a;
            continue;
        } else {
            errno = 0;
            v = strtol(value, &end, 10);
            if (*end || errno || v < 0 || v > INT32_MAX ||
                (!strcmp(item, "pos_shift") && v > 1)) {
                fprintf(stderr, "error: bad value '%s' for %s in policy '%s'\n", value, item, text);
                return 1;
            }
        }
        if ((!strcmp(item, "pooling") || !strcmp(item, "gqa") || !strcmp(item, "decode") ||
             !strcmp(item, "allocation")) && word < 0) {
            fprintf(stderr, "error: bad value '%s' for %s in policy '%s' (one of: %s)\n", value,
                    item, text, !strcmp(item, "pooling") ? "max avg none"
                                : !strcmp(item, "gqa") ? "mean max sum"
                                : !strcmp(item, "allocation") ? "uniform pyramid adakv"
                                                              : "grow evict");
            return 1;
        }
        if (!strcmp(item, "capacity")) s->capacity = (int32_t)v;
        else if (!strcmp(item, "window")) s->cfg.window = (int32_t)v;
        else if (!strcmp(item, "kernel")) s->cfg.kernel = (int32_t)v;
        else if (!strcmp(item, "beta")) s->cfg.beta = (int32_t)v;
        else if (!strcmp(item, "evict_batch")) s->cfg.evict_batch = (int32_t)v;
        else if (!strcmp(item, "sinks")) s->cfg.sinks = v == 0 ? KVE_NO_SINKS : (int32_t)v;
        else if (!strcmp(item, "pos_shift"))
            s->cfg.pos_shift = v ? KVE_POS_SHIFT_ON : KVE_POS_SHIFT_OFF;
        else if (!strcmp(item, "seed") && s->cfg.kind == KVE_POLICY_RANDOM) s->cfg.seed = (uint64_t)v;
        else if (!strcmp(item, "seed")) s->seed = (uint64_t)v + 1;
        else if (!strcmp(item, "pooling")) s->cfg.pooling = (kve_pooling)(KVE_POOL_MAX + word);
        else if (!strcmp(item, "gqa")) s->cfg.gqa = (kve_reduce)(KVE_REDUCE_MEAN + word);
        else if (!strcmp(item, "decode")) s->cfg.decode = (kve_decode_mode)(KVE_DECODE_GROW + word);
        else if (!strcmp(item, "allocation"))
            s->cfg.allocation = (kve_allocation)(KVE_ALLOCATION_UNIFORM + word);
        else if (!strcmp(item, "lag_size")) s->cfg.lag_size = (int32_t)v;
        else if (!strcmp(item, "n_future_positions")) s->cfg.n_future_positions = (int32_t)v;
        else if (!strcmp(item, "n_recent")) s->cfg.n_recent = (int32_t)v;
        else if (!strcmp(item, "chunk_length")) s->cfg.chunk_length = (int32_t)v;
        else if (!strcmp(item, "cross_scoring")) s->cfg.cross_scoring = v != 0;
    }
    if (s->cfg.kind != KVE_POLICY_FULL && s->cfg.kind != KVE_POLICY_SIMLAYERKV && s->capacity <= 0) {
        fprintf(stderr, "error: policy '%s' needs capacity=N (N > 0)\n", text);
        return 1;
    }
    if (s->random && s->capacity <= (s->cfg.window ? s->cfg.window : 32)) {
        fprintf(stderr, "error: policy '%s': capacity must be larger than the window\n", text);
        return 1;
    }
    if (s->cfg.kind != KVE_POLICY_FULL && s->cfg.kind != KVE_POLICY_SIMLAYERKV && !s->random) {
        /* the library's checks of the parameters against each other, before any file is read and
           in the spec's words (its budget is the capacity); the model's shape is checked later */
        kve_config c, resolved;
        kve_result r;
        memset(&c, 0, sizeof c);
        c.n_layers = 1; c.n_heads = 1; c.head_dim = 2; c.capacity = s->capacity;
        c.policy = s->cfg;
        c.policy.budget = s->capacity;
        if ((r = kve_config_resolve(&c, &resolved)) == KVE_ERROR_TOO_MANY_SINKS) {
            int sinks = s->cfg.sinks == KVE_NO_SINKS ? 0 : s->cfg.sinks ? s->cfg.sinks : 4;
            fprintf(stderr, "error: policy '%s': sinks=%d%s leave no room for recent tokens in "
                    "capacity=%d (the capacity must be larger than the sinks)\n", text, sinks,
                    s->cfg.sinks ? "" : " (the default)", s->capacity);
            return 1;
        } else if (r == KVE_ERROR_WINDOW_TOO_LARGE) {
            fprintf(stderr, "error: policy '%s': window=%d%s does not fit in capacity=%d (the "
                    "capacity must be larger than the window)\n", text,
                    s->cfg.window ? s->cfg.window : spec_default_window(s->cfg.kind),
                    s->cfg.window ? "" : " (the default)",
                    s->capacity);
            return 1;
        } else if (r == KVE_ERROR_EVEN_KERNEL) {
            fprintf(stderr, "error: policy '%s': kernel=%d must be odd\n", text, s->cfg.kernel);
            return 1;
        } else if (r != KVE_OK) {
            fprintf(stderr, "error: policy '%s': %s\n", text, kve_result_string(r));
            return 1;
        }
    }
    if (s->cfg.kind == KVE_POLICY_SIMLAYERKV) { /* its defaults: window 1, n_recent 1024 */
        int32_t w = s->cfg.window ? s->cfg.window : 1, recent = s->cfg.n_recent ? s->cfg.n_recent : 1024;
        if (recent <= w) {
            fprintf(stderr, "error: policy '%s': n_recent=%d must be larger than window=%d (a lazy "
                    "layer keeps its newest n_recent - window tokens)\n", text, recent, w);
            return 1;
        }
    }
    return 0;
}

/* --decode for a policy that does not say decode= itself; full and SimLayerKV keep theirs (they
   never evict after the prompt) */
#if defined(__GNUC__)
static void spec_take_decode(policy_spec *s, kve_decode_mode decode) __attribute__((unused));
#endif
static void spec_take_decode(policy_spec *s, kve_decode_mode decode)
{
    if (s->cfg.kind != KVE_POLICY_FULL && s->cfg.kind != KVE_POLICY_SIMLAYERKV &&
        s->cfg.decode == KVE_DECODE_DEFAULT)
        s->cfg.decode = decode;
}

/* A policy that cannot run through a stream, which keeps every cache within its capacity token
   by token: one that grows (decode=grow). Checked before any file is read. */
static int spec_check_stream(const policy_spec *s)
{
    if (s->cfg.kind == KVE_POLICY_SIMLAYERKV) {
        fprintf(stderr, "error: policy '%s': simlayerkv compresses a prompt and evicts nothing "
                "after (--mode prompt or needle)\n", s->text);
        return 1;
    }
    if (s->cfg.kind != KVE_POLICY_FULL && s->cfg.decode == KVE_DECODE_GROW) {
        fprintf(stderr, "error: policy '%s': decode=grow cannot keep a stream within its "
                "capacity (use decode=evict)\n", s->text);
        return 1;
    }
    return 0;
}

/* The kve_policy_config of a spec and the slots its buffers need.
   stream: the cache stays within capacity as tokens come (evicting policies evict as they go);
   otherwise a prompt is prefilled with the whole cache, then compressed (kve_compress_all) to the
   spec's capacity, and the cache grows (decode=grow, the default there) or evicts at it; every
   kind alike: StreamingLLM keeps its sinks and the most recent tokens, random its window and a
   random choice. StreamingLLM with decode=evict instead streams a prompt longer than its capacity
   through its cache token by token. full_slots: what a cache without eviction needs (prompt +
   continuation, or the whole stream). rnd: state of the random policy. */
static int spec_setup(const policy_spec *s, const model *m, int stream, int32_t full_slots,
                      random_policy *rnd, kve_policy_config *pc, int32_t *slots)
{
    *pc = s->cfg;
    pc->budget = s->capacity;
    *slots = s->capacity;
    if (s->cfg.kind == KVE_POLICY_FULL) {
        *slots = full_slots;
    } else if (s->cfg.kind == KVE_POLICY_SIMLAYERKV) {
        if (stream && spec_check_stream(s)) return 1;
        *slots = full_slots; /* the whole prompt and what follows */
        pc->budget = 0;
    } else if (s->random) {
        rnd->keep = s->capacity;
        rnd->window = s->cfg.window ? s->cfg.window : 32;
        rnd->n_kv_heads = m->n_kv_heads;
        rnd->rng = s->seed * 0x9E3779B97F4A7C15ull;
        pc->custom = &random_vtable;
        pc->custom_user = rnd;
        /* growing, the budget is the buffer: the prompt is prefilled whole, compress keeps `keep`
           and nothing evicts after; evicting, make_room keeps the cache at `keep` */
        pc->budget = !stream && s->cfg.decode == KVE_DECODE_EVICT ? s->capacity : 0;
        if (!stream && full_slots > *slots) *slots = full_slots;
    } else if (s->cfg.kind == KVE_POLICY_STREAMINGLLM) {
        if (stream && spec_check_stream(s)) return 1;
        if (!stream && s->cfg.decode == KVE_DECODE_GROW) {
            /* the whole prompt, then sinks + recent after kve_compress, then growing */
            if (full_slots > *slots) *slots = full_slots;
        } else {
            pc->decode = KVE_DECODE_EVICT;
        }
    } else {
        if (stream && spec_check_stream(s)) return 1;
        if (stream) pc->decode = KVE_DECODE_EVICT;
        else if (pc->decode == KVE_DECODE_DEFAULT) pc->decode = KVE_DECODE_GROW;
        if (!stream && full_slots > *slots) *slots = full_slots;
        if (s->cfg.kind == KVE_POLICY_PYRAMIDKV && pc->decode == KVE_DECODE_EVICT &&
            m->n_layers > 1) {
            /* evicting, the lowest layer keeps more than the mean budget: room for it */
            kve_config c;
            int32_t *b = (int32_t *)xmalloc((size_t)m->n_layers * sizeof(int32_t)), l;
            memset(&c, 0, sizeof c);
            c.n_layers = 1; c.n_heads = 1; c.head_dim = 2; c.capacity = KVE_MAX_CAPACITY;
            c.policy = *pc;
            if (kve_config_resolve(&c, &c) == KVE_OK &&
                kve_pyramid_budgets(s->capacity, c.policy.window, c.policy.beta, m->n_layers,
                                    KVE_MAX_POSITION, b) == KVE_OK)
                for (l = 0; l < m->n_layers; l++)
                    if (b[l] > *slots) *slots = b[l];
            free(b);
        }
    }
    {
        kve_config c; /* the library's own check, so that the message names the policy */
        kve_result r;
        memset(&c, 0, sizeof c);
        c.n_layers = m->n_layers; c.n_heads = m->n_heads; c.n_kv_heads = m->n_kv_heads;
        c.head_dim = m->head_dim; c.capacity = *slots; c.policy = *pc;
        if ((r = kve_config_resolve(&c, &c)) != KVE_OK) {
            int default_window = r == KVE_ERROR_WINDOW_TOO_LARGE && !s->cfg.window;
            fprintf(stderr, "error: policy '%s': %s%s\n", s->text, kve_result_string(r),
                    default_window ? " (default window: 32)" : "");
            return 1;
        }
    }
    if (s->random) { /* freed by the caller */
        rnd->slots = (int32_t *)xmalloc((size_t)*slots * sizeof(int32_t));
        rnd->mark = (unsigned char *)xmalloc((size_t)*slots);
    }
    return 0;
}

/* ---- the engine: a model, a kvevict cache, activations ------------------------------------- */
typedef struct engine {
    const model *m;
    kve_cache cache;
    void *kbuf, *vbuf;  /* the K/V buffers: ours, kvevict only manages them */
    void *mem;          /* kvevict's bookkeeping */
    int32_t capacity;   /* slots per layer and KV head */
    int max_batch;      /* tokens per engine_run */
    int own_attention;  /* 0: kvevict attends (kve_attend, kve_prefill); 1: engine_attention() */
    float *x, *xb, *hb, *hb2, *q, *k, *v, *att; /* [max_batch][width] */
    /* engine_attention's scratch, one layer at a time */
    float *keys, *values;    /* [n_kv_heads][capacity][head_dim]: keys (rotated) and values */
    int64_t *key_positions;  /* [n_kv_heads][capacity]: each slot's token position */
    int64_t *query_rope_pos; /* [n_kv_heads]: where to rotate the newest query (-1: not at all) */
    int64_t *key_rope_pos;   /* [capacity]: where to rotate each stored key (-1: stored rotated) */
    float *weights;          /* [n_heads][capacity]: one query's softmax weights, by slot */
    float *qh;               /* [head_dim]: one query head, rotated */
} engine;

static void engine_close(engine *e);

/* kv_types: K and V storage types (NULL: float32). n_threads: kvevict's OpenMP threads per call
   (kve_config.n_threads): 1 for a model as small as stories260K, where starting threads costs
   more than the work they share; 0 lets OpenMP choose. The results do not depend on it. On error
   everything is freed. */
static int engine_open(engine *e, const model *m, const kve_policy_config *policy,
                       int32_t capacity, int max_batch, const kve_type *kv_types, int n_threads)
{
    kve_config cfg;
    kve_buffers buf;
    size_t k_bytes, v_bytes, bytes, B = (size_t)max_batch;
    kve_result r;
    memset(e, 0, sizeof *e);
    memset(&cfg, 0, sizeof cfg);
    memset(&buf, 0, sizeof buf);
    cfg.n_layers = m->n_layers;
    cfg.n_heads = m->n_heads;
    cfg.n_kv_heads = m->n_kv_heads;
    cfg.head_dim = m->head_dim;
    cfg.capacity = capacity;
    cfg.rope_layout = KVE_ROPE_INTERLEAVED; /* llama2.c; theta 0 = 10000 */
    cfg.policy = *policy;
    cfg.n_threads = n_threads;
    if (kv_types) {
        cfg.k_type = kv_types[0];
        cfg.v_type = kv_types[1];
    }
    if ((r = kve_buffer_bytes(&cfg, KVE_LAYOUT_DEFAULT, &k_bytes, &v_bytes)) != KVE_OK ||
        (r = kve_cache_size(&cfg, &bytes)) != KVE_OK) {
        fprintf(stderr, "error: cache configuration: %s\n", kve_result_string(r));
        return 1;
    }
    e->m = m;
    e->capacity = capacity;
    e->max_batch = max_batch;
    e->kbuf = xmalloc(k_bytes);
    e->vbuf = xmalloc(v_bytes);
    e->mem = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!e->mem) {
        fprintf(stderr, "error: out of memory (%zu bytes)\n", bytes);
        engine_close(e);
        return 1;
    }
    buf.k = e->kbuf; buf.v = e->vbuf;
    buf.k_bytes = k_bytes;
    buf.v_bytes = v_bytes;
    if ((r = kve_cache_init(&cfg, &buf, e->mem, bytes, &e->cache)) != KVE_OK) {
        fprintf(stderr, "error: kve_cache_init: %s\n", kve_result_string(r));
        engine_close(e);
        return 1;
    }
    e->x = (float *)xmalloc(B * (size_t)m->dim * sizeof(float));
    e->xb = (float *)xmalloc(B * (size_t)m->dim * sizeof(float));
    e->att = (float *)xmalloc(B * (size_t)m->dim * sizeof(float));
    e->q = (float *)xmalloc(B * (size_t)m->dim * sizeof(float));
    e->k = (float *)xmalloc(B * (size_t)m->kv_dim * sizeof(float));
    e->v = (float *)xmalloc(B * (size_t)m->kv_dim * sizeof(float));
    e->hb = (float *)xmalloc(B * (size_t)m->hidden_dim * sizeof(float));
    e->hb2 = (float *)xmalloc(B * (size_t)m->hidden_dim * sizeof(float));
    {
        size_t C = (size_t)capacity, Hk = (size_t)m->n_kv_heads;
        e->keys = (float *)xmalloc(Hk * C * (size_t)m->head_dim * sizeof(float));
        e->values = (float *)xmalloc(Hk * C * (size_t)m->head_dim * sizeof(float));
        e->key_positions = (int64_t *)xmalloc(Hk * C * sizeof(int64_t));
        e->query_rope_pos = (int64_t *)xmalloc(Hk * sizeof(int64_t));
        e->key_rope_pos = (int64_t *)xmalloc(C * sizeof(int64_t));
        e->weights = (float *)xmalloc((size_t)m->n_heads * C * sizeof(float));
        e->qh = (float *)xmalloc((size_t)m->head_dim * sizeof(float));
    }
    return 0;
}

/* frees what engine_open allocated; safe on a zeroed or closed engine */
static void engine_close(engine *e)
{
    free(e->kbuf); free(e->vbuf); free(e->mem);
    free(e->x); free(e->xb); free(e->att); free(e->q); free(e->k); free(e->v);
    free(e->hb); free(e->hb2);
    free(e->keys); free(e->values); free(e->key_positions); free(e->query_rope_pos);
    free(e->key_rope_pos); free(e->weights); free(e->qh);
    memset(e, 0, sizeof *e);
}

static void rmsnorm(float *out, const float *x, const float *w, int n)
{
    float ss = 0.0f;
    int i;
    for (i = 0; i < n; i++) ss += x[i] * x[i];
    ss = 1.0f / sqrtf(ss / (float)n + 1e-5f);
    for (i = 0; i < n; i++) out[i] = w[i] * (ss * x[i]);
}

/* out[rows] = W[rows][cols] . x[cols]; eight sums in parallel, so the compiler vectorises. No
   OpenMP here: at this model's size threads would cost more than they share (engine_open gives
   kvevict n_threads = 1 for the same reason). */
static void matmul(float *out, const float *x, const float *w, int cols, int rows)
{
    int i, j, k;
    for (i = 0; i < rows; i++) {
        const float *row = w + (size_t)i * (size_t)cols;
        float a[8] = {0};
        for (j = 0; j + 8 <= cols; j += 8)
            for (k = 0; k < 8; k++) a[k] += row[j + k] * x[j + k];
        for (; j < cols; j++) a[j & 7] += row[j] * x[j];
        out[i] = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
    }
}

/* The engine's own attention in layer l: the queries of the n newest tokens (e->q, before RoPE,
   [n][n_heads*head_dim]) over what the cache holds, into e->att. It computes what kve_attend
   (n = 1) and kve_prefill (n > 1) do, up to float rounding; kvevict only stores, scores and
   evicts. The recipe, after kve_store of the n tokens in this layer:
     1. kve_observe: record the queries (SnapKV and PyramidKV score the tokens with them);
     2. per KV head, kve_attention_positions: where to rotate the newest query and each stored key
        (-1: the key is stored rotated); kve_read_key and kve_read_value give the vectors as
        float32 whatever the storage type; kve_slot_position is the token's position, for the
        causal mask (a query at position p sees the slots at positions <= p);
     3. per query token and head: logits q.k / sqrt(head_dim), softmax, weighted sum of the
        values; query head hq reads KV head hq / (n_heads / n_kv_heads);
     4. policies that keep scores (H2O; kve_scores() not NULL): kve_accumulate the softmax
        weights of each query, by slot.
   Slots are in no particular order, and each KV head may hold different tokens. Plain loops in
   float32, like llama2.c's attention: the logits of a query head go into its weights row, which
   the softmax turns into the weights kve_accumulate takes. */
static kve_result engine_attention(engine *e, int l, int n)
{
    const model *m = e->m;
    kve_cache *c = &e->cache;
    const kve_config *cfg = kve_cache_config(c);
    int hd = m->head_dim, dim = m->dim, group = m->n_heads / m->n_kv_heads, h, hq, t, s, i;
    size_t cap = (size_t)e->capacity;
    int64_t newest = kve_newest_position(c, l);
    int keeps_scores = kve_scores(c, l, 0) != NULL;
    float scale = 1.0f / sqrtf((float)hd);
    kve_result r;

    /* 1. the queries, for the policies that score with them */
    if ((r = kve_observe(c, l, n, e->q, NULL)) != KVE_OK) return r;

    /* 2. each KV head's keys (rotated where the cache wants it) and values, as float32 */
    for (h = 0; h < m->n_kv_heads; h++) {
        int len = kve_length(c, l, h);
        r = kve_attention_positions(c, l, h, &e->query_rope_pos[h], e->key_rope_pos);
        if (r != KVE_OK) return r;
        for (s = 0; s < len; s++) {
            float *key = e->keys + ((size_t)h * cap + (size_t)s) * hd;
            float *value = e->values + ((size_t)h * cap + (size_t)s) * hd;
            if ((r = kve_read_key(c, l, h, s, key)) != KVE_OK ||
                (r = kve_read_value(c, l, h, s, value)) != KVE_OK)
                return r;
            if (e->key_rope_pos[s] >= 0 &&
                (r = kve_rope_apply(cfg, key, e->key_rope_pos[s])) != KVE_OK)
                return r;
            e->key_positions[(size_t)h * cap + (size_t)s] = kve_slot_position(c, l, h, s);
        }
    }

    /* 3. and 4. query token t is at position p */
    for (t = 0; t < n; t++) {
        int64_t p = newest - (n - 1 - t);
        for (hq = 0; hq < m->n_heads; hq++) {
            int kv = hq / group, len = kve_length(c, l, kv);
            const float *keys = e->keys + (size_t)kv * cap * hd;
            const float *values = e->values + (size_t)kv * cap * hd;
            const int64_t *key_pos = e->key_positions + (size_t)kv * cap;
            float *w = e->weights + (size_t)hq * cap;
            float *out = e->att + (size_t)t * dim + (size_t)hq * hd;
            float top = -INFINITY, sum = 0.0f;

            /* the query head, rotated at p's place in the cache's numbering (kve_rope_shift:
               with pre-RoPE keys and pos-shift, a prefill longer than the cache puts early
               queries below 0) */
            memcpy(e->qh, e->q + (size_t)t * dim + (size_t)hq * hd, (size_t)hd * sizeof(float));
            if (e->query_rope_pos[kv] >= 0 &&
                (r = kve_rope_shift(cfg, e->qh, e->query_rope_pos[kv] + p - newest)) != KVE_OK)
                return r;

            /* logits of the visible slots; the others (after p in a prefill) get no weight */
            for (s = 0; s < len; s++) {
                const float *key = keys + (size_t)s * hd;
                float dot = 0.0f;
                if (key_pos[s] > p) continue;
                for (i = 0; i < hd; i++) dot += e->qh[i] * key[i];
                w[s] = dot * scale;
                if (w[s] > top) top = w[s];
            }
            /* softmax: the weights of the visible slots, by slot */
            for (s = 0; s < len; s++) {
                w[s] = key_pos[s] > p ? 0.0f : expf(w[s] - top);
                sum += w[s];
            }
            for (s = 0; s < len; s++) w[s] = sum > 0.0f ? w[s] / sum : 0.0f;
            /* the output: the values weighted */
            memset(out, 0, (size_t)hd * sizeof(float));
            for (s = 0; s < len; s++) {
                const float *value = values + (size_t)s * hd;
                for (i = 0; i < hd; i++) out[i] += w[s] * value[i];
            }
        }
        /* 4. this query's weights into the accumulated scores */
        if (keeps_scores && (r = kve_accumulate(c, l, e->weights)) != KVE_OK) return r;
    }
    return KVE_OK;
}

/* Runs n tokens at positions pos .. pos+n-1 through the model and writes the logits of the last
   one (NULL: skip the classifier). n = 1 is a decoding step (kve_attend); n > 1 a prefill
   (kve_prefill), whose tokens must all fit in the cache without eviction. With own_attention set,
   engine_attention() attends instead of kve_attend and kve_prefill. */
static kve_result engine_run(engine *e, const int *tokens, int n, int64_t pos, float *logits)
{
    const model *m = e->m;
    int dim = m->dim, kvd = m->kv_dim, hid = m->hidden_dim, l, t, i;
    kve_result r;
    if (n < 1 || n > e->max_batch) return KVE_ERROR_INVALID_COUNT;
    for (t = 0; t < n; t++)
        memcpy(e->x + (size_t)t * dim, m->emb + (size_t)tokens[t] * dim,
               (size_t)dim * sizeof(float));
    for (l = 0; l < m->n_layers; l++) {
        size_t lq = (size_t)l * dim * dim, lkv = (size_t)l * dim * kvd, lh = (size_t)l * dim * hid;
        for (t = 0; t < n; t++) {
            float *xb = e->xb + (size_t)t * dim;
            rmsnorm(xb, e->x + (size_t)t * dim, m->rms_att + (size_t)l * dim, dim);
            matmul(e->q + (size_t)t * dim, xb, m->wq + lq, dim, dim);
            matmul(e->k + (size_t)t * kvd, xb, m->wk + lkv, dim, kvd);
            matmul(e->v + (size_t)t * kvd, xb, m->wv + lkv, dim, kvd);
            /* kvevict: store k and v (before RoPE); the policy evicts if the layer is full */
            r = kve_store(&e->cache, l, pos + t, e->k + (size_t)t * kvd, e->v + (size_t)t * kvd,
                          NULL);
            if (r != KVE_OK) return r;
        }
        /* kvevict: attention of the queries (before RoPE) over what the cache holds; or the
           engine's own over the K/V buffers, kvevict only recording what its policy needs */
        if (e->own_attention) r = engine_attention(e, l, n);
        else r = n == 1 ? kve_attend(&e->cache, l, e->q, e->att)
                        : kve_prefill(&e->cache, l, n, e->q, NULL, e->att);
        if (r != KVE_OK) return r;
        for (t = 0; t < n; t++) {
            float *x = e->x + (size_t)t * dim, *xb = e->xb + (size_t)t * dim;
            float *hb = e->hb + (size_t)t * hid, *hb2 = e->hb2 + (size_t)t * hid;
            matmul(xb, e->att + (size_t)t * dim, m->wo + lq, dim, dim);
            for (i = 0; i < dim; i++) x[i] += xb[i];
            rmsnorm(xb, x, m->rms_ffn + (size_t)l * dim, dim);
            matmul(hb, xb, m->w1 + lh, dim, hid);
            matmul(hb2, xb, m->w3 + lh, dim, hid);
            for (i = 0; i < hid; i++) hb[i] = hb[i] / (1.0f + expf(-hb[i])) * hb2[i];
            matmul(xb, hb, m->w2 + lh, hid, dim);
            for (i = 0; i < dim; i++) x[i] += xb[i];
        }
    }
    if (logits) {
        rmsnorm(e->xb, e->x + (size_t)(n - 1) * dim, m->rms_final, dim);
        matmul(logits, e->xb, m->wcls, dim, m->vocab_size);
    }
    return KVE_OK;
}

#endif /* KVEVICT_EXAMPLES_ENGINE_H */
