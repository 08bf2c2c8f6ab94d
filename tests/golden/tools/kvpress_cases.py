#!/usr/bin/env python3
"""Golden "select" cases for kvevict, produced by running NVIDIA/kvpress's own press code.

usage: python3 tests/golden/tools/kvpress_cases.py KVPRESS_DIR OUT_DIR

KVPRESS_DIR is a checkout of https://github.com/NVIDIA/kvpress at commit
8bb29b9c3078452a86d692f29123fa6c793e2b05 (the directory that contains the `kvpress/`
package). Only torch is needed: `transformers` is replaced by a stub that supplies the
names the imported kvpress modules import (dummy classes) plus `repeat_kv` and
`rotate_half`, written here from their mathematical definitions. kvpress/__init__.py is
not imported (it pulls the pipeline); the individual press modules are.

For every case the script draws float32 queries, keys and values from a seeded
torch.Generator, calls the press's score() (recorded as "score" lines) and its compress()
(from which the kept positions, "keep" lines, are recovered), checks the result and
writes NN-kvpress-<what>.case into OUT_DIR. Each written file is read back and checked.
ChunkPress cases record the inner press's score of each chunk on its own, concatenated;
ComposedPress cases (Knorm then SnapKV, run through ComposedPress.forward_hook) record SnapKV's
score of each position Knorm kept and -1e30 where Knorm dropped it.
ExpectedAttentionPress cases store q and k BEFORE RoPE ("vectors pre_rope", "rope half",
"rope_theta 10000"); kvpress reads the queries through an identity q_proj and a Hugging Face Llama
rotary embedding (HFRotaryEmbedding below), and scores the keys rotated at positions 0..q_len-1.
KeyRerotationPress cases (over KnormPress, "rerotate 1") store k before RoPE likewise; kvpress
compresses the keys rotated at 0..q_len-1 and returns the kept ones re-rotated to positions
0..n_kept-1, recorded as "rekey" lines (per KV head, in new-position order).
"""

import argparse
import importlib
import math
import os
import subprocess
import sys
import types
from fractions import Fraction

import torch

COMMIT = "8bb29b9c3078452a86d692f29123fa6c793e2b05"
REF = "NVIDIA/kvpress@" + COMMIT[:7]
FIRST_NUMBER = 20


# ---------------------------------------------------------------------------------------
# transformers stub and kvpress loading
# ---------------------------------------------------------------------------------------

def _repeat_kv(hidden_states, n_rep):
    """[b, n_kv, L, d] -> [b, n_kv * n_rep, L, d]; query head g reads KV head g // n_rep."""
    if n_rep == 1:
        return hidden_states
    return torch.repeat_interleave(hidden_states, n_rep, dim=1)


def _rotate_half(x):
    """(x1, x2) -> (-x2, x1), halves taken along the last dimension."""
    first, second = torch.chunk(x, 2, dim=-1)
    return torch.cat((torch.neg(second), first), dim=-1)


def install_transformers_stub():
    def dummy(name):
        return type(name, (), {})

    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__path__ = []  # lets "import a.b.c" walk through it
        for key, value in attrs.items():
            setattr(m, key, value)
        sys.modules[name] = m
        return m

    top_names = ["Cache", "QuantizedCache", "PreTrainedModel", "LlamaForCausalLM", "MistralForCausalLM",
                 "Phi3ForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "Gemma3ForConditionalGeneration",
                 # imported by kvzip_press, which composed_press imports
                 "AutoTokenizer", "Gemma3PreTrainedModel", "PreTrainedTokenizer"]
    module("transformers", **{n: dummy(n) for n in top_names})
    module("transformers.models")
    for sub, attrs in [
        ("llama", {"repeat_kv": _repeat_kv, "rotate_half": _rotate_half}),
        ("gemma3", {"Gemma3Attention": dummy("Gemma3Attention")}),
        ("phi3", {"Phi3Attention": dummy("Phi3Attention")}),
        ("qwen3", {"Qwen3Attention": dummy("Qwen3Attention")}),
    ]:
        module("transformers.models." + sub)
        module("transformers.models.%s.modeling_%s" % (sub, sub), **attrs)


def load_kvpress(kvdir):
    pkg_dir = os.path.join(os.path.abspath(kvdir), "kvpress")
    if not os.path.isfile(os.path.join(pkg_dir, "presses", "scorer_press.py")):
        sys.exit("%s: no kvpress/presses/scorer_press.py here; give the directory containing kvpress/" % kvdir)
    try:
        head = subprocess.run(["git", "-C", kvdir, "rev-parse", "HEAD"], capture_output=True, text=True)
        if head.returncode == 0 and head.stdout.strip() != COMMIT:
            print("warning: %s is at %s, the cases are meant for %s" % (kvdir, head.stdout.strip(), COMMIT),
                  file=sys.stderr)
    except OSError:
        pass
    install_transformers_stub()
    for name, path in [("kvpress", pkg_dir), ("kvpress.presses", os.path.join(pkg_dir, "presses"))]:
        m = types.ModuleType(name)
        m.__path__ = [path]
        sys.modules[name] = m

    def cls(mod, name):
        return getattr(importlib.import_module("kvpress.presses." + mod), name)

    return {
        "KnormPress": cls("knorm_press", "KnormPress"),
        "KeyDiffPress": cls("keydiff_press", "KeyDiffPress"),
        "TOVAPress": cls("tova_press", "TOVAPress"),
        "LagKVPress": cls("lagkv_press", "LagKVPress"),
        "ObservedAttentionPress": cls("observed_attention_press", "ObservedAttentionPress"),
        "StreamingLLMPress": cls("streaming_llm_press", "StreamingLLMPress"),
        "SnapKVPress": cls("snapkv_press", "SnapKVPress"),
        "PyramidKVPress": cls("pyramidkv_press", "PyramidKVPress"),
        "AdaKVPress": cls("adakv_press", "AdaKVPress"),
        "ChunkKVPress": cls("chunkkv_press", "ChunkKVPress"),
        "ChunkPress": cls("chunk_press", "ChunkPress"),
        "ComposedPress": cls("composed_press", "ComposedPress"),
        "ExpectedAttentionPress": cls("expected_attention_press", "ExpectedAttentionPress"),
        "KeyRerotationPress": cls("key_rerotation_press", "KeyRerotationPress"),
    }


# ---------------------------------------------------------------------------------------
# case list
# ---------------------------------------------------------------------------------------

def C(what, policy, **kw):
    c = dict(what=what, policy=policy, allocation="uniform", n_layers=1, layer=0, n_heads=2, n_kv_heads=2,
             head_dim=8, q_len=32, ratio=0.5, window=0, kernel=1)
    c.update(kw)
    return c


