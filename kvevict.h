/* kvevict.h - KV-cache eviction for LLM inference engines, in one C11 header.
   MIT licence at the end of this file.

   RoPE (interleaved and half layouts), grouped-query attention, and eviction policies
   (StreamingLLM, SnapKV, PyramidKV, H2O, your own) over K/V buffers the caller owns.

   DO THIS
   -------
   In exactly one C or C++ file:
       #define KVEVICT_IMPLEMENTATION
       #include "kvevict.h"
   Everywhere else include it without the define. Link with -lm. Compile with -fopenmp to run
   attention over heads, and long heads over chunks of their tokens, in parallel (results are
   bit-identical with and without OpenMP). Compile that file with optimisation (-O2 is enough:
   the kernels do not wait for -O3's vectoriser) and your target's vector instructions
   (-march=native, or -mavx512f -mf16c): AVX-512 kernels read every storage type, F16C converts
   f16; without them the kernels are portable C.

   OPTIONS (define before the include that has KVEVICT_IMPLEMENTATION)
       KVEVICT_STATIC      every function becomes static (private to that file)
       KVEVICT_NO_OPENMP   ignore OpenMP even when compiling with -fopenmp
       KVEVICT_CACHED_BYTES  K/V bytes (all layers) a last-level cache keeps between two decode
                           steps (default 64 MiB); past it, float rows are prefetched ahead
                           (with AVX-512, only by the kernels that sum several query heads or
                           rotate keys: one head's keys stream better without), and with
                           AVX-512 one query head per KV head rotates pre-RoPE keys by the
                           angle table's first rows (see HISTORY 0.5.3; judged at f32 size)

   QUICK START: the calls an engine makes
   --------------------------------------
       kve_config cfg = { .n_layers = 5, .n_heads = 8, .n_kv_heads = 4, .head_dim = 8,
                          .capacity = 256,
                          .policy = { .kind = KVE_POLICY_STREAMINGLLM, .sinks = 4 } };
       size_t kb, vb; kve_buffer_bytes(&cfg, KVE_LAYOUT_DEFAULT, &kb, &vb);
       kve_buffers buf = { .k = key_cache, .v = value_cache,        // your buffers
                           .k_bytes = kb, .v_bytes = vb };           // their sizes
       size_t bytes; kve_cache_size(&cfg, &bytes);                  // bookkeeping size
       void *mem = malloc(bytes);                                    // yours, 64-byte aligned is best
       kve_cache cache; kve_result r = kve_cache_init(&cfg, &buf, mem, bytes, &cache);
       if (r != KVE_OK) fprintf(stderr, "%s\n", kve_result_string(r));
       for each token at position pos:
           for each layer l:
               ... compute q (n_heads*head_dim), k and v (n_kv_heads*head_dim), all BEFORE RoPE
               kve_store(&cache, l, pos, k, v, NULL);   // evicts if full, writes k/v into a slot
               kve_attend(&cache, l, q, att_out);       // applies RoPE to q and keys as needed
       after a prompt (SnapKV, PyramidKV, H2O): kve_prefill() per layer, then kve_compress_all().

   MEMORY AND LAYOUT
   -----------------
   The K and V buffers are the caller's: head_dim contiguous values per vector, stored as
   cfg.k_type / cfg.v_type (kve_type: f32 by default, f16, bf16, or ggml's q8_0 blocks). Where the
   vector of (layer, kv_head, slot) lives is given by strides in bytes (kve_buffers):
       KVE_LAYOUT_DEFAULT      llama2.c: [layer][slot][kv_head][head_dim]
       KVE_LAYOUT_HEAD_MAJOR   [layer][kv_head][slot][head_dim]
       KVE_LAYOUT_STRIDES      your own k_/v_layer_stride, k_/v_head_stride, k_/v_slot_stride
   kve_buffer_bytes() gives the sizes of the two packed layouts. The library reads and writes only
   inside [k, k + k_bytes) and [v, v + v_bytes); init checks that every vector fits, that no two
   overlap and that buffers and strides are aligned for their type (4 bytes for f32, 2 for the
   others). Everything else the library needs (a 64-bit position per slot, a length per layer and
   KV head, recorded queries, scores, scratch) lives in the block `mem` whose size
   kve_cache_size() reports. The library never allocates.

   STORAGE TYPES
   -------------
   Vectors are converted when stored (f16 and bf16 round to nearest even; q8_0 as ggml's
   quantize_row_q8_0_ref: per 32 values an f16 scale d = max|x| / 127 and int8 round(x / d), so
   buffers can be exchanged with a ggml cache) and read back as float32; every sum is float32.
   kve_row_from_float() / kve_row_to_float() are those conversions; kve_read_key() /
   kve_read_value() read a stored vector. A value the type cannot hold (f16 from 65520 on; q8_0
   when max|x| / 127 would) is KVE_ERROR_OUT_OF_TYPE_RANGE; post-RoPE keys are judged by each
   rotated pair's norm, which bounds them at every position. StreamingLLM's pre-RoPE sink copies
   stay float32, so re-rotated sinks are rounded once. q8_0 needs head_dim a multiple of 32.
   Built with F16C, the f16 kernels convert rows inside their sums: the same bits as converting
   first and as the portable build, as long as the compiler does not fuse a * b + c into one
   rounding by itself (clang: never, the implementation turns it off; gcc: with -std=c11 or
   -ffp-contract=off; g++ and gcc -std=gnu11 fuse unless given -ffp-contract=off). Built with
   AVX-512, attention reads every type (f32 too) through kernels that convert in registers and
   use fused multiply-adds: within such a build a typed cache still gives exactly what a float
   cache holding the type-rounded rows gives, and thread counts agree bit for bit, but its last
   bits differ from the portable build's (both stay within float rounding of a double-precision
   reference). KVEVICT_NO_SIMD builds the portable kernels only.

   Slots: each (layer, KV head) holds its tokens in slots 0 .. len-1, in no particular order (after
   eviction slot != position); every slot knows its position. KV heads of one layer may keep
   different tokens, and layers different counts (PyramidKV).

   RoPE
   ----
   freq_i = theta^(-2i/rope_dims), angle = (pos / rope_linear_factor) * freq_i, formed in double
   precision, so a key at position 10^7 rotates as accurately as one at 10.
       KVE_ROPE_INTERLEAVED  pairs (x[2i], x[2i+1])          llama2.c, Meta, GPT-J, ggml normal
       KVE_ROPE_HALF         pairs (x[i], x[i + rope_dims/2])  HF rotate_half, GPT-NeoX, ggml neox
       KVE_ROPE_NONE         no rotation (vectors already rotated by the engine, or no RoPE)
   Keys are stored KVE_KEYS_POST_ROPE (rotated once when stored, llama2.c style) or
   KVE_KEYS_PRE_ROPE (rotated while attending, at their effective position). Either way you pass
   kve_store() and kve_attend() vectors BEFORE RoPE; the library rotates.

   POLICIES (kve_policy_config; zero fields take the defaults shown)
   ---------------------------------------------------------------
   budget: tokens kept per (layer, KV head) including window or sinks; default = capacity.
       KVE_POLICY_FULL         no eviction; kve_store() returns KVE_ERROR_CACHE_FULL when full.
       KVE_POLICY_STREAMINGLLM sinks (4; KVE_NO_SINKS for 0) + the most recent tokens, the current one
                               included: budget = sinks + recent + 1. pos_shift (default on)
                               places the sinks right before the oldest recent token, which is the
                               original's renumbering by cache order. Pre-RoPE keys are rotated at
                               cache-order positions; post-RoPE caches re-rotate only the sink keys,
                               from a pre-RoPE copy, so each step costs O(sinks), not O(window).
                               Eviction overwrites the oldest recent slot: nothing else moves.
       KVE_POLICY_SNAPKV       after prefill, kve_compress(): if len < budget keep all; else score the
                               prefix by the softmax weight the last `window` (32) queries give it,
                               group-reduce over the query heads of a KV head (gqa: mean or max),
                               pool along tokens (kernel 7, odd; pooling max or avg, zero-padded
                               like torch avg_pool1d), keep the top budget-window and the window.
       KVE_POLICY_PYRAMIDKV    SnapKV's scoring with per-layer budgets (beta 20); see
                               kve_pyramid_budgets(). n_layers = 1 keeps budget-window, like SnapKV.
       KVE_POLICY_H2O          prompt: score = attention summed over ALL prefill queries, no pooling,
                               keep top budget-window + last window. decode: keep heavy hitters by
                               accumulated attention + the window most recent tokens, evicting one
                               slot per token.
       KVE_POLICY_CUSTOM       your kve_policy_vtable (see examples/custom_policy.c).
       KVE_POLICY_SIMLAYERKV   after prefill, kve_compress(): a lazy layer keeps its sinks and
                               recent tokens, any other all of them (SCORERS AND ALLOCATIONS).
   decode: KVE_DECODE_GROW (SnapKV/PyramidKV default, as their references: compress the prompt, then
   the cache grows until capacity; StreamingLLM then keeps the whole prompt until kve_compress, which
   keeps the sinks and the newest budget - sinks tokens, a prompt compression like the others) or
   KVE_DECODE_EVICT (StreamingLLM and H2O default; for SnapKV/PyramidKV, when a layer reaches its
   budget it is re-scored with the most recent `window` queries as the observation window and
   shrunk by evict_batch tokens, default window; PyramidKV layers use the schedule of a long
   prompt, kve_layer_budget(). With evict_batch = window those queries are exactly the decode
   steps since the last eviction, whose softmax weights kve_attend sums as it goes: the eviction
   then costs a selection, not `window` more attentions; after a prefill, kve_observe or a
   removal the window is re-attended once). Scoring needs attention, so a prompt stored
   before a layer's first kve_prefill/kve_attend may fill the whole capacity (custom policies
   too); from then on, or after kve_compress, the layer stays within its budget.
   Ties between equal scores are broken towards the lower position, deterministically.
   Differences from the references, on purpose: StreamingLLM evicts when the next token is stored
   rather than right after attention (the same tokens are attended); PyramidKV with n_layers = 1
   (a division by zero in the reference) keeps budget - window like SnapKV; the PyramidKV floor
   quirks are kept (the mean budget slightly exceeds C; deep layers may keep only the window).

   SCORERS AND ALLOCATIONS
   -----------------------
   Every selecting policy is a scorer (what a token is worth) x an allocation (how many tokens
   each layer and KV head keeps) x a schedule (kve_compress once; KVE_DECODE_EVICT: re-score when
   a layer reaches its budget and free evict_batch slots) over one selection step. The scorers
   follow NVIDIA kvpress at commit 8bb29b9 (golden cases made by running it are in tests/golden):
       SNAPKV, PYRAMIDKV       the recorded window's attention (above); H2O: attention summed
       KVE_POLICY_KNORM        -||k||: keeps the keys of smallest norm
       KVE_POLICY_KEYDIFF      -cos(k, mean over the head's tokens of k/||k||), rotated keys
       KVE_POLICY_TOVA         the newest query's attention averaged over ALL query heads (every KV
                               head then keeps the same tokens); its own token is always kept
       KVE_POLICY_RANDOM       uniform in [0, 1) from (seed, layer, head, position): reproducible
       KVE_POLICY_LAGKV        sinks (`sinks`, 4) and the last lag_size (128) tokens with the
                               remainder score 1; each earlier lag is scored against the next:
                               (x - min) / (max - min) of the next lag per dimension, standard
                               deviation over dimensions (unbiased), softmax over the lag, keys
                               and values averaged, then rank / lag_size (cross_scoring: the
                               value). Fewer than sinks + 2 lags: sinks 1, the rest by age.
       KVE_POLICY_OBSERVED_ATTENTION  attention summed over the queries, divided by how many could
                               see the token (newest - position + 1), group-reduced (mean)
       KVE_POLICY_EXPECTED_ATTENTION  the attention future queries should pay: the mean mu and
                               covariance S of every query past the first `sinks` (4), the RoPE
                               rotation averaged over the next n_future_positions (512) positions
                               Rm, then per query head softmax over keys past the sinks of
                               (Rm mu).k / sqrt(d) + k^T Rm S Rm^T k / (2 d), group mean, + epsilon,
                               times ||v|| (no_covariance, no_vnorm drop those terms); the sinks
                               are kept. The statistics cost n_heads*head_dim^2 doubles a layer and
                               keep counting removed queries (kve_remove cannot take them out).
       KVE_POLICY_SCORER       your kve_scorer_fn (see examples/custom_policy.c)
   These scorers keep kvpress's defaults: window 0 protects nothing (set window to keep the newest
   tokens), no pooling (set pooling and kernel to pool), gqa mean, decode GROW. The keys they
   read are the rotated ones (kve_read_rotated_key), so both key storages select alike.
   Budgets: `budget` tokens per head, or compression_ratio r > 0: a prompt compression keeps
   int(len * (1 - r)) per head (at least the newest token when the policy protects it), kvpress's
   rule (PyramidKV then uses kvpress's per-layer formula, with Python's round(); StreamingLLM
   keeps the sinks and int(len * (1 - r)) - sinks newest).
   Allocations (policy.allocation):
       KVE_ALLOCATION_UNIFORM  every head its budget (the default)
       KVE_ALLOCATION_PYRAMID  PyramidKV's layer budgets over any scorer (PyramidKV's default);
                               evicting while decoding, every layer's budget must be >= 1
                               (else KVE_ERROR_INVALID_PARAMETER at kve_init)
       KVE_ALLOCATION_ADAKV    kvpress AdaKVPress: the layer keeps heads x target tokens chosen over
                               all its KV heads at once; each head first keeps its protected tokens
                               and its int(target * alpha_safeguard) best (0.20; protected ones
                               count among them). Heads really keep different counts, so the
                               memory is freed (kvpress only masks); prompt compression only.
   Composition (kvpress ComposedPress): kve_compress_with(cache, layer, &other_policy) compresses
   with another policy's scorer, allocation and budget or ratio; then kve_compress (or another
   kve_compress_with) goes on from what it kept.
   Positions (kvpress KeyRerotationPress, StreamingLLM's pos-shift for any policy): kve_rerotate
   after a compression (or any eviction) renumbers each head's kept tokens 0, 1, ... and re-rotates
   post-RoPE keys; the engine goes on at kve_newest_position() + 1. Without it the kept tokens keep
   their original positions.
   Per-layer budgets (kvpress PerLayerCompressionPress): kve_compress_with(cache, l, &policy) with
   each layer's own compression_ratio (or budget), the cache's policy otherwise unchanged.
   Lazy layers (kvpress SimLayerKVPress, KVE_POLICY_SIMLAYERKV): kve_compress of a layer holding
   n > sinks + n_recent + window tokens averages the softmax weights of its last `window` (1)
   recorded queries over them and over every query head, and sums them over the first `sinks`
   (4) tokens and the n_recent (1024) tokens before the last `window`. Above lazy_threshold (0 =
   1.0, which never compresses, as kvpress) the layer keeps its first `sinks` and its newest
   n_recent - window tokens; otherwise all of them. Decode GROW only; the capacity must hold the
   prompt. n_recent must exceed window (at n_recent = window kvpress keeps every key and the sinks
   twice). A threshold of 0 means the default 1; for a layer lazy at any attention give a tiny one
   (1e-9). Golden cases 61-63.
   Block-wise prompt compression (kvpress BlockPress; with KVE_POLICY_KEYDIFF, the KeyDiff
   paper's method): a cache of n_kept + block slots, budget the same, decode KVE_DECODE_EVICT and
   evict_batch = block. Storing the prompt token by token, each time the layer is full it is
   re-scored and block tokens go, as BlockPress scores its n_kept kept tokens together with each
   next block; after the last token, kve_compress_with(cache, l, &policy with budget n_kept)
   scores what is left. The cache never holds more than n_kept + block tokens (kvpress computes
   the whole prompt first). Golden cases 64-65 (KeyDiff, a last block cut short).
   Chunked prompt compression (kvpress ChunkPress): store and prefill the prompt a chunk at a
   time and call kve_compress_chunk(cache, layer, first position of the chunk) after each; the
   chunk keeps max(1, int(m * (1 - compression_ratio))) of its m tokens, scored as if it were the
   whole prompt (the window's softmax over the chunk's keys, keydiff's mean and LagKV's lags over
   the chunk), and nothing before it moves, so the capacity need only hold the compressed prompt
   plus one chunk. H2O and observed_attention score with the attention accumulated so far (kvpress
   refuses them in ChunkPress); kvpress rotates an earlier chunk's window queries at the prompt's
   last positions, kvevict at their own.
   chunk_length > 0 is kvpress ChunkKVPress: every head keeps the same whole chunks, those whose
   mean score summed over KV heads is highest, int(chunks * (1 - r)) of them (at least one; with a
   budget, that share of the chunks). Ties: lower head, then lower position.
   Deliberate differences from kvpress: ties go to the lower position (torch.topk's choice among
   equal scores is unspecified); random draws from its own generator, not torch's; one-layer
   PyramidKV falls back to the uniform count (kvpress divides by zero); observed_attention counts
   the queries by distance, which a kve_shift changes; scores are formed in double precision.
   kvpress's scorers protect nothing, so a compression may drop the newest token: it stays the
   layer's newest position (the next token is stored after it).

   USING YOUR OWN ATTENTION KERNEL
   -------------------------------
   kvevict can store, score and evict while your kernel (flash attention, ggml, a GPU) attends.
   Per layer, per step, instead of kve_attend / kve_prefill:
       kve_store(&cache, l, pos, k, v, NULL);            // or kve_store_n for a chunk
       int64_t qpos, key_pos[capacity];
       for each KV head h:
           kve_attention_positions(&cache, l, h, &qpos, key_pos);
           for slot s in 0 .. kve_length(&cache, l, h) - 1:
               key   = kve_read_key(..., s)   (or kve_key(): the raw row at cfg.k_type)
               if key_pos[s] >= 0: kve_rope_apply(cfg, key, key_pos[s])
               value = kve_read_value(..., s)
           for each query head g of h (g / (n_heads / n_kv_heads) == h):
               if qpos >= 0: kve_rope_shift(cfg, q_g, qpos)   // a query at position p of a
                                                              // prefill: qpos + p - newest (with
                                                              // pos-shift it can be below 0: shift)
               w = softmax over the slots (a prefill query sees slots whose
                   kve_slot_position <= p) of dot(q_g, key) / sqrt(head_dim)
               out_g = sum over slots of w[s] * value[s]
       kve_observe(&cache, l, n_queries, q, NULL);        // the queries, BEFORE RoPE
       if (kve_scores(&cache, l, 0))                      // H2O, or a custom policy's scores
           kve_accumulate(&cache, l, weights);            // [n_heads][capacity] by slot
   after a prompt: kve_compress_all(&cache), as with kve_prefill.
   That is exactly what kve_attend computes (tests/test_lifecycle.c checks it to 1e-5 for every
   policy, key storage and pos-shift setting). Keys stored post-RoPE come back rotated (key_pos -1):
   with pos-shift off that is every slot, and with it on the library has already re-rotated the
   sinks in the buffer. Pre-RoPE keys are rotated at cache-order positions when pos-shift is on
   (which is why the positions come from kve_attention_positions, not from kve_slot_position).
   kve_observe marks the layer attended, as kve_attend does: from then on it is kept within its
   budget. Weights of several queries may be summed before kve_accumulate.

   SEQUENCE LIFE CYCLE
   -------------------
       kve_store_n(c, l, n, pos, k, v)  n tokens in one call; all checked before the first is stored
                                        (an eviction failing part-way, e.g. KVE_ERROR_CACHE_FULL,
                                        leaves the tokens before it stored: see kve_newest_position)
       kve_remove(c, from, to)          forget positions [from, to) in every layer (llama.cpp's
                                        seq_rm): speculative decoding's rejected drafts, regenerate,
                                        an edited turn. Storing resumes above the newest kept token.
       kve_shift(c, from, to, delta)    renumber positions [from, to) by delta (seq_add, "context
                                        shift"), re-rotating post-RoPE keys; positions may not
                                        overlap or change order (KVE_ERROR_SHIFT_ORDER)
       kve_cache_copy(dst, src)         fork: dst (same configuration, its own buffers, any layout)
                                        becomes an independent copy (beam search, parallel sampling)
       kve_state_size/save/load         a saved session or prompt cache (format below)
   Speculative decoding, rejecting the last j of n draft tokens:
       for (i = 0; i < n; i++) for each layer: kve_store(...); kve_attend(...);  // the drafts
       kve_remove(&cache, first_draft_pos + n - j, INT64_MAX);                  // reject j
   After kve_remove the cache is bit for bit the cache that never held the removed tokens when
   nothing was evicted since they were stored and they are the newest (a rejected draft), for every
   policy but those that sum what queries saw: H2O, observed_attention, a vtable with wants_scores
   keep the attention the removed tokens' queries gave to kept ones, and expected_attention keeps
   those queries in its statistics, so their later evictions can differ. What cannot be undone:
   tokens evicted to make room for the removed ones stay evicted; SnapKV/PyramidKV keep only
   `window` recorded queries, so removing recent ones leaves fewer until
   new ones are recorded; a layer first attended by a removed token stays kept within its budget;
   after a removal in the middle, H2O's scores of later tokens came from softmaxes that included the
   removed ones; StreamingLLM's ring, when it had wrapped, is laid back in time order. Removing
   inside StreamingLLM's sinks (post-RoPE, pos-shift) makes later tokens sinks: their pre-RoPE
   copies come from rotating the stored keys back (float rounding).
   kve_shift of post-RoPE keys rotates what is stored (one rounding per shift; f16 and q8_0 keys
   round again); pre-RoPE keys are untouched, only their positions change. Both calls cost O(tokens
   in the cache) to find the positions, plus the rows that move or rotate.
   A kve_cache struct must not be duplicated by assignment: the copy shares the buffers and the
   bookkeeping. Moving it is fine, but once one copy changes the cache every other copy is stale and
   refused (KVE_ERROR_MOVED_CACHE) instead of silently sharing memory.

   SAVED STATE FORMAT (version 3)
   ------------------------------
   All integers little-endian; floats IEEE binary32 little-endian; K/V rows at their type, each
   element little-endian (q8_0: its f16 scale, then 32 int8).
       "KVEVICTS", u32 version = 3, u32 reserved = 0, u64 total bytes
       36 x i64: n_layers, n_heads, n_kv_heads, head_dim, capacity, rope_layout, rope_theta (bits
                 of the double), rope_dims, rope_linear_factor (bits), key_storage, k_type, v_type,
                 policy kind, budget, window, kernel, pooling, gqa, beta, sinks, pos_shift, decode,
                 evict_batch, allocation, compression_ratio (bits), alpha_safeguard (bits),
                 lag_size, chunk_length, cross_scoring, seed, n_future_positions, no_covariance,
                 no_vnorm, epsilon (bits), lazy_threshold (bits), n_recent (all resolved:
                 n_threads, the custom policy and the scorer function are not saved)
       per layer: i32 limit, i64 newest, i64 tokens stored, i32 ring_next
           per KV head: i32 len, len x i64 positions, len K rows, len V rows,
               [StreamingLLM post-RoPE pos-shift] min(sinks, len) x head_dim f32 pre-RoPE sinks,
               [policies with scores: H2O, observed_attention, scorer, custom with scores] for
               each of its query heads len f32 accumulated scores
           [policies that record queries: SnapKV, PyramidKV, SimLayerKV, custom and scorer
               (`window` of them), TOVA (1)] i32 nq <= that count, nq x (i64 position,
               n_heads*head_dim f32) recorded queries, oldest first
           [H2O] window x i64 recent positions (ring)
           [expected attention] i64 queries counted, n_heads*head_dim f64 their sum, and (with
               the covariance) n_heads*head_dim*head_dim f64 the sum of their outer products
       u64 checksum: h = 0xcbf29ce484222325; h = (h ^ w) * 0x100000001b3 for each little-endian
           64-bit word w of everything before it, then for each trailing byte
   kve_state_load checks the magic, version, size and checksum, that the configuration equals the
   cache's (KVE_ERROR_STATE_CONFIG), then reads the whole state once without writing and checks
   every count, position and invariant kve_check() knows, and that every vector is finite; only then
   does it write. Any error leaves the cache as it was.

   THREAD SAFETY
   -------------
   A kve_cache is used by one thread at a time (calls on it may use OpenMP internally). Different
   caches are independent. There is no global state; kve_result_string() returns constants.
   cfg.n_threads bounds the OpenMP threads of one call: 0 OpenMP's choice, 1 never parallel (an
   engine with its own thread pool), k at most k. Results are bit-identical whatever it is: heads
   are split between threads, and decode attention cuts every KV head into chunks of 1024 tokens
   at fixed points (flash-decoding: one KV head of 64K tokens uses both cores of a 2-core
   machine), whose partial softmaxes are combined in chunk order, whatever the thread count.

   INSPECTION
   ----------
   kve_length(c, l, h)            tokens held by (layer, KV head)
   kve_slot_position(c, l, h, s)  the position the token in slot s was stored at (renumbered only by
                                  kve_shift; pos-shift does not change it, see kve_attention_positions)
   kve_key / kve_value            where a slot's row lives in your buffer, at its storage type
   kve_read_key / kve_read_value  a row as floats (keys as stored: rotated when post-RoPE)
   kve_scores(c, l, head)         accumulated attention per slot (H2O, custom), NULL otherwise
   kve_layer_budget(c, l)         tokens the layer is kept within once attended: the policy budget
                                  (PyramidKV: its long-prompt schedule for the layer), and the
                                  capacity where nothing evicts while decoding (FULL, and SnapKV and
                                  PyramidKV in KVE_DECODE_GROW, whose budget applies only to
                                  kve_compress)
   kve_newest_position(c, l)      the newest token held (-1 if none)
   kve_cache_config(c)            the resolved configuration
   kve_layer_bytes, kve_bytes_in_use   K+V bytes of the tokens held
   kve_check(c)                   every bookkeeping invariant; KVE_ERROR_CORRUPT if one fails

   ERRORS
   ------
   Every function returns kve_result: KVE_OK (0) or a negative named error; kve_result_string()
   explains it. Arguments are validated before anything is written, so a failed call leaves the
   cache as it was (one exception: kve_store_n keeps the tokens stored before an eviction that
   fails part-way). NaN/Inf in q, k or v is KVE_ERROR_NOT_FINITE.

   LIMITS
   ------
   positions: int64 in [0, KVE_MAX_POSITION = 2^52], strictly increasing per layer (kve_remove
   lowers the newest; kve_shift renumbers).
   stack: an attention call uses about 110 KB of each thread's stack when optimised (key and
   value rows of a block, per-row maxima and sums), about 450 KB unoptimised (-O0 keeps each
   inlined copy of the kernels' arrays); threads with smaller stacks need them raised.
   capacity <= KVE_MAX_CAPACITY (2^30) slots; head_dim <= KVE_MAX_HEAD_DIM (1024), even with RoPE.
   K/V types: f32, f16, bf16, q8_0 (head_dim a multiple of 32).

   kvevict DOES NOT
   ----------------
   allocate, keep global state, quantise K/V below 8 bits, batch several sequences in one cache
   (use one cache per sequence), or run on a GPU.

   HISTORY
   -------
   0.6.0 KVE_POLICY_SIMLAYERKV (kvpress SimLayerKVPress: lazy layers keep their sinks and recent
        tokens), with lazy_threshold and n_recent in kve_policy_config; the saved state is version
        3, its configuration 36 fields (version 2 states are refused, KVE_ERROR_STATE_FORMAT).
   0.5.3 With AVX-512, pre-RoPE keys rotated by the key kernel no longer bring a row of the angle
        table each (as many bytes as an f32 key): keys within a block's span of the first one a
        call rotates, at p0, are rotated by the table's first rows against query rows rotated
        back by p0 once, q . R(p0 + j) k = (R(p0)^T q) . (R(j) k). This runs when several query
        heads share a KV head, or with one when the K/V rows come from memory
        (KVEVICT_CACHED_BYTES, judged at float32 size), and n_heads / n_kv_heads * head_dim is
        at most 4096; pre-RoPE results of such builds change in the last bits there. Rotating
        kernels also take head_dim 128 as a constant.
        StreamingLLM post-RoPE with pos-shift rewrites each step's sink keys with the heads
        split over the threads as attention splits them (another core's freshly written rows
        cost more than the rotation), reuses a sink's angles for the sink that takes its
        position next, and rotates float32 rows where they are stored; same bits.
   0.5.2 With AVX-512, attention runs as fast at -O2 as at -O3: the exponential, the fold of a
        key block's lane sums and a block's maximum and sum are written with AVX-512
        instructions instead of left to the compiler's vectoriser (which gcc runs fully at -O3
        only), and gcc unrolls the kernels' loops over query rows at every level. The same
        operations in the same order: results are unchanged, bit for bit, except one fix: gcc 12
        at -O3 with FMA fused the interleaved rotation's subtract/add pair into vfmaddsub despite
        -ffp-contract=off, so pre-RoPE keys in the interleaved layout that are rotated outside
        the AVX-512 key kernel gave other last bits at -O3 than at -O2 (AVX-512 and AVX2 builds
        alike); now they give the -O2 bits, and builds with AVX2 but not AVX-512 the portable
        ones. Builds with AVX and F16C but not AVX-512 also sum f32 keys and values, the
        exponential (with AVX2), a block's maximum and sum and the fold of each key's lanes,
        and convert bf16 and q8_0 rows (AVX2), in 8-float registers instead of leaving them to
        the vectoriser: at -O2 as fast as at -O3, with the portable bits.
   0.5.1 With AVX-512: pre-RoPE keys rotated inside the key kernel from the angle table (whose
        rows now hold each position's cos and sin as the layout pairs the elements); one query
        head per KV head reads each key in one run with its query in registers and asks for no
        rows ahead (unless it rotates them); several heads ask for rows ahead into L2 only, and
        keep a key or value piece that several rows multiply in a register instead of loading
        it once per row. Pre-RoPE results of such builds change in the last bits where the
        kernel rotates (one fused multiply-add per rotated element: rope_dims == head_dim, a
        multiple of 16, or of 32 in the half layout, and every key of a 16-key block in the
        table). In every build, one query head per KV head sums its online softmax in blocks
        of 32 slots instead of 64, so such caches change in the last bits too.
   0.5.0 With AVX-512, decode attention and scoring read every storage type through one pair of
        kernels: rows converted in registers, four query rows per key, value sums kept in
        registers, fused multiply-adds, rows asked for ahead a key at a time. Results in such
        builds differ from the portable build in the last bits (see STORAGE TYPES).
   0.4.3 The rows a kernel block converts or rotates (f16/bf16/q8_0 keys and values under GQA,
        pre-RoPE keys) are packed instead of 4 KiB apart, where they evicted each other from L1.
   0.4.2 Faster decode attention: float rows prefetched once they come from memory
        (KVEVICT_CACHED_BYTES), a block's softmax maximum and sum in 16 lanes, and with AVX-512
        f16/bf16/q8_0 rows converted inside the sums; clang no longer fuses multiply-adds in the
        implementation (its results now equal gcc's -std=c11 ones).
   0.4.1 Flash-decoding: a long KV head's chunks run on every thread, with the same bits for any
        thread count. A compression ratio that rounds to 0 keeps the newest token of a policy that
        protects it; PyramidKV's allocation refuses a layer budget of 0 when evicting. Faster
        f16/bf16/q8_0 and pre-RoPE kernels.
   0.4  Scorers x allocations: knorm, keydiff, tova, random, lagkv, observed_attention and your
        own kve_scorer_fn; AdaKV and pyramid allocation over any scorer; compression_ratio;
        expected_attention; ChunkKV; chunked prompt compression (kve_compress_chunk); composition
        (kve_compress_with); renumbering kept tokens (kve_rerotate); kve_read_rotated_key,
        kve_recorded_query; KVE_ERROR_UNSUPPORTED. New policy
        fields are appended (positional initialisers of kve_policy_config need them); saved
        state format 2.
   0.3  Your own attention kernel (kve_observe, kve_accumulate, kve_attention_positions); the
        sequence life cycle (kve_store_n, kve_remove, kve_shift, kve_cache_copy, kve_state_*);
        cfg.n_threads; stale struct copies refused.
   0.2  K/V storage types (f16, bf16, q8_0); buffers, sizes and strides in bytes
        (kve_buffer_bytes replaces kve_buffer_floats; kve_key/kve_value return the raw vector,
        kve_read_key/kve_read_value the floats).
   0.1  first release: RoPE, caller-owned cache, attention, StreamingLLM, SnapKV, PyramidKV, H2O.
*/
#ifndef KVEVICT_H
#define KVEVICT_H

#include <stddef.h>
#include <stdint.h>

#define KVEVICT_VERSION_MAJOR 0
#define KVEVICT_VERSION_MINOR 6
#define KVEVICT_VERSION_PATCH 0

#ifndef KVE_API
#if defined(KVEVICT_STATIC) && defined(__GNUC__)
#define KVE_API static __attribute__((unused)) /* a file may use only some of them */
#elif defined(KVEVICT_STATIC)
#define KVE_API static
#else
#define KVE_API extern
#endif
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define KVE_MAX_POSITION ((int64_t)1 << 52)
#define KVE_MAX_CAPACITY ((int32_t)1 << 30)
#define KVE_MAX_HEAD_DIM 1024
#define KVE_MAX_HEADS 4096
#define KVE_MAX_LAYERS 65536
#define KVE_MAX_ABS_VALUE 1e15f /* larger |q|, |k|, |v| are refused: sums could overflow */
#define KVE_NO_SINKS (-1) /* kve_policy_config.sinks: zero sinks (0 means the default, 4) */
#define KVE_NO_SAFEGUARD (-1.0) /* kve_policy_config.alpha_safeguard: none (0 means 0.20) */

/* ---- results ------------------------------------------------------------------------------ */
typedef enum kve_result {
    KVE_OK = 0,
    KVE_ERROR_NULL_ARGUMENT = -1,
    KVE_ERROR_INVALID_DIMENSIONS = -2,   /* layers, heads or head_dim <= 0 or above the limits */
    KVE_ERROR_HEADS_NOT_DIVISIBLE = -3,  /* n_heads is not a multiple of n_kv_heads */
    KVE_ERROR_INVALID_ROPE = -4,         /* rope_dims odd or > head_dim, theta or factor <= 0 */
    KVE_ERROR_INVALID_ENUM = -5,
    KVE_ERROR_INVALID_CAPACITY = -6,     /* capacity <= 0 or > KVE_MAX_CAPACITY */
    KVE_ERROR_SIZE_OVERFLOW = -7,        /* a size does not fit in size_t */
    KVE_ERROR_MEMORY_TOO_SMALL = -8,     /* bookkeeping block smaller than kve_cache_size() */
    KVE_ERROR_MISALIGNED = -9,           /* a pointer is not aligned for its type */
    KVE_ERROR_BUFFER_TOO_SMALL = -10,    /* K or V buffer does not hold capacity slots */
    KVE_ERROR_OVERLAPPING_STRIDES = -11, /* two (layer, head, slot) vectors would overlap */
    KVE_ERROR_INDEX_OUT_OF_RANGE = -12,  /* layer, head or slot index */
    KVE_ERROR_POSITION = -13,            /* negative, > KVE_MAX_POSITION, or not increasing */
    KVE_ERROR_NOT_FINITE = -14,          /* NaN, Inf or |x| > KVE_MAX_ABS_VALUE in an input */
    KVE_ERROR_CACHE_FULL = -15,          /* no slot left and the policy does not evict */
    KVE_ERROR_EMPTY = -16,               /* attention over a layer with no tokens */
    KVE_ERROR_EVEN_KERNEL = -17,         /* pooling kernel must be odd and >= 1 */
    KVE_ERROR_WINDOW_TOO_LARGE = -18,    /* budget <= window */
    KVE_ERROR_BUDGET_ABOVE_CAPACITY = -19,
    KVE_ERROR_TOO_MANY_SINKS = -20,      /* sinks >= budget */
    KVE_ERROR_INVALID_PARAMETER = -21,   /* a negative or meaningless policy parameter */
    KVE_ERROR_NO_QUERIES = -22,          /* scoring needs queries: attend before evicting */
    KVE_ERROR_POLICY_FAILED = -23,       /* a custom policy did not make room */
    KVE_ERROR_CORRUPT = -24,             /* kve_check() found broken bookkeeping */
    KVE_ERROR_INVALID_COUNT = -25,       /* a count (queries, tokens) <= 0 or above what is held */
    KVE_ERROR_OVERLAPPING_BUFFERS = -26, /* K, V and the bookkeeping memory must not overlap */
    KVE_ERROR_WRONG_POLICY = -27,        /* the call does not apply to the cache's policy */
    KVE_ERROR_INVALID_TYPE = -28,        /* q8_0 K/V needs head_dim a multiple of 32 */
    KVE_ERROR_OUT_OF_TYPE_RANGE = -29,   /* a K or V value too large for its storage type */
    KVE_ERROR_SHIFT_ORDER = -30,         /* kve_shift would move positions past others or out of range */
    KVE_ERROR_STATE_FORMAT = -31,        /* not a kvevict saved state, or another format version */
    KVE_ERROR_STATE_CONFIG = -32,        /* a state or cache made with another configuration */
    KVE_ERROR_STATE_CORRUPT = -33,       /* a saved state truncated, corrupted or inconsistent */
    KVE_ERROR_MOVED_CACHE = -34,         /* a stale copy of a kve_cache struct (see kve_cache_copy) */
    KVE_ERROR_UNSUPPORTED = -35          /* a combination of policy settings kvevict does not offer */
} kve_result;

/* ---- configuration (every enum's 0 is "default") --------------------------------------------- */
typedef enum kve_rope_layout {
    KVE_ROPE_DEFAULT = 0, /* interleaved */
    KVE_ROPE_INTERLEAVED,
    KVE_ROPE_HALF,
    KVE_ROPE_NONE
} kve_rope_layout;

typedef enum kve_key_storage {
    KVE_KEYS_DEFAULT = 0, /* post-RoPE */
    KVE_KEYS_POST_ROPE,
    KVE_KEYS_PRE_ROPE
} kve_key_storage;

/* How K and V are stored in the caller's buffers (each independently). Conversion rounds to
   nearest even; q8_0 is llama.cpp/ggml's block_q8_0 (per 32 values: an f16 scale d = max|x|/127,
   then 32 int8 round(x/d)), so buffers can be shared with a ggml cache. Math is in float32. */
typedef enum kve_type {
    KVE_TYPE_DEFAULT = 0, /* f32 */
    KVE_TYPE_F32,
    KVE_TYPE_F16,         /* IEEE half: |x| < 65520 (rounds to at most 65504) */
    KVE_TYPE_BF16,
    KVE_TYPE_Q8_0         /* head_dim a multiple of 32; 34 bytes per 32 values */
} kve_type;

typedef enum kve_policy_kind {
    KVE_POLICY_DEFAULT = 0, /* full */
    KVE_POLICY_FULL,
    KVE_POLICY_STREAMINGLLM,
    KVE_POLICY_SNAPKV,
    KVE_POLICY_PYRAMIDKV,
    KVE_POLICY_H2O,
    KVE_POLICY_CUSTOM,
    /* scorers (see SCORERS AND ALLOCATIONS); kvpress's names */
    KVE_POLICY_KNORM,              /* keep the lowest key L2 norms */
    KVE_POLICY_KEYDIFF,            /* keep the keys least similar to the mean key direction */
    KVE_POLICY_TOVA,               /* keep what the newest query attends to most */
    KVE_POLICY_RANDOM,             /* a seeded random score: the baseline */
    KVE_POLICY_LAGKV,              /* key/value spread relative to the next lag of tokens */
    KVE_POLICY_OBSERVED_ATTENTION, /* attention received, averaged over the queries that saw it */
    KVE_POLICY_SCORER,             /* your kve_scorer_fn */
    KVE_POLICY_EXPECTED_ATTENTION, /* the attention future queries are expected to pay */
    KVE_POLICY_SIMLAYERKV          /* lazy layers keep sinks and recent tokens, the others all */
} kve_policy_kind;

/* how many tokens each layer and KV head keeps */
typedef enum kve_allocation {
    KVE_ALLOCATION_DEFAULT = 0, /* uniform; PyramidKV: pyramid */
    KVE_ALLOCATION_UNIFORM,     /* every (layer, KV head) keeps the same count */
    KVE_ALLOCATION_PYRAMID,     /* PyramidKV's per-layer budgets, over any scorer */
    KVE_ALLOCATION_ADAKV        /* AdaKV: one selection over all KV heads of a layer, with a
                                   per-head safeguard; heads keep different counts */
} kve_allocation;

typedef enum kve_pooling {
    KVE_POOL_DEFAULT = 0, /* max (SnapKV's LongBench setting) */
    KVE_POOL_MAX,
    KVE_POOL_AVG,
    KVE_POOL_NONE
} kve_pooling;

typedef enum kve_reduce {
    KVE_REDUCE_DEFAULT = 0, /* mean */
    KVE_REDUCE_MEAN,
    KVE_REDUCE_MAX,
    KVE_REDUCE_SUM
} kve_reduce;

typedef enum kve_pos_shift {
    KVE_POS_SHIFT_DEFAULT = 0, /* on */
    KVE_POS_SHIFT_ON,
    KVE_POS_SHIFT_OFF
} kve_pos_shift;

typedef enum kve_decode_mode {
    KVE_DECODE_DEFAULT = 0, /* the reference: GROW for SnapKV/PyramidKV, EVICT for H2O */
    KVE_DECODE_GROW,
    KVE_DECODE_EVICT
} kve_decode_mode;

struct kve_cache;

/* A user scorer (KVE_POLICY_SCORER): fills score[slot] for the kve_length() slots of (layer,
   kv_head); higher is kept. It may read the cache (kve_read_key, kve_read_rotated_key,
   kve_read_value, kve_slot_position, kve_scores: the attention accumulated so far, and
   kve_recorded_query: the newest `window` queries); the library allocates, selects, protects the
   newest `window` tokens and keeps the bookkeeping. Called for one head at a time, never
   concurrently; an error it returns is returned by the call that evicted. */
typedef kve_result (*kve_scorer_fn)(const struct kve_cache *cache, int32_t layer, int32_t kv_head,
                                    float *score, void *user);

/* A user policy. make_room is required; the rest may be NULL. */
typedef struct kve_policy_vtable {
    const char *name;
    /* nonzero: the library adds each slot's attention weight (per query head) into
       kve_scores() during every kve_attend/kve_prefill (what H2O uses) */
    int wants_scores;
    /* Called by kve_store() when `layer` holds `budget` tokens in some KV head. For each KV head h
       either set write_slot[h] to a slot to overwrite, or shrink the head (kve_keep_slots) and leave
       write_slot[h] = -1. Heads with room may be left alone. */
    kve_result (*make_room)(struct kve_cache *cache, int32_t layer, int32_t *write_slot, void *user);
    /* Called by kve_compress() after a prefill. */
    kve_result (*compress)(struct kve_cache *cache, int32_t layer, void *user);
} kve_policy_vtable;

typedef struct kve_policy_config {
    kve_policy_kind kind;
    int32_t budget;           /* tokens per (layer, KV head) incl. window/sinks; 0 = capacity;
                                 PyramidKV: the mean budget C */
    int32_t window;           /* SnapKV/PyramidKV observation window, H2O recent window; 0 = 32
                                 (kvpress's scorers: 0 = none; SimLayerKV: n_last, 0 = 1) */
    int32_t kernel;           /* pooling kernel, odd; 0 = 7; 1 = no pooling */
    kve_pooling pooling;      /* 0 = max */
    kve_reduce gqa;           /* reduction over the query heads of a KV head; 0 = mean */
    int32_t beta;             /* PyramidKV; 0 = 20 */
    int32_t sinks;            /* StreamingLLM (LagKV, expected attention, SimLayerKV too); 0 = 4,
                                 KVE_NO_SINKS = none */
    kve_pos_shift pos_shift;  /* StreamingLLM; 0 = on */
    kve_decode_mode decode;
    int32_t evict_batch;      /* KVE_DECODE_EVICT for SnapKV/PyramidKV: tokens freed per re-score;
                                 0 = window */
    const kve_policy_vtable *custom; /* KVE_POLICY_CUSTOM */
    void *custom_user;                /* passed to custom's functions or to scorer */
    kve_allocation allocation;
    double compression_ratio; /* > 0: a prompt compression keeps int(len * (1 - ratio)) tokens per
                                 head (kvpress's rule) instead of the budget; 0 <= ratio < 1 */
    double alpha_safeguard;   /* AdaKV: every head keeps its int(kept * alpha) best tokens;
                                 0 = 0.20, KVE_NO_SAFEGUARD = none */
    int32_t lag_size;         /* LagKV: 0 = 128 (its sink count is `sinks`) */
    int32_t chunk_length;     /* > 0: ChunkKV, whole chunks of this many tokens are kept (the same
                                 for every KV head), chosen by their score summed over heads */
    int32_t cross_scoring;    /* LagKV: nonzero scores by softmax value, not rank within a lag */
    uint64_t seed;            /* random */
    kve_scorer_fn scorer;     /* KVE_POLICY_SCORER */
    /* expected attention: the queries' statistics (past the `sinks`), averaged over the RoPE of
       the next n_future_positions positions (0 = 512); no_covariance, no_vnorm turn off kvpress's
       use_covariance and use_vnorm; epsilon is added before the value-norm scaling */
    int32_t n_future_positions;
    int32_t no_covariance, no_vnorm;
    double epsilon;
    /* SimLayerKV: a layer is lazy when the attention of its last `window` (0 = 1) queries on the
       first `sinks` (4) and the n_recent (0 = 1024) tokens before those queries sums above
       lazy_threshold (0 = 1.0: no layer is lazy, kvpress's default; it suggests 0.65 for
       Llama-2, 0.9 for Llama-3); a lazy layer keeps the sinks and its n_recent - window newest */
    double lazy_threshold;
    int32_t n_recent;
} kve_policy_config;

typedef struct kve_config {
    int32_t n_layers;
    int32_t n_heads;          /* query heads */
    int32_t n_kv_heads;       /* 0 = n_heads; n_heads must be a multiple */
    int32_t head_dim;
    int32_t capacity;         /* slots per (layer, KV head) in the K/V buffers */
    kve_rope_layout rope_layout;
    double rope_theta;        /* 0 = 10000 */
    int32_t rope_dims;        /* rotated dims, even, <= head_dim; 0 = head_dim */
    double rope_linear_factor;/* positions are divided by it (linear RoPE scaling); 0 = 1 */
    kve_key_storage key_storage;
    kve_type k_type, v_type;  /* 0 = f32 */
    kve_policy_config policy;
    int32_t n_threads;        /* OpenMP threads per call: 0 = OpenMP's choice, 1 = never parallel,
                                 k = at most k. Results are bit-identical whatever it is. */
} kve_config;

typedef enum kve_layout {
    KVE_LAYOUT_DEFAULT = 0, /* [layer][slot][kv_head][head_dim], llama2.c */
    KVE_LAYOUT_HEAD_MAJOR,  /* [layer][kv_head][slot][head_dim] */
    KVE_LAYOUT_STRIDES      /* the three strides below */
} kve_layout;

typedef struct kve_buffers {
    void *k, *v;
    size_t k_bytes, v_bytes;    /* how many bytes each buffer holds */
    kve_layout layout;
    /* KVE_LAYOUT_STRIDES: bytes from one layer, KV head and slot to the next, for K and for V */
    size_t k_layer_stride, k_head_stride, k_slot_stride;
    size_t v_layer_stride, v_head_stride, v_slot_stride;
} kve_buffers;

/* The cache. Public so it can live on the stack; treat its fields as private. */
typedef struct kve_cache {
    uint32_t magic;
    uint64_t generation;           /* equals *shared_generation unless another copy of this */
    uint64_t *shared_generation;   /* struct changed the cache since: then it is refused */
    kve_config cfg;                /* resolved */
    int32_t group;                 /* n_heads / n_kv_heads */
    unsigned char *k, *v;
    size_t k_bytes, v_bytes;
    size_t k_stride[3], v_stride[3]; /* bytes per layer, KV head, slot */
    size_t k_row, v_row;             /* bytes of one vector at k_type, v_type */
    const kve_policy_vtable *vtable;
    void *vtable_user;
    int32_t obs_window;            /* queries recorded per layer (0: none) */
    int32_t sinks;                 /* StreamingLLM sinks resolved (0 otherwise) */
    int32_t *limit;                /* [layer] tokens per head before make_room is called */
    int32_t *budget;               /* [layer] the policy's budget for the layer */
    int64_t *pos;                  /* [layer][kv_head][capacity] */
    int32_t *len;                  /* [layer][kv_head] */
    int64_t *newest;               /* [layer] position of the newest token, -1 if none */
    int64_t *stored;               /* [layer] tokens ever stored */
    int32_t *ring_next;            /* [layer] StreamingLLM: next recent slot to overwrite */
    int64_t *sink_anchor_done;     /* [layer] StreamingLLM post-RoPE: anchor the sinks sit at */
    float *sink_keys;              /* [layer][kv_head][sinks][head_dim] pre-RoPE sink keys */
    float *sink_cos, *sink_sin;    /* [sinks][rope_dims/2] angles of the sinks' shifted positions */
    int64_t *sink_angle_pos;       /* [sinks] the position those angles are for, -1 none */
    float *scores;                 /* [layer][n_heads][capacity] accumulated attention, or NULL */
    float *queries;                /* [layer][obs_window][n_heads*head_dim] pre-RoPE, ring */
    int64_t *query_pos;            /* [layer][obs_window] */
    int64_t *query_count;          /* [layer] queries ever recorded */
    int64_t *recent_pos;           /* [layer][window] H2O: positions of the last stored tokens */
    float *window_sum;             /* [layer][n_heads][capacity] SnapKV/PyramidKV evicting while
                                      decoding: the weights of the queries attended since the last
                                      eviction, summed (the next eviction's window scores), or NULL */
    int64_t *window_sum_queries;   /* [layer] queries in window_sum; -1: it does not hold the window */
    double *freq;                  /* [rope_dims/2] */
    float *rope_table;             /* [capacity][rope_dims] cos and sin of positions < capacity,
                                      as the layout pairs elements: (cos, sin) of pair i at 2i and
                                      2i+1 (interleaved), or cos at i and sin at rope_dims/2 + i */
    float *scratch_q;              /* [n_heads][head_dim] */
    float *scratch_f1, *scratch_f2;/* [n_heads][capacity] */
    float *scratch_split;          /* [n_kv_heads][chunks of the capacity][group][head_dim + 2]:
                                      flash-decoding's partial states */
    float *scratch_f3;             /* [n_kv_heads][2*capacity] */
    int32_t *scratch_i1, *scratch_i2; /* [n_kv_heads][capacity] */
    unsigned char *scratch_u8;     /* [n_kv_heads][capacity] */
    int64_t *qstat_count;          /* expected attention: [layer] queries in the statistics, */
    double *qstat_sum, *qstat_outer; /* [layer][n_heads][head_dim] their sum, and
                                      [layer][n_heads][head_dim][head_dim] of q q^T (or NULL) */
    int64_t score_from;            /* during kve_compress_chunk: only tokens at positions >= it
                                      are scored and selected; INT64_MIN otherwise */
    float *ada_score;              /* AdaKV: [n_kv_heads * capacity] candidates of one layer */
    int32_t *ada_index, *ada_order;
    unsigned char *ada_keep;
} kve_cache;

/* ---- configuration and memory ---------------------------------------------------------------- */
KVE_API const char *kve_result_string(kve_result r);
KVE_API kve_result kve_config_resolve(const kve_config *in, kve_config *out);
/* the bytes the K and V buffers need in a layout (not KVE_LAYOUT_STRIDES) */
KVE_API kve_result kve_buffer_bytes(const kve_config *cfg, kve_layout layout, size_t *k_bytes,
                                    size_t *v_bytes);
KVE_API kve_result kve_cache_size(const kve_config *cfg, size_t *bytes);
KVE_API kve_result kve_cache_init(const kve_config *cfg, const kve_buffers *buffers, void *memory,
                                  size_t memory_bytes, kve_cache *cache);
KVE_API kve_result kve_cache_reset(kve_cache *cache); /* forget every token (a new sequence) */

/* ---- storage types ---------------------------------------------------------------------------- */
/* bytes of n values at a type (0 if n is not a valid count for it: q8_0 needs multiples of 32) */
KVE_API size_t kve_row_bytes(kve_type type, int32_t n);
/* n floats to the type and back, exactly as the cache stores and reads them */
KVE_API kve_result kve_row_from_float(kve_type type, const float *x, int32_t n, void *out);
KVE_API kve_result kve_row_to_float(kve_type type, const void *in, int32_t n, float *out);

/* ---- RoPE (x holds head_dim floats; cfg need not be resolved) --------------------------------- */
KVE_API kve_result kve_rope_apply(const kve_config *cfg, float *x, int64_t pos);
/* moves an already rotated vector by delta positions (delta may be negative): R(delta) */
KVE_API kve_result kve_rope_shift(const kve_config *cfg, float *x, int64_t delta);

/* ---- tokens and attention --------------------------------------------------------------------- */
/* Appends the token at `pos` to `layer` (k, v: n_kv_heads*head_dim floats each, k before RoPE),
   evicting first if the policy's budget is reached. slots (n_kv_heads, may be NULL) receives the
   slot each KV head wrote. */
KVE_API kve_result kve_store(kve_cache *cache, int32_t layer, int64_t pos, const float *k,
                             const float *v, int32_t *slots);

typedef struct kve_attend_options {
    float *weights;          /* [n_heads or n_kv_heads][capacity], indexed by slot; may be NULL */
    kve_reduce weights_reduce; /* 0: per query head; MEAN, MAX, SUM: per KV head */
} kve_attend_options;

/* Decode attention of the newest token's query (n_heads*head_dim, before RoPE) over `layer`. */
KVE_API kve_result kve_attend(kve_cache *cache, int32_t layer, const float *q, float *out);
KVE_API kve_result kve_attend_ex(kve_cache *cache, int32_t layer, const float *q, float *out,
                                 const kve_attend_options *options);
/* Causal attention of the last n_queries stored tokens (q, out: [n_queries][n_heads*head_dim],
   not overlapping); q_pos gives their positions (NULL: consecutive, ending at the newest). */
KVE_API kve_result kve_prefill(kve_cache *cache, int32_t layer, int32_t n_queries, const float *q,
                               const int64_t *q_pos, float *out);
/* n kve_store calls in one (pos: n increasing positions, NULL: the n after the newest; k, v:
   [n][n_kv_heads*head_dim]). Every argument is checked before the first token is stored. */
KVE_API kve_result kve_store_n(kve_cache *cache, int32_t layer, int32_t n, const int64_t *pos,
                               const float *k, const float *v);

/* ---- your own attention kernel (see "USING YOUR OWN ATTENTION KERNEL") ------------------------ */
/* records queries ([n_queries][n_heads*head_dim], BEFORE RoPE) as kve_attend/kve_prefill do,
   without computing attention; q_pos as in kve_prefill (NULL: the newest n_queries positions) */
KVE_API kve_result kve_observe(kve_cache *cache, int32_t layer, int32_t n_queries, const float *q,
                               const int64_t *q_pos);
/* adds softmax weights [n_heads][capacity] (by slot) into the accumulated scores, as kve_attend
   does (H2O, custom policies with wants_scores; others: KVE_ERROR_WRONG_POLICY). Weights of
   several queries may be summed first. */
KVE_API kve_result kve_accumulate(kve_cache *cache, int32_t layer, const float *weights);
/* where to rotate so that your attention equals kve_attend: *query_pos for the newest query (a
   query at position p: *query_pos + p - newest), key_pos[slot] for each of the kve_length()
   slots of (layer, kv_head): the position to rotate the stored key at, or -1 when the buffer
   already holds it rotated. -1 for the query too with KVE_ROPE_NONE (nothing rotates). */
KVE_API kve_result kve_attention_positions(const kve_cache *cache, int32_t layer, int32_t kv_head,
                                           int64_t *query_pos, int64_t *key_pos);

/* ---- sequence life cycle (see "SEQUENCE LIFE CYCLE") ----------------------------------------- */
/* forgets the tokens at positions [from, to) in every layer (to > from; to beyond the newest
   removes to the end): storing may resume above the newest kept token */
KVE_API kve_result kve_remove(kve_cache *cache, int64_t from, int64_t to);
/* adds delta to the positions in [from, to) in every layer, re-rotating post-RoPE keys; the order
   of positions must not change (KVE_ERROR_SHIFT_ORDER) */
KVE_API kve_result kve_shift(kve_cache *cache, int64_t from, int64_t to, int64_t delta);
/* renumbers each KV head of `layer` to consecutive positions 0 .. len-1 in order, re-rotating keys
   stored after RoPE by the change (kvpress KeyRerotationPress, StreamingLLM's renumbering by cache
   order, for any policy, e.g. right after kve_compress): the gaps evicted tokens left are closed.
   Recorded queries are dropped; the next token is stored at kve_newest_position() + 1. Not for
   StreamingLLM, which renumbers by itself (pos_shift). */
KVE_API kve_result kve_rerotate(kve_cache *cache, int32_t layer);
/* makes dst (initialised with the same configuration, n_threads aside, and its own buffers) an
   independent copy of src */
KVE_API kve_result kve_cache_copy(kve_cache *dst, const kve_cache *src);
/* saved state: the bookkeeping and the K/V rows in use, in the format described in the manual */
KVE_API kve_result kve_state_size(const kve_cache *cache, size_t *bytes);
KVE_API kve_result kve_state_save(const kve_cache *cache, void *buf, size_t bytes, size_t *written);
/* validates the whole state before writing anything: on any error the cache is unchanged */
KVE_API kve_result kve_state_load(kve_cache *cache, const void *buf, size_t bytes);

/* ---- eviction ------------------------------------------------------------------------------- */
KVE_API kve_result kve_compress(kve_cache *cache, int32_t layer); /* prompt compression */
KVE_API kve_result kve_compress_all(kve_cache *cache);
/* compresses `layer` with another policy's scorer, allocation and budget (kvpress ComposedPress:
   one press after another, e.g. kve_compress_with(knorm at ratio 0.25), then kve_compress). The
   cache must record what it scores from (KVE_ERROR_UNSUPPORTED otherwise): SnapKV/PyramidKV at
   most the cache's own window of queries, TOVA one, H2O/observed_attention/scorers accumulated
   attention, AdaKV a cache made with AdaKV. A cache whose own policy keeps the newest token keeps
   it here too. */
KVE_API kve_result kve_compress_with(kve_cache *cache, int32_t layer,
                                     const kve_policy_config *policy);
/* chunked prompt compression (kvpress ChunkPress): compresses only the tokens at positions >= from
   (the chunk just stored and prefilled), each head keeping max(1, int(m * (1 - ratio))) of its m,
   scored as if the chunk were the whole prompt; older tokens stay. A prompt much longer than the
   capacity is compressed into it chunk by chunk. Needs compression_ratio > 0. */
KVE_API kve_result kve_compress_chunk(kve_cache *cache, int32_t layer, int64_t from);
/* per-layer budgets (tokens kept incl. window) PyramidKV gives a prompt of prompt_len tokens */
KVE_API kve_result kve_pyramid_budgets(int32_t budget, int32_t window, int32_t beta,
                                       int32_t n_layers, int64_t prompt_len, int32_t *budgets);

/* ---- building blocks for policies (used by the built-in ones too) ----------------------------- */
/* per-slot SnapKV score of KV head kv_head: softmax weight the recorded queries give each slot,
   summed over queries, reduced over the head's query group with `reduce`. out: len floats. */
KVE_API kve_result kve_window_scores(kve_cache *cache, int32_t layer, int32_t kv_head,
                                     kve_reduce reduce, float *out);
/* 1-D pooling, stride 1, padding kernel/2: AVG divides by kernel (zero padding), MAX ignores pad */
KVE_API kve_result kve_pool1d(const float *in, int32_t n, int32_t kernel, kve_pooling mode,
                              float *out);
/* marks the k highest of score[0..n) in keep (1/0); ties go to the lower index; NaN ranks lowest.
   order: n int32 of scratch. */
KVE_API kve_result kve_select_top(const float *score, int32_t n, int32_t k, unsigned char *keep,
                                  int32_t *order);
/* keeps the slots of (layer, kv_head) whose keep[slot] is nonzero, compacting in place */
KVE_API kve_result kve_keep_slots(kve_cache *cache, int32_t layer, int32_t kv_head,
                                  const unsigned char *keep);

/* ---- inspection ----------------------------------------------------------------------------- */
KVE_API int32_t kve_length(const kve_cache *cache, int32_t layer, int32_t kv_head); /* -1 bad args */
KVE_API int64_t kve_slot_position(const kve_cache *cache, int32_t layer, int32_t kv_head,
                                  int32_t slot); /* -1 when out of range */
/* where a slot's vector lives in the K or V buffer (at its storage type), NULL when out of range */
KVE_API void *kve_key(const kve_cache *cache, int32_t layer, int32_t kv_head, int32_t slot);
KVE_API void *kve_value(const kve_cache *cache, int32_t layer, int32_t kv_head, int32_t slot);
/* a stored vector as head_dim floats (keys as stored: rotated when post-RoPE) */
KVE_API kve_result kve_read_key(const kve_cache *cache, int32_t layer, int32_t kv_head,
                                int32_t slot, float *out);
KVE_API kve_result kve_read_value(const kve_cache *cache, int32_t layer, int32_t kv_head,
                                  int32_t slot, float *out);
/* a held slot's key as attention at its original position sees it: rotated there, whether the
   cache stores keys before or after RoPE (what kvpress's key scorers read) */
KVE_API kve_result kve_read_rotated_key(const kve_cache *cache, int32_t layer, int32_t kv_head,
                                        int32_t slot, float *out);
/* the recorded query `age` queries back (0: the newest), n_heads*head_dim floats before RoPE, and
   its position in *pos (may be NULL); NULL when not recorded (see kve_policy_config.window) */
KVE_API const float *kve_recorded_query(const kve_cache *cache, int32_t layer, int32_t age,
                                        int64_t *pos);
/* accumulated attention of query head `head` per slot (policies with wants_scores), or NULL */
KVE_API float *kve_scores(const kve_cache *cache, int32_t layer, int32_t head);
KVE_API int32_t kve_layer_budget(const kve_cache *cache, int32_t layer);
KVE_API int64_t kve_newest_position(const kve_cache *cache, int32_t layer); /* -1 if none */
KVE_API const kve_config *kve_cache_config(const kve_cache *cache); /* resolved; NULL if invalid */
KVE_API size_t kve_layer_bytes(const kve_cache *cache, int32_t layer); /* K+V bytes in use */
KVE_API size_t kve_bytes_in_use(const kve_cache *cache);
KVE_API kve_result kve_check(kve_cache *cache); /* invariants; KVE_ERROR_CORRUPT names none */

#ifdef __cplusplus
}
#endif
#endif /* KVEVICT_H */

/* ============================================================================================= */
#ifdef KVEVICT_IMPLEMENTATION
#ifndef KVEVICT_IMPLEMENTATION_DONE
#define KVEVICT_IMPLEMENTATION_DONE

/* Every a * b + c rounds twice, as written: the portable loops and the F16C kernels then give
   the same bits, whatever the compiler (clang fuses them into one FMA by default; gcc does not
   with -std=c11); the AVX-512 kernels fuse where they say so. Restored at the end of the
   implementation. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#include <math.h>
#include <string.h>
/* F16C converts 8 halves per instruction, exactly as the portable code does (both round to
   nearest even; every half is exact in float) */
#if defined(__F16C__) && (defined(__x86_64__) || defined(__i386__)) && !defined(KVEVICT_NO_SIMD)
#include <immintrin.h>
#define KVE__F16C 1
#if defined(__cplusplus) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
/* g++ before 13 warns that its own AVX-512 intrinsics read an undefined register; restored at
   the end of the implementation */
#define KVE__QUIET_INTRINSICS 1
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized" /* the same, at -O1 and -Os */
#endif
/* AVX-512 does 16 lanes in one register: the kernels' 16-lane sums in one instruction each */
#if defined(__AVX512F__)
#define KVE__AVX512 1
#else /* AVX without AVX-512 (every F16C CPU has AVX): 16 lanes in two 8-float registers */
#define KVE__AVX256 1
#endif
#endif

#if defined(_OPENMP) && !defined(KVEVICT_NO_OPENMP)
#include <omp.h>
#define KVE__OMP(x) _Pragma(x)
#else
#define KVE__OMP(x)
#endif

/* the small vector helpers and kernels, inlined at every optimisation level: their constants
   (type, query rows, head_dim) then specialise each copy */
#if defined(__GNUC__) || defined(__clang__)
#define KVE__INLINE static inline __attribute__((always_inline))
#elif defined(_MSC_VER)
#define KVE__INLINE static __forceinline
#else
#define KVE__INLINE static inline
#endif

/* Unrolls the loop that follows, completely when its count is a constant up to 16 once inlined
   (query rows, the pieces of head_dim 128 or 256): its arrays of registers (one sum per query
   row, the query's pieces) then stay in registers. gcc does so by itself only at -O3 (and knows
   the pragma from gcc 8); clang does at -O2, and warns about the pragma where it cannot. */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 8
#define KVE__UNROLL _Pragma("GCC unroll 16")
#else
#define KVE__UNROLL
#endif

#define KVE__MAGIC 0x4b564556u
#define KVE__ALIGN 64
/* below this many multiply-adds a call stays on one thread: the fork costs more */
#define KVE__OMP_MIN_WORK 262144

#ifdef __cplusplus
#define KVE__CAST(T, x) reinterpret_cast<T>(x)
#define KVE__UNCONST(T, x) const_cast<T>(x)
#else
#define KVE__CAST(T, x) ((T)(x))
#define KVE__UNCONST(T, x) ((T)(x))
#endif

KVE_API const char *kve_result_string(kve_result r)
{
    switch (r) {
    case KVE_OK: return "ok";
    case KVE_ERROR_NULL_ARGUMENT: return "a required pointer argument is NULL";
    case KVE_ERROR_INVALID_DIMENSIONS: return "n_layers, n_heads, n_kv_heads or head_dim is <= 0 or above the limits";
    case KVE_ERROR_HEADS_NOT_DIVISIBLE: return "n_heads is not a multiple of n_kv_heads";
    case KVE_ERROR_INVALID_ROPE: return "RoPE parameters invalid: rope_dims must be even and <= head_dim, theta and linear factor > 0 and finite";
    case KVE_ERROR_INVALID_ENUM: return "an enum field has a value outside its range";
    case KVE_ERROR_INVALID_CAPACITY: return "capacity must be in 1 .. KVE_MAX_CAPACITY";
    case KVE_ERROR_SIZE_OVERFLOW: return "a buffer size overflows size_t";
    case KVE_ERROR_MEMORY_TOO_SMALL: return "the bookkeeping memory is smaller than kve_cache_size() reports";
    case KVE_ERROR_MISALIGNED: return "a pointer is not aligned for its element type";
    case KVE_ERROR_BUFFER_TOO_SMALL: return "a buffer is too small: K or V for capacity slots in the given layout, or a state buffer for kve_state_size() bytes";
    case KVE_ERROR_OVERLAPPING_STRIDES: return "the strides make two (layer, kv_head, slot) vectors overlap";
    case KVE_ERROR_INDEX_OUT_OF_RANGE: return "a layer, head or slot index is out of range";
    case KVE_ERROR_POSITION: return "position is negative, above KVE_MAX_POSITION, or not after the layer's newest";
    case KVE_ERROR_NOT_FINITE: return "an input vector holds NaN, Inf, or a magnitude above KVE_MAX_ABS_VALUE (1e15)";
    case KVE_ERROR_CACHE_FULL: return "the layer is full and the policy does not evict: KVE_POLICY_FULL, or a policy with decode = KVE_DECODE_GROW (SnapKV's and PyramidKV's default); set decode = KVE_DECODE_EVICT or raise capacity";
    case KVE_ERROR_EMPTY: return "attention over a layer that holds no tokens";
    case KVE_ERROR_EVEN_KERNEL: return "the pooling kernel must be odd and >= 1";
    case KVE_ERROR_WINDOW_TOO_LARGE: return "the budget must be larger than the window";
    case KVE_ERROR_BUDGET_ABOVE_CAPACITY: return "a budget is larger than the capacity of the buffers";
    case KVE_ERROR_TOO_MANY_SINKS: return "sinks must be fewer than the budget";
    case KVE_ERROR_INVALID_PARAMETER: return "a policy parameter is negative or meaningless for the policy";
    case KVE_ERROR_NO_QUERIES: return "scoring needs recorded queries: attend (or prefill) before evicting";
    case KVE_ERROR_POLICY_FAILED: return "the custom policy did not make room in a full layer";
    case KVE_ERROR_CORRUPT: return "cache bookkeeping is inconsistent";
    case KVE_ERROR_INVALID_COUNT: return "a count is <= 0 or larger than what the layer holds";
    case KVE_ERROR_OVERLAPPING_BUFFERS: return "the K buffer, the V buffer and the bookkeeping memory overlap";
    case KVE_ERROR_WRONG_POLICY: return "this call does not apply to the cache's policy";
    case KVE_ERROR_INVALID_TYPE: return "k_type or v_type is q8_0 and head_dim is not a multiple of 32";
    case KVE_ERROR_OUT_OF_TYPE_RANGE: return "a K or V value is too large for its storage type (f16: |x| < 65520, q8_0: |x| < 127 * 65520; for post-RoPE keys, each rotated pair's norm)";
    case KVE_ERROR_SHIFT_ORDER: return "kve_shift would move positions onto or past kept ones, below 0 or above KVE_MAX_POSITION";
    case KVE_ERROR_STATE_FORMAT: return "not a kvevict saved state, or one of another format version";
    case KVE_ERROR_STATE_CONFIG: return "the saved state or source cache has another configuration than this cache";
    case KVE_ERROR_STATE_CORRUPT: return "the saved state is truncated, corrupted (checksum) or inconsistent; the cache is unchanged";
    case KVE_ERROR_MOVED_CACHE: return "this kve_cache struct is a stale copy: another copy of it (they share buffers and bookkeeping) has changed the cache since; use kve_cache_copy() for an independent cache";
    case KVE_ERROR_UNSUPPORTED: return "kvevict does not offer this combination of policy settings: AdaKV allocation compresses the prompt only (decode = KVE_DECODE_GROW); StreamingLLM, full and custom policies have no allocation or compression_ratio";
    }
    return "unknown kve_result";
}

/* ---- small helpers ---------------------------------------------------------------------------- */
/* Inputs must be finite and at most KVE_MAX_ABS_VALUE in magnitude, so that no rotation, dot
   product or weighted sum can overflow. A bit test: it also holds under -ffast-math. */
static int kve__finite(const float *x, size_t n)
{
    const float limit = KVE_MAX_ABS_VALUE;
    uint32_t bad = 0, lim;
    size_t i;
    memcpy(&lim, &limit, 4);
    for (i = 0; i < n; i++) {
        uint32_t b;
        memcpy(&b, &x[i], 4);
        bad |= (b & 0x7fffffffu) > lim; /* NaN and Inf are above it too */
    }
    return !bad;
}

static int kve__mul_ok(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a) return 0;
    *out = a * b;
    return 1;
}

/* a * b, or 0 with *ok cleared when it overflows: size products chain through it */
static size_t kve__mul(size_t a, size_t b, int *ok)
{
    size_t r;
    if (!kve__mul_ok(a, b, &r)) {
        *ok = 0;
        return 0;
    }
    return r;
}

#ifdef KVE__AVX512
/* the lanes of 16 floats from element i that lie before element d (the rest 0, not read) */
KVE__INLINE __mmask16 kve__lanes_before(int32_t i, int32_t d)
{
    return (__mmask16)(d - i >= 16 ? 0xFFFFu : d - i > 0 ? (1u << (d - i)) - 1u : 0u);
}

/* kve__exp_inplace's formula on 16 lanes: the same operations in the same order, each rounded
   (no fused multiply-add), so the portable code's bits where the compiler does not fuse it
   (see STORAGE TYPES) */
KVE__INLINE __m512 kve__exp16(__m512 v)
{
    const __m512 magic = _mm512_set1_ps(12582912.0f), low = _mm512_set1_ps(-87.0f);
    __m512 vc = _mm512_max_ps(low, v); /* a NaN stays NaN, as in the comparison below */
    __m512 t = _mm512_add_ps(_mm512_mul_ps(vc, _mm512_set1_ps(1.44269504088896341f)), magic);
    __m512 k = _mm512_sub_ps(t, magic), r, p, scale;
    __m512i e;
    r = _mm512_sub_ps(vc, _mm512_mul_ps(k, _mm512_set1_ps(0.693359375f)));
    r = _mm512_sub_ps(r, _mm512_mul_ps(k, _mm512_set1_ps(-2.12194440e-4f)));
    p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(p, r), r), r), _mm512_set1_ps(1.0f));
    e = _mm512_add_epi32(_mm512_cvttps_epi32(k), _mm512_set1_epi32(127));
    scale = _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
    return _mm512_maskz_mul_ps(~_mm512_cmp_ps_mask(v, low, _CMP_LT_OQ), p, scale);
}
#endif

#if defined(KVE__AVX256) && defined(__AVX2__)
#define KVE__EXP8 1
/* kve__exp16 on 8 lanes (AVX2 for the exponent's integer shift) */
static __m256 kve__exp8(__m256 v)
{
    const __m256 magic = _mm256_set1_ps(12582912.0f), low = _mm256_set1_ps(-87.0f);
    __m256 vc = _mm256_max_ps(low, v); /* a NaN stays NaN, as in the comparison below */
    __m256 t = _mm256_add_ps(_mm256_mul_ps(vc, _mm256_set1_ps(1.44269504088896341f)), magic);
    __m256 k = _mm256_sub_ps(t, magic), r, p, scale;
    __m256i e;
    r = _mm256_sub_ps(vc, _mm256_mul_ps(k, _mm256_set1_ps(0.693359375f)));
    r = _mm256_sub_ps(r, _mm256_mul_ps(k, _mm256_set1_ps(-2.12194440e-4f)));
    p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(p, r), r), r), _mm256_set1_ps(1.0f));
    e = _mm256_add_epi32(_mm256_cvttps_epi32(k), _mm256_set1_epi32(127));
    scale = _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
    /* 0 where v < -87 (a NaN is kept, as the portable comparison does) */
    return _mm256_and_ps(_mm256_mul_ps(p, scale), _mm256_cmp_ps(v, low, _CMP_NLT_UQ));
}
#endif

/* exp(x) for x <= 0 over an array, branch-free so it vectorises; x < -87 gives exactly 0 */
static void kve__exp_inplace(float *x, int32_t n)
{
    int32_t i = 0;
#ifdef KVE__AVX512 /* the compiler vectorises the loop below at -O3 only */
    for (; i < n; i += 16) {
        __mmask16 m = kve__lanes_before(i, n);
        _mm512_mask_storeu_ps(x + i, m, kve__exp16(_mm512_maskz_loadu_ps(m, x + i)));
    }
#elif defined(KVE__EXP8)
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, kve__exp8(_mm256_loadu_ps(x + i)));
#endif
    for (; i < n; i++) {
        float v = x[i];
        float vc = v < -87.0f ? -87.0f : v;
        float t = vc * 1.44269504088896341f + 12582912.0f; /* round to nearest via 1.5*2^23 */
        float k = t - 12582912.0f;
        float r = vc - k * 0.693359375f;
        r = r - k * -2.12194440e-4f;
        float p = 1.9875691500e-4f;
        p = p * r + 1.3981999507e-3f;
        p = p * r + 8.3334519073e-3f;
        p = p * r + 4.1665795894e-2f;
        p = p * r + 1.6666665459e-1f;
        p = p * r + 5.0000001201e-1f;
        p = p * r * r + r + 1.0f;
        int32_t e = (int32_t)k + 127;
        uint32_t bits = (uint32_t)e << 23;
        float scale;
        memcpy(&scale, &bits, 4);
        x[i] = v < -87.0f ? 0.0f : p * scale;
    }
}

/* out[i] = exp(x[i] - shift): the difference rounded, then the formula above */
static void kve__exp_shifted(const float *x, float shift, float *out, int32_t n)
{
    int32_t i;
#ifdef KVE__AVX512
    for (i = 0; i < n; i += 16) {
        __mmask16 m = kve__lanes_before(i, n);
        __m512 v = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), _mm512_set1_ps(shift));
        _mm512_mask_storeu_ps(out + i, m, kve__exp16(v));
    }
#else
    for (i = 0; i < n; i++) out[i] = x[i] - shift;
    kve__exp_inplace(out, n);
#endif
}

/* x[i] *= f, i < n */
static void kve__scale_floats(float *x, int32_t n, float f)
{
    int32_t i = 0;
#ifdef KVE__AVX512
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), _mm512_set1_ps(f)));
#elif defined(KVE__AVX256)
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), _mm256_set1_ps(f)));
#endif
    for (; i < n; i++) x[i] *= f;
}

/* ---- storage types ---------------------------------------------------------------------------- */
/* float32 -> float16, round to nearest even (finite inputs; 65520 and above become Inf) */
static uint16_t kve__f16_from_f32(float f)
{
    uint32_t x, sign;
    memcpy(&x, &f, 4);
    sign = (x >> 16) & 0x8000u;
    x &= 0x7fffffffu;
    if (x > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);  /* NaN */
    if (x >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds to Inf */
    if (x >= 0x38800000u) {                                  /* a normal half */
        uint32_t r = x - 0x38000000u;                        /* exponent rebiased 127 -> 15 */
        r += 0x0fffu + ((r >> 13) & 1u);
        return (uint16_t)(sign | (r >> 13));
    } else {                                                 /* a subnormal half, in 2^-24 units */
        uint32_t e = x >> 23, m = (x & 0x7fffffu) | 0x800000u, q, rest, half;
        int32_t shift = 126 - (int32_t)e;
        if (shift > 24) return (uint16_t)sign;
        q = m >> shift;
        rest = m & ((1u << shift) - 1u);
        half = 1u << (shift - 1);
        q += rest > half || (rest == half && (q & 1u));
        return (uint16_t)(sign | q);
    }
}

static float kve__f32_from_f16(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, x;
    float f;
    if (e == 0) {
        f = (float)m * 5.9604644775390625e-8f; /* m * 2^-24, exact */
        memcpy(&x, &f, 4);
        x |= sign;
    } else if (e == 31) {
        x = sign | 0x7f800000u | (m << 13);
    } else {
        x = sign | ((e + 112u) << 23) | (m << 13);
    }
    memcpy(&f, &x, 4);
    return f;
}

static uint16_t kve__bf16_from_f32(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u); /* NaN stays NaN */
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

#define KVE__Q8_BLOCK 32
#define KVE__Q8_BYTES 34 /* f16 scale (native byte order), then 32 int8 */

static size_t kve__row_bytes(kve_type t, int32_t n)
{
    switch (t) {
    case KVE_TYPE_DEFAULT:
    case KVE_TYPE_F32: return (size_t)n * 4;
    case KVE_TYPE_F16:
    case KVE_TYPE_BF16: return (size_t)n * 2;
    case KVE_TYPE_Q8_0: return n % KVE__Q8_BLOCK ? 0 : (size_t)(n / KVE__Q8_BLOCK) * KVE__Q8_BYTES;
    }
    return 0;
}

/* the alignment a buffer of the type needs (its widest element) */
static size_t kve__type_align(kve_type t) { return t == KVE_TYPE_F32 || t == KVE_TYPE_DEFAULT ? 4 : 2; }

static void kve__encode(kve_type t, const float *x, int32_t n, unsigned char *out)
{
    int32_t i = 0, b;
    if (t == KVE_TYPE_F32 || t == KVE_TYPE_DEFAULT) {
        memcpy(out, x, (size_t)n * sizeof(float));
    } else if (t == KVE_TYPE_F16 || t == KVE_TYPE_BF16) {
#ifdef KVE__F16C
        if (t == KVE_TYPE_F16)
            for (; i + 8 <= n; i += 8) {
                __m128i h8 = _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT);
                _mm_storeu_si128(KVE__CAST(__m128i *, KVE__CAST(void *, out + 2 * (size_t)i)), h8);
            }
#endif
        for (; i < n; i++) {
            uint16_t h = t == KVE_TYPE_F16 ? kve__f16_from_f32(x[i]) : kve__bf16_from_f32(x[i]);
            memcpy(out + 2 * (size_t)i, &h, 2);
        }
    } else { /* q8_0, as ggml's quantize_row_q8_0_ref */
        for (b = 0; b < n / KVE__Q8_BLOCK; b++) {
            const float *xb = x + (size_t)b * KVE__Q8_BLOCK;
            unsigned char *ob = out + (size_t)b * KVE__Q8_BYTES;
            float amax = 0.0f, d, id;
            uint16_t dh;
            for (i = 0; i < KVE__Q8_BLOCK; i++) amax = fabsf(xb[i]) > amax ? fabsf(xb[i]) : amax;
            d = amax / 127.0f;
            id = d != 0.0f ? 1.0f / d : 0.0f;
            if (id > 3.0e38f) id = 0.0f; /* d so small that 1/d overflows: the block is 0 anyway */
            dh = kve__f16_from_f32(d);
            memcpy(ob, &dh, 2); /* native byte order, as ggml's ggml_half */
            for (i = 0; i < KVE__Q8_BLOCK; i++) {
                int8_t q = (int8_t)roundf(xb[i] * id);
                memcpy(ob + 2 + i, &q, 1);
            }
        }
    }
}

#ifdef KVE__AVX512
/* a q8_0 block's scale in all lanes, and its 16 values from `at` (0 or 16) times it: each int8
   is exact in float, times the scale rounded once, as kve__decode */
KVE__INLINE __m512 kve__q8_scale(const unsigned char *block)
{
    uint16_t dh;
    memcpy(&dh, block, 2);
    return _mm512_set1_ps(_cvtsh_ss(dh));
}

KVE__INLINE __m512 kve__q8_half(const unsigned char *block, int32_t at, __m512 scale)
{
    const void *q = block + 2 + at;
    __m128i q16 = _mm_loadu_si128(KVE__CAST(const __m128i *, q));
    return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q16)), scale);
}

/* 16 stored f16 or bf16 values of a row from element i (a multiple of 16) as floats in one
   register, exactly as kve__decode gives them (f16 converted, bf16 shifted) */
KVE__INLINE __m512 kve__load16(kve_type t, const unsigned char *row, int32_t i)
{
    const void *h = row + 2 * (size_t)i;
    __m256i h16 = _mm256_loadu_si256(KVE__CAST(const __m256i *, h));
    if (t == KVE_TYPE_F16) return _mm512_cvtph_ps(h16);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h16), 16));
}
#endif

static void kve__decode(kve_type t, const unsigned char *in, int32_t n, float *x)
{
    int32_t i = 0, b;
    if (t == KVE_TYPE_F32 || t == KVE_TYPE_DEFAULT) {
        memcpy(x, in, (size_t)n * sizeof(float));
    } else if (t == KVE_TYPE_F16) {
#ifdef KVE__AVX512
        for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, kve__load16(t, in, i));
#endif
#ifdef KVE__F16C
        for (; i + 8 <= n; i += 8) {
            const void *h8 = in + 2 * (size_t)i;
            _mm256_storeu_ps(x + i, _mm256_cvtph_ps(_mm_loadu_si128(KVE__CAST(const __m128i *, h8))));
        }
#endif
        for (; i < n; i++) {
            uint16_t h;
            memcpy(&h, in + 2 * (size_t)i, 2);
            x[i] = kve__f32_from_f16(h);
        }
    } else if (t == KVE_TYPE_BF16) {
#if defined(KVE__AVX256) && defined(__AVX2__) /* (vectorised by the compiler at -O3 only) */
        for (; i + 8 <= n; i += 8) {
            const void *h8 = in + 2 * (size_t)i;
            __m256i w = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(KVE__CAST(const __m128i *, h8))), 16);
            _mm256_storeu_ps(x + i, _mm256_castsi256_ps(w));
        }
#endif
        for (; i < n; i++) { /* a shift */
            uint16_t h;
            uint32_t w;
            memcpy(&h, in + 2 * (size_t)i, 2);
            w = (uint32_t)h << 16;
            memcpy(x + i, &w, 4);
        }
    } else {
        for (b = 0; b < n / KVE__Q8_BLOCK; b++) {
            const unsigned char *ib = in + (size_t)b * KVE__Q8_BYTES;
            uint16_t dh;
            float d;
#ifdef KVE__AVX512
            {
                __m512 sc = kve__q8_scale(ib);
                _mm512_storeu_ps(x + (size_t)b * KVE__Q8_BLOCK, kve__q8_half(ib, 0, sc));
                _mm512_storeu_ps(x + (size_t)b * KVE__Q8_BLOCK + 16, kve__q8_half(ib, 16, sc));
                continue;
            }
#elif defined(KVE__AVX256) && defined(__AVX2__) /* 8 at a time: each int8 exact in float, times d */
            {
                __m256 sc;
                memcpy(&dh, ib, 2);
                sc = _mm256_set1_ps(kve__f32_from_f16(dh));
                for (i = 0; i < KVE__Q8_BLOCK; i += 8) {
                    const void *q8 = ib + 2 + i;
                    __m256i w = _mm256_cvtepi8_epi32(_mm_loadl_epi64(KVE__CAST(const __m128i *, q8)));
                    _mm256_storeu_ps(x + (size_t)b * KVE__Q8_BLOCK + (size_t)i, _mm256_mul_ps(_mm256_cvtepi32_ps(w), sc));
                }
                continue;
            }
#endif
            memcpy(&dh, ib, 2);
            d = kve__f32_from_f16(dh);
            for (i = 0; i < KVE__Q8_BLOCK; i++) {
                int8_t q;
                memcpy(&q, ib + 2 + i, 1);
                x[(size_t)b * KVE__Q8_BLOCK + i] = (float)q * d;
            }
        }
    }
}

/* Whether values up to `magnitude` stay finite at the type: an f16 rounds to Inf from 65520 on;
   q8_0 keeps max|x| / 127 as an f16 scale. */
static int kve__fits(kve_type t, float magnitude)
{
    if (t == KVE_TYPE_F16) return magnitude < 65520.0f;
    if (t == KVE_TYPE_Q8_0) return magnitude / 127.0f < 65520.0f;
    return 1;
}

/* The largest magnitude x can take after any rotation of its first `rotated` dims (the norm of
   each rotated pair; RoPE keeps it), or as it is when rotated is 0. */
static float kve__max_magnitude(const kve_config *c, const float *x, int32_t n, int32_t rotated)
{
    int32_t half = rotated / 2, i;
    float m = 0.0f;
    for (i = 0; i < n; i++) {
        int32_t partner = -1;
        float a = fabsf(x[i]);
        if (i < rotated) {
            if (c->rope_layout == KVE_ROPE_HALF) partner = i < half ? i + half : i - half;
            else partner = i ^ 1;
            /* the pair's norm, with room for the rounding of the rotation itself */
            a = sqrtf(x[i] * x[i] + x[partner] * x[partner]) * (1.0f + 1.0f / 1048576.0f);
        }
        m = a > m ? a : m;
    }
    return m;
}

KVE_API size_t kve_row_bytes(kve_type type, int32_t n)
{
    if ((int)type < 0 || type > KVE_TYPE_Q8_0 || n < 0) return 0;
    return kve__row_bytes(type, n);
}

KVE_API kve_result kve_row_from_float(kve_type type, const float *x, int32_t n, void *out)
{
    int32_t i;
    if (!x || !out) return KVE_ERROR_NULL_ARGUMENT;
    if ((int)type < 0 || type > KVE_TYPE_Q8_0) return KVE_ERROR_INVALID_ENUM;
    if (n < 0 || (n > 0 && kve__row_bytes(type, n) == 0)) return KVE_ERROR_INVALID_COUNT;
    if (!kve__finite(x, (size_t)n)) return KVE_ERROR_NOT_FINITE;
    for (i = 0; i < n; i++)
        if (!kve__fits(type, fabsf(x[i]))) return KVE_ERROR_OUT_OF_TYPE_RANGE;
    kve__encode(type, x, n, KVE__CAST(unsigned char *, out));
    return KVE_OK;
}

KVE_API kve_result kve_row_to_float(kve_type type, const void *in, int32_t n, float *out)
{
    if (!in || !out) return KVE_ERROR_NULL_ARGUMENT;
    if ((int)type < 0 || type > KVE_TYPE_Q8_0) return KVE_ERROR_INVALID_ENUM;
    if (n < 0 || (n > 0 && kve__row_bytes(type, n) == 0)) return KVE_ERROR_INVALID_COUNT;
    kve__decode(type, KVE__CAST(const unsigned char *, in), n, out);
    return KVE_OK;
}

/* ---- configuration ---------------------------------------------------------------------------- */
static int64_t kve__pyramid_prefix(int64_t C, int64_t w, int64_t beta, int32_t n_layers,
                                   int32_t layer, int64_t L);

/* the scorers that keep kvpress's defaults: nothing protected (window 0 = none), no pooling */
static int kve__is_scorer_kind(kve_policy_kind k)
{
    return k >= KVE_POLICY_KNORM && k <= KVE_POLICY_EXPECTED_ATTENTION;
}

/* policies that select by a score (and so take an allocation and a compression ratio) */
static int kve__is_selecting(kve_policy_kind k)
{
    return k == KVE_POLICY_SNAPKV || k == KVE_POLICY_PYRAMIDKV || k == KVE_POLICY_H2O ||
           kve__is_scorer_kind(k);
}

static kve_result kve__resolve_policy(const kve_config *c, kve_policy_config *p)
{
    int scorer_kind;
    if ((int)p->kind < 0 || p->kind > KVE_POLICY_SIMLAYERKV) return KVE_ERROR_INVALID_ENUM;
    if ((int)p->pooling < 0 || p->pooling > KVE_POOL_NONE) return KVE_ERROR_INVALID_ENUM;
    if ((int)p->gqa < 0 || p->gqa > KVE_REDUCE_SUM) return KVE_ERROR_INVALID_ENUM;
    if ((int)p->pos_shift < 0 || p->pos_shift > KVE_POS_SHIFT_OFF) return KVE_ERROR_INVALID_ENUM;
    if ((int)p->decode < 0 || p->decode > KVE_DECODE_EVICT) return KVE_ERROR_INVALID_ENUM;
    if ((int)p->allocation < 0 || p->allocation > KVE_ALLOCATION_ADAKV) return KVE_ERROR_INVALID_ENUM;
    if (p->kind == KVE_POLICY_DEFAULT) p->kind = KVE_POLICY_FULL;
    scorer_kind = kve__is_scorer_kind(p->kind);
    if (p->budget < 0 || p->window < 0 || p->kernel < 0 || p->beta < 0 || p->evict_batch < 0 ||
        p->sinks < KVE_NO_SINKS || p->lag_size < 0 || p->chunk_length < 0 ||
        p->n_future_positions < 0 || p->n_recent < 0)
        return KVE_ERROR_INVALID_PARAMETER;
    if (!(p->lazy_threshold >= 0.0 && p->lazy_threshold <= 1.0)) return KVE_ERROR_INVALID_PARAMETER;
    /* written so that NaN fails too */
    if (!(p->compression_ratio >= 0.0 && p->compression_ratio < 1.0)) return KVE_ERROR_INVALID_PARAMETER;
    if (!(p->epsilon >= 0.0 && p->epsilon < 1e30)) return KVE_ERROR_INVALID_PARAMETER;
    if (!((p->alpha_safeguard >= 0.0 && p->alpha_safeguard <= 1.0) ||
          p->alpha_safeguard == KVE_NO_SAFEGUARD))
        return KVE_ERROR_INVALID_PARAMETER;
    if (p->budget == 0) p->budget = c->capacity;
    if (p->window == 0 && p->kind == KVE_POLICY_SIMLAYERKV) p->window = 1; /* kvpress's n_last */
    if (p->window == 0 && !scorer_kind) p->window = 32;
    if (p->kernel == 0) p->kernel = scorer_kind ? 1 : 7;
    if (p->pooling == KVE_POOL_DEFAULT) p->pooling = scorer_kind ? KVE_POOL_NONE : KVE_POOL_MAX;
    if (p->pooling == KVE_POOL_NONE) p->kernel = 1;
    if (p->gqa == KVE_REDUCE_DEFAULT) p->gqa = KVE_REDUCE_MEAN;
    if (p->beta == 0) p->beta = 20;
    if (p->sinks == 0) p->sinks = 4;
    if (p->sinks == KVE_NO_SINKS) p->sinks = 0;
    if (p->pos_shift == KVE_POS_SHIFT_DEFAULT) p->pos_shift = KVE_POS_SHIFT_ON;
    if (p->decode == KVE_DECODE_DEFAULT)
        p->decode = p->kind == KVE_POLICY_H2O || p->kind == KVE_POLICY_STREAMINGLLM
                        ? KVE_DECODE_EVICT
                        : KVE_DECODE_GROW;
    if (p->evict_batch == 0) p->evict_batch = p->window > 0 ? p->window : 1;
    if (p->allocation == KVE_ALLOCATION_DEFAULT)
        p->allocation = p->kind == KVE_POLICY_PYRAMIDKV ? KVE_ALLOCATION_PYRAMID : KVE_ALLOCATION_UNIFORM;
    if (p->alpha_safeguard == 0.0) p->alpha_safeguard = 0.20;
    if (p->alpha_safeguard == KVE_NO_SAFEGUARD) p->alpha_safeguard = 0.0;
    if (p->lag_size == 0) p->lag_size = 128;
    p->cross_scoring = p->cross_scoring != 0;
    if (p->n_future_positions == 0) p->n_future_positions = 512;
    p->no_covariance = p->no_covariance != 0;
    p->no_vnorm = p->no_vnorm != 0;
    if (p->lazy_threshold == 0.0) p->lazy_threshold = 1.0;
    if (p->n_recent == 0) p->n_recent = 1024;

    if (p->budget > c->capacity) return KVE_ERROR_BUDGET_ABOVE_CAPACITY;
    if (!kve__is_selecting(p->kind) &&
        (p->allocation != KVE_ALLOCATION_UNIFORM ||
         (p->compression_ratio != 0.0 && p->kind != KVE_POLICY_STREAMINGLLM)))
        return KVE_ERROR_UNSUPPORTED;
    if (p->allocation == KVE_ALLOCATION_ADAKV && p->decode == KVE_DECODE_EVICT)
        return KVE_ERROR_UNSUPPORTED;
    if (p->chunk_length > 0 && (!kve__is_selecting(p->kind) || p->allocation != KVE_ALLOCATION_UNIFORM))
        return KVE_ERROR_UNSUPPORTED;
    switch (p->kind) {
    case KVE_POLICY_STREAMINGLLM:
        if (p->sinks >= p->budget) return KVE_ERROR_TOO_MANY_SINKS;
        break;
    case KVE_POLICY_CUSTOM:
        if (!p->custom) return KVE_ERROR_NULL_ARGUMENT;
        if (!p->custom->make_room) return KVE_ERROR_NULL_ARGUMENT;
        break;
    case KVE_POLICY_SIMLAYERKV:
        /* a prompt compression that keeps whole layers: nothing to evict while decoding */
        if (p->decode == KVE_DECODE_EVICT) return KVE_ERROR_UNSUPPORTED;
        /* kvpress keeps keys[-n_recent + n_last:], which is every key when they are equal */
        if (p->n_recent <= p->window) return KVE_ERROR_INVALID_PARAMETER;
        break;
    default:
        if (p->kind == KVE_POLICY_SCORER && !p->scorer) return KVE_ERROR_NULL_ARGUMENT;
        if (!kve__is_selecting(p->kind)) break;
        if (p->kernel % 2 == 0 && p->kind != KVE_POLICY_H2O) return KVE_ERROR_EVEN_KERNEL;
        if (p->budget <= p->window) return KVE_ERROR_WINDOW_TOO_LARGE;
        if (p->allocation == KVE_ALLOCATION_PYRAMID) {
            /* evicting while decoding, the largest layer budget (layer 0's) must fit */
            int64_t top = kve__pyramid_prefix(p->budget, p->window, p->beta, c->n_layers, 0,
                                              KVE_MAX_POSITION) + p->window;
            /* and the smallest (the last layer's) must hold the newest token */
            int64_t bottom = kve__pyramid_prefix(p->budget, p->window, p->beta, c->n_layers,
                                                 c->n_layers - 1, KVE_MAX_POSITION) + p->window;
            if (p->decode == KVE_DECODE_EVICT && top > c->capacity)
                return KVE_ERROR_BUDGET_ABOVE_CAPACITY;
            if (p->decode == KVE_DECODE_EVICT && bottom < 1) return KVE_ERROR_INVALID_PARAMETER;
        }
        break;
    }
    return KVE_OK;
}

KVE_API kve_result kve_config_resolve(const kve_config *in, kve_config *out)
{
    kve_config c;
    if (!in || !out) return KVE_ERROR_NULL_ARGUMENT;
    c = *in;
    memset(out, 0, sizeof *out);
    if (c.n_kv_heads == 0) c.n_kv_heads = c.n_heads;
    if (c.n_layers <= 0 || c.n_layers > KVE_MAX_LAYERS || c.n_heads <= 0 ||
        c.n_heads > KVE_MAX_HEADS || c.n_kv_heads <= 0 || c.n_kv_heads > c.n_heads ||
        c.head_dim <= 0 || c.head_dim > KVE_MAX_HEAD_DIM)
        return KVE_ERROR_INVALID_DIMENSIONS;
    if (c.n_heads % c.n_kv_heads != 0) return KVE_ERROR_HEADS_NOT_DIVISIBLE;
    if (c.capacity <= 0 || c.capacity > KVE_MAX_CAPACITY) return KVE_ERROR_INVALID_CAPACITY;
    if ((int)c.rope_layout < 0 || c.rope_layout > KVE_ROPE_NONE) return KVE_ERROR_INVALID_ENUM;
    if ((int)c.key_storage < 0 || c.key_storage > KVE_KEYS_PRE_ROPE) return KVE_ERROR_INVALID_ENUM;
    if (c.rope_layout == KVE_ROPE_DEFAULT) c.rope_layout = KVE_ROPE_INTERLEAVED;
    if (c.rope_layout == KVE_ROPE_NONE) c.rope_dims = 0; /* nothing rotates: any head_dim */
    else if (c.rope_dims == 0) c.rope_dims = c.head_dim;
    if (c.rope_theta == 0.0) c.rope_theta = 10000.0;
    if (c.rope_linear_factor == 0.0) c.rope_linear_factor = 1.0;
    if (!(c.rope_theta > 0.0) || !isfinite(c.rope_theta) || !(c.rope_linear_factor > 0.0) ||
        !isfinite(c.rope_linear_factor) || c.rope_dims < 0 || c.rope_dims % 2 != 0 ||
        c.rope_dims > c.head_dim)
        return KVE_ERROR_INVALID_ROPE;
    if (c.rope_dims > 0) {
        /* every angle up to KVE_MAX_POSITION must be a finite double: the frequencies run from 1
           to theta^(-(rope_dims-2)/rope_dims), positions are divided by the linear factor */
        double f_last = pow(c.rope_theta, -(double)(c.rope_dims - 2) / (double)c.rope_dims);
        double f_max = f_last > 1.0 ? f_last : 1.0;
        double max_angle = (double)KVE_MAX_POSITION / c.rope_linear_factor * f_max;
        if (!isfinite(f_last) || !(max_angle < 1e300)) return KVE_ERROR_INVALID_ROPE;
    }
    if (c.key_storage == KVE_KEYS_DEFAULT) c.key_storage = KVE_KEYS_POST_ROPE;
    if (c.n_threads < 0) return KVE_ERROR_INVALID_PARAMETER;
    if ((int)c.k_type < 0 || c.k_type > KVE_TYPE_Q8_0 || (int)c.v_type < 0 ||
        c.v_type > KVE_TYPE_Q8_0)
        return KVE_ERROR_INVALID_ENUM;
    if (c.k_type == KVE_TYPE_DEFAULT) c.k_type = KVE_TYPE_F32;
    if (c.v_type == KVE_TYPE_DEFAULT) c.v_type = KVE_TYPE_F32;
    if (kve__row_bytes(c.k_type, c.head_dim) == 0 || kve__row_bytes(c.v_type, c.head_dim) == 0)
        return KVE_ERROR_INVALID_TYPE;
    {
        kve_result r = kve__resolve_policy(&c, &c.policy);
        if (r != KVE_OK) return r;
    }
    *out = c;
    return KVE_OK;
}

/* strides in bytes (layer, KV head, slot) of vectors of `row` bytes in a packed layout */
static kve_result kve__layout_strides(const kve_config *c, kve_layout layout, size_t row,
                                      size_t *stride)
{
    size_t cap = (size_t)c->capacity, hk = (size_t)c->n_kv_heads, t;
    int ok = 1;
    if (layout == KVE_LAYOUT_DEFAULT) {
        stride[1] = row;
        stride[2] = kve__mul(hk, row, &ok);
    } else if (layout == KVE_LAYOUT_HEAD_MAJOR) {
        stride[2] = row;
        stride[1] = kve__mul(cap, row, &ok);
    } else {
        return KVE_ERROR_INVALID_ENUM;
    }
    t = kve__mul(kve__mul(cap, row, &ok), hk, &ok);
    if (!ok) return KVE_ERROR_SIZE_OVERFLOW;
    stride[0] = t;
    return KVE_OK;
}

KVE_API kve_result kve_buffer_bytes(const kve_config *cfg, kve_layout layout, size_t *k_bytes,
                                    size_t *v_bytes)
{
    kve_config c;
    size_t ks[3], vs[3];
    kve_result r;
    if (!k_bytes || !v_bytes) return KVE_ERROR_NULL_ARGUMENT;
    *k_bytes = *v_bytes = 0;
    if ((r = kve_config_resolve(cfg, &c)) != KVE_OK) return r;
    if ((r = kve__layout_strides(&c, layout, kve__row_bytes(c.k_type, c.head_dim), ks)) != KVE_OK ||
        (r = kve__layout_strides(&c, layout, kve__row_bytes(c.v_type, c.head_dim), vs)) != KVE_OK)
        return r;
    if (!kve__mul_ok(ks[0], (size_t)c.n_layers, k_bytes) ||
        !kve__mul_ok(vs[0], (size_t)c.n_layers, v_bytes)) {
        *k_bytes = *v_bytes = 0;
        return KVE_ERROR_SIZE_OVERFLOW;
    }
    return KVE_OK;
}

/* attention blocks and flash-decoding chunks (see kve__group_chunk) */
#define KVE__ATTN_BLOCK 64     /* slots per block of the online softmax; with one query row per KV
                                  head, half as many (measured: its keys then values stream from
                                  memory at 0.8 of the read bandwidth instead of 0.7) */
#define KVE__SPLIT_TOKENS 1024 /* a multiple of KVE__ATTN_BLOCK */

static size_t kve__split_chunks(size_t n)
{
    return (n + KVE__SPLIT_TOKENS - 1) / KVE__SPLIT_TOKENS;
}

/* One plan feeds both kve_cache_size() and kve_cache_init(), so they cannot disagree. */
typedef struct kve__plan {
    size_t generation, limit, budget, pos, len, newest, stored, ring_next, sink_anchor_done, sink_keys, sink_cos, sink_sin, sink_angle_pos, scores, queries,
        query_pos, query_count, recent_pos, window_sum, window_sum_queries, qstat_count, qstat_sum,
        qstat_outer, freq, rope_table, scratch_q, scratch_f1, scratch_f2,
        scratch_split, scratch_f3, scratch_i1, scratch_i2, scratch_u8, ada_score, ada_index, ada_order, ada_keep,
        total;
    int32_t obs_window, sinks, wants_scores;
} kve__plan;

/* places `count` elements of `elem` bytes at the next aligned offset; a no-op once *ok is 0 */
static void kve__plan_add(int *ok, size_t *at, size_t *field, size_t count, size_t elem)
{
    size_t bytes, start;
    if (!*ok) return;
    if (!kve__mul_ok(count, elem, &bytes)) {
        *ok = 0;
        return;
    }
    start = (*at + (KVE__ALIGN - 1)) & ~(size_t)(KVE__ALIGN - 1);
    if (start < *at || bytes > SIZE_MAX - start - KVE__ALIGN) {
        *ok = 0;
        return;
    }
    *field = start;
    *at = start + bytes;
}

static kve_result kve__make_plan(const kve_config *c, kve__plan *p)
{
    size_t L = (size_t)c->n_layers, H = (size_t)c->n_heads, Hk = (size_t)c->n_kv_heads;
    size_t d = (size_t)c->head_dim, cap = (size_t)c->capacity, half = (size_t)c->rope_dims / 2;
    size_t at = 0, lh, lhc, lhcap, t;
    int ok = 1;
    const kve_policy_config *pc = &c->policy;
    memset(p, 0, sizeof *p);
    p->sinks = pc->kind == KVE_POLICY_STREAMINGLLM ? pc->sinks : 0;
    p->obs_window = (pc->kind == KVE_POLICY_SNAPKV || pc->kind == KVE_POLICY_PYRAMIDKV ||
                     pc->kind == KVE_POLICY_CUSTOM || pc->kind == KVE_POLICY_SCORER ||
                     pc->kind == KVE_POLICY_SIMLAYERKV) ? pc->window
                    : pc->kind == KVE_POLICY_TOVA ? 1 /* the newest query */
                                                 : 0;
    p->wants_scores = pc->kind == KVE_POLICY_H2O || pc->kind == KVE_POLICY_OBSERVED_ATTENTION ||
                      pc->kind == KVE_POLICY_SCORER ||
                      (pc->kind == KVE_POLICY_CUSTOM && pc->custom && pc->custom->wants_scores);
    lh = kve__mul(L, Hk, &ok);
    lhc = kve__mul(lh, cap, &ok);
    lhcap = kve__mul(kve__mul(L, H, &ok), cap, &ok);
    kve__plan_add(&ok, &at, &p->generation, 1, sizeof(uint64_t));
    kve__plan_add(&ok, &at, &p->limit, L, sizeof(int32_t));
    kve__plan_add(&ok, &at, &p->budget, L, sizeof(int32_t));
    kve__plan_add(&ok, &at, &p->pos, lhc, sizeof(int64_t));
    kve__plan_add(&ok, &at, &p->len, lh, sizeof(int32_t));
    kve__plan_add(&ok, &at, &p->newest, L, sizeof(int64_t));
    kve__plan_add(&ok, &at, &p->stored, L, sizeof(int64_t));
    kve__plan_add(&ok, &at, &p->ring_next, L, sizeof(int32_t));
    kve__plan_add(&ok, &at, &p->sink_anchor_done, L, sizeof(int64_t));
    kve__plan_add(&ok, &at, &p->sink_keys,
                  kve__mul(kve__mul(lh, (size_t)p->sinks, &ok), d, &ok), sizeof(float));
    kve__plan_add(&ok, &at, &p->sink_cos, kve__mul((size_t)p->sinks, half, &ok), sizeof(float));
    kve__plan_add(&ok, &at, &p->sink_sin, kve__mul((size_t)p->sinks, half, &ok), sizeof(float));
    kve__plan_add(&ok, &at, &p->sink_angle_pos, (size_t)p->sinks, sizeof(int64_t));
    kve__plan_add(&ok, &at, &p->scores, p->wants_scores ? lhcap : 0, sizeof(float));
    t = kve__mul(kve__mul(L, (size_t)p->obs_window, &ok), kve__mul(H, d, &ok), &ok);
    kve__plan_add(&ok, &at, &p->queries, t, sizeof(float));
    kve__plan_add(&ok, &at, &p->query_pos, kve__mul(L, (size_t)p->obs_window, &ok),
                  sizeof(int64_t));
    kve__plan_add(&ok, &at, &p->query_count, L, sizeof(int64_t));
    t = (pc->kind == KVE_POLICY_SNAPKV || pc->kind == KVE_POLICY_PYRAMIDKV) &&
                pc->decode == KVE_DECODE_EVICT
            ? lhcap
            : 0;
    kve__plan_add(&ok, &at, &p->window_sum, t, sizeof(float));
    kve__plan_add(&ok, &at, &p->window_sum_queries, t ? L : 0, sizeof(int64_t));
    kve__plan_add(&ok, &at, &p->recent_pos,
                  pc->kind == KVE_POLICY_H2O ? kve__mul(L, (size_t)pc->window, &ok) : 0,
                  sizeof(int64_t));
    t = pc->kind == KVE_POLICY_EXPECTED_ATTENTION ? kve__mul(kve__mul(L, H, &ok), d, &ok) : 0;
    kve__plan_add(&ok, &at, &p->qstat_count, t ? L : 0, sizeof(int64_t));
    kve__plan_add(&ok, &at, &p->qstat_sum, t, sizeof(double));
    kve__plan_add(&ok, &at, &p->qstat_outer, pc->no_covariance ? 0 : kve__mul(t, d, &ok),
                  sizeof(double));
    kve__plan_add(&ok, &at, &p->freq, half, sizeof(double));
    t = c->key_storage == KVE_KEYS_PRE_ROPE && c->rope_layout != KVE_ROPE_NONE
            ? kve__mul(cap, kve__mul(half, 2, &ok), &ok) /* the angle table of pre-RoPE keys */
            : 0;
    kve__plan_add(&ok, &at, &p->rope_table, t, sizeof(float));
    kve__plan_add(&ok, &at, &p->scratch_q, kve__mul(H, d, &ok), sizeof(float));
    kve__plan_add(&ok, &at, &p->scratch_f1, kve__mul(H, cap, &ok), sizeof(float));
    kve__plan_add(&ok, &at, &p->scratch_f2, kve__mul(H, cap, &ok), sizeof(float));
    kve__plan_add(&ok, &at, &p->scratch_split,
                  kve__mul(kve__mul(H, kve__split_chunks(cap), &ok), d + 2, &ok), sizeof(float));
    kve__plan_add(&ok, &at, &p->scratch_f3, kve__mul(kve__mul(Hk, cap, &ok), 2, &ok),
                  sizeof(float));
    kve__plan_add(&ok, &at, &p->scratch_i1, kve__mul(Hk, cap, &ok), sizeof(int32_t));
    kve__plan_add(&ok, &at, &p->scratch_i2, kve__mul(Hk, cap, &ok), sizeof(int32_t));
    kve__plan_add(&ok, &at, &p->scratch_u8, kve__mul(Hk, cap, &ok), 1);
    /* AdaKV's selection over all KV heads of a layer at once */
    t = pc->allocation == KVE_ALLOCATION_ADAKV ? kve__mul(Hk, cap, &ok) : 0;
    if (t > (size_t)INT32_MAX) ok = 0; /* its candidates are counted in int32 */
    kve__plan_add(&ok, &at, &p->ada_score, t, sizeof(float));
    kve__plan_add(&ok, &at, &p->ada_index, t, sizeof(int32_t));
    kve__plan_add(&ok, &at, &p->ada_order, t, sizeof(int32_t));
    kve__plan_add(&ok, &at, &p->ada_keep, t, 1);
    if (!ok || at > SIZE_MAX - KVE__ALIGN) return KVE_ERROR_SIZE_OVERFLOW;
    p->total = at;
    return KVE_OK;
}

KVE_API kve_result kve_cache_size(const kve_config *cfg, size_t *bytes)
{
    kve_config c;
    kve__plan p;
    kve_result r;
    if (!bytes) return KVE_ERROR_NULL_ARGUMENT;
    *bytes = 0;
    if ((r = kve_config_resolve(cfg, &c)) != KVE_OK) return r;
    if ((r = kve__make_plan(&c, &p)) != KVE_OK) return r;
    *bytes = p.total;
    return KVE_OK;
}

static int32_t kve__layer_budget_of(const kve_config *c, int32_t layer);

/* Checks that every (layer, head, slot) vector lies inside the buffer and no two overlap: sorted by
   stride, each dimension's stride must step over the whole extent of the finer ones. */
static kve_result kve__check_strides(const kve_config *c, const size_t *strides, size_t row,
                                     size_t bytes)
{
    size_t stride[3], count[3], extent, last, t;
    int i, j;
    stride[0] = strides[0]; count[0] = (size_t)c->n_layers;
    stride[1] = strides[1]; count[1] = (size_t)c->n_kv_heads;
    stride[2] = strides[2]; count[2] = (size_t)c->capacity;
    for (i = 0; i < 3; i++)
        for (j = i + 1; j < 3; j++)
            if (stride[j] < stride[i] || (stride[j] == stride[i] && count[j] < count[i])) {
                t = stride[i]; stride[i] = stride[j]; stride[j] = t;
                t = count[i]; count[i] = count[j]; count[j] = t;
            }
    extent = row;
    last = 0;
    for (i = 0; i < 3; i++) {
        if (count[i] == 1) continue;
        if (stride[i] < extent) return KVE_ERROR_OVERLAPPING_STRIDES;
        if (!kve__mul_ok(stride[i], count[i] - 1, &t) || t > SIZE_MAX - last)
            return KVE_ERROR_SIZE_OVERFLOW;
        last += t;
        extent = last + row;
    }
    if (last > SIZE_MAX - row) return KVE_ERROR_SIZE_OVERFLOW;
    if (last + row > bytes) return KVE_ERROR_BUFFER_TOO_SMALL;
    return KVE_OK;
}

/* A prompt stored before a layer's first attention may fill the whole capacity (scoring needs
   attention; a prompt is compressed after its prefill); once a layer has been attended or
   compressed, it is kept within its budget. StreamingLLM keeps its budget from the start. */
static int32_t kve__initial_limit(const kve_cache *c, int32_t l)
{
    if (c->cfg.policy.kind == KVE_POLICY_STREAMINGLLM) return c->budget[l];
    return c->cfg.capacity;
}

/* the running window sums of layer l start over (after an eviction, a compression) */
static void kve__window_sum_reset(kve_cache *c, int32_t l)
{
    size_t row = (size_t)c->cfg.n_heads * (size_t)c->cfg.capacity;
    if (!c->window_sum) return;
    memset(c->window_sum + (size_t)l * row, 0, row * sizeof(float));
    c->window_sum_queries[l] = 0;
}

static void kve__clear_state(kve_cache *c)
{
    size_t L = (size_t)c->cfg.n_layers, Hk = (size_t)c->cfg.n_kv_heads;
    size_t l;
    memset(c->len, 0, L * Hk * sizeof(int32_t));
    for (l = 0; l < L; l++) {
        c->newest[l] = -1;
        c->stored[l] = 0;
        c->ring_next[l] = c->sinks;
        c->sink_anchor_done[l] = -1;
        c->query_count[l] = 0;
        c->limit[l] = kve__initial_limit(c, (int32_t)l);
    }
    for (l = 0; l < L * Hk * (size_t)c->cfg.capacity; l++) c->pos[l] = -1;
    for (l = 0; l < (size_t)c->sinks; l++) c->sink_angle_pos[l] = -1;
    if (c->recent_pos)
        for (l = 0; l < L * (size_t)c->cfg.policy.window; l++) c->recent_pos[l] = -1;
    for (l = 0; l < L; l++) kve__window_sum_reset(c, (int32_t)l);
    if (c->scores)
        memset(c->scores, 0, L * (size_t)c->cfg.n_heads * (size_t)c->cfg.capacity * sizeof(float));
    if (c->qstat_count) {
        size_t hd = (size_t)c->cfg.n_heads * (size_t)c->cfg.head_dim;
        memset(c->qstat_count, 0, L * sizeof(int64_t));
        memset(c->qstat_sum, 0, L * hd * sizeof(double));
        if (c->qstat_outer)
            memset(c->qstat_outer, 0, L * hd * (size_t)c->cfg.head_dim * sizeof(double));
    }
}

static const kve_policy_vtable *kve__builtin_vtable(kve_policy_kind kind);

/* one past the end of a region, saturating instead of wrapping around */
static uintptr_t kve__region_end(uintptr_t start, size_t count, size_t elem)
{
    uintptr_t room = (UINTPTR_MAX - start) / elem;
    return start + (uintptr_t)(count < room ? count : room) * elem;
}

KVE_API kve_result kve_cache_init(const kve_config *cfg, const kve_buffers *b, void *memory,
                                  size_t memory_bytes, kve_cache *cache)
{
    kve_config c;
    kve__plan p;
    kve_result r;
    size_t ks[3], vs[3], krow, vrow, ka, va, i;
    unsigned char *m = KVE__CAST(unsigned char *, memory);
    if (!cache) return KVE_ERROR_NULL_ARGUMENT;
    memset(cache, 0, sizeof *cache);
    if (!cfg || !b || !memory) return KVE_ERROR_NULL_ARGUMENT;
    if ((r = kve_config_resolve(cfg, &c)) != KVE_OK) return r;
    if ((r = kve__make_plan(&c, &p)) != KVE_OK) return r;
    if (!b->k || !b->v) return KVE_ERROR_NULL_ARGUMENT;
    krow = kve__row_bytes(c.k_type, c.head_dim);
    vrow = kve__row_bytes(c.v_type, c.head_dim);
    ka = kve__type_align(c.k_type);
    va = kve__type_align(c.v_type);
    if ((uintptr_t)b->k % ka || (uintptr_t)b->v % va || (uintptr_t)memory % 8)
        return KVE_ERROR_MISALIGNED;
    if (memory_bytes < p.total) return KVE_ERROR_MEMORY_TOO_SMALL;
    if ((int)b->layout < 0 || b->layout > KVE_LAYOUT_STRIDES) return KVE_ERROR_INVALID_ENUM;
    if (b->layout == KVE_LAYOUT_STRIDES) {
        ks[0] = b->k_layer_stride; ks[1] = b->k_head_stride; ks[2] = b->k_slot_stride;
        vs[0] = b->v_layer_stride; vs[1] = b->v_head_stride; vs[2] = b->v_slot_stride;
        for (i = 0; i < 3; i++)
            if (ks[i] % ka || vs[i] % va) return KVE_ERROR_MISALIGNED;
    } else if ((r = kve__layout_strides(&c, b->layout, krow, ks)) != KVE_OK ||
               (r = kve__layout_strides(&c, b->layout, vrow, vs)) != KVE_OK) {
        return r;
    }
    if ((r = kve__check_strides(&c, ks, krow, b->k_bytes)) != KVE_OK) return r;
    if ((r = kve__check_strides(&c, vs, vrow, b->v_bytes)) != KVE_OK) return r;
    {
        /* compared as integers: the three regions are separate objects */
        uintptr_t k0 = (uintptr_t)b->k, v0 = (uintptr_t)b->v, m0 = (uintptr_t)memory;
        uintptr_t k1 = kve__region_end(k0, b->k_bytes, 1);
        uintptr_t v1 = kve__region_end(v0, b->v_bytes, 1);
        uintptr_t m1 = kve__region_end(m0, p.total, 1);
        if ((k0 < v1 && v0 < k1) || (k0 < m1 && m0 < k1) || (v0 < m1 && m0 < v1))
            return KVE_ERROR_OVERLAPPING_BUFFERS;
    }

    cache->cfg = c;
    cache->group = c.n_heads / c.n_kv_heads;
    cache->k = KVE__CAST(unsigned char *, b->k);
    cache->v = KVE__CAST(unsigned char *, b->v);
    cache->k_bytes = b->k_bytes; cache->v_bytes = b->v_bytes;
    for (i = 0; i < 3; i++) {
        cache->k_stride[i] = ks[i];
        cache->v_stride[i] = vs[i];
    }
    cache->k_row = krow; cache->v_row = vrow;
    cache->vtable = c.policy.kind == KVE_POLICY_CUSTOM ? c.policy.custom
                                                       : kve__builtin_vtable(c.policy.kind);
    cache->vtable_user = c.policy.custom_user;
    cache->obs_window = p.obs_window;
    cache->sinks = p.sinks;
    cache->limit = KVE__CAST(int32_t *, m + p.limit);
    cache->budget = KVE__CAST(int32_t *, m + p.budget);
    cache->pos = KVE__CAST(int64_t *, m + p.pos);
    cache->len = KVE__CAST(int32_t *, m + p.len);
    cache->newest = KVE__CAST(int64_t *, m + p.newest);
    cache->stored = KVE__CAST(int64_t *, m + p.stored);
    cache->ring_next = KVE__CAST(int32_t *, m + p.ring_next);
    cache->sink_anchor_done = KVE__CAST(int64_t *, m + p.sink_anchor_done);
    cache->sink_keys = KVE__CAST(float *, m + p.sink_keys);
    cache->sink_cos = KVE__CAST(float *, m + p.sink_cos);
    cache->sink_sin = KVE__CAST(float *, m + p.sink_sin);
    cache->sink_angle_pos = KVE__CAST(int64_t *, m + p.sink_angle_pos);
    cache->scores = p.wants_scores ? KVE__CAST(float *, m + p.scores) : NULL;
    cache->queries = KVE__CAST(float *, m + p.queries);
    cache->query_pos = KVE__CAST(int64_t *, m + p.query_pos);
    cache->query_count = KVE__CAST(int64_t *, m + p.query_count);
    cache->recent_pos = c.policy.kind == KVE_POLICY_H2O ? KVE__CAST(int64_t *, m + p.recent_pos) : NULL;
    cache->window_sum = (c.policy.kind == KVE_POLICY_SNAPKV || c.policy.kind == KVE_POLICY_PYRAMIDKV) &&
                                c.policy.decode == KVE_DECODE_EVICT
                            ? KVE__CAST(float *, m + p.window_sum)
                            : NULL;
    cache->window_sum_queries = cache->window_sum ? KVE__CAST(int64_t *, m + p.window_sum_queries) : NULL;
    cache->freq = KVE__CAST(double *, m + p.freq);
    cache->rope_table = KVE__CAST(float *, m + p.rope_table);
    cache->scratch_q = KVE__CAST(float *, m + p.scratch_q);
    cache->scratch_f1 = KVE__CAST(float *, m + p.scratch_f1);
    cache->scratch_f2 = KVE__CAST(float *, m + p.scratch_f2);
    cache->scratch_split = KVE__CAST(float *, m + p.scratch_split);
    cache->scratch_f3 = KVE__CAST(float *, m + p.scratch_f3);
    cache->scratch_i1 = KVE__CAST(int32_t *, m + p.scratch_i1);
    cache->scratch_i2 = KVE__CAST(int32_t *, m + p.scratch_i2);
    cache->scratch_u8 = m + p.scratch_u8;
    cache->score_from = INT64_MIN;
    {
        int expected = c.policy.kind == KVE_POLICY_EXPECTED_ATTENTION;
        cache->qstat_count = expected ? KVE__CAST(int64_t *, m + p.qstat_count) : NULL;
        cache->qstat_sum = expected ? KVE__CAST(double *, m + p.qstat_sum) : NULL;
        cache->qstat_outer = expected && !c.policy.no_covariance
                                 ? KVE__CAST(double *, m + p.qstat_outer) : NULL;
    }
    if (c.policy.allocation == KVE_ALLOCATION_ADAKV) {
        cache->ada_score = KVE__CAST(float *, m + p.ada_score);
        cache->ada_index = KVE__CAST(int32_t *, m + p.ada_index);
        cache->ada_order = KVE__CAST(int32_t *, m + p.ada_order);
        cache->ada_keep = m + p.ada_keep;
    } else {
        cache->ada_score = NULL;
        cache->ada_index = cache->ada_order = NULL;
        cache->ada_keep = NULL;
    }

    for (i = 0; i < (size_t)c.rope_dims / 2; i++)
        cache->freq[i] = pow(c.rope_theta, -2.0 * (double)i / (double)c.rope_dims);
    if (c.key_storage == KVE_KEYS_PRE_ROPE && c.rope_layout != KVE_ROPE_NONE) {
        size_t half = (size_t)c.rope_dims / 2, pp;
        int pairs = c.rope_layout == KVE_ROPE_INTERLEAVED;
        for (pp = 0; pp < (size_t)c.capacity; pp++)
            for (i = 0; i < half; i++) {
                double a = ((double)pp / c.rope_linear_factor) * cache->freq[i];
                float *row = cache->rope_table + pp * 2 * half;
                row[pairs ? 2 * i : i] = (float)cos(a);
                row[pairs ? 2 * i + 1 : half + i] = (float)sin(a);
            }
    }
    for (i = 0; i < (size_t)c.n_layers; i++) cache->budget[i] = kve__layer_budget_of(&c, (int32_t)i);
    kve__clear_state(cache);
    cache->shared_generation = KVE__CAST(uint64_t *, m + p.generation);
    *cache->shared_generation = cache->generation = 0;
    cache->magic = KVE__MAGIC;
    return KVE_OK;
}

/* NULL or never initialised: KVE_ERROR_NULL_ARGUMENT. A struct copy shares the bookkeeping and
   buffers with its original; moving one is fine, but once a copy has changed the cache, the
   others are stale: KVE_ERROR_MOVED_CACHE. */
static kve_result kve__status(const kve_cache *c)
{
    if (!c || c->magic != KVE__MAGIC) return KVE_ERROR_NULL_ARGUMENT;
    return c->generation == *c->shared_generation ? KVE_OK : KVE_ERROR_MOVED_CACHE;
}
/* called by every call that changes the cache, after its checks */
static void kve__changed(kve_cache *c) { c->generation = ++*c->shared_generation; }
static int kve__valid(const kve_cache *c) { return kve__status(c) == KVE_OK; }

KVE_API kve_result kve_cache_reset(kve_cache *cache)
{
    kve_result r;
    if ((r = kve__status(cache)) != KVE_OK) return r;
    kve__changed(cache);
    kve__clear_state(cache);
    return KVE_OK;
}

/* ---- RoPE ----------------------------------------------------------------------------------- */
/* rotation by explicit cos/sin per pair */
static void kve__rotate_cs(const kve_config *c, float *x, const float *cs, const float *sn)
{
    int32_t half = c->rope_dims / 2, i;
    if (c->rope_layout == KVE_ROPE_INTERLEAVED) {
        for (i = 0; i < half; i++) {
            float a = x[2 * i], b = x[2 * i + 1];
            /* a c + (-b) s, not a c - b s (the same value): gcc 12 at -O3 with FMA turns a pair
               of lines, one subtracting and one adding, into a fused vfmaddsub even with
               -ffp-contract=off (the build would then differ from the portable one); with two
               additions it does not */
            x[2 * i] = a * cs[i] + -b * sn[i];
            x[2 * i + 1] = b * cs[i] + a * sn[i];
        }
    } else if (c->rope_layout == KVE_ROPE_HALF) {
        for (i = 0; i < half; i++) {
            float a = x[i], b = x[i + half];
            x[i] = a * cs[i] - b * sn[i];
            x[i + half] = b * cs[i] + a * sn[i];
        }
    }
}

/* cos/sin of a position's angles, formed in double: exact enough at 10^7 and beyond */
static void kve__angles(const kve_config *c, const double *freq, int64_t pos, float *cs, float *sn)
{
    int32_t half = c->rope_dims / 2, i;
    double p = (double)pos / c->rope_linear_factor;
    for (i = 0; i < half; i++) {
        double a = p * freq[i];
        cs[i] = (float)cos(a);
        sn[i] = (float)sin(a);
    }
}

static void kve__rotate(const kve_config *c, const double *freq, float *x, int64_t pos)
{
    float cs[KVE_MAX_HEAD_DIM / 2], sn[KVE_MAX_HEAD_DIM / 2];
    if (c->rope_layout == KVE_ROPE_NONE || c->rope_dims == 0) return;
    kve__angles(c, freq, pos, cs, sn);
    kve__rotate_cs(c, x, cs, sn);
}

static kve_result kve__rope_public(const kve_config *cfg, float *x, int64_t pos)
{
    kve_config c;
    double freq[KVE_MAX_HEAD_DIM / 2];
    int32_t i;
    if (!cfg || !x) return KVE_ERROR_NULL_ARGUMENT;
    memset(&c, 0, sizeof c);
    c.n_layers = 1; c.n_heads = 1; c.n_kv_heads = 1; c.capacity = 1;
    c.head_dim = cfg->head_dim;
    c.rope_layout = cfg->rope_layout; c.rope_theta = cfg->rope_theta;
    c.rope_dims = cfg->rope_dims; c.rope_linear_factor = cfg->rope_linear_factor;
    {
        kve_result r = kve_config_resolve(&c, &c);
        if (r != KVE_OK) return r;
    }
    if (pos > KVE_MAX_POSITION || pos < -KVE_MAX_POSITION) return KVE_ERROR_POSITION;
    if (!kve__finite(x, (size_t)c.head_dim)) return KVE_ERROR_NOT_FINITE;
    for (i = 0; i < c.rope_dims / 2; i++)
        freq[i] = pow(c.rope_theta, -2.0 * (double)i / (double)c.rope_dims);
    kve__rotate(&c, freq, x, pos);
    return KVE_OK;
}

KVE_API kve_result kve_rope_apply(const kve_config *cfg, float *x, int64_t pos)
{
    if (pos < 0) return KVE_ERROR_POSITION;
    return kve__rope_public(cfg, x, pos);
}

KVE_API kve_result kve_rope_shift(const kve_config *cfg, float *x, int64_t delta)
{
    return kve__rope_public(cfg, x, delta);
}

/* ---- addressing ------------------------------------------------------------------------------- */
static unsigned char *kve__kptr(const kve_cache *c, int32_t l, int32_t h, int32_t s)
{
    return c->k + (size_t)l * c->k_stride[0] + (size_t)h * c->k_stride[1] + (size_t)s * c->k_stride[2];
}
static unsigned char *kve__vptr(const kve_cache *c, int32_t l, int32_t h, int32_t s)
{
    return c->v + (size_t)l * c->v_stride[0] + (size_t)h * c->v_stride[1] + (size_t)s * c->v_stride[2];
}
/* a stored f32 vector read in place (float32 buffers are 4-byte aligned: init checks it) */
static const float *kve__f32_row(const unsigned char *row)
{
    return KVE__CAST(const float *, KVE__CAST(const void *, row));
}
static float *kve__f32_row_w(unsigned char *row)
{
    return KVE__CAST(float *, KVE__CAST(void *, row));
}
static int64_t *kve__pos(const kve_cache *c, int32_t l, int32_t h)
{
    return c->pos + ((size_t)l * (size_t)c->cfg.n_kv_heads + (size_t)h) * (size_t)c->cfg.capacity;
}
static int32_t *kve__len(const kve_cache *c, int32_t l, int32_t h)
{
    return c->len + (size_t)l * (size_t)c->cfg.n_kv_heads + (size_t)h;
}
static float *kve__score_row(const kve_cache *c, int32_t l, int32_t head)
{
    return c->scores + ((size_t)l * (size_t)c->cfg.n_heads + (size_t)head) * (size_t)c->cfg.capacity;
}

/* the f32 pre-RoPE copy of sink s of (l, h) (StreamingLLM) */
static float *kve__sink_key(const kve_cache *c, int32_t l, int32_t h, int32_t s)
{
    return c->sink_keys + (((size_t)l * (size_t)c->cfg.n_kv_heads + (size_t)h) * (size_t)c->sinks +
                           (size_t)s) * (size_t)c->cfg.head_dim;
}

/* ---- pos-shift -------------------------------------------------------------------------------- */
static int kve__pos_shift(const kve_cache *c)
{
    return c->cfg.policy.kind == KVE_POLICY_STREAMINGLLM &&
           c->cfg.policy.pos_shift == KVE_POS_SHIFT_ON;
}

/* StreamingLLM pos-shift numbers the cache in order: sink i (slot i, the first tokens stored) sits
   right before the oldest recent token; the recent tokens, a ring over slots S..budget-1, keep
   their distances to the query (with consecutive positions this is exactly the original's
   renumbering). Returns the oldest recent token's position, or -1 when the sinks stay put. */
static int64_t kve__sink_anchor(const kve_cache *c, int32_t l)
{
    int32_t S = c->sinks, n, oldest;
    if (!kve__pos_shift(c) || S == 0) return -1; /* before reading a length another head's
                                                    compression may be changing */
    n = *kve__len(c, l, 0);
    if (n <= S) return -1;
    oldest = c->stored[l] > (int64_t)n ? c->ring_next[l] : S;
    return kve__pos(c, l, 0)[oldest];
}

/* Asks for `bytes` from p ahead of their use: the hardware prefetcher alone leaves the kernels
   of converted types waiting on memory (a row is half a float row or less, summed as fast), and
   float rows too once they come from memory (it stops at every 4 KiB page). A hint: nothing is
   read. */
#define KVE__PREFETCH_ROWS 32
#define KVE__PREFETCH_FAR_ROWS 64   /* float rows: further ahead, the sums take longer per byte */
#ifndef KVEVICT_CACHED_BYTES
#define KVEVICT_CACHED_BYTES (64.0 * 1024 * 1024) /* K/V of all layers up to this stay cached */
#endif
#if defined(__GNUC__) || defined(__clang__)
#define KVE__PREFETCH_TO(p, bytes, locality)                                                    \
    do {                                                                                       \
        const unsigned char *kve__pf_ = (p);                                                    \
        size_t kve__pf_off_;                                                                    \
        for (kve__pf_off_ = 0; kve__pf_off_ < (bytes); kve__pf_off_ += 64)                      \
            __builtin_prefetch(kve__pf_ + kve__pf_off_, 0, locality);                           \
    } while (0)
#else
#define KVE__PREFETCH_TO(p, bytes, locality) ((void)(p))
#endif
#define KVE__PREFETCH(p, bytes) KVE__PREFETCH_TO(p, bytes, 3)
#define KVE__PREFETCH_L2(p, bytes) KVE__PREFETCH_TO(p, bytes, 2) /* L1 keeps the rows being summed */

/* Effective positions in pre-RoPE mode, numbered from the first sink (the original's cache-order
   numbering, so they stay below capacity and hit the angle table): slots below `sinks` sit at their
   slot index, every other slot at position - base. */
typedef struct kve__posmap {
    int64_t base;
    int32_t sinks;
} kve__posmap;

static kve__posmap kve__make_posmap(const kve_cache *c, int32_t l)
{
    kve__posmap m;
    int64_t anchor = kve__sink_anchor(c, l);
    int32_t n = kve__pos_shift(c) ? *kve__len(c, l, 0) : 0; /* other policies: not read, as a
                                                               parallel shrink may be changing it */
    m.sinks = anchor >= 0 ? c->sinks : 0;
    m.base = anchor >= 0 ? anchor - c->sinks : 0;
    if (anchor < 0 && n > 0) {
        /* numbered from the oldest token: without sinks, once the ring has wrapped, that is the
           ring's next slot, not slot 0 (so no effective position is negative) */
        int32_t oldest = c->sinks == 0 && c->stored[l] > (int64_t)n ? c->ring_next[l] : 0;
        m.base = kve__pos(c, l, 0)[oldest];
    }
    return m;
}

/* ---- attention kernels ------------------------------------------------------------------------ */
/* kve__rotate_cs from a float row into another (no overlap), by a row of the angle table: the
   same products and sums, in loops the compiler vectorises */
#if defined(__GNUC__) || defined(__clang__)
#define KVE__RESTRICT __restrict__
#else
#define KVE__RESTRICT
#endif
static void kve__rotate_row_into(const kve_config *c, const float *KVE__RESTRICT x,
                                 float *KVE__RESTRICT y, const float *KVE__RESTRICT row)
{
    int32_t half = c->rope_dims / 2, d = c->head_dim, i;
    if (c->rope_layout == KVE_ROPE_INTERLEAVED) {
        for (i = 0; i < half; i++) {
            y[2 * i] = x[2 * i] * row[2 * i] + -x[2 * i + 1] * row[2 * i + 1]; /* see kve__rotate_cs */
            y[2 * i + 1] = x[2 * i + 1] * row[2 * i] + x[2 * i] * row[2 * i + 1];
        }
    } else {
        const float *sn = row + half;
        for (i = 0; i < half; i++) {
            y[i] = x[i] * row[i] - x[i + half] * sn[i];
            y[i + half] = x[i + half] * row[i] + x[i] * sn[i];
        }
    }
    for (i = 2 * half; i < d; i++) y[i] = x[i]; /* past the rotary dimensions */
}

/* A stored pre-RoPE key as floats, rotated at an effective position (by the table when it is
   small; float rows straight from the buffer) */
static void kve__rotate_eff(const kve_cache *c, const unsigned char *row, int64_t p, float *out)
{
    float x[KVE_MAX_HEAD_DIM];
    if (c->cfg.rope_layout != KVE_ROPE_NONE && p >= 0 && p < c->cfg.capacity) {
        const float *in = kve__f32_row(row); /* float rows straight from the buffer */
        if (c->cfg.k_type != KVE_TYPE_F32) {
            kve__decode(c->cfg.k_type, row, c->cfg.head_dim, x);
            in = x;
        }
        kve__rotate_row_into(&c->cfg, in, out, c->rope_table + (size_t)p * (size_t)c->cfg.rope_dims);
        return;
    }
    kve__decode(c->cfg.k_type, row, c->cfg.head_dim, out);
    if (c->cfg.rope_layout != KVE_ROPE_NONE) kve__rotate(&c->cfg, c->freq, out, p);
}

/* Kernels. The G query heads that share a KV head are computed together, so each key and value
   row is read once for all of them (grouped-query attention at one read per KV head). A dot
   product runs in 16 lanes over head_dim (lane j takes elements j, j + 16, ...); the 16 lanes of
   16 keys are then folded together in four halving steps across keys, so one set of vector adds
   finishes 16 dot products. The order is fixed, whatever the blocking or thread count. */
#define KVE__KEY_BLOCK 16 /* keys per kve__dot16 call */

/* the 16 lane sums of key j in P[j] are folded into out[j], j < nb */
static void kve__fold16(float P[16][16], int32_t nb, float *out)
{
#ifdef KVE__AVX512 /* the same adds on whole registers (the compiler vectorises the loops below at
                      -O3 only) */
    __m512 A[8], B[4], C[2], x, y;
    int32_t j;
    KVE__UNROLL
    for (j = 0; j < 8; j++) { /* A[j]: 8 lanes of key 2j, then 8 of key 2j+1 */
        x = 2 * j < nb ? _mm512_loadu_ps(P[2 * j]) : _mm512_setzero_ps();
        y = 2 * j + 1 < nb ? _mm512_loadu_ps(P[2 * j + 1]) : _mm512_setzero_ps();
        A[j] = _mm512_add_ps(_mm512_shuffle_f32x4(x, y, 0x44), _mm512_shuffle_f32x4(x, y, 0xEE));
    }
    KVE__UNROLL
    for (j = 0; j < 4; j++) /* B[j]: 4 lanes each of keys 4j .. 4j+3 */
        B[j] = _mm512_add_ps(_mm512_shuffle_f32x4(A[2 * j], A[2 * j + 1], 0x88),
                             _mm512_shuffle_f32x4(A[2 * j], A[2 * j + 1], 0xDD));
    KVE__UNROLL
    for (j = 0; j < 2; j++) /* C[j]: block b holds lanes 2b, 2b+1, 2b+8, 2b+9 of the C[j] below */
        C[j] = _mm512_add_ps(_mm512_shuffle_ps(B[2 * j], B[2 * j + 1], 0x44),
                             _mm512_shuffle_ps(B[2 * j], B[2 * j + 1], 0xEE));
    /* block b: keys b, b + 4, b + 8, b + 12; then in key order */
    x = _mm512_add_ps(_mm512_shuffle_ps(C[0], C[1], 0x88), _mm512_shuffle_ps(C[0], C[1], 0xDD));
    x = _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), x);
    _mm512_mask_storeu_ps(out, kve__lanes_before(0, nb), x);
#else
    float A[8][16], B[4][16], C[2][16];
    int32_t j, l, m;
    for (j = nb; j < 16; j++) memset(P[j], 0, sizeof P[j]);
    for (j = 0; j < 8; j++) /* A[j]: 8 lanes of key 2j, then 8 of key 2j+1 */
        for (l = 0; l < 8; l++) {
            A[j][l] = P[2 * j][l] + P[2 * j][l + 8];
            A[j][l + 8] = P[2 * j + 1][l] + P[2 * j + 1][l + 8];
        }
    for (j = 0; j < 4; j++) /* B[j]: 4 lanes each of keys 4j .. 4j+3 */
        for (l = 0; l < 4; l++) {
            B[j][l] = A[2 * j][l] + A[2 * j][l + 4];
            B[j][l + 4] = A[2 * j][l + 8] + A[2 * j][l + 12];
            B[j][l + 8] = A[2 * j + 1][l] + A[2 * j + 1][l + 4];
            B[j][l + 12] = A[2 * j + 1][l + 8] + A[2 * j + 1][l + 12];
        }
    for (j = 0; j < 2; j++) /* C[j]: 2 lanes each of keys 8j .. 8j+7 */
        for (l = 0; l < 2; l++)
            for (m = 0; m < 4; m++) {
                C[j][m * 2 + l] = B[2 * j][m * 4 + l] + B[2 * j][m * 4 + l + 2];
                C[j][8 + m * 2 + l] = B[2 * j + 1][m * 4 + l] + B[2 * j + 1][m * 4 + l + 2];
            }
    for (l = 0; l < 8; l++) {
        float x = C[0][2 * l] + C[0][2 * l + 1], y = C[1][2 * l] + C[1][2 * l + 1];
        if (l < nb) out[l] = x;
        if (8 + l < nb) out[8 + l] = y;
    }
#endif
}

#ifdef KVE__AVX256
/* one key's 16 lane sums (lanes 0-7 in lo, 8-15 in hi) folded as kve__fold16 folds them: the
   fold never mixes two keys, so each key is these four adds */
static float kve__fold_key(__m256 lo, __m256 hi)
{
    __m256 h = _mm256_add_ps(lo, hi);                                                  /* l, l + 8 */
    __m128 g = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));     /* l, l + 4 */
    g = _mm_add_ps(g, _mm_movehl_ps(g, g));                                            /* l, l + 2 */
    return _mm_cvtss_f32(_mm_add_ss(g, _mm_shuffle_ps(g, g, 1)));                      /* 0 + 1 */
}
#endif

static void kve__dot16(const float *q, const float *const *k, int32_t nb, int32_t d, float *out)
{
    float P[16][16];
    int32_t j, l, i;
#ifdef KVE__AVX256 /* the same sums in two registers per key (the loops below vectorise at -O3 only) */
    for (j = 0; j < nb; j++) {
        __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
        for (i = 0; i + 16 <= d; i += 16) {
            lo = _mm256_add_ps(lo, _mm256_mul_ps(_mm256_loadu_ps(q + i), _mm256_loadu_ps(k[j] + i)));
            hi = _mm256_add_ps(hi, _mm256_mul_ps(_mm256_loadu_ps(q + i + 8), _mm256_loadu_ps(k[j] + i + 8)));
        }
        if (i < d) { /* the tail */
            _mm256_storeu_ps(P[0], lo);
            _mm256_storeu_ps(P[0] + 8, hi);
            for (l = 0; l < d - i; l++) P[0][l] += q[i + l] * k[j][i + l];
            lo = _mm256_loadu_ps(P[0]);
            hi = _mm256_loadu_ps(P[0] + 8);
        }
        out[j] = kve__fold_key(lo, hi);
    }
    return;
#endif
    for (j = 0; j < nb; j++) {
        const float *kj = k[j];
        float a[16];
        for (l = 0; l < 16; l++) a[l] = 0.0f;
        for (i = 0; i + 16 <= d; i += 16)
            for (l = 0; l < 16; l++) a[l] += q[i + l] * kj[i + l];
        for (l = 0; l < d - i; l++) a[l] += q[i + l] * kj[i + l]; /* the tail */
        memcpy(P[j], a, sizeof a);
    }
    kve__fold16(P, nb, out);
}

#if defined(KVE__F16C) && !defined(KVE__AVX512) /* with AVX-512: kve__dots */
/* kve__dot16 on keys stored as f16, converted in registers (8 per instruction, exactly): the
   same products and sums in the same order as converting the row first */
static void kve__dot16_f16(const float *q, const unsigned char *const *k, int32_t nb, int32_t d,
                           float *out)
{
    float P[16][16];
    int32_t j, l, i;
    for (j = 0; j < nb; j++) {
        __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
        for (i = 0; i + 16 <= d; i += 16) {
            const void *h0 = k[j] + 2 * (size_t)i, *h1 = k[j] + 2 * (size_t)(i + 8);
            __m256 k0 = _mm256_cvtph_ps(_mm_loadu_si128(KVE__CAST(const __m128i *, h0)));
            __m256 k1 = _mm256_cvtph_ps(_mm_loadu_si128(KVE__CAST(const __m128i *, h1)));
            lo = _mm256_add_ps(lo, _mm256_mul_ps(_mm256_loadu_ps(q + i), k0));
            hi = _mm256_add_ps(hi, _mm256_mul_ps(_mm256_loadu_ps(q + i + 8), k1));
        }
        _mm256_storeu_ps(P[j], lo);
        _mm256_storeu_ps(P[j] + 8, hi);
        for (l = 0; l < d - i; l++) {
            uint16_t hv;
            memcpy(&hv, k[j] + 2 * (size_t)(i + l), 2);
            P[j][l] += q[i + l] * kve__f32_from_f16(hv);
        }
        out[j] = kve__fold_key(_mm256_loadu_ps(P[j]), _mm256_loadu_ps(P[j] + 8));
    }
}

/* y += (a0 x0 + a1 x1) + (a2 x2 + a3 x3) with the x rows f16, as kve__axpy4 after conversion */
static void kve__axpy4_f16(float *y, const float *a, const unsigned char *const *x, int32_t n)
{
    int32_t i = 0, r;
    __m256 a0 = _mm256_set1_ps(a[0]), a1 = _mm256_set1_ps(a[1]), a2 = _mm256_set1_ps(a[2]);
    __m256 a3 = _mm256_set1_ps(a[3]);
    for (; i + 8 <= n; i += 8) {
        __m256 v[4];
        for (r = 0; r < 4; r++) {
            const void *hp = x[r] + 2 * (size_t)i;
            v[r] = _mm256_cvtph_ps(_mm_loadu_si128(KVE__CAST(const __m128i *, hp)));
        }
        __m256 s01 = _mm256_add_ps(_mm256_mul_ps(a0, v[0]), _mm256_mul_ps(a1, v[1]));
        __m256 s23 = _mm256_add_ps(_mm256_mul_ps(a2, v[2]), _mm256_mul_ps(a3, v[3]));
        _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_add_ps(s01, s23)));
    }
    for (; i < n; i++) {
        float f[4];
        for (r = 0; r < 4; r++) {
            uint16_t hv;
            memcpy(&hv, x[r] + 2 * (size_t)i, 2);
            f[r] = kve__f32_from_f16(hv);
        }
        y[i] += (a[0] * f[0] + a[1] * f[1]) + (a[2] * f[2] + a[3] * f[3]);
    }
}
#endif

#ifdef KVE__AVX512
/* The AVX-512 kernels: every type read where it is stored and converted in registers, products
   summed with fused multiply-adds. In such a build every cache (any type, G, key storage) goes
   through them, so a typed cache still gives exactly what a float cache holding the type-rounded
   rows gives; the portable kernels round each product, so the two builds differ in the last bits. */

/* element i of a stored f16 or bf16 row (the tails past the last 16; q8_0 has none) */
static float kve__half_at(kve_type t, const unsigned char *row, int32_t i)
{
    uint16_t h;
    uint32_t w;
    float f;
    memcpy(&h, row + 2 * (size_t)i, 2);
    if (t == KVE_TYPE_F16) return kve__f32_from_f16(h);
    w = (uint32_t)h << 16;
    memcpy(&f, &w, 4);
    return f;
}

/* 16 values of a row stored at type t (f32, f16 or bf16; the kernels read q8_0 block by block)
   from element i, as kve__decode gives them; lanes at or past d are 0 and nothing past the row
   is read */
KVE__INLINE __m512 kve__row16(kve_type t, const unsigned char *row, int32_t i, int32_t d)
{
    float x[16];
    int32_t l;
    if (i + 16 <= d) {
        if (t == KVE_TYPE_F32) return _mm512_loadu_ps(kve__f32_row(row) + i);
        return kve__load16(t, row, i);
    }
    if (i >= d) return _mm512_setzero_ps();
    for (l = 0; l < 16; l++) /* a tail */
        x[l] = i + l >= d ? 0.0f : t == KVE_TYPE_F32 ? kve__f32_row(row)[i + l] : kve__half_at(t, row, i + l);
    return _mm512_loadu_ps(x);
}

/* Rows a kernel asks for ahead of their use (NULL: none): with each pair of keys of a block, the
   key rows `k` and value rows `v` as many slots on, so that the requests spread over the block
   (all at once, they stall on the fill buffers). */
typedef struct kve__ahead {
    const unsigned char *k, *v;
    size_t kstride, vstride, kbytes, vbytes;
} kve__ahead;

#define KVE__BACK_FLOATS (4 * KVE_MAX_HEAD_DIM) /* query rows rotated back (kve__logits_range) */

/* Pre-RoPE keys rotated inside kve__dots, from the angle table: each key's cos and sin rows
   (rope_dims == head_dim; pairs: head_dim a multiple of 16, halves: of 32) */
#define KVE__ROT_PAIRS 1  /* KVE_ROPE_INTERLEAVED: pairs (2i, 2i+1) */
#define KVE__ROT_HALVES 2 /* KVE_ROPE_HALF: pairs (i, i + head_dim/2) */
typedef struct kve__key_angles {
    int32_t rot;
    const float *row[16]; /* the row each key is rotated by: its position's, or its offset's
                             from p0 when the query rows were rotated back by p0 */
} kve__key_angles;

/* 16 values of a key from element i (a multiple of 16), any type */
KVE__INLINE __m512 kve__key16(kve_type t, const unsigned char *row, int32_t i, int32_t d)
{
    if (t == KVE_TYPE_Q8_0) {
        const unsigned char *block = row + (size_t)(i / KVE__Q8_BLOCK) * KVE__Q8_BYTES;
        return kve__q8_half(block, i % KVE__Q8_BLOCK, kve__q8_scale(block));
    }
    return kve__row16(t, row, i, d);
}

/* 16 interleaved values (8 pairs) rotated by the table's 8 (cos, sin) pairs at cs */
KVE__INLINE __m512 kve__rope_pairs16(__m512 x, const float *cs)
{
    __m512 t = _mm512_loadu_ps(cs), c = _mm512_moveldup_ps(t), s = _mm512_movehdup_ps(t);
    return _mm512_fmaddsub_ps(x, c, _mm512_mul_ps(_mm512_permute_ps(x, 0xB1), s)); /* even: a c - b s */
}

/* the n rows at q (stride d) rotated back by the table row cs (by minus its angles) to out */
static void kve__rotate_back_rows(int32_t rot, int32_t n, const float *q, int32_t d,
                                  const float *cs, float *out)
{
    int32_t r, i;
    for (r = 0; r < n; r++) {
        const float *x = q + (size_t)r * (size_t)d;
        float *y = out + (size_t)r * (size_t)d;
        if (rot == KVE__ROT_PAIRS)
            for (i = 0; i < d; i += 16) { /* even: a c + b s, odd: b c - a s */
                __m512 v = _mm512_loadu_ps(x + i), t = _mm512_loadu_ps(cs + i);
                __m512 sw = _mm512_mul_ps(_mm512_permute_ps(v, 0xB1), _mm512_movehdup_ps(t));
                _mm512_storeu_ps(y + i, _mm512_fmsubadd_ps(v, _mm512_moveldup_ps(t), sw));
            }
        else
            for (i = 0; i < d / 2; i += 16) {
                __m512 a = _mm512_loadu_ps(x + i), b = _mm512_loadu_ps(x + d / 2 + i);
                __m512 c = _mm512_loadu_ps(cs + i), s = _mm512_loadu_ps(cs + d / 2 + i);
                _mm512_storeu_ps(y + i, _mm512_fmadd_ps(a, c, _mm512_mul_ps(b, s)));
                _mm512_storeu_ps(y + d / 2 + i, _mm512_fmsub_ps(b, c, _mm512_mul_ps(a, s)));
            }
    }
}

/* 16 values of each half (x at i, y at i + d/2) rotated by pairs i .. i+15: out[0], out[1] */
KVE__INLINE void kve__rope_halves16(__m512 x, __m512 y, const float *cs, const float *sn, __m512 *out)
{
    __m512 c = _mm512_loadu_ps(cs), s = _mm512_loadu_ps(sn);
    out[0] = _mm512_fmsub_ps(x, c, _mm512_mul_ps(y, s));
    out[1] = _mm512_fmadd_ps(y, c, _mm512_mul_ps(x, s));
}

/* Keeps a loaded vector in a register: without it, gcc folds the load into each multiply-add that
   uses it, and a key read for four query rows is loaded four times (the loads, not the
   multiply-adds, then bound the kernel) */
#if defined(__GNUC__) || defined(__clang__)
#define KVE__IN_REGISTER(x) __asm__("" : "+v"(x))
#else
#define KVE__IN_REGISTER(x) ((void)0)
#endif

/* acc[r][0] += the 16 floats of query row r at q (rows d apart; lanes m) times xa, acc[r][1] the
   same times xb, for rows r < R */
KVE__INLINE void kve__fma_pair(int32_t R, const float *q, int32_t d, __mmask16 m, __m512 xa,
                               __m512 xb, __m512 (*acc)[2])
{
    int32_t r;
    KVE__IN_REGISTER(xa);
    KVE__IN_REGISTER(xb);
    KVE__UNROLL
    for (r = 0; r < R; r++) {
        __m512 qv = _mm512_maskz_loadu_ps(m, q + (size_t)r * (size_t)d);
        KVE__IN_REGISTER(qv); /* once for both keys */
        acc[r][0] = _mm512_fmadd_ps(qv, xa, acc[r][0]);
        acc[r][1] = _mm512_fmadd_ps(qv, xb, acc[r][1]);
    }
}

/* P[r][j]: the 16 lane sums of query row r (q + r*d) against key j (k0 + j*kstride, stored at t),
   j < nb; lane l adds the products of elements l, l + 16, ... in order (keys rotated here in the
   half layout: l, l + d/2, l + 16, l + 16 + d/2, ...), one rounding each, as
   kve__fold16 then folds. Two keys at a time: 2R independent sums. */
KVE__INLINE void kve__lanes_rows(kve_type t, int32_t R, int32_t rot, const float *q, int32_t d,
                                 const unsigned char *k0, size_t kstride, int32_t nb,
                                 const kve__ahead *ahead, const kve__key_angles *ka_, float (*P)[16][16])
{
    int32_t j, i, r;
    for (j = 0; j < nb; j += 2) {
        const unsigned char *ka = k0 + (size_t)j * kstride, *kb = j + 1 < nb ? ka + kstride : ka;
        int32_t jb = j + 1 < nb ? j + 1 : j;
        __m512 acc[4][2];
        KVE__UNROLL
        for (r = 0; r < R; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
        if (ahead) {
            KVE__PREFETCH_L2(ahead->k + (size_t)j * ahead->kstride, ahead->kbytes);
            KVE__PREFETCH_L2(ahead->k + (size_t)(j + 1) * ahead->kstride, ahead->kbytes);
            KVE__PREFETCH_L2(ahead->v + (size_t)j * ahead->vstride, ahead->vbytes);
            KVE__PREFETCH_L2(ahead->v + (size_t)(j + 1) * ahead->vstride, ahead->vbytes);
        }
        if (rot == KVE__ROT_PAIRS)
            for (i = 0; i < d; i += 16)
                kve__fma_pair(R, q + i, d, 0xFFFFu,
                              kve__rope_pairs16(kve__key16(t, ka, i, d), ka_->row[j] + i),
                              kve__rope_pairs16(kve__key16(t, kb, i, d), ka_->row[jb] + i), acc);
        else if (rot == KVE__ROT_HALVES)
            for (i = 0; i < d / 2; i += 16) {
                __m512 ra[2], rb[2];
                kve__rope_halves16(kve__key16(t, ka, i, d), kve__key16(t, ka, i + d / 2, d),
                                   ka_->row[j] + i, ka_->row[j] + d / 2 + i, ra);
                kve__rope_halves16(kve__key16(t, kb, i, d), kve__key16(t, kb, i + d / 2, d),
                                   ka_->row[jb] + i, ka_->row[jb] + d / 2 + i, rb);
                kve__fma_pair(R, q + i, d, 0xFFFFu, ra[0], rb[0], acc);
                kve__fma_pair(R, q + i + d / 2, d, 0xFFFFu, ra[1], rb[1], acc);
            }
        else if (t == KVE_TYPE_Q8_0) /* block by block: each key's scale once for two halves */
            for (i = 0; i < d; i += KVE__Q8_BLOCK) {
                const unsigned char *ba = ka + (size_t)(i / KVE__Q8_BLOCK) * KVE__Q8_BYTES;
                const unsigned char *bb = kb + (size_t)(i / KVE__Q8_BLOCK) * KVE__Q8_BYTES;
                __m512 sa = kve__q8_scale(ba), sb = kve__q8_scale(bb);
                int32_t at;
                for (at = 0; at < KVE__Q8_BLOCK; at += 16)
                    kve__fma_pair(R, q + i + at, d, 0xFFFFu, kve__q8_half(ba, at, sa),
                                  kve__q8_half(bb, at, sb), acc);
            }
        else
            for (i = 0; i < d; i += 16)
                kve__fma_pair(R, q + i, d, kve__lanes_before(i, d), kve__row16(t, ka, i, d),
                              kve__row16(t, kb, i, d), acc);
        KVE__UNROLL
        for (r = 0; r < R; r++) {
            _mm512_storeu_ps(P[r][j], acc[r][0]);
            if (j + 1 < nb) _mm512_storeu_ps(P[r][j + 1], acc[r][1]);
        }
    }
}

/* kve__lanes_rows for one query row (keys rotated or not): the row's 16-float pieces stay in
   registers and each key is read in one run of loads (few instructions per key, so the core keeps
   more rows in flight); the same sums in the same order */
KVE__INLINE void kve__lanes_one(kve_type t, int32_t rot, const float *q, int32_t d,
                                const unsigned char *k0, size_t kstride, int32_t nb,
                                const kve__ahead *ahead, const kve__key_angles *ka_, float (*P)[16])
{
    __m512 qv[KVE_MAX_HEAD_DIM / 16];
    int32_t j, i, pieces = (d + 15) / 16;
    KVE__UNROLL
    for (i = 0; i < pieces; i++) qv[i] = _mm512_maskz_loadu_ps(kve__lanes_before(16 * i, d), q + 16 * i);
    for (j = 0; j < nb; j++) {
        const unsigned char *k = k0 + (size_t)j * kstride;
        __m512 acc = _mm512_setzero_ps();
        if (ahead) {
            KVE__PREFETCH_L2(ahead->k + (size_t)j * ahead->kstride, ahead->kbytes);
            KVE__PREFETCH_L2(ahead->v + (size_t)j * ahead->vstride, ahead->vbytes);
        }
        if (rot == KVE__ROT_PAIRS) /* as kve__lanes_rows rotates and sums */
            KVE__UNROLL
            for (i = 0; i < pieces; i++)
                acc = _mm512_fmadd_ps(qv[i], kve__rope_pairs16(kve__key16(t, k, 16 * i, d), ka_->row[j] + 16 * i), acc);
        else if (rot == KVE__ROT_HALVES)
            KVE__UNROLL
            for (i = 0; i < pieces / 2; i++) {
                __m512 rk[2];
                kve__rope_halves16(kve__key16(t, k, 16 * i, d), kve__key16(t, k, 16 * i + d / 2, d),
                                   ka_->row[j] + 16 * i, ka_->row[j] + d / 2 + 16 * i, rk);
                acc = _mm512_fmadd_ps(qv[i], rk[0], acc);
                acc = _mm512_fmadd_ps(qv[i + pieces / 2], rk[1], acc);
            }
        else if (t == KVE_TYPE_Q8_0) /* block by block: the scale once for two halves */
            KVE__UNROLL
            for (i = 0; i < pieces; i += 2) {
                const unsigned char *block = k + (size_t)(i / 2) * KVE__Q8_BYTES;
                __m512 sc = kve__q8_scale(block);
                acc = _mm512_fmadd_ps(qv[i], kve__q8_half(block, 0, sc), acc);
                acc = _mm512_fmadd_ps(qv[i + 1], kve__q8_half(block, 16, sc), acc);
            }
        else
            KVE__UNROLL
            for (i = 0; i < pieces; i++) acc = _mm512_fmadd_ps(qv[i], kve__row16(t, k, 16 * i, d), acc);
        _mm512_storeu_ps(P[j], acc);
    }
}

/* the G query rows (qr, stride d) against nb <= 16 keys: row g's dot products to out + g*ld;
   query rows four (or two, or one) at a time, so each key is converted once per four rows */
KVE__INLINE void kve__dots_block(kve_type t, int32_t rot, int32_t d, const float *qr, int32_t G,
                                 const unsigned char *k0, size_t kstride, int32_t nb,
                                 const kve__ahead *ahead, const kve__key_angles *ang, float *out, size_t ld)
{
    float P[4][16][16];
    int32_t g = 0, r, R;
    for (; g < G; g += R) {
        const float *q = qr + (size_t)g * (size_t)d;
        /* rows asked for once per block, by several query rows' pass (one row's keys stream
           well without: its few instructions per key keep enough rows in flight) */
        const kve__ahead *a = g || (G - g < 2 && !rot) ? NULL : ahead;
        R = G - g >= 4 ? 4 : G - g >= 2 ? 2 : 1;
        if (R == 4) kve__lanes_rows(t, 4, rot, q, d, k0, kstride, nb, a, ang, P);
        else if (R == 2) kve__lanes_rows(t, 2, rot, q, d, k0, kstride, nb, a, ang, P);
        else kve__lanes_one(t, rot, q, d, k0, kstride, nb, a, ang, P[0]);
        for (r = 0; r < R; r++) kve__fold16(P[r], nb, out + (size_t)(g + r) * ld);
    }
}

/* kve__dots_block with the type and the common head_dim 128 as constants: each its own loop */
static void kve__dots(kve_type t, int32_t d, const float *qr, int32_t G, const unsigned char *k0,
                      size_t kstride, int32_t nb, const kve__ahead *ahead, const kve__key_angles *ang,
                      float *out, size_t ld)
{
#define KVE__DOTS(type)                                                                            \
    do {                                                                                           \
        if (ang && ang->rot == KVE__ROT_PAIRS && d == 128)                                         \
            kve__dots_block(type, KVE__ROT_PAIRS, 128, qr, G, k0, kstride, nb, ahead, ang, out, ld);\
        else if (ang && ang->rot == KVE__ROT_PAIRS)                                                \
            kve__dots_block(type, KVE__ROT_PAIRS, d, qr, G, k0, kstride, nb, ahead, ang, out, ld); \
        else if (ang && d == 128)                                                                  \
            kve__dots_block(type, KVE__ROT_HALVES, 128, qr, G, k0, kstride, nb, ahead, ang, out, ld);\
        else if (ang)                                                                              \
            kve__dots_block(type, KVE__ROT_HALVES, d, qr, G, k0, kstride, nb, ahead, ang, out, ld);\
        else if (d == 128)                                                                         \
            kve__dots_block(type, 0, 128, qr, G, k0, kstride, nb, ahead, NULL, out, ld);           \
        else kve__dots_block(type, 0, d, qr, G, k0, kstride, nb, ahead, NULL, out, ld);            \
    } while (0)
    switch (t) {
    case KVE_TYPE_F16: KVE__DOTS(KVE_TYPE_F16); break;
    case KVE_TYPE_BF16: KVE__DOTS(KVE_TYPE_BF16); break;
    case KVE_TYPE_Q8_0: KVE__DOTS(KVE_TYPE_Q8_0); break;
    default: KVE__DOTS(KVE_TYPE_F32); break;
    }
#undef KVE__DOTS
}

/* out (R rows, stride d) += the sum over slots s < n of p[r*ld + s] times value row s (v0 +
   s*vstride, stored at t): each element adds its slots in order, one fused multiply-add each.
   16U columns of the R rows at a time stay in registers over all n slots. */
KVE__INLINE void kve__wsum_rows(kve_type t, int32_t R, int32_t U, float *out, int32_t d,
                                const float *p, size_t ld, const unsigned char *v0, size_t vstride,
                                int32_t n)
{
    int32_t c0, s, r, u;
    for (c0 = 0; c0 < d; c0 += 16 * U) {
        __m512 acc[4][8], x[8];
        __mmask16 m[8];
        KVE__UNROLL
        for (u = 0; u < U; u++) {
            m[u] = kve__lanes_before(c0 + 16 * u, d);
            KVE__UNROLL
            for (r = 0; r < R; r++)
                acc[r][u] = _mm512_maskz_loadu_ps(m[u], out + (size_t)r * (size_t)d + (size_t)(c0 + 16 * u));
        }
        for (s = 0; s < n; s++) {
            const unsigned char *row = v0 + (size_t)s * vstride;
            if (t == KVE_TYPE_Q8_0) /* whole blocks (c0 is a multiple of 32): one scale per two */
                for (u = 0; u < U; u += 2) {
                    const unsigned char *block = row + (size_t)((c0 + 16 * u) / KVE__Q8_BLOCK) * KVE__Q8_BYTES;
                    __m512 sc;
                    if (c0 + 16 * u >= d) {
                        x[u] = x[u + 1] = _mm512_setzero_ps();
                        continue;
                    }
                    sc = kve__q8_scale(block);
                    x[u] = kve__q8_half(block, 0, sc);
                    x[u + 1] = kve__q8_half(block, 16, sc);
                }
            else
                KVE__UNROLL
                for (u = 0; u < U; u++) x[u] = kve__row16(t, row, c0 + 16 * u, d);
            if (R > 1)
                KVE__UNROLL
                for (u = 0; u < U; u++) KVE__IN_REGISTER(x[u]);
            KVE__UNROLL
            for (r = 0; r < R; r++) {
                __m512 w = _mm512_set1_ps(p[(size_t)r * ld + (size_t)s]);
                KVE__UNROLL
                for (u = 0; u < U; u++) acc[r][u] = _mm512_fmadd_ps(w, x[u], acc[r][u]);
            }
        }
        KVE__UNROLL
        for (u = 0; u < U; u++)
            KVE__UNROLL
            for (r = 0; r < R; r++)
                _mm512_mask_storeu_ps(out + (size_t)r * (size_t)d + (size_t)(c0 + 16 * u), m[u], acc[r][u]);
    }
}

/* the G output rows (stride d) += their weights (rows of p, stride ld) times n value rows: four
   rows of 64 columns, or two or one of 128, at a time (16 accumulators or fewer) */
KVE__INLINE void kve__wsum_block(kve_type t, int32_t d, float *out, int32_t G, const float *p,
                                 size_t ld, const unsigned char *v0, size_t vstride, int32_t n)
{
    int32_t g, R;
    for (g = 0; g < G; g += R) {
        float *o = out + (size_t)g * (size_t)d;
        const float *pg = p + (size_t)g * ld;
        R = G - g >= 4 ? 4 : G - g >= 2 ? 2 : 1;
        if (R == 4) kve__wsum_rows(t, 4, 4, o, d, pg, ld, v0, vstride, n);
        else if (R == 2) kve__wsum_rows(t, 2, 8, o, d, pg, ld, v0, vstride, n);
        else kve__wsum_rows(t, 1, 8, o, d, pg, ld, v0, vstride, n);
    }
}

static void kve__wsum(kve_type t, int32_t d, float *out, int32_t G, const float *p, size_t ld,
                      const unsigned char *v0, size_t vstride, int32_t n)
{
#define KVE__WSUM(type)                                                                            \
    do {                                                                                           \
        if (d == 128) kve__wsum_block(type, 128, out, G, p, ld, v0, vstride, n);                    \
        else kve__wsum_block(type, d, out, G, p, ld, v0, vstride, n);                               \
    } while (0)
    switch (t) {
    case KVE_TYPE_F16: KVE__WSUM(KVE_TYPE_F16); break;
    case KVE_TYPE_BF16: KVE__WSUM(KVE_TYPE_BF16); break;
    case KVE_TYPE_Q8_0: KVE__WSUM(KVE_TYPE_Q8_0); break;
    default: KVE__WSUM(KVE_TYPE_F32); break;
    }
#undef KVE__WSUM
}
#endif

/* Whether one query head per KV head reads f16 rows converted inside the sums (a group of
   several converts each block once instead, then sums floats), and the two kernels that do
   (F16C without AVX-512; with it, every type is converted inside kve__dots and kve__wsum). */
#if defined(KVE__F16C) && !defined(KVE__AVX512)
static int kve__converts_inside(kve_type t, int32_t G) { return t == KVE_TYPE_F16 && G == 1; }

static void kve__dot16_stored(kve_type t, const float *q, const unsigned char *const *k, int32_t nb,
                              int32_t d, float *out)
{
    (void)t;
    kve__dot16_f16(q, k, nb, d, out);
}

static void kve__axpy4_stored(kve_type t, float *y, const float *a, const unsigned char *const *x,
                              int32_t n)
{
    (void)t;
    kve__axpy4_f16(y, a, x, n);
}
#endif

/* y += a x over n floats: vectorises everywhere; the rows being summed stay in L1 */
static void kve__axpy(float *y, float a, const float *x, int32_t n)
{
    int32_t i;
    for (i = 0; i < n; i++) y[i] += a * x[i];
}

/* y += (a0 x0 + a1 x1) + (a2 x2 + a3 x3): four value rows per pass over y, a quarter of the
   loads and stores of y */
static void kve__axpy4(float *y, const float *a, const float *x0, const float *x1,
                       const float *x2, const float *x3, int32_t n)
{
    int32_t i = 0;
    const float a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
#ifdef KVE__AVX256 /* the same sums, 8 at a time */
    __m256 b0 = _mm256_set1_ps(a0), b1 = _mm256_set1_ps(a1), b2 = _mm256_set1_ps(a2), b3 = _mm256_set1_ps(a3);
    for (; i + 8 <= n; i += 8) {
        __m256 s01 = _mm256_add_ps(_mm256_mul_ps(b0, _mm256_loadu_ps(x0 + i)), _mm256_mul_ps(b1, _mm256_loadu_ps(x1 + i)));
        __m256 s23 = _mm256_add_ps(_mm256_mul_ps(b2, _mm256_loadu_ps(x2 + i)), _mm256_mul_ps(b3, _mm256_loadu_ps(x3 + i)));
        _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_add_ps(s01, s23)));
    }
#endif
    for (; i < n; i++) y[i] += (a0 * x0[i] + a1 * x1[i]) + (a2 * x2[i] + a3 * x3[i]);
}

/* The floats between consecutive rows of a kernel's block of converted or rotated rows: head_dim
   rounded up to whole 64-byte lines. Rows KVE_MAX_HEAD_DIM floats (4 KiB) apart would all fall
   into the same few L1 sets and evict each other within a block. */
static size_t kve__packed_stride(int32_t d) { return ((size_t)d + 15) & ~(size_t)15; }

/* whether a decode step reads layer l's K/V rows from memory: every layer at l's length passes
   what a last-level cache holds (a layer read again at once, as in a benchmark, stays cached and
   asking for it would only cost instructions) */
static int kve__rows_past_cache(const kve_cache *c, int32_t l, double kv_row_bytes)
{
    return (double)c->cfg.n_layers * (double)c->cfg.n_kv_heads * (double)*kve__len(c, l, 0) *
               kv_row_bytes > KVEVICT_CACHED_BYTES;
}
static int kve__rows_from_memory(const kve_cache *c, int32_t l)
{
    return kve__rows_past_cache(c, l, (double)kve__row_bytes(c->cfg.k_type, c->cfg.head_dim) +
                                          (double)kve__row_bytes(c->cfg.v_type, c->cfg.head_dim));
}

/* a block's nb dot products made logits in place: scaled by 1/sqrt(d), or -inf for the keys
   whose position is above `limit` (causal) */
static void kve__scale_or_mask(float *o, const int64_t *pos, int32_t nb, int64_t limit, float scale)
{
    int32_t t;
    for (t = 0; t < nb; t++) o[t] = pos[t] > limit ? -INFINITY : o[t] * scale;
}

/* Logits of the G query rows (rotated, G x d) of KV head h against its slots s0 .. s1-1, scaled
   by 1/sqrt(d); slots whose position is above `limit` get -inf (causal). Row g goes to
   logits + g*ld (indexed by slot). */
static void kve__logits_range(const kve_cache *c, int32_t l, int32_t h, const float *qr,
                              int64_t limit, const kve__posmap *pm, float *logits, size_t ld,
                              int32_t s0, int32_t n)
{
    int32_t d = c->cfg.head_dim, G = c->group, s, g, t;
    const int64_t *pos = kve__pos(c, l, h);
    float scale = 1.0f / sqrtf((float)d);
    int pre = c->cfg.key_storage == KVE_KEYS_PRE_ROPE && c->cfg.rope_layout != KVE_ROPE_NONE;
    int in_place = !pre && c->cfg.k_type == KVE_TYPE_F32; /* read where stored, no conversion */
    size_t krow = kve__row_bytes(c->cfg.k_type, d), vrow = kve__row_bytes(c->cfg.v_type, d);
    int far = c->cfg.k_type == KVE_TYPE_F32 && c->cfg.v_type == KVE_TYPE_F32 &&
              kve__rows_from_memory(c, l);
    /* the rows asked for ahead, in slots from the block's first (key_ahead < 0: none) */
    int32_t key_ahead = c->cfg.k_type != KVE_TYPE_F32 ? KVE__PREFETCH_ROWS : far ? KVE__PREFETCH_FAR_ROWS : -1;
    int32_t value_ahead = c->cfg.k_type != KVE_TYPE_F32 ? 0 : KVE__PREFETCH_FAR_ROWS;
    int64_t eff[KVE__KEY_BLOCK]; /* pre-RoPE: the block's effective positions */
#ifdef KVE__AVX512
    kve__key_angles angles;
    /* Keys within KVE__ATTN_BLOCK positions after the first rotated key of the range, at p0: the
       query rows rotated back by p0 once, q . R(p0 + j) k = (R(p0)^T q) . (R(j) k), so that such
       keys read the table's first rows (in cache all along) instead of a row each as long as the
       key, which the rows from memory then queue behind (llama-2 and -3 shapes, 4K-16K tokens:
       0.85-0.9 of the time). One query row per KV head reading cached rows was measured slower
       that way (1.2x at 1K tokens) and keeps a row of the table per key; "cached" is judged at
       float32 size, so that a typed cache rotates as a float cache of the same rounded rows. */
    float back[KVE__BACK_FLOATS];
    int64_t p0 = -1; /* -1: no key rotated yet */
    int from_table_start = (size_t)G * (size_t)d <= KVE__BACK_FLOATS &&
                           (G > 1 || kve__rows_past_cache(c, l, 2.0 * sizeof(float) * (double)d));
    /* pre-RoPE keys the kernel rotates (blocks whose positions are all in the table) */
    int rot = pre && c->cfg.rope_dims == d &&
              (c->cfg.rope_layout == KVE_ROPE_INTERLEAVED ? d % 16 == 0 : d % 32 == 0);
    kve__ahead ahead;
    angles.rot = c->cfg.rope_layout == KVE_ROPE_INTERLEAVED ? KVE__ROT_PAIRS : KVE__ROT_HALVES;
    ahead.kstride = c->k_stride[2];
    ahead.vstride = c->v_stride[2];
    ahead.kbytes = krow;
    ahead.vbytes = vrow;
#else
    int rot = 0; /* the portable kernels read keys rotated into a packed buffer */
#endif
    float kbuf[KVE__KEY_BLOCK * KVE_MAX_HEAD_DIM]; /* converted or rotated keys, packed */
    size_t kstride = kve__packed_stride(d);
    const float *kp[KVE__KEY_BLOCK];
    for (s = s0; s < n; s += KVE__KEY_BLOCK) {
        int32_t nb = n - s < KVE__KEY_BLOCK ? n - s : KVE__KEY_BLOCK, visible = 0;
#ifdef KVE__AVX512
        const kve__ahead *pa = NULL; /* this block's rows ahead, if any */
        int by_offset; /* the block's keys rotated by rows eff - p0, against `back` */
#endif
        int in_table = 1, fused = 0; /* fused: the kernel rotates the keys */
        for (t = 0; t < nb; t++) visible |= pos[s + t] <= limit;
        if (!visible) { /* a causal prefill skips keys after its query */
            for (g = 0; g < G; g++)
                for (t = 0; t < nb; t++) logits[(size_t)g * ld + (size_t)(s + t)] = -INFINITY;
            continue;
        }
        /* converted keys ahead, and the values summed next; float rows from memory: keys and
           values further ahead (cached float rows stream well without) */
        if (key_ahead >= 0 && s + key_ahead + KVE__KEY_BLOCK <= *kve__len(c, l, h) &&
            s + value_ahead + KVE__KEY_BLOCK <= *kve__len(c, l, h)) {
#ifdef KVE__AVX512
            ahead.k = kve__kptr(c, l, h, s + key_ahead); /* asked for by kve__dots, key by key */
            ahead.v = kve__vptr(c, l, h, s + value_ahead);
            pa = &ahead;
#else
            for (t = 0; t < KVE__KEY_BLOCK; t++) {
                KVE__PREFETCH(kve__kptr(c, l, h, s + key_ahead + t), krow);
                KVE__PREFETCH(kve__vptr(c, l, h, s + value_ahead + t), vrow);
            }
#endif
        }
        if (pre) { /* the keys' effective positions: with all in the table, rotated by the kernel */
            for (t = 0; t < nb; t++) {
                int32_t slot = s + t;
                eff[t] = slot < pm->sinks ? (int64_t)slot : pos[slot] - pm->base;
                in_table &= eff[t] >= 0 && eff[t] < c->cfg.capacity;
            }
        }
        fused = rot && in_table;
#ifdef KVE__AVX512
        by_offset = 0;
        if (fused && from_table_start) {
            int64_t base = p0 >= 0 ? p0 : eff[0]; /* the first block that qualifies sets p0 */
            by_offset = 1;
            for (t = 0; t < nb; t++) by_offset &= eff[t] >= base && eff[t] - base < KVE__ATTN_BLOCK;
            if (by_offset && p0 < 0) {
                p0 = base;
                kve__rotate_back_rows(angles.rot, G, qr, d, c->rope_table + (size_t)p0 * (size_t)d, back);
            }
        }
        if (fused)
            for (t = 0; t < nb; t++)
                angles.row[t] = c->rope_table + (size_t)(by_offset ? eff[t] - p0 : eff[t]) * (size_t)d;
#endif
        if (pre && !fused) /* the block's keys rotated at their effective positions, packed */
            for (t = 0; t < nb; t++)
                kve__rotate_eff(c, kve__kptr(c, l, h, s + t), eff[t], kbuf + (size_t)t * kstride);
#ifdef KVE__AVX512
        if (pre && !fused) {
            kve__dots(KVE_TYPE_F32, d, qr, G, KVE__CAST(const unsigned char *, kbuf),
                      kstride * sizeof(float), nb, pa, NULL, logits + (size_t)s, ld);
        } else {
            kve__dots(c->cfg.k_type, d, by_offset ? back : qr, G, kve__kptr(c, l, h, s), c->k_stride[2],
                      nb, pa, fused ? &angles : NULL, logits + (size_t)s, ld);
        }
        for (g = 0; g < G; g++)
            kve__scale_or_mask(logits + (size_t)g * ld + (size_t)s, pos + s, nb, limit, scale);
        continue;
#endif
#if defined(KVE__F16C) && !defined(KVE__AVX512)
        if (!pre && kve__converts_inside(c->cfg.k_type, G)) {
            const unsigned char *kr[KVE__KEY_BLOCK];
            float *o = logits + (size_t)s; /* the one query row */
            for (t = 0; t < nb; t++) kr[t] = kve__kptr(c, l, h, s + t);
            kve__dot16_stored(c->cfg.k_type, qr, kr, nb, d, o);
            kve__scale_or_mask(o, pos + s, nb, limit, scale);
            continue;
        }
#endif
        for (t = 0; t < nb; t++) {
            const unsigned char *row = kve__kptr(c, l, h, s + t);
            float *packed = kbuf + (size_t)t * kstride;
            if (in_place) {
                kp[t] = kve__f32_row(row);
                continue;
            }
            if (!pre) kve__decode(c->cfg.k_type, row, d, packed);
            kp[t] = packed;
        }
        /* the block's keys (in L1 now) against each query row of the group */
        for (g = 0; g < G; g++) {
            float *o = logits + (size_t)g * ld + (size_t)s;
            if (d == 128) /* the common head_dim as a constant: the loops unroll (same sums) */
                kve__dot16(qr + (size_t)g * 128, kp, nb, 128, o);
            else
                kve__dot16(qr + (size_t)g * (size_t)d, kp, nb, d, o);
            kve__scale_or_mask(o, pos + s, nb, limit, scale);
        }
    }
}

static void kve__logits(const kve_cache *c, int32_t l, int32_t h, const float *qr, int64_t limit,
                        const kve__posmap *pm, float *logits, size_t ld)
{
    kve__logits_range(c, l, h, qr, limit, pm, logits, ld, 0, *kve__len(c, l, h));
}

/* In-place softmax of one row of n logits (max subtracted). */
static void kve__softmax(float *x, int32_t n)
{
    float mx = -INFINITY, sum = 0.0f, inv;
    int32_t i;
    for (i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    if (mx == -INFINITY) { /* nothing visible: no weight anywhere */
        memset(x, 0, (size_t)n * sizeof(float));
        return;
    }
    for (i = 0; i < n; i++) x[i] -= mx;
    kve__exp_inplace(x, n);
    for (i = 0; i < n; i++) sum += x[i];
    inv = 1.0f / sum;
    for (i = 0; i < n; i++) x[i] *= inv;
}

/* out (G x d) += probs (G rows, stride ld, indexed by slot) . V of (l, h) over slots s .. n-1;
   each value row read once for all G rows */
static void kve__add_weighted_values(const kve_cache *c, int32_t l, int32_t h, const float *probs,
                                     size_t ld, int32_t s, int32_t n, float *out)
{
    int32_t d = c->cfg.head_dim, G = c->group, g, t;
    int in_place = c->cfg.v_type == KVE_TYPE_F32;
    size_t vrow = kve__row_bytes(c->cfg.v_type, d);
    float vbuf[4 * KVE_MAX_HEAD_DIM]; /* converted values, packed */
    size_t vstride = kve__packed_stride(d);
    const float *vr[4];
#ifdef KVE__AVX512
    if (s < n) /* in registers, every type */
        kve__wsum(c->cfg.v_type, d, out, G, probs + (size_t)s, ld, kve__vptr(c, l, h, s), c->v_stride[2], n - s);
    return;
#endif
    /* four value rows at a time, each read once for the G query heads (they stay in L1) */
#if defined(KVE__F16C) && !defined(KVE__AVX512)
    if (kve__converts_inside(c->cfg.v_type, G))
        for (; s + 4 <= n; s += 4) {
            const unsigned char *xr[4];
            for (t = 0; t < 4; t++) xr[t] = kve__vptr(c, l, h, s + t);
            if (s + KVE__PREFETCH_ROWS + 4 <= *kve__len(c, l, h))
                for (t = 0; t < 4; t++)
                    KVE__PREFETCH(kve__vptr(c, l, h, s + KVE__PREFETCH_ROWS + t), vrow);
            kve__axpy4_stored(c->cfg.v_type, out, probs + (size_t)s, xr, d); /* the one row */
        }
#endif
    for (; s + 4 <= n; s += 4) {
        const float *v0, *v1, *v2, *v3;
        if (!in_place && s + KVE__PREFETCH_ROWS + 4 <= *kve__len(c, l, h))
            for (t = 0; t < 4; t++) KVE__PREFETCH(kve__vptr(c, l, h, s + KVE__PREFETCH_ROWS + t), vrow);
        for (t = 0; t < 4; t++) {
            const unsigned char *row = kve__vptr(c, l, h, s + t);
            if (in_place) {
                vr[t] = kve__f32_row(row);
            } else {
                float *packed = vbuf + (size_t)t * vstride;
                kve__decode(c->cfg.v_type, row, d, packed);
                vr[t] = packed;
            }
        }
        v0 = vr[0]; v1 = vr[1]; v2 = vr[2]; v3 = vr[3];
        for (g = 0; g < G; g++)
            if (d == 128)
                kve__axpy4(out + (size_t)g * 128, probs + (size_t)g * ld + (size_t)s, v0, v1, v2, v3, 128);
            else
                kve__axpy4(out + (size_t)g * (size_t)d, probs + (size_t)g * ld + (size_t)s, v0, v1, v2,
                           v3, d);
    }
    for (; s < n; s++) {
        const float *vp = vbuf;
        if (in_place) vp = kve__f32_row(kve__vptr(c, l, h, s));
        else kve__decode(c->cfg.v_type, kve__vptr(c, l, h, s), d, vbuf);
        for (g = 0; g < G; g++)
            kve__axpy(out + (size_t)g * (size_t)d, probs[(size_t)g * ld + (size_t)s], vp, d);
    }
}

/* rotates the G query vectors of KV head h at the query's position into qr */
/* The angles a query at qpos is rotated by: its effective position in pre-RoPE mode. */
typedef struct kve__qangles {
    float cs[KVE_MAX_HEAD_DIM / 2], sn[KVE_MAX_HEAD_DIM / 2];
} kve__qangles;

static void kve__query_angles(const kve_cache *c, int64_t qpos, const kve__posmap *pm,
                              kve__qangles *a)
{
    int64_t p = c->cfg.key_storage == KVE_KEYS_PRE_ROPE ? qpos - pm->base : qpos;
    kve__angles(&c->cfg, c->freq, p, a->cs, a->sn);
}

/* copies the G query vectors of KV head h into qr, rotated (angles computed once per query) */
static void kve__rotate_queries(const kve_cache *c, const float *q, int32_t h,
                                const kve__qangles *a, float *qr)
{
    int32_t G = c->group, d = c->cfg.head_dim, g;
    memcpy(qr, q + (size_t)h * (size_t)G * (size_t)d, (size_t)G * (size_t)d * sizeof(float));
    if (c->cfg.rope_layout == KVE_ROPE_NONE) return;
    for (g = 0; g < G; g++) kve__rotate_cs(&c->cfg, qr + (size_t)g * (size_t)d, a->cs, a->sn);
}

/* expected attention: the sum and the sum of outer products of the queries past the sinks
   (kvpress leaves out the first n_sink, which carry outliers) */
static void kve__count_query(kve_cache *c, int32_t l, const float *q, int64_t qpos)
{
    size_t hd = (size_t)c->cfg.n_heads * (size_t)c->cfg.head_dim;
    if (c->qstat_count && qpos >= c->cfg.policy.sinks) {
        size_t d = (size_t)c->cfg.head_dim, i, j;
        double *sum = c->qstat_sum + (size_t)l * hd;
        for (i = 0; i < hd; i++) sum[i] += q[i];
        if (c->qstat_outer)
            for (i = 0; i < hd; i++) {
                double *row = c->qstat_outer + ((size_t)l * hd + i) * d;
                const float *qh = q + i / d * d;
                for (j = 0; j < d; j++) row[j] += (double)q[i] * qh[j];
            }
        c->qstat_count[l]++;
    }
}

static void kve__record_query(kve_cache *c, int32_t l, const float *q, int64_t qpos)
{
    size_t w = (size_t)c->obs_window, hd = (size_t)c->cfg.n_heads * (size_t)c->cfg.head_dim;
    size_t at;
    kve__count_query(c, l, q, qpos);
    if (w == 0) return;
    at = (size_t)(c->query_count[l] % (int64_t)w);
    memcpy(c->queries + ((size_t)l * w + at) * hd, q, hd * sizeof(float));
    c->query_pos[(size_t)l * w + at] = qpos;
    c->query_count[l]++;
}

/* attention of one query token (all heads) at qpos over layer l, keys with position <= qpos */
/* reduces G values x[0], x[stride], ... by mean, max or sum */
static float kve__reduce(const float *x, int32_t G, size_t stride, kve_reduce mode)
{
    float a = x[0];
    int32_t g;
    for (g = 1; g < G; g++) {
        float y = x[(size_t)g * stride];
        a = mode == KVE_REDUCE_MAX ? (y > a ? y : a) : a + y;
    }
    return mode == KVE_REDUCE_MEAN ? a / (float)G : a;
}

/* Attention of one query token's G heads that share KV head h, keys with position <= qpos.
   One pass over K and V: slots in blocks of KVE__ATTN_BLOCK (or half), each block's keys then its values
   (read while still in cache), with an online softmax (a running max per query row; the sums
   so far are rescaled when it grows). The logits stay in scratch, so the weights come out of
   them exactly when asked for, without reading K again.
   Flash-decoding: a head's slots are cut into chunks of KVE__SPLIT_TOKENS, each chunk's output
   sums, max and sum computed alone (kve__group_chunk: chunks run in parallel when there are
   fewer KV heads than threads) and then combined in chunk order (kve__group_finish). The cut
   points depend on the length only, so the result is the same whatever the thread count; a head
   of one chunk gets exactly what one pass gives. */

/* the largest of m and x[0 .. n-1], in 16 lanes so that it vectorises: the same value as a scan
   (a maximum does not depend on the order; a NaN is never taken) */
static float kve__max_over(const float *x, int32_t n, float m)
{
    float lane[16];
    int32_t i, l;
#ifdef KVE__AVX512 /* the lanes in a register (the compiler vectorises the loops below at -O3 only) */
    __m512 v = _mm512_set1_ps(m);
    for (i = 0; i < n; i += 16) /* max(x, lane) is lane when x is a NaN */
        v = _mm512_mask_max_ps(v, kve__lanes_before(i, n), _mm512_maskz_loadu_ps(kve__lanes_before(i, n), x + i), v);
    _mm512_storeu_ps(lane, v);
#else
    for (l = 0; l < 16; l++) lane[l] = m;
    i = 0;
#ifdef KVE__AVX256 /* the 16 lanes in two registers */
    {
        __m256 lo = _mm256_set1_ps(m), hi = lo;
        for (; i + 16 <= n; i += 16) { /* max(x, lane) is lane when x is a NaN */
            lo = _mm256_max_ps(_mm256_loadu_ps(x + i), lo);
            hi = _mm256_max_ps(_mm256_loadu_ps(x + i + 8), hi);
        }
        _mm256_storeu_ps(lane, lo);
        _mm256_storeu_ps(lane + 8, hi);
    }
#endif
    for (; i + 16 <= n; i += 16)
        for (l = 0; l < 16; l++) lane[l] = x[i + l] > lane[l] ? x[i + l] : lane[l];
    for (l = 0; i + l < n; l++) lane[l] = x[i + l] > lane[l] ? x[i + l] : lane[l];
#endif
    for (l = 0; l < 16; l++) m = lane[l] > m ? lane[l] : m;
    return m;
}

/* x[0] + ... + x[n-1] in 16 lanes (lane l adds l, l + 16, ...) folded in halves: a fixed order
   that vectorises, where one running sum waits on every add */
static float kve__sum_lanes(const float *x, int32_t n)
{
    float lane[16];
    int32_t i, l, w;
#ifdef KVE__AVX512 /* the lanes in a register: the same adds */
    __m512 v = _mm512_setzero_ps();
    for (i = 0; i < n; i += 16)
        v = _mm512_mask_add_ps(v, kve__lanes_before(i, n), v, _mm512_maskz_loadu_ps(kve__lanes_before(i, n), x + i));
    _mm512_storeu_ps(lane, v);
#else
    for (l = 0; l < 16; l++) lane[l] = 0.0f;
    i = 0;
#ifdef KVE__AVX256 /* the 16 lanes in two registers */
    {
        __m256 lo = _mm256_setzero_ps(), hi = lo;
        for (; i + 16 <= n; i += 16) {
            lo = _mm256_add_ps(lo, _mm256_loadu_ps(x + i));
            hi = _mm256_add_ps(hi, _mm256_loadu_ps(x + i + 8));
        }
        _mm256_storeu_ps(lane, lo);
        _mm256_storeu_ps(lane + 8, hi);
    }
#endif
    for (; i + 16 <= n; i += 16)
        for (l = 0; l < 16; l++) lane[l] += x[i + l];
    for (l = 0; i + l < n; l++) lane[l] += x[i + l];
#endif
    for (w = 8; w >= 1; w /= 2)
        for (l = 0; l < w; l++) lane[l] += lane[l + w];
    return lane[0];
}

/* the partial state of chunk k of KV head h: G rows of d output sums, then G maxima, G sums */
static float *kve__split_state(const kve_cache *c, int32_t h, int32_t k)
{
    size_t G = (size_t)c->group, d = (size_t)c->cfg.head_dim;
    size_t per_head = kve__split_chunks((size_t)c->cfg.capacity);
    return c->scratch_split + ((size_t)h * per_head + (size_t)k) * G * (d + 2);
}

/* chunk k of KV head h (slots k*S .. min(n, (k+1)*S) - 1) against the rotated queries in
   scratch_q: its logits and block probabilities go to the head's scratch rows, its output sums,
   max and sum to its partial state */
static void kve__group_chunk(kve_cache *c, int32_t l, int32_t h, int64_t qpos,
                             const kve__posmap *pm, int32_t k)
{
    int32_t n = *kve__len(c, l, h), G = c->group, d = c->cfg.head_dim, g, b0, b1;
    int32_t from = k * KVE__SPLIT_TOKENS;
    int32_t to = n - from < KVE__SPLIT_TOKENS ? n : from + KVE__SPLIT_TOKENS;
    int32_t block = G == 1 ? KVE__ATTN_BLOCK / 2 : KVE__ATTN_BLOCK;
    size_t cap = (size_t)c->cfg.capacity;
    const float *qr = c->scratch_q + (size_t)h * (size_t)G * (size_t)d;
    float *lg = c->scratch_f1 + (size_t)h * (size_t)G * cap;
    float *pr = c->scratch_f2 + (size_t)h * (size_t)G * cap; /* block probabilities, by slot */
    float *o = kve__split_state(c, h, k), *mx = o + (size_t)G * (size_t)d, *sum = mx + G;
    memset(o, 0, (size_t)G * (size_t)d * sizeof(float));
    for (g = 0; g < G; g++) {
        mx[g] = -INFINITY;
        sum[g] = 0.0f;
    }
    for (b0 = from; b0 < to; b0 = b1) {
        b1 = to - b0 < block ? to : b0 + block;
        kve__logits_range(c, l, h, qr, qpos, pm, lg, cap, b0, b1);
        for (g = 0; g < G; g++) {
            const float *row = lg + (size_t)g * cap;
            float *p = pr + (size_t)g * cap, bm = kve__max_over(row + b0, b1 - b0, mx[g]), part;
            if (bm == -INFINITY) { /* nothing visible yet: no weight */
                memset(p + b0, 0, (size_t)(b1 - b0) * sizeof(float));
                continue;
            }
            if (bm > mx[g]) { /* a new running max: rescale what was summed so far */
                float r = mx[g] - bm;
                kve__exp_inplace(&r, 1);
                kve__scale_floats(o + (size_t)g * (size_t)d, d, r);
                sum[g] *= r;
                mx[g] = bm;
            }
            kve__exp_shifted(row + b0, bm, p + b0, b1 - b0);
            part = kve__sum_lanes(p + b0, b1 - b0);
            sum[g] += part;
        }
        kve__add_weighted_values(c, l, h, pr, cap, b0, b1, o);
    }
}

/* combines the chunks of KV head h in order into the G output rows; returns the G rows of
   softmax weights (stride capacity, by slot), after adding them to the accumulated scores when
   the policy keeps them */
static const float *kve__group_finish(kve_cache *c, int32_t l, int32_t h, float *out,
                                      int want_weights)
{
    int32_t n = *kve__len(c, l, h), G = c->group, d = c->cfg.head_dim, g, s, k, i;
    int32_t chunks = (int32_t)kve__split_chunks((size_t)n);
    size_t cap = (size_t)c->cfg.capacity;
    float *lg = c->scratch_f1 + (size_t)h * (size_t)G * cap;
    for (g = 0; g < G; g++) {
        float *o = out + (size_t)(h * G + g) * (size_t)d, top = -INFINITY, total = 0.0f, inv;
        memset(o, 0, (size_t)d * sizeof(float));
        for (k = 0; k < chunks; k++) {
            const float *st = kve__split_state(c, h, k);
            float m = st[(size_t)G * (size_t)d + (size_t)g];
            top = m > top ? m : top;
        }
        for (k = 0; k < chunks; k++) {
            const float *st = kve__split_state(c, h, k), *po = st + (size_t)g * (size_t)d;
            float m = st[(size_t)G * (size_t)d + (size_t)g], r = 1.0f; /* exactly one at the top */
            if (m == -INFINITY) continue; /* the chunk saw no key */
            if (m != top) {
                r = m - top;
                kve__exp_inplace(&r, 1);
            }
            for (i = 0; i < d; i++) o[i] += r * po[i];
            total += r * st[(size_t)G * (size_t)(d + 1) + (size_t)g];
        }
        inv = total > 0.0f ? 1.0f / total : 0.0f;
        for (i = 0; i < d; i++) o[i] *= inv;
        if (!want_weights && !c->scores && !c->window_sum) continue;
        /* the weights: this row's logits against the final max and sum */
        {
            float *row = lg + (size_t)g * cap;
            if (total > 0.0f) {
                kve__exp_shifted(row, top, row, n);
                kve__scale_floats(row, n, inv);
            } else { /* the query saw no key: no weight anywhere (not -inf * 0) */
                memset(row, 0, (size_t)n * sizeof(float));
            }
        }
    }
    if (c->scores)
        for (g = 0; g < G; g++) {
            float *acc = kve__score_row(c, l, h * G + g);
            const float *w = lg + (size_t)g * cap;
            for (s = 0; s < n; s++) acc[s] += w[s];
        }
    if (c->window_sum && c->window_sum_queries[l] >= 0) /* the next decode eviction's window
                                                              scores, summed as they come */
        for (g = 0; g < G; g++) {
            float *acc = c->window_sum + ((size_t)l * (size_t)c->cfg.n_heads + (size_t)(h * G + g)) * cap;
            const float *w = lg + (size_t)g * cap;
            for (s = 0; s < n; s++) acc[s] += w[s];
        }
    return lg;
}

/* the whole of one head, its chunks in turn (prefill: the heads are what runs in parallel) */
static const float *kve__group_attention(kve_cache *c, int32_t l, int32_t h, const float *q,
                                         int64_t qpos, const kve__qangles *qa,
                                         const kve__posmap *pm, float *out, int want_weights)
{
    int32_t k, chunks = (int32_t)kve__split_chunks((size_t)*kve__len(c, l, h));
    kve__rotate_queries(c, q, h, qa, c->scratch_q + (size_t)h * (size_t)c->group * (size_t)c->cfg.head_dim);
    for (k = 0; k < chunks; k++) kve__group_chunk(c, l, h, qpos, pm, k);
    return kve__group_finish(c, l, h, out, want_weights);
}

static int kve__work_is_large(const kve_cache *c, int32_t l, int64_t nq)
{
    double n = (double)*kve__len(c, l, 0); /* in double: the product may pass 2^63 */
    /* one KV head splits into chunks only when it is long */
    return (c->cfg.n_kv_heads > 1 || n >= 2 * KVE__SPLIT_TOKENS) &&
           n * (double)nq * (double)c->cfg.n_heads * (double)c->cfg.head_dim >= KVE__OMP_MIN_WORK;
}

/* threads for a parallel loop over KV heads: 1 when the work is small or cfg.n_threads is 1, at
   most n_threads otherwise (the heads are independent: the result does not depend on it) */
static int kve__threads(const kve_cache *c, int large)
{
#if defined(_OPENMP) && !defined(KVEVICT_NO_OPENMP)
    int n;
    if (!large || c->cfg.n_threads == 1) return 1; /* before asking the runtime anything */
    n = omp_get_max_threads();
    if (c->cfg.n_threads > 0 && c->cfg.n_threads < n) n = c->cfg.n_threads;
    return n;
#else
    (void)c; (void)large;
    return 1;
#endif
}

/* decode attention of one query token (all heads) at qpos over layer l: the chunks of every head
   in parallel, then each head's combination */
static void kve__attend_one(kve_cache *c, int32_t l, const float *q, int64_t qpos, float *out,
                            const kve_attend_options *opt, const kve__posmap *pm, int parallel)
{
    int32_t Hk = c->cfg.n_kv_heads, G = c->group, d = c->cfg.head_dim, h, most = 0;
    size_t cap = (size_t)c->cfg.capacity;
    int64_t items, it;
    kve__qangles qa;
    int nt = kve__threads(c, parallel);
    (void)nt;
    kve__query_angles(c, qpos, pm, &qa);
    for (h = 0; h < Hk; h++) {
        int32_t chunks = (int32_t)kve__split_chunks((size_t)*kve__len(c, l, h));
        most = chunks > most ? chunks : most;
        kve__rotate_queries(c, q, h, &qa, c->scratch_q + (size_t)h * (size_t)G * (size_t)d);
    }
    items = (int64_t)Hk * most;
    KVE__OMP("omp parallel for schedule(static) num_threads(nt) if(nt > 1)")
    for (it = 0; it < items; it++) {
        int32_t hh = (int32_t)(it / most), k = (int32_t)(it % most);
        if ((int64_t)k * KVE__SPLIT_TOKENS < (int64_t)*kve__len(c, l, hh))
            kve__group_chunk(c, l, hh, qpos, pm, k);
    }
    KVE__OMP("omp parallel for schedule(static) num_threads(nt) if(nt > 1)")
    for (h = 0; h < Hk; h++) {
        int32_t n = *kve__len(c, l, h), g, s;
        const float *w = kve__group_finish(c, l, h, out, opt && opt->weights);
        if (!opt || !opt->weights) continue;
        if (opt->weights_reduce == KVE_REDUCE_DEFAULT)
            for (g = 0; g < G; g++)
                memcpy(opt->weights + (size_t)(h * G + g) * cap, w + (size_t)g * cap,
                       (size_t)n * sizeof(float));
        else
            for (s = 0; s < n; s++)
                opt->weights[(size_t)h * cap + (size_t)s] = kve__reduce(w + s, G, cap, opt->weights_reduce);
    }
}

static kve_result kve__check_layer(const kve_cache *c, int32_t layer)
{
    kve_result r;
    if ((r = kve__status(c)) != KVE_OK) return r;
    if (layer < 0 || layer >= c->cfg.n_layers) return KVE_ERROR_INDEX_OUT_OF_RANGE;
    return KVE_OK;
}


KVE_API kve_result kve_attend_ex(kve_cache *cache, int32_t layer, const float *q, float *out,
                                 const kve_attend_options *opt)
{
    kve_result r;
    int32_t h;
    size_t hd;
    kve__posmap pm;
    if ((r = kve__check_layer(cache, layer)) != KVE_OK) return r;
    if (!q || !out) return KVE_ERROR_NULL_ARGUMENT;
    if (opt && ((int)opt->weights_reduce < 0 || opt->weights_reduce > KVE_REDUCE_SUM))
        return KVE_ERROR_INVALID_ENUM;
    for (h = 0; h < cache->cfg.n_kv_heads; h++)
        if (*kve__len(cache, layer, h) == 0) return KVE_ERROR_EMPTY;
    hd = (size_t)cache->cfg.n_heads * (size_t)cache->cfg.head_dim;
    if (!kve__finite(q, hd)) return KVE_ERROR_NOT_FINITE;
    kve__changed(cache);
    kve__record_query(cache, layer, q, cache->newest[layer]);
    pm = kve__make_posmap(cache, layer);
    kve__attend_one(cache, layer, q, cache->newest[layer], out, opt, &pm,
                    kve__work_is_large(cache, layer, 1));
    if (cache->window_sum && cache->window_sum_queries[layer] >= 0) cache->window_sum_queries[layer]++;
    cache->limit[layer] = cache->budget[layer];
    return KVE_OK;
}

KVE_API kve_result kve_attend(kve_cache *cache, int32_t layer, const float *q, float *out)
{
    return kve_attend_ex(cache, layer, q, out, NULL);
}

/* the checks kve_prefill and kve_observe share: a layer with tokens, nq queries at stored
   positions, finite */
static kve_result kve__check_queries(const kve_cache *c, int32_t layer, int32_t nq, const float *q,
                                     const int64_t *q_pos)
{
    kve_result r;
    int32_t h, i;
    int64_t newest;
    if ((r = kve__check_layer(c, layer)) != KVE_OK) return r;
    if (!q) return KVE_ERROR_NULL_ARGUMENT;
    for (h = 0; h < c->cfg.n_kv_heads; h++)
        if (*kve__len(c, layer, h) == 0) return KVE_ERROR_EMPTY;
    if (nq <= 0 || (int64_t)nq > c->stored[layer] || nq > c->cfg.capacity)
        return KVE_ERROR_INVALID_COUNT;
    newest = c->newest[layer];
    if (q_pos) {
        for (i = 0; i < nq; i++)
            if (q_pos[i] < 0 || q_pos[i] > newest || (i > 0 && q_pos[i] <= q_pos[i - 1]))
                return KVE_ERROR_POSITION;
    } else if (newest - nq + 1 < 0) {
        return KVE_ERROR_POSITION;
    }
    if (!kve__finite(q, (size_t)c->cfg.n_heads * (size_t)c->cfg.head_dim * (size_t)nq))
        return KVE_ERROR_NOT_FINITE;
    return KVE_OK;
}

/* records the last obs_window of nq queries and marks the layer attended (kept within budget) */
static void kve__observe(kve_cache *c, int32_t layer, int32_t nq, const float *q,
                         const int64_t *q_pos)
{
    size_t hd = (size_t)c->cfg.n_heads * (size_t)c->cfg.head_dim;
    int64_t newest = c->newest[layer];
    int32_t i;
    kve__changed(c);
    if (c->window_sum) c->window_sum_queries[layer] = -1; /* recorded without weights */
    for (i = 0; i < nq; i++) /* the last `window` recorded, every one counted */
        if (i >= nq - c->obs_window)
            kve__record_query(c, layer, q + (size_t)i * hd, q_pos ? q_pos[i] : newest - nq + 1 + i);
        else
            kve__count_query(c, layer, q + (size_t)i * hd, q_pos ? q_pos[i] : newest - nq + 1 + i);
    c->limit[layer] = c->budget[layer];
}

KVE_API kve_result kve_observe(kve_cache *c, int32_t layer, int32_t nq, const float *q,
                               const int64_t *q_pos)
{
    kve_result r;
    if ((r = kve__check_queries(c, layer, nq, q, q_pos)) != KVE_OK) return r;
    kve__observe(c, layer, nq, q, q_pos);
    return KVE_OK;
}

KVE_API kve_result kve_accumulate(kve_cache *c, int32_t layer, const float *weights)
{
    kve_result r;
    int32_t H, G, hq, s;
    size_t cap;
    if ((r = kve__check_layer(c, layer)) != KVE_OK) return r;
    if (!weights) return KVE_ERROR_NULL_ARGUMENT;
    if (!c->scores) return KVE_ERROR_WRONG_POLICY;
    H = c->cfg.n_heads; G = c->group; cap = (size_t)c->cfg.capacity;
    for (hq = 0; hq < H; hq++)
        if (!kve__finite(weights + (size_t)hq * cap, (size_t)*kve__len(c, layer, hq / G)))
            return KVE_ERROR_NOT_FINITE;
    kve__changed(c);
    for (hq = 0; hq < H; hq++) {
        int32_t n = *kve__len(c, layer, hq / G);
        float *acc = kve__score_row(c, layer, hq);
        const float *w = weights + (size_t)hq * cap;
        for (s = 0; s < n; s++) acc[s] += w[s];
    }
    c->limit[layer] = c->budget[layer];
    return KVE_OK;
}

KVE_API kve_result kve_attention_positions(const kve_cache *c, int32_t layer, int32_t h,
                                           int64_t *query_pos, int64_t *key_pos)
{
    kve_result r;
    int32_t n, s;
    const int64_t *pos;
    kve__posmap pm;
    int pre;
    if ((r = kve__check_layer(c, layer)) != KVE_OK) return r;
    if (!query_pos || !key_pos) return KVE_ERROR_NULL_ARGUMENT;
    if (h < 0 || h >= c->cfg.n_kv_heads) return KVE_ERROR_INDEX_OUT_OF_RANGE;
    n = *kve__len(c, layer, h);
    pos = kve__pos(c, layer, h);
    pm = kve__make_posmap(c, layer);
    pre = c->cfg.key_storage == KVE_KEYS_PRE_ROPE;
    if (c->cfg.rope_layout == KVE_ROPE_NONE) {
        *query_pos = -1;
        for (s = 0; s < n; s++) key_pos[s] = -1;
        return KVE_OK;
    }
    /* as kve__query_angles and kve__logits_range rotate */
    *query_pos = pre ? c->newest[layer] - pm.base : c->newest[layer];
    for (s = 0; s < n; s++)
        key_pos[s] = !pre ? -1 : s < pm.sinks ? (int64_t)s : pos[s] - pm.base;
    return KVE_OK;
}

KVE_API kve_result kve_prefill(kve_cache *cache, int32_t layer, int32_t nq, const float *q,
                               const int64_t *q_pos, float *out)
{
    kve_result r;
    int32_t h, Hk, d;
    size_t hd;
    int64_t newest;
    kve__posmap pm;
    if ((r = kve__check_queries(cache, layer, nq, q, q_pos)) != KVE_OK) return r;
    if (!out) return KVE_ERROR_NULL_ARGUMENT;
    Hk = cache->cfg.n_kv_heads; d = cache->cfg.head_dim;
    hd = (size_t)cache->cfg.n_heads * (size_t)d;
    newest = cache->newest[layer];
    pm = kve__make_posmap(cache, layer);
    if (cache->window_sum) cache->window_sum_queries[layer] = -1; /* queries without summed weights */
    {
        int nt = kve__threads(cache, kve__work_is_large(cache, layer, nq));
        (void)nt;
        KVE__OMP("omp parallel for schedule(static) num_threads(nt) if(nt > 1)")
        for (h = 0; h < Hk; h++) {
            int32_t j;
            kve__qangles qa;
            for (j = 0; j < nq; j++) {
                int64_t qp = q_pos ? q_pos[j] : newest - nq + 1 + j;
                kve__query_angles(cache, qp, &pm, &qa);
                kve__group_attention(cache, layer, h, q + (size_t)j * hd, qp, &qa, &pm,
                                     out + (size_t)j * hd, 0);
            }
        }
    }
    kve__observe(cache, layer, nq, q, q_pos);
    return KVE_OK;
}

/* ---- storing tokens --------------------------------------------------------------------------- */
/* StreamingLLM post-RoPE pos-shift: rewrite the sink keys from their pre-RoPE copies at the
   positions right before the oldest recent token. Only S keys per head: the cost does not grow
   with the window. The heads are split over the threads as attention splits them (exactly while
   a head is one chunk of KVE__SPLIT_TOKENS), so that each thread's attention reads the sink rows
   it wrote (from another core's cache they cost more than rotating them). */
static void kve__update_sinks(kve_cache *c, int32_t l)
{
    int32_t S = c->sinks, d = c->cfg.head_dim, Hk = c->cfg.n_kv_heads, h, s, n;
    size_t half = (size_t)c->cfg.rope_dims / 2;
    int64_t anchor;
    int nt;
    if (!kve__pos_shift(c) || c->cfg.key_storage != KVE_KEYS_POST_ROPE || S == 0) return;
    anchor = kve__sink_anchor(c, l);
    if (anchor == c->sink_anchor_done[l]) return;
    n = S < *kve__len(c, l, 0) ? S : *kve__len(c, l, 0);
    for (s = 0; s < n; s++) {
        /* every head and layer moves its sinks to the same positions: angles once per step */
        float *cs = c->sink_cos + (size_t)s * half, *sn = c->sink_sin + (size_t)s * half;
        int64_t target = anchor >= 0 ? anchor - S + s : kve__pos(c, l, 0)[s];
        int32_t j;
        for (j = s + 1; j < S && c->sink_angle_pos[s] != target; j++)
            if (c->sink_angle_pos[j] == target) { /* the anchor moved on: sink j sat there */
                memcpy(cs, c->sink_cos + (size_t)j * half, half * sizeof(float));
                memcpy(sn, c->sink_sin + (size_t)j * half, half * sizeof(float));
                c->sink_angle_pos[s] = target;
            }
        if (c->sink_angle_pos[s] != target) {
            kve__angles(&c->cfg, c->freq, target, cs, sn);
            c->sink_angle_pos[s] = target;
        }
    }
    nt = kve__threads(c, kve__work_is_large(c, l, 1));
    (void)nt;
    KVE__OMP("omp parallel for schedule(static) num_threads(nt) if(nt > 1)")
    for (h = 0; h < Hk; h++) {
        int32_t t;
        for (t = 0; t < n; t++) {
            const float *cs = c->sink_cos + (size_t)t * half, *sn = c->sink_sin + (size_t)t * half;
            float kr[KVE_MAX_HEAD_DIM];
            unsigned char *row = kve__kptr(c, l, h, t);
            float *x = c->cfg.k_type == KVE_TYPE_F32 ? kve__f32_row_w(row) : kr; /* f32: in place */
            memcpy(x, kve__sink_key(c, l, h, t), (size_t)d * sizeof(float));
            kve__rotate_cs(&c->cfg, x, cs, sn);
            if (x == kr) kve__encode(c->cfg.k_type, kr, d, row);
        }
    }
    c->sink_anchor_done[l] = anchor;
}

/* checks one token's k and v (n_kv_heads*head_dim each) for kve_store */
static kve_result kve__check_token(const kve_cache *c, const float *k, const float *v)
{
    int32_t Hk = c->cfg.n_kv_heads, d = c->cfg.head_dim, h;
    if (!kve__finite(k, (size_t)Hk * (size_t)d) || !kve__finite(v, (size_t)Hk * (size_t)d))
        return KVE_ERROR_NOT_FINITE;
    if (c->cfg.k_type == KVE_TYPE_F16 || c->cfg.k_type == KVE_TYPE_Q8_0 ||
        c->cfg.v_type == KVE_TYPE_F16 || c->cfg.v_type == KVE_TYPE_Q8_0) {
        /* what will be stored must fit the type, rotated keys included (and pos-shifted sinks:
           a pair's norm bounds it at every angle) */
        int32_t rotated = c->cfg.key_storage == KVE_KEYS_POST_ROPE ? c->cfg.rope_dims : 0;
        for (h = 0; h < Hk; h++) {
            const float *kh = k + (size_t)h * (size_t)d, *vh = v + (size_t)h * (size_t)d;
            if (!kve__fits(c->cfg.k_type, kve__max_magnitude(&c->cfg, kh, d, rotated)) ||
                !kve__fits(c->cfg.v_type, kve__max_magnitude(&c->cfg, vh, d, 0)))
                return KVE_ERROR_OUT_OF_TYPE_RANGE;
        }
    }
    return KVE_OK;
}

/* stores a checked token: make room if the policy's limit is reached, then write every head */
static kve_result kve__store_one(kve_cache *c, int32_t layer, int64_t pos, const float *k,
                                 const float *v, int32_t *slots)
{
    kve_result r;
    int32_t Hk = c->cfg.n_kv_heads, d = c->cfg.head_dim, G = c->group, h, g, need_room = 0;
    int32_t write_slot[KVE_MAX_HEADS];
    float cs[KVE_MAX_HEAD_DIM / 2], sn[KVE_MAX_HEAD_DIM / 2];
    for (h = 0; h < Hk; h++) {
        write_slot[h] = -1;
        if (*kve__len(c, layer, h) >= c->limit[layer]) need_room = 1;
    }
    if (need_room) {
        r = c->vtable->make_room(c, layer, write_slot, c->vtable_user);
        if (r != KVE_OK) return r;
        for (h = 0; h < Hk; h++) {
            int32_t n = *kve__len(c, layer, h);
            if (write_slot[h] >= n || (write_slot[h] < 0 && n >= c->cfg.capacity))
                return KVE_ERROR_POLICY_FAILED;
        }
    }
    kve__changed(c); /* after make_room: a failed store leaves the cache as it was */
    if (c->cfg.key_storage == KVE_KEYS_POST_ROPE) kve__angles(&c->cfg, c->freq, pos, cs, sn);
    for (h = 0; h < Hk; h++) {
        int32_t *n = kve__len(c, layer, h);
        int32_t s = write_slot[h] >= 0 ? write_slot[h] : (*n)++;
        const float *kin = k + (size_t)h * (size_t)d;
        float kr[KVE_MAX_HEAD_DIM];
        kve__encode(c->cfg.v_type, v + (size_t)h * (size_t)d, d, kve__vptr(c, layer, h, s));
        kve__pos(c, layer, h)[s] = pos;
        if (c->scores)
            for (g = 0; g < G; g++) kve__score_row(c, layer, h * G + g)[s] = 0.0f;
        if (s < c->sinks) /* a sink's pre-RoPE copy stays f32 (slots below sinks hold only sinks) */
            memcpy(kve__sink_key(c, layer, h, s), kin, (size_t)d * sizeof(float));
        if (c->cfg.key_storage == KVE_KEYS_POST_ROPE) {
            memcpy(kr, kin, (size_t)d * sizeof(float));
            kve__rotate_cs(&c->cfg, kr, cs, sn);
            kin = kr;
        }
        kve__encode(c->cfg.k_type, kin, d, kve__kptr(c, layer, h, s));
        if (slots) slots[h] = s;
    }
    if (c->recent_pos) {
        size_t w = (size_t)c->cfg.policy.window;
        c->recent_pos[(size_t)layer * w + (size_t)(c->stored[layer] % (int64_t)w)] = pos;
    }
    c->newest[layer] = pos;
    c->stored[layer]++;
    kve__update_sinks(c, layer);
    return KVE_OK;
}

KVE_API kve_result kve_store(kve_cache *c, int32_t layer, int64_t pos, const float *k,
                             const float *v, int32_t *slots)
{
    kve_result r;
    if ((r = kve__check_layer(c, layer)) != KVE_OK) return r;
    if (!k || !v) return KVE_ERROR_NULL_ARGUMENT;
    if (pos < 0 || pos > KVE_MAX_POSITION || pos <= c->newest[layer]) return KVE_ERROR_POSITION;
    if ((r = kve__check_token(c, k, v)) != KVE_OK) return r;
    return kve__store_one(c, layer, pos, k, v, slots);
}

KVE_API kve_result kve_store_n(kve_cache *c, int32_t layer, int32_t n, const int64_t *pos,
                               const float *k, const float *v)
{
    kve_result r;
    int32_t i;
    size_t kvd;
    int64_t prev;
    if ((r = kve__check_layer(c, layer)) != KVE_OK) return r;
    if (!k || !v) return KVE_ERROR_NULL_ARGUMENT;
    if (n <= 0) return KVE_ERROR_INVALID_COUNT;
    kvd = (size_t)c->cfg.n_kv_heads * (size_t)c->cfg.head_dim;
    prev = c->newest[layer];
    for (i = 0; i < n; i++) { /* everything checked before the first token is stored */
        int64_t p = pos ? pos[i] : prev + 1;
        if (p < 0 || p > KVE_MAX_POSITION || p <= prev) return KVE_ERROR_POSITION;
        if ((r = kve__check_token(c, k + (size_t)i * kvd, v + (size_t)i * kvd)) != KVE_OK)
            return r;
        prev = p;
    }
    prev = c->newest[layer];
    for (i = 0; i < n; i++) {
        int64_t p = pos ? pos[i] : prev + 1;
        if ((r = kve__store_one(c, layer, p, k + (size_t)i * kvd, v + (size_t)i * kvd, NULL)) !=
            KVE_OK)
            return r; /* an eviction failed: the tokens before it are stored */
        prev = p;
    }
    return KVE_OK;
}

/* ---- selection building blocks ---------------------------------------------------------------- */
/* a ranks before b: higher score, then lower index; NaN lowest */
static int kve__before(const float *score, int32_t a, int32_t b)
{
    float x = score[a], y = score[b];
    int xn = x != x, yn = y != y;
    if (xn != yn) return yn;
    if (!xn && x != y) return x > y;
    return a < b;
}

static void kve__sift(const float *score, int32_t *h, int32_t i, int32_t n)
{
    /* max-heap by "ranks after": the root is the worst-ranked */
    for (;;) {
        int32_t l = 2 * i + 1, r = l + 1, m = i, t;
        if (l < n && kve__before(score, h[m], h[l])) m = l;
        if (r < n && kve__before(score, h[m], h[r])) m = r;
        if (m == i) return;
        t = h[i]; h[i] = h[m]; h[m] = t;
        i = m;
    }
}

KVE_API kve_result kve_select_top(const float *score, int32_t n, int32_t k, unsigned char *keep,
                                  int32_t *order)
{
    int32_t i;
    if (!score || !keep || !order) return KVE_ERROR_NULL_ARGUMENT;
    if (n < 0 || k < 0 || k > n) return KVE_ERROR_INVALID_COUNT;
    memset(keep, 0, (size_t)n);
    if (k == 0) return KVE_OK;
    /* a heap of the k best seen so far, its root the worst of them: O(n log k), deterministic */
    for (i = 0; i < k; i++) order[i] = i;
    for (i = k / 2 - 1; i >= 0; i--) kve__sift(score, order, i, k);
    for (i = k; i < n; i++)
        if (kve__before(score, i, order[0])) {
            order[0] = i;
            kve__sift(score, order, 0, k);
        }
    for (i = 0; i < k; i++) keep[order[i]] = 1;
    return KVE_OK;
}

KVE_API kve_result kve_pool1d(const float *in, int32_t n, int32_t kernel, kve_pooling mode,
                              float *out)
{
    int32_t i, j, half;
    if (!in || !out) return KVE_ERROR_NULL_ARGUMENT;
    if (n < 0) return KVE_ERROR_INVALID_COUNT;
    if (kernel < 1 || kernel % 2 == 0) return KVE_ERROR_EVEN_KERNEL;
    if ((int)mode < 0 || mode > KVE_POOL_NONE) return KVE_ERROR_INVALID_ENUM;
    if (mode == KVE_POOL_DEFAULT) mode = KVE_POOL_MAX;
    half = kernel / 2;
    if (mode == KVE_POOL_NONE || kernel == 1) {
        if (out != in) memmove(out, in, (size_t)n * sizeof(float));
        return KVE_OK;
    }
    if (in == out) return KVE_ERROR_INVALID_PARAMETER;
    for (i = 0; i < n; i++) {
        int32_t lo = i - half < 0 ? 0 : i - half, hi = i + half >= n ? n - 1 : i + half;
        float a = mode == KVE_POOL_MAX ? in[lo] : 0.0f;
        for (j = lo; j <= hi; j++) {
            if (mode == KVE_POOL_MAX) a = in[j] > a ? in[j] : a;
            else a += in[j];
        }
        /* torch avg_pool1d counts the zero padding: divide by the kernel, not the neighbours */
        out[i] = mode == KVE_POOL_AVG ? a / (float)kernel : a;
    }
    return KVE_OK;
}

/* moves the kept slots of (l, h) to the front, moving as few as possible */
/* moves slot src of (l, h) to slot dst: vectors, position, scores and sink copy */
static void kve__move_slot(kve_cache *c, int32_t l, int32_t h, int32_t dst, int32_t src)
{
    int32_t G = c->group, d = c->cfg.head_dim, g;
    int64_t *pos = kve__pos(c, l, h);
    memcpy(kve__kptr(c, l, h, dst), kve__kptr(c, l, h, src), c->k_row);
    memcpy(kve__vptr(c, l, h, dst), kve__vptr(c, l, h, src), c->v_row);
    pos[dst] = pos[src];
    if (c->scores)
        for (g = 0; g < G; g++) {
            float *row = kve__score_row(c, l, h * G + g);
            row[dst] = row[src];
        }
    if (dst < c->sinks) {
        float *copy = kve__sink_key(c, l, h, dst);
        if (src < c->sinks) {
            memcpy(copy, kve__sink_key(c, l, h, src), (size_t)d * sizeof(float));
        } else { /* a recent token becomes a sink: its pre-RoPE key, rotated back */
            kve__decode(c->cfg.k_type, kve__kptr(c, l, h, dst), d, copy);
            if (c->cfg.key_storage == KVE_KEYS_POST_ROPE) kve__rotate(&c->cfg, c->freq, copy, -pos[dst]);
        }
    }
}

/* the work of kve_keep_slots on checked arguments; it touches only head h's bookkeeping, so
   the heads of a layer can be shrunk in parallel */
static void kve__keep_slots(kve_cache *c, int32_t l, int32_t h, const unsigned char *keep)
{
    int32_t n = *kve__len(c, l, h), kept = 0, s, src;
    int64_t *pos = kve__pos(c, l, h);
    for (s = 0; s < n; s++) kept += keep[s] != 0;
    /* holes below `kept` are filled from kept slots at or above it, in slot order */
    src = kept;
    for (s = 0; s < kept; s++) {
        if (keep[s]) continue;
        while (!keep[src]) src++;
        kve__move_slot(c, l, h, s, src++);
    }
    for (s = kept; s < n; s++) pos[s] = -1;
    *kve__len(c, l, h) = kept;
}

KVE_API kve_result kve_keep_slots(kve_cache *c, int32_t l, int32_t h, const unsigned char *keep)
{
    kve_result r;
    if ((r = kve__check_layer(c, l)) != KVE_OK) return r;
    if (!keep) return KVE_ERROR_NULL_ARGUMENT;
    if (h < 0 || h >= c->cfg.n_kv_heads) return KVE_ERROR_INDEX_OUT_OF_RANGE;
    /* StreamingLLM's slots are a fixed layout (sinks, then a ring) that compaction would break */
    if (c->cfg.policy.kind == KVE_POLICY_STREAMINGLLM) return KVE_ERROR_WRONG_POLICY;
    kve__changed(c);
    kve__keep_slots(c, l, h, keep);
    if (c->window_sum) c->window_sum_queries[l] = -1; /* the sums are by slot */
    return KVE_OK;
}

/* indices of n distinct positions sorted by position (ascending) into order; usually already
   sorted */
static void kve__order_positions(const int64_t *pos, int32_t n, int32_t *order, int32_t *tmp)
{
    int32_t i, sorted = 1, width;
    for (i = 0; i < n; i++) order[i] = i;
    for (i = 1; i < n; i++)
        if (pos[i] < pos[i - 1]) sorted = 0;
    if (sorted) return;
    /* bottom-up merge sort: positions are unique, so the order is fully determined */
    for (width = 1; width < n; width *= 2) {
        int32_t lo;
        for (lo = 0; lo < n; lo += 2 * width) {
            int32_t mid = lo + width < n ? lo + width : n;
            int32_t hi = lo + 2 * width < n ? lo + 2 * width : n;
            int32_t a = lo, b = mid, o = lo;
            while (a < mid && b < hi) tmp[o++] = pos[order[a]] <= pos[order[b]] ? order[a++] : order[b++];
            while (a < mid) tmp[o++] = order[a++];
            while (b < hi) tmp[o++] = order[b++];
        }
        memcpy(order, tmp, (size_t)n * sizeof(int32_t));
    }
}

/* slots of (l, h) sorted by position into order */
static void kve__order_by_position(const kve_cache *c, int32_t l, int32_t h, int32_t *order,
                                   int32_t *tmp)
{
    kve__order_positions(kve__pos(c, l, h), *kve__len(c, l, h), order, tmp);
}

/* per query head sums of window softmax weights into rows (G x cap), then reduced into out */
static kve_result kve__window_scores(kve_cache *c, int32_t l, int32_t h, kve_reduce reduce,
                                     float *out)
{
    int32_t G = c->group, d = c->cfg.head_dim, n = *kve__len(c, l, h), g, s, nq, i;
    size_t cap = (size_t)c->cfg.capacity, w = (size_t)c->obs_window;
    size_t hd = (size_t)c->cfg.n_heads * (size_t)d;
    float *qr = c->scratch_q + (size_t)h * (size_t)G * (size_t)d;
    float *lg = c->scratch_f1 + (size_t)h * (size_t)G * cap;
    float *sum = c->scratch_f2 + (size_t)h * (size_t)G * cap;
    kve__posmap pm = kve__make_posmap(c, l);
    if (w == 0 || c->query_count[l] == 0) return KVE_ERROR_NO_QUERIES;
    nq = c->query_count[l] < (int64_t)w ? (int32_t)c->query_count[l] : (int32_t)w;
    for (g = 0; g < G; g++) memset(sum + (size_t)g * cap, 0, (size_t)n * sizeof(float));
    for (i = 0; i < nq; i++) {
        size_t at = (size_t)((c->query_count[l] - nq + i) % (int64_t)w);
        int64_t qp = c->query_pos[(size_t)l * w + at];
        kve__qangles qa;
        kve__query_angles(c, qp, &pm, &qa);
        kve__rotate_queries(c, c->queries + ((size_t)l * w + at) * hd, h, &qa, qr);
        kve__logits(c, l, h, qr, qp, &pm, lg, cap);
        for (g = 0; g < G; g++) {
            float *row = lg + (size_t)g * cap, *acc = sum + (size_t)g * cap;
            if (c->score_from != INT64_MIN) /* a chunk is scored as if alone (kvpress ChunkPress) */
                for (s = 0; s < n; s++)
                    if (kve__pos(c, l, h)[s] < c->score_from) row[s] = -INFINITY;
            kve__softmax(row, n);
            for (s = 0; s < n; s++) acc[s] += row[s];
        }
    }
    for (s = 0; s < n; s++) out[s] = kve__reduce(sum + s, G, cap, reduce);
    return KVE_OK;
}

KVE_API kve_result kve_window_scores(kve_cache *c, int32_t l, int32_t h, kve_reduce reduce,
                                     float *out)
{
    kve_result r;
    if ((r = kve__check_layer(c, l)) != KVE_OK) return r;
    if (!out) return KVE_ERROR_NULL_ARGUMENT;
    if (h < 0 || h >= c->cfg.n_kv_heads) return KVE_ERROR_INDEX_OUT_OF_RANGE;
    if ((int)reduce < 0 || reduce > KVE_REDUCE_SUM) return KVE_ERROR_INVALID_ENUM;
    if (reduce == KVE_REDUCE_DEFAULT) reduce = KVE_REDUCE_MEAN;
    return kve__window_scores(c, l, h, reduce, out);
}

/* Where a token's score comes from. window: the recorded queries' softmax weights, computed now;
   running: the same, summed by the decode steps since the last eviction (window_sum);
   accumulated: H2O's summed attention; the rest are the scorers of the same names. */
typedef enum kve__score_source {
    KVE__FROM_WINDOW,
    KVE__FROM_RUNNING,
    KVE__FROM_ACCUMULATED,
    KVE__FROM_OBSERVED,
    KVE__FROM_KNORM,
    KVE__FROM_KEYDIFF,
    KVE__FROM_TOVA,
    KVE__FROM_RANDOM,
    KVE__FROM_LAGKV,
    KVE__FROM_USER,
    KVE__FROM_EXPECTED
} kve__score_source;

static kve__score_source kve__policy_source(const kve_cache *c)
{
    switch (c->cfg.policy.kind) {
    case KVE_POLICY_H2O: return KVE__FROM_ACCUMULATED;
    case KVE_POLICY_OBSERVED_ATTENTION: return KVE__FROM_OBSERVED;
    case KVE_POLICY_KNORM: return KVE__FROM_KNORM;
    case KVE_POLICY_KEYDIFF: return KVE__FROM_KEYDIFF;
    case KVE_POLICY_TOVA: return KVE__FROM_TOVA;
    case KVE_POLICY_RANDOM: return KVE__FROM_RANDOM;
    case KVE_POLICY_LAGKV: return KVE__FROM_LAGKV;
    case KVE_POLICY_SCORER: return KVE__FROM_USER;
    case KVE_POLICY_EXPECTED_ATTENTION: return KVE__FROM_EXPECTED;
    default: return KVE__FROM_WINDOW;
    }
}

/* the newest tokens a selection never drops: the window; TOVA also keeps the query's own token
   (kvpress gives it the highest score) */
static int32_t kve__protected(const kve_cache *c)
{
    const kve_policy_config *p = &c->cfg.policy;
    return p->kind == KVE_POLICY_TOVA && p->window < 1 ? 1 : p->window;
}

/* kvpress's scorers protect nothing, so a prompt compression may drop the newest token too (it
   stays the layer's newest position); every other policy keeps it */
static int kve__may_drop_newest(const kve_cache *c)
{
    return (kve__is_scorer_kind(c->cfg.policy.kind) && kve__protected(c) == 0) ||
           c->cfg.policy.chunk_length > 0;
}

/* the key of a slot as attention at its original position sees it (rotated there when the cache
   holds it before RoPE): what kvpress's scorers read from a Hugging Face cache */
static void kve__rotated_key(const kve_cache *c, int32_t l, int32_t h, int32_t s, float *out)
{
    kve__decode(c->cfg.k_type, kve__kptr(c, l, h, s), c->cfg.head_dim, out);
    if (c->cfg.key_storage == KVE_KEYS_PRE_ROPE && c->cfg.rope_layout != KVE_ROPE_NONE)
        kve_rope_apply(&c->cfg, out, kve__pos(c, l, h)[s]);
}

static uint64_t kve__splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15u;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9u;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebu;
    return x ^ (x >> 31);
}

/* LagKV: the spread of each dimension of a token of one lag, scaled by the range of the next lag,
   its standard deviation over dimensions (unbiased), then a softmax over the lag. `first` is the
   lag's first token in position order; rows are keys (values = 0) or values (values = 1). */
static void kve__lag_spread(const kve_cache *c, int32_t l, int32_t h, const int32_t *order,
                            int32_t first, int32_t lag, int values, float *spread)
{
    int32_t d = c->cfg.head_dim, i, t;
    float row[KVE_MAX_HEAD_DIM], lo[KVE_MAX_HEAD_DIM], hi[KVE_MAX_HEAD_DIM];
    float top = -INFINITY, total = 0.0f;
    for (t = 0; t < lag; t++) {
        int32_t s = order[first + lag + t];
        if (values) kve__decode(c->cfg.v_type, kve__vptr(c, l, h, s), d, row);
        else kve__rotated_key(c, l, h, s, row);
        for (i = 0; i < d; i++) {
            if (t == 0 || row[i] < lo[i]) lo[i] = row[i];
            if (t == 0 || row[i] > hi[i]) hi[i] = row[i];
        }
    }
    for (t = 0; t < lag; t++) {
        int32_t s = order[first + t];
        double mean = 0.0, var = 0.0;
        if (values) kve__decode(c->cfg.v_type, kve__vptr(c, l, h, s), d, row);
        else kve__rotated_key(c, l, h, s, row);
        for (i = 0; i < d; i++) {
            row[i] = (row[i] - lo[i]) / (hi[i] - lo[i]);
            mean += row[i];
        }
        mean /= d;
        for (i = 0; i < d; i++) var += ((double)row[i] - mean) * ((double)row[i] - mean);
        spread[t] = d > 1 ? (float)sqrt(var / (d - 1)) : NAN;
        if (spread[t] > top) top = spread[t];
    }
    for (t = 0; t < lag; t++) total += (spread[t] = expf(spread[t] - top));
    for (t = 0; t < lag; t++) spread[t] /= total;
}

/* LagKV's score of the n tokens of (l, h), by slot: sinks and the last lag (with the remainder)
   score 1; the lags between are ranked within themselves by key and value spread (rank / lag,
   below 1). A head shorter than sinks + 2 lags scores its tokens by age, so the newest stay. */
static void kve__lagkv_scores(const kve_cache *c, int32_t l, int32_t h, const int32_t *order,
                              int32_t n, float *spread, float *out)
{
    const kve_policy_config *p = &c->cfg.policy;
    int32_t S = p->sinks, lag = p->lag_size, j, t, u, lags;
    float *ks = spread, *vs = spread + lag;
    for (j = 0; j < n; j++) out[order[j]] = 1.0f;
    if (n < S + 2 * lag) {
        for (j = S; j < n; j++) out[order[j]] = (float)(j - S) / (float)(n - S);
        return;
    }
    lags = (n - S) / lag;
    for (u = 0; u + 1 < lags; u++) {
        int32_t first = S + u * lag;
        kve__lag_spread(c, l, h, order, first, lag, 0, ks);
        kve__lag_spread(c, l, h, order, first, lag, 1, vs);
        for (t = 0; t < lag; t++) ks[t] = (ks[t] + vs[t]) / 2;
        for (t = 0; t < lag; t++) {
            int32_t rank = 0, o;
            if (p->cross_scoring) {
                out[order[first + t]] = ks[t];
                continue;
            }
            /* rank within the lag; equal scores by position, NaN above everything (a stable sort) */
            for (o = 0; o < lag; o++) {
                int below = ks[o] == ks[o] && (ks[t] != ks[t] || ks[o] < ks[t]);
                int tie = (ks[o] == ks[t] || (ks[o] != ks[o] && ks[t] != ks[t])) && o < t;
                rank += below || tie;
            }
            out[order[first + t]] = (float)rank / (float)lag;
        }
    }
}

/* Every slot's score for (l, h) into out (len floats); order holds the slots by position. Reads
   only this head's scratch (TOVA: its row, filled beforehand by kve__tova_prepare). */
static kve_result kve__slot_scores(kve_cache *c, int32_t l, int32_t h, kve__score_source src,
                                   const int32_t *order, float *out)
{
    const kve_policy_config *p = &c->cfg.policy;
    int32_t n = *kve__len(c, l, h), G = c->group, d = c->cfg.head_dim, j, g, i;
    size_t cap = (size_t)c->cfg.capacity;
    const int64_t *pos = kve__pos(c, l, h);
    float row[KVE_MAX_HEAD_DIM];
    switch (src) {
    case KVE__FROM_WINDOW:
        return kve__window_scores(c, l, h, p->gqa, out);
    case KVE__FROM_RUNNING:
    case KVE__FROM_ACCUMULATED: {
        const float *rows = src == KVE__FROM_RUNNING
                                ? c->window_sum + ((size_t)l * (size_t)c->cfg.n_heads +
                                                   (size_t)(h * G)) * cap
                                : kve__score_row(c, l, h * G);
        for (j = 0; j < n; j++) out[j] = kve__reduce(rows + j, G, cap, p->gqa);
        return KVE_OK;
    }
    case KVE__FROM_OBSERVED: {
        /* kvpress: the attention a token received, divided by the queries that could see it
           (every position from it to the newest), then reduced over the group */
        const float *rows = kve__score_row(c, l, h * G);
        float *avg = c->scratch_f1 + (size_t)h * (size_t)G * cap;
        for (j = 0; j < n; j++) {
            float seen = (float)(c->newest[l] - pos[j] + 1);
            for (g = 0; g < G; g++) avg[(size_t)g * cap + (size_t)j] = rows[(size_t)g * cap + (size_t)j] / seen;
            out[j] = kve__reduce(avg + j, G, cap, p->gqa);
        }
        return KVE_OK;
    }
    case KVE__FROM_KNORM:
        for (j = 0; j < n; j++) {
            double sq = 0.0;
            kve__decode(c->cfg.k_type, kve__kptr(c, l, h, j), d, row); /* RoPE keeps the norm */
            for (i = 0; i < d; i++) sq += (double)row[i] * row[i];
            out[j] = -(float)sqrt(sq);
        }
        return KVE_OK;
    case KVE__FROM_KEYDIFF: {
        /* minus the cosine similarity to the mean of the unit keys */
        double anchor[KVE_MAX_HEAD_DIM], an = 0.0;
        int32_t scored = 0;
        for (i = 0; i < d; i++) anchor[i] = 0.0;
        for (j = 0; j < n; j++) {
            double sq = 0.0, norm;
            if (pos[j] < c->score_from) continue; /* a chunk's anchor is its own */
            scored++;
            kve__rotated_key(c, l, h, j, row);
            for (i = 0; i < d; i++) sq += (double)row[i] * row[i];
            norm = sqrt(sq) > 1e-12 ? sqrt(sq) : 1e-12;
            for (i = 0; i < d; i++) anchor[i] += row[i] / norm;
        }
        for (i = 0; i < d; i++) {
            anchor[i] /= scored;
            an += anchor[i] * anchor[i];
        }
        an = sqrt(an) > 1e-8 ? sqrt(an) : 1e-8;
        for (j = 0; j < n; j++) {
            double sq = 0.0, dot = 0.0, kn;
            kve__rotated_key(c, l, h, j, row);
            for (i = 0; i < d; i++) {
                sq += (double)row[i] * row[i];
                dot += row[i] * anchor[i];
            }
            kn = sqrt(sq) > 1e-8 ? sqrt(sq) : 1e-8;
            out[j] = -(float)(dot / (kn * an));
        }
        return KVE_OK;
    }
    case KVE__FROM_TOVA:
    case KVE__FROM_EXPECTED: /* computed for all heads beforehand (kve__prepare_scores) */
        memcpy(out, c->scratch_f1 + (size_t)h * cap, (size_t)n * sizeof(float));
        return KVE_OK;
    case KVE__FROM_RANDOM:
        /* a function of (seed, layer, head, position): the same whatever the slot layout */
        for (j = 0; j < n; j++) {
            uint64_t x = kve__splitmix64(p->seed ^ kve__splitmix64(
                ((uint64_t)l << 40) ^ ((uint64_t)h << 20) ^ kve__splitmix64((uint64_t)pos[j])));
            out[j] = (float)(x >> 40) * (1.0f / 16777216.0f);
        }
        return KVE_OK;
    case KVE__FROM_LAGKV: /* over the tokens scored (a chunk: its own tokens in order) */
        for (j = 0; j < n && pos[order[j]] < c->score_from; j++) {}
        kve__lagkv_scores(c, l, h, order + j, n - j, out + cap, out);
        return KVE_OK;
    case KVE__FROM_USER:
        return p->scorer(c, l, h, out, p->custom_user);
    }
    return KVE_ERROR_POLICY_FAILED;
}

/* TOVA: the newest query's softmax weights, averaged over ALL query heads (kvpress, the paper),
   into row h of scratch_f1 for every KV head. KV heads holding different tokens (after a
   kve_keep_slots of one head) are scored by their own query heads instead. */
static kve_result kve__tova_prepare(kve_cache *c, int32_t l)
{
    int32_t Hk = c->cfg.n_kv_heads, H = c->cfg.n_heads, G = c->group, h, q, j;
    int32_t n0 = *kve__len(c, l, 0);
    size_t cap = (size_t)c->cfg.capacity;
    int aligned = 1;
    kve_result r;
    for (h = 0; h < Hk; h++) {
        if (*kve__len(c, l, h) != n0 ||
            memcmp(kve__pos(c, l, h), kve__pos(c, l, 0), (size_t)n0 * sizeof(int64_t)) != 0)
            aligned = 0;
        r = kve__window_scores(c, l, h, KVE_REDUCE_SUM, c->scratch_f3 + (size_t)h * 2 * cap);
        if (r != KVE_OK) return r;
    }
    /* scratch_f2 now holds each query head's weights (row q), scratch_f1 is free */
    for (h = 0; h < Hk; h++) {
        float *row = c->scratch_f1 + (size_t)h * cap;
        int32_t n = *kve__len(c, l, h), from = aligned ? 0 : h * G, to = aligned ? H : (h + 1) * G;
        for (j = 0; j < n; j++) {
            float sum = 0.0f;
            for (q = from; q < to; q++) sum += c->scratch_f2[(size_t)q * cap + (size_t)j];
            row[j] = sum / (float)(to - from);
        }
    }
    return KVE_OK;
}

/* Expected attention (kvpress ExpectedAttentionPress) into row h of scratch_f1 for every KV head.
   With the queries' mean mu and covariance S (past the sinks) and Rm the RoPE rotation averaged
   over the next n_future_positions positions, a key k scores, per query head,
       mu.u / sqrt(d) + u^T S u / (2 d),   u = Rm^T k   (= (Rm mu).k and k^T Rm S Rm^T k),
   softmaxed over the scored keys, averaged over the group, plus epsilon, times the value's norm.
   The first `sinks` tokens (of the chunk, under kve_compress_chunk) score the highest + 1. */
static kve_result kve__expected_prepare(kve_cache *c, int32_t l)
{
    const kve_policy_config *p = &c->cfg.policy;
    int32_t Hk = c->cfg.n_kv_heads, G = c->group, d = c->cfg.head_dim, h, g, j, i, t;
    int32_t half = c->cfg.rope_layout == KVE_ROPE_NONE ? 0 : c->cfg.rope_dims / 2;
    size_t cap = (size_t)c->cfg.capacity, hd = (size_t)c->cfg.n_heads * (size_t)d;
    int64_t N = c->qstat_count[l], from = c->newest[l] + 1;
    double cbar[KVE_MAX_HEAD_DIM / 2], sbar[KVE_MAX_HEAD_DIM / 2], u[KVE_MAX_HEAD_DIM];
    double mu[KVE_MAX_HEAD_DIM];
    float key[KVE_MAX_HEAD_DIM], top = -INFINITY;
    if (N == 0) return KVE_ERROR_NO_QUERIES;
    for (i = 0; i < half; i++) {
        double cs = 0.0, sn = 0.0;
        for (t = 0; t < p->n_future_positions; t++) {
            double angle = ((double)(from + t) / c->cfg.rope_linear_factor) * c->freq[i];
            cs += cos(angle);
            sn += sin(angle);
        }
        cbar[i] = cs / p->n_future_positions;
        sbar[i] = sn / p->n_future_positions;
    }
    for (h = 0; h < Hk; h++) {
        int32_t n = *kve__len(c, l, h), older = 0;
        int32_t *order = c->scratch_i1 + (size_t)h * cap, *tmp = c->scratch_i2 + (size_t)h * cap;
        unsigned char *role = c->scratch_u8 + (size_t)h * cap; /* 0 scored, 1 sink, 2 not scored */
        const int64_t *pos = kve__pos(c, l, h);
        float *row = c->scratch_f1 + (size_t)h * cap;
        kve__order_by_position(c, l, h, order, tmp);
        while (older < n && pos[order[older]] < c->score_from) older++;
        for (j = 0; j < n; j++) role[order[j]] = j < older ? 2 : j < older + p->sinks ? 1 : 0;
        for (j = 0; j < n; j++) {
            row[j] = 0.0f;
            if (role[j]) continue;
            kve__rotated_key(c, l, h, j, key);
            for (i = 0; i < d; i++) u[i] = key[i];
            for (i = 0; i < half; i++) { /* u = Rm^T k, pair by pair */
                int32_t a = c->cfg.rope_layout == KVE_ROPE_HALF ? i : 2 * i;
                int32_t b = c->cfg.rope_layout == KVE_ROPE_HALF ? i + half : 2 * i + 1;
                u[a] = cbar[i] * key[a] + sbar[i] * key[b];
                u[b] = -sbar[i] * key[a] + cbar[i] * key[b];
            }
            for (g = 0; g < G; g++) {
                size_t qh = (size_t)(h * G + g);
                const double *sum = c->qstat_sum + (size_t)l * hd + qh * (size_t)d;
                double m = 0.0, logit;
                for (i = 0; i < d; i++) m += (mu[i] = sum[i] / (double)N) * u[i];
                logit = m / sqrt((double)d);
                if (c->qstat_outer) {
                    const double *outer = c->qstat_outer + ((size_t)l * hd + qh * (size_t)d) * (size_t)d;
                    double quad = 0.0;
                    for (i = 0; i < d; i++) {
                        double r = 0.0;
                        int32_t k;
                        for (k = 0; k < d; k++) r += outer[(size_t)i * (size_t)d + (size_t)k] * u[k];
                        quad += u[i] * r;
                    }
                    logit += (quad / (double)N - m * m) / (double)d / 2.0;
                }
                c->scratch_f2[qh * cap + (size_t)j] = (float)logit;
            }
        }
        for (g = 0; g < G; g++) { /* softmax over the scored keys, summed over the group */
            float *lg = c->scratch_f2 + (size_t)(h * G + g) * cap, mx = -INFINITY, total = 0.0f;
            for (j = 0; j < n; j++)
                if (!role[j] && lg[j] > mx) mx = lg[j];
            for (j = 0; j < n; j++)
                if (!role[j]) total += (lg[j] = expf(lg[j] - mx));
            for (j = 0; j < n; j++)
                if (!role[j]) row[j] += lg[j] / total;
        }
        for (j = 0; j < n; j++) {
            if (role[j]) continue;
            row[j] /= (float)G;
            if (!p->no_vnorm) {
                double sq = 0.0;
                kve__decode(c->cfg.v_type, kve__vptr(c, l, h, j), d, key);
                for (i = 0; i < d; i++) sq += (double)key[i] * key[i];
                row[j] = (row[j] + (float)p->epsilon) * (float)sqrt(sq);
            }
            if (row[j] > top) top = row[j];
        }
    }
    for (h = 0; h < Hk; h++) { /* the sinks above everything, as kvpress pads them */
        unsigned char *role = c->scratch_u8 + (size_t)h * cap;
        for (j = 0; j < *kve__len(c, l, h); j++)
            if (role[j] == 1) c->scratch_f1[(size_t)h * cap + (size_t)j] = top + 1.0f;
    }
    return KVE_OK;
}

/* the scorers that score every head at once, before the heads are selected */
static kve_result kve__prepare_scores(kve_cache *c, int32_t l, kve__score_source src)
{
    if (src == KVE__FROM_TOVA) return kve__tova_prepare(c, l);
    if (src == KVE__FROM_EXPECTED) return kve__expected_prepare(c, l);
    return KVE_OK;
}

/* The first half of every selection: scores (l, h) with src and lays out the candidates
   order[from .. to) in token order in seq, pooled for the attention scores (H2O's accumulated
   sums are not). slot_score is the head's scratch, overwritten. */
static kve_result kve__candidate_scores(kve_cache *c, int32_t l, int32_t h, kve__score_source src,
                                        const int32_t *order, int32_t from, int32_t to,
                                        float *slot_score, float *seq)
{
    const kve_policy_config *p = &c->cfg.policy;
    int32_t j;
    kve_result r;
    if ((r = kve__slot_scores(c, l, h, src, order, slot_score)) != KVE_OK) return r;
    for (j = from; j < to; j++) seq[j - from] = slot_score[order[j]];
    if (src != KVE__FROM_ACCUMULATED && p->kernel > 1) { /* pooled into slot_score, copied back */
        kve_pool1d(seq, to - from, p->kernel, p->pooling, slot_score);
        memcpy(seq, slot_score, (size_t)(to - from) * sizeof(float));
    }
    return KVE_OK;
}

/* The shared eviction step: keep the `protect` newest tokens of (l, h) and the best
   `target - protect` older ones by score (group-reduced, pooled for the attention scores). */
static kve_result kve__shrink(kve_cache *c, int32_t l, int32_t h, int32_t target, int32_t protect,
                              kve__score_source src)
{
    int32_t n = *kve__len(c, l, h), prefix, j, older = 0;
    size_t cap = (size_t)c->cfg.capacity;
    int32_t *order = c->scratch_i1 + (size_t)h * cap, *tmp = c->scratch_i2 + (size_t)h * cap;
    unsigned char *keep = c->scratch_u8 + (size_t)h * cap;
    float *slot_score = c->scratch_f3 + (size_t)h * 2 * cap, *seq = slot_score + cap;
    const int64_t *pos = kve__pos(c, l, h);
    unsigned char *keep_seq;
    kve_result r;
    if (n <= 0) return KVE_OK;
    kve__order_by_position(c, l, h, order, tmp);
    /* a chunk (kve_compress_chunk): the older tokens stay, target counts the chunk's */
    while (older < n && pos[order[older]] < c->score_from) older++;
    if (target >= n - older) return KVE_OK;
    if (protect > target) protect = target;
    prefix = n - protect;
    memset(keep, 0, (size_t)n);
    for (j = 0; j < older; j++) keep[order[j]] = 1;
    for (j = prefix; j < n; j++) keep[order[j]] = 1;
    if (target - protect > 0) {
        r = kve__candidate_scores(c, l, h, src, order, older, prefix, slot_score, seq);
        if (r != KVE_OK) return r;
        /* tmp holds the heap, the byte scratch after `keep` is not free: reuse slot_score bytes */
        keep_seq = KVE__CAST(unsigned char *, slot_score);
        kve_select_top(seq, prefix - older, target - protect, keep_seq, tmp);
        for (j = older; j < prefix; j++)
            if (keep_seq[j - older]) keep[order[j]] = 1;
    }
    kve__keep_slots(c, l, h, keep); /* not the public call: heads run in parallel */
    return KVE_OK;
}

/* ---- PyramidKV schedule ----------------------------------------------------------------------- */
/* prefix tokens layer `layer` keeps from a prompt of L tokens, or -1 for "keep everything" */
static int64_t kve__pyramid_prefix(int64_t C, int64_t w, int64_t beta, int32_t n_layers,
                                   int32_t layer, int64_t L)
{
    int64_t min_num, max_num, steps;
    if (L < C) return -1;
    if (L < 2 * (C - w)) return C - w;
    min_num = (C - w) / beta;
    max_num = 2 * (C - w) - min_num;
    if (max_num >= L - w) {
        max_num = L - w;
        min_num = 2 * (C - w) - max_num;
    }
    /* the reference divides by n_layers - 1; one layer is SnapKV */
    if (n_layers <= 1) return C - w;
    steps = (max_num - min_num) / (n_layers - 1);
    return max_num - (int64_t)layer * steps;
}

KVE_API kve_result kve_pyramid_budgets(int32_t budget, int32_t window, int32_t beta,
                                       int32_t n_layers, int64_t prompt_len, int32_t *budgets)
{
    int32_t l;
    if (!budgets) return KVE_ERROR_NULL_ARGUMENT;
    if (n_layers <= 0 || n_layers > KVE_MAX_LAYERS) return KVE_ERROR_INVALID_DIMENSIONS;
    if (window < 0 || beta <= 0 || prompt_len < 0 || budget <= 0) return KVE_ERROR_INVALID_PARAMETER;
    if (budget <= window) return KVE_ERROR_WINDOW_TOO_LARGE;
    for (l = 0; l < n_layers; l++) {
        int64_t k = kve__pyramid_prefix(budget, window, beta, n_layers, l, prompt_len);
        int64_t b = k < 0 ? prompt_len : k + window;
        budgets[l] = b > INT32_MAX ? INT32_MAX : (int32_t)b;
    }
    return KVE_OK;
}

/* decode-time budget of a layer: PyramidKV's steady-state schedule (a prompt long enough for the
   pyramid branch), everyone else the policy budget */
static int32_t kve__layer_budget_of(const kve_config *c, int32_t layer)
{
    const kve_policy_config *p = &c->policy;
    int evicting = p->kind == KVE_POLICY_CUSTOM || p->decode == KVE_DECODE_EVICT;
    if (p->kind == KVE_POLICY_FULL || !evicting) return c->capacity;
    if (p->allocation == KVE_ALLOCATION_PYRAMID)
        return (int32_t)(kve__pyramid_prefix(p->budget, p->window, p->beta, c->n_layers, layer,
                                             KVE_MAX_POSITION) + p->window);
    return p->budget;
}

/* ---- built-in policies -------------------------------------------------------------------- */
static kve_result kve__full_make_room(kve_cache *c, int32_t l, int32_t *ws, void *u)
{
    (void)c; (void)l; (void)ws; (void)u;
    return KVE_ERROR_CACHE_FULL;
}

/* StreamingLLM: the new token overwrites the oldest recent slot; sinks and the rest stay put */
static kve_result kve__streaming_make_room(kve_cache *c, int32_t l, int32_t *ws, void *u)
{
    int32_t h, S = c->sinks, B = c->budget[l], slot = c->ring_next[l];
    (void)u;
    if (c->cfg.policy.decode == KVE_DECODE_GROW) return KVE_ERROR_CACHE_FULL;
    for (h = 0; h < c->cfg.n_kv_heads; h++) ws[h] = slot;
    c->ring_next[l] = slot + 1 >= B ? S : slot + 1;
    return KVE_OK;
}

/* Shrinks every KV head of layer l with target[h] >= 0 to that many tokens (the protected newest
   kept), the heads in parallel: they are independent, each with its own scratch. A user scorer
   is called for one head at a time. */
static kve_result kve__shrink_heads(kve_cache *c, int32_t l, const int32_t *target,
                                    kve__score_source src)
{
    const kve_policy_config *p = &c->cfg.policy;
    int32_t h, Hk = c->cfg.n_kv_heads, protect = kve__protected(c);
    kve_result r = KVE_OK;
    int nt = src == KVE__FROM_USER ? 1 : kve__threads(c, kve__work_is_large(c, l, p->window));
    (void)nt;
    for (h = 0; h < Hk && target[h] < 0; h++) {}
    if (h < Hk && (r = kve__prepare_scores(c, l, src)) != KVE_OK) return r;
    KVE__OMP("omp parallel for schedule(static) num_threads(nt) if(nt > 1)")
    for (h = 0; h < Hk; h++) {
        kve_result rh;
        if (target[h] < 0) continue;
        rh = kve__shrink(c, l, h, target[h], protect, src);
        if (rh != KVE_OK) {
            KVE__OMP("omp critical")
            r = rh;
        }
    }
    return r;
}

/* Python's round(): halves to even */
static int64_t kve__round_half_even(double x)
{
    double f = floor(x), frac = x - f;
    if (frac > 0.5 || (frac == 0.5 && fmod(f, 2.0) != 0.0)) f += 1.0;
    return (int64_t)f;
}

/* kvpress PyramidKVPress.get_layer_budget: the tokens layer l keeps (the window included) of a
   prompt of L tokens at a compression ratio, in its own floating-point steps */
static int64_t kve__pyramid_ratio_keep(const kve_policy_config *p, int32_t n_layers, int32_t l,
                                       int64_t L)
{
    double w = (double)p->window, keep = (double)L * (1.0 - p->compression_ratio);
    double max_capacity = w + keep, min_num, max_num, steps;
    min_num = (max_capacity - w) / p->beta;
    max_num = (max_capacity - w) * 2 - min_num;
    if (max_num >= (double)L - w) {
        max_num = (double)L - w;
        min_num = (max_capacity - w) * 2 - max_num;
    }
    /* its fall-back to SnapKV; one layer too (where it would divide by zero) */
    if (!((double)L >= max_num && max_num >= min_num && min_num >= w) || n_layers <= 1)
        return kve__round_half_even(keep);
    steps = (max_num - min_num) / (n_layers - 1);
    return kve__round_half_even(max_num - l * steps);
}

/* tokens a head of n keeps in a prompt compression of layer l, or -1 for all of them */
static int64_t kve__compress_target(const kve_cache *c, int32_t l, int32_t n)
{
    const kve_policy_config *p = &c->cfg.policy;
    int64_t keep;
    if (p->compression_ratio > 0.0) {
        keep = p->allocation == KVE_ALLOCATION_PYRAMID
                   ? kve__pyramid_ratio_keep(p, c->cfg.n_layers, l, n)
                   : (int64_t)((double)n * (1.0 - p->compression_ratio)); /* int() truncates */
        if (keep >= n) return -1;
    } else if (p->allocation == KVE_ALLOCATION_PYRAMID) {
        keep = kve__pyramid_prefix(p->budget, p->window, p->beta, c->cfg.n_layers, l, n);
        if (keep < 0) return -1;
        keep += p->window;
    } else {
        if (n < p->budget) return -1;
        keep = p->budget;
    }
    /* a policy that keeps its newest token keeps at least that one */
    return keep < 1 ? (kve__may_drop_newest(c) ? 0 : 1) : keep;
}

/* AdaKV (kvpress AdaKVPress): the layer keeps sum(target) tokens chosen over all its KV heads at
   once. Each head first keeps its protected tokens and its int(target * alpha_safeguard) best
   (the protected ones counted among them, as kvpress scores them highest); the rest go to the
   best scores of any head. Ties: lower head, then lower position. */
static kve_result kve__adakv_compress(kve_cache *c, int32_t l, kve__score_source src)
{
    const kve_policy_config *p = &c->cfg.policy;
    int32_t Hk = c->cfg.n_kv_heads, h, j, protect = kve__protected(c), candidates = 0;
    size_t cap = (size_t)c->cfg.capacity;
    int64_t total = 0, forced = 0, rest;
    kve_result r;
    if ((r = kve__prepare_scores(c, l, src)) != KVE_OK) return r;
    for (h = 0; h < Hk; h++) {
        int32_t n = *kve__len(c, l, h), prot, prefix, safe;
        int64_t target = kve__compress_target(c, l, n);
        int32_t *order = c->scratch_i1 + (size_t)h * cap, *tmp = c->scratch_i2 + (size_t)h * cap;
        unsigned char *keep = c->scratch_u8 + (size_t)h * cap, *keep_seq;
        float *slot_score = c->scratch_f3 + (size_t)h * 2 * cap, *seq = slot_score + cap;
        memset(keep, 1, (size_t)n);
        if (target < 0) { /* keeps everything */
            total += n;
            forced += n;
            continue;
        }
        memset(keep, 0, (size_t)n);
        total += target;
        prot = protect < target ? protect : (int32_t)target;
        prefix = n - prot;
        safe = (int32_t)((double)target * p->alpha_safeguard) - prot;
        if (safe < 0) safe = 0;
        if (safe > prefix) safe = prefix;
        forced += prot + safe;
        kve__order_by_position(c, l, h, order, tmp);
        for (j = prefix; j < n; j++) keep[order[j]] = 1;
        if (prefix == 0) continue;
        r = kve__candidate_scores(c, l, h, src, order, 0, prefix, slot_score, seq);
        if (r != KVE_OK) return r;
        keep_seq = KVE__CAST(unsigned char *, slot_score);
        kve_select_top(seq, prefix, safe, keep_seq, tmp);
        for (j = 0; j < prefix; j++) {
            if (keep_seq[j]) {
                keep[order[j]] = 1;
            } else {
                c->ada_score[candidates] = seq[j];
                c->ada_index[candidates++] = (int32_t)((size_t)h * cap + (size_t)order[j]);
            }
        }
    }
    rest = total - forced;
    if (rest > candidates) rest = candidates;
    if (rest > 0) {
        kve_select_top(c->ada_score, candidates, (int32_t)rest, c->ada_keep, c->ada_order);
        for (j = 0; j < candidates; j++)
            if (c->ada_keep[j]) c->scratch_u8[c->ada_index[j]] = 1;
    }
    for (h = 0; h < Hk; h++) kve__keep_slots(c, l, h, c->scratch_u8 + (size_t)h * cap);
    return KVE_OK;
}

/* ChunkKV (kvpress ChunkKVPress): every head keeps the same whole chunks of chunk_length tokens
   (the last one may be shorter), those with the highest mean of the score summed over KV heads;
   protected tokens score the highest score + 1, as kvpress's scorers give them. A prompt shorter
   than a chunk is selected token by token. */
static kve_result kve__chunk_compress(kve_cache *c, int32_t l, kve__score_source src)
{
    const kve_policy_config *p = &c->cfg.policy;
    int32_t Hk = c->cfg.n_kv_heads, h, j, n = *kve__len(c, l, 0), C = p->chunk_length;
    int32_t protect = kve__protected(c), prefix, full, chunks, keep_chunks, i;
    size_t cap = (size_t)c->cfg.capacity;
    int64_t target = kve__compress_target(c, l, n);
    float top = -INFINITY, *total = c->scratch_f2, *chunk_score = c->scratch_f1;
    unsigned char *chunk_keep = KVE__CAST(unsigned char *, c->scratch_f3);
    kve_result r;
    if (target < 0) return KVE_OK;
    for (h = 1; h < Hk; h++)
        if (*kve__len(c, l, h) != n ||
            memcmp(kve__pos(c, l, h), kve__pos(c, l, 0), (size_t)n * sizeof(int64_t)) != 0)
            return KVE_ERROR_UNSUPPORTED; /* chunks are positions shared by all heads */
    if (n < C) {
        int32_t targets[KVE_MAX_HEADS];
        for (h = 0; h < Hk; h++) targets[h] = (int32_t)target;
        return kve__shrink_heads(c, l, targets, src);
    }
    if ((r = kve__prepare_scores(c, l, src)) != KVE_OK) return r;
    prefix = n - (protect < n ? protect : n);
    for (h = 0; h < Hk; h++) {
        int32_t *order = c->scratch_i1 + (size_t)h * cap, *tmp = c->scratch_i2 + (size_t)h * cap;
        float *slot_score = c->scratch_f3 + (size_t)h * 2 * cap, *seq = slot_score + cap;
        kve__order_by_position(c, l, h, order, tmp);
        r = kve__candidate_scores(c, l, h, src, order, 0, prefix, slot_score, seq);
        if (r != KVE_OK) return r;
        for (j = 0; j < prefix; j++)
            if (seq[j] > top) top = seq[j];
    }
    for (j = 0; j < n; j++) {
        float sum = 0.0f;
        for (h = 0; h < Hk; h++) sum += j < prefix ? c->scratch_f3[(size_t)h * 2 * cap + cap + (size_t)j] : top + 1.0f;
        total[j] = sum;
    }
    full = n / C;
    chunks = full + (n % C > 0);
    for (i = 0; i < chunks; i++) {
        int32_t from = i * C, to = i + 1 < chunks || n % C == 0 ? from + C : n;
        float sum = 0.0f;
        for (j = from; j < to; j++) sum += total[j];
        chunk_score[i] = sum / (float)(to - from);
    }
    keep_chunks = p->compression_ratio > 0.0
                      ? (int32_t)((double)chunks * (1.0 - p->compression_ratio))
                      : (int32_t)((double)chunks * (double)target / (double)n);
    if (keep_chunks < 1) keep_chunks = 1;
    kve_select_top(chunk_score, chunks, keep_chunks, chunk_keep, c->scratch_i2);
    for (h = 0; h < Hk; h++) {
        const int32_t *order = c->scratch_i1 + (size_t)h * cap;
        unsigned char *keep = c->scratch_u8 + (size_t)h * cap;
        for (j = 0; j < n; j++) keep[order[j]] = chunk_keep[j / C];
        kve__keep_slots(c, l, h, keep);
    }
    return KVE_OK;
}

/* prompt compression: each head keeps its target (PyramidKV: by layer), the protected newest
   among them */
static kve_result kve__select_compress(kve_cache *c, int32_t l, kve__score_source src)
{
    int32_t h, target[KVE_MAX_HEADS];
    if (c->cfg.policy.allocation == KVE_ALLOCATION_ADAKV) return kve__adakv_compress(c, l, src);
    if (c->cfg.policy.chunk_length > 0) return kve__chunk_compress(c, l, src);
    for (h = 0; h < c->cfg.n_kv_heads; h++)
        target[h] = (int32_t)kve__compress_target(c, l, *kve__len(c, l, h));
    return kve__shrink_heads(c, l, target, src);
}

/* the scoring policies' prompt compression */
static kve_result kve__scored_compress(kve_cache *c, int32_t l, void *u)
{
    kve_result r;
    (void)u;
    if ((r = kve__select_compress(c, l, kve__policy_source(c))) == KVE_OK) kve__window_sum_reset(c, l);
    return r;
}

/* Scoring policies during decoding (KVE_DECODE_EVICT): re-score the layer (SnapKV/PyramidKV with
   the recent queries as the window) and free evict_batch slots */
static kve_result kve__scored_make_room(kve_cache *c, int32_t l, int32_t *ws, void *u)
{
    const kve_policy_config *p = &c->cfg.policy;
    int32_t h, budget = c->budget[l], target = budget - p->evict_batch, targets[KVE_MAX_HEADS];
    int32_t protect = kve__protected(c);
    kve__score_source src = kve__policy_source(c);
    kve_result r;
    (void)ws; (void)u;
    if (p->decode != KVE_DECODE_EVICT) return KVE_ERROR_CACHE_FULL;
    if (target < protect) target = protect;
    if (target >= budget) target = budget - 1;
    for (h = 0; h < c->cfg.n_kv_heads; h++) targets[h] = *kve__len(c, l, h) < budget ? -1 : target;
    /* the weights the decode steps since the last eviction computed are the window's when there
       were exactly `window` of them (evict_batch = window, the default) and nothing else recorded
       queries: then they are summed already, and the window is not attended again */
    if (src == KVE__FROM_WINDOW && c->window_sum_queries[l] > 0 &&
        c->window_sum_queries[l] == (c->query_count[l] < p->window ? c->query_count[l] : p->window))
        src = KVE__FROM_RUNNING;
    if ((r = kve__shrink_heads(c, l, targets, src)) != KVE_OK) return r;
    kve__window_sum_reset(c, l);
    c->limit[l] = budget;
    return KVE_OK;
}

/* H2O during decoding: overwrite the lightest slot outside the recent window (a layer above its
   budget, filled by a prompt that was not compressed, is first shrunk to it) */
static kve_result kve__h2o_make_room(kve_cache *c, int32_t l, int32_t *ws, void *u)
{
    const kve_policy_config *p = &c->cfg.policy;
    int32_t h, G = c->group, s, budget = c->budget[l];
    size_t cap = (size_t)c->cfg.capacity;
    int64_t recent_from = INT64_MAX, back = p->window - 1;
    kve_result r;
    (void)u;
    /* the window - 1 most recently stored tokens stay (with the new one: the window). Protected
       tokens are never evicted and positions increase, so they are the newest in the cache. */
    if (back > 0 && c->stored[l] >= back)
        recent_from = c->recent_pos[(size_t)l * (size_t)p->window +
                                    (size_t)((c->stored[l] - back) % p->window)];
    if (p->decode != KVE_DECODE_EVICT) return KVE_ERROR_CACHE_FULL;
    c->limit[l] = budget;
    for (h = 0; h < c->cfg.n_kv_heads; h++) {
        int32_t n = *kve__len(c, l, h), best = -1;
        float best_score = 0.0f;
        const int64_t *pos = kve__pos(c, l, h);
        const float *row = kve__score_row(c, l, h * G);
        if (n < budget) continue;
        if (n > budget) {
            r = kve__shrink(c, l, h, budget - 1, p->window - 1, KVE__FROM_ACCUMULATED);
            if (r != KVE_OK) return r;
            continue;
        }
        for (s = 0; s < n; s++) {
            float sc;
            if (pos[s] >= recent_from) continue;
            sc = kve__reduce(row + s, G, cap, p->gqa);
            if (best < 0 || sc < best_score || (sc == best_score && pos[s] < pos[best])) {
                best = s;
                best_score = sc;
            }
        }
        if (best < 0) return KVE_ERROR_POLICY_FAILED;
        ws[h] = best;
    }
    return KVE_OK;
}

static void kve__remove_layer(kve_cache *c, int32_t l, int64_t from, int64_t to);

/* StreamingLLM as a prompt compression (decode = KVE_DECODE_GROW): of the prompt, the sinks and
   the newest budget - sinks tokens stay (with a compression ratio: int(n * (1 - ratio)) - sinks,
   kvpress StreamingLLMPress, at least the newest token), in order; then the layer grows until
   capacity */
static kve_result kve__streaming_compress(kve_cache *c, int32_t l, void *u)
{
    const kve_policy_config *p = &c->cfg.policy;
    int32_t S = c->sinks, n = *kve__len(c, l, 0), keep = p->budget - S;
    const int64_t *pos = kve__pos(c, l, 0);
    (void)u;
    if (p->decode != KVE_DECODE_GROW) return KVE_OK;
    if (p->compression_ratio > 0.0) {
        keep = (int32_t)((double)n * (1.0 - p->compression_ratio)) - S;
        if (keep < 1) keep = 1;
    }
    if (n <= S + keep) return KVE_OK;
    kve__remove_layer(c, l, pos[S], pos[n - keep]); /* the slots are in position order */
    return KVE_OK;
}

/* SimLayerKV (kvpress SimLayerKVPress) after a prompt. The layer's last `window` queries attend
   over its tokens (softmax over all of them, causal); averaged over those queries and every query
   head, the attention on the first `sinks` tokens and on the n_recent tokens before the queries'
   own is summed. Above lazy_threshold the layer is lazy and keeps its first `sinks` and its
   newest n_recent - window tokens; otherwise it keeps everything. Nothing happens while the
   layer holds sinks + n_recent + window tokens or fewer, or with the threshold at 1. */
static kve_result kve__simlayerkv_compress(kve_cache *c, int32_t l, void *u)
{
    const kve_policy_config *p = &c->cfg.policy;
    int32_t Hk = c->cfg.n_kv_heads, S = p->sinks, w = p->window, n = *kve__len(c, l, 0), h, j;
    int32_t keep_recent = p->n_recent - w;
    size_t cap = (size_t)c->cfg.capacity;
    double attention = 0.0;
    kve_result r;
    (void)u;
    if (p->lazy_threshold == 1.0 || n <= S + p->n_recent + w) return KVE_OK;
    for (h = 1; h < Hk; h++)
        if (*kve__len(c, l, h) != n) return KVE_ERROR_UNSUPPORTED; /* heads evicted apart */
    if (c->query_count[l] < (int64_t)w) return KVE_ERROR_NO_QUERIES;
    for (h = 0; h < Hk; h++) {
        float *weight = c->scratch_f3 + (size_t)h * 2 * cap; /* summed over queries and group */
        int32_t *order = c->scratch_i1 + (size_t)h * cap, *tmp = c->scratch_i2 + (size_t)h * cap;
        double head = 0.0;
        if ((r = kve__window_scores(c, l, h, KVE_REDUCE_SUM, weight)) != KVE_OK) return r;
        kve__order_by_position(c, l, h, order, tmp);
        for (j = 0; j < S; j++) head += weight[order[j]];
        for (j = n - w - p->n_recent; j < n - w; j++) head += weight[order[j]];
        attention += head;
    }
    attention /= (double)c->cfg.n_heads * (double)w;
    if (!(attention > p->lazy_threshold)) return KVE_OK;
    for (h = 0; h < Hk; h++) {
        const int32_t *order = c->scratch_i1 + (size_t)h * cap;
        unsigned char *keep = c->scratch_u8 + (size_t)h * cap;
        for (j = 0; j < n; j++) keep[order[j]] = j < S || j >= n - keep_recent;
        kve__keep_slots(c, l, h, keep);
    }
    return KVE_OK;
}

static const kve_policy_vtable kve__vt_full = {"full", 0, kve__full_make_room, NULL};
static const kve_policy_vtable kve__vt_simlayerkv = {"simlayerkv", 0, kve__full_make_room,
                                                     kve__simlayerkv_compress};
static const kve_policy_vtable kve__vt_streaming = {"streamingllm", 0, kve__streaming_make_room,
                                                    kve__streaming_compress};
static const kve_policy_vtable kve__vt_snapkv = {"snapkv", 0, kve__scored_make_room,
                                                 kve__scored_compress};
static const kve_policy_vtable kve__vt_pyramidkv = {"pyramidkv", 0, kve__scored_make_room,
                                                    kve__scored_compress};
static const kve_policy_vtable kve__vt_h2o = {"h2o", 1, kve__h2o_make_room, kve__scored_compress};
static const kve_policy_vtable kve__vt_scorers[] = {
    {"knorm", 0, kve__scored_make_room, kve__scored_compress},
    {"keydiff", 0, kve__scored_make_room, kve__scored_compress},
    {"tova", 0, kve__scored_make_room, kve__scored_compress},
    {"random", 0, kve__scored_make_room, kve__scored_compress},
    {"lagkv", 0, kve__scored_make_room, kve__scored_compress},
    {"observed_attention", 1, kve__scored_make_room, kve__scored_compress},
    {"scorer", 1, kve__scored_make_room, kve__scored_compress},
    {"expected_attention", 0, kve__scored_make_room, kve__scored_compress}};

static const kve_policy_vtable *kve__builtin_vtable(kve_policy_kind kind)
{
    switch (kind) {
    case KVE_POLICY_STREAMINGLLM: return &kve__vt_streaming;
    case KVE_POLICY_SNAPKV: return &kve__vt_snapkv;
    case KVE_POLICY_PYRAMIDKV: return &kve__vt_pyramidkv;
    case KVE_POLICY_H2O: return &kve__vt_h2o;
    case KVE_POLICY_SIMLAYERKV: return &kve__vt_simlayerkv;
    default:
        if (kve__is_scorer_kind(kind)) return &kve__vt_scorers[kind - KVE_POLICY_KNORM];
        return &kve__vt_full;
    }
}

KVE_API kve_result kve_compress(kve_cache *c, int32_t layer)
{
    kve_result r;
    if ((r = kve__check_layer(c, layer)) != KVE_OK) return r;
    if (c->vtable->compress && (r = c->vtable->compress(c, layer, c->vtable_user)) != KVE_OK)
        return r;
    kve__changed(c);
    c->limit[layer] = c->budget[layer]; /* a compressed layer keeps its budget */
    return KVE_OK;
}

KVE_API kve_result kve_compress_with(kve_cache *c, int32_t layer, const kve_policy_config *policy)
{
    kve_config other;
    kve_policy_config own;
    kve__score_source src;
    int other_drops_newest;
    kve_result r;
    if ((r = kve__check_layer(c, layer)) != KVE_OK) return r;
    if (!policy) return KVE_ERROR_NULL_ARGUMENT;
    other = c->cfg;
    other.policy = *policy;
    if ((r = kve__resolve_policy(&other, &other.policy)) != KVE_OK) return r;
    if (!kve__is_selecting(other.policy.kind)) return KVE_ERROR_WRONG_POLICY;
    own = c->cfg.policy;
    c->cfg.policy = other.policy;
    src = kve__policy_source(c);
    other_drops_newest = kve__may_drop_newest(c);
    c->cfg.policy = own;
    /* what the other policy scores from must be recorded by this cache */
    if ((src == KVE__FROM_WINDOW && (c->obs_window == 0 || other.policy.window > c->obs_window)) ||
        (src == KVE__FROM_TOVA && c->obs_window == 0) ||
        ((src == KVE__FROM_ACCUMULATED || src == KVE__FROM_OBSERVED) && !c->scores) ||
        (other.policy.allocation == KVE_ALLOCATION_ADAKV && !c->ada_score))
        return KVE_ERROR_UNSUPPORTED;
    if (other_drops_newest && !kve__may_drop_newest(c)) { /* this cache keeps its newest token */
        if (other.policy.chunk_length > 0) return KVE_ERROR_UNSUPPORTED;
        other.policy.window = 1;
    }
    kve__changed(c);
    c->cfg.policy = other.policy;
    r = kve__select_compress(c, layer, src);
    c->cfg.policy = own;
    kve__window_sum_reset(c, layer);
    return r;
}

KVE_API kve_result kve_compress_chunk(kve_cache *c, int32_t layer, int64_t from)
{
    const kve_policy_config *p;
    int32_t h, target[KVE_MAX_HEADS];
    kve_result r;
    if ((r = kve__check_layer(c, layer)) != KVE_OK) return r;
    p = &c->cfg.policy;
    if (!kve__is_selecting(p->kind)) return KVE_ERROR_WRONG_POLICY;
    if (p->allocation == KVE_ALLOCATION_ADAKV || p->chunk_length > 0) return KVE_ERROR_UNSUPPORTED;
    if (p->compression_ratio <= 0.0 || from < 0 || from > KVE_MAX_POSITION)
        return KVE_ERROR_INVALID_PARAMETER;
    for (h = 0; h < c->cfg.n_kv_heads; h++) {
        const int64_t *pos = kve__pos(c, layer, h);
        int32_t s, m = 0;
        int64_t keep;
        for (s = 0; s < *kve__len(c, layer, h); s++) m += pos[s] >= from;
        keep = (int64_t)((double)m * (1.0 - p->compression_ratio));
        target[h] = keep < 1 ? 1 : (int32_t)keep;
    }
    kve__changed(c);
    c->score_from = from;
    r = kve__shrink_heads(c, layer, target, kve__policy_source(c));
    c->score_from = INT64_MIN;
    kve__window_sum_reset(c, layer);
    return r;
}

KVE_API kve_result kve_compress_all(kve_cache *c)
{
    int32_t l;
    kve_result r;
    if (kve__status(c) != KVE_OK) return kve__status(c);
    for (l = 0; l < c->cfg.n_layers; l++)
        if ((r = kve_compress(c, l)) != KVE_OK) return r;
    return KVE_OK;
}

/* ---- sequence life cycle ---------------------------------------------------------------------- */
/* StreamingLLM post-RoPE pos-shift keeps f32 pre-RoPE copies of the sink keys */
static int kve__keeps_sink_copies(const kve_cache *c)
{
    return kve__pos_shift(c) && c->cfg.key_storage == KVE_KEYS_POST_ROPE && c->sinks > 0;
}

/* reverses slots [lo, hi) of (l, h): vectors and positions (StreamingLLM's ring, no scores) */
static void kve__reverse_slots(kve_cache *c, int32_t l, int32_t h, int32_t lo, int32_t hi)
{
    unsigned char t[KVE_MAX_HEAD_DIM * sizeof(float)];
    int64_t *pos = kve__pos(c, l, h), tp;
    for (hi--; lo < hi; lo++, hi--) {
        memcpy(t, kve__kptr(c, l, h, lo), c->k_row);
        memcpy(kve__kptr(c, l, h, lo), kve__kptr(c, l, h, hi), c->k_row);
        memcpy(kve__kptr(c, l, h, hi), t, c->k_row);
        memcpy(t, kve__vptr(c, l, h, lo), c->v_row);
        memcpy(kve__vptr(c, l, h, lo), kve__vptr(c, l, h, hi), c->v_row);
        memcpy(kve__vptr(c, l, h, hi), t, c->v_row);
        tp = pos[lo]; pos[lo] = pos[hi]; pos[hi] = tp;
    }
}

static float *kve__query_row(const kve_cache *c, int32_t l, size_t at)
{
    return c->queries + ((size_t)l * (size_t)c->obs_window + at) * (size_t)c->cfg.n_heads *
                            (size_t)c->cfg.head_dim;
}

/* reverses recorded queries [lo, hi) of layer l (scratch_q holds one query) */
static void kve__reverse_queries(kve_cache *c, int32_t l, size_t lo, size_t hi)
{
    size_t bytes = (size_t)c->cfg.n_heads * (size_t)c->cfg.head_dim * sizeof(float);
    int64_t *qp = c->query_pos + (size_t)l * (size_t)c->obs_window, tp;
    for (hi--; lo < hi && hi != (size_t)-1; lo++, hi--) {
        memcpy(c->scratch_q, kve__query_row(c, l, lo), bytes);
        memcpy(kve__query_row(c, l, lo), kve__query_row(c, l, hi), bytes);
        memcpy(kve__query_row(c, l, hi), c->scratch_q, bytes);
        tp = qp[lo]; qp[lo] = qp[hi]; qp[hi] = tp;
    }
}

/* recorded queries of layer l in time order at indices 0 .. count-1 (undoing the ring's wrap) */
static int32_t kve__unwrap_queries(kve_cache *c, int32_t l)
{
    size_t w = (size_t)c->obs_window, start;
    if (w == 0) return 0;
    if (c->query_count[l] <= (int64_t)w) return (int32_t)c->query_count[l];
    start = (size_t)(c->query_count[l] % (int64_t)w);
    if (start > 0) { /* rotate left by start: three reversals */
        kve__reverse_queries(c, l, 0, start);
        kve__reverse_queries(c, l, start, w);
        kve__reverse_queries(c, l, 0, w);
    }
    c->query_count[l] = (int64_t)w;
    return (int32_t)w;
}

/* drops the recorded queries at positions [from, to) */
static void kve__drop_queries(kve_cache *c, int32_t l, int64_t from, int64_t to)
{
    size_t bytes = (size_t)c->cfg.n_heads * (size_t)c->cfg.head_dim * sizeof(float);
    int64_t *qp = c->query_pos + (size_t)l * (size_t)c->obs_window;
    int32_t n, i, kept = 0, hit = 0;
    n = c->query_count[l] < c->obs_window ? (int32_t)c->query_count[l] : c->obs_window;
    for (i = 0; i < n; i++) hit |= qp[i] >= from && qp[i] < to; /* any order: just a test */
    if (!hit) return;
    n = kve__unwrap_queries(c, l);
    for (i = 0; i < n; i++) {
        if (qp[i] >= from && qp[i] < to) continue;
        if (kept != i) {
            memcpy(kve__query_row(c, l, (size_t)kept), kve__query_row(c, l, (size_t)i), bytes);
            qp[kept] = qp[i];
        }
        kept++;
    }
    c->query_count[l] = kept;
}

/* newest position held in layer l (-1 if none) */
static int64_t kve__max_position(const kve_cache *c, int32_t l)
{
    int64_t m = -1;
    int32_t h, s;
    for (h = 0; h < c->cfg.n_kv_heads; h++) {
        const int64_t *pos = kve__pos(c, l, h);
        for (s = 0; s < *kve__len(c, l, h); s++) m = pos[s] > m ? pos[s] : m;
    }
    return m;
}

/* H2O's ring of recently stored positions, rebuilt from the newest tokens kept (they are never
   evicted while recent, so they are every head's newest) */
static void kve__rebuild_recent(kve_cache *c, int32_t l)
{
    size_t w = (size_t)c->cfg.policy.window, i;
    int32_t n = *kve__len(c, l, 0), *order = c->scratch_i1, *tmp = c->scratch_i2;
    const int64_t *pos = kve__pos(c, l, 0);
    int64_t *ring = c->recent_pos + (size_t)l * w;
    kve__order_by_position(c, l, 0, order, tmp);
    for (i = 0; i < w; i++) ring[i] = -1;
    for (i = 0; i < w && i < (size_t)n; i++)
        ring[(size_t)((c->stored[l] - 1 - (int64_t)i) % (int64_t)w)] = pos[order[(size_t)n - 1 - i]];
}

static void kve__remove_layer(kve_cache *c, int32_t l, int64_t from, int64_t to)
{
    int32_t Hk = c->cfg.n_kv_heads, S = c->sinks, h, s, fewest = INT32_MAX, any = 0;
    int streaming = c->cfg.policy.kind == KVE_POLICY_STREAMINGLLM;
    if (c->obs_window > 0) kve__drop_queries(c, l, from, to);
    for (h = 0; h < Hk; h++) {
        const int64_t *pos = kve__pos(c, l, h);
        for (s = 0; s < *kve__len(c, l, h); s++) any |= pos[s] >= from && pos[s] < to;
    }
    if (!any) return; /* nothing moves: the layer stays bit for bit as it was */
    if (c->window_sum) c->window_sum_queries[l] = -1; /* the sums are by slot */
    for (h = 0; h < Hk; h++) {
        int32_t *len = kve__len(c, l, h), n = *len, kept = 0, next = c->ring_next[l];
        int64_t *pos = kve__pos(c, l, h);
        /* a wrapped ring: its tokens back in time order from slot S, the oldest first */
        if (streaming && c->stored[l] > (int64_t)n && n > S && next > S) {
            kve__reverse_slots(c, l, h, S, next);
            kve__reverse_slots(c, l, h, next, n);
            kve__reverse_slots(c, l, h, S, n);
        }
        /* stable compaction: the kept tokens keep their order, so storing again gives the same
           slots as a sequence that never held the removed ones */
        for (s = 0; s < n; s++) {
            if (pos[s] >= from && pos[s] < to) continue;
            if (kept != s) kve__move_slot(c, l, h, kept, s);
            kept++;
        }
        for (s = kept; s < n; s++) pos[s] = -1;
        *len = kept;
        if (n - kept < fewest) fewest = n - kept;
    }
    if (streaming) c->ring_next[l] = S;
    c->stored[l] -= fewest; /* never below a head's length */
    if (kve__max_position(c, l) < 0) { /* emptied: a new sequence */
        c->stored[l] = 0;
        if (c->qstat_count) {
            size_t hd = (size_t)c->cfg.n_heads * (size_t)c->cfg.head_dim;
            c->qstat_count[l] = 0;
            memset(c->qstat_sum + (size_t)l * hd, 0, hd * sizeof(double));
            if (c->qstat_outer)
                memset(c->qstat_outer + (size_t)l * hd * (size_t)c->cfg.head_dim, 0,
                       hd * (size_t)c->cfg.head_dim * sizeof(double));
        }
    }
    /* a newest token a selection dropped (kve__may_drop_newest) stays the newest, unless removed */
    if (c->newest[l] < to || kve__max_position(c, l) < 0) c->newest[l] = kve__max_position(c, l);
    if (c->recent_pos) kve__rebuild_recent(c, l);
    c->sink_anchor_done[l] = -2; /* the sinks are re-rotated for their new neighbours */
    kve__update_sinks(c, l);
}

KVE_API kve_result kve_remove(kve_cache *c, int64_t from, int64_t to)
{
    kve_result r;
    int32_t l;
    if ((r = kve__status(c)) != KVE_OK) return r;
    if (from < 0 || to <= from) return KVE_ERROR_POSITION;
    kve__changed(c);
    for (l = 0; l < c->cfg.n_layers; l++) kve__remove_layer(c, l, from, to);
    return KVE_OK;
}

/* would adding delta to the positions in [from, to) keep layer l's positions in order? Tokens and
   recorded queries count; the moved ones must stay in 0 .. KVE_MAX_POSITION. */
static kve_result kve__check_shift(const kve_cache *c, int32_t l, int64_t from, int64_t to,
                                   int64_t delta)
{
    int64_t lo = INT64_MAX, hi = -1, below = -1, above = INT64_MAX;
    const int64_t *qp = c->query_pos + (size_t)l * (size_t)c->obs_window;
    int32_t h, nq, i;
    for (h = 0; h <= c->cfg.n_kv_heads; h++) {
        const int64_t *pos = h < c->cfg.n_kv_heads ? kve__pos(c, l, h) : qp;
        int32_t n = h < c->cfg.n_kv_heads ? *kve__len(c, l, h) : 0;
        if (h == c->cfg.n_kv_heads) {
            nq = c->query_count[l] < c->obs_window ? (int32_t)c->query_count[l] : c->obs_window;
            n = nq;
        }
        for (i = 0; i < n; i++) {
            int64_t p = pos[i];
            if (p >= from && p < to) {
                lo = p < lo ? p : lo;
                hi = p > hi ? p : hi;
            } else if (p < from) {
                below = p > below ? p : below;
            } else {
                above = p < above ? p : above;
            }
        }
    }
    if (hi < 0) return KVE_OK;
    if (lo + delta < 0 || hi > KVE_MAX_POSITION - delta) return KVE_ERROR_SHIFT_ORDER;
    if (delta < 0 && below >= lo + delta) return KVE_ERROR_SHIFT_ORDER;
    if (delta > 0 && above <= hi + delta) return KVE_ERROR_SHIFT_ORDER;
    return KVE_OK;
}

/* post-RoPE keys re-rotated in the buffer; the sinks of pos-shift are rotated from their copies */
static int kve__rerotates(const kve_cache *c, int32_t slot)
{
    return c->cfg.key_storage == KVE_KEYS_POST_ROPE && c->cfg.rope_layout != KVE_ROPE_NONE &&
           !(slot < c->sinks && kve__keeps_sink_copies(c));
}

/* the keys of (l, h) at positions in [from, to) that re-rotation would rewrite must still fit
   their type afterwards: rotation keeps each pair's norm, but f16/q8_0 rounding may have grown it */
static kve_result kve__check_rerotation(const kve_cache *c, int32_t l, int32_t h, int64_t from,
                                        int64_t to)
{
    int32_t s, d = c->cfg.head_dim;
    float x[KVE_MAX_HEAD_DIM];
    if (c->cfg.k_type != KVE_TYPE_F16 && c->cfg.k_type != KVE_TYPE_Q8_0) return KVE_OK;
    for (s = 0; s < *kve__len(c, l, h); s++) {
        int64_t p = kve__pos(c, l, h)[s];
        if (p < from || p >= to || !kve__rerotates(c, s)) continue;
        kve__decode(c->cfg.k_type, kve__kptr(c, l, h, s), d, x);
        if (!kve__fits(c->cfg.k_type, kve__max_magnitude(&c->cfg, x, d, c->cfg.rope_dims)))
            return KVE_ERROR_OUT_OF_TYPE_RANGE;
    }
    return KVE_OK;
}

KVE_API kve_result kve_rerotate(kve_cache *c, int32_t l)
{
    int32_t h, d = c->cfg.head_dim, longest = 0;
    float cs[KVE_MAX_HEAD_DIM / 2], sn[KVE_MAX_HEAD_DIM / 2], x[KVE_MAX_HEAD_DIM];
    size_t cap;
    kve_result r;
    if ((r = kve__check_layer(c, l)) != KVE_OK) return r;
    if (c->cfg.policy.kind == KVE_POLICY_STREAMINGLLM) return KVE_ERROR_WRONG_POLICY;
    cap = (size_t)c->cfg.capacity;
    for (h = 0; h < c->cfg.n_kv_heads; h++)
        if ((r = kve__check_rerotation(c, l, h, 0, INT64_MAX)) != KVE_OK) return r;
    kve__changed(c);
    for (h = 0; h < c->cfg.n_kv_heads; h++) {
        int32_t n = *kve__len(c, l, h), rank;
        int32_t *order = c->scratch_i1 + (size_t)h * cap, *tmp = c->scratch_i2 + (size_t)h * cap;
        int64_t *pos = kve__pos(c, l, h);
        kve__order_by_position(c, l, h, order, tmp);
        for (rank = 0; rank < n; rank++) {
            int32_t slot = order[rank];
            int64_t delta = (int64_t)rank - pos[slot];
            pos[slot] = rank;
            if (delta == 0 || !kve__rerotates(c, slot)) continue;
            kve__angles(&c->cfg, c->freq, delta, cs, sn); /* R(p + delta) = R(delta) R(p) */
            kve__decode(c->cfg.k_type, kve__kptr(c, l, h, slot), d, x);
            kve__rotate_cs(&c->cfg, x, cs, sn);
            kve__encode(c->cfg.k_type, x, d, kve__kptr(c, l, h, slot));
        }
        if (n > longest) longest = n;
    }
    c->newest[l] = longest - 1;
    /* the recorded queries and what was summed from them are by the old positions */
    c->query_count[l] = 0;
    kve__window_sum_reset(c, l);
    if (c->recent_pos) kve__rebuild_recent(c, l);
    return KVE_OK;
}

KVE_API kve_result kve_shift(kve_cache *c, int64_t from, int64_t to, int64_t delta)
{
    kve_result r;
    int32_t l, h, s, d, i, nq;
    float cs[KVE_MAX_HEAD_DIM / 2], sn[KVE_MAX_HEAD_DIM / 2], x[KVE_MAX_HEAD_DIM];
    if ((r = kve__status(c)) != KVE_OK) return r;
    if (from < 0 || to <= from) return KVE_ERROR_POSITION;
    if (delta < -KVE_MAX_POSITION || delta > KVE_MAX_POSITION) return KVE_ERROR_SHIFT_ORDER;
    if (delta == 0) return KVE_OK;
    d = c->cfg.head_dim;
    for (l = 0; l < c->cfg.n_layers; l++)
        if ((r = kve__check_shift(c, l, from, to, delta)) != KVE_OK) return r;
    for (l = 0; l < c->cfg.n_layers; l++)
        for (h = 0; h < c->cfg.n_kv_heads; h++)
            if ((r = kve__check_rerotation(c, l, h, from, to)) != KVE_OK) return r;
    kve__changed(c);
    kve__angles(&c->cfg, c->freq, delta, cs, sn); /* R(p + delta) = R(delta) R(p) */
    for (l = 0; l < c->cfg.n_layers; l++) {
        int64_t *qp = c->query_pos + (size_t)l * (size_t)c->obs_window;
        int moved = 0;
        for (h = 0; h < c->cfg.n_kv_heads; h++) {
            int64_t *pos = kve__pos(c, l, h);
            for (s = 0; s < *kve__len(c, l, h); s++) {
                if (pos[s] < from || pos[s] >= to) continue;
                pos[s] += delta;
                moved = 1;
                if (!kve__rerotates(c, s)) continue;
                kve__decode(c->cfg.k_type, kve__kptr(c, l, h, s), d, x);
                kve__rotate_cs(&c->cfg, x, cs, sn);
                kve__encode(c->cfg.k_type, x, d, kve__kptr(c, l, h, s));
            }
        }
        nq = c->query_count[l] < c->obs_window ? (int32_t)c->query_count[l] : c->obs_window;
        for (i = 0; i < nq; i++)
            if (qp[i] >= from && qp[i] < to) qp[i] += delta;
        if (c->recent_pos)
            for (i = 0; i < c->cfg.policy.window; i++) {
                int64_t *p = c->recent_pos + (size_t)l * (size_t)c->cfg.policy.window + (size_t)i;
                if (*p >= from && *p < to) *p += delta;
            }
        if (c->newest[l] >= from && c->newest[l] < to) c->newest[l] += delta; /* held or not */
        if (!moved) continue;
        if (kve__max_position(c, l) > c->newest[l]) c->newest[l] = kve__max_position(c, l);
        c->sink_anchor_done[l] = -2;
        kve__update_sinks(c, l);
    }
    return KVE_OK;
}

/* resolved configurations that give the same bookkeeping and meaning (n_threads and the custom
   policy's user pointer may differ) */
static int kve__same_config(const kve_config *a, const kve_config *b)
{
    const kve_policy_config *p = &a->policy, *q = &b->policy;
    return a->n_layers == b->n_layers && a->n_heads == b->n_heads &&
           a->n_kv_heads == b->n_kv_heads && a->head_dim == b->head_dim &&
           a->capacity == b->capacity && a->rope_layout == b->rope_layout &&
           a->rope_theta == b->rope_theta && a->rope_dims == b->rope_dims &&
           a->rope_linear_factor == b->rope_linear_factor && a->key_storage == b->key_storage &&
           a->k_type == b->k_type && a->v_type == b->v_type && p->kind == q->kind &&
           p->budget == q->budget && p->window == q->window && p->kernel == q->kernel &&
           p->pooling == q->pooling && p->gqa == q->gqa && p->beta == q->beta &&
           p->sinks == q->sinks && p->pos_shift == q->pos_shift && p->decode == q->decode &&
           p->evict_batch == q->evict_batch && p->custom == q->custom &&
           p->allocation == q->allocation && p->compression_ratio == q->compression_ratio &&
           p->alpha_safeguard == q->alpha_safeguard && p->lag_size == q->lag_size &&
           p->chunk_length == q->chunk_length && p->cross_scoring == q->cross_scoring &&
           p->seed == q->seed && p->scorer == q->scorer &&
           p->n_future_positions == q->n_future_positions &&
           p->no_covariance == q->no_covariance && p->no_vnorm == q->no_vnorm &&
           p->epsilon == q->epsilon && p->lazy_threshold == q->lazy_threshold &&
           p->n_recent == q->n_recent;
}

static int kve__regions_overlap(const void *a, size_t an, const void *b, size_t bn)
{
    uintptr_t a0 = (uintptr_t)a, b0 = (uintptr_t)b;
    return a0 < kve__region_end(b0, bn, 1) && b0 < kve__region_end(a0, an, 1);
}

KVE_API kve_result kve_cache_copy(kve_cache *dst, const kve_cache *src)
{
    kve_result r;
    int32_t l, h, s;
    size_t state;
    if ((r = kve__status(dst)) != KVE_OK || (r = kve__status(src)) != KVE_OK) return r;
    if (dst == src) return KVE_OK;
    if (!kve__same_config(&dst->cfg, &src->cfg)) return KVE_ERROR_STATE_CONFIG;
    /* the bookkeeping from `limit` up to the scratch: one block, laid out alike by the same plan */
    state = (size_t)(KVE__CAST(const unsigned char *, src->scratch_q) -
                     KVE__CAST(const unsigned char *, src->limit));
    if (kve__regions_overlap(dst->k, dst->k_bytes, src->k, src->k_bytes) ||
        kve__regions_overlap(dst->k, dst->k_bytes, src->v, src->v_bytes) ||
        kve__regions_overlap(dst->v, dst->v_bytes, src->k, src->k_bytes) ||
        kve__regions_overlap(dst->v, dst->v_bytes, src->v, src->v_bytes) ||
        kve__regions_overlap(dst->limit, state, src->limit, state) ||
        kve__regions_overlap(dst->k, dst->k_bytes, src->limit, state) ||
        kve__regions_overlap(dst->v, dst->v_bytes, src->limit, state))
        return KVE_ERROR_OVERLAPPING_BUFFERS;
    kve__changed(dst);
    for (l = 0; l < src->cfg.n_layers; l++) /* the layouts may differ: row by row */
        for (h = 0; h < src->cfg.n_kv_heads; h++)
            for (s = 0; s < *kve__len(src, l, h); s++) {
                memcpy(kve__kptr(dst, l, h, s), kve__kptr(src, l, h, s), src->k_row);
                memcpy(kve__vptr(dst, l, h, s), kve__vptr(src, l, h, s), src->v_row);
            }
    memcpy(dst->limit, src->limit, state);
    return KVE_OK;
}

/* ---- saved state ------------------------------------------------------------------------------ */
/* One walk over the state describes the format for all four uses: counting its bytes, saving,
   checking a blob (reading only) and loading a checked blob. Every integer and float is little-
   endian; K/V rows are stored at their type, each element little-endian. */
#define KVE__STATE_VERSION 3u
#define KVE__STATE_HEADER 24 /* magic (8), version (4), reserved (4), total bytes (8) */

typedef enum kve__io_mode { KVE__IO_SIZE, KVE__IO_SAVE, KVE__IO_CHECK, KVE__IO_LOAD } kve__io_mode;

typedef struct kve__io {
    kve__io_mode mode;
    unsigned char *out;        /* SAVE */
    const unsigned char *in;   /* CHECK, LOAD */
    size_t at, size;
    int bad, other_config;     /* CHECK: inconsistent or truncated; another configuration */
} kve__io;

static const unsigned char kve__state_magic[8] = {'K', 'V', 'E', 'V', 'I', 'C', 'T', 'S'};

static int kve__little_endian(void)
{
    const uint16_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

/* n bytes at the cursor: written from p (SAVE), read into p (CHECK, LOAD) */
static void kve__io_bytes(kve__io *io, void *p, size_t n)
{
    if (io->bad || n > io->size - io->at) {
        io->bad = 1;
        return;
    }
    if (io->mode == KVE__IO_SAVE) memcpy(io->out + io->at, p, n);
    else if (io->mode != KVE__IO_SIZE) memcpy(p, io->in + io->at, n);
    io->at += n;
}

/* a little-endian integer of `bytes` bytes: v is written, or the value read is returned */
static uint64_t kve__io_uint(kve__io *io, uint64_t v, int bytes)
{
    unsigned char b[8];
    int i;
    for (i = 0; i < bytes; i++) b[i] = (unsigned char)(v >> (8 * i));
    kve__io_bytes(io, b, (size_t)bytes);
    if (io->mode == KVE__IO_CHECK || io->mode == KVE__IO_LOAD) {
        if (io->bad) return 0;
        for (v = 0, i = bytes - 1; i >= 0; i--) v = (v << 8) | b[i];
    }
    return v;
}

static int64_t kve__io_i64(kve__io *io, int64_t v) { return (int64_t)kve__io_uint(io, (uint64_t)v, 8); }
static int32_t kve__io_i32(kve__io *io, int32_t v)
{
    return (int32_t)(uint32_t)kve__io_uint(io, (uint64_t)(uint32_t)v, 4);
}

/* n floats: written from x (SAVE), or read into x (LOAD; CHECK: x is scratch) and checked finite */
static void kve__io_floats(kve__io *io, float *x, size_t n)
{
    size_t i;
    for (i = 0; i < n && !io->bad; i++) {
        uint32_t u = 0;
        float f;
        if (io->mode == KVE__IO_SAVE || io->mode == KVE__IO_SIZE) memcpy(&u, x + i, 4);
        u = (uint32_t)kve__io_uint(io, u, 4);
        memcpy(&f, &u, 4);
        if (io->mode == KVE__IO_CHECK && !kve__finite(&f, 1)) io->bad = 1;
        if (io->mode == KVE__IO_LOAD || io->mode == KVE__IO_CHECK) x[i] = f;
    }
}

/* a row of n values at type t between native byte order and little-endian (its own inverse) */
static void kve__row_le(kve_type t, const unsigned char *in, unsigned char *out, size_t bytes)
{
    size_t i, elem = t == KVE_TYPE_F32 ? 4 : 2, step = t == KVE_TYPE_Q8_0 ? KVE__Q8_BYTES : elem;
    if (kve__little_endian()) {
        memcpy(out, in, bytes);
        return;
    }
    memcpy(out, in, bytes);
    for (i = 0; i + elem <= bytes; i += step) { /* q8_0: only each block's f16 scale swaps */
        size_t j;
        for (j = 0; j < elem; j++) out[i + j] = in[i + elem - 1 - j];
    }
}

/* one stored vector: saved, checked (it must decode to finite floats) or loaded */
static void kve__io_row(kve__io *io, kve_type t, int32_t d, size_t bytes, unsigned char *row)
{
    unsigned char le[KVE_MAX_HEAD_DIM * sizeof(float)], nat[KVE_MAX_HEAD_DIM * sizeof(float)];
    float x[KVE_MAX_HEAD_DIM];
    if (io->mode == KVE__IO_SAVE) kve__row_le(t, row, le, bytes);
    kve__io_bytes(io, le, bytes);
    if (io->bad) return;
    if (io->mode == KVE__IO_LOAD) kve__row_le(t, le, row, bytes);
    if (io->mode != KVE__IO_CHECK) return;
    kve__row_le(t, le, nat, bytes);
    kve__decode(t, nat, d, x);
    if (!kve__finite(x, (size_t)d)) io->bad = 1;
}

/* the configuration, as 36 integers (doubles by their bits); CHECK notes any difference */
static void kve__io_config(kve__io *io, const kve_config *c)
{
    const kve_policy_config *p = &c->policy;
    uint64_t theta, factor, ratio, alpha, epsilon, lazy;
    int64_t mine[36], i;
    memcpy(&theta, &c->rope_theta, 8);
    memcpy(&factor, &c->rope_linear_factor, 8);
    memcpy(&ratio, &p->compression_ratio, 8);
    memcpy(&alpha, &p->alpha_safeguard, 8);
    memcpy(&epsilon, &p->epsilon, 8);
    memcpy(&lazy, &p->lazy_threshold, 8);
    mine[0] = c->n_layers; mine[1] = c->n_heads; mine[2] = c->n_kv_heads; mine[3] = c->head_dim;
    mine[4] = c->capacity; mine[5] = c->rope_layout; mine[6] = (int64_t)theta;
    mine[7] = c->rope_dims; mine[8] = (int64_t)factor; mine[9] = c->key_storage;
    mine[10] = c->k_type; mine[11] = c->v_type; mine[12] = p->kind; mine[13] = p->budget;
    mine[14] = p->window; mine[15] = p->kernel; mine[16] = p->pooling; mine[17] = p->gqa;
    mine[18] = p->beta; mine[19] = p->sinks; mine[20] = p->pos_shift; mine[21] = p->decode;
    mine[22] = p->evict_batch; mine[23] = p->allocation; mine[24] = (int64_t)ratio;
    mine[25] = (int64_t)alpha; mine[26] = p->lag_size; mine[27] = p->chunk_length;
    mine[28] = p->cross_scoring; mine[29] = (int64_t)p->seed;
    mine[30] = p->n_future_positions; mine[31] = p->no_covariance; mine[32] = p->no_vnorm;
    mine[33] = (int64_t)epsilon; mine[34] = (int64_t)lazy; mine[35] = p->n_recent;
    for (i = 0; i < 36; i++)
        if (kve__io_i64(io, mine[i]) != mine[i] && !io->bad) io->other_config = 1;
}

static int kve__ring_ok(int32_t S, int32_t n, int32_t B, int32_t next, int64_t stored,
                        const int64_t *pos);

/* a layer's bookkeeping and rows. In CHECK mode values are read into scratch and checked against
   the same invariants kve_check() enforces; nothing in the cache is written. */
static void kve__io_layer(kve_cache *c, kve__io *io, int32_t l)
{
    int32_t Hk = c->cfg.n_kv_heads, G = c->group, S = c->sinks, d = c->cfg.head_dim;
    int32_t cap = c->cfg.capacity, h, s, n0 = 0, limit, ring_next, i;
    int64_t newest, stored, top = -1;
    int check = io->mode == KVE__IO_CHECK, load = io->mode == KVE__IO_LOAD;
    int streaming = c->cfg.policy.kind == KVE_POLICY_STREAMINGLLM;
    /* CHECK: head 0's positions and the current head's, in scratch (Hk * capacity int64) */
    int64_t *pos0 = KVE__CAST(int64_t *, KVE__CAST(void *, c->scratch_f3));
    int64_t *posh = Hk > 1 ? pos0 + cap : pos0;
    limit = kve__io_i32(io, c->limit[l]);
    newest = kve__io_i64(io, c->newest[l]);
    stored = kve__io_i64(io, c->stored[l]);
    ring_next = kve__io_i32(io, c->ring_next[l]);
    if (io->bad) return;
    /* a layer is kept within its budget once attended, within the capacity before (StreamingLLM
       always within its budget) */
    if (check && ((limit != c->budget[l] && (streaming || limit != cap)) || newest < -1 ||
                  newest > KVE_MAX_POSITION ||
                  stored < 0 || stored > KVE_MAX_POSITION + 1 ||
                  (streaming ? (ring_next < S || ring_next >= c->budget[l]) : ring_next != S))) {
        io->bad = 1;
        return;
    }
    if (load) {
        c->limit[l] = limit; c->newest[l] = newest; c->stored[l] = stored;
        c->ring_next[l] = ring_next;
        c->sink_anchor_done[l] = -2;
    }
    for (h = 0; h < Hk && !io->bad; h++) {
        int32_t n = kve__io_i32(io, *kve__len(c, l, h));
        int64_t *pos = kve__pos(c, l, h), *dst = check ? (h == 0 ? pos0 : posh) : pos;
        if (io->bad || (check && (n < 0 || n > cap || (int64_t)n > stored ||
                                  (streaming && h > 0 && n != n0) || (streaming && n > limit)))) {
            io->bad = 1;
            return;
        }
        if (h == 0) n0 = n;
        for (s = 0; s < n && !io->bad; s++) {
            int64_t p = kve__io_i64(io, pos[s]);
            if (check && (p < 0 || p > newest || (streaming && h > 0 && p != pos0[s]))) io->bad = 1;
            if (check || load) dst[s] = p;
            top = p > top ? p : top;
        }
        if (io->bad) return;
        if (check) {
            int32_t *order = c->scratch_i1, *tmp = c->scratch_i2;
            kve__order_positions(dst, n, order, tmp);
            for (s = 1; s < n; s++)
                if (dst[order[s]] == dst[order[s - 1]]) io->bad = 1;
            if (streaming && h == 0 && !kve__ring_ok(S, n, c->budget[l], ring_next, stored, dst))
                io->bad = 1;
        }
        if (load) {
            for (s = n; s < cap; s++) pos[s] = -1;
            *kve__len(c, l, h) = n;
        }
        for (s = 0; s < n; s++) kve__io_row(io, c->cfg.k_type, d, c->k_row, kve__kptr(c, l, h, s));
        for (s = 0; s < n; s++) kve__io_row(io, c->cfg.v_type, d, c->v_row, kve__vptr(c, l, h, s));
        if (kve__keeps_sink_copies(c))
            for (s = 0; s < S && s < n; s++) {
                float *x = check ? c->scratch_q : kve__sink_key(c, l, h, s);
                kve__io_floats(io, x, (size_t)d);
                /* a sink is re-rotated into the K buffer: it must fit the key type there */
                if (check && !io->bad &&
                    !kve__fits(c->cfg.k_type, kve__max_magnitude(&c->cfg, x, d, c->cfg.rope_dims)))
                    io->bad = 1;
            }
        if (c->scores)
            for (i = 0; i < G; i++)
                kve__io_floats(io, check ? c->scratch_f1 : kve__score_row(c, l, h * G + i), (size_t)n);
    }
    if (io->bad) return;
    /* the newest token is held, or none (-1), unless the policy may drop it */
    if (check && (top > newest || (top != newest && !kve__may_drop_newest(c)))) io->bad = 1;
    if (c->obs_window > 0) {
        size_t hd = (size_t)c->cfg.n_heads * (size_t)d;
        int32_t nq = kve__io_i32(io, c->query_count[l] < c->obs_window ? (int32_t)c->query_count[l]
                                                                         : c->obs_window);
        int64_t prev = -1;
        if (io->bad || (check && (nq < 0 || nq > c->obs_window))) {
            io->bad = 1;
            return;
        }
        for (i = 0; i < nq && !io->bad; i++) {
            /* saved in time order; loaded unwrapped, at 0 .. nq-1 */
            size_t at = load || check ? (size_t)i
                                      : (size_t)((c->query_count[l] - nq + i) % c->obs_window);
            int64_t *qp = c->query_pos + (size_t)l * (size_t)c->obs_window + at;
            int64_t p = kve__io_i64(io, *qp);
            if (check && (p <= prev || p > KVE_MAX_POSITION)) io->bad = 1;
            prev = p;
            if (load) *qp = p;
            kve__io_floats(io, check ? c->scratch_q : kve__query_row(c, l, at), hd);
        }
        if (load) c->query_count[l] = nq;
    }
    if (c->recent_pos)
        for (i = 0; i < c->cfg.policy.window && !io->bad; i++) {
            int64_t *rp = c->recent_pos + (size_t)l * (size_t)c->cfg.policy.window + i;
            int64_t p = kve__io_i64(io, *rp);
            if (check && (p < -1 || p > newest)) io->bad = 1;
            if (load) *rp = p;
        }
    if (c->qstat_count) { /* checked finite and a count >= 0; read into place only on LOAD */
        size_t hd = (size_t)c->cfg.n_heads * (size_t)d, n = c->qstat_outer ? hd * (size_t)d : 0, k;
        int64_t count = kve__io_i64(io, c->qstat_count[l]);
        if (check && count < 0) io->bad = 1;
        if (load) c->qstat_count[l] = count;
        for (k = 0; k < hd + n && !io->bad; k++) {
            double *x = k < hd ? c->qstat_sum + (size_t)l * hd + k
                               : c->qstat_outer + (size_t)l * hd * (size_t)d + (k - hd);
            uint64_t bits = 0;
            double v;
            memcpy(&bits, x, 8);
            bits = kve__io_uint(io, bits, 8);
            memcpy(&v, &bits, 8);
            if (check && !(v > -1e300 && v < 1e300)) io->bad = 1;
            if (load) *x = v;
        }
    }
}

static kve_result kve__state_walk(kve_cache *c, kve__io *io)
{
    int32_t l;
    kve__io_config(io, &c->cfg);
    if (io->bad) return KVE_ERROR_STATE_CORRUPT;
    if (io->other_config) return KVE_ERROR_STATE_CONFIG;
    for (l = 0; l < c->cfg.n_layers && !io->bad; l++) kve__io_layer(c, io, l);
    return io->bad ? KVE_ERROR_STATE_CORRUPT : KVE_OK;
}

/* a 64-bit multiply-xor hash over little-endian words: any single changed word changes it */
static uint64_t kve__checksum(const unsigned char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325u;
    size_t i;
    int j;
    for (i = 0; i + 8 <= n; i += 8) {
        uint64_t w = 0;
        for (j = 7; j >= 0; j--) w = (w << 8) | p[i + (size_t)j];
        h = (h ^ w) * 0x100000001b3u;
    }
    for (; i < n; i++) h = (h ^ p[i]) * 0x100000001b3u;
    return h;
}

static void kve__put_le(unsigned char *p, uint64_t v, int bytes)
{
    int i;
    for (i = 0; i < bytes; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t kve__get_le(const unsigned char *p, int bytes)
{
    uint64_t v = 0;
    int i;
    for (i = bytes - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

KVE_API kve_result kve_state_size(const kve_cache *c, size_t *bytes)
{
    kve_result r;
    kve__io io;
    if (!bytes) return KVE_ERROR_NULL_ARGUMENT;
    *bytes = 0;
    if ((r = kve__status(c)) != KVE_OK) return r;
    memset(&io, 0, sizeof io);
    io.mode = KVE__IO_SIZE;
    io.at = KVE__STATE_HEADER;
    io.size = SIZE_MAX - 8;
    if ((r = kve__state_walk(KVE__UNCONST(kve_cache *, c), &io)) != KVE_OK) return KVE_ERROR_SIZE_OVERFLOW;
    *bytes = io.at + 8; /* the checksum */
    return KVE_OK;
}

KVE_API kve_result kve_state_save(const kve_cache *c, void *buf, size_t bytes, size_t *written)
{
    kve_result r;
    kve__io io;
    size_t total;
    unsigned char *out = KVE__CAST(unsigned char *, buf);
    if (written) *written = 0;
    if ((r = kve_state_size(c, &total)) != KVE_OK) return r;
    if (!buf) return KVE_ERROR_NULL_ARGUMENT;
    if (bytes < total) return KVE_ERROR_BUFFER_TOO_SMALL;
    memcpy(out, kve__state_magic, 8);
    kve__put_le(out + 8, KVE__STATE_VERSION, 4);
    kve__put_le(out + 12, 0, 4);
    kve__put_le(out + 16, (uint64_t)total, 8);
    memset(&io, 0, sizeof io);
    io.mode = KVE__IO_SAVE;
    io.out = out;
    io.at = KVE__STATE_HEADER;
    io.size = total - 8;
    /* the walk only reads the cache when saving */
    if ((r = kve__state_walk(KVE__UNCONST(kve_cache *, c), &io)) != KVE_OK) return r;
    kve__put_le(out + total - 8, kve__checksum(out, total - 8), 8);
    if (written) *written = total;
    return KVE_OK;
}

KVE_API kve_result kve_state_load(kve_cache *c, const void *buf, size_t bytes)
{
    kve_result r;
    kve__io io;
    int32_t l;
    const unsigned char *in = KVE__CAST(const unsigned char *, buf);
    if ((r = kve__status(c)) != KVE_OK) return r;
    if (!buf) return KVE_ERROR_NULL_ARGUMENT;
    if (bytes < 8 || memcmp(in, kve__state_magic, 8) != 0) return KVE_ERROR_STATE_FORMAT;
    if (bytes < KVE__STATE_HEADER + 8) return KVE_ERROR_STATE_CORRUPT;
    if (kve__get_le(in + 8, 4) != KVE__STATE_VERSION) return KVE_ERROR_STATE_FORMAT;
    if (kve__get_le(in + 12, 4) != 0 || kve__get_le(in + 16, 8) != (uint64_t)bytes ||
        kve__get_le(in + bytes - 8, 8) != kve__checksum(in, bytes - 8))
        return KVE_ERROR_STATE_CORRUPT;
    /* first pass: read and check everything, writing nothing but scratch */
    memset(&io, 0, sizeof io);
    io.mode = KVE__IO_CHECK;
    io.in = in;
    io.at = KVE__STATE_HEADER;
    io.size = bytes - 8;
    if ((r = kve__state_walk(c, &io)) != KVE_OK) return r;
    if (io.at != io.size) return KVE_ERROR_STATE_CORRUPT;
    /* second pass: the same walk, writing */
    kve__changed(c);
    io.mode = KVE__IO_LOAD;
    io.at = KVE__STATE_HEADER;
    if ((r = kve__state_walk(c, &io)) != KVE_OK) return r; /* cannot fail after the check */
    for (l = 0; l < c->sinks; l++) c->sink_angle_pos[l] = -1;
    for (l = 0; l < c->cfg.n_layers; l++) {
        kve__update_sinks(c, l);
        if (c->window_sum) c->window_sum_queries[l] = -1; /* not saved: recomputed once */
    }
    return KVE_OK;
}

/* ---- inspection --------------------------------------------------------------------------- */
static int kve__in_range(const kve_cache *c, int32_t l, int32_t h)
{
    return kve__valid(c) && l >= 0 && l < c->cfg.n_layers && h >= 0 && h < c->cfg.n_kv_heads;
}

KVE_API int32_t kve_length(const kve_cache *c, int32_t l, int32_t h)
{
    return kve__in_range(c, l, h) ? *kve__len(c, l, h) : -1;
}

KVE_API int64_t kve_slot_position(const kve_cache *c, int32_t l, int32_t h, int32_t s)
{
    if (!kve__in_range(c, l, h) || s < 0 || s >= *kve__len(c, l, h)) return -1;
    return kve__pos(c, l, h)[s];
}

KVE_API void *kve_key(const kve_cache *c, int32_t l, int32_t h, int32_t s)
{
    if (!kve__in_range(c, l, h) || s < 0 || s >= c->cfg.capacity) return NULL;
    return kve__kptr(c, l, h, s);
}

KVE_API void *kve_value(const kve_cache *c, int32_t l, int32_t h, int32_t s)
{
    if (!kve__in_range(c, l, h) || s < 0 || s >= c->cfg.capacity) return NULL;
    return kve__vptr(c, l, h, s);
}

KVE_API kve_result kve_read_key(const kve_cache *c, int32_t l, int32_t h, int32_t s, float *out)
{
    if (kve__status(c) != KVE_OK) return kve__status(c);
    if (!out) return KVE_ERROR_NULL_ARGUMENT;
    if (!kve__in_range(c, l, h) || s < 0 || s >= c->cfg.capacity) return KVE_ERROR_INDEX_OUT_OF_RANGE;
    kve__decode(c->cfg.k_type, kve__kptr(c, l, h, s), c->cfg.head_dim, out);
    return KVE_OK;
}

KVE_API kve_result kve_read_value(const kve_cache *c, int32_t l, int32_t h, int32_t s, float *out)
{
    if (kve__status(c) != KVE_OK) return kve__status(c);
    if (!out) return KVE_ERROR_NULL_ARGUMENT;
    if (!kve__in_range(c, l, h) || s < 0 || s >= c->cfg.capacity) return KVE_ERROR_INDEX_OUT_OF_RANGE;
    kve__decode(c->cfg.v_type, kve__vptr(c, l, h, s), c->cfg.head_dim, out);
    return KVE_OK;
}

KVE_API kve_result kve_read_rotated_key(const kve_cache *c, int32_t l, int32_t h, int32_t s,
                                        float *out)
{
    if (kve__status(c) != KVE_OK) return kve__status(c);
    if (!out) return KVE_ERROR_NULL_ARGUMENT;
    if (!kve__in_range(c, l, h) || s < 0 || s >= *kve__len(c, l, h)) return KVE_ERROR_INDEX_OUT_OF_RANGE;
    kve__rotated_key(c, l, h, s, out);
    return KVE_OK;
}

KVE_API const float *kve_recorded_query(const kve_cache *c, int32_t l, int32_t age, int64_t *pos)
{
    size_t w, at;
    int64_t held;
    if (!kve__valid(c) || l < 0 || l >= c->cfg.n_layers || age < 0) return NULL;
    w = (size_t)c->obs_window;
    held = c->query_count[l] < (int64_t)w ? c->query_count[l] : (int64_t)w;
    if (age >= held) return NULL;
    at = (size_t)((c->query_count[l] - 1 - age) % (int64_t)w);
    if (pos) *pos = c->query_pos[(size_t)l * w + at];
    return c->queries + ((size_t)l * w + at) * (size_t)c->cfg.n_heads * (size_t)c->cfg.head_dim;
}

KVE_API float *kve_scores(const kve_cache *c, int32_t l, int32_t head)
{
    if (!kve__valid(c) || !c->scores || l < 0 || l >= c->cfg.n_layers || head < 0 ||
        head >= c->cfg.n_heads)
        return NULL;
    return kve__score_row(c, l, head);
}

KVE_API int32_t kve_layer_budget(const kve_cache *c, int32_t l)
{
    if (!kve__valid(c) || l < 0 || l >= c->cfg.n_layers) return -1;
    return c->budget[l];
}

KVE_API int64_t kve_newest_position(const kve_cache *c, int32_t l)
{
    if (!kve__valid(c) || l < 0 || l >= c->cfg.n_layers) return -1;
    return c->newest[l];
}

KVE_API const kve_config *kve_cache_config(const kve_cache *c)
{
    return kve__valid(c) ? &c->cfg : NULL;
}

KVE_API size_t kve_layer_bytes(const kve_cache *c, int32_t l)
{
    size_t n = 0;
    int32_t h;
    if (!kve__valid(c) || l < 0 || l >= c->cfg.n_layers) return 0;
    for (h = 0; h < c->cfg.n_kv_heads; h++) n += (size_t)*kve__len(c, l, h);
    return n * (c->k_row + c->v_row);
}

KVE_API size_t kve_bytes_in_use(const kve_cache *c)
{
    size_t n = 0;
    int32_t l;
    if (!kve__valid(c)) return 0;
    for (l = 0; l < c->cfg.n_layers; l++) n += kve_layer_bytes(c, l);
    return n;
}

/* StreamingLLM: the sinks are the oldest tokens, and the ring's next slot holds the oldest recent
   token once the ring has wrapped (before, the recent slots fill in order from slot `sinks`) */
static int kve__ring_ok(int32_t S, int32_t n, int32_t B, int32_t next, int64_t stored,
                        const int64_t *pos)
{
    int32_t s;
    int wrapped = stored > (int64_t)n;
    if (next < S || next >= B || next < 0 || (S >= B && next != S)) return 0;
    if (!wrapped && n > S && next != S) return 0;
    for (s = 1; s < n && s < S; s++)
        if (pos[s] <= pos[s - 1]) return 0;
    for (s = S; s < n; s++) {
        if (S > 0 && pos[s] <= pos[S - 1]) return 0;
        if (wrapped && next < n && pos[s] < pos[next]) return 0;
    }
    if (!wrapped)
        for (s = S + 1; s < n; s++)
            if (pos[s] <= pos[s - 1]) return 0;
    return 1;
}

static kve_result kve__check_ring(const kve_cache *c, int32_t l)
{
    return kve__ring_ok(c->sinks, *kve__len(c, l, 0), c->budget[l], c->ring_next[l], c->stored[l],
                        kve__pos(c, l, 0))
               ? KVE_OK
               : KVE_ERROR_CORRUPT;
}

KVE_API kve_result kve_check(kve_cache *c)
{
    int32_t l, h, s, Hk;
    size_t cap;
    if (kve__status(c) != KVE_OK) return kve__status(c);
    Hk = c->cfg.n_kv_heads;
    cap = (size_t)c->cfg.capacity;
    for (l = 0; l < c->cfg.n_layers; l++) {
        for (h = 0; h < Hk; h++) {
            int32_t n = *kve__len(c, l, h);
            const int64_t *pos = kve__pos(c, l, h);
            int32_t *order = c->scratch_i1, *tmp = c->scratch_i2;
            if (n < 0 || n > c->cfg.capacity) return KVE_ERROR_CORRUPT;
            if ((int64_t)n > c->stored[l]) return KVE_ERROR_CORRUPT;
            for (s = 0; s < n; s++)
                if (pos[s] < 0 || pos[s] > c->newest[l]) return KVE_ERROR_CORRUPT;
            for (s = n; s < (int32_t)cap; s++)
                if (pos[s] != -1) return KVE_ERROR_CORRUPT;
            kve__order_by_position(c, l, h, order, tmp);
            for (s = 1; s < n; s++)
                if (pos[order[s]] == pos[order[s - 1]]) return KVE_ERROR_CORRUPT;
            if (c->cfg.policy.kind == KVE_POLICY_STREAMINGLLM) {
                /* every head holds the same tokens; the first `sinks` stored stay in slots 0.. */
                const int64_t *pos0 = kve__pos(c, l, 0);
                if (n != *kve__len(c, l, 0)) return KVE_ERROR_CORRUPT;
                for (s = 0; s < n; s++)
                    if (pos[s] != pos0[s]) return KVE_ERROR_CORRUPT;
                if (n > c->limit[l]) return KVE_ERROR_CORRUPT;
                if (h == 0 && kve__check_ring(c, l) != KVE_OK) return KVE_ERROR_CORRUPT;
            }
        }
        /* the newest token is kept (after kve_remove: the newest kept one), -1 when none is */
        if (kve__max_position(c, l) > c->newest[l] ||
            (kve__max_position(c, l) != c->newest[l] && !kve__may_drop_newest(c)))
            return KVE_ERROR_CORRUPT;
        if (c->limit[l] != c->budget[l] &&
            (c->cfg.policy.kind == KVE_POLICY_STREAMINGLLM || c->limit[l] != c->cfg.capacity))
            return KVE_ERROR_CORRUPT;
    }
    return KVE_OK;
}

#if defined(__clang__)
#pragma STDC FP_CONTRACT DEFAULT
#endif
#ifdef KVE__QUIET_INTRINSICS
#pragma GCC diagnostic pop
#endif
#endif /* KVEVICT_IMPLEMENTATION_DONE */
#endif /* KVEVICT_IMPLEMENTATION */

/*
MIT License

Copyright (c) 2026 the kvevict authors

Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
associated documentation files (the "Software"), to deal in the Software without restriction,
including without limitation the rights to use, copy, modify, merge, publish, distribute,
sublicense, and/or sell copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or
substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT
NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT
OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
*/
