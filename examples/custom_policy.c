/* custom_policy.c - an eviction policy of your own: as a scorer (a score per token; the library
   allocates, selects and keeps the books), or through kve_policy_vtable (full control).

   The policy keeps the tokens whose keys have the smallest L2 norm: low-norm keys tend to draw
   the most attention. When a layer is full, the new token overwrites, in each KV head, the token
   with the largest key norm, except the `recent` newest tokens, which always stay.
   The demo streams random vectors through two small caches, one per way of writing the policy,
   checks what they kept, and that both kept the same tokens. No files needed.
   Build and run: make build/custom_policy && build/custom_policy */
#define KVEVICT_IMPLEMENTATION
#include "kvevict.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* ---- the policy ------------------------------------------------------------------------------ */
enum { HEAD_DIM_MAX = 256 };

typedef struct l2_policy {
    int32_t n_kv_heads, head_dim;
    int32_t recent; /* the newest tokens, the incoming one included, are never evicted */
} l2_policy;

/* squared norm of a stored key (stored after RoPE, which keeps the norm), at any storage type */
static float key_norm2(const kve_cache *c, int32_t layer, int32_t h, int32_t slot, int32_t d)
{
    float k[HEAD_DIM_MAX], s = 0.0f;
    kve_read_key(c, layer, h, slot, k);
    for (int32_t i = 0; i < d; i++) s += k[i] * k[i];
    return s;
}

/* kve_store() calls this when `layer` is full: name, per KV head, the slot to overwrite */
static kve_result l2_make_room(kve_cache *c, int32_t layer, int32_t *write_slot, void *user)
{
    const l2_policy *p = (const l2_policy *)user;
    for (int32_t h = 0; h < p->n_kv_heads; h++) {
        int32_t n = kve_length(c, layer, h), worst = -1;
        int64_t newest = -1;
        float worst_norm = -1.0f;
        for (int32_t s = 0; s < n; s++)
            if (kve_slot_position(c, layer, h, s) > newest)
                newest = kve_slot_position(c, layer, h, s);
        for (int32_t s = 0; s < n; s++) {
            if (kve_slot_position(c, layer, h, s) > newest + 1 - p->recent) continue; /* recent */
            float norm = key_norm2(c, layer, h, s, p->head_dim);
            if (norm > worst_norm) {
                worst_norm = norm;
                worst = s;
            }
        }
        if (worst < 0) return KVE_ERROR_POLICY_FAILED;
        write_slot[h] = worst;
    }
    return KVE_OK;
}

/* no compress(): this policy acts only when a layer is full (wants_scores 0: no attention sums) */
static const kve_policy_vtable l2_vtable = {"l2norm", 0, l2_make_room, NULL};

/* ---- the same policy as a scorer: this is all a new method needs --------------------------- */
/* higher scores are kept: minus the key's length. The newest tokens are protected by the policy's
   window, the budget and the schedule by its configuration (see main). */
static kve_result short_keys_scorer(const kve_cache *c, int32_t layer, int32_t h, float *score,
                                    void *user)
{
    int32_t d = kve_cache_config(c)->head_dim;
    (void)user;
    for (int32_t s = 0; s < kve_length(c, layer, h); s++) {
        float k[HEAD_DIM_MAX], n2 = 0.0f;
        kve_result r = kve_read_rotated_key(c, layer, h, s, k); /* as attention sees it */
        if (r != KVE_OK) return r;
        for (int32_t i = 0; i < d; i++) n2 += k[i] * k[i];
        score[s] = -n2;
    }
    return KVE_OK;
}

/* ---- the demo: random keys of random lengths through a one-layer cache ---------------------- */
enum { HEADS = 4, KV_HEADS = 2, HEAD_DIM = 16, CAPACITY = 12, RECENT = 4, TOKENS = 300 };

static float rnd(void) /* uniform in [-1, 1), deterministic */
{
    static uint32_t s = 12345u;
    s = s * 1664525u + 1013904223u;
    return (float)(s >> 8) / 8388608.0f - 1.0f;
}