CASES = [
    C("knorm-ties", "knorm", q_len=32, ratio=0.5, ties=True),
    C("knorm-gqa", "knorm", n_heads=4, n_kv_heads=2, head_dim=16, q_len=48, ratio=0.25),
    C("keydiff", "keydiff", q_len=40, ratio=0.5),
    C("keydiff-gqa", "keydiff", n_heads=4, n_kv_heads=2, head_dim=16, q_len=36, ratio=0.6),
    C("tova", "tova", q_len=32, ratio=0.5),
    C("tova-gqa", "tova", n_heads=4, n_kv_heads=2, head_dim=16, q_len=40, ratio=0.25),
    C("lagkv-scored", "lagkv", q_len=40, ratio=0.5, n_sink=4, lag_size=6),
    C("lagkv-short-gqa", "lagkv", n_heads=4, n_kv_heads=2, head_dim=16, q_len=30, ratio=0.6, n_sink=4,
      lag_size=16),
    C("observed-attention", "observed_attention", q_len=32, ratio=0.5),
    C("observed-attention-gqa", "observed_attention", n_heads=4, n_kv_heads=2, head_dim=16, q_len=40,
      ratio=0.25),
    C("streamingllm", "streaming_llm", q_len=32, ratio=0.5, n_sink=4),
    C("streamingllm-gqa", "streaming_llm", n_heads=4, n_kv_heads=2, head_dim=16, q_len=40, ratio=0.6,
      n_sink=2),
    C("snapkv", "snapkv", q_len=40, ratio=0.5, window=8, kernel=5),
    C("snapkv-gqa", "snapkv", n_heads=4, n_kv_heads=2, head_dim=16, q_len=48, ratio=0.6, window=6, kernel=3),
    C("pyramidkv-L1", "pyramidkv", allocation="pyramid", n_layers=4, layer=1, q_len=40, ratio=0.5, window=8,
      kernel=5, beta=2, expect_branch="pyramid"),
    C("pyramidkv-gqa-L2-fallback", "pyramidkv", allocation="pyramid", n_layers=4, layer=2, n_heads=4,
      n_kv_heads=2, head_dim=16, q_len=40, ratio=0.6, window=8, kernel=5, beta=20, expect_branch="fallback"),
    C("adakv-knorm", "knorm", allocation="adakv", n_heads=4, n_kv_heads=4, q_len=32, ratio=0.5, alpha=0.2,
      head_scale=0.12),
    C("adakv-knorm-gqa", "knorm", allocation="adakv", n_heads=4, n_kv_heads=2, head_dim=16, q_len=40,
      ratio=0.6, alpha=0.5, head_scale=0.4),
    C("adakv-snapkv", "snapkv", allocation="adakv", n_heads=2, n_kv_heads=2, q_len=40, ratio=0.5, window=8,
      kernel=5, alpha=0.2),
    C("adakv-snapkv-gqa", "snapkv", allocation="adakv", n_heads=4, n_kv_heads=2, head_dim=16, q_len=40,
      ratio=0.5, window=4, kernel=3, alpha=0.8, q_scale=-0.5),
    C("chunkkv-knorm", "chunkkv", scorer="knorm", q_len=40, ratio=0.5, chunk_length=8),
    C("chunkkv-knorm-gqa-partial", "chunkkv", scorer="knorm", n_heads=4, n_kv_heads=2, head_dim=16, q_len=42,
      ratio=0.6, chunk_length=8),
    C("chunkkv-snapkv", "chunkkv", scorer="snapkv", q_len=40, ratio=0.5, chunk_length=8, window=8, kernel=5),
    C("chunkkv-snapkv-gqa-partial", "chunkkv", scorer="snapkv", n_heads=4, n_kv_heads=2, head_dim=16,
      q_len=44, ratio=0.25, chunk_length=6, window=6, kernel=3),
    # cross_scoring: the softmax values themselves are compared across lags, so the selection
    # depends on the scale of the per-token std (kvpress: unbiased); head_dim 4 makes a biased
    # std sqrt(3/4) of it, and per-token amplitudes that vary a lot make that scale matter
    C("lagkv-cross", "lagkv", head_dim=4, q_len=45, ratio=0.5, n_sink=3, lag_size=6, cross_scoring=True,
      token_amp=1.0),
    C("lagkv-cross-gqa", "lagkv", n_heads=4, n_kv_heads=2, head_dim=4, q_len=44, ratio=0.5, n_sink=3,
      lag_size=6, cross_scoring=True, token_amp=1.0),
    # ChunkPress: every chunk of chunk_length tokens (the last one may be shorter) is compressed on
    # its own by the inner press, keeping max(1, int(m * (1 - ratio))) of its m tokens per head
    C("chunkpress-knorm", "chunkpress", scorer="knorm", q_len=40, ratio=0.5, chunk_length=12),
    C("chunkpress-snapkv-gqa", "chunkpress", scorer="snapkv", n_heads=4, n_kv_heads=2, head_dim=16, q_len=44,
      ratio=0.5, chunk_length=16, window=4, kernel=3),
    C("chunkpress-keydiff", "chunkpress", scorer="keydiff", q_len=46, ratio=0.6, chunk_length=14),
    # ComposedPress([KnormPress(first_ratio), SnapKVPress(ratio, window, kernel)])
    C("composed-knorm-snapkv", "composed", first="knorm", first_ratio=0.25, scorer="snapkv", q_len=40,
      ratio=0.5, window=6, kernel=5),
    C("composed-knorm-snapkv-gqa", "composed", first="knorm", first_ratio=0.25, scorer="snapkv", n_heads=4,
      n_kv_heads=2, head_dim=16, q_len=48, ratio=0.5, window=4, kernel=3),
    # ExpectedAttentionPress: q and k are drawn BEFORE RoPE (the case stores them so, "vectors
    # pre_rope"); kvpress gets the queries through an identity q_proj and the keys rotated at
    # positions 0..q_len-1 by Hugging Face's Llama RoPE (half layout, theta 10000, float32), as a
    # cache holds them. q_mean: every query head gets a drift q_mean * N(0,1) per dim (drawn last),
    # so the mean term (Rm mu).k, which the keys' rotation changes, matters next to the covariance's
    C("expected-attention", "expected_attention", q_len=32, ratio=0.5, n_future=16, n_sink=4, q_mean=1.0),
    C("expected-attention-gqa", "expected_attention", n_heads=4, n_kv_heads=2, head_dim=16, q_len=40,
      ratio=0.6, n_future=32, n_sink=2, q_mean=1.0),
    C("expected-attention-nocov", "expected_attention", head_dim=16, q_len=48, ratio=0.5, n_future=32,
      n_sink=4, use_covariance=False, use_vnorm=False, epsilon=0.01, q_mean=1.0),
    # KeyRerotationPress(press=KnormPress): k drawn BEFORE RoPE and written so (like the expected
    # attention cases); kvpress compresses the keys rotated at positions 0..q_len-1 by HF's RoPE and
    # returns the kept ones (sorted by position) re-rotated to positions 0..n_kept-1: "rekey" lines
    C("keyrerotation-knorm", "knorm", rerotate=True, q_len=32, ratio=0.5),
    C("keyrerotation-knorm-gqa", "knorm", rerotate=True, n_heads=4, n_kv_heads=2, head_dim=16, q_len=40,
      ratio=0.6),
    # ExpectedAttentionPress with use_vnorm on and epsilon > 0: scores (s + epsilon) * ||v||; redrawn
    # until kvpress's epsilon-0 selection would be rejected by the judge in some head
    C("expected-attention-epsilon", "expected_attention", q_len=32, ratio=0.5, n_future=16, n_sink=4,
      use_vnorm=True, epsilon=0.05, q_mean=1.0),
    # head_dim 32: the smallest q8_0 can store, so these also run on every storage type (run.sh)
    C("knorm-gqa-d32", "knorm", n_heads=4, n_kv_heads=2, head_dim=32, q_len=40, ratio=0.5),
    C("snapkv-gqa-d32", "snapkv", n_heads=4, n_kv_heads=2, head_dim=32, q_len=48, ratio=0.6, window=6,
      kernel=3),
    C("tova-d32", "tova", head_dim=32, q_len=36, ratio=0.5),
    C("observed-attention-gqa-d32", "observed_attention", n_heads=4, n_kv_heads=2, head_dim=32, q_len=40,
      ratio=0.5),
]

ATTENTION_POLICIES = ("snapkv", "pyramidkv", "tova", "observed_attention")
PRESS_CLASS = {"knorm": "KnormPress", "keydiff": "KeyDiffPress", "tova": "TOVAPress", "lagkv": "LagKVPress",
               "observed_attention": "ObservedAttentionPress", "streaming_llm": "StreamingLLMPress",
               "snapkv": "SnapKVPress", "pyramidkv": "PyramidKVPress",
               "expected_attention": "ExpectedAttentionPress"}
ROPE_THETA = 10000.0
EXPECTED_MARGIN = 1e-4  # expected attention: relative gap required at every head's cut
REROTATE_MARGIN = 1e-4  # key rerotation: relative gap required at every head's cut (norms of rotated keys)
REKEY_TOLERANCE = 1e-5  # build/judge: rekey values within this of the reference, relative to the head's largest


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------

def floor_int(value, exact):
    """int(value) as Python computes it, checked against the exact decimal arithmetic."""
    got = int(value)
    want = math.floor(exact)
    if got != want:
        raise SystemExit("float truncation %r -> %d differs from exact %s -> %d; pick other sizes"
                         % (value, got, exact, want))
    return got


