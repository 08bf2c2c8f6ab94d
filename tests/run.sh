#!/bin/sh
# Runs every test program and every golden case; ends with one line "N passed, N failed".
# usage: sh tests/run.sh BUILD_DIR
B=${1:-build}
passed=0
failed=0
tmp=${TMPDIR:-/tmp}/kvevict-test.$$
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT

count() { # adds the "N passed, M failed" of a program's last summary line
  set -- $(awk '/[0-9]+ passed, [0-9]+ failed/ { for (i = 1; i < NF; i++) { if ($(i+1) ~ /^passed/) p = $i; if ($(i+1) ~ /^failed/) f = $i }; seen = 1 }
               END { if (seen) print p + 0, f + 0; else print "none" }' "$1")
  if [ "$1" = none ]; then failed=$((failed + 1)); echo "  (no summary line)"; return; fi
  passed=$((passed + $1)); failed=$((failed + $2))
}

for t in test_core test_kernels test_kernels_native test_kernels_avx2 test_policies test_properties test_types test_types_native test_types_avx2 test_lifecycle test_reliability; do
  echo "== $t"
  if "$B/$t" > "$tmp/$t.out" 2>&1; then :; else echo "  $t exited with status $?"; failed=$((failed + 1)); fi
  grep -E 'FAIL|passed' "$tmp/$t.out" | tail -n 20
  count "$tmp/$t.out"
done

echo "== golden cases (tests/golden), keys stored post-RoPE and pre-RoPE, portable and native builds"
for f in tests/golden/*.case; do
  for keys in post pre; do
    for prog in kvcase kvcase_native; do
      if "$B/$prog" "$f" --keys $keys > "$tmp/case.out" && "$B/judge" "$f" "$tmp/case.out" > "$tmp/judge.out"; then
        passed=$((passed + 1))
      else
        failed=$((failed + 1)); echo "  FAIL $f ($keys, $prog)"; cat "$tmp/judge.out"
      fi
    done
  done
done

echo "== every golden case on every type: a cache of type T (keys pre-RoPE) prints the same bits as a"
echo "   float cache given the case's K and V rounded through T (q8_0: cases with head_dim % 32 == 0),"
echo "   both in the same build (kvcase_native: this machine's vector instructions, whose kernels"
echo "   convert in registers and, with AVX-512, fuse multiply-adds: its bits are its own)"
for f in tests/golden/*.case; do
  for type in f16 bf16 q8_0; do
    for prog in kvcase kvcase_native; do
      "$B/$prog" "$f" --keys pre --round $type > "$tmp/rounded.out" 2>&1; rr=$?
      "$B/$prog" "$f" --keys pre --type $type > "$tmp/typed.out" 2>&1; rt=$?
      if [ $rt -eq 3 ] && [ $rr -eq 3 ]; then continue; fi
      if [ $rt -eq 0 ] && [ $rr -eq 0 ] && cmp -s "$tmp/typed.out" "$tmp/rounded.out"; then
        passed=$((passed + 1))
      else
        failed=$((failed + 1)); echo "  FAIL $f ($type, $prog): the typed cache differs from rounded float inputs"
      fi
    done
  done
done

echo "== the judge rejects wrong answers"
f=tests/golden/01-snapkv-avg.case
"$B/kvcase" "$f" | sed '1s/ 7 14 / 0 14 /' > "$tmp/bad.out"
if "$B/judge" "$f" "$tmp/bad.out" > /dev/null; then failed=$((failed + 1)); echo "  FAIL: judge accepted a wrong selection"; else passed=$((passed + 1)); fi
f=tests/golden/16-streamingllm-posshift-interleaved.case
"$B/kvcase" "$f" | sed '5s/^out 4 -*[0-9.e+-]* /out 4 9.5 /' > "$tmp/bad.out"
if "$B/judge" "$f" "$tmp/bad.out" > /dev/null; then failed=$((failed + 1)); echo "  FAIL: judge accepted a wrong output"; else passed=$((passed + 1)); fi
f=tests/golden/54-kvpress-keyrerotation-knorm.case
"$B/kvcase" "$f" | awk '$1 == "rekey" && $2 == 1 { $11 = sprintf("%.9g", $11 + 0.001) } { print }' > "$tmp/bad.out"
if "$B/judge" "$f" "$tmp/bad.out" > /dev/null; then failed=$((failed + 1)); echo "  FAIL: judge accepted a wrong re-rotated key"; else passed=$((passed + 1)); fi
printf 'kvevict-case 1\nkind select\nn_heads 2\nq 3 1 2\n' > "$tmp/malformed.case"
"$B/kvcase" "$tmp/malformed.case" > /dev/null 2> "$tmp/err.txt"
if [ $? -eq 2 ] && grep -q ':4:' "$tmp/err.txt"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "  FAIL: malformed case not reported with its line and status 2"; fi

echo "== the examples that need no files, and what they print"
sh tests/examples_check.sh "$B" > "$tmp/ex.out" 2>&1
grep -E 'FAIL|passed' "$tmp/ex.out"
count "$tmp/ex.out"

echo "== the command-line programs: bad arguments, bad files, and what they print"
sh tests/cli_check.sh "$B" > "$tmp/cli.out" 2>&1
grep -E 'FAIL|passed|skipped' "$tmp/cli.out"
count "$tmp/cli.out"

echo "== the header compiles cleanly everywhere (gcc, clang, C++, with and without OpenMP)"
sh tests/compile_check.sh > "$tmp/cc.out" 2>&1
grep -E 'FAIL|skip' "$tmp/cc.out"
count "$tmp/cc.out"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
