# kvevict: make test | make demo | make bench | make fuzz | make sanitize | make model-check
#
# Options:  CC=clang  OPENMP=0 (build without -fopenmp)  MODEL_DIR=dir (stories260K.bin, tok512.bin)
#           SANITIZE=1 (ASan + UBSan build of everything, into build-san/)

CC      ?= cc
OPENMP  ?= 1
WARN    := -std=c11 -Wall -Wextra -Wpedantic -Werror
OPT     ?= -O2
ifeq ($(SANITIZE),1)
  BUILD   ?= build-san
  OPT     := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
  LDSAN   := -fsanitize=address,undefined
else
  BUILD   ?= build
endif
OMPFLAG := $(if $(filter 1,$(OPENMP)),-fopenmp,)
CFLAGS  := $(WARN) $(OPT) $(OMPFLAG) -I.
LDLIBS  := -lm $(OMPFLAG) $(LDSAN)

# Model files: MODEL_DIR, then ./models, then ../shared/models
MODEL_DIR ?= $(firstword $(foreach d,$(KVEVICT_MODEL_DIR) models ../shared/models,$(if $(wildcard $(d)/stories260K.bin),$(d),)))
TEXT      ?= $(firstword $(wildcard $(KVEVICT_TEXT) data/tinystories-valid-68.txt ../shared/data/tinystories-valid-68.txt))

TESTS    := test_core test_policies test_properties test_types test_lifecycle test_reliability
EXAMPLES := minimal custom_policy compare generate
TOOLS    := kvcase judge soak

.PHONY: all test mutate demo bench bench-quick fuzz sanitize model-check compile-check clean
all: $(addprefix $(BUILD)/,$(TESTS) $(EXAMPLES) $(TOOLS))

$(BUILD):
	@mkdir -p $@

# every program is one .c file that includes kvevict.h (and examples/engine.h for the model ones)
$(BUILD)/%: tests/%.c kvevict.h tests/testutil.h tests/golden_case.h | $(BUILD)
	$(CC) $(CFLAGS) $< -o $@ $(LDLIBS)
$(BUILD)/%: examples/%.c kvevict.h examples/engine.h examples/needle.h | $(BUILD)
	$(CC) $(CFLAGS) $< -o $@ $(LDLIBS)
# the kernels' helpers, portable and with this machine's vector instructions: the same bits
$(BUILD)/test_kernels_native: tests/test_kernels.c kvevict.h tests/testutil.h | $(BUILD)
	$(CC) $(WARN) -O2 -march=native $(OMPFLAG) -I. $< -o $@ $(LDLIBS)
# the storage-type tests again with this machine's vector instructions (F16C conversions)
$(BUILD)/test_types_native: tests/test_types.c kvevict.h tests/testutil.h | $(BUILD)
	$(CC) $(WARN) -O2 -march=native $(OMPFLAG) -I. $< -o $@ $(LDLIBS)
# and for x86 CPUs with AVX2 and F16C but not AVX-512 (their own f16 kernels); elsewhere a stand-in
# that reports it did not run
X86 := $(filter x86_64 amd64 i386 i686,$(shell uname -m))
$(BUILD)/test_types_avx2: tests/test_types.c kvevict.h tests/testutil.h | $(BUILD)
ifneq ($(X86),)
	$(CC) $(WARN) -O2 -march=haswell $(OMPFLAG) -I. $< -o $@ $(LDLIBS)
else
	printf '#!/bin/sh\necho "test_types: 0 passed, 0 failed (skipped: not an x86 CPU)"\n' > $@ && chmod +x $@
endif
$(BUILD)/test_kernels_avx2: tests/test_kernels.c kvevict.h tests/testutil.h | $(BUILD)
ifneq ($(X86),)
	$(CC) $(WARN) -O2 -march=haswell $(OMPFLAG) -I. $< -o $@ $(LDLIBS)
else
	printf '#!/bin/sh\necho "test_kernels: 0 passed, 0 failed (skipped: not an x86 CPU)"\n' > $@ && chmod +x $@
