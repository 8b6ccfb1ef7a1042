#!/bin/sh
# bench/run.sh: run a matrix of YCSB-style benchmark runs, each in its own
# process inside a memory cgroup holding the whole process (page cache
# included) to the budget, then write the report (bench/report.sh).
#
# Usage:
#   bench/run.sh default          the `make bench` matrix (<= 20 min)
#   bench/run.sh quick            the `make bench-quick` matrix (< 3 min)
#   bench/run.sh shapes           the `make bench-shapes` matrix: 16-byte
#                                 keys and values, 16 MiB budget, data 4x
#   bench/run.sh steady           the `make bench-steady` matrix: C and A
#                                 measured for 60 s (the buffer and caches
#                                 past their warm-up), 1 and 4 client
#                                 threads, sqlite-sql bftree-sql bftree-c
#   bench/run.sh one ENGINE WORKLOAD [RATIO]
#                                 one run (a load first when WORKLOAD is not
#                                 load and no loaded data set of this
#                                 configuration is there yet)
#   bench/run.sh report CSV       (re)write the report of a results CSV
#
# Environment (each overrides the matrix's value):
#   BENCH_ENGINES    "sqlite-sql sqlite-c bftree-sql bftree-sql-prep bftree-c rocksdb lmdb wiredtiger"
#   BENCH_WORKLOADS  workloads run after each load ("A B C E F W")
#   BENCH_BUDGET     MiB (32)   BENCH_RATIO   data/budget (4; quick 1)
#   BENCH_SWEEP      data/budget ratios of the sweep ("1"; the main
#                    ratio is its last point); BENCH_SWEEP_WORKLOADS ("C")
#   BENCH_KEY (8)  BENCH_VALUE (100)  BENCH_DIST (zipf)  BENCH_EXTRA_DIST
#                    (uniform: those workloads again with this key choice;
#                    "" for none)  BENCH_EXTRA_WORKLOADS ("C")
#   BENCH_SECONDS    measured seconds per run (4; quick 1)
#   BENCH_WARMUP_MIN / BENCH_WARMUP_MAX   seconds (3 / 6; quick 0.5 / 2)
#   BENCH_LOAD_BATCH inserts per transaction in the load (1000; 1 measures
#                    the load as one autocommit insert at a time)
#   BENCH_SHARE      percent of the budget for every engine's own cache knob;
#                    unset: each engine's own share (share_for below: the
#                    largest measured to fit its whole process in the cap)
#   BENCH_TIMEOUT    seconds before a run is killed (300)
#   BENCH_DATA       data directory (build/bench-data; on the disk, not tmpfs)
#   BENCH_RESULTS    output directory (bench/results)
#   BENCH_NOCAP=1    do not try to cap memory (the output says so)
#   BENCH_BFTREE_SCHEMA  main|temp: where the bftree SQL engines declare the
#                    table (default: main with one client thread, each
#                    connection's temp schema with several; see
#                    bench/adapter_sqlite.c, THREADS)
#   BENCH_SQLITE_BUSY  retry|timeout: how native SQLite connections wait for
#                    each other's locks (default retry: a busy handler that
#                    yields, then sleeps 50 us; timeout: SQLite's busy_timeout)
#   BENCH_THREADS    client threads of every workload run (1), each with its
#                    own handle (SQL: its own connection)
#   BENCH_SQL_WORKLOADS  workloads run at the main ratio on the SQL-text
#                    engines only (sqlite-sql, bftree-sql), with one client
#                    thread and with BENCH_THREAD_COUNT ("Aput" in default,
#                    "" elsewhere: A with INSERT OR REPLACE as its update)
#   BENCH_THREAD_WORKLOADS  workloads run again at the main ratio with
#                    BENCH_THREAD_COUNT (4) client threads ("C A" in default,
#                    "" elsewhere), on every engine with a multi-threaded
#                    adapter
set -u
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
BIN=$ROOT/build/rel/bench
MODE=${1:-default}

