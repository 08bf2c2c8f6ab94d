#!/bin/sh
# Results must be bit-identical with and without OpenMP: runs every golden case through a build
# with -fopenmp and one without, in both key-storage modes, and compares the outputs byte for byte.
set -u
make -s build/kvcase build/test_core && make -s OPENMP=0 BUILD=build-noomp build-noomp/kvcase build-noomp/test_core || exit 1
status=0
a=$(build/test_core | grep 'attention digest')
b=$(OMP_NUM_THREADS=1 build/test_core | grep 'attention digest')
c=$(build-noomp/test_core | grep 'attention digest')
if [ -z "$a" ] || [ "$a" != "$b" ] || [ "$a" != "$c" ]; then
  echo "attention differs between OpenMP (2 threads: $a; 1 thread: $b) and serial ($c) builds"; status=1
fi
for f in tests/golden/*.case; do
  for keys in post pre; do
    a=$(build/kvcase "$f" --keys $keys) || status=1
    b=$(build-noomp/kvcase "$f" --keys $keys) || status=1
    if [ "$a" != "$b" ]; then echo "differs with and without OpenMP: $f ($keys)"; status=1; fi
  done
done
[ $status -eq 0 ] && echo "OpenMP and serial builds agree bit for bit on every golden case and a large GQA attention with eviction"
exit $status