def eager_attention(q, k):
    """softmax(Q K^T / sqrt(d) + causal mask) in float32, query head g on KV head g // (H / H_kv)."""
    groups = q.shape[1] // k.shape[1]
    kk = torch.repeat_interleave(k, groups, dim=1)
    logits = torch.matmul(q, kk.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    n = q.shape[2]
    mask = torch.full((n, n), float("-inf")).triu(1)
    return torch.softmax(logits + mask, dim=-1, dtype=torch.float32)


def make_module(c, with_q_proj=False):
    config = types.SimpleNamespace(num_attention_heads=c["n_heads"], num_key_value_heads=c["n_kv_heads"],
                                   num_hidden_layers=c["n_layers"], _attn_implementation="sdpa")
    m = types.SimpleNamespace(head_dim=c["head_dim"], layer_idx=c["layer"], config=config)
    if with_q_proj:
        m.q_proj = lambda x: x  # hidden_states already hold the queries (see chunkkv over snapkv)
    return m


def window_path(c, q):
    """module, hidden_states and kwargs with which kvpress computes window attention itself
    (attentions=None): q_proj is the identity over hidden_states holding the queries as
    [token][head*dim], and RoPE is the identity (cos = 1, sin = 0; the queries are already rotated)."""
    L, H, D = c["q_len"], c["n_heads"], c["head_dim"]
    hidden = q[0].transpose(0, 1).reshape(1, L, H * D).contiguous()
    kwargs = {"position_embeddings": (torch.ones(1, L, D), torch.zeros(1, L, D))}
    return make_module(c, with_q_proj=True), hidden, kwargs


def cut_is_tied(values, n):
    """True when selecting the n largest of `values` is ambiguous (equal values straddle the cut)."""
    s = sorted((float(x) for x in values), reverse=True)
    return 0 < n < len(s) and s[n - 1] == s[n]


def tie_groups(values, exclude=()):
    seen = {}
    for i, x in enumerate(values):
        if i in exclude:
            continue
        seen.setdefault(float(x), []).append(i)
    return [g for g in seen.values() if len(g) > 1]


def positions_from_values(gathered_values):
    """Gathered `values` that held each token's position in every dim -> positions per head."""
    out = []
    for h in range(gathered_values.shape[1]):
        rows = gathered_values[0, h]
        assert bool((rows == rows[:, :1]).all()), "position tensor was mixed across dims"
        pos = [int(x) for x in rows[:, 0].tolist()]
        assert all(float(p) == x for p, x in zip(pos, rows[:, 0].tolist()))
        out.append(sorted(pos))
    return out


def positions_from_keys(gathered_keys, keys):
    """kept positions per head, ascending, of the key rows a press gathered"""
    return [sorted(pos) for pos in gathered_order(gathered_keys, keys)]


# ---------------------------------------------------------------------------------------
# running one case
# ---------------------------------------------------------------------------------------

def draw(c, seed):
    g = torch.Generator().manual_seed(seed)
    H, KV, L, D = c["n_heads"], c["n_kv_heads"], c["q_len"], c["head_dim"]
    q = torch.randn(1, H, L, D, generator=g)
    k = torch.randn(1, KV, L, D, generator=g)
    v = torch.randn(1, KV, L, D, generator=g)
    if c.get("head_scale"):
        # different key-norm spread per KV head so AdaKV's cross-head allocation is uneven
        scale = torch.tensor([1.0 + c["head_scale"] * h for h in range(KV)]).view(1, KV, 1, 1)
        k = k * (scale + 0.1 * torch.randn(1, KV, L, 1, generator=g).abs())
    if c.get("q_scale"):
        # attention sharpness differs between query-head groups, so AdaKV's allocation is uneven
        # (with q_scale -0.5 the second group's queries are halved: flatter attention)
        groups = H // KV
        q = q * torch.tensor([1.0 + c["q_scale"] * (h // groups) for h in range(H)]).view(1, H, 1, 1)
    if c.get("token_amp"):
        # per-token amplitudes exp(token_amp * N(0,1)) on keys and values (drawn last, so the
        # other cases' draws are unchanged): spreads that differ a lot between tokens
        k = k * torch.exp(c["token_amp"] * torch.randn(1, KV, L, 1, generator=g))
        v = v * torch.exp(c["token_amp"] * torch.randn(1, KV, L, 1, generator=g))
    if c.get("q_mean"):
        # a per-head drift shared by all of a head's queries (drawn last): the queries' mean is
        # then far from 0, as in real models, and its term in expected attention matters
        q = q + c["q_mean"] * torch.randn(1, H, 1, D, generator=g)
    if c.get("ties"):
        # duplicate / sign-flip key rows around the cut: head 0 gets 3 equal norms for 1 slot,
        # head 1 gets 4 equal norms for 2 slots (KnormPress keeps the smallest norms)
        n_kept = floor_int(L * (1 - c["ratio"]), L * (1 - Fraction(str(c["ratio"]))))
        for h in range(KV):
            order = torch.argsort(k[0, h].norm(dim=-1)).tolist()
            first = n_kept - 1 - (h % 2)
            src = k[0, h, order[first]].clone()
            for j, r in enumerate(range(first + 1, n_kept + 2)):
                k[0, h, order[r]] = src if j % 2 == 0 else -src
    return q.contiguous(), k.contiguous(), v.contiguous()


def build_press(P, c, policy):
    ratio = c["ratio"]
    if policy in ("knorm", "keydiff", "tova", "observed_attention"):
        return P[PRESS_CLASS[policy]](compression_ratio=ratio)
    if policy == "lagkv":
        return P["LagKVPress"](compression_ratio=ratio, n_sink=c["n_sink"], lag_size=c["lag_size"],
                               cross_scoring=bool(c.get("cross_scoring")))
    if policy == "streaming_llm":
        return P["StreamingLLMPress"](compression_ratio=ratio, n_sink=c["n_sink"])
    if policy == "snapkv":
        return P["SnapKVPress"](compression_ratio=ratio, window_size=c["window"], kernel_size=c["kernel"])
    if policy == "pyramidkv":
        return P["PyramidKVPress"](compression_ratio=ratio, window_size=c["window"], kernel_size=c["kernel"],
                                   beta=c["beta"])
    raise ValueError(policy)


DROPPED = float(torch.tensor(-1e30, dtype=torch.float32))  # composed cases: score of a position the first press dropped


def chunk_bounds(L, cl):
    return [(a, min(a + cl, L)) for a in range(0, L, cl)]


def run_chunkpress(P, c, seed):
    """kvpress ChunkPress over Knorm, KeyDiff or SnapKV. Scores: the inner press's score() of every
    chunk computed on that chunk alone (as ChunkPress calls it), concatenated."""
    KV, L, cl, ratio = c["n_kv_heads"], c["q_len"], c["chunk_length"], c["ratio"]
    q, k, v = draw(c, seed)
    pos_values = torch.arange(L, dtype=torch.float32).view(1, 1, L, 1).expand(1, KV, L, c["head_dim"]).contiguous()
    inner = build_press(P, c, c["scorer"])
    press = P["ChunkPress"](press=inner, chunk_length=cl)
    notes = []
    if c["scorer"] == "snapkv":
        # ChunkPress asserts attentions is None: SnapKV computes each chunk's window attention from
        # the chunk's hidden_states (identity q_proj over the queries) with identity RoPE
        module, hidden, kwargs = window_path(c, q)
    else:
        module, hidden, kwargs = make_module(c), torch.zeros(1, L, 1), {}
    bounds = chunk_bounds(L, cl)
    parts, counts = [], []
    for a, b in bounds:
        m = b - a
        if c["scorer"] == "snapkv" and m <= c["window"]:
            raise SystemExit("%s: chunk [%d, %d) is not longer than the window" % (c["what"], a, b))
        part = inner.score(module, hidden[:, a:b], k[:, :, a:b], pos_values[:, :, a:b], None, kwargs)
        n = max(1, floor_int(m * (1 - ratio), m * (1 - Fraction(str(ratio)))))
        if c["scorer"] == "snapkv" and n < c["window"]:
            raise SystemExit("%s: chunk [%d, %d) keeps %d < window" % (c["what"], a, b, n))
        for h in range(KV):
            if cut_is_tied(part[0, h].tolist(), n):
                return None
        parts.append(part)
        counts.append(n)
    scores = torch.cat(parts, dim=-1)
    gk, gv = press.compress(module, hidden, k, pos_values, None, kwargs)
    keep = positions_from_values(gv)
    # the kept set of each head is, chunk by chunk, the top-n of that chunk's own scores
    for h in range(KV):
        for (a, b), part, n in zip(bounds, parts, counts):
            top = sorted(a + i for i in torch.topk(part[0, h], n).indices.tolist())
            assert [p for p in keep[h] if a <= p < b] == top, "head %d chunk [%d, %d)" % (h, a, b)
    # scoring the whole prompt at once would select differently (else the case shows nothing)
    whole = inner.score(module, hidden, k, pos_values, None, kwargs)
    n_all = sum(counts)
    differs = [h for h in range(KV) if sorted(torch.topk(whole[0, h], n_all).indices.tolist()) != keep[h]]
    if not differs:
        return None
    sizes = [b - a for a, b in bounds]
    notes.append("ChunkPress: chunks of %s tokens, each keeps max(1, int(m * (1 - ratio))) = %s per head, "
                 "top-k within the chunk" % ("+".join(map(str, sizes)), "+".join(map(str, counts))))
    notes.append("score lines: %s.score() of each chunk computed on that chunk alone (as ChunkPress calls it), "
                 "concatenated" % PRESS_CLASS[c["scorer"]])
    if c["scorer"] == "snapkv":
        notes.append("SnapKV per chunk: the chunk's last %d queries attend to the chunk's keys only (causal), "
                     "the chunk's last %d tokens score max+1 of that chunk" % (c["window"], c["window"]))
    if c["scorer"] == "keydiff":
        notes.append("KeyDiff per chunk: the anchor is the mean normalised key of the chunk")
    notes.append("scoring the whole prompt at once and keeping %d would keep other positions in KV head(s) %s"
                 % (n_all, ",".join(map(str, differs))))
    return dict(q=q, k=k, v=v, scores=scores[0].tolist(), scores_t=scores[0], keep=keep, notes=notes,
                check=dict(n_sel=n_all, chunk_counts=counts), n_kept=n_all)


def composed_draw(c, seed):
    """Random draws, then every key row rescaled to a permutation of its head's norms such that
    KnormPress keeps the last `window` tokens and its kept tokens' norms increase with position:
    torch.topk (sorted) then gathers them in position order, so kvpress's SnapKV, which takes the
    last `window` entries of the compressed cache as the window (causal mask and max+1 padding by
    index) and pools neighbours by index, sees them as they are in the prompt."""
    q, k, v = draw(c, seed)
    KV, L, w = c["n_kv_heads"], c["q_len"], c["window"]
    L1 = floor_int(L * (1 - c["first_ratio"]), L * (1 - Fraction(str(c["first_ratio"]))))
    for h in range(KV):
        norms = k[0, h].norm(dim=-1)
        order = torch.argsort(norms[:L - w]).tolist()
        kept = sorted(order[:L1 - w]) + list(range(L - w, L))
        dropped = [p for p in range(L) if p not in set(kept)]
        dropped.sort(key=lambda p: float(norms[p]))
        target = torch.sort(norms).values
        new = torch.empty(L)
        for i, p in enumerate(kept + dropped):
            new[p] = target[i]
        k[0, h] = k[0, h] * (new / norms).unsqueeze(-1)
    return q, k.contiguous(), v, L1


def gathered_positions(gv):
    """positions per head in the order of the compressed cache (not sorted)"""
    out = []
    for h in range(gv.shape[1]):
        rows = gv[0, h]
        assert bool((rows == rows[:, :1]).all())
        out.append([int(x) for x in rows[:, 0].tolist()])
    return out


def run_composed(P, c, seed):
    """kvpress ComposedPress([KnormPress, SnapKVPress]) run through its forward_hook over a stand-in
    cache, and again press by press (compress() in sequence) to recover the scores."""
    KV, L, D, w = c["n_kv_heads"], c["q_len"], c["head_dim"], c["window"]
    q, k, v, L1 = composed_draw(c, seed)
    pos_values = torch.arange(L, dtype=torch.float32).view(1, 1, L, 1).expand(1, KV, L, D).contiguous()
    first = P["KnormPress"](compression_ratio=c["first_ratio"])
    second = build_press(P, c, "snapkv")
    module, hidden, kwargs = window_path(c, q)
    # the real ComposedPress: forward_hook over a cache holding (keys, positions as values)
    composed = P["ComposedPress"]([first, second])
    cache = types.SimpleNamespace(layers=[types.SimpleNamespace(keys=k.clone(), values=pos_values.clone())])
    hook_kwargs = dict(kwargs, hidden_states=hidden, past_key_values=cache, cache_position=torch.arange(L))
    composed.forward_hook(module, [], hook_kwargs, [None, None])
    # press by press, as forward_hook does (hidden_states unchanged, keys/values from the previous press)
    s1 = first.score(module, hidden, k, pos_values, None, kwargs)
    for h in range(KV):
        if cut_is_tied(s1[0, h].tolist(), L1):
            return None
    k1, v1 = first.compress(module, hidden, k, pos_values, None, kwargs)
    order1 = gathered_positions(v1)
    for h in range(KV):
        if order1[h] != sorted(order1[h]) or not set(range(L - w, L)) <= set(order1[h]):
            return None  # redraw: KnormPress's gather order is not the position order / window not kept
    s2 = second.score(module, hidden, k1, v1, None, kwargs)
    n2 = floor_int(L1 * (1 - c["ratio"]), L1 * (1 - Fraction(str(c["ratio"]))))
    if n2 < w:
        raise SystemExit("%s: SnapKV keeps %d < window %d" % (c["what"], n2, w))
    for h in range(KV):
        if cut_is_tied(s2[0, h].tolist(), n2):
            return None
    k2, v2 = second.compress(module, hidden, k1, v1, None, kwargs)
    assert torch.equal(k2, cache.layers[0].keys) and torch.equal(v2, cache.layers[0].values), \
        "compress() in sequence differs from ComposedPress.forward_hook"
    keep = positions_from_values(v2)
    scores = torch.full((KV, L), DROPPED, dtype=torch.float32)
    for h in range(KV):
        for j, p in enumerate(order1[h]):
            scores[h, p] = s2[0, h, j]
    # SnapKV alone over the whole prompt would keep other positions (else the first press did nothing)
    sa = second.score(module, hidden, k, pos_values, None, kwargs)
    differs = [h for h in range(KV) if sorted(torch.topk(sa[0, h], n2).indices.tolist()) != keep[h]]
    notes = ["ComposedPress: KnormPress(%s) keeps int(%d * (1 - %s)) = %d per head, then SnapKVPress(%s, window %d, "
             "kernel %d) keeps int(%d * (1 - %s)) = %d of those; run through ComposedPress.forward_hook and "
             "again press by press (same result)" % (c["first_ratio"], L, c["first_ratio"], L1, c["ratio"], w,
                                                     c["kernel"], L1, c["ratio"], n2),
             "inputs: every key row rescaled to a permutation of its head's norms so that KnormPress keeps the "
             "last %d tokens and gathers its kept tokens in position order (torch.topk returns them by score; "
             "kvpress's SnapKV takes the last window entries of the compressed cache as the window and pools "
             "by index)" % w,
             "SnapKV over the compressed cache computes its window attention itself (attentions=None): the last "
             "%d queries through an identity q_proj, identity RoPE" % w,
             "score lines: SnapKV's score of each position KnormPress kept, -1e30 where KnormPress dropped it",
             "the same SnapKV keeping %d of the uncompressed prompt would keep other positions in KV head(s) %s"
             % (n2, ",".join(map(str, differs)) or "none")]
    if not differs:
        return None
    return dict(q=q, k=k, v=v, scores=scores.tolist(), scores_t=scores, keep=keep, notes=notes,
                check=dict(n_sel=n2, first_kept=[sorted(o) for o in order1]), n_kept=n2)


class HFRotaryEmbedding:
    """transformers' LlamaRotaryEmbedding (default rope type, attention_scaling 1), which kvpress
    reads as module.rotary_emb: inv_freq = 1 / theta^(arange(0, d, 2) / d) in float32, freqs =
    inv_freq x position_ids (a float32 matmul), emb = cat(freqs, freqs); returns cos(emb), sin(emb)
    as [batch, positions, d] in x's dtype. dtype=torch.float64: the same in double precision (used
    only to check that float32 rounding decides nothing)."""

    def __init__(self, dim, theta=ROPE_THETA, dtype=torch.float32):
        self.dtype = dtype
        self.inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).to(dtype=dtype) / dim))

    def __call__(self, x, position_ids):
        inv = self.inv_freq[None, :, None].expand(position_ids.shape[0], -1, 1)
        pos = position_ids[:, None, :].to(self.dtype)
        freqs = torch.matmul(inv, pos).transpose(1, 2)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype=x.dtype), emb.sin().to(dtype=x.dtype)