ENGINES=${BENCH_ENGINES:-"sqlite-sql sqlite-c bftree-sql bftree-sql-prep bftree-c rocksdb lmdb wiredtiger"}
BUDGET=${BENCH_BUDGET:-32}
RATIO=${BENCH_RATIO:-4}
KEY=${BENCH_KEY:-8}
VALUE=${BENCH_VALUE:-100}
DIST=${BENCH_DIST:-zipf}
SHARE_ALL=${BENCH_SHARE:-}
DATA=${BENCH_DATA:-$ROOT/build/bench-data}
RESULTS=${BENCH_RESULTS:-$ROOT/bench/results}
case $MODE in
  default)
    # Sized for <= 20 minutes on a 2-core machine whose disk reads 4 KiB in
    # ~50 us: the 4x loads alone take ~7 minutes there.  More points of the
    # data/budget plot: BENCH_SWEEP="0.25 1 16".
    WORKLOADS=${BENCH_WORKLOADS:-"A B C E F W"}
    SWEEP=${BENCH_SWEEP-"1"}
    SWEEP_WORKLOADS=${BENCH_SWEEP_WORKLOADS:-"C"}
    EXTRA_DIST=${BENCH_EXTRA_DIST-uniform}
    EXTRA_WORKLOADS=${BENCH_EXTRA_WORKLOADS:-"C"}
    SECONDS_=${BENCH_SECONDS:-4}
    WMIN=${BENCH_WARMUP_MIN:-3}
    WMAX=${BENCH_WARMUP_MAX:-6}
    THREAD_WORKLOADS=${BENCH_THREAD_WORKLOADS-"C A"}
    SQL_WORKLOADS=${BENCH_SQL_WORKLOADS-"Aput"}
    ;;
  quick)
    BUDGET=${BENCH_BUDGET:-32}
    RATIO=${BENCH_RATIO:-1}
    WORKLOADS=${BENCH_WORKLOADS:-"A C E W"}
    SWEEP=${BENCH_SWEEP-""}
    SWEEP_WORKLOADS=${BENCH_SWEEP_WORKLOADS:-"C"}
    EXTRA_DIST=${BENCH_EXTRA_DIST-}
    EXTRA_WORKLOADS=${BENCH_EXTRA_WORKLOADS:-"C"}
    SECONDS_=${BENCH_SECONDS:-1}
    WMIN=${BENCH_WARMUP_MIN:-0.5}
    WMAX=${BENCH_WARMUP_MAX:-2}
    ;;
  steady)
    # How the 4-second windows of `default` compare with a minute: a record
    # cache learns a Zipf hot set record by record, a page cache page by page.
    ENGINES=${BENCH_ENGINES:-"sqlite-sql bftree-sql bftree-c"}
    WORKLOADS=${BENCH_WORKLOADS:-"C A"}
    SWEEP=${BENCH_SWEEP-""}
    SWEEP_WORKLOADS=${BENCH_SWEEP_WORKLOADS:-"C"}
    EXTRA_DIST=${BENCH_EXTRA_DIST-}
    EXTRA_WORKLOADS=${BENCH_EXTRA_WORKLOADS:-"C"}
    SECONDS_=${BENCH_SECONDS:-60}
    WMIN=${BENCH_WARMUP_MIN:-3}
    WMAX=${BENCH_WARMUP_MAX:-6}
    THREAD_WORKLOADS=${BENCH_THREAD_WORKLOADS-"C A"}
    ;;
  shapes)
    # The small-record shape of the Bf-Tree paper: 16-byte keys, 16-byte
    # values (BLOB keys through SQL), data 4x a 16 MiB budget (2.1M records).
    ENGINES=${BENCH_ENGINES:-"sqlite-sql sqlite-c bftree-sql bftree-sql-prep bftree-c rocksdb lmdb"}
    BUDGET=${BENCH_BUDGET:-16}
    KEY=${BENCH_KEY:-16}
    VALUE=${BENCH_VALUE:-16}
    WORKLOADS=${BENCH_WORKLOADS:-"A C E W"}
    SWEEP=${BENCH_SWEEP-""}
    SWEEP_WORKLOADS=${BENCH_SWEEP_WORKLOADS:-"C"}
    EXTRA_DIST=${BENCH_EXTRA_DIST-}
    EXTRA_WORKLOADS=${BENCH_EXTRA_WORKLOADS:-"C"}
    SECONDS_=${BENCH_SECONDS:-5}
    WMIN=${BENCH_WARMUP_MIN:-2}
    WMAX=${BENCH_WARMUP_MAX:-5}
    ;;
  one)
    [ $# -ge 3 ] || { sed -n '2,20p' "$0"; exit 2; }
    ENGINES=$2
    WORKLOADS=$3
    RATIO=${4:-$RATIO}
    SWEEP=""
    SWEEP_WORKLOADS=""
    EXTRA_DIST=""
    EXTRA_WORKLOADS=""
    SECONDS_=${BENCH_SECONDS:-8}
    WMIN=${BENCH_WARMUP_MIN:-2}
    WMAX=${BENCH_WARMUP_MAX:-8}
    ;;
  report)
    exec "$ROOT/bench/report.sh" "$2"
    ;;
  *) sed -n '2,20p' "$0"; exit 2 ;;
