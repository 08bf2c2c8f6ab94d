#!/usr/bin/env python3
"""train_passkey.py - rebuild models/stories260K-passkey.bin from models/stories260K.bin.

A development tool (Python 3 + PyTorch); neither the build nor the tests need it.

It fine-tunes every weight of stories260K (llama2.c checkpoint, read and written in exactly the
layout examples/engine.h's model_load reads) so that it copies a 5-digit passkey from anywhere in
its context, then measures held-out passkey recall.

Recipe (the one models/README.md gives)
  * 600 steps of AdamW (betas 0.9/0.999, eps 1e-8, lr 3e-3 after a 50-step linear warm-up:
    lr = 3e-3 * (step + 1) / 50 for the first 50 steps, then constant; no weight decay, no decay
    of the rate, no gradient clipping); float32; seed 0 for torch and for Python's random (which
    draws every span, depth and digit).
  * Batch: 8 sequences of exactly 256 tokens:
        BOS, filler with the needle inserted, question and answer
    - the needle " The pass key is D D D D D. Remember it. D D D D D is the pass key." goes in at
      a uniformly random token offset of the filler (0 .. len(filler), both ends included);
    - the question and answer " What is the pass key? The pass key is D D D D D." end the
      sequence (D: five random digits 0-9, the same passkey in the needle and the answer);
    - the filler is a random span of TinyStories tokens, exactly as long as needed to make 256
      tokens, so nothing is cut or padded and the question and answer always end the sequence.
  * Loss: next-token cross-entropy at all 255 positions, the 5 positions that predict the answer
    digits weighted 30 (the others 1), normalised by the sum of the weights.

Text and tokens
  * data/tinystories-valid-68.txt holds stories separated by lines "<|endoftext|>". Those lines
    are taken as story boundaries (as build/compare does): each story, trimmed of surrounding
    whitespace, is encoded WITHOUT BOS, and the stories' tokens are joined in file order into one
    stream; a span may run from one story into the next (no BOS or separator between them).
  * Encoding is llama2.c's encode, as tok_encode in examples/engine.h: a dummy-prefix space token
    when the text is not empty, one token per UTF-8 character (bytes of unknown characters as
    <0xXX> tokens), then repeated merges of the adjacent pair whose joined piece has the highest
    score (the leftmost such pair on a tie). The merges use a heap, which picks the same pair as
    llama2.c's scan at every step. The needle and question strings above begin with a space: that
    space is the dummy prefix of the encoding of the rest of the string. Each digit is a token of
    its own, preceded by the space token; the answer thus reads "is", " ", D, " ", D, ... ".".

Held-out split
  * The stories of the text file are split 80/20 in file order: training spans come only from
    the first 80% (54 of the 68 stories), the evaluation's filler only from the last 20% (14), so
    the recall measured is on filler text never seen in training. The provided
    models/stories260K-passkey.bin was trained on spans of the whole file, so for it this filler
    is not held out.
  * The fine-tune memorises its training text: the next-token NLL of 255-token spans (after BOS)
    goes from about 1.4-1.5 for stories260K to about 0.4 on the training stories and about 3 on
    TinyStories text it did not see (for this tool's result and the provided model alike). The
    models still write stories from a story prompt, but for language-modelling measurements use
    stories260K.bin.

Evaluation (held-out passkey recall)
  * N trials (--trials, default 100); each draws five digits and a span of held-out filler, and
    runs at the depths 0, 0.25, 0.5, 0.75 and 1 (the same digits and filler at every depth, and
    the same trials for every model: they come from --eval-seed, not from the training RNG).
  * The prompt is exactly 256 tokens: BOS, the filler with the needle at token offset
    floor(depth * F + 0.5) of its F filler tokens (0: right after BOS, 1: right before the
    question), then " What is the pass key? The pass key is" and the space token that precedes
    the first digit (the last prompt token is the query that retrieves the first digit).
  * Greedy decoding: 9 tokens, each the argmax of the logits and fed back as the next input. The
    answer format is D, " ", D, " ", D, " ", D, " ", D, so the digits are read at the generated
    tokens 1, 3, 5, 7 and 9: digit i is right if that token is the digit token of the passkey's
    i-th digit (any other token there is wrong). Reported: exact recall (all 5 right) and
    per-digit accuracy, per depth and over all depths (chance: 1e-5 and 0.1), and the share of
    the 5 read tokens that are digit tokens at all (a model that does not answer in the format
    scores below chance).
  * At the end of training the new model, the original (--model) and the provided fine-tuned
    model (--reference) are evaluated on the same trials; --eval-only evaluates given models.
    During training, --eval-every steps, a smaller evaluation (--trials-during trials) prints the
    held-out digit accuracy; it draws nothing from the training RNG, so it changes nothing.

Run (paths default to the repository's files, found from this file's place in it)
    python3 tools/train_passkey.py            # writes models/stories260K-passkey-repro.bin
    python3 tools/train_passkey.py --out OUT.bin --steps 600 --threads 2 --seed 0
    python3 tools/train_passkey.py --eval-only models/stories260K.bin models/stories260K-passkey.bin
    python3 tools/train_passkey.py --greedy 40  # greedy story from BOS (forward check)
    python3 tools/train_passkey.py --nll-csv nll-torch.csv --nll-tokens 256
  --greedy 40 on stories260K prints "Once upon a time, there was a little girl named Lily. She
  loved to play outside in the park. ...", as build/generate --temp 0 does. --nll-csv writes
  "t,nll" for the first tokens of the text encoded as build/compare encodes it (each story with
  BOS, one stream); they agree to about 1e-5 with the "nll" column of
      build/compare --model models/stories260K.bin --tokenizer models/tok512.bin
                    --text data/tinystories-valid-68.txt --tokens 256 --policy full --csv nll-c.csv
  The default output is models/stories260K-passkey-repro.bin; the provided
  models/stories260K-passkey.bin is only written when given explicitly as --out, and the input
  model never is.

Time: 1.5-4 s a step on 2 threads, depending on the machine's load: 600 steps took 42 minutes
on a 2-core machine busy with other jobs (load 6-9), about 2 s a step (20 minutes) when it was
less busy; the final evaluation takes about a minute a model (500 prompts).
PyTorch's speed here depends on the BLAS it runs on: a PyTorch that uses the system's BLAS
(Debian's python3-torch does) runs a few times slower on the reference BLAS than on OpenBLAS
(Debian: libopenblas0). The result is not bit for bit the provided model (its random streams and
floating-point order are not reproduced), but it is trained the same way.
"""
import argparse
import hashlib
import heapq
import math
import os
import random
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BOS = 1
CTX = 256                 # tokens per training sequence and per evaluation prompt
ANSWER_WEIGHT = 30.0      # loss weight of the positions that predict the answer digits
DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
NEEDLE = " The pass key is {k}. Remember it. {k} is the pass key."
QUESTION = " What is the pass key? The pass key is"
ANSWER = " {k}."          # follows QUESTION in training sequences
HELD_OUT_FRACTION = 0.2   # last 20% of the stories: evaluation filler only