def hf_rotate(x, rotary):
    """[b, heads, L, d] rotated at positions 0..L-1 as transformers' apply_rotary_pos_emb does:
    x * cos + rotate_half(x) * sin"""
    cos, sin = rotary(x, torch.arange(x.shape[2]).unsqueeze(0))
    return x * cos.unsqueeze(1) + _rotate_half(x) * sin.unsqueeze(1)


def expected_press(P, c, **override):
    kw = dict(compression_ratio=c["ratio"], n_future_positions=c["n_future"], n_sink=c["n_sink"],
              use_covariance=c.get("use_covariance", True), use_vnorm=c.get("use_vnorm", True),
              epsilon=c.get("epsilon", 0.0))
    kw.update(override)
    return P["ExpectedAttentionPress"](**kw)


def expected_scores(press, c, q, k_pre, v, dtype=torch.float32):
    """press.score() as kvpress calls it in a Llama layer: hidden_states through an identity q_proj
    give the queries BEFORE RoPE ([1, L, heads*dim]), module.rotary_emb is HF's rotary embedding, and
    the keys are the cache's, i.e. rotated at their positions 0..L-1"""
    rotary = HFRotaryEmbedding(c["head_dim"], dtype=dtype)
    q, k_pre, v = q.to(dtype), k_pre.to(dtype), v.to(dtype)
    module, hidden, _ = window_path(c, q)
    module.rotary_emb = rotary
    k_rot = hf_rotate(k_pre, rotary)
    return press.score(module, hidden, k_rot, v, None, {}), module, hidden, k_rot


def kept_top(scores, n):
    return [sorted(torch.topk(scores[0, h], n).indices.tolist()) for h in range(scores.shape[1])]


def run_expected(P, c, seed):
    """kvpress ExpectedAttentionPress. q and k are drawn before RoPE and written so (the runner
    rotates them); kvpress scores the HF-rotated keys. Redrawn unless every head's cut has a
    relative gap above EXPECTED_MARGIN, double precision selects alike, and scoring the keys
    unrotated or with the interleaved RoPE layout would be rejected by the judge in some head."""
    KV, L, D, S = c["n_kv_heads"], c["q_len"], c["head_dim"], c["n_sink"]
    q, k, v = draw(c, seed)
    n_kept = floor_int(L * (1 - c["ratio"]), L * (1 - Fraction(str(c["ratio"]))))
    if n_kept <= S:
        raise SystemExit("%s: keeps %d <= n_sink %d" % (c["what"], n_kept, S))
    press = expected_press(P, c)
    scores, module, hidden, k_rot = expected_scores(press, c, q, k, v)
    gaps = []
    for h in range(KV):
        desc = sorted(scores[0, h].tolist(), reverse=True)
        gap = (desc[n_kept - 1] - desc[n_kept]) / abs(desc[n_kept - 1])
        if not gap > EXPECTED_MARGIN:
            return None
        gaps.append(gap)
    gk, gv = press.compress(module, hidden, k_rot, v, None, {})
    keep = positions_from_keys(gk, k_rot)
    assert positions_from_keys(gv, v) == keep, "keys and values gathered at different positions"
    assert keep == kept_top(scores, n_kept), "compress() kept other positions than score()'s top-k"
    assert all(set(range(S)) <= set(kp) for kp in keep), "a sink was dropped"
    # float32 rounding decides nothing: the same press in double precision keeps the same positions
    s64 = expected_scores(press, c, q, k, v, dtype=torch.float64)[0]
    if kept_top(s64, n_kept) != keep:
        return None
    scored = (slice(None), slice(None), slice(S, None))
    rel64 = float(((s64[scored] - scores[scored].double()).abs() / s64[scored].abs()).max())
    # what the case catches: a runner's selection under each variant, judged against these scores
    ref = scores[0].tolist()
    perm = [i for i in range(0, D, 2)] + [i for i in range(1, D, 2)]  # interleaved pairs -> halves
    variants = [("the keys scored unrotated (their pre-RoPE values)",
                 press.score(module, hidden, k, v, None, {}), True),
                ("the interleaved RoPE layout (pairs 2i, 2i+1) instead of half",
                 expected_scores(press, c, q[..., perm], k[..., perm], v)[0], True),
                ("n_future_positions 512 (kvpress's default) instead of %d" % c["n_future"],
                 expected_scores(expected_press(P, c, n_future_positions=512), c, q, k, v)[0], False)]
    for flag in ("use_covariance", "use_vnorm"):
        on = c.get(flag, True)
        variants.append(("%s %s" % (flag, "off" if on else "on"),
                         expected_scores(expected_press(P, c, **{flag: not on}), c, q, k, v)[0], False))
    caught_lines = []
    for what, alt, required in variants:
        heads = [h for h in range(KV) if judge_rejects(ref[h], set(kept_top(alt, n_kept)[h]))]
        if required and not heads:
            return None
        caught_lines.append("%s would keep positions the judge rejects in KV head(s) %s"
                            % (what, ",".join(map(str, heads)) or "none"))
    notes = ["ExpectedAttentionPress(compression_ratio=%s, n_future_positions=%d, n_sink=%d, use_covariance=%s, "
             "use_vnorm=%s, epsilon=%s): keeps int(%d * (1 - %s)) = %d per head, the %d sinks among them"
             % (c["ratio"], c["n_future"], S, c.get("use_covariance", True), c.get("use_vnorm", True),
                c.get("epsilon", 0.0), L, c["ratio"], n_kept, S),
             "q and k lines: BEFORE RoPE (vectors pre_rope); kvpress got the queries through an identity q_proj "
             "(get_prerope_query_states) and the keys rotated at positions 0..%d by HF Llama RoPE (rotate_half, "
             "theta 10000, float32), module.rotary_emb = HF LlamaRotaryEmbedding for the future positions %d..%d"
             % (L - 1, L, L + c["n_future"] - 1),
             "drawn with a per-head query drift (q_mean %s) so the queries' mean term matters" % c["q_mean"],
             "relative gap at the cut per KV head: %s (draws under %g redrawn); the same press in float64 keeps the "
             "same positions, max relative score difference %.2g" % (", ".join("%.2g" % g for g in gaps),
                                                                     EXPECTED_MARGIN, rel64)]
    notes += ["check: " + x for x in caught_lines]
    if c.get("epsilon"):
        plain = expected_scores(expected_press(P, c, epsilon=0.0), c, q, k, v)[0]
        notes.append("epsilon %s: the scores with epsilon 0 are %s" % (
            c["epsilon"], "bit-identical (kvpress adds epsilon only under use_vnorm)" if torch.equal(plain, scores)
            else "different, kept positions %s" % ("the same" if kept_top(plain, n_kept) == keep else "DIFFERENT")))
        if c.get("use_vnorm", True):
            # epsilon must matter here: the epsilon-0 selection is one the judge rejects in some head
            heads = [h for h in range(KV) if judge_rejects(ref[h], set(kept_top(plain, n_kept)[h]))]
            if not heads:
                return None
            notes.append("check: epsilon 0 instead of %s would keep positions the judge rejects in KV head(s) %s"
                         % (c["epsilon"], ",".join(map(str, heads))))
    return dict(q=q, k=k, v=v, scores=scores[0].tolist(), scores_t=scores[0], keep=keep, notes=notes,
                check=dict(n_sel=n_kept, margin=EXPECTED_MARGIN), n_kept=n_kept)