esac
SQL_WORKLOADS=${SQL_WORKLOADS-${BENCH_SQL_WORKLOADS-}}
TIMEOUT=${BENCH_TIMEOUT:-300}
THREADS=${BENCH_THREADS:-1}
THR=$THREADS
THREAD_WORKLOADS=${THREAD_WORKLOADS-${BENCH_THREAD_WORKLOADS-}}
THREAD_COUNT=${BENCH_THREAD_COUNT:-4}
LOAD_BATCH=${BENCH_LOAD_BATCH:-1000}

# the driver binary of an engine (one per engine family, see bench/ycsb.h)
ycsb_bin() {
  case $1 in
    sqlite-sql|sqlite-c|bftree-sql|bftree-sql-prep) echo "$BIN/ycsb-sqlite" ;;
    bftree-c) echo "$BIN/ycsb-bftree" ;;
    *) echo "$BIN/ycsb-$1" ;;
  esac
}
for eng in $ENGINES; do
  [ -x "$(ycsb_bin "$eng")" ] || { echo "run.sh: $(ycsb_bin "$eng") missing: make bench-build" >&2; exit 1; }
done
mkdir -p "$DATA" "$RESULTS" || exit 1
STAMP=$(date +%Y%m%d-%H%M%S)
CSV=$RESULTS/$STAMP-$MODE.csv
LOG=$RESULTS/$STAMP-$MODE.log
: > "$LOG"
say() { echo "$*" | tee -a "$LOG"; }

