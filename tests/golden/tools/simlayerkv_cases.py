#!/usr/bin/env python3
"""Golden "select" cases for kvevict's SimLayerKV, produced by running kvpress's SimLayerKVPress.

usage: python3 tests/golden/tools/simlayerkv_cases.py KVPRESS_DIR OUT_DIR

KVPRESS_DIR is the kvpress checkout kvpress_cases.py takes (same commit, same transformers stub,
loaded through it). For each case the script draws float32 queries, keys and values from a seeded
torch.Generator, feeds the queries to SimLayerKVPress through an identity q_proj with identity RoPE
(the vectors are taken as already rotated, "vectors post_rope"), and runs the press's own
compress() with the values replaced by the positions, so that the kept positions can be read back
("keep" lines). The attention sum the press compares with lazy_threshold is recomputed the press's
way and noted in the file; a draw whose sum lies within MARGIN of the threshold is redrawn, so that
float rounding cannot flip the decision. Each written file is read back and checked.
"""

import argparse
import importlib
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kvpress_cases as K  # noqa: E402  (its kvpress loader, window path and number format)

FIRST_NUMBER = 61
MARGIN = 0.01

def case(**kw):
    c = dict(n_layers=1, layer=0)
    c.update(kw)
    return c


# what, heads, KV heads, head_dim, prompt length, n_last, n_initial, n_recent, lazy_threshold
# offset from the draw's attention sum (negative: lazy, the layer is compressed; positive: not)
CASES = [
    case(what="simlayerkv-lazy-gqa", n_heads=4, n_kv_heads=2, head_dim=16, q_len=48, n_last=2,
         n_initial=4, n_recent=12, offset=-0.05),
    case(what="simlayerkv-not-lazy", n_heads=2, n_kv_heads=2, head_dim=8, q_len=40, n_last=1,
         n_initial=4, n_recent=8, offset=+0.05),
    case(what="simlayerkv-lazy-mha", n_heads=2, n_kv_heads=2, head_dim=8, q_len=36, n_last=1,
         n_initial=2, n_recent=10, offset=-0.03),
]


def draw(c, seed):
    g = torch.Generator().manual_seed(seed)
    H, KV, L, D = c["n_heads"], c["n_kv_heads"], c["q_len"], c["head_dim"]
    q = torch.randn(1, H, L, D, generator=g)
    k = torch.randn(1, KV, L, D, generator=g)
    v = torch.randn(1, KV, L, D, generator=g)
    return q.contiguous(), k.contiguous(), v.contiguous()


def attention_sum(P, c, module, hidden, k, kwargs):
    """the press's is_lazy() quantity: window attention averaged, first n_initial + last n_recent"""
    snap = importlib.import_module("kvpress.presses.snapkv_press").SnapKVPress
    w = snap.compute_window_attention(module, hidden, k, c["n_last"], kwargs["position_embeddings"])
    w = w.mean((0, 1, 2))
    return float(w[:c["n_initial"]].sum() + w[-c["n_recent"]:].sum())


def run(P, c, seed):
    press_class = importlib.import_module("kvpress.presses.simlayerkv_press").SimLayerKVPress
    KV, L, D = c["n_kv_heads"], c["q_len"], c["head_dim"]
    q, k, v = draw(c, seed)
    module, hidden, kwargs = K.window_path(c, q)
    total = attention_sum(P, c, module, hidden, k, kwargs)
    threshold = round(total + c["offset"], 4)
    if not 0.0 < threshold < 1.0 or abs(total - threshold) < MARGIN:
        return None
    press = press_class(lazy_threshold=threshold, n_last=c["n_last"], n_recent=c["n_recent"],
                        n_initial=c["n_initial"])
    lazy = press.is_lazy(module, hidden, k, kwargs["position_embeddings"])
    assert lazy == (c["offset"] < 0), "the press decided otherwise than the sum says"
    positions = torch.arange(L, dtype=torch.float32).view(1, 1, L, 1).expand(1, KV, L, D).contiguous()
    _, gv = press.compress(module, hidden, k, positions, None, kwargs)
    keep = [sorted(int(x) for x in gv[0, h, :, 0].tolist()) for h in range(KV)]
    if lazy:
        want = list(range(c["n_initial"])) + list(range(L - c["n_recent"] + c["n_last"], L))
        assert all(kp == want for kp in keep), "a lazy layer kept %s" % keep
    else:
        assert all(kp == list(range(L)) for kp in keep), "a layer that is not lazy dropped tokens"
    return dict(q=q, k=k, v=v, keep=keep, total=total, threshold=threshold, lazy=lazy)