endif
# the golden cases' type check with them too (tests/run.sh)
$(BUILD)/kvcase_native: tests/kvcase.c kvevict.h tests/golden_case.h | $(BUILD)
	$(CC) $(WARN) -O2 -march=native $(OMPFLAG) -I. $< -o $@ $(LDLIBS)
$(BUILD)/bench: bench/bench.c kvevict.h | $(BUILD)
	$(CC) $(WARN) -O3 -march=native $(OMPFLAG) -I. $< -o $@ -lm $(OMPFLAG)

# The test command: unit tests, golden cases through build/kvcase, the model-free examples, the
# command-line programs (tests/cli_check.sh), then the compile matrix.
test: $(addprefix $(BUILD)/,$(TESTS) test_kernels test_kernels_native test_kernels_avx2 test_types_native test_types_avx2 kvcase kvcase_native judge minimal custom_policy \
        compare generate)
	@sh tests/run.sh $(BUILD)

# Mutation testing: each mutant in tests/mutants.txt (a small bug) must make the suite fail.
# MUTANTS=file runs another list; MUTATE_ARGS passes options (--sample 0.5, --only id, --jobs 1).
MUTANTS ?= tests/mutants.txt
mutate:
	python3 tests/mutate.py --list $(MUTANTS) $(MUTATE_ARGS)

compile-check:
	@sh tests/compile_check.sh

sanitize:
	$(MAKE) SANITIZE=1 test

# The main example: StreamingLLM with and without pos-shift or sinks against the full cache on
# stories260K (models/) over the demo text (data/): the table, a sentence per line on what it
# shows, and the plot. Fails when any step fails.
DEMO_TOKENS ?= 4000
demo: $(BUILD)/compare $(BUILD)/minimal
	@if [ -n "$(MODEL_DIR)" ] && [ -n "$(TEXT)" ]; then \
	  $(BUILD)/compare --model $(MODEL_DIR)/stories260K.bin --tokenizer $(MODEL_DIR)/tok512.bin \
	    --text $(TEXT) --tokens $(DEMO_TOKENS) --mode stream --policy full \
	    --policy streamingllm:capacity=256,sinks=4,pos_shift=1 \
	    --policy streamingllm:capacity=256,sinks=4,pos_shift=0 \
	    --policy streamingllm:capacity=256,sinks=0 --svg $(BUILD)/demo.svg --explain && \
	  echo "NLL against position (open it in a browser): $(BUILD)/demo.svg"; \
	else \
	  echo "make demo needs stories260K.bin and tok512.bin (MODEL_DIR=dir, models/ or" \
	       "../shared/models) and a text (TEXT=file, data/tinystories-valid-68.txt or" \
	       "../shared/data/); models/README.md says where they come from." >&2; \
	  echo "Running the model-free example instead, and failing:"; \
	  $(BUILD)/minimal; \
	  exit 1; \
	fi

model-check: $(BUILD)/compare $(BUILD)/generate
	@sh tests/model_check.sh $(BUILD) "$(MODEL_DIR)" "$(TEXT)"

bench: $(BUILD)/bench
	$(BUILD)/bench
bench-quick: $(BUILD)/bench
	$(BUILD)/bench --quick

FUZZ_SECONDS ?= 60
# two targets, FUZZ_SECONDS each: the calls (tests/fuzz_kvevict.c) and kve_state_load (fuzz_state.c)
fuzz: | $(BUILD)
	clang -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -I. tests/fuzz_kvevict.c -o $(BUILD)/fuzz -lm
	mkdir -p $(BUILD)/fuzz-corpus
	$(BUILD)/fuzz -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 -artifact_prefix=$(BUILD)/ \
	  $(BUILD)/fuzz-corpus tests/fuzz-corpus
	clang -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -I. tests/fuzz_state.c -o $(BUILD)/fuzz_state -lm
	mkdir -p $(BUILD)/fuzz-state-corpus
	$(BUILD)/fuzz_state -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	  -artifact_prefix=$(BUILD)/state- $(BUILD)/fuzz-state-corpus

clean:
	rm -rf build build-san build-noomp build-avx2-O3
