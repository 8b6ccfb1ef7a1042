# ext/ext.mk: rules owned by the SQLite extension (included by the Makefile).
#
#   make sqltest        build bftree.so and the differential test, run sql_tests
#   make difftest       build and run only the differential test
#   make install-ext    install bftree.so where dlopen("bftree.so") finds it
#
# unit_tests/test_keyenc.c compiles ext/bfx_codec.c into itself, so the
# generic unit-test rule builds it; here it learns its extra prerequisites.
$(B)/unit_tests/test_keyenc: ext/bfx_codec.c ext/bfx_codec.h
