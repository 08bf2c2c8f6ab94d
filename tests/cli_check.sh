#!/bin/sh
# The command-line programs (compare, generate) against a table of calls: each row is the exit
# status wanted, a fragment the message must hold (on stderr; "stdout:..." for stdout), and the
# program with its arguments. Argument errors need no model (they are checked before any file is
# read), nor do the bad files made here (a directory, a FIFO, an empty file, a truncated model).
# The rows that run the model are skipped, with a message, when stories260K.bin and tok512.bin
# are not in $KVEVICT_MODEL_DIR, models/ or ../shared/models. Built with SANITIZE=1 (make
# sanitize), a leak or other sanitizer report fails its row. Ends with "cli: N passed, N failed".
# usage: sh tests/cli_check.sh BUILD_DIR
B=${1:-build}
repo=$(cd "$(dirname "$0")/.." && pwd)
passed=0
failed=0
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kvevict-cli.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); printf 'FAIL cli: %s\n' "$(echo "$*" | tr '\n' ' ')"; }
# a program that waits (reading a FIFO) must not hang the suite
run=
if command -v timeout > /dev/null 2>&1; then run="timeout 60"; fi

D=
for d in "${KVEVICT_MODEL_DIR:-}" "$repo/models" "$repo/../shared/models"; do
    if [ -n "$d" ] && [ -f "$d/stories260K.bin" ] && [ -f "$d/tok512.bin" ]; then D=$d; break; fi
done

# the bad files
mkdir "$tmp/dir"
mkfifo "$tmp/fifo"
: > "$tmp/empty"
{ printf 'Once upon a time'; head -c 64 /dev/zero; printf '\001\002\003 binary\n'; } > "$tmp/binary"
printf 'Once upon a time \377\376\200 there was a \303\050 cat.\n' > "$tmp/latin"  # not UTF-8
if [ -n "$D" ]; then
    M=$D/stories260K.bin
    K=$D/tok512.bin
    head -c 100 "$M" > "$tmp/truncated.bin"
    head -c 1000 "$K" > "$tmp/truncated-tok.bin"
else # a llama2.c header (dim 64, hidden 172, 5 layers, 8 heads, 4 KV heads, vocab 512, 512) alone
    M=$tmp/fake-model.bin
    K=$tmp/fake-tok.bin
    printf '\100\000\000\000\254\000\000\000\005\000\000\000\010\000\000\000' > "$tmp/truncated.bin"
    printf '\004\000\000\000\000\002\000\000\000\002\000\000' >> "$tmp/truncated.bin"
    cp "$tmp/truncated.bin" "$M"
    printf 'not a tokenizer' > "$K"
fi
# a text of a few short stories (about 1,700 tokens), the same on every machine
story() { # name animal place
    printf 'Once upon a time, there was a little girl named %s. ' "$1"
    printf 'She had a %s who liked to play in the %s.\n' "$2" "$3"
    printf 'One day, %s and the %s went to the %s to find a big red ball. ' "$1" "$2" "$3"
    printf 'They looked under the trees and behind the flowers.\n'
    printf '"Where is the ball?" asked %s. The %s wagged its tail and ran to the pond. ' "$1" "$2"
    printf 'The ball was in the water!\n'
    printf '%s was sad, but her mom came and helped her get the ball. ' "$1"
    printf '%s said thank you, and they all went home happy.\n' "$1"
    printf '<|endoftext|>\n'
}
: > "$tmp/text.txt"
for who in "Lily dog park" "Mia cat garden" "Sam bird forest" "Anna puppy yard" "Tom bunny field" \
           "Sue kitten meadow" "Ben duck farm" "Zoe frog lake" "Max bear woods" "Amy fish river"; do
    set -- $who
    story "$1" "$2" "$3" >> "$tmp/text.txt"
done
T=$tmp/text.txt
nomodel=$tmp/no-such-model.bin
notok=$tmp/no-such-tokenizer.bin
notext=$tmp/no-such-text.txt

