# esbridge — build, test, demo, benchmark.
#
#   make                 build/esbridge
#   make check           every test (unit + integration against real services)
#   make unit            unit tests only (no services)
#   make install         PREFIX=/usr/local, DESTDIR= for staging
#   make demo            services up, sample events, catch-up, a search
#   make DEVELOPER=1     warnings are errors (CI)
#   make SANITIZE=address,undefined unit

CC      ?= cc
# make V=1 shows the full commands
ifeq ($(V),1)
Q :=
else
Q := @
endif
PREFIX  ?= /usr/local
BUILD   ?= build

VERSION := $(shell cat VERSION 2>/dev/null || echo 0.0.0)

WARN := -Wall -Wextra -Wpedantic -Wformat=2 -Wshadow -Wstrict-prototypes \
	-Wmissing-prototypes -Wold-style-definition -Wpointer-arith \
	-Wwrite-strings -Wvla -Wundef -Wimplicit-fallthrough -fno-common
ifeq ($(DEVELOPER),1)
WARN += -Werror
endif

OPT ?= -O2 -g
MAPPINGS_DIR ?= mappings
CFLAGS_ALL := -std=c11 $(OPT) $(WARN) $(CFLAGS)
CPPFLAGS_ALL := -D_POSIX_C_SOURCE=200809L -Iinclude \
	-DESBRIDGE_VERSION='"$(VERSION)"' \
	-DESBRIDGE_MAPPINGS_DIR='"$(MAPPINGS_DIR)"' $(CPPFLAGS)

# library headers as system headers: their warnings are not ours
PKG_CFLAGS := $(shell pkg-config --cflags libcurl yajl libpq 2>/dev/null | sed 's/-I/-isystem /g') \
	-isystem $(shell pg_config --includedir 2>/dev/null || echo /usr/include/postgresql)
PKG_LIBS := $(shell pkg-config --libs libcurl yajl libpq 2>/dev/null) -lev -lz -lm

ifneq ($(SANITIZE),)
SAN_FLAGS := -fsanitize=$(SANITIZE) -fno-sanitize-recover=all -fno-omit-frame-pointer
CFLAGS_ALL += $(SAN_FLAGS)
LDFLAGS += $(SAN_FLAGS)
endif