def repo_path(rel):
    return os.path.join(REPO, rel)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---- tokenizer (llama2.c format) -------------------------------------------------------------

class Tokenizer:
    """int32 max_token_length, then per token: float32 score, int32 length, the bytes."""

    def __init__(self, path, vocab_size):
        with open(path, "rb") as f:
            data = f.read()
        (self.max_len,) = struct.unpack_from("<i", data, 0)
        off = 4
        self.pieces, self.scores = [], []
        for i in range(vocab_size):
            score, n = struct.unpack_from("<fi", data, off)
            off += 8
            self.pieces.append(data[off:off + n])
            self.scores.append(score)
            off += n
        if off != len(data):
            raise ValueError("tokenizer %s: %d bytes left after %d tokens"
                             % (path, len(data) - off, vocab_size))
        self.ids = {}
        for i, p in enumerate(self.pieces):
            if p in self.ids:  # llama2.c's bsearch would pick either
                raise ValueError("tokenizer %s: piece %r twice" % (path, p))
            self.ids[p] = i
        self.space = self.ids[b" "]
        self.digit = [self.ids[str(d).encode()] for d in range(10)]
        # llama2.c starts the search for the best merge at -1e10f
        self.floor = struct.unpack("<f", struct.pack("<f", -1e10))[0]

    def encode(self, text, bos=False):
        """llama2.c's encode (tok_encode in examples/engine.h)."""
        b = text.encode("utf-8")
        toks = []
        if b and b" " in self.ids:  # the dummy prefix
            toks.append(self.ids[b" "])
        i = 0
        while i < len(b):
            n = 1
            while n < 4 and i + n < len(b) and (b[i + n] & 0xC0) == 0x80:
                n += 1
            ch = b[i:i + n]
            if ch in self.ids:
                toks.append(self.ids[ch])
            else:
                toks.extend(c + 3 for c in ch)  # <0xXX> byte tokens
            i += n
        toks = self._merge(toks)
        return [BOS] + toks if bos else toks

    def _merge(self, toks):
        # Best score first, leftmost first on a tie: the pair llama2.c's full scan picks. Nodes
        # keep their original index, so the heap order of equal scores is the text order; an
        # entry is stale once either side merged (its piece grew) or the right one is gone.
        n = len(toks)
        piece = [self.pieces[t] for t in toks]
        nxt = list(range(1, n + 1))
        prv = list(range(-1, n - 1))
        alive = [True] * n
        heap = []

        def push(i):
            j = nxt[i]
            if j >= n:
                return
            a, c = piece[i], piece[j]
            if len(a) + len(c) > self.max_len:
                return
            tid = self.ids.get(a + c)
            if tid is not None and self.scores[tid] > self.floor:
                heapq.heappush(heap, (-self.scores[tid], i, j, tid, len(a), len(c)))

        for i in range(n - 1):
            push(i)
        while heap:
            _, i, j, tid, la, lc = heapq.heappop(heap)
            if not (alive[i] and alive[j] and nxt[i] == j and len(piece[i]) == la
                    and len(piece[j]) == lc):
                continue
            toks[i] = tid
            piece[i] = self.pieces[tid]
            alive[j] = False
            nxt[i] = nxt[j]
            if nxt[j] < n:
                prv[nxt[j]] = i
            push(i)
            if prv[i] >= 0:
                push(prv[i])
        return [toks[i] for i in range(n) if alive[i]]

    def encode_continuation(self, s):
        """Tokens of s (which starts with a space) inside a text: the dummy prefix is its space."""
        assert s.startswith(" ")
        return self.encode(s[1:])

    def decode(self, prev, tok):
        """tok_decode of examples/engine.h: no leading space after BOS, <0xXX> as the byte."""
        p = self.pieces[tok]
        if prev == BOS and p.startswith(b" "):
            p = p[1:]
        if len(p) == 6 and p.startswith(b"<0x") and p.endswith(b">"):
            try:
                return bytes([int(p[3:5], 16)])
            except ValueError:
                pass
        return p


