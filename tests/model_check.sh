#!/bin/sh
# model_check.sh BUILD MODEL_DIR TEXT - the examples on the real model (stories260K + tok512).
# Skipped, with a message, when MODEL_DIR does not hold the model. Exits nonzero on a failure.
#   1. greedy decoding from BOS prints "Once upon a time, there was a little girl named Lily"
#   2. the loader rejects a truncated file, a wrong header and a missing tokenizer, with a message
#   3. compare's stream-mode numbers of docs/results.md come out within 0.01 (needs TEXT)
#   4. SnapKV keeps the KL from the full cache below random selection in prompt mode (needs TEXT)
#   5. generate runs a long stream in constant memory
#   6. compare --attention engine (the engine's own attention, kvevict storing, scoring and
#      evicting) gives the numbers of --attention library, every policy, both modes (needs TEXT)
set -u
B=${1:-build}
D=${2:-}
T=${3:-}
if [ -z "$D" ] || [ ! -f "$D/stories260K.bin" ] || [ ! -f "$D/tok512.bin" ]; then
    echo "model-check: skipped: no model found (MODEL_DIR='$D')."
    echo "  Put stories260K.bin and tok512.bin (1 MB, from the tinyllamas model repository,"
    echo "  folder stories260K) in models/ or ../shared/models, or set MODEL_DIR=dir."
    exit 0
fi
M=$D/stories260K.bin
K=$D/tok512.bin
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
fail() { echo "model-check: FAIL: $*" >&2; exit 1; }
ok() { echo "model-check: ok: $*"; }

# 1. greedy decoding
out=$("$B/generate" --model "$M" --tokenizer "$K" --temp 0 --steps 24 2>"$tmp/err") ||
    fail "generate exited with an error: $(cat "$tmp/err")"
case "$out" in
"Once upon a time, there was a little girl named Lily"*) ok "greedy decoding: $out" ;;
*) fail "greedy decoding printed: $out" ;;
esac

# 2. loader errors: nonzero exit and a message naming the problem
expect_error() { # what, word the message must contain, command...
    what=$1 word=$2
    shift 2
    if "$@" >"$tmp/out" 2>"$tmp/err"; then fail "$what: exit status 0"; fi
    grep -q "$word" "$tmp/err" || fail "$what: the message does not say '$word': $(cat "$tmp/err")"
    ok "$what: $(head -n 1 "$tmp/err")"
}
head -c 500000 "$M" >"$tmp/truncated.bin"
{ head -c 28 /dev/zero; tail -c +29 "$M"; } >"$tmp/header.bin"
expect_error "truncated model" truncated \
    "$B/generate" --model "$tmp/truncated.bin" --tokenizer "$K" --steps 1
expect_error "wrong header" header \
    "$B/generate" --model "$tmp/header.bin" --tokenizer "$K" --steps 1
expect_error "tokenizer given as the model" header \
    "$B/compare" --model "$K" --tokenizer "$K" --text "$M" --policy full
expect_error "missing tokenizer" tokenizer \
    "$B/generate" --model "$M" --tokenizer "$tmp/no-such-tokenizer.bin" --steps 1
expect_error "missing tokenizer (compare)" tokenizer \
    "$B/compare" --model "$M" --tokenizer "$tmp/no-such-tokenizer.bin" --text "$M" --policy full

if [ -z "$T" ] || [ ! -f "$T" ]; then
    echo "model-check: skipped the stream and prompt numbers: no text (TEXT='$T'; the checks use"
    echo "  tinystories-valid-68.txt, looked for in data/ and ../shared/data)"
