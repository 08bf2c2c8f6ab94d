#!/bin/sh
# Compiles kvevict.h (declarations, then the implementation, in one file) with every compiler and
# mode we support, warnings as errors. Prints "compile_check: N passed, N failed".
tmp=${TMPDIR:-/tmp}/kvevict-cc.$$
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/t.c" <<'SRC'
#include "kvevict.h"
#define KVEVICT_IMPLEMENTATION
#include "kvevict.h"
int main(void)
{
    kve_config cfg;
    size_t bytes = 0;
    cfg = kve_config();
    cfg.n_layers = 1; cfg.n_heads = 2; cfg.head_dim = 8; cfg.capacity = 4;
    return kve_cache_size(&cfg, &bytes) == KVE_OK && bytes > 0 ? 0 : 1;
}
SRC
sed -i 's/cfg = kve_config();/memset(\&cfg, 0, sizeof cfg);/' "$tmp/t.c"
sed -i '1i #include <string.h>' "$tmp/t.c"
printf '#define KVEVICT_STATIC\n' > "$tmp/s.c"; cat "$tmp/t.c" >> "$tmp/s.c"
passed=0; failed=0
W="-Wall -Wextra -Wpedantic -Werror -I."
try() { # compiler-and-flags source
  name="$1"; src="$2"
  set -- $1
  if ! command -v "$1" > /dev/null 2>&1; then echo "  skip: $1 not installed"; return; fi
  if $name $W "$src" -o "$tmp/a.out" -lm 2> "$tmp/err" && "$tmp/a.out"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1)); echo "  FAIL: $name"; head -c 600 "$tmp/err"
  fi
}
for cc in gcc clang; do
  for omp in "" "-fopenmp"; do
    for opt in "-O0" "-O2" "-O3 -march=native"; do
      try "$cc -std=c11 $opt $omp" "$tmp/t.c"
    done
  done
  try "$cc -std=c11 -O2 -march=haswell" "$tmp/t.c"   # the kernels of CPUs with AVX2, no AVX-512
  try "$cc -std=c11 -O2 -march=ivybridge" "$tmp/t.c" # and with AVX and F16C only
  try "$cc -std=c99 -O2" "$tmp/t.c"
  try "$cc -std=c11 -O2 -DKVEVICT_NO_OPENMP -fopenmp" "$tmp/s.c"
done
for cxx in g++ clang++; do
  for std in c++11 c++17; do
    try "$cxx -x c++ -std=$std -O2" "$tmp/t.c"
  done
  try "$cxx -x c++ -std=c++17 -O2 -fopenmp" "$tmp/t.c"
  try "$cxx -x c++ -std=c++17 -O2 -march=native" "$tmp/t.c" # the vector kernels as C++
  try "$cxx -x c++ -std=c++17 -O2 -march=haswell" "$tmp/t.c"
done
echo "compile_check: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