def write_case(path, c, seed, r):
    H, KV, L, D = c["n_heads"], c["n_kv_heads"], c["q_len"], c["head_dim"]
    lines = ["kvevict-case 1",
             "# kept positions produced by running %s SimLayerKVPress "
             "(tests/golden/tools/simlayerkv_cases.py)" % K.REF,
             "# inputs: torch.Generator seed %d, torch %s, float32" % (seed, torch.__version__),
             "# attention of the last n_last queries on the first n_initial and the n_recent before "
             "them: %.6f; threshold %.4f: %s" % (r["total"], r["threshold"],
                                                  "lazy" if r["lazy"] else "not lazy"),
             "kind select",
             "policy simlayerkv",
             "reference %s SimLayerKVPress" % K.REF,
             "n_layers 1",
             "layer 0",
             "n_heads %d" % H,
             "n_kv_heads %d" % KV,
             "head_dim %d" % D,
             "q_len %d" % L,
             "lazy_threshold %.17g" % r["threshold"],
             "n_last %d" % c["n_last"],
             "n_initial %d" % c["n_initial"],
             "n_recent %d" % c["n_recent"]]
    for tag, t in (("q", r["q"]), ("k", r["k"]), ("v", r["v"])):
        flat = t.reshape(-1).tolist()
        lines.append("%s %d %s" % (tag, len(flat), " ".join(K.f32(x) for x in flat)))
    for h in range(KV):
        lines.append("keep %d %d %s" % (h, len(r["keep"][h]), " ".join(str(p) for p in r["keep"][h])))
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def verify_file(path, c, r):
    keeps, floats = {}, {}
    with open(path) as f:
        for line in f:
            tok = line.split()
            if not tok or tok[0].startswith("#"):
                continue
            if tok[0] == "keep":
                keeps[int(tok[1])] = [int(x) for x in tok[3:]]
                assert len(keeps[int(tok[1])]) == int(tok[2]), "keep count"
            elif tok[0] in ("q", "k", "v"):
                floats[tok[0]] = torch.tensor([float(x) for x in tok[2:]])
                assert len(floats[tok[0]]) == int(tok[1]), "%s count" % tok[0]
    assert [keeps[h] for h in range(c["n_kv_heads"])] == r["keep"], "keep lines"
    for tag in ("q", "k", "v"):
        assert torch.equal(floats[tag], r[tag].reshape(-1)), "%s does not round-trip" % tag


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("kvpress_dir")
    ap.add_argument("out_dir")
    args = ap.parse_args()
    torch.set_num_threads(1)
    P = K.load_kvpress(args.kvpress_dir)
    for name, seed, c, r, _ in K.generate(args.out_dir, CASES, FIRST_NUMBER, 9000,
                                          lambda c, seed: run(P, c, seed), write_case, verify_file,
                                          "no draw away from the threshold"):
        print("%-36s seed %-5d sum %.6f threshold %.4f %s, kept %s per KV head"
              % (name, seed, r["total"], r["threshold"], "lazy" if r["lazy"] else "not lazy",
                 ",".join(str(len(kp)) for kp in r["keep"])))
    print("%d cases written to %s and re-read" % (len(CASES), args.out_dir))


if __name__ == "__main__":
    main()
