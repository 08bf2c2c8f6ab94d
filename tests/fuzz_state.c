/* libFuzzer target for kve_state_load.

   The first input bytes choose a configuration (every policy, both key storages, every K/V type,
   small sizes) and a token sequence, with removals and shifts; the cache is saved. The rest of the
   input edits that blob: bit flips, bytes overwritten with chosen values, truncation or growth,
   and, when asked, the checksum recomputed (as a crafted file would have it) so that the content
   checks are reached. The edited blob is loaded into a second cache that holds something else.
     - a load that fails must return a state error (or NULL/format ones) and leave that cache
       exactly as it was (compared through its own saved state);
     - a load that succeeds must pass kve_check(), save back to the same bytes it was given when
       the blob was not edited, and attend to finite outputs.

   make fuzz         runs it with the other target (clang -fsanitize=fuzzer,address,undefined)
   Without libFuzzer: cc -std=c11 -O1 -g -I. -DFUZZ_STANDALONE tests/fuzz_state.c -o fs -lm
                      ./fs --random N    or    ./fs FILE... */
#define KVEVICT_IMPLEMENTATION
#include "kvevict.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        fprintf(stderr, "fuzz_state: " __VA_ARGS__);                                               \
        fprintf(stderr, "\n");                                                                     \
        abort();                                                                                   \
    } while (0)

typedef struct reader {
    const uint8_t *p;
    size_t n, at;
} reader;

static unsigned byte(reader *r) { return r->at < r->n ? r->p[r->at++] : 0u; }

typedef struct owned {
    kve_cache c;
    void *k, *v, *mem;
} owned;

static int open_cache(owned *o, const kve_config *cfg)
{
    size_t kb, vb, bytes;
    kve_buffers b;
    memset(o, 0, sizeof *o);
    if (kve_buffer_bytes(cfg, KVE_LAYOUT_DEFAULT, &kb, &vb) != KVE_OK) return 0;
    if (kve_cache_size(cfg, &bytes) != KVE_OK) return 0;
    o->k = calloc(kb, 1); o->v = calloc(vb, 1); o->mem = calloc(bytes, 1);
    if (!o->k || !o->v || !o->mem) abort();
    memset(&b, 0, sizeof b);
    b.k = o->k; b.v = o->v; b.k_bytes = kb; b.v_bytes = vb;
    return kve_cache_init(cfg, &b, o->mem, bytes, &o->c) == KVE_OK;
}

static void close_cache(owned *o)
{
    free(o->k); free(o->v); free(o->mem);
}

static uint8_t *save(const kve_cache *c, size_t *n)
{
    size_t written = 0;
    uint8_t *blob;
    if (kve_state_size(c, n) != KVE_OK) FAIL("state_size failed");
    blob = (uint8_t *)malloc(*n);
    if (!blob) abort();
    if (kve_state_save(c, blob, *n, &written) != KVE_OK || written != *n) FAIL("save failed");
    return blob;
}

static void fix_checksum(uint8_t *blob, size_t n)
{
    uint64_t h = 0xcbf29ce484222325u;
    size_t i;
    int j;
    if (n < 8) return;
    for (i = 0; i + 8 <= n - 8; i += 8) {
        uint64_t w = 0;
        for (j = 7; j >= 0; j--) w = (w << 8) | blob[i + (size_t)j];
        h = (h ^ w) * 0x100000001b3u;
    }
    for (; i < n - 8; i++) h = (h ^ blob[i]) * 0x100000001b3u;
    for (j = 0; j < 8; j++) blob[n - 8 + (size_t)j] = (uint8_t)(h >> (8 * j));
}