row() { # status fragment program args...
    want=$1 frag=$2 prog=$3
    shift 3
    where=err
    case $frag in stdout:*) where=out; frag=${frag#stdout:} ;; esac
    $run "$B/$prog" "$@" > "$tmp/out" 2> "$tmp/err" < /dev/null
    got=$?
    # a sanitizer's report (a leak on an early exit) keeps the exit status: looked for too
    if [ "$got" -eq "$want" ] && grep -qF -- "$frag" "$tmp/$where" &&
        ! grep -qE 'Sanitizer|runtime error:' "$tmp/err"; then
        ok
    else
        bad "$prog $*: exit status $got (want $want), std$where does not say '$frag':" \
            "$(head -c 300 "$tmp/err")"
    fi
}

# ---- arguments: checked before any file is read (the files named here do not exist) ----------
C="--model $nomodel --tokenizer $notok --text $notext"
G="--model $nomodel --tokenizer $notok"
row 0 "stdout:usage: compare" compare --help
row 0 "stdout:--equal-memory" compare -h
row 2 "unknown option '--bogus'" compare $C --policy full --bogus
# the kvpress scorers and allocations: listed, their parameters checked before any file is read
row 0 "stdout:observed_attention  capacity window gqa decode" compare --help
row 2 "bad value 'fair' for allocation" compare $C --policy knorm:capacity=64,allocation=fair
row 2 "bad value '1.5' for alpha_safeguard" compare $C --policy snapkv:capacity=64,alpha_safeguard=1.5
row 2 "policy tova has no parameter 'lag_size'" compare $C --policy tova:capacity=64,lag_size=4
row 2 "AdaKV allocation compresses the prompt only" compare $C --policy knorm:capacity=64,allocation=adakv,decode=evict
row 2 "simlayerkv compresses a prompt and evicts nothing after" compare $C --policy simlayerkv
row 2 "n_recent=1 must be larger than window=1" compare $C --mode prompt --policy simlayerkv:n_recent=1
row 2 "bad value '0' for lazy_threshold" compare $C --mode prompt --policy simlayerkv:lazy_threshold=0
row 2 "--equal-memory: policy 'simlayerkv' has no capacity" compare $C --mode prompt --equal-memory \
    --policy snapkv:capacity=64 --policy simlayerkv
row 2 "unknown policy 'expected'" compare $C --policy expected:capacity=64
row 2 "unknown option '--bogus'" compare $C --bogus --policy full
row 2 "--policy needs a value" compare $C --policy
row 2 "--tokens needs an integer from 2 to 1073741824" compare $C --policy full --tokens 2000000000
row 2 "--tokens needs an integer from 2" compare $C --policy full --tokens 12abc
row 2 "sinks=4 leave no room for recent tokens in capacity=4" \
    compare $C --policy streamingllm:capacity=4,sinks=4
row 2 "sinks=4 (the default) leave no room" compare $C --policy streamingllm:capacity=3
row 2 "window=32 (the default) does not fit in capacity=16" compare $C --policy snapkv:capacity=16
row 2 "window=64 does not fit in capacity=64" compare $C --policy h2o:capacity=64,window=64
row 2 "kernel=4 must be odd" compare $C --policy pyramidkv:capacity=64,window=8,kernel=4
row 2 "decode=grow cannot keep a stream within its capacity" \
    compare $C --policy snapkv:capacity=64,window=8,decode=grow
row 2 "decode=grow cannot keep a stream within its capacity" \
    compare $C --policy streamingllm:capacity=64,decode=grow
row 2 "--threads needs an integer from 0 to 1024" compare $C --policy full --threads -1
row 2 "--decode is grow or evict" compare $C --mode prompt --policy full --decode sideways
row 2 "--decode is for --mode prompt" compare $C --policy full --decode evict
row 2 "--equal-memory is for --mode prompt" compare $C --policy snapkv:capacity=64 --equal-memory
row 2 "--equal-memory needs a policy other than full" \
    compare $C --mode prompt --policy full --equal-memory