# the command line (main, its commands and their session) is the program's, not the library's
MAIN_SRCS := src/main.c src/cli.c src/session.c $(wildcard src/cmd_*.c)
LIB_SRCS := $(filter-out $(MAIN_SRCS),$(wildcard src/*.c src/projections/*.c))
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/%.o)
MAIN_OBJ := $(MAIN_SRCS:%.c=$(BUILD)/%.o)

UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)
UNIT_SUPPORT := $(BUILD)/tests/unit/support.o
INTEG_SRCS := $(wildcard tests/integration/test_*.c)
INTEG_BINS := $(INTEG_SRCS:tests/integration/%.c=$(BUILD)/tests/%)
INTEG_SUPPORT := $(BUILD)/tests/integration/harness.o

.PHONY: all deps services unit integration check demo bench bench-smoke clean install FORCE

all: $(BUILD)/esbridge

# Recompile everything when the flags change (like redis' .make-settings).
$(BUILD)/.flags: FORCE
	@mkdir -p $(BUILD)
	@echo '$(CC) $(CFLAGS_ALL) $(CPPFLAGS_ALL) $(LDFLAGS)' | cmp -s - $@ || \
		echo '$(CC) $(CFLAGS_ALL) $(CPPFLAGS_ALL) $(LDFLAGS)' > $@

$(BUILD)/%.o: %.c $(BUILD)/.flags
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CPPFLAGS_ALL) $(PKG_CFLAGS) $(CFLAGS_ALL) -MMD -MP -c -o $@ $<

$(BUILD)/libesbridge.a: $(LIB_OBJS)
	$(Q)rm -f $@
	$(Q)ar rcs $@ $^

$(BUILD)/esbridge: $(MAIN_OBJ) $(BUILD)/libesbridge.a
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

# The crash tests' build: the same program with the rebuild's crash points
# (ESBRIDGE_CRASH_AT, see src/rebuild.c), which the shipped binary lacks.
$(BUILD)/src/rebuild-crash.o: src/rebuild.c $(BUILD)/.flags
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) $(CPPFLAGS_ALL) -DESBRIDGE_CRASH_POINTS $(PKG_CFLAGS) $(CFLAGS_ALL) -MMD -MP -c -o $@ $<

$(BUILD)/esbridge-crash: $(MAIN_OBJ) $(BUILD)/src/rebuild-crash.o $(BUILD)/libesbridge.a
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

# Unit tests: Criterion, no services.
$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(UNIT_SUPPORT) $(BUILD)/libesbridge.a
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $< $(UNIT_SUPPORT) $(BUILD)/libesbridge.a $(PKG_LIBS) -lcriterion

# Allocation failures: esbridge's own allocations go through the test's wrappers.
OOM_WRAP := -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=strdup,--wrap=strndup
$(BUILD)/tests/test_oom: $(BUILD)/tests/unit/test_oom.o $(UNIT_SUPPORT) $(BUILD)/libesbridge.a
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) $(OOM_WRAP) -o $@ $< $(UNIT_SUPPORT) $(BUILD)/libesbridge.a $(PKG_LIBS) -lcriterion

$(BUILD)/tests/integration-%: $(BUILD)/tests/integration/test_%.o $(INTEG_SUPPORT) $(BUILD)/libesbridge.a
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) -lcriterion

deps:
	@scripts/deps

unit: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; $$t --jobs 1; done

# INTEG_SKIP="faults ..." leaves suites out (CI's sanitizer pass skips the
# slow fault suite, which the first pass runs).
INTEG_SKIP ?=
INTEG_RUN := $(filter-out $(INTEG_SKIP:%=$(BUILD)/tests/integration-%),\
	$(INTEG_SRCS:tests/integration/test_%.c=$(BUILD)/tests/integration-%))

# Integration tests need the real services; they are started here when absent.
integration: $(BUILD)/esbridge $(BUILD)/esbridge-crash $(INTEG_RUN)
	@set -e; eval "$$(scripts/services start)"; \
	for t in $(INTEG_RUN); do echo "== $$t"; ESBRIDGE_BIN=$(BUILD)/esbridge \
		ESBRIDGE_CRASH_BIN=$(BUILD)/esbridge-crash $$t --jobs 1; done

check: deps
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory check-man
	@$(MAKE) --no-print-directory integration
	@$(MAKE) --no-print-directory bench-smoke

# deps first, the build in a make of its own: the flags above come from
# pkg-config, which a fresh machine only has once deps has run
demo: deps
	@$(MAKE) --no-print-directory $(BUILD)/esbridge
	@ESBRIDGE_BIN=$(BUILD)/esbridge scripts/demo

# The ceiling's poster (tests/bench/poster.c): libcurl only.
$(BUILD)/bench-poster: tests/bench/poster.c $(BUILD)/.flags
	@$(if $(Q),echo "  CCLD    $@")
	$(Q)$(CC) $(CPPFLAGS_ALL) $(PKG_CFLAGS) $(CFLAGS_ALL) $(LDFLAGS) -o $@ $< $(PKG_LIBS)

# make bench [BENCH_EVENTS=1000000 BENCH_MEMORY_EVENTS="1000000 5000000" ...]; see scripts/bench
bench: deps
	@$(MAKE) --no-print-directory $(BUILD)/esbridge $(BUILD)/bench-poster
	@BUILD=$(BUILD) scripts/bench

# The same at 10k events, part of `make check` so that it cannot rot.
bench-smoke: $(BUILD)/esbridge $(BUILD)/bench-poster
	@BUILD=$(BUILD) BENCH_EVENTS=10000 BENCH_MEMORY_EVENTS="10000 20000" BENCH_LIVE_SECONDS=3 BENCH_LARGE=40x450000 \
		BENCH_OUT=$(BUILD)/bench-smoke BENCH_SMOKE=1 scripts/bench

# make install [PREFIX=/usr/local] [DESTDIR=/tmp/stage]: the program, built
# again into $(BUILD)/install so that its default --mappings-dir is the
# installed one; the mappings; the man page; an example config file and
# systemd unit (docs, not enabled). The installed paths replace /usr/local
# in the man page and the unit.
BINDIR  ?= $(PREFIX)/bin
DATADIR ?= $(PREFIX)/share
MANDIR  ?= $(DATADIR)/man
DOCDIR  ?= $(DATADIR)/doc/esbridge
INSTALL_MAPPINGS_DIR = $(DATADIR)/esbridge/mappings
INSTALL_PATHS = -e 's|/usr/local/bin/esbridge|$(BINDIR)/esbridge|g' \
	-e 's|/usr/local/share/esbridge|$(DATADIR)/esbridge|g' \
	-e 's|/usr/local/share/doc/esbridge|$(DOCDIR)|g'

install:
	@$(MAKE) --no-print-directory BUILD=$(BUILD)/install MAPPINGS_DIR=$(INSTALL_MAPPINGS_DIR) all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(INSTALL_MAPPINGS_DIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(DOCDIR)
	install -m 755 $(BUILD)/install/esbridge $(DESTDIR)$(BINDIR)/esbridge
	install -m 644 mappings/*.json $(DESTDIR)$(INSTALL_MAPPINGS_DIR)/
	sed $(INSTALL_PATHS) scripts/esbridge.1 > $(BUILD)/install/esbridge.1
	sed $(INSTALL_PATHS) scripts/esbridge.service > $(BUILD)/install/esbridge.service
	sed $(INSTALL_PATHS) scripts/esbridge.conf.example > $(BUILD)/install/esbridge.conf.example
	install -m 644 $(BUILD)/install/esbridge.1 $(DESTDIR)$(MANDIR)/man1/esbridge.1
	install -m 644 $(BUILD)/install/esbridge.service $(BUILD)/install/esbridge.conf.example $(DESTDIR)$(DOCDIR)/

# The man page and the example config file match esbridge --help (part of check).
.PHONY: check-man
check-man: $(BUILD)/esbridge
	@scripts/check-man $(BUILD)/esbridge

clean:
	rm -rf $(BUILD)


# ---- fuzzing: libFuzzer targets under ASan/UBSan (tests/fuzz/) -------------
#
#   make fuzz [FUZZ_TIME=30] [FUZZ_BUILD=build-fuzz]
#
# Builds the parser, projection and _bulk sources with clang into
# $(FUZZ_BUILD), then runs each target for FUZZ_TIME seconds on its seed
# corpus (tests/fuzz/corpus/NAME, read only; new inputs go to
# $(FUZZ_BUILD)/corpus/NAME). Fails on any crash, leak, UB or broken
# invariant; the input is saved as $(FUZZ_BUILD)/crash-NAME-*.
FUZZ_CC     ?= clang
FUZZ_BUILD  ?= build-fuzz
FUZZ_TIME   ?= 30
FUZZ_TARGETS := event bulk_response http_request config_file
FUZZ_SAN    := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CFLAGS := -std=c11 -g -O1 $(WARN) $(FUZZ_SAN) -fsanitize=fuzzer-no-link
FUZZ_LIB_SRCS := src/buf.c src/json.c src/bulk.c src/projection.c $(wildcard src/projections/*.c) \
	src/config.c src/log.c src/httpd.c
FUZZ_LIB_OBJS := $(FUZZ_LIB_SRCS:%.c=$(FUZZ_BUILD)/obj/%.o)
FUZZ_BINS := $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/fuzz_%)

.PHONY: fuzz fuzz-build
# the objects are kept (a pattern rule alone would delete them as intermediates)
.SECONDARY: $(FUZZ_LIB_OBJS) $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/obj/tests/fuzz/fuzz_%.o)

fuzz-build: $(FUZZ_BINS)

$(FUZZ_BUILD)/.flags: FORCE
	@mkdir -p $(FUZZ_BUILD)
	@echo '$(FUZZ_CC) $(FUZZ_CFLAGS) $(CPPFLAGS_ALL)' | cmp -s - $@ || \
		echo '$(FUZZ_CC) $(FUZZ_CFLAGS) $(CPPFLAGS_ALL)' > $@

$(FUZZ_BUILD)/obj/%.o: %.c $(FUZZ_BUILD)/.flags
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  FUZZCC  $<")
	$(Q)$(FUZZ_CC) $(CPPFLAGS_ALL) $(PKG_CFLAGS) $(FUZZ_CFLAGS) -MMD -MP -c -o $@ $<

$(FUZZ_BUILD)/fuzz_%: $(FUZZ_BUILD)/obj/tests/fuzz/fuzz_%.o $(FUZZ_LIB_OBJS)
	@$(if $(Q),echo "  FUZZLD  $@")
	$(Q)$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -o $@ $^ $(PKG_LIBS)

fuzz: $(FUZZ_BINS)
	@failed=; for t in $(FUZZ_TARGETS); do \
		echo "== fuzz_$$t for $(FUZZ_TIME)s"; \
		mkdir -p $(FUZZ_BUILD)/corpus/$$t; \
		ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		$(FUZZ_BUILD)/fuzz_$$t -max_total_time=$(FUZZ_TIME) -timeout=10 -rss_limit_mb=2048 \
			-max_len=16384 -dict=tests/fuzz/$$t.dict -print_final_stats=1 \
			-artifact_prefix=$(FUZZ_BUILD)/crash-$$t- \
			$(FUZZ_BUILD)/corpus/$$t tests/fuzz/corpus/$$t 2>$(FUZZ_BUILD)/fuzz_$$t.log \
		|| { tail -n 60 $(FUZZ_BUILD)/fuzz_$$t.log; echo "fuzz_$$t failed: see $(FUZZ_BUILD)/fuzz_$$t.log"; \
		     failed="$$failed fuzz_$$t"; continue; }; \
		grep -E '^#[0-9]+.*(DONE|INITED)|^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' \
			$(FUZZ_BUILD)/fuzz_$$t.log || true; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzzing failed:$$failed"; exit 1; fi

-include $(shell find $(FUZZ_BUILD) -name '*.d' 2>/dev/null)
# ---- end of fuzzing -------------------------------------------------------

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
