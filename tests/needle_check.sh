#!/bin/sh
# needle_check.sh BUILD MODEL_DIR TEXT - compare --mode needle (passkey retrieval), quickly.
# Skipped, with a message, when MODEL_DIR has no stories260K-passkey.bin and tok512.bin, or when
# TEXT is missing. Exits nonzero on a failure.
#   1. --help prints the usage and exits 0
#   2. bad arguments exit 2 with a message naming the problem, before any heavy work: unknown
#      option, bad depths, zero trials, a context too short for the needle and question (the
#      message gives the smallest), a filler shorter than the context
#   3. the full cache recalls every passkey of a few fixed tasks (3 depths x 2 trials), and the
#      CSV has the documented header and one row per task
#   4. stories260K.bin (no fine-tuning) gets the warning that the model cannot retrieve
set -u
B=${1:-build}
D=${2:-}
T=${3:-}
if [ -z "$D" ] || [ ! -f "$D/stories260K-passkey.bin" ] || [ ! -f "$D/tok512.bin" ]; then
    echo "needle-check: skipped: no stories260K-passkey.bin and tok512.bin in MODEL_DIR='$D'."
    exit 0
fi
if [ -z "$T" ] || [ ! -f "$T" ]; then
    echo "needle-check: skipped: no filler text (TEXT='$T'; tinystories-valid-68.txt)."
    exit 0
fi
M=$D/stories260K-passkey.bin
K=$D/tok512.bin
C=$B/compare
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
fail() { echo "needle-check: FAIL: $*" >&2; exit 1; }
ok() { echo "needle-check: ok: $*"; }
needle() { "$C" --mode needle --model "$M" --tokenizer "$K" --text "$T" --progress 0 "$@"; }

# 1. help
"$C" --mode needle --help >"$tmp/out" 2>"$tmp/err" ||
    fail "--help exited nonzero (is compare built with --mode needle?): $(cat "$tmp/err")"
grep -q "usage: compare --mode needle" "$tmp/out" || fail "--help printed no usage"
ok "--help"

# 2. bad arguments: exit status 2 and a message with the given word
expect_2() { # what, word the message must contain, arguments...
    what=$1 word=$2
    shift 2
    needle "$@" >"$tmp/out" 2>"$tmp/err"
    status=$?
    [ "$status" -eq 2 ] || fail "$what: exit status $status, not 2: $(cat "$tmp/err")"
    grep -q -- "$word" "$tmp/err" ||
        fail "$what: the message does not say '$word': $(cat "$tmp/err")"
    ok "$what: $(grep "error:" "$tmp/err" | head -n 1)"
}
expect_2 "unknown option" "--tokens" --policy full --tokens 5
expect_2 "depth above 1" "--depths" --policy full --depths 0,1.5
expect_2 "zero trials" "--trials" --policy full --trials 0
expect_2 "context too short" "smallest is 79" --policy full --context 60
expect_2 "filler shorter than the context" "filler" --policy full --context 200000
expect_2 "bad policy" "capacity" --policy snapkv:window=8

# 3. the full cache retrieves
needle --policy full --depths 0,0.5,1 --trials 2 --csv "$tmp/full.csv" >"$tmp/out" 2>"$tmp/err" ||
    fail "full cache run: $(cat "$tmp/err")"
[ "$(head -n 1 "$tmp/full.csv")" = "policy,depth,trial,correct,digits" ] ||
    fail "CSV header: $(head -n 1 "$tmp/full.csv")"
rows=$(tail -n +2 "$tmp/full.csv" | wc -l)
right=$(tail -n +2 "$tmp/full.csv" | grep -c ',1,5$')
[ "$rows" -eq 6 ] || fail "CSV has $rows task rows, not 6"
[ "$right" -eq 6 ] || fail "the full cache recalled $right of 6 passkeys: $(cat "$tmp/full.csv")"
ok "the full cache recalls 6 of 6 passkeys (depths 0, 0.5, 1)"

# 4. a model that cannot retrieve is named
if [ -f "$D/stories260K.bin" ]; then
    M=$D/stories260K.bin
    needle --policy full --depths 0.5 --trials 1 >"$tmp/out" 2>"$tmp/err" ||
        fail "stories260K.bin run: $(cat "$tmp/err")"
    grep -q "probably cannot retrieve" "$tmp/err" ||
        fail "no warning for stories260K.bin: $(cat "$tmp/err")"
    grep -q "or the filler '$T' is unlike" "$tmp/err" ||
        fail "the warning does not name the filler as the other possible cause: $(cat "$tmp/err")"
    ok "stories260K.bin: $(grep "probably cannot retrieve" "$tmp/err" | head -n 1 | cut -c 1-90)..."
fi
echo "needle-check: all passed"
