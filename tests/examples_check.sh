#!/bin/sh
# Runs the model-free examples and checks what they print; ends with "N passed, N failed".
# usage: sh tests/examples_check.sh BUILD_DIR
B=${1:-build}
passed=0
failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL examples: $*"; }
out=$("$B/minimal") && ok || bad "minimal exited with status $?"

# minimal: StreamingLLM, capacity 16 = 4 sinks + 12 recent, 2 layers x 2 KV heads x head_dim 8:
# the cache grows one token per step to 16, each token 2 layers * 2 heads * 8 * (K+V) * 4 bytes
echo "$out" | awk '
  /^pos / { n++; p = $2 + 0; want = p + 1 < 16 ? p + 1 : 16
           if ($8 + 0 != want || $10 + 0 != want * 256) { print "line " n ": " $0; bad = 1 }
           if (n > 1 && $4 + 0 != prev) { print "token chain broken at line " n; bad = 1 }
           prev = $6 + 0 }
  END { if (n != 40) { print n " steps, expected 40"; bad = 1 }; exit bad }' && ok || bad "minimal's cache sizes"
# after 40 tokens: the 4 sinks and the 12 most recent (28..39)
want="positions in layer 0, KV head 0: 0 1 2 3 28 29 30 31 32 33 34 35 36 37 38 39"
echo "$out" | grep -qx "$want" && ok || bad "minimal's final positions: $(echo "$out" | tail -n 1)"
# the greedy tokens it decodes (attention, RoPE and eviction all feed them)
tokens=$(echo "$out" | awk '/^pos / { printf "%s ", $6 }')
[ "$tokens" = "$(cat tests/expected/minimal-tokens.txt)" ] && ok || bad "minimal decoded: $tokens"

# custom_policy checks itself (the newest kept, the shortest older keys kept, the scorer and the
# vtable policy keep the same tokens) and says so
out=$("$B/custom_policy") && ok || bad "custom_policy exited with status $?"
echo "$out" | grep -q '^ok: the 4 newest tokens and the shortest older keys are kept, by both$' && ok ||
  bad "custom_policy: $(echo "$out" | tail -n 1)"
[ "$(echo "$out" | grep -c '^  the scorer kept the same tokens$')" = 2 ] && ok ||
  bad "custom_policy: the scorer's tokens"
# 12 tokens per KV head (its capacity), the 4 newest (296..299) among them
echo "$out" | awk '/keeps:/ { n = 0; newest = 0
    for (i = 4; i <= NF; i++) if ($i ~ /^[0-9]+$/) { n++; if ($i + 0 >= 296) newest++ }
    if (n != 12 || newest != 4) bad = 1; heads++ }
  END { exit bad || heads != 2 }' && ok || bad "custom_policy's kept sets"
echo "examples: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