else
    # 3. the stream-mode numbers: mean NLL over tokens [2048, 8000)
    echo "model-check: compare, stream mode, 8000 tokens (the full cache over 8000 tokens is the slow part)"
    "$B/compare" --model "$M" --tokenizer "$K" --text "$T" --tokens 8000 --mode stream \
        --policy full --policy streamingllm:capacity=256,sinks=4,pos_shift=1 \
        --policy streamingllm:capacity=256,sinks=4,pos_shift=0 \
        --policy streamingllm:capacity=256,sinks=0 --csv "$tmp/stream.csv" >"$tmp/table" \
        2>"$tmp/err" || fail "compare: $(cat "$tmp/err")"
    cat "$tmp/table"
    awk -F, '
    BEGIN {
        want["\"full\""] = 6.27
        want["\"streamingllm:capacity=256,sinks=4,pos_shift=1\""] = 1.21
        want["\"streamingllm:capacity=256,sinks=4,pos_shift=0\""] = 4.75
        want["\"streamingllm:capacity=256,sinks=0\""] = 1.21
    }
    NR > 1 {   # policy (quoted, may hold commas), t, nll
        pol = $1
        for (i = 2; i <= NF - 2; i++) pol = pol "," $i
        if ($(NF - 1) + 0 >= 2048) { sum[pol] += $NF; n[pol]++ }
    }
    END {
        bad = 0
        for (p in want) {
            m = n[p] ? sum[p] / n[p] : -1
            d = m > want[p] ? m - want[p] : want[p] - m
            r = d <= 0.0100001 ? "ok" : "FAIL"
            if (r == "FAIL") bad = 1
            printf "model-check: %s: %s NLL[2048,8000) %.4f, docs/results.md %.2f\n",
                r, p, m, want[p]
        }
        exit bad
    }' "$tmp/stream.csv" || fail "the stream-mode numbers differ from docs/results.md"

    # 4. prompt mode: SnapKV below random selection
    "$B/compare" --model "$M" --tokenizer "$K" --text "$T" --tokens 3000 --mode prompt \
        --policy snapkv:capacity=64,window=8 --policy random:capacity=64,window=8 \
        >"$tmp/table" 2>"$tmp/err" || fail "compare --mode prompt: $(cat "$tmp/err")"
    cat "$tmp/table"
    awk '$1 ~ /^snapkv/ && NF == 10 { s = $4 } $1 ~ /^random/ && NF == 10 { r = $4 }
         END { exit !(s != "" && r != "" && s + 0 < r + 0) }' "$tmp/table" ||
        fail "prompt mode: SnapKV's KL is not below random selection's"
    ok "prompt mode: SnapKV's KL from the full cache is below random selection's"
fi

