/* minimal.c - the calls an engine makes to kvevict, on a made-up model; no files needed.

   A two-layer model with deterministic weights, 4 query heads sharing 2 KV heads, decoding
   greedily for 40 tokens through a StreamingLLM cache of 16 tokens (4 attention sinks + the 12
   most recent). Per token and layer, the engine computes q, k and v BEFORE RoPE, then:
       kve_store(&cache, layer, pos, k, v, NULL);   // evicts if the layer is full, writes k and v
       kve_attend(&cache, layer, q, out);          // RoPE, grouped-query attention over the cache
   Build and run: make build/minimal && build/minimal */
#define KVEVICT_IMPLEMENTATION
#include "kvevict.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

enum { LAYERS = 2, HEADS = 4, KV_HEADS = 2, HEAD_DIM = 8, DIM = HEADS * HEAD_DIM,
       KV_DIM = KV_HEADS * HEAD_DIM, VOCAB = 32, CAPACITY = 16, STEPS = 40 };

/* out[rows] = W x, W a made-up matrix numbered `matrix` */
static void matvec(float *out, const float *x, int matrix, int rows, int cols)
{
    for (int r = 0; r < rows; r++) {
        out[r] = 0.0f;
        for (int c = 0; c < cols; c++)
            out[r] += 0.5f * sinf(1.0f + 7.1f * matrix + 1.3f * r + 0.71f * c * (r % 5 + 1)) * x[c];
    }
}

/* the made-up embedding, shared with the classifier */
static float embedding(int token, int i)
{
    return sinf(0.37f * (float)(token * DIM + i) + 0.5f * (float)i);
}

static void normalize(float *x, int n)
{
    float ss = 0.0f;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    for (int i = 0; i < n; i++) x[i] /= sqrtf(ss / (float)n + 1e-5f);
}

#define CHECK(call)                                                                 \
    do {                                                                            \
        kve_result r_ = (call);                                                     \
        if (r_ != KVE_OK) {                                                         \
            fprintf(stderr, "error: %s: %s\n", #call, kve_result_string(r_));       \
            return 1;                                                               \
        }                                                                           \
    } while (0)

int main(void)
{
    /* 1. describe the cache: model shape, capacity, policy (zero fields take defaults) */
    kve_config cfg = {.n_layers = LAYERS, .n_heads = HEADS, .n_kv_heads = KV_HEADS,
                      .head_dim = HEAD_DIM, .capacity = CAPACITY,
                      .policy = {.kind = KVE_POLICY_STREAMINGLLM, .sinks = 4}};

    /* 2. the K/V buffers are yours (llama2.c layout); kvevict's bookkeeping needs `bytes` more */
    size_t k_bytes, v_bytes, bytes;
    CHECK(kve_buffer_bytes(&cfg, KVE_LAYOUT_DEFAULT, &k_bytes, &v_bytes));
    CHECK(kve_cache_size(&cfg, &bytes));
    float *key_cache = malloc(k_bytes);   /* float32 K/V: the default k_type and v_type */
    float *value_cache = malloc(v_bytes);
    void *mem = malloc(bytes);
    if (!key_cache || !value_cache || !mem) return 1;
    kve_buffers buf = {.k = key_cache, .v = value_cache, .k_bytes = k_bytes, .v_bytes = v_bytes};
    kve_cache cache;
    CHECK(kve_cache_init(&cfg, &buf, mem, bytes, &cache));

    /* 3. the per-token loop */
    int token = 1;
    for (int64_t pos = 0; pos < STEPS; pos++) {
        float x[DIM], h[DIM], q[DIM], k[KV_DIM], v[KV_DIM], att[DIM], out[DIM], logits[VOCAB];
        for (int i = 0; i < DIM; i++) x[i] = embedding(token, i);
        for (int l = 0; l < LAYERS; l++) {
            for (int i = 0; i < DIM; i++) h[i] = x[i];
            normalize(h, DIM);
            matvec(q, h, 4 * l + 1, DIM, DIM);
            matvec(k, h, 4 * l + 2, KV_DIM, DIM);
            matvec(v, h, 4 * l + 3, KV_DIM, DIM);
            CHECK(kve_store(&cache, l, pos, k, v, NULL));
            CHECK(kve_attend(&cache, l, q, att));
            matvec(out, att, 4 * l + 4, DIM, DIM);
            for (int i = 0; i < DIM; i++) x[i] += out[i];
        }
        normalize(x, DIM);
        for (int t = 0; t < VOCAB; t++) {
            logits[t] = 0.0f;
            for (int i = 0; i < DIM; i++) logits[t] += embedding(t, i) * x[i];
        }
        int next = 0;
        for (int i = 1; i < VOCAB; i++)
            if (logits[i] > logits[next]) next = i;
        printf("pos %2d: token %2d -> %2d   cache: %2d tokens, %zu bytes of K/V\n", (int)pos, token,
               next, kve_length(&cache, 0, 0), kve_bytes_in_use(&cache));
        token = next;
    }

    /* 4. what the cache holds now: the sinks and the most recent tokens */
    printf("positions in layer 0, KV head 0:");
    for (int s = 0; s < kve_length(&cache, 0, 0); s++)
        printf(" %d", (int)kve_slot_position(&cache, 0, 0, s));
    printf("\n");
    CHECK(kve_check(&cache));
    free(key_cache);
    free(value_cache);
    free(mem);
    return 0;
}