# ---- model (llama2.c checkpoint) -------------------------------------------------------------

class Model:
    """The weights in llama2.c's order (examples/engine.h, model_load) as torch tensors.

    W[out][in] matrices, as llama2.c stores them: y = x @ W.T."""

    def __init__(self, path):
        with open(path, "rb") as f:
            data = f.read()
        self.path = path
        self.header = struct.unpack_from("<7i", data, 0)
        dim, hidden, L, nh, nkv, vocab, seq = self.header
        self.shared = vocab > 0
        V = abs(vocab)
        if not (dim > 0 and hidden > 0 and L > 0 and nh > 0 and 0 < nkv <= nh and nh % nkv == 0
                and dim % nh == 0 and (dim // nh) % 2 == 0 and V > 0 and seq > 0):
            raise ValueError("%s: not a llama2.c header: %s" % (path, self.header))
        self.dim, self.hidden, self.n_layers = dim, hidden, L
        self.n_heads, self.n_kv_heads = nh, nkv
        self.vocab_size, self.seq_len = V, seq
        self.head_dim = hd = dim // nh
        kvd = hd * nkv
        self.shapes = [("emb", (V, dim)), ("rms_att", (L, dim)), ("wq", (L, dim, dim)),
                       ("wk", (L, kvd, dim)), ("wv", (L, kvd, dim)), ("wo", (L, dim, dim)),
                       ("rms_ffn", (L, dim)), ("w1", (L, hidden, dim)), ("w2", (L, dim, hidden)),
                       ("w3", (L, hidden, dim)), ("rms_final", (dim,))]
        rope_floats = seq * hd  # freq_cis_real and freq_cis_imag, seq_len * head_dim / 2 each
        n = sum(math.prod(s) for _, s in self.shapes) + rope_floats
        n += 0 if self.shared else V * dim
        if len(data) != 28 + 4 * n:
            raise ValueError("%s: %d bytes, its header needs %d" % (path, len(data), 28 + 4 * n))
        flat = np.frombuffer(data, dtype="<f4", offset=28).astype(np.float32)
        self.w = {}
        off = 0
        for name, shape in self.shapes:
            k = math.prod(shape)
            self.w[name] = torch.from_numpy(flat[off:off + k].copy()).view(shape)
            off += k
        # the RoPE tables: unused (RoPE is computed below), written back as they were read
        self.rope_bytes = data[28 + 4 * off:28 + 4 * (off + rope_floats)]
        off += rope_floats
        if not self.shared:
            self.shapes.append(("wcls", (V, dim)))
            self.w["wcls"] = torch.from_numpy(flat[off:off + V * dim].copy()).view(V, dim)
        # interleaved RoPE, theta 10000, angles in double as kvevict forms them
        freq = 10000.0 ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
        ang = torch.arange(seq, dtype=torch.float64)[:, None] * freq[None, :]
        self.cos = torch.cos(ang).float()
        self.sin = torch.sin(ang).float()

    def params(self):
        return [self.w[name] for name, _ in self.shapes]

    def save(self, path):
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(struct.pack("<7i", *self.header))
            for name, _ in self.shapes:
                if name == "wcls":
                    f.write(self.rope_bytes)
                f.write(self.w[name].detach().contiguous().numpy().astype("<f4").tobytes())
            if self.shared:
                f.write(self.rope_bytes)
        os.replace(tmp, path)

    @staticmethod
    def _rmsnorm(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w

    def _rope(self, x, start):
        # x [B, T, H, hd]: pairs (x[2i], x[2i+1]) rotated by pos * theta^(-2i/hd)
        T = x.shape[1]
        cos = self.cos[start:start + T][None, :, None, :]
        sin = self.sin[start:start + T][None, :, None, :]
        x0, x1 = x[..., 0::2], x[..., 1::2]
        return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)

    def forward(self, tokens, start=0, cache=None):
        """Logits [B, T, V] of tokens [B, T] at positions start..start+T-1. cache: a list of
        per-layer (k, v) of the earlier positions, extended in place (None: no cache)."""
        w = self.w
        B, T = tokens.shape
        nh, nkv, hd = self.n_heads, self.n_kv_heads, self.head_dim
        group = nh // nkv
        S = start + T
        mask = (torch.arange(S)[None, :] > (start + torch.arange(T))[:, None])
        x = w["emb"][tokens]
        for l in range(self.n_layers):
            xb = self._rmsnorm(x, w["rms_att"][l])
            q = self._rope((xb @ w["wq"][l].t()).view(B, T, nh, hd), start).transpose(1, 2)
            k = self._rope((xb @ w["wk"][l].t()).view(B, T, nkv, hd), start).transpose(1, 2)
            v = (xb @ w["wv"][l].t()).view(B, T, nkv, hd).transpose(1, 2)
            if cache is not None:
                if l < len(cache):
                    k = torch.cat((cache[l][0], k), dim=2)
                    v = torch.cat((cache[l][1], v), dim=2)
                    cache[l] = (k, v)
                else:
                    cache.append((k, v))
            # grouped-query attention: query head h reads KV head h // group
            k = k.repeat_interleave(group, dim=1)
            v = v.repeat_interleave(group, dim=1)
            att = (q * (1.0 / math.sqrt(hd))) @ k.transpose(-2, -1)
            att = torch.softmax(att.masked_fill(mask, float("-inf")), dim=-1)
            out = (att @ v).transpose(1, 2).reshape(B, T, self.dim)
            x = x + out @ w["wo"][l].t()
            xb = self._rmsnorm(x, w["rms_ffn"][l])
            x = x + (F.silu(xb @ w["w1"][l].t()) * (xb @ w["w3"][l].t())) @ w["w2"][l].t()
        x = self._rmsnorm(x, w["rms_final"])
        return x @ (w["emb"] if self.shared else w["wcls"]).t()


# ---- text ------------------------------------------------------------------------------------

def read_stories(path):
    """The stories of the file: split at lines "<|endoftext|>", trimmed, empty ones dropped."""
    with open(path, "r", encoding="utf-8", newline="") as f:
        lines = f.read().split("\n")
    stories, cur = [], []
    for line in lines:
        if line in ("<|endoftext|>", "<|endoftext|>\r"):
            stories.append("\n".join(cur))
            cur = []
        else:
            cur.append(line)
    stories.append("\n".join(cur))
    stories = [s.strip(" \n\r\t") for s in stories]
    return [s for s in stories if s]


def split_streams(tok, stories):
    n_train = len(stories) - int(round(HELD_OUT_FRACTION * len(stories)))
    train, held = [], []
    for i, s in enumerate(stories):
        (train if i < n_train else held).extend(tok.encode(s))
    return n_train, train, held


def digits_text(digits):
    return " ".join(str(d) for d in digits)


def training_example(rng, tok, stream):
    """(tokens [CTX], positions of the 5 answer digits)."""
    digits = [rng.randrange(10) for _ in range(5)]
    k = digits_text(digits)
    needle = tok.encode_continuation(NEEDLE.format(k=k))
    qa = tok.encode_continuation(QUESTION + ANSWER.format(k=k))
    n_fill = CTX - 1 - len(needle) - len(qa)
    start = rng.randrange(len(stream) - n_fill + 1)
    fill = stream[start:start + n_fill]
    at = rng.randint(0, n_fill)
    seq = [BOS] + fill[:at] + needle + fill[at:] + qa
    answer = [i for i, t in enumerate(seq) if t in tok.digit][-5:]
    assert len(seq) == CTX and [seq[i] for i in answer] == [tok.digit[d] for d in digits]
    assert answer[-1] == CTX - 2  # ... D "."
    return seq, answer


# ---- evaluation ------------------------------------------------------------------------------

def eval_prompts(tok, held, n_trials, seed):
    """{depth: (prompts LongTensor [n, CTX], digits LongTensor [n, 5])}"""
    rng = random.Random(seed)
    question = tok.encode_continuation(QUESTION) + [tok.space]
    # the prompt is the training format up to the first answer digit
    probe = tok.encode_continuation(QUESTION + ANSWER.format(k="1 2 3 4 5"))
    assert probe[:len(question)] == question and probe[len(question)] == tok.digit[1]
    trials = []
    for _ in range(n_trials):
        digits = [rng.randrange(10) for _ in range(5)]
        needle = tok.encode_continuation(NEEDLE.format(k=digits_text(digits)))
        n_fill = CTX - 1 - len(needle) - len(question)
        start = rng.randrange(len(held) - n_fill + 1)
        trials.append((digits, needle, held[start:start + n_fill]))
    out = {}
    for depth in DEPTHS:
        prompts = []
        for digits, needle, fill in trials:
            at = int(math.floor(depth * len(fill) + 0.5))
            p = [BOS] + fill[:at] + needle + fill[at:] + question
            assert len(p) == CTX
            prompts.append(p)
        out[depth] = (torch.tensor(prompts), torch.tensor([t[0] for t in trials]))
    return out


@torch.no_grad()
def greedy(model, prompts, steps):
    """Greedy continuation [B, steps] of prompts [B, T], with a KV cache."""
    cache = []
    logits = model.forward(prompts, 0, cache)
    nxt = logits[:, -1].argmax(-1)
    out = [nxt]
    pos = prompts.shape[1]
    for _ in range(steps - 1):
        logits = model.forward(nxt[:, None], pos, cache)
        pos += 1
        nxt = logits[:, -1].argmax(-1)
        out.append(nxt)
    return torch.stack(out, dim=1)


@torch.no_grad()
def evaluate(model, tok, prompts, batch=25):
    """{depth: (exact recall, digit accuracy, share of digit tokens read)}, and 'all'."""
    digit_ids = torch.tensor(tok.digit)
    res, all_ok, all_any = {}, [], []
    for depth, (p, digits) in prompts.items():
        ok, any_digit = [], []
        for i in range(0, p.shape[0], batch):
            read = greedy(model, p[i:i + batch], 9)[:, 0::2]  # generated tokens 1, 3, 5, 7, 9
            ok.append(read == digit_ids[digits[i:i + batch]])
            any_digit.append(torch.isin(read, digit_ids))
        ok, any_digit = torch.cat(ok), torch.cat(any_digit)
        res[depth] = (ok.all(dim=1).float().mean().item(), ok.float().mean().item(),
                      any_digit.float().mean().item())
        all_ok.append(ok)
        all_any.append(any_digit)
    ok, any_digit = torch.cat(all_ok), torch.cat(all_any)
    res["all"] = (ok.all(dim=1).float().mean().item(), ok.float().mean().item(),
                  any_digit.float().mean().item())
    return res


def print_eval(title, res, n_trials):
    print("%s  (%d trials per depth)" % (title, n_trials))
    print("  depth   exact recall   digit accuracy   digit tokens read")
    for key, (exact, digit, any_digit) in res.items():
        label = "all" if key == "all" else "%.2f" % key
        print("  %-5s   %12.3f   %14.3f   %17.3f" % (label, exact, digit, any_digit))
    sys.stdout.flush()


def eval_models(paths, tok, prompts, n_trials):
    for path in paths:
        model = Model(path)
        t0 = time.time()
        res = evaluate(model, tok, prompts)
        print_eval("%s (sha256 %s..., %.0f s)" % (path, sha256(path)[:16], time.time() - t0),
                   res, n_trials)


# ---- training --------------------------------------------------------------------------------

def train(args, model, tok, train_stream, held):
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    params = model.params()
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    during = eval_prompts(tok, held, args.trials_during, args.eval_seed + 1) \
        if args.eval_every > 0 else None
    t0 = time.time()
    for step in range(args.steps):
        lr = args.lr * min(1.0, (step + 1) / args.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        seqs, weights = [], []
        for _ in range(args.batch):
            seq, answer = training_example(random, tok, train_stream)
            w = [1.0] * (CTX - 1)
            for i in answer:
                w[i - 1] = ANSWER_WEIGHT  # the position that predicts the digit at i
            seqs.append(seq)
            weights.append(w)
        seqs = torch.tensor(seqs)
        weights = torch.tensor(weights)
        logits = model.forward(seqs[:, :-1])
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), seqs[:, 1:].reshape(-1),
                             reduction="none").view(seqs.shape[0], CTX - 1)
        loss = (ce * weights).sum() / weights.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % args.log_every == 0 or step == 0:
            ans = (ce * (weights > 1)).sum() / (weights > 1).sum()
            print("step %4d/%d  lr %.2e  loss %.4f  answer-digit nll %.4f  text nll %.4f  %.0f s"
                  % (step + 1, args.steps, lr, loss.item(), ans.item(),
                     ((ce * (weights == 1)).sum() / (weights == 1).sum()).item(),
                     time.time() - t0))
            sys.stdout.flush()
        if during is not None and (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            res = evaluate(model, tok, during)
            print("step %4d  held-out (%d trials per depth): exact %.3f  digit accuracy %.3f"
                  % (step + 1, args.trials_during, res["all"][0], res["all"][1]))
            sys.stdout.flush()
    for p in params:
        p.requires_grad_(False)
    return time.time() - t0


# ---- checks of the forward pass --------------------------------------------------------------

@torch.no_grad()
def print_greedy(model, tok, steps):
    gen = greedy(model, torch.tensor([[BOS]]), steps)[0].tolist()
    prev, text = BOS, b""
    for t in gen:
        text += tok.decode(prev, t)
        prev = t
    print(text.decode("utf-8", errors="replace"))


@torch.no_grad()
def write_nll(model, tok, text_path, n_tokens, out):
    """Per-token NLL of the text encoded as build/compare encodes it (each story with BOS)."""
    stream = []
    for s in read_stories(text_path):
        stream.extend(tok.encode(s, bos=True))
        if len(stream) >= n_tokens:
            break
    stream = stream[:n_tokens]
    if len(stream) > model.seq_len:
        raise SystemExit("--nll-tokens: at most the model's context, %d" % model.seq_len)
    x = torch.tensor([stream])
    logp = torch.log_softmax(model.forward(x[:, :-1])[0].double(), dim=-1)
    nll = -logp.gather(1, x[0, 1:, None])[:, 0]
    with open(out, "w") as f:
        f.write("t,nll\n")
        for t, v in enumerate(nll.tolist()):
            f.write("%d,%.6f\n" % (t, v))
    print("%d tokens, mean NLL %.6f -> %s" % (len(stream), nll.mean().item(), out))


# ---- main ------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="The recipe, the held-out split and the evaluation: "
                                        "see the top of this file.")
    ap.add_argument("--model", default=repo_path("models/stories260K.bin"),
                    help="the model to fine-tune (default: models/stories260K.bin)")
    ap.add_argument("--tokenizer", default=repo_path("models/tok512.bin"))
    ap.add_argument("--text", default=repo_path("data/tinystories-valid-68.txt"))
    ap.add_argument("--reference", default=repo_path("models/stories260K-passkey.bin"),
                    help="the provided fine-tuned model, evaluated after training for comparison")
    ap.add_argument("--out", default=None,
                    help="output model (default: models/stories260K-passkey-repro.bin)")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0, help="torch and Python RNG seed (0)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (2)")
    ap.add_argument("--trials", type=int, default=100, help="evaluation trials per depth (100)")
    ap.add_argument("--eval-seed", type=int, default=1234,
                    help="seed of the evaluation's digits and filler spans (1234)")
    ap.add_argument("--eval-every", type=int, default=100,
                    help="held-out digit accuracy every N steps during training (100; 0: never)")
    ap.add_argument("--trials-during", type=int, default=20,
                    help="trials per depth of the evaluations during training (20)")
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--no-baselines", action="store_true",
                    help="after training, evaluate only the new model")
    ap.add_argument("--eval-only", nargs="+", metavar="MODEL",
                    help="evaluate these models and exit (no training)")
    ap.add_argument("--greedy", type=int, metavar="N",
                    help="print N tokens of --model's greedy story from BOS and exit")
    ap.add_argument("--nll-csv", metavar="OUT",
                    help="write --model's per-token NLL of the text (encoded as build/compare "
                         "does) to OUT as t,nll and exit")
    ap.add_argument("--nll-tokens", type=int, default=256)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    if args.steps < 0 or args.batch < 1 or args.warmup < 1 or args.trials < 1:
        ap.error("--steps >= 0, --batch, --warmup and --trials >= 1")

    model = Model(args.eval_only[0] if args.eval_only else args.model)
    tok = Tokenizer(args.tokenizer, model.vocab_size)
    if args.greedy is not None:
        print_greedy(model, tok, args.greedy)
        return
    if args.nll_csv:
        write_nll(model, tok, args.text, args.nll_tokens, args.nll_csv)
        return

    stories = read_stories(args.text)
    n_train, train_stream, held = split_streams(tok, stories)
    print("text: %d stories; training spans from the first %d (%d tokens), held-out filler from "
          "the last %d (%d tokens)" % (len(stories), n_train, len(train_stream),
                                       len(stories) - n_train, len(held)))
    prompts = eval_prompts(tok, held, args.trials, args.eval_seed)
    if args.eval_only:
        eval_models(args.eval_only, tok, prompts, args.trials)
        return

    out = args.out or repo_path("models/stories260K-passkey-repro.bin")
    if os.path.exists(out) and os.path.samefile(out, args.model):
        ap.error("--out is the input model")
    print("fine-tuning %s: %d steps, batch %d x %d tokens, lr %g (warm-up %d), seed %d, "
          "%d threads" % (args.model, args.steps, args.batch, CTX, args.lr, args.warmup,
                          args.seed, args.threads))
    seconds = train(args, model, tok, train_stream, held)
    model.save(out)
    print("trained in %.1f s (%.1f min); wrote %s, sha256 %s"
          % (seconds, seconds / 60, out, sha256(out)))
    paths = [out]
    if not args.no_baselines:
        paths += [args.model] + ([args.reference] if os.path.exists(args.reference) else [])
    eval_models(paths, tok, prompts, args.trials)


if __name__ == "__main__":
    main()