# ---------------------------------------------------------------- memory cap
# A child of this process's own memory cgroup (v1), so that whatever limits
# the parent has still apply.  CAP_NOTE says what happened, for the report.
CG=""
CAP_NOTE=""
setup_cgroup() {
  if [ "${BENCH_NOCAP:-0}" = 1 ]; then CAP_NOTE="not capped: BENCH_NOCAP=1"; return; fi
  rel=$(sed -n 's/^[0-9]*:memory:\(.*\)$/\1/p' /proc/self/cgroup)
  base=/sys/fs/cgroup/memory
  if [ -z "$rel" ] || [ ! -d "$base$rel" ]; then
    CAP_NOTE="not capped: no cgroup v1 memory controller at $base"; return
  fi
  [ "$rel" = / ] && rel=""
  cg=$base$rel/bftree-bench.$$
  if ! mkdir "$cg" 2>/dev/null; then
    CAP_NOTE="not capped: cannot create a memory cgroup under $base$rel (not permitted)"; return
  fi
  if ! echo $((BUDGET * 1048576)) > "$cg/memory.limit_in_bytes" 2>/dev/null ||
     [ "$(cat "$cg/memory.limit_in_bytes")" -gt $((BUDGET * 1048576 + 4096)) ]; then
    rmdir "$cg" 2>/dev/null
    CAP_NOTE="not capped: cannot set memory.limit_in_bytes"; return
  fi
  CG=$cg
  CAP_NOTE="capped: memory cgroup $CG, memory.limit_in_bytes = $BUDGET MiB for the whole process (anonymous memory and page cache; no swap on this machine)"
}
cleanup() {
  if [ -n "$CG" ]; then rmdir "$CG" 2>/dev/null; fi
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

DROP_NOTE=""
drop_caches() {
  sync
  if echo 1 > /proc/sys/vm/drop_caches 2>/dev/null; then
    DROPPED=yes
  else
    DROPPED=no
    DROP_NOTE="page cache NOT dropped before runs (no permission to write /proc/sys/vm/drop_caches)"
  fi
}

# ------------------------------------------------------------------- runs
# run ENGINE WORKLOAD RATIO DIST -> appends a CSV row; returns 0 when ok
run() {
  eng=$1 wl=$2 ratio=$3 dist=$4
  dir=$DATA/$eng-k$KEY-v$VALUE-b$BUDGET-r$ratio
  drop_caches
  if [ -n "$CG" ]; then
    echo 0 > "$CG/memory.max_usage_in_bytes" 2>/dev/null
    echo 0 > "$CG/memory.failcnt" 2>/dev/null
    oom_before=$(sed -n 's/^oom_kill \([0-9]*\)/\1/p' "$CG/memory.oom_control")
  fi
  set -- --engine "$eng" --workload "$wl" --dir "$dir" --budget "$BUDGET" \
    --ratio "$ratio" --key-size "$KEY" --value-size "$VALUE" --dist "$dist" \
    --cache-share "$(share_for "$eng")" --seconds "$SECONDS_" --warmup-min "$WMIN" \
    --warmup-max "$WMAX" --ext "$ROOT/bftree.so" --csv "$CSV" --label "$STAMP" \
    --cache-dropped "$DROPPED" --load-batch "$LOAD_BATCH"
  [ "$wl" = load ] || set -- "$@" --threads "$THR"
  YCSB=$(ycsb_bin "$eng")
  t0=$(date +%s)
  if [ -n "$CG" ]; then
    timeout -s KILL "$TIMEOUT" sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' \
      "$CG" "$YCSB" "$@" >> "$LOG" 2>&1
  else
    timeout -s KILL "$TIMEOUT" "$YCSB" "$@" >> "$LOG" 2>&1
  fi
  rc=$?
  t1=$(date +%s)
  status=""
  case $rc in
    0) ;;
    3) status=wrong ;;
    137)
      status=killed
      if [ -n "$CG" ]; then
        oom_after=$(sed -n 's/^oom_kill \([0-9]*\)/\1/p' "$CG/memory.oom_control")
        [ "${oom_after:-0}" != "${oom_before:-0}" ] && status=oom
      fi
      [ $((t1 - t0)) -ge "$TIMEOUT" ] && status=timeout
      ;;
    *) status=error ;;
  esac
  if [ "$status" = killed ] || [ "$status" = oom ] || [ "$status" = timeout ]; then
    # inside the cgroup, so that it reports the cgroup's peak and limit
    if [ -n "$CG" ]; then
      sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$CG" "$YCSB" "$@" \
        --record-failure "$status" > /dev/null 2>&1
    else
      "$YCSB" "$@" --record-failure "$status" > /dev/null 2>&1
    fi
  fi
  line=$(tail -n 1 "$CSV" 2>/dev/null | awk -F, '{printf "%s ops/s p99 %s us, %s B read/op, %s B written/op, RSS %s MiB, cgroup peak %s MiB, %s", $20, $23, $25, $26, $28, $29, $33}')
  say "  $eng $wl ratio $ratio $dist: $((t1 - t0)) s: ${status:-ok}: $line"
  [ -z "$status" ] || [ "$status" = wrong ]
}

