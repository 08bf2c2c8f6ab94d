#!/usr/bin/env python3
"""Golden "select" cases for kvpress's BlockPress over KeyDiffPress (the KeyDiff paper's method).

usage: python3 tests/golden/tools/blockpress_cases.py KVPRESS_DIR OUT_DIR

KVPRESS_DIR is the kvpress checkout kvpress_cases.py takes (same commit, same transformers stub,
loaded through it). BlockPress keeps the first n_kept = int(q_len * (1 - compression_ratio))
tokens, then for each block of block_size tokens after them scores the kept tokens and the block
together with the inner press and keeps the top n_kept. For each case the script draws float32
keys from a seeded torch.Generator (the vectors are taken as already rotated, "vectors post_rope";
KeyDiff reads keys only) and runs BlockPress's own compress() with the values replaced by the
positions, so that the kept positions can be read back ("keep" lines). A draw is redrawn when a
score at any block's cut is tied within TIE (relative), or when the result equals what KeyDiff
keeps scoring the whole prompt at once (the case would not test the blocks). Each written file
is read back and checked.
"""

import argparse
import importlib
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kvpress_cases as K  # noqa: E402  (its kvpress loader and number format)

FIRST_NUMBER = 64
TIE = 1e-5

CASES = [
    dict(what="blockpress-keydiff", n_kv_heads=2, head_dim=16, q_len=48, ratio=0.5, block_size=8),
    dict(what="blockpress-keydiff-partial-block", n_kv_heads=2, head_dim=8, q_len=43, ratio=0.6,
         block_size=6),
]


def module(c):
    return K.make_module(dict(n_heads=c["n_kv_heads"], n_kv_heads=c["n_kv_heads"], n_layers=1,
                              layer=0, head_dim=c["head_dim"]))


def run(P, c, seed):
    keydiff = importlib.import_module("kvpress.presses.keydiff_press").KeyDiffPress
    block = importlib.import_module("kvpress.presses.block_press").BlockPress
    g = torch.Generator().manual_seed(seed)
    KV, L, D = c["n_kv_heads"], c["q_len"], c["head_dim"]
    k = torch.randn(1, KV, L, D, generator=g).contiguous()
    q = torch.randn(1, KV, L, D, generator=g).contiguous()  # unused by KeyDiff; the format needs q
    n_kept = int(L * (1 - c["ratio"]))
    m, hidden = module(c), torch.zeros(1, L, KV)
    inner = keydiff(compression_ratio=c["ratio"])
    # the cuts BlockPress makes, replayed with the press's own score() to look for ties
    kept = torch.arange(n_kept).expand(1, KV, -1)
    for i in range(n_kept, L, c["block_size"]):
        cur = torch.cat([kept, torch.arange(i, min(i + c["block_size"], L)).expand(1, KV, -1)], dim=-1)
        s = inner.score(m, None, k.gather(2, cur.unsqueeze(-1).expand(-1, -1, -1, D)), None, None, {})
        top = s.sort(dim=-1, descending=True).values
        gap = (top[..., n_kept - 1] - top[..., n_kept]).abs() / top.abs().max()
        if float(gap.min()) < TIE:
            return None
        kept = cur.gather(-1, s.topk(n_kept, dim=-1).indices)
    positions = torch.arange(L, dtype=torch.float32).view(1, 1, L, 1).expand(1, KV, L, D).contiguous()
    _, gv = block(press=inner, block_size=c["block_size"]).compress(m, hidden, k, positions, None, {})
    keep = [sorted(int(x) for x in gv[0, h, :, 0].tolist()) for h in range(KV)]
    assert keep == [sorted(kept[0, h].tolist()) for h in range(KV)], "the replay differs from BlockPress"
    whole = inner.score(m, None, k, None, None, {}).topk(n_kept, dim=-1).indices
    if all(sorted(whole[0, h].tolist()) == keep[h] for h in range(KV)):
        return None
    return dict(q=q, k=k, keep=keep, n_kept=n_kept)


def write_case(path, c, seed, r):
    KV, L, D = c["n_kv_heads"], c["q_len"], c["head_dim"]
    lines = ["kvevict-case 1",
             "# kept positions produced by running %s BlockPress(press=KeyDiffPress) "
             "(tests/golden/tools/blockpress_cases.py)" % K.REF,
             "# inputs: torch.Generator seed %d, torch %s, float32; q is not read by KeyDiff"
             % (seed, torch.__version__),
             "# n_kept %d; KeyDiff scoring the whole prompt at once keeps another set" % r["n_kept"],
             "kind select",
             "policy blockpress",
             "reference %s BlockPress over KeyDiffPress" % K.REF,
             "scorer keydiff",
             "n_layers 1",
             "layer 0",
             "n_heads %d" % KV,
             "n_kv_heads %d" % KV,
             "head_dim %d" % D,
             "q_len %d" % L,
             "compression_ratio %.17g" % c["ratio"],
             "block_size %d" % c["block_size"],
             "window 0",
             "kernel 1",
             "pooling none"]
    for tag, t in (("q", r["q"]), ("k", r["k"])):
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
                assert len(keeps[int(tok[1])]) == int(tok[2]) == r["n_kept"], "keep count"
            elif tok[0] in ("q", "k"):
                floats[tok[0]] = torch.tensor([float(x) for x in tok[2:]])
                assert len(floats[tok[0]]) == int(tok[1]), "%s count" % tok[0]
    assert [keeps[h] for h in range(c["n_kv_heads"])] == r["keep"], "keep lines"
    for tag in ("q", "k"):
        assert torch.equal(floats[tag], r[tag].reshape(-1)), "%s does not round-trip" % tag


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("kvpress_dir")
    ap.add_argument("out_dir")
    args = ap.parse_args()
    torch.set_num_threads(1)
    P = K.load_kvpress(args.kvpress_dir)
    for name, seed, c, r, _ in K.generate(args.out_dir, CASES, FIRST_NUMBER, 9500,
                                          lambda c, seed: run(P, c, seed), write_case, verify_file,
                                          "no usable draw"):
        print("%-44s seed %-5d kept %d of %d per KV head, blocks of %d"
              % (name, seed, r["n_kept"], c["q_len"], c["block_size"]))
    print("%d cases written to %s and re-read" % (len(CASES), args.out_dir))


if __name__ == "__main__":
    main()
