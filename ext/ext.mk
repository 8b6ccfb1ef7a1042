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

.PHONY: sqltest difftest difftest-build crash install-ext uninstall-ext

DIFFTEST = build/rel/sql_tests/difftest
SQL_CTESTS = $(DIFFTEST) build/rel/sql_tests/twoconn build/rel/sql_tests/crashtest

build/rel/sql_tests/%: sql_tests/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) $(WARN) $(OPT) -pthread -o $@ $< $(SQLITE_LIBS)

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