# share_for ENGINE: percent of the budget for the engine's own cache knob.
# Each engine gets the largest share measured to keep its whole process
# (library, connection, its own structures) inside the cap with room for
# the page cache its log needs; BENCH_SHARE overrides them all.
#   sqlite-*  75: cache_size; SQLite's process needs ~4 MiB besides its
#             cache (75 gave 10-25% more throughput on C than 50)
#   bftree-*  65: buffer_size; the process also holds the mapping table,
#             inner nodes and SQLite (bftree-sql: ~7 MiB besides the buffer,
#             peak ~28 MiB as SQLite's at 75; until the checkpoint image was
#             serialised leaf by leaf and close gave the buffer back before
#             building it, checkpoints added ~4.5 MiB and 55 was the most)
#   rocksdb   25: block cache + memtables.  librocksdb alone is ~10 MiB
#             resident, and its table reads go through the page cache: at
#             50 the process sat at the cap, the kernel evicted its code and
#             table pages, and A and W collapsed to 1-40 ops/s (hundreds of
#             MB read per operation); at 25 (2026-12-07, data 4x) A did 18-20K
#             ops/s and W 55K; 15, 20 and 30 did worse on A and C
#   others    50 (each adapter splits it among its own knobs; lmdb has none)
share_for() {
  if [ -n "$SHARE_ALL" ]; then echo "$SHARE_ALL"; return; fi
  case $1 in
    sqlite-*) echo 75 ;;
    bftree-*) echo 65 ;;
    rocksdb) echo 25 ;;
    *) echo 50 ;;
  esac
}

# multi_threaded ENGINE: has the engine's adapter attach() (ycsb.h)?
multi_threaded() {
  case $1 in
    wiredtiger) return 1 ;;
    *) return 0 ;;
  esac
}

# twin_of ENGINE: the engine whose loaded data set this one runs on (the
# text and prepared modes of one table format share a load: the same rows
# in the same files).  Empty: it loads its own.
twin_of() {
  case $1 in
    sqlite-c) case " $ENGINES " in *" sqlite-sql "*) echo sqlite-sql ;; esac ;;
    bftree-sql-prep) case " $ENGINES " in *" bftree-sql "*) echo bftree-sql ;; esac ;;
  esac
}

# `one ... load`: load again even where a data set is there
FORCE_LOAD=0
if [ "$MODE" = one ]; then
  case " $WORKLOADS " in *" load "*) FORCE_LOAD=1 ;; esac
fi

datadir() { echo "$DATA/$1-k$KEY-v$VALUE-b$BUDGET-r$2"; }

# loaded ENGINE RATIO: is there a completed load of this configuration?
loaded() {
  [ -f "$(datadir "$1" "$2")/.ycsb-meta" ]
}

# ensure_loaded ENGINE RATIO: load the data set (or copy the twin's fresh
# load); returns 0 when the engine has its data set.
ensure_loaded() {
  twin=$(twin_of "$1")
  if [ "$MODE" = one ] && [ "$FORCE_LOAD" = 0 ] && loaded "$1" "$2"; then
    say "  $1: reusing the loaded data set in $(datadir "$1" "$2")"
    return 0
  fi
  if [ -n "$twin" ]; then
    if ! loaded "$twin" "$2"; then
      say "  $1: no load of $twin to share at ratio $2: skipped"
      return 1
    fi
    rm -rf "$(datadir "$1" "$2")"
    # the twin's copy taken right after its load (before its workloads); in
    # `one` mode a reused load has none: then the twin's data set as it is
    src="$(datadir "$twin" "$2").fresh"
    [ -d "$src" ] || src=$(datadir "$twin" "$2")
    cp -r "$src" "$(datadir "$1" "$2")" &&
      sed -i "s/^engine=$twin /engine=$1 /" "$(datadir "$1" "$2")/.ycsb-meta" ||
      return 1
    say "  $1: runs on a copy of $twin's load at ratio $2 (same table format)"
    return 0
  fi
  # the driver clears only a directory it made, file by file: a data set
  # left by an interrupted or `one` run (RocksDB's has a subdirectory) goes
  rm -rf "$(datadir "$1" "$2")"
  run "$1" load "$2" "$DIST" || return 1
  # keep a pristine copy for an engine that shares this load
  for e in $ENGINES; do
    if [ "$(twin_of "$e")" = "$1" ]; then
      rm -rf "$(datadir "$1" "$2").fresh"
      cp -r "$(datadir "$1" "$2")" "$(datadir "$1" "$2").fresh" || return 1
    fi
  done
  return 0
}