row 2 "less than one prompt-mode segment" compare $C --mode prompt --tokens 100 --policy full
row 2 "--progress needs seconds" compare $C --policy full --progress -1
row 0 "stdout:usage: generate" generate --help
row 2 "unknown option '--bogus'" generate $G --bogus
row 2 "--temp needs a finite number >= 0" generate $G --temp nan
row 2 "--temp needs a finite number >= 0" generate $G --temp inf
row 2 "--temp needs a finite number >= 0" generate $G --temp -1
row 2 "--topp needs a number above 0 and at most 1" generate $G --topp 2
row 2 "--topp needs a number above 0 and at most 1" generate $G --topp 0
row 2 "--topp needs a number above 0 and at most 1" generate $G --topp nan
row 2 "--steps needs an integer from 0 (endless)" generate $G --steps -5
row 2 "--steps needs an integer from 0 (endless)" generate $G --steps 99999999999999999999
row 2 "--seed needs an integer from 0 to 18446744073709551615" generate $G --seed -1
row 2 "--seed needs an integer from 0 to 18446744073709551615" generate $G --seed 7x
row 2 "decode=grow cannot keep a stream" generate $G --policy h2o:capacity=64,decode=grow
row 2 "sinks=4 (the default) leave no room" generate $G --policy streamingllm:capacity=4

# ---- bad files: each message names the file and the problem -------------------------------------
row 1 "model '$tmp/dir' is a directory" compare --model "$tmp/dir" --tokenizer "$K" --text "$T" \
    --policy full
row 1 "model '$tmp/fifo' is a FIFO" compare --model "$tmp/fifo" --tokenizer "$K" --text "$T" \
    --policy full
row 1 "model '$tmp/empty' is empty" compare --model "$tmp/empty" --tokenizer "$K" --text "$T" \
    --policy full
row 1 "model '$tmp/truncated.bin' is truncated" compare --model "$tmp/truncated.bin" \
    --tokenizer "$K" --text "$T" --policy full
row 1 "tokenizer '$tmp/dir' is a directory" compare --model "$M" --tokenizer "$tmp/dir" \
    --text "$T" --policy full
row 1 "tokenizer '$tmp/fifo' is a FIFO" compare --model "$M" --tokenizer "$tmp/fifo" \
    --text "$T" --policy full
row 1 "tokenizer '$tmp/empty' is empty" compare --model "$M" --tokenizer "$tmp/empty" \
    --text "$T" --policy full
row 1 "text '$tmp/dir' is a directory" compare --model "$M" --tokenizer "$K" --text "$tmp/dir" \
    --policy full
row 1 "text '$tmp/fifo' is a FIFO" compare --model "$M" --tokenizer "$K" --text "$tmp/fifo" \
    --policy full
row 1 "text '$tmp/empty' is empty" compare --model "$M" --tokenizer "$K" --text "$tmp/empty" \
    --policy full
row 1 "cannot write --svg file '$tmp/no-dir/plot.svg'" compare --model "$M" --tokenizer "$K" \
    --text "$T" --policy full --svg "$tmp/no-dir/plot.svg"
row 1 "cannot write --csv file '$tmp/dir'" compare --model "$M" --tokenizer "$K" --text "$T" \
    --policy full --csv "$tmp/dir"
row 1 "model '$tmp/dir' is a directory" generate --model "$tmp/dir" --tokenizer "$K"
row 1 "tokenizer '$tmp/fifo' is a FIFO" generate --model "$M" --tokenizer "$tmp/fifo"

# ---- with the model ------------------------------------------------------------------------------
if [ -z "$D" ]; then
    echo "cli: skipped the rows that run the model: no stories260K.bin and tok512.bin in" \
        "\$KVEVICT_MODEL_DIR, models/ or ../shared/models"
    echo "cli: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit
fi
run_model() { # program args...: runs it with the model, into $tmp/out and $tmp/err
    prog=$1
    shift
    $run "$B/$prog" --model "$M" --tokenizer "$K" "$@" > "$tmp/out" 2> "$tmp/err" < /dev/null
}
row 1 "text '$tmp/binary' is a binary file" compare --model "$M" --tokenizer "$K" \
    --text "$tmp/binary" --policy full
row 1 "text '$M' is a binary file" compare --model "$M" --tokenizer "$K" --text "$M" --policy full
row 0 "stdout:policy  [0,99)           (none)           (none)" compare --model "$M" --tokenizer "$K" \
    --text "$T" --tokens 100 --policy full --progress 0
