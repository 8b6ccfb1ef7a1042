# ext/ext.mk: rules owned by the SQLite extension (included by the Makefile).
#
#   make sqltest        build bftree.so and the C test programs, then run
#                       sql_tests/run.sh (SQL scripts, differential test,
#                       two-connection test, short crash test)
#   make difftest       build and run only the differential test
#                       (BF_TEST_SEED=n replays, BF_DIFFTEST_OPS=n sizes it)
#   make crash          the long crash test: 1000 kills (BF_CRASH_KILLS=n
#                       changes it, BF_TEST_SEED=n replays)
#   make install-ext    install bftree.so where dlopen("bftree.so") finds it,
#                       so that `.load bftree` works from any directory
#
# `make test` runs sql_tests/run.sh after the unit tests; the prerequisite
# below builds the C test programs before that.

.PHONY: sqltest sqltest-variant difftest difftest-build crash install-ext uninstall-ext

DIFFTEST = build/rel/sql_tests/difftest
SQL_CTEST_NAMES = difftest twoconn crashtest
SQL_CTESTS = $(patsubst %,build/rel/sql_tests/%,$(SQL_CTEST_NAMES))

$(B)/sql_tests/%: sql_tests/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) $(WARN) $(VFLAGS) -pthread -o $@ $< $(LDFLAGS_ALL) $(SQLITE_LIBS)

# The SQL tests against a sanitizer variant's module (make asan, ubsan,
# tsan run this with VARIANT set): the module and the C test programs are
# built with the sanitizer; the sqlite3 shell is not, so the sanitizer's
# runtime is preloaded into it (SAN_PRELOAD), ASan's and TSan's having to
# come first.  Leak detection stays on for the C test programs, which close
# everything they open, and is off in the shell, whose own allocations at
# exit are not ours to judge.
SAN_RUNTIME_asan = libasan.so
SAN_RUNTIME_tsan = libtsan.so
SAN_PRELOAD = $(if $(SAN_RUNTIME_$(VARIANT)),$(shell $(CC) -print-file-name=$(SAN_RUNTIME_$(VARIANT))))

$(B)/bftree.so: $(ENGINE_OBJ) $(EXT_OBJ)
	$(CC) -shared $(LDFLAGS_ALL) -o $@ $(EXT_OBJ) $(ENGINE_OBJ) $(LIBS)

sqltest-variant: $(B)/bftree.so $(patsubst %,$(B)/sql_tests/%,$(SQL_CTEST_NAMES))
	@BFTREE_SO=$(B)/bftree.so SQL_TEST_BIN=$(B)/sql_tests \
	  SQL_TEST_PRELOAD="$(SAN_PRELOAD)" sql_tests/run.sh

difftest-build: deps
	@$(MAKE) --no-print-directory VARIANT=rel bftree.so $(SQL_CTESTS)

test: difftest-build

sqltest: difftest-build
	@sql_tests/run.sh

difftest: difftest-build
	$(DIFFTEST) ./bftree.so

crash: difftest-build
	BF_CRASH_KILLS=$${BF_CRASH_KILLS:-1000} build/rel/sql_tests/crashtest ./bftree.so

# dlopen("bftree.so") searches LD_LIBRARY_PATH, the ld.so cache (lib*.so
# names only) and the default directories, so the module goes into the
# multiarch library directory (/usr/lib/x86_64-linux-gnu on Debian amd64),
# or /usr/lib where the compiler reports no multiarch triplet.
EXT_MULTIARCH := $(shell $(CC) -print-multiarch 2>/dev/null)
EXT_LIBDIR ?= $(if $(EXT_MULTIARCH),/usr/lib/$(EXT_MULTIARCH),/usr/lib)

install-ext: all
	install -d $(DESTDIR)$(EXT_LIBDIR)
	install -m 0755 bftree.so $(DESTDIR)$(EXT_LIBDIR)/bftree.so

uninstall-ext:
	rm -f $(DESTDIR)$(EXT_LIBDIR)/bftree.so

# unit_tests/test_keyenc.c compiles ext/bfx_codec.c into itself, so the
# generic unit-test rule builds it; here it learns its extra prerequisites.
$(B)/unit_tests/test_keyenc: ext/bfx_codec.c ext/bfx_codec.h