def gathered_order(gathered, source):
    """positions of the rows of gathered [1, heads, n, d] in source [1, heads, L, d], in gathered order"""
    out = []
    for h in range(source.shape[1]):
        pos = []
        for row in gathered[0, h]:
            hits = [i for i in range(source.shape[2]) if torch.equal(source[0, h, i], row)]
            assert len(hits) == 1, "gathered row matches %d original rows" % len(hits)
            pos.append(hits[0])
        out.append(pos)
    return out


def rekey_error(got, ref):
    """per KV head: max |got - ref| over the head's values / max |ref| of the head (as build/judge)"""
    return [float((got[h].double() - ref[h].double()).abs().max() / ref[h].double().abs().max())
            for h in range(ref.shape[0])]


def rotate_at(x, start, rotary):
    """[1, heads, n, d] rotated (HF half layout) at positions start .. start+n-1"""
    cos, sin = rotary(x, (start + torch.arange(x.shape[2])).unsqueeze(0))
    return x * cos.unsqueeze(1) + _rotate_half(x) * sin.unsqueeze(1)


def run_rerotation(P, c, seed):
    """kvpress KeyRerotationPress(press=KnormPress). k is drawn before RoPE and written so; kvpress
    compresses the cache's keys (rotated at positions 0..q_len-1 by HF's RoPE, float32) and returns
    the kept keys, sorted by position, re-rotated by (new - old) position to 0..n_kept-1 ("rekey").
    Redrawn unless every head's cut has a relative gap above REROTATE_MARGIN and the pre-RoPE key
    norms select alike (rotation keeps norms: float32 rounding decides nothing)."""
    KV, L, D = c["n_kv_heads"], c["q_len"], c["head_dim"]
    if c["policy"] != "knorm":
        raise SystemExit("%s: key rerotation cases are over knorm" % c["what"])
    q, k, v = draw(c, seed)
    n_kept = floor_int(L * (1 - c["ratio"]), L * (1 - Fraction(str(c["ratio"]))))
    rotary = HFRotaryEmbedding(D)
    k_rot = hf_rotate(k, rotary)
    module = make_module(c)
    module.rotary_emb = rotary  # KeyRerotationPress reads module.rotary_emb.inv_freq and module.head_dim
    dummy_hidden = torch.zeros(1, L, 1)
    inner = P["KnormPress"](compression_ratio=c["ratio"])
    press = P["KeyRerotationPress"](press=inner)
    scores = inner.score(module, dummy_hidden, k_rot, v, None, {})
    gaps = []
    for h in range(KV):
        if cut_is_tied(scores[0, h].tolist(), n_kept):
            return None
        desc = sorted(scores[0, h].tolist(), reverse=True)
        gap = (desc[n_kept - 1] - desc[n_kept]) / abs(desc[n_kept - 1])
        if not gap > REROTATE_MARGIN:
            return None
        gaps.append(gap)
    keep = kept_top(scores, n_kept)
    if kept_top(-k.norm(dim=-1), n_kept) != keep:
        return None
    gk, gv = press.compress(module, dummy_hidden, k_rot, v, None, {})
    order = gathered_order(gv, v)
    assert order == keep, "KeyRerotationPress kept other positions than KnormPress's top-k, or out of order"
    assert gk.shape == (1, KV, n_kept, D)
    rekey = gk[0].contiguous()
    # the same keys rotated straight at their new positions 0..n_kept-1, in float64
    r64 = HFRotaryEmbedding(D, dtype=torch.float64)
    idx = torch.tensor(keep).view(1, KV, n_kept, 1).expand(1, KV, n_kept, D)
    kept_pre = k.double().gather(2, idx)
    exact = rotate_at(kept_pre, 0, r64)[0]
    err64 = rekey_error(exact, rekey)
    if max(err64) > REKEY_TOLERANCE / 5:
        raise SystemExit("%s: kvpress's re-rotated keys differ from R(new position) k by %.3g" % (c["what"], max(err64)))
    perm = [i for i in range(0, D, 2)] + [i for i in range(1, D, 2)]  # interleaved pairs -> halves
    inv = [perm.index(i) for i in range(D)]
    variants = [("the kept keys left at their original positions (no re-rotation)", k_rot.gather(2, idx)[0]),
                ("re-rotated to positions 1..n_kept (off by one)", rotate_at(kept_pre, 1, r64)[0]),
                ("rotated in the interleaved RoPE layout (pairs 2i, 2i+1)",
                 rotate_at(kept_pre[..., perm], 0, r64)[..., inv][0])]
    caught = []
    for what, alt in variants:
        errs = rekey_error(alt, rekey)
        heads = [h for h in range(KV) if errs[h] > 100 * REKEY_TOLERANCE]
        if not heads:
            raise SystemExit("%s: %s is not told apart" % (c["what"], what))
        caught.append("check: %s: relative rekey error %s (judge: %g) in KV head(s) %s"
                      % (what, ", ".join("%.2g" % e for e in errs), REKEY_TOLERANCE, ",".join(map(str, heads))))
    notes = ["KeyRerotationPress(press=KnormPress(compression_ratio=%s)): keeps int(%d * (1 - %s)) = %d per head "
             "(the smallest key norms), sorted by position, re-rotated to positions 0..%d"
             % (c["ratio"], L, c["ratio"], n_kept, n_kept - 1),
             "q and k lines: BEFORE RoPE (vectors pre_rope); kvpress got the keys rotated at positions 0..%d by HF "
             "Llama RoPE (rotate_half, theta 10000, float32) and module.rotary_emb.inv_freq of HF's "
             "LlamaRotaryEmbedding; score lines: KnormPress's -||k|| of those rotated keys" % (L - 1),
             "rekey lines: the keys kvpress returns, per KV head n_kept x head_dim in new-position order; they "
             "differ from the float64 rotation of the pre-RoPE keys at 0..%d by %s relative to the head's largest"
             % (n_kept - 1, ", ".join("%.2g" % e for e in err64)),
             "relative gap at the cut per KV head: %s (draws under %g redrawn); the pre-RoPE key norms keep the same "
             "positions" % (", ".join("%.2g" % g for g in gaps), REROTATE_MARGIN)]
    notes += caught
    return dict(q=q, k=k, v=v, scores=scores[0].tolist(), scores_t=scores[0], keep=keep, notes=notes,
                check=dict(n_sel=n_kept, margin=REROTATE_MARGIN), n_kept=n_kept, rekey=rekey)


