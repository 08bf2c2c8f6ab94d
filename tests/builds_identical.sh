#!/bin/sh
# The manual promises that a build for CPUs with AVX2, F16C and FMA but not AVX-512 gives the
# portable build's bits, whatever the optimisation level: runs every golden case (keys post- and
# pre-RoPE) and test_core's attention digests through the portable build at -O2 and through
# -O3 -march=haswell, and compares the outputs byte for byte. Skipped off x86 or without AVX2.
set -u
case $(uname -m) in x86_64 | amd64 | i386 | i686) ;; *) echo "builds_identical: skipped (not an x86 CPU)"; exit 0 ;; esac
if ! grep -q avx2 /proc/cpuinfo 2>/dev/null; then echo "builds_identical: skipped (this CPU lacks AVX2)"; exit 0; fi
B=build-avx2-O3
make -s build/kvcase build/test_core && make -s OPT="-O3 -march=haswell" BUILD=$B $B/kvcase $B/test_core || exit 1
status=0
a=$(build/test_core | grep 'digest')
b=$($B/test_core | grep 'digest')
if [ -z "$a" ] || [ "$a" != "$b" ]; then
  echo "attention digests differ: portable -O2 ($a), -O3 -march=haswell ($b)"; status=1
fi
for f in tests/golden/*.case; do
  for keys in post pre; do
    a=$(build/kvcase "$f" --keys $keys) || status=1
    b=$($B/kvcase "$f" --keys $keys) || status=1
    if [ "$a" != "$b" ]; then echo "differs between the portable and the -O3 -march=haswell build: $f ($keys)"; status=1; fi
  done
done
[ $status -eq 0 ] && echo "the portable build and -O3 -march=haswell agree bit for bit on every golden case and the attention digests"
exit $status