row 1 "model '$K' does not start with a valid llama2.c header" compare --model "$K" \
    --tokenizer "$K" --text "$T" --policy full
row 1 "text '$tmp/latin' is not UTF-8 (byte 0xff at offset 17" compare --model "$M" \
    --tokenizer "$K" --text "$tmp/latin" --policy full
row 1 "tokenizer '$tmp/truncated-tok.bin' is truncated" compare --model "$M" \
    --tokenizer "$tmp/truncated-tok.bin" --text "$T" --policy full
row 1 "less than one prompt-mode segment" compare --model "$M" --tokenizer "$K" --text "$T" \
    --mode prompt --prompt-tokens 4000 --policy full
# nothing is left behind when the run fails after the output files were created
run_model compare --text "$tmp/binary" --policy full --csv "$tmp/left.csv" --svg "$tmp/left.svg"
[ ! -e "$tmp/left.csv" ] && [ ! -e "$tmp/left.svg" ] && ok ||
    bad "compare left its --csv or --svg file behind after failing"

# progress lines: done of total, elapsed and remaining time
row 0 "s elapsed, about" compare --model "$M" --tokenizer "$K" --text "$T" --tokens 400 \
    --policy full --progress 0.001

# --threads: the same numbers whatever it is
run_model compare --text "$T" --tokens 600 --policy full --policy h2o:capacity=64,window=8 \
    --threads 1 --csv "$tmp/threads1.csv" &&
    run_model compare --text "$T" --tokens 600 --policy full --policy h2o:capacity=64,window=8 \
        --threads 2 --csv "$tmp/threads2.csv" &&
    cmp -s "$tmp/threads1.csv" "$tmp/threads2.csv" && ok ||
    bad "compare --threads 1 and --threads 2 give different numbers: $(head -c 300 "$tmp/err")"

