/* build/kvcase FILE [--keys pre|post] [--type T | --round T]: runs one golden case through kvevict
   and prints what the library computes, in the file's vocabulary:
     select cases: "keep <kv_head> <n> <positions ascending>" per KV head
     stream cases: "out <t> <n_heads*head_dim floats>" per step
   chunkpress cases are stored, prefilled and compressed chunk by chunk (kve_compress_chunk);
   composed cases call kve_compress_with(first policy), then kve_compress. Select cases whose
   vectors are "pre_rope" (q and k before RoPE) run with the case's `rope` layout and `rope_theta`
   and hand kvevict the vectors as given; otherwise RoPE is off (the vectors are already rotated).
   Cases with "rerotate 1" (kvpress KeyRerotationPress) then call kve_rerotate and print, after
   the keep lines, "rekey <kv_head> <n> <n*head_dim floats>" per KV head: the head's keys in
   order of their new positions 0..n-1, each as attention sees it there (kve_read_rotated_key).
   --type T stores K and V at type T (f16, bf16, q8_0); --round T instead rounds every K and V
   vector of the case through T and back, into a float cache: with keys stored before RoPE the
   two must print the same bits (tests/run.sh checks it for every case and type). A q8_0 run of a
   head_dim that is not a multiple of 32 prints "skip" and exits 3.
   The expectation lines of the file are never read. Exit 2 on a malformed file. */
#define KVEVICT_IMPLEMENTATION
#include "kvevict.h"
#include "golden_case.h"

/* --type: the storage type of K and V (f32 unless given) */
static kve_type g_type = KVE_TYPE_F32;

static void check(kve_result r, const char *what)
{
    if (r != KVE_OK) {
        fprintf(stderr, "%s: %s: %s\n", gc_file, what, kve_result_string(r));
        exit(1);
    }
}

static void *xalloc(size_t n) { return gc_alloc(n, 1); }

static kve_cache open_cache(kve_config *cfg, float **k, float **v, void **mem)
{
    size_t kbytes, vbytes, bytes;
    kve_buffers b;
    kve_cache c;
    cfg->k_type = cfg->v_type = g_type;
    check(kve_buffer_bytes(cfg, KVE_LAYOUT_DEFAULT, &kbytes, &vbytes), "config");
    check(kve_cache_size(cfg, &bytes), "config");
    *k = (float *)xalloc(kbytes);
    *v = (float *)xalloc(vbytes);
    *mem = xalloc(bytes);
    memset(&b, 0, sizeof b);
    b.k = *k; b.v = *v; b.k_bytes = kbytes; b.v_bytes = vbytes;
    check(kve_cache_init(cfg, &b, *mem, bytes, &c), "init");
    return c;
}

/* --round: every K and V vector of the case through the type and back, as a cache of that
   type stores it (the f32 run that a --type run must equal) */
static void round_vectors(float *x, long count, long d, kve_type t)
{
    long i;
    for (i = 0; i + d <= count; i += d) {
        unsigned char row[4 * 1024];
        if (kve_row_from_float(t, x + i, (int32_t)d, row) != KVE_OK ||
            kve_row_to_float(t, row, (int32_t)d, x + i) != KVE_OK)
            gc_fail("a vector does not round through the type", NULL);
    }
}

static void round_case(gc_case *gc, kve_type t)
{
    long s, kvd = gc->n_kv_heads * gc->head_dim;
    if (!strcmp(gc->kind, "select")) {
        round_vectors(gc->k, gc->k_count, gc->head_dim, t);
        round_vectors(gc->v, gc->v_count, gc->head_dim, t);
        return;
    }
    for (s = 0; s < gc->steps; s++) {
        round_vectors(gc->step[s].k, kvd, gc->head_dim, t);
        round_vectors(gc->step[s].v, kvd, gc->head_dim, t);
    }
}