# One data/budget ratio: every engine's data set first, then each workload
# across all engines back to back, so that a slow spell of the disk (this
# machine's I/O speed drifts by 2x over minutes) falls on every engine's run
# of a workload alike, not on one engine's whole series.
ratio_phase() { # RATIO WORKLOADS EXTRA(yes/no)
  r=$1 wls=$2 extra=$3
  ready=""
  for eng in $ENGINES; do
    if ensure_loaded "$eng" "$r"; then ready="$ready $eng"
    else say "  $eng: load failed at ratio $r: its workloads skipped"; fi
  done
  for wl in $wls; do
    [ "$wl" = load ] && continue
    for eng in $ready; do run "$eng" "$wl" "$r" "$DIST"; done
  done
  if [ "$extra" = yes ]; then
    for d in $EXTRA_DIST; do
      for wl in $EXTRA_WORKLOADS; do
        for eng in $ready; do run "$eng" "$wl" "$r" "$d"; done
      done
    done
    THR=$THREAD_COUNT
    for wl in $THREAD_WORKLOADS; do
      for eng in $ready; do
        multi_threaded "$eng" && run "$eng" "$wl" "$r" "$DIST"
      done
    done
    THR=$THREADS
    # workloads whose SQL differs from A's: on the SQL-text engines only, one
    # client thread and THREAD_COUNT (for the others they repeat A)
    for wl in $SQL_WORKLOADS; do
      for thr in $THREADS $THREAD_COUNT; do
        THR=$thr
        for eng in $ready; do
          case $eng in *-sql) run "$eng" "$wl" "$r" "$DIST" ;; esac
        done
      done
    done
    THR=$THREADS
  fi
  for eng in $ENGINES; do
    rm -rf "$(datadir "$eng" "$r").fresh"
    [ "$MODE" = one ] || rm -rf "$(datadir "$eng" "$r")"
  done
}

setup_cgroup
drop_caches
say "bench/run.sh $MODE, $(date), $(nproc) cores, $(uname -r)"
say "memory: $CAP_NOTE"
[ -n "$DROP_NOTE" ] && say "$DROP_NOTE"
shares=""
for eng in $ENGINES; do shares="$shares $eng $(share_for "$eng")%,"; done
say "budget $BUDGET MiB, data/budget $RATIO, keys $KEY B, values $VALUE B, $DIST; engines' own cache knobs (percent of the budget):${shares%,}"
say "client threads: $THREADS${THREAD_WORKLOADS:+; then $THREAD_WORKLOADS with $THREAD_COUNT threads}"
say "each run: warm-up >= $WMIN s until stable (<= $WMAX s, dropped), then $SECONDS_ s measured; load: $LOAD_BATCH inserts per transaction; order: per ratio, all loads, then each workload on every engine in turn; results: $CSV"
T_START=$(date +%s)

# the sweep's smaller data sets first, then the main ratio
for r in $SWEEP; do
  say "ratio $r"
  ratio_phase "$r" "$SWEEP_WORKLOADS" no
done
say "ratio $RATIO"
ratio_phase "$RATIO" "$WORKLOADS" yes

say "matrix done in $(( $(date +%s) - T_START )) s"
{
  echo "memory: $CAP_NOTE"
  [ -n "$DROP_NOTE" ] && echo "$DROP_NOTE"
  [ -n "$THREAD_WORKLOADS" ] && echo "multi-threaded runs: $THREAD_WORKLOADS again with $THREAD_COUNT client threads at ${RATIO}x (columns /${THREAD_COUNT}t), each thread with its own handle; SQLite: its own connection, cache_size divided among them; bftree-sql: one table buffer shared by the connections"
  [ -n "$SQL_WORKLOADS" ] && echo "SQL-text runs: $SQL_WORKLOADS on the SQL-text engines only (sqlite-sql, bftree-sql), with $THREADS and $THREAD_COUNT client threads; Aput is A with each update an upsert of the whole record, INSERT OR REPLACE INTO t(k,v) VALUES(...), instead of UPDATE t SET v=... WHERE k=... (every key exists, so it replaces the row; SQLite must still find the row's page, bftree's module writes without reading: bench/ycsb.c)"
  echo "matrix: $MODE; engines: $ENGINES; main workloads: $WORKLOADS; warm-up >= $WMIN s until two 0.5 s windows agree within 10% (<= $WMAX s), dropped; measured $SECONDS_ s per run"
} > "$RESULTS/$STAMP-$MODE.notes"
"$ROOT/bench/report.sh" "$CSV"