# 5. constant memory: 20,000 tokens peak where 1,000 do, with the cache full in both
gen_stats() { # steps -> "kv-bytes peak-kB"
    "$B/generate" --model "$M" --tokenizer "$K" --steps "$1" --seed 7 2>"$tmp/err" >/dev/null ||
        fail "generate --steps $1: $(cat "$tmp/err")"
    num='\([0-9-]*\)'
    sed -n "s/.*KV cache: $num bytes in use.*peak resident memory: $num kB.*/\\1 \\2/p" "$tmp/err"
}
short=$(gen_stats 1000)
echo "model-check: generate, 20000 tokens"
long=$(gen_stats 20000)
set -- $short $long
[ $# -eq 4 ] || fail "generate did not report its memory"
[ "$1" = "$3" ] || fail "KV cache bytes grew: $1 after 1,000 tokens, $3 after 20,000"
if [ "$2" -lt 0 ]; then
    ok "generate: KV cache $1 bytes after 1,000 and 20,000 tokens (no resident-memory figure here)"
elif [ "$4" -gt $(($2 + 256)) ]; then
    fail "peak resident memory grew from $2 kB (1,000 tokens) to $4 kB (20,000 tokens)"
else
    ok "generate: constant memory: KV cache $1 bytes; peak resident $2 kB (1,000 tokens)," \
        "$4 kB (20,000)"
fi

# 6. the engine's own attention against kvevict's: per scored token, NLL (and in prompt mode the KL
#    from the full cache) within 1e-4, for every policy, in stream and prompt mode. The two sum in
#    other orders (and exp differs), so the numbers agree to float rounding, not bit for bit.
expect_error "unknown --attention" attention \
    "$B/compare" --model "$M" --tokenizer "$K" --text "$M" --policy full --attention kernel
attention_check() { # mode tokens policy...
    mode=$1 tokens=$2
    shift 2
    for a in library engine; do
        "$B/compare" --model "$M" --tokenizer "$K" --text "$T" --tokens "$tokens" --mode "$mode" \
            --attention $a --csv "$tmp/$mode-$a.csv" "$@" >"$tmp/table-$a" 2>"$tmp/err" ||
            fail "compare --attention $a --mode $mode: $(cat "$tmp/err")"
    done
    grep -q "engine attention" "$tmp/table-engine" ||
        fail "compare --attention engine does not say so: $(head -n 1 "$tmp/table-engine")"
    # rows: "policy",t,nll (prompt: "policy",t,nll,segment,kl,top1); the policy may hold commas
    awk -F, -v other="$tmp/$mode-engine.csv" -v mode="$mode" '
    function absd(x, y) { return x > y ? x - y : y - x }
    {
        if ((getline line < other) <= 0) { print "model-check: the engine gave fewer rows"; exit 1 }
        nb = split(line, b, ",")
        if (FNR == 1) { if (line != $0) { print "model-check: CSV headers differ"; exit 1 }; next }
        tail = mode == "prompt" ? 5 : 2
        pol = $1
        for (i = 2; i <= NF - tail; i++) pol = pol "," $i
        t = $(NF - tail + 1)
        if (nb != NF || b[nb - tail + 1] != t || substr(line, 1, length(pol)) != pol) {
            print "model-check: rows differ: " $0 " | " line; exit 1
        }
        if (!(pol in n)) order[++np] = pol
        n[pol]++
        d = absd($(NF - tail + 2), b[nb - tail + 2])
        if (d > nll[pol]) nll[pol] = d
        if (mode == "prompt") { d = absd($(NF - 1), b[nb - 1]); if (d > kl[pol]) kl[pol] = d }
    }
    END {
        if ((getline line < other) > 0) { print "model-check: the engine gave more rows"; exit 1 }
        bad = 0
        for (i = 1; i <= np; i++) {
            p = order[i]
            r = nll[p] <= 1e-4 && kl[p] <= 1e-4 ? "ok" : "FAIL"
            if (r == "FAIL") bad = 1
            printf "model-check: %s: %s mode, %s: engine against library attention, %d tokens: " \
                   "max |NLL difference| %.1e%s\n", r, mode, p, n[p], nll[p],
                   mode == "prompt" ? sprintf(", max |KL difference| %.1e", kl[p]) : ""
        }
        exit bad || np == 0
    }' "$tmp/$mode-library.csv" ||
        fail "$mode mode: the engine's attention and the library's give different numbers"
}
if [ -n "$T" ] && [ -f "$T" ]; then
    echo "model-check: compare --attention engine against --attention library"
    attention_check stream 1500 --policy full \
        --policy streamingllm:capacity=128,sinks=4,pos_shift=1 \
        --policy streamingllm:capacity=128,sinks=4,pos_shift=0 \
        --policy streamingllm:capacity=128,sinks=0 --policy snapkv:capacity=96,window=8 \
        --policy pyramidkv:capacity=96,window=8 --policy h2o:capacity=96,window=8 \
        --policy random:capacity=96,window=8
    attention_check prompt 2250 --policy snapkv:capacity=64,window=8 --policy full \
        --policy streamingllm:capacity=128,sinks=4,pos_shift=1 \
        --policy streamingllm:capacity=128,sinks=4,pos_shift=0 \
        --policy pyramidkv:capacity=64,window=8 --policy h2o:capacity=64,window=8 \
        --policy random:capacity=64,window=8 --policy snapkv:capacity=64,window=8,decode=evict \
        --policy pyramidkv:capacity=64,window=8,decode=evict \
        --policy h2o:capacity=64,window=8,decode=evict
fi
# retrieval: the passkey model recalls the key with the full cache (compare --mode needle)
if [ -n "$T" ] && [ -f "$T" ]; then
    echo "model-check: compare --mode needle with the passkey model"
    sh "$(dirname "$0")/needle_check.sh" "$B" "$D" "$T" || fail "needle mode: see above"
fi
echo "model-check: all passed"
