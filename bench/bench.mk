# bench/bench.mk: the YCSB-style benchmark instrument (included by the
# Makefile).  See README.md, "Benchmarks".
#
#   make bench          the default matrix (<= 20 min): every engine, every
#                       workload, data = 4x a 32 MiB budget, plus C at 1x
#                       (the data/budget plot); results in bench/results/
#   make bench-quick    a smaller matrix (< 3 min): 32 MiB, data = budget,
#                       workloads A C E W, 1 s measured
#   make bench-shapes   16-byte keys and values (the paper's shape), data =
#                       4x a 16 MiB budget, workloads A C E W (about 15 min)
#   make bench-steady   the cache past its warm-up: C and A measured for 60 s,
#                       one and 4 client threads, sqlite-sql, bftree-sql and
#                       bftree-c on data = 4x a 32 MiB budget (about 25 min)
#   make bench-build    build build/rel/bench/ycsb-* (installs missing packages)
#   make bench-engine   the engine micro-benchmark (bench/engine_bench.c)
#
# One run by hand: bench/run.sh one ENGINE WORKLOAD [ratio], or the driver
# itself: build/rel/bench/ycsb-<family> --help.

.PHONY: bench bench-quick bench-shapes bench-steady bench-build bench-deps bench-engine

BENCH_PKGS = libsqlite3-dev librocksdb-dev liblmdb-dev libwiredtiger-dev gnuplot-nox
# One driver binary per engine family, each linking only its own libraries
# (see ycsb.h: linking librocksdb alone costs ~10 MiB of resident memory).
YCSB_DIR = build/rel/bench
YCSB_FAMILIES = sqlite bftree rocksdb lmdb wiredtiger
YCSB_BINS = $(patsubst %,$(YCSB_DIR)/ycsb-%,$(YCSB_FAMILIES))
YCSB_LIBS_sqlite = -lsqlite3
YCSB_LIBS_bftree = build/rel/libbftree.a $(LIBS)
YCSB_LIBS_rocksdb = -lrocksdb
YCSB_LIBS_lmdb = -llmdb
YCSB_LIBS_wiredtiger = -lwiredtiger

$(YCSB_DIR)/ycsb.o: bench/ycsb.c bench/ycsb.h bench/zipf.h
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(OPT) $(CFLAGS) -Ibench -c -o $@ $<

$(YCSB_DIR)/adapter_%.o: bench/adapter_%.c bench/ycsb.h bftree/bftree.h
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(OPT) $(CFLAGS) -Ibench -c -o $@ $<

$(YCSB_DIR)/ycsb-bftree: build/rel/libbftree.a
.SECONDARY: $(patsubst %,$(YCSB_DIR)/adapter_%.o,$(YCSB_FAMILIES))
$(YCSB_DIR)/ycsb-%: $(YCSB_DIR)/ycsb.o $(YCSB_DIR)/adapter_%.o
	$(CC) $(LDFLAGS) -o $@ $(YCSB_DIR)/ycsb.o $(YCSB_DIR)/adapter_$*.o \
	  $(YCSB_LIBS_$*) -lm -lpthread

# The peers' Debian packages, installed when missing (as root).
bench-deps:
	@scripts/install-deps.sh $(BENCH_PKGS)

bench-build: bench-deps deps
	@$(MAKE) --no-print-directory VARIANT=rel lib bftree.so $(YCSB_BINS)

# The Makefile's own `bench` recipe (engine_bench) is replaced by this one;
# engine_bench stays available as bench-engine.
bench: bench-build
	@bench/run.sh default

bench-quick: bench-build
	@bench/run.sh quick

bench-shapes: bench-build
	@bench/run.sh shapes

bench-steady: bench-build
	@bench/run.sh steady

bench-engine: deps
	@$(MAKE) --no-print-directory VARIANT=rel lib build/rel/bench/engine_bench
	build/rel/bench/engine_bench $(BENCH_ARGS)