/* a few tokens, attention and life-cycle calls driven by the input */
static void fill(kve_cache *c, reader *r, int salt)
{
    const kve_config *cfg = kve_cache_config(c);
    int32_t kvd = cfg->n_kv_heads * cfg->head_dim, hd = cfg->n_heads * cfg->head_dim, l, i;
    int steps = 1 + (int)(byte(r) % 40);
    float k[4 * 64], v[4 * 64], q[8 * 64], out[8 * 64];
    int64_t pos = 0;
    unsigned s = 12345u + (unsigned)salt;
    while (steps--) {
        unsigned op = byte(r) % 8;
        if (op == 6) {
            int64_t from = byte(r) % 48;
            kve_remove(c, from, from + 1 + byte(r) % 8);
            continue;
        }
        if (op == 7) {
            int64_t from = byte(r) % 48;
            kve_shift(c, from, from + 1 + byte(r) % 8, (int64_t)(byte(r) % 9) - 4);
            continue;
        }
        for (l = 0; l < cfg->n_layers; l++) {
            int64_t p = kve_newest_position(c, l) + 1 + (op == 5 ? 3 : 0);
            for (i = 0; i < kvd; i++) {
                s = s * 1103515245u + 12345u;
                k[i] = (float)((int)(s >> 16) % 200 - 100) / 50.0f;
                v[i] = (float)((int)(s >> 8) % 200 - 100) / 50.0f;
            }
            for (i = 0; i < hd; i++) q[i] = k[i % kvd] * 0.5f;
            if (kve_store(c, l, p, k, v, NULL) != KVE_OK) continue;
            if (op % 2 == 0) kve_attend(c, l, q, out);
            else kve_observe(c, l, 1, q, NULL);
            pos = p;
        }
        if (op == 4) kve_compress_all(c);
    }
    (void)pos;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const kve_policy_kind kinds[5] = {KVE_POLICY_FULL, KVE_POLICY_STREAMINGLLM,
                                             KVE_POLICY_SNAPKV, KVE_POLICY_PYRAMIDKV, KVE_POLICY_H2O};
    static const kve_type types[4] = {KVE_TYPE_F32, KVE_TYPE_F16, KVE_TYPE_BF16, KVE_TYPE_Q8_0};
    reader r = {data, size, 0};
    kve_config cfg;
    owned a, b;
    uint8_t *blob, *before, *now;
    size_t n, nb, nn, i, edits;
    unsigned mode;
    kve_result res;
    memset(&cfg, 0, sizeof cfg);
    cfg.n_layers = 1 + (int32_t)(byte(&r) % 2);
    cfg.n_kv_heads = 1 + (int32_t)(byte(&r) % 2);
    cfg.n_heads = cfg.n_kv_heads * (1 + (int32_t)(byte(&r) % 2));
    cfg.head_dim = (byte(&r) % 2) ? 32 : 8;
    cfg.capacity = 8 + (int32_t)(byte(&r) % 40);
    cfg.key_storage = (byte(&r) % 2) ? KVE_KEYS_PRE_ROPE : KVE_KEYS_POST_ROPE;
    cfg.k_type = types[byte(&r) % 4];
    cfg.v_type = types[byte(&r) % 4];
    if (cfg.head_dim % 32) { /* q8_0 needs 32 */
        if (cfg.k_type == KVE_TYPE_Q8_0) cfg.k_type = KVE_TYPE_F16;
        if (cfg.v_type == KVE_TYPE_Q8_0) cfg.v_type = KVE_TYPE_BF16;
    }
    cfg.policy.kind = kinds[byte(&r) % 5];
    cfg.policy.window = 2 + (int32_t)(byte(&r) % 4);
    cfg.policy.budget = cfg.policy.window + 2 + (int32_t)(byte(&r) % 6);
    if (cfg.policy.budget > cfg.capacity) cfg.policy.budget = cfg.capacity;
    cfg.policy.sinks = 1 + (int32_t)(byte(&r) % 3);
    cfg.policy.pos_shift = (byte(&r) % 2) ? KVE_POS_SHIFT_OFF : KVE_POS_SHIFT_ON;
    cfg.policy.decode = (byte(&r) % 2) ? KVE_DECODE_EVICT : KVE_DECODE_GROW;
    if (!open_cache(&a, &cfg)) { close_cache(&a); return 0; }
    if (!open_cache(&b, &cfg)) FAIL("second cache");
    fill(&a.c, &r, 1);
    fill(&b.c, &r, 2);
    blob = save(&a.c, &n);
    before = save(&b.c, &nb);

    /* the unedited blob loads, and saves back to itself */
    mode = byte(&r);
    if (mode % 4 == 0) {
        if ((res = kve_state_load(&b.c, blob, n)) != KVE_OK) FAIL("a saved state did not load: %s", kve_result_string(res));
        if (kve_check(&b.c) != KVE_OK) FAIL("a loaded state fails kve_check");
        now = save(&b.c, &nn);
        if (nn != n || memcmp(now, blob, n)) FAIL("save(load(x)) != x");
        free(now);
        free(before);
        before = save(&b.c, &nb);
    }
    /* edits */
    edits = 1 + byte(&r) % 8;
    for (i = 0; i < edits && n > 0; i++) {
        size_t at = ((size_t)byte(&r) << 8 | byte(&r)) % n;
        unsigned how = byte(&r) % 4;
        if (how == 0) blob[at] ^= (uint8_t)(1u << (byte(&r) % 8));
        else if (how == 1) blob[at] = (uint8_t)byte(&r);
        else if (how == 2) blob[at] = 0xff;
        else blob[at] = 0;
    }
    if (mode & 4) n = n > 0 ? n - 1 - byte(&r) % (n < 64 ? n : 64) : 0; /* truncated */
    if (mode & 8) fix_checksum(blob, n);
    res = kve_state_load(&b.c, blob, n);
    if (res != KVE_OK) {
        if (res != KVE_ERROR_STATE_CORRUPT && res != KVE_ERROR_STATE_FORMAT &&
            res != KVE_ERROR_STATE_CONFIG)
            FAIL("a bad state gave %s", kve_result_string(res));
        now = save(&b.c, &nn);
        if (nn != nb || memcmp(now, before, nb)) FAIL("a refused state changed the cache");
        free(now);
    } else {
        const kve_config *c = kve_cache_config(&b.c);
        float q[8 * 64], out[8 * 64];
        int32_t l, j, h;
        if (kve_check(&b.c) != KVE_OK) FAIL("an accepted state fails kve_check");
        for (j = 0; j < c->n_heads * c->head_dim; j++) q[j] = (float)(j % 7) - 3.0f;
        for (l = 0; l < c->n_layers; l++) {
            int empty = 0;
            for (h = 0; h < c->n_kv_heads; h++) empty |= kve_length(&b.c, l, h) == 0;
            if (empty) continue;
            if (kve_attend(&b.c, l, q, out) != KVE_OK) FAIL("attention after a load failed");
            for (j = 0; j < c->n_heads * c->head_dim; j++)
                if (!isfinite(out[j])) FAIL("attention after a load is not finite");
        }
    }
    free(blob);
    free(before);
    close_cache(&a);
    close_cache(&b);
    return 0;
}

#ifdef FUZZ_STANDALONE
int main(int argc, char **argv)
{
    int i;
    if (argc == 3 && !strcmp(argv[1], "--random")) {
        long n = atol(argv[2]), t;
        uint64_t s = 88172645463325252ull;
        uint8_t buf[256];
        for (t = 0; t < n; t++) {
            size_t j;
            for (j = 0; j < sizeof buf; j++) {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                buf[j] = (uint8_t)s;
            }
            LLVMFuzzerTestOneInput(buf, 16 + (size_t)(s % 240));
        }
        printf("fuzz_state: %ld random inputs passed\n", n);
        return 0;
    }
    for (i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        static uint8_t buf[1 << 16];
        size_t len;
        if (!f) { perror(argv[i]); return 2; }
        len = fread(buf, 1, sizeof buf, f);
        fclose(f);
        LLVMFuzzerTestOneInput(buf, len);
    }
    printf("fuzz_state: %d inputs passed\n", argc - 1);
    return 0;
}
#endif
