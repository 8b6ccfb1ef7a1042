# bftree: a Bf-Tree engine (bftree/) and its SQLite virtual-table module (ext/).
#
#   make            build libbftree.a and bftree.so (installs missing packages)
#   make test       build and run every test (unit, SQL, differential)
#   make asan       the unit and SQL tests under AddressSanitizer + UBSan
#   make ubsan      the unit and SQL tests under UndefinedBehaviorSanitizer
#   make tsan       the unit and SQL tests under ThreadSanitizer
#   make demo       the main job: build, then a demo in the sqlite3 shell
#   make bench      benchmarks against other engines (bench/bench.mk)
#   make bench-engine  the engine alone (BENCH_ARGS="--keys N ...")
#   make install    install bftree.so where the dynamic loader finds it
#   make clean
#
# Objects go to build/<variant>/: rel (the shipped library, -O2), test
# (-DBF_TESTING: fault injection compiled in), asan, ubsan, tsan.

CC ?= cc
CSTD = -std=c11 -D_GNU_SOURCE
WARN = -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes
OPT ?= -O2 -g
BASE_CFLAGS = $(CSTD) $(WARN) -fPIC -pthread -Ibftree
LIBS = -luring -lpthread -lm
SQLITE_LIBS = -lsqlite3

ENGINE_SRC = $(sort $(wildcard bftree/*.c))
EXT_SRC = $(sort $(wildcard ext/*.c))
UNIT_SRC = $(sort $(wildcard unit_tests/test_*.c))
UNIT_NAMES = $(patsubst unit_tests/%.c,%,$(UNIT_SRC))

VARIANT ?= rel
B = build/$(VARIANT)
ifeq ($(VARIANT),rel)
  VFLAGS = $(OPT)
else ifeq ($(VARIANT),test)
  VFLAGS = $(OPT) -DBF_TESTING
else ifeq ($(VARIANT),asan)
  VFLAGS = -O1 -g -DBF_TESTING -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else ifeq ($(VARIANT),ubsan)
  VFLAGS = -O1 -g -DBF_TESTING -fsanitize=undefined -fno-sanitize-recover=undefined
else ifeq ($(VARIANT),tsan)
  VFLAGS = -O1 -g -DBF_TESTING -fsanitize=thread
endif
CFLAGS_ALL = $(BASE_CFLAGS) $(VFLAGS) $(CFLAGS)
LDFLAGS_ALL = $(filter -fsanitize=%,$(VFLAGS)) $(LDFLAGS)

ENGINE_OBJ = $(patsubst bftree/%.c,$(B)/bftree/%.o,$(ENGINE_SRC))
EXT_OBJ = $(patsubst ext/%.c,$(B)/ext/%.o,$(EXT_SRC))

.PHONY: all deps lib test unit unit-build asan ubsan tsan demo install clean
.DEFAULT_GOAL := all

all: deps
	@$(MAKE) --no-print-directory VARIANT=rel lib bftree.so

deps:
	@scripts/install-deps.sh

lib: $(B)/libbftree.a

$(B)/bftree/%.o: bftree/%.c bftree/bftree.h bftree/bf_int.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c $< -o $@

$(B)/ext/%.o: ext/%.c $(wildcard ext/*.h) bftree/bftree.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Iext -c $< -o $@

$(B)/libbftree.a: $(ENGINE_OBJ)
	@rm -f $@
	ar rcs $@ $^

# The loadable extension, at the repository root so `.load ./bftree` works.
bftree.so: $(ENGINE_OBJ) $(EXT_OBJ)
	@if [ -n "$(EXT_OBJ)" ]; then \
	  echo "$(CC) -shared -o $@ ..."; \
	  $(CC) -shared $(LDFLAGS_ALL) -o $@ $(EXT_OBJ) $(ENGINE_OBJ) $(LIBS); \
	fi

# Unit tests.  A test of one subsystem links only the objects it needs, so
# one subsystem's tests build while another is being changed; the rest link
# the whole engine.
UNIT_DEPS_test_page = bf_util bf_page
UNIT_DEPS_test_buf = bf_util bf_page bf_buf
UNIT_DEPS_test_latch = bf_util bf_latch bf_map
UNIT_DEPS_test_map = bf_util bf_latch bf_map
UNIT_DEPS_test_inner = bf_util bf_inner
UNIT_DEPS_test_io = bf_util bf_io
UNIT_DEPS_test_wset = bf_util bf_wset
UNIT_DEPS_test_wal = bf_util bf_wal
UNIT_DEPS_test_sketch = bf_util bf_sketch
UNIT_DEPS_test_keyenc = bf_util

define unit_rule
$(B)/unit_tests/$(1): unit_tests/$(1).c unit_tests/test_util.h bftree/bftree.h bftree/bf_int.h \
    $(if $(UNIT_DEPS_$(1)),$(patsubst %,$(B)/bftree/%.o,$(UNIT_DEPS_$(1))),$(B)/libbftree.a)
	@mkdir -p $$(dir $$@)
	$$(CC) $$(CFLAGS_ALL) -Iunit_tests -o $$@ $$< \
	  $(if $(UNIT_DEPS_$(1)),$(patsubst %,$(B)/bftree/%.o,$(UNIT_DEPS_$(1))),$(B)/libbftree.a) \
	  $$(LDFLAGS_ALL) -lcmocka $$(LIBS)
endef
$(foreach t,$(UNIT_NAMES),$(eval $(call unit_rule,$(t))))

UNIT_BINS = $(patsubst %,$(B)/unit_tests/%,$(UNIT_NAMES))

# Tests that are slow under a sanitizer run with smaller parameters there:
# they read BF_TEST_SCALE (percent, default 100).
unit-build: $(UNIT_BINS)

unit: unit-build
	@scripts/run-unit-tests.sh $(B)/unit_tests $(UNIT_NAMES)

# `make test`: everything, with the fault-injection build.
test: deps
	@$(MAKE) --no-print-directory VARIANT=test unit
	@$(MAKE) --no-print-directory VARIANT=rel bftree.so
	@if [ -x sql_tests/run.sh ]; then sql_tests/run.sh; fi

# The sanitizer targets run the unit tests, then the SQL tests against the
# sanitized module (sqltest-variant in ext/ext.mk).
asan: deps
	@BF_TEST_SCALE=$${BF_TEST_SCALE:-25} ASAN_OPTIONS=detect_leaks=1 \
	  $(MAKE) --no-print-directory VARIANT=asan unit sqltest-variant

ubsan: deps
	@BF_TEST_SCALE=$${BF_TEST_SCALE:-50} UBSAN_OPTIONS=print_stacktrace=1 \
	  $(MAKE) --no-print-directory VARIANT=ubsan unit sqltest-variant

# ThreadSanitizer: every unit test (the concurrent ones are what matter) and
# the SQL tests (twoconn's threads share tables, files and locks).
tsan: deps
	@BF_TEST_SCALE=$${BF_TEST_SCALE:-10} TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
	  $(MAKE) --no-print-directory VARIANT=tsan unit sqltest-variant

demo: all
	@scripts/demo.sh

# The engine alone (no SQLite): bench/engine_bench.c, run by `make
# bench-engine`; the comparison with other engines (make bench, make
# bench-quick) lives in bench/bench.mk.

build/rel/bench/engine_bench: bench/engine_bench.c bench/zipf.h build/rel/libbftree.a
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(OPT) -o $@ $< build/rel/libbftree.a $(LIBS)

# dlopen("bftree.so") does not search /usr/local/lib: see install-ext in
# ext/ext.mk (the multiarch library directory).
install: install-ext

clean:
	rm -rf build bftree.so

# Rules owned by the extension (sql tests, differential test, demo).
-include ext/ext.mk

# Rules owned by the benchmarks (peers, YCSB driver, plots).
-include bench/bench.mk