# the plot: every line its own colour and dash pattern, later lines narrower (full and a
# StreamingLLM that never evicts give the same line: both must show), axis labels, and the
# training context (512 in the model's header) as a labelled vertical line
if run_model compare --text "$T" --tokens 700 --policy full --policy streamingllm:capacity=1024 \
    --policy streamingllm:capacity=128 --policy streamingllm:capacity=128,sinks=0 \
    --svg "$tmp/plot.svg"; then
    awk '
    /<polyline/ {
        n++
        if (!match($0, /stroke="[^"]*"/)) { print "a line without a colour"; bad = 1; next }
        color = substr($0, RSTART, RLENGTH)
        if (!match($0, /stroke-dasharray="[^"]*"/)) { print "a line without dashes"; bad = 1; next }
        dash = substr($0, RSTART, RLENGTH)
        match($0, /stroke-width="[^"]*"/); width = substr($0, RSTART + 14, RLENGTH - 15) + 0
        if (color in colors) { print "two lines with " color; bad = 1 }
        if (dash in dashes) { print "two lines with " dash; bad = 1 }
        if (n > 1 && width >= last) { print "line " n " is not narrower"; bad = 1 }
        colors[color]; dashes[dash]; last = width
    }
    />token position/ { x = 1 }
    /rotate\(-90\)[^>]*>NLL/ { y = 1 }
    /class="context" x1="[0-9.]*" x2="[0-9.]*"/ && /training context: 512 tokens/ { c = 1 }
    END {
        if (n != 4) { print n " lines, 4 policies"; bad = 1 }
        if (!x || !y) { print "an axis label is missing"; bad = 1 }
        if (!c) { print "no labelled line at the training context (512)"; bad = 1 }
        exit bad
    }' "$tmp/plot.svg" > "$tmp/why" && ok || bad "the SVG plot: $(cat "$tmp/why")"
else
    bad "compare --svg: $(head -c 300 "$tmp/err")"
fi

# --explain: a sentence per policy whose numbers are the table's, its words following them
if run_model compare --text "$T" --tokens 1200 --policy full --policy streamingllm:capacity=64 \
    --explain --progress 0; then
    awk '
    /^policy / { table = 1; next }
    table && NF == 0 { table = 0 }
    table { before[$1] = sprintf("%.2f", $2); n++ }
    /: next-token NLL / {
        p = substr($1, 1, length($1) - 1); said++
        if (!(p in before) || index($0, "from " before[p] " before position 512") == 0) {
            print "sentence of " p " does not give its [0,512) NLL " before[p] ": " $0; bad = 1
        }
        if (!match($0, /to [0-9.]+ over positions \[512,1199\)/)) {
            print "no later NLL: " $0; bad = 1; next
        }
        r = substr($0, RSTART + 3, RLENGTH) / before[p]
        want = r > 2 ? "breaks down" : r > 1.1 ? "degrades" : r >= 0.9 ? "holds up" : "no loss"
        if (index($0, want) == 0) { print "ratio " r " but not \"" want "\": " $0; bad = 1 }
    }
    END { if (n != 2 || said != 2) { print n " table rows, " said " sentences"; bad = 1 }
          exit bad }
    ' "$tmp/out" > "$tmp/why" && ok || bad "compare --explain (stream): $(cat "$tmp/why")"
else
    bad "compare --explain: $(head -c 300 "$tmp/err")"
fi

# prompt mode, like with like: with decode=grow StreamingLLM is compressed to its capacity and
# then grows like SnapKV, so both hold the same K/V; the table has the peak and the mean
prompt_peaks() { # the "peak KV" and "mean KV" columns of each policy row, "policy peak mean"
    awk '/^policy / { table = 1; next } table && NF == 0 { exit }
         table && NF == 10 { print $1, $6 $7, $8 $9 }' "$tmp/out"
}
if run_model compare --text "$T" --tokens 500 --mode prompt --prompt-tokens 100 \
    --continuation 20 --policy snapkv:capacity=40,window=8 --policy streamingllm:capacity=40 \
    --policy full --decode grow --explain --progress 0; then
    prompt_peaks > "$tmp/peaks"
    awk 'NR == 1 { peak = $2; mean = $3 }
         NR == 2 { exit !($2 == peak && $3 == mean && $2 != $3) }' "$tmp/peaks" &&
        [ "$(grep -c '^[a-z].*the full cache.s predictions' "$tmp/out")" -eq 3 ] && ok ||
        bad "prompt mode --decode grow: $(cat "$tmp/peaks")"
else
    bad "compare --mode prompt --decode grow: $(head -c 300 "$tmp/err")"
fi
# with decode=evict every cache stays at its capacity: peak and mean the same
if run_model compare --text "$T" --tokens 500 --mode prompt --prompt-tokens 100 \
    --continuation 20 --policy snapkv:capacity=40,window=8 --policy streamingllm:capacity=40 \
    --policy h2o:capacity=40,window=8 --decode evict --progress 0; then
    prompt_peaks > "$tmp/peaks"
    awk '{ n++; if (NR == 1) peak = $2; if ($2 != peak) bad = 1 } END { exit bad || n != 3 }' \
        "$tmp/peaks" && grep -q 'decode=evict' "$tmp/out" && ok ||
        bad "prompt mode --decode evict: $(cat "$tmp/peaks")"
else
    bad "compare --mode prompt --decode evict: $(head -c 300 "$tmp/err")"
fi
# --equal-memory: every policy but full at the first one's peak K/V, with the capacity it ran with
# (PyramidKV's layer budgets move in steps of several tokens at once: within 2%)
if run_model compare --text "$T" --tokens 500 --mode prompt --prompt-tokens 100 \
    --continuation 20 --policy full --policy snapkv:capacity=40,window=8 \
    --policy pyramidkv:capacity=60,window=8 --policy streamingllm:capacity=20 --equal-memory \
    --progress 0; then
    prompt_peaks > "$tmp/peaks"
    awk '$1 != "full" { n++; if (n == 1) peak = $2 + 0; d = $2 - peak
                        if (d * d > peak * peak / 2500) bad = 1 }
         $1 ~ /^pyramidkv:capacity=60,/ || $1 ~ /^streamingllm:capacity=20$/ { bad = 1 }
         END { exit bad || n != 3 }' "$tmp/peaks" && ok ||
        bad "compare --equal-memory: $(cat "$tmp/peaks")"
else
    bad "compare --equal-memory: $(head -c 300 "$tmp/err")"
fi

echo "cli: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