def run_case(P, c, seed):
    """Returns dict(q, k, v, scores [KV][L], keep [KV][...], notes [...]) or None to redraw."""
    if c.get("rerotate"):
        return run_rerotation(P, c, seed)
    if c["policy"] == "expected_attention":
        return run_expected(P, c, seed)
    if c["policy"] == "chunkpress":
        return run_chunkpress(P, c, seed)
    if c["policy"] == "composed":
        return run_composed(P, c, seed)
    KV, L, D = c["n_kv_heads"], c["q_len"], c["head_dim"]
    q, k, v = draw(c, seed)
    exact_kept = L * (1 - Fraction(str(c["ratio"])))
    n_kept = floor_int(L * (1 - c["ratio"]), exact_kept)
    attn = eager_attention(q, k)
    dummy_hidden = torch.zeros(1, L, 1)
    pos_values = torch.arange(L, dtype=torch.float32).view(1, 1, L, 1).expand(1, KV, L, D).contiguous()
    notes = []
    check = {}  # what to verify on the result
    policy, alloc = c["policy"], c["allocation"]

    if policy == "chunkkv":
        inner = build_press(P, c, c["scorer"])
        press = P["ChunkKVPress"](press=inner, chunk_length=c["chunk_length"])
        if c["scorer"] == "snapkv":
            # ChunkKVPress asserts attentions is None, so SnapKV computes its window attention itself
            # from hidden_states (q_proj = identity over the queries laid out [token][head*dim]) and
            # position_embeddings with cos = 1, sin = 0 (queries are already rotated).
            module, hidden, kwargs = window_path(c, q)
            via_attn = inner.score(make_module(c), dummy_hidden, k, v, attn, {})
            scores = inner.score(module, hidden, k, v, None, kwargs)
            diff = float((scores - via_attn).abs().max())
            notes.append("inner SnapKV scores from its own window attention (attentions=None, as ChunkKVPress "
                         "requires); max |diff| to scores from the script's eager attention: %.3g" % diff)
            check["snap_diff"] = diff
        else:
            module, hidden, kwargs = make_module(c), dummy_hidden, {}
            scores = inner.score(module, hidden, k, v, None, kwargs)
        gk, gv = press.compress(module, hidden, k, pos_values, None, kwargs)
        keep = positions_from_values(gv)
        assert all(kp == keep[0] for kp in keep), "ChunkKV kept different positions per head"
        n_chunks = L // c["chunk_length"] + (L % c["chunk_length"] > 0)
        exact_chunks = max(1, math.floor(n_chunks * (1 - Fraction(str(c["ratio"])))))
        n_chunks_kept = max(1, floor_int(n_chunks * (1 - c["ratio"]), exact_chunks))
        # chunk ambiguity check: chunk score = mean over the chunk of the sum over KV heads
        summed = scores[0].sum(dim=0)
        chunk_scores = [summed[s:s + c["chunk_length"]].mean() for s in range(0, L, c["chunk_length"])]
        if cut_is_tied(chunk_scores, n_chunks_kept):
            return None
        check.update(n_chunks_kept=n_chunks_kept)
        notes.append("ChunkKV: %d chunks (%d complete, length %d), keeps int(%d * (1 - ratio)) = %d of them"
                     % (n_chunks, L // c["chunk_length"], c["chunk_length"], n_chunks, n_chunks_kept))

    elif alloc == "adakv":
        inner = build_press(P, c, policy)
        press = P["AdaKVPress"](press=inner, alpha_safeguard=c["alpha"])
        module = make_module(c)
        a = attn if policy in ATTENTION_POLICIES else None
        scores = inner.score(module, dummy_hidden, k, v, a, {}).clone()
        window = set(range(L - c["window"], L)) if policy == "snapkv" else set()
        for h in range(KV):
            if tie_groups(scores[0, h].tolist(), exclude=window):
                return None
        n_safe = floor_int(n_kept * c["alpha"], Fraction(n_kept) * Fraction(str(c["alpha"])))
        after = scores.clone()
        safe_ties = []  # values tied at a head's n_safe cut (SnapKV's window: all max+1)
        for h in range(KV):
            if cut_is_tied(after[0, h].tolist(), n_safe):
                safe_ties.append(float(torch.sort(after[0, h], descending=True).values[n_safe - 1]))
            top = torch.topk(after[0, h], n_safe).indices
            after[0, h, top] = torch.finfo(after.dtype).max
        n_pruned = KV * (L - n_kept)
        if cut_is_tied((-after).flatten().tolist(), n_pruned):
            return None
        # which of the tied positions the safeguard lifts is irrelevant when all of them are kept anyway
        dropped_max = float(torch.sort(after.flatten()).values[n_pruned - 1])
        if any(t <= dropped_max for t in safe_ties):
            return None
        module.masked_key_indices = None
        out_k, out_v = press.compress(module, dummy_hidden, k, v, a, {})
        assert out_k is k and out_v is v, "AdaKVPress should return keys/values unchanged"
        b_idx, h_idx, s_idx = module.masked_key_indices
        masked = [set() for _ in range(KV)]
        for b, h, s in zip(b_idx.tolist(), h_idx.tolist(), s_idx.tolist()):
            assert b == 0 and s not in masked[h]
            masked[h].add(s)
        keep = [[i for i in range(L) if i not in masked[h]] for h in range(KV)]
        check.update(adakv_total=KV * n_kept)
        notes.append("AdaKV: n_kept = int(q_len*(1-ratio)) = %d per head on average%s, "
                     "n_safe = int(n_kept*alpha) = %d, n_pruned = n_kv_heads*(q_len-n_kept) = %d chosen "
                     "across heads" % (n_kept, " (window included)" if window else "", n_safe, n_pruned))
        # does the safeguard change anything? (same press with alpha_safeguard 0, for the notes only)
        bare = make_module(c)
        P["AdaKVPress"](press=inner, alpha_safeguard=0.0).compress(bare, dummy_hidden, k, v, a, {})
        bare_kept = [L - int((bare.masked_key_indices[1] == h).sum()) for h in range(KV)]
        lifted = [len(keep[h]) - bare_kept[h] for h in range(KV)]
        notes.append("AdaKV safeguard %s (kept per head with alpha_safeguard 0: %s)"
                     % ("binds: kept per head changes by %s" % ",".join("%+d" % x for x in lifted)
                        if any(lifted) else "does not bind",
                        ",".join(map(str, bare_kept))))
        check["safeguard_binds"] = any(lifted)
        if a is not None:
            wm, wh, wkw = window_path(c, q)
            wscores = inner.score(wm, wh, k, v, None, wkw)
            P["AdaKVPress"](press=inner, alpha_safeguard=c["alpha"]).compress(wm, wh, k, v, None, wkw)
            wkeep = [[i for i in range(L) if i not in set(wm.masked_key_indices[2][wm.masked_key_indices[1] == h]
                                                            .tolist())] for h in range(KV)]
            same = wkeep == keep
            notes.append("with attentions=None (SnapKV computing its window attention itself, as under AdaKV's "
                         "non-eager attention) the kept positions are %s; max |score diff| %.3g"
                         % ("the same" if same else "DIFFERENT", float((wscores - scores).abs().max())))
            if not same:
                return None
        if window and n_safe <= len(window):
            notes.append("AdaKV over SnapKV: the safeguard's top-n_safe positions are window positions "
                         "(score max+1), so it protects nothing beyond the window")

    else:
        press = build_press(P, c, policy)
        module = make_module(c)
        a = attn if policy in ATTENTION_POLICIES else None
        scores = press.score(module, dummy_hidden, k, v, a, {})
        if policy == "pyramidkv":
            n_sel = press.get_layer_budget(module, L)
            check["budget"] = n_sel
        else:
            n_sel = n_kept
        for h in range(KV):
            tied = cut_is_tied(scores[0, h].tolist(), n_sel)
            if tied and not c.get("ties"):
                return None
            if c.get("ties") and not tied:
                raise SystemExit("%s: meant to have tied scores at the cut but has none" % c["what"])
        if policy == "lagkv":
            if L >= c["n_sink"] + 2 * c["lag_size"]:
                # ranks inside a partition come from argsort of (key_score+value_score)/2: no ties there
                end = c["n_sink"] + ((L - c["n_sink"]) // c["lag_size"]) * c["lag_size"]
                shape = (1, KV, -1, c["lag_size"], D)
                raw = (press._get_states_score(k[:, :, c["n_sink"]:end].reshape(shape)) +
                       press._get_states_score(v[:, :, c["n_sink"]:end].reshape(shape))) / 2
                for row in raw.reshape(-1, c["lag_size"]).tolist():
                    if len(set(row)) != len(row):
                        return None
                if c.get("cross_scoring"):
                    notes.append("LagKV scoring branch: q_len >= n_sink + 2*lag_size; sink and tail (%d tokens) "
                                 "score 1, scored partitions get (key softmax + value softmax)/2 itself "
                                 "(cross_scoring: no rank), compared across partitions"
                                 % (L - end + c["lag_size"]))
                    sens = cross_sensitivity(P, c, press, module, k, v, scores, n_sel)
                    if sens is None:
                        return None
                    notes.extend(sens)
                else:
                    notes.append("LagKV scoring branch: q_len >= n_sink + 2*lag_size; sink and tail (%d tokens) "
                                 "score 1, scored partitions get rank/lag_size" % (L - end + c["lag_size"]))
            else:
                notes.append("LagKV short branch: q_len < n_sink + 2*lag_size; sinks score 1, token n_sink+i "
                             "scores i/(q_len-n_sink)")
            gk, gv = press.compress(module, dummy_hidden, k, v, a, {})
            keep = positions_from_keys(gk, k)
        else:
            gk, gv = press.compress(module, dummy_hidden, k, pos_values, a, {})
            keep = positions_from_values(gv)
        check["n_sel"] = n_sel
        if policy in ("snapkv", "pyramidkv", "tova"):
            wm, wh, wkw = window_path(c, q)
            wscores = press.score(wm, wh, k, v, None, wkw)
            _, wgv = press.compress(wm, wh, k, pos_values, None, wkw)
            same = positions_from_values(wgv) == keep
            notes.append("with attentions=None (kvpress computing the window attention itself) the kept "
                         "positions are %s; max |score diff| %.3g"
                         % ("the same" if same else "DIFFERENT", float((wscores - scores).abs().max())))
            if not same:
                return None
        if policy == "pyramidkv":
            branch = pyramid_branch(c)
            if c.get("expect_branch") and branch != c["expect_branch"]:
                raise SystemExit("%s: PyramidKV took the %s branch, expected %s" % (c["what"], branch,
                                                                                   c["expect_branch"]))
            notes.append("PyramidKV get_layer_budget (%s branch) = %d kept per head, window included"
                         % (branch, n_sel))

    assert bool(torch.isfinite(scores).all())
    return dict(q=q, k=k, v=v, scores=scores[0].tolist(), scores_t=scores[0], keep=keep, notes=notes,
                check=check, n_kept=n_kept)


def judge_rejects(ref, kept):
    """True when `kept` (positions) is not a valid top-k under the reference scores `ref` as
    build/judge sees it (a kept score below a dropped one by more than 1e-6 relative)."""
    lo = min(ref[p] for p in kept)
    hi = max(ref[p] for p in range(len(ref)) if p not in kept)
    return lo < hi - 1e-6 * abs(hi)


def cross_sensitivity(P, c, press, module, k, v, scores, n_sel):
    """LagKV cross_scoring: recompute kvpress's score() with torch.Tensor.std forced to the BIASED
    estimator (unbiased=False) and, for comparison, with cross_scoring off (rank scoring). Returns
    note lines, or None (redraw) unless the biased std changes the kept set of at least one head
    so that build/judge rejects it, and rank scoring changes it too."""
    KV, L = c["n_kv_heads"], c["q_len"]
    dummy_hidden = torch.zeros(1, L, 1)
    again = press.score(module, dummy_hidden, k, v, None, {})
    assert torch.equal(again, scores), "LagKV score() is not reproducible"
    orig_std = torch.Tensor.std
    calls = []

    def biased_std(self, *args, **kwargs):
        calls.append(1)
        kwargs["unbiased"] = False
        return orig_std(self, *args, **kwargs)

    torch.Tensor.std = biased_std
    try:
        biased = press.score(module, dummy_hidden, k, v, None, {})
    finally:
        torch.Tensor.std = orig_std
    assert calls and torch.Tensor.std is orig_std, "the biased std was not used"
    # the patched std is the biased one: sqrt((d-1)/d) times kvpress's std on any row
    row = k[0, 0, :1]
    assert torch.allclose(row.std(unbiased=False), row.std() * math.sqrt((row.shape[-1] - 1) / row.shape[-1]))
    rank_press = P["LagKVPress"](compression_ratio=c["ratio"], n_sink=c["n_sink"], lag_size=c["lag_size"],
                                 cross_scoring=False)
    ranked = rank_press.score(module, dummy_hidden, k, v, None, {})
    ref = scores[0].tolist()
    caught, caught_rank = [], []
    for h in range(KV):
        if not cut_is_tied(biased[0, h].tolist(), n_sel):  # else its own choice would be ambiguous
            kept = set(torch.topk(biased[0, h], n_sel).indices.tolist())
            if judge_rejects(ref[h], kept):
                caught.append(h)
        # rank scores tie across lags (rank/lag_size repeats): count the head when the reference's
        # kept set is no top-k of the rank scores (so every rank-based choice differs from it) and
        # the reference's cut is wider than the judge's tolerance (so the judge rejects that choice)
        kept = set(torch.topk(scores[0, h], n_sel).indices.tolist())
        desc = sorted(ref[h], reverse=True)
        if judge_rejects(ranked[0, h].tolist(), kept) and desc[n_sel] < desc[n_sel - 1] - 1e-6 * abs(desc[n_sel - 1]):
            caught_rank.append(h)
    if not caught or not caught_rank:
        return None
    return ["cross_scoring check: recomputing these scores with a BIASED std (torch.std(unbiased=False), "
            "sqrt(%d/%d) of kvpress's unbiased one) changes the kept set of KV head(s) %s beyond the judge's "
            "1e-6 tie tolerance" % (c["head_dim"] - 1, c["head_dim"], ",".join(map(str, caught))),
            "cross_scoring check: rank scoring (cross_scoring off) would change the kept set of KV head(s) %s"
            % ",".join(map(str, caught_rank)),
            "cross_scoring check: draws where the biased std (or rank scoring) changed no head's kept set "
            "were redrawn with another seed"]


def pyramid_branch(c):
    """Which branch of PyramidKVPress.get_layer_budget applies (for the report only)."""
    L, w, r, beta = c["q_len"], c["window"], c["ratio"], c["beta"]
    mcp = w + L * (1 - r)
    lo = (mcp - w) / beta
    hi = (mcp - w) * 2 - lo
    if hi >= L - w:
        hi = L - w
        lo = (mcp - w) * 2 - hi
    return "pyramid" if L >= hi >= lo >= w else "fallback"


# ---------------------------------------------------------------------------------------
# writing and re-reading
# ---------------------------------------------------------------------------------------

def f32(x):
    return "%.9g" % x


def reference_name(c):
    if c.get("rerotate"):
        return "KeyRerotationPress over %s" % PRESS_CLASS[c["policy"]]
    if c["policy"] == "chunkpress":
        return "ChunkPress over %s" % PRESS_CLASS[c["scorer"]]
    if c["policy"] == "composed":
        return "ComposedPress([%s, %s])" % (PRESS_CLASS[c["first"]], PRESS_CLASS[c["scorer"]])
    if c["policy"] == "chunkkv":
        return "ChunkKVPress over %s" % PRESS_CLASS[c["scorer"]]
    if c["allocation"] == "adakv":
        return "AdaKVPress over %s" % PRESS_CLASS[c["policy"]]
    return PRESS_CLASS[c["policy"]]


def uses_window(c):
    return c["policy"] in ("snapkv", "pyramidkv") or c.get("scorer") == "snapkv"


def write_case(path, c, seed, r):
    H, KV, L, D = c["n_heads"], c["n_kv_heads"], c["q_len"], c["head_dim"]
    lines = ["kvevict-case 1",
             "# kept positions produced by running %s (tests/golden/tools/kvpress_cases.py)" % REF,
             "# inputs: torch.Generator seed %d, torch %s, float32" % (seed, torch.__version__)]
    lines += ["# " + n for n in r["notes"]]
    if c.get("ties"):
        lines.append("# tied scores straddle the cut; the kept set is torch.topk's (CPU) choice among them")
    win = uses_window(c)
    lines += ["kind select",
              "policy " + c["policy"]]
    if c["policy"] == "composed":
        lines += ["first " + c["first"],
                  "first_compression_ratio %.17g" % c["first_ratio"]]
    lines += ["reference %s %s" % (REF, reference_name(c)),
              "allocation " + c["allocation"],
              "n_layers %d" % c["n_layers"],
              "layer %d" % c["layer"],
              "n_heads %d" % H,
              "n_kv_heads %d" % KV,
              "head_dim %d" % D,
              "q_len %d" % L,
              "compression_ratio %.17g" % c["ratio"],
              "window %d" % (c["window"] if win else 0),
              "kernel %d" % (c["kernel"] if win else 1),
              "pooling " + ("avg" if win else "none")]
    if H > KV:
        lines.append("gqa mean")
    if c["policy"] == "pyramidkv":
        lines.append("beta %d" % c["beta"])
    if c["allocation"] == "adakv":
        lines.append("alpha_safeguard %.17g" % c["alpha"])
    if c["policy"] == "lagkv":
        lines.append("lag_size %d" % c["lag_size"])
        if c.get("cross_scoring"):
            lines.append("cross_scoring 1")
    if c["policy"] in ("lagkv", "streaming_llm", "expected_attention"):
        lines.append("n_sink %d" % c["n_sink"])
    if c["policy"] == "expected_attention":
        lines.append("n_future_positions %d" % c["n_future"])
        if "use_covariance" in c:
            lines.append("use_covariance %d" % c["use_covariance"])
        if "use_vnorm" in c:
            lines.append("use_vnorm %d" % c["use_vnorm"])
        if "epsilon" in c:
            lines.append("epsilon %.17g" % c["epsilon"])
        lines += ["rope half",
                  "rope_theta %.17g" % ROPE_THETA,
                  "vectors pre_rope"]
    if c.get("rerotate"):
        lines += ["rope half",
                  "rope_theta %.17g" % ROPE_THETA,
                  "vectors pre_rope",
                  "rerotate 1"]
    if c["policy"] in ("chunkkv", "chunkpress"):
        lines.append("chunk_length %d" % c["chunk_length"])
    if c["policy"] in ("chunkkv", "chunkpress", "composed"):
        lines.append("scorer " + c["scorer"])
    for tag, t in (("q", r["q"]), ("k", r["k"]), ("v", r["v"])):
        flat = t.reshape(-1).tolist()
        lines.append("%s %d %s" % (tag, len(flat), " ".join(f32(x) for x in flat)))
    for h in range(KV):
        lines.append("score %d %d %s" % (h, L, " ".join("-1e30" if x == DROPPED else f32(x)
                                                         for x in r["scores"][h])))
    for h in range(KV):
        lines.append("keep %d %d %s" % (h, len(r["keep"][h]), " ".join(str(p) for p in r["keep"][h])))
    if c.get("rerotate"):
        for h in range(KV):
            flat = r["rekey"][h].reshape(-1).tolist()
            lines.append("rekey %d %d %s" % (h, len(r["keep"][h]), " ".join(f32(x) for x in flat)))
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def verify_file(path, c, r):
    """Re-read a written case and check header, counts, round-trip of the numbers and the selection."""
    H, KV, L, D = c["n_heads"], c["n_kv_heads"], c["q_len"], c["head_dim"]
    recs, header = {}, None
    scores, keeps, rekeys = {}, {}, {}
    with open(path) as f:
        for line in f:
            tok = line.split()
            if not tok or tok[0].startswith("#"):
                continue
            if header is None:
                assert tok == ["kvevict-case", "1"], "bad header"
                header = True
                continue
            key = tok[0]
            if key in ("score", "keep"):
                h, n = int(tok[1]), int(tok[2])
                assert len(tok) == 3 + n, "%s %d: count %d but %d values" % (key, h, n, len(tok) - 3)
                dst = scores if key == "score" else keeps
                assert h not in dst and 0 <= h < KV, "bad or repeated %s head %d" % (key, h)
                dst[h] = [float(x) for x in tok[3:]] if key == "score" else [int(x) for x in tok[3:]]
            elif key == "rekey":
                h, n = int(tok[1]), int(tok[2])
                assert len(tok) == 3 + n * D, "rekey %d: %d keys but %d values" % (h, n, len(tok) - 3)
                assert h not in rekeys and 0 <= h < KV and len(keeps) == KV, "bad, repeated or early rekey %d" % h
                rekeys[h] = torch.tensor([float(x) for x in tok[3:]], dtype=torch.float32).view(n, D)
            else:
                assert key not in recs, "repeated record " + key
                recs[key] = tok[1:]
    for key, n in (("q", H * L * D), ("k", KV * L * D), ("v", KV * L * D)):
        vals = recs[key]
        assert int(vals[0]) == n == len(vals) - 1, "%s count" % key
        back = torch.tensor([float(x) for x in vals[1:]], dtype=torch.float32)
        assert torch.equal(back, r[key].reshape(-1)), "%s does not round-trip" % key
    for key, want in (("kind", "select"), ("policy", c["policy"]), ("allocation", c["allocation"]),
                      ("n_heads", str(H)), ("n_kv_heads", str(KV)), ("head_dim", str(D)), ("q_len", str(L)),
                      ("n_layers", str(c["n_layers"])), ("layer", str(c["layer"]))):
        assert recs[key] == [want], "%s is %r, want %r" % (key, recs[key], want)
    assert float(recs["compression_ratio"][0]) == c["ratio"]
    if c["policy"] == "composed":
        order = list(recs)
        assert recs["first"] == [c["first"]] and float(recs["first_compression_ratio"][0]) == c["first_ratio"]
        assert order.index("first") == order.index("policy") + 1 == order.index("first_compression_ratio") - 1
    else:
        assert "first" not in recs and "first_compression_ratio" not in recs
    if c["policy"] in ("chunkpress", "chunkkv"):
        assert recs["chunk_length"] == [str(c["chunk_length"])]
    if c.get("scorer"):
        assert recs["scorer"] == [c["scorer"]]
    if c.get("cross_scoring"):
        order = list(recs)
        assert recs["cross_scoring"] == ["1"] and order.index("cross_scoring") == order.index("lag_size") + 1, \
            "cross_scoring 1 should follow lag_size"
    else:
        assert "cross_scoring" not in recs
    assert ("gqa" in recs) == (H > KV)
    if c["policy"] == "expected_attention" or c.get("rerotate"):
        assert recs["vectors"] == ["pre_rope"] and recs["rope"] == ["half"]
        assert float(recs["rope_theta"][0]) == ROPE_THETA
    if c.get("rerotate"):
        assert recs["rerotate"] == ["1"] and set(rekeys) == set(range(KV)), "rerotate 1 and a rekey line per head"
        for h in range(KV):
            assert rekeys[h].shape[0] == len(keeps[h]), "rekey %d: count differs from keep" % h
            assert torch.equal(rekeys[h], r["rekey"][h]), "rekey %d does not round-trip" % h
        for key in ("n_future_positions", "use_covariance", "use_vnorm", "epsilon"):
            assert key not in recs, key
    elif c["policy"] == "expected_attention":
        assert recs["n_sink"] == [str(c["n_sink"])] and recs["n_future_positions"] == [str(c["n_future"])]
        for key in ("use_covariance", "use_vnorm"):
            assert recs.get(key) == ([str(int(c[key]))] if key in c else None), key
        assert (float(recs["epsilon"][0]) == c["epsilon"]) if "epsilon" in c else "epsilon" not in recs
    else:
        for key in ("vectors", "n_future_positions", "use_covariance", "use_vnorm", "epsilon"):
            assert key not in recs, key
    if not c.get("rerotate"):
        assert "rerotate" not in recs and not rekeys, "rerotate or rekey lines in a case without rerotation"
    for key in ("window", "kernel"):
        int(recs[key][0])
    assert set(scores) == set(range(KV)) and set(keeps) == set(range(KV)), "score/keep lines per KV head"
    for h in range(KV):
        assert len(scores[h]) == L
        back = torch.tensor(scores[h], dtype=torch.float32)
        assert torch.equal(back, r["scores_t"][h]), "scores of head %d do not round-trip" % h
        kp = keeps[h]
        assert kp == sorted(set(kp)) and all(0 <= p < L for p in kp), "keep %d not ascending/unique" % h
    ck = r["check"]
    counts = [len(keeps[h]) for h in range(KV)]
    if "n_sel" in ck:
        assert all(n == ck["n_sel"] for n in counts), "kept counts %s, expected %d" % (counts, ck["n_sel"])
    if "adakv_total" in ck:
        assert sum(counts) == ck["adakv_total"], "AdaKV kept %d in total, expected %d" % (sum(counts),
                                                                                         ck["adakv_total"])
    if "n_chunks_kept" in ck:
        cl = c["chunk_length"]
        starts = sorted({p - p % cl for p in keeps[0]})
        assert len(starts) == ck["n_chunks_kept"], "kept chunks"
        assert keeps[0] == [p for s in starts for p in range(s, min(s + cl, L))], "partial chunks kept"
    if "chunk_counts" in ck:
        # chunk by chunk: the chunk's count, its highest scores (no tie at any chunk's cut)
        for h in range(KV):
            for (a, b), n in zip(chunk_bounds(L, c["chunk_length"]), ck["chunk_counts"]):
                kept = [p for p in keeps[h] if a <= p < b]
                assert len(kept) == n, "head %d chunk [%d, %d) keeps %d, expected %d" % (h, a, b, len(kept), n)
                lo = min(scores[h][p] for p in kept)
                hi = max((scores[h][p] for p in range(a, b) if p not in kept), default=-math.inf)
                assert lo > hi, "head %d chunk [%d, %d): not its top %d" % (h, a, b, n)
    elif c["policy"] != "chunkkv":
        # the kept positions are the highest scores of their head (ties allowed only at the cut;
        # composed: the positions the first press dropped score -1e30)
        for h in range(KV):
            kept = set(keeps[h])
            lo = min(scores[h][p] for p in kept)
            hi = max((scores[h][p] for p in range(L) if p not in kept), default=-math.inf)
            assert lo >= hi, "head %d keeps a score below a dropped one" % h
            if not c.get("ties"):
                assert lo > hi, "head %d: tie at the cut" % h
            if "margin" in ck:
                assert lo - hi > ck["margin"] * abs(lo), "head %d: gap at the cut below the margin" % h
    if "first_kept" in ck:
        for h in range(KV):
            fk = ck["first_kept"][h]
            assert set(keeps[h]) <= set(fk) and set(range(L - c["window"], L)) <= set(keeps[h])
            assert [p for p in range(L) if scores[h][p] > -1e29] == fk, "head %d: -1e30 marks" % h
    return counts


# ---------------------------------------------------------------------------------------

def generate(out_dir, cases, first_number, seed_base, run, write, verify, unusable="no tie-free draw"):
    """For each case, numbered from first_number: draws from seed seed_base + number, redrawn with
    seed + 100 while run(case, seed) returns None (at most 50 times), writes NN-kvpress-<what>.case
    into out_dir and reads it back. Yields (file name, seed, case, result, what verify returned).
    The other generators in this folder use it too."""
    os.makedirs(out_dir, exist_ok=True)
    for i, c in enumerate(cases):
        number = first_number + i
        seed = seed_base + number
        for _ in range(50):
            r = run(c, seed)
            if r is not None:
                break
            seed += 100
        else:
            raise SystemExit("%s: %s in 50 attempts" % (c["what"], unusable))
        name = "%02d-kvpress-%s.case" % (number, c["what"])
        path = os.path.join(out_dir, name)
        write(path, c, seed, r)
        yield name, seed, c, r, verify(path, c, r)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("kvpress_dir", help="checkout of NVIDIA/kvpress@%s (contains kvpress/)" % COMMIT[:7])
    ap.add_argument("out_dir", help="directory the .case files are written into")
    args = ap.parse_args()
    torch.set_num_threads(1)
    P = load_kvpress(args.kvpress_dir)
    for name, seed, c, r, counts in generate(args.out_dir, CASES, FIRST_NUMBER, 7000,
                                             lambda c, seed: run_case(P, c, seed), write_case,
                                             verify_file):
        groups = [tie_groups(r["scores"][h], exclude={p for p, x in enumerate(r["scores"][h]) if x == DROPPED})
                  for h in range(c["n_kv_heads"])]
        tie_desc = ", ".join("h%d:%s" % (h, "+".join(str(len(g)) for g in gs) if gs else "-")
                             for h, gs in enumerate(groups))
        print("%-42s seed %-5d kept per KV head %-16s tie groups (sizes) %s"
              % (name, seed, ",".join(map(str, counts)), tie_desc))
        if c.get("ties"):
            for h in range(c["n_kv_heads"]):
                vals = r["scores"][h]
                cut = sorted(vals, reverse=True)[len(r["keep"][h]) - 1]
                tied = [p for p in range(c["q_len"]) if vals[p] == cut]
                print("    head %d: positions %s tie at the cut, kept %s"
                      % (h, tied, [p for p in tied if p in r["keep"][h]]))
    print("%d cases written to %s and re-read" % (len(CASES), args.out_dir))


if __name__ == "__main__":
    main()