int main(void)
{
    static float norm[TOKENS][KV_HEADS];
    l2_policy pol = {KV_HEADS, HEAD_DIM, RECENT};
    kve_config cfg = {.n_layers = 1, .n_heads = HEADS, .n_kv_heads = KV_HEADS,
                      .head_dim = HEAD_DIM, .capacity = CAPACITY,
                      .policy = {.kind = KVE_POLICY_CUSTOM, .custom = &l2_vtable,
                                 .custom_user = &pol}};
    size_t k_bytes, v_bytes, bytes;
    kve_cache cache;
    kve_result r;
    if ((r = kve_buffer_bytes(&cfg, KVE_LAYOUT_DEFAULT, &k_bytes, &v_bytes)) != KVE_OK ||
        (r = kve_cache_size(&cfg, &bytes)) != KVE_OK) {
        fprintf(stderr, "error: %s\n", kve_result_string(r));
        return 1;
    }
    void *kbuf = malloc(k_bytes), *vbuf = malloc(v_bytes);
    void *mem = malloc(bytes);
    kve_buffers buf = {.k = kbuf, .v = vbuf, .k_bytes = k_bytes, .v_bytes = v_bytes};
    if (!kbuf || !vbuf || !mem || (r = kve_cache_init(&cfg, &buf, mem, bytes, &cache)) != KVE_OK) {
        fprintf(stderr, "error: %s\n",
                kbuf && vbuf && mem ? kve_result_string(r) : "out of memory");
        return 1;
    }
    /* the scorer: evict one token each time the layer is full, the incoming one and the
       RECENT - 1 before it protected (the vtable policy's rule) */
    kve_config scfg = cfg;
    scfg.policy = (kve_policy_config){.kind = KVE_POLICY_SCORER, .scorer = short_keys_scorer,
                                      .window = RECENT - 1, .decode = KVE_DECODE_EVICT,
                                      .evict_batch = 1};
    size_t sbytes;
    kve_cache scored;
    if ((r = kve_cache_size(&scfg, &sbytes)) != KVE_OK) {
        fprintf(stderr, "error: %s\n", kve_result_string(r));
        return 1;
    }
    void *skbuf = malloc(k_bytes), *svbuf = malloc(v_bytes), *smem = malloc(sbytes);
    kve_buffers sbuf = {.k = skbuf, .v = svbuf, .k_bytes = k_bytes, .v_bytes = v_bytes};
    if (!skbuf || !svbuf || !smem ||
        (r = kve_cache_init(&scfg, &sbuf, smem, sbytes, &scored)) != KVE_OK) {
        fprintf(stderr, "error: %s\n",
                skbuf && svbuf && smem ? kve_result_string(r) : "out of memory");
        return 1;
    }
    for (int t = 0; t < TOKENS; t++) {
        float k[KV_HEADS * HEAD_DIM], v[KV_HEADS * HEAD_DIM];
        float q[HEADS * HEAD_DIM], out[HEADS * HEAD_DIM];
        for (int h = 0; h < KV_HEADS; h++) {
            float scale = 1.5f + rnd(), s = 0.0f; /* keys of different lengths */
            for (int i = 0; i < HEAD_DIM; i++) {
                k[h * HEAD_DIM + i] = scale * rnd();
                v[h * HEAD_DIM + i] = rnd();
                s += k[h * HEAD_DIM + i] * k[h * HEAD_DIM + i];
            }
            norm[t][h] = sqrtf(s);
        }
        for (int i = 0; i < HEADS * HEAD_DIM; i++) q[i] = rnd();
        if ((r = kve_store(&cache, 0, t, k, v, NULL)) != KVE_OK ||
            (r = kve_attend(&cache, 0, q, out)) != KVE_OK ||
            (r = kve_store(&scored, 0, t, k, v, NULL)) != KVE_OK ||
            (r = kve_attend(&scored, 0, q, out)) != KVE_OK) {
            fprintf(stderr, "error at token %d: %s\n", t, kve_result_string(r));
            return 1;
        }
    }

    /* every older token kept must be shorter than every older token evicted */
    int ok = kve_check(&cache) == KVE_OK;
    for (int h = 0; h < KV_HEADS; h++) {
        float longest_kept = 0.0f, shortest_gone = INFINITY;
        int kept[TOKENS] = {0};
        printf("KV head %d keeps:", h);
        for (int s = 0; s < kve_length(&cache, 0, h); s++) {
            int p = (int)kve_slot_position(&cache, 0, h, s);
            kept[p] = 1;
            printf(" %d (|k| %.2f)", p, norm[p][h]);
        }
        for (int p = 0; p <= TOKENS - 1 - RECENT; p++) {
            if (kept[p] && norm[p][h] > longest_kept) longest_kept = norm[p][h];
            if (!kept[p] && norm[p][h] < shortest_gone) shortest_gone = norm[p][h];
        }
        for (int p = TOKENS - RECENT; p < TOKENS; p++) ok = ok && kept[p];
        printf("\n  longest older key kept %.3f, shortest evicted %.3f\n", longest_kept,
               shortest_gone);
        ok = ok && longest_kept < shortest_gone;
        /* the scorer kept the same tokens */
        int same = kve_length(&scored, 0, h) == kve_length(&cache, 0, h);
        for (int s = 0; s < kve_length(&scored, 0, h); s++)
            same = same && kept[kve_slot_position(&scored, 0, h, s)];
        printf("  the scorer kept %s\n", same ? "the same tokens" : "OTHER tokens");
        ok = ok && same;
    }
    printf(ok ? "ok: the %d newest tokens and the shortest older keys are kept, by both\n"
              : "FAILED: a cache does not hold the %d newest and the shortest older keys\n",
           RECENT);
    free(skbuf);
    free(svbuf);
    free(smem);
    free(kbuf);
    free(vbuf);
    free(mem);
    return ok ? 0 : 1;
}