static int parse_type(const char *name, kve_type *t)
{
    if (!strcmp(name, "f16")) *t = KVE_TYPE_F16;
    else if (!strcmp(name, "bf16")) *t = KVE_TYPE_BF16;
    else if (!strcmp(name, "q8_0")) *t = KVE_TYPE_Q8_0;
    else if (!strcmp(name, "f32")) *t = KVE_TYPE_F32;
    else return 0;
    return 1;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* a select case's policy or scorer name -> kind; 0 when unknown */
static int policy_kind(const char *name, kve_policy_kind *kind)
{
    if (!strcmp(name, "snapkv")) *kind = KVE_POLICY_SNAPKV;
    else if (!strcmp(name, "pyramidkv")) *kind = KVE_POLICY_PYRAMIDKV;
    else if (!strcmp(name, "h2o")) *kind = KVE_POLICY_H2O;
    else if (!strcmp(name, "knorm")) *kind = KVE_POLICY_KNORM;
    else if (!strcmp(name, "keydiff")) *kind = KVE_POLICY_KEYDIFF;
    else if (!strcmp(name, "tova")) *kind = KVE_POLICY_TOVA;
    else if (!strcmp(name, "lagkv")) *kind = KVE_POLICY_LAGKV;
    else if (!strcmp(name, "observed_attention")) *kind = KVE_POLICY_OBSERVED_ATTENTION;
    else if (!strcmp(name, "streaming_llm")) *kind = KVE_POLICY_STREAMINGLLM;
    else if (!strcmp(name, "expected_attention")) *kind = KVE_POLICY_EXPECTED_ATTENTION;
    else if (!strcmp(name, "simlayerkv")) *kind = KVE_POLICY_SIMLAYERKV;
    else return 0;
    return 1;
}

/* each KV head's kept positions, ascending: the "keep" lines a select case is judged by */
static void print_keeps(const kve_cache *c, int32_t layer, long Hk)
{
    long h;
    int32_t i;
    for (h = 0; h < Hk; h++) {
        int32_t n = kve_length(c, layer, (int32_t)h);
        int64_t *pos = (int64_t *)xalloc((size_t)n * sizeof(int64_t));
        for (i = 0; i < n; i++) pos[i] = kve_slot_position(c, layer, (int32_t)h, i);
        qsort(pos, (size_t)n, sizeof *pos, cmp_i64);
        printf("keep %ld %d", h, n);
        for (i = 0; i < n; i++) printf(" %lld", (long long)pos[i]);
        printf("\n");
        free(pos);
    }
}

/* kvpress KeyRerotationPress: renumber the kept tokens 0..n-1 and print each head's keys in that
   order, as attention sees them at their new positions (whatever the key storage) */
static void print_rekeys(kve_cache *c, int32_t layer, long Hk, long d)
{
    long h, i, j;
    float *x = (float *)xalloc((size_t)d * sizeof(float));
    check(kve_rerotate(c, layer), "rerotate");
    check(kve_check(c), "check after rerotate");
    for (h = 0; h < Hk; h++) {
        int32_t n = kve_length(c, layer, (int32_t)h), s;
        printf("rekey %ld %d", h, n);
        for (i = 0; i < n; i++) {
            for (s = 0; s < n && kve_slot_position(c, layer, (int32_t)h, s) != i; s++) {}
            if (s == n) {
                fprintf(stderr, "%s: head %ld holds no position %ld after kve_rerotate\n", gc_file, h, i);
                exit(1);
            }
            check(kve_read_rotated_key(c, layer, (int32_t)h, s, x), "read rotated key");
            for (j = 0; j < d; j++) printf(" %.9g", x[j]);
        }
        printf("\n");
    }
    free(x);
}

/* kvpress BlockPress(press=scorer) by the manual's recipe: a cache of n_kept + block_size slots
   that evicts block_size tokens whenever it is full (KVE_DECODE_EVICT), storing the prompt token
   by token, then a compression of what is left to n_kept (kve_compress_with) */
static void run_blockpress(const gc_case *gc, kve_key_storage keys)
{
    kve_config cfg;
    kve_cache c;
    kve_policy_config last;
    float *kb, *vb, *kt, *vt;
    void *mem;
    long Hk = gc->n_kv_heads, d = gc->head_dim, L = gc->q_len, t, h;
    int32_t n_kept = (int32_t)((double)L * (1.0 - gc->compression_ratio)), layer = (int32_t)gc->layer;
    memset(&cfg, 0, sizeof cfg);
    memset(&last, 0, sizeof last);
    cfg.n_layers = (int32_t)gc->n_layers;
    cfg.n_heads = (int32_t)gc->n_heads;
    cfg.n_kv_heads = (int32_t)Hk;
    cfg.head_dim = (int32_t)d;
    cfg.rope_layout = KVE_ROPE_NONE; /* the keys are already rotated */
    cfg.key_storage = keys;
    if (!policy_kind(gc->scorer, &cfg.policy.kind)) gc_fail("unknown scorer for blockpress", gc->scorer);
    cfg.capacity = n_kept + (int32_t)gc->block_size;
    cfg.policy.budget = cfg.capacity;
    cfg.policy.evict_batch = (int32_t)gc->block_size;
    cfg.policy.decode = KVE_DECODE_EVICT;
    last = cfg.policy;
    last.budget = n_kept;
    last.evict_batch = 0;
    last.decode = KVE_DECODE_GROW;
    c = open_cache(&cfg, &kb, &vb, &mem);
    kt = (float *)xalloc((size_t)(Hk * d) * sizeof(float));
    vt = (float *)xalloc((size_t)(Hk * d) * sizeof(float));
    for (t = 0; t < L; t++) {
        for (h = 0; h < Hk; h++) {
            memcpy(kt + h * d, gc->k + (h * L + t) * d, (size_t)d * sizeof(float));
            if (gc->v) memcpy(vt + h * d, gc->v + (h * L + t) * d, (size_t)d * sizeof(float));
            else memset(vt + h * d, 0, (size_t)d * sizeof(float));
        }
        check(kve_store(&c, layer, t, kt, vt, NULL), "store");
    }
    check(kve_compress_with(&c, layer, &last), "compress the last block");
    check(kve_check(&c), "check");
    print_keeps(&c, layer, Hk);
    free(kt); free(vt); free(kb); free(vb); free(mem);
}

static void run_select(const gc_case *gc, kve_key_storage keys)
{
    kve_config cfg;
    kve_cache c;
    kve_policy_config first;
    float *kb, *vb, *q, *out, *kt, *vt;
    void *mem;
    long H = gc->n_heads, Hk = gc->n_kv_heads, d = gc->head_dim, L = gc->q_len, t, h, a, b;
    long chunk = L; /* chunkpress: the prompt is stored, prefilled and compressed a chunk at a time */
    int32_t layer = (int32_t)gc->layer;
    const char *name = gc->policy;
    int composed = !strcmp(name, "composed"), chunked = !strcmp(name, "chunkpress");
    memset(&cfg, 0, sizeof cfg);
    memset(&first, 0, sizeof first);
    cfg.n_layers = (int32_t)gc->n_layers;
    cfg.n_heads = (int32_t)H;
    cfg.n_kv_heads = (int32_t)Hk;
    cfg.head_dim = (int32_t)d;
    /* the buffer holds the whole prompt; the budget may exceed it when nothing is evicted */
    cfg.capacity = (int32_t)(L > gc->capacity ? L : gc->capacity);
    if (!strcmp(gc->vectors, "pre_rope")) { /* q and k before RoPE: kvevict rotates them itself */
        if (!strcmp(gc->rope, "half")) cfg.rope_layout = KVE_ROPE_HALF;
        else if (!strcmp(gc->rope, "interleaved")) cfg.rope_layout = KVE_ROPE_INTERLEAVED;
        else gc_fail("rope must be interleaved or half", gc->rope);
        cfg.rope_theta = gc->rope_theta;
    } else {
        cfg.rope_layout = KVE_ROPE_NONE; /* the case's vectors are already rotated */
    }
    cfg.key_storage = keys;
    cfg.policy.budget = gc->capacity > 0 ? (int32_t)gc->capacity : 0;
    cfg.policy.window = gc->window > 0 ? (int32_t)gc->window : 0;
    cfg.policy.kernel = (int32_t)gc->kernel;
    cfg.policy.beta = (int32_t)gc->beta;
    cfg.policy.decode = KVE_DECODE_GROW; /* the references compress the prompt only */
    cfg.policy.compression_ratio = gc->compression_ratio;
    if (gc->alpha_safeguard >= 0.0)
        cfg.policy.alpha_safeguard = gc->alpha_safeguard == 0.0 ? KVE_NO_SAFEGUARD : gc->alpha_safeguard;
    if (gc->lag_size > 0) cfg.policy.lag_size = (int32_t)gc->lag_size;
    cfg.policy.cross_scoring = gc->cross_scoring != 0;
    if (gc->n_sink >= 0) cfg.policy.sinks = gc->n_sink == 0 ? KVE_NO_SINKS : (int32_t)gc->n_sink;
    if (gc->n_future_positions > 0) cfg.policy.n_future_positions = (int32_t)gc->n_future_positions;
    cfg.policy.no_covariance = gc->use_covariance == 0;
    cfg.policy.no_vnorm = gc->use_vnorm == 0;
    cfg.policy.epsilon = gc->epsilon;
    /* SimLayerKV's parameters by kvpress's names: n_last is the window, n_initial the sinks */
    cfg.policy.lazy_threshold = gc->lazy_threshold;
    if (gc->n_recent > 0) cfg.policy.n_recent = (int32_t)gc->n_recent;
    if (gc->n_last > 0) cfg.policy.window = (int32_t)gc->n_last;
    if (gc->n_initial >= 0) cfg.policy.sinks = gc->n_initial == 0 ? KVE_NO_SINKS : (int32_t)gc->n_initial;
    if (!strcmp(name, "chunkkv")) { /* kvpress ChunkKVPress over the scorer named by `scorer` */
        if (gc->chunk_length < 1) gc_fail("a chunkkv case needs chunk_length", NULL);
        cfg.policy.chunk_length = (int32_t)gc->chunk_length;
        name = gc->scorer;
    } else if (chunked) { /* kvpress ChunkPress over `scorer`: kve_compress_chunk */
        if (gc->chunk_length < 1) gc_fail("a chunkpress case needs chunk_length", NULL);
        if (gc->compression_ratio <= 0.0) gc_fail("a chunkpress case needs compression_ratio", NULL);
        chunk = gc->chunk_length;
        name = gc->scorer;
    } else if (composed) { /* kvpress ComposedPress([first, scorer]): kve_compress_with, kve_compress */
        if (!policy_kind(gc->first, &first.kind))
            gc_fail("unknown first policy of a composed case", gc->first);
        first.compression_ratio = gc->first_compression_ratio;
        first.decode = KVE_DECODE_GROW;
        name = gc->scorer;
    }
    if (!policy_kind(name, &cfg.policy.kind)) gc_fail("unknown policy for a select case", name);
    if (!strcmp(gc->allocation, "adakv")) cfg.policy.allocation = KVE_ALLOCATION_ADAKV;
    else if (!strcmp(gc->allocation, "pyramid")) cfg.policy.allocation = KVE_ALLOCATION_PYRAMID;
    else if (!strcmp(gc->allocation, "uniform") || !gc->allocation[0]) cfg.policy.allocation = KVE_ALLOCATION_DEFAULT;
    else gc_fail("allocation must be uniform, adakv or pyramid", gc->allocation);
    if (!strcmp(gc->pooling, "avg")) cfg.policy.pooling = KVE_POOL_AVG;
    else if (!strcmp(gc->pooling, "max")) cfg.policy.pooling = KVE_POOL_MAX;
    else if (!strcmp(gc->pooling, "none") || !gc->pooling[0]) cfg.policy.pooling = KVE_POOL_NONE;
    else gc_fail("pooling must be avg, max or none", gc->pooling);
    if (!strcmp(gc->gqa, "max")) cfg.policy.gqa = KVE_REDUCE_MAX;
    else if (!strcmp(gc->gqa, "mean") || !gc->gqa[0]) cfg.policy.gqa = KVE_REDUCE_MEAN;
    else gc_fail("gqa must be mean or max", gc->gqa);
    c = open_cache(&cfg, &kb, &vb, &mem);

    /* store the prompt's keys and values (zero when the case has none), then prefill; chunkpress:
       chunk by chunk, each stored, prefilled and compressed (kve_compress_chunk) before the next */
    kt = (float *)xalloc((size_t)(Hk * d) * sizeof(float));
    vt = (float *)xalloc((size_t)(Hk * d) * sizeof(float));
    q = (float *)xalloc((size_t)(L * H * d) * sizeof(float));
    out = (float *)xalloc((size_t)(L * H * d) * sizeof(float));
    for (t = 0; t < L; t++)
        for (h = 0; h < H; h++)
            memcpy(q + (t * H + h) * d, gc->q + (h * L + t) * d, (size_t)d * sizeof(float));
    for (a = 0; a < L; a = b) {
        b = a + chunk < L ? a + chunk : L;
        for (t = a; t < b; t++) {
            for (h = 0; h < Hk; h++) {
                memcpy(kt + h * d, gc->k + (h * L + t) * d, (size_t)d * sizeof(float));
                if (gc->v) memcpy(vt + h * d, gc->v + (h * L + t) * d, (size_t)d * sizeof(float));
            }
            check(kve_store(&c, layer, t, kt, vt, NULL), "store");
        }
        check(kve_prefill(&c, layer, (int32_t)(b - a), q + a * H * d, NULL, out + a * H * d), "prefill");
        if (chunked) check(kve_compress_chunk(&c, layer, a), "compress chunk");
    }
    if (composed) check(kve_compress_with(&c, layer, &first), "compress with the first policy");
    if (!chunked) check(kve_compress(&c, layer), "compress");
    check(kve_check(&c), "check");
    print_keeps(&c, layer, Hk);
    if (gc->rerotate) print_rekeys(&c, layer, Hk, d);
    free(kt); free(vt); free(q); free(out); free(kb); free(vb); free(mem);
}

static void run_stream(const gc_case *gc, kve_key_storage keys)
{
    kve_config cfg;
    kve_cache c;
    float *kb, *vb, *out;
    void *mem;
    long t, i, dq = gc->n_heads * gc->head_dim;
    memset(&cfg, 0, sizeof cfg);
    cfg.n_layers = 1;
    cfg.n_heads = (int32_t)gc->n_heads;
    cfg.n_kv_heads = (int32_t)gc->n_kv_heads;
    cfg.head_dim = (int32_t)gc->head_dim;
    cfg.capacity = (int32_t)(gc->sinks + gc->recent + 1); /* the attending token included */
    if (!strcmp(gc->rope, "interleaved")) cfg.rope_layout = KVE_ROPE_INTERLEAVED;
    else if (!strcmp(gc->rope, "half")) cfg.rope_layout = KVE_ROPE_HALF;
    else gc_fail("rope must be interleaved or half", gc->rope);
    cfg.rope_theta = gc->rope_theta;
    cfg.key_storage = keys;
    if (strcmp(gc->policy, "streamingllm")) gc_fail("a stream case's policy must be streamingllm", gc->policy);
    cfg.policy.kind = KVE_POLICY_STREAMINGLLM;
    cfg.policy.sinks = gc->sinks == 0 ? KVE_NO_SINKS : (int32_t)gc->sinks;
    cfg.policy.pos_shift = gc->pos_shift ? KVE_POS_SHIFT_ON : KVE_POS_SHIFT_OFF;
    c = open_cache(&cfg, &kb, &vb, &mem);
    out = (float *)xalloc((size_t)dq * sizeof(float));
    for (t = 0; t < gc->steps; t++) {
        check(kve_store(&c, 0, t, gc->step[t].k, gc->step[t].v, NULL), "store");
        check(kve_attend(&c, 0, gc->step[t].q, out), "attend");
        printf("out %ld", t);
        for (i = 0; i < dq; i++) printf(" %.9g", out[i]);
        printf("\n");
    }
    check(kve_check(&c), "check");
    free(out); free(kb); free(vb); free(mem);
}

int main(int argc, char **argv)
{
    gc_case gc;
    kve_key_storage keys = KVE_KEYS_POST_ROPE;
    kve_type round_to = KVE_TYPE_F32;
    int i, usage = argc < 2;
    for (i = 2; i < argc && !usage; i += 2) {
        if (i + 1 >= argc) usage = 1;
        else if (!strcmp(argv[i], "--keys") && !strcmp(argv[i + 1], "pre")) keys = KVE_KEYS_PRE_ROPE;
        else if (!strcmp(argv[i], "--keys") && !strcmp(argv[i + 1], "post")) keys = KVE_KEYS_POST_ROPE;
        else if (!strcmp(argv[i], "--type") && parse_type(argv[i + 1], &g_type)) continue;
        else if (!strcmp(argv[i], "--round") && parse_type(argv[i + 1], &round_to)) continue;
        else usage = 1;
    }
    if (usage) {
        fprintf(stderr, "usage: kvcase FILE [--keys pre|post] [--type T | --round T]   (T: f32 f16 bf16 q8_0)\n");
        return 2;
    }
    gc_read(argv[1], &gc, 0);
    if ((g_type == KVE_TYPE_Q8_0 || round_to == KVE_TYPE_Q8_0) && gc.head_dim % 32 != 0) {
        printf("skip: q8_0 needs a head_dim that is a multiple of 32 (this case: %ld)\n", gc.head_dim);
        gc_free(&gc);
        return 3;
    }
    if (round_to != KVE_TYPE_F32) round_case(&gc, round_to);
    if (!strcmp(gc.kind, "select") && !strcmp(gc.policy, "blockpress")) run_blockpress(&gc, keys);
    else if (!strcmp(gc.kind, "select")) run_select(&gc, keys);
    else run_stream(&gc, keys);
    gc_free(&gc);
    return 0;
}
