#!/bin/sh
# bench/report.sh: turn a results CSV of bench/run.sh into a Markdown report
# and two PNG plots (gnuplot), beside the CSV:
#   <base>.md             notes, engine configurations, throughput pivot,
#                         the full table, the data/budget sweep
#   <base>-workloads.png  throughput per workload, one bar per engine
#                         (main data/budget ratio; log scale)
#   <base>-ratio.png      throughput against the data/budget ratio, one line
#                         per engine, one panel per sweep workload
# Usage: bench/report.sh RESULTS.csv
# The main ratio is the largest one in the CSV, the main key choice the one
# of most rows; rows with another key choice show as "C/uniform".
set -u
CSV=${1:?usage: report.sh RESULTS.csv}
[ -s "$CSV" ] || { echo "report.sh: $CSV is empty" >&2; exit 1; }
BASE=${CSV%.csv}
MD=$BASE.md
TMP=$(mktemp -d /tmp/bench-report.XXXXXX) || exit 1
trap 'rm -rf "$TMP"' EXIT

# Main ratio and key choice.
MAIN_RATIO=$(awk -F, 'NR > 1 { if ($5 + 0 > m) m = $5 + 0 } END { print m }' "$CSV")
MAIN_DIST=$(awk -F, 'NR > 1 && $3 != "load" { n[$4]++ } END { b = "zipf"; for (d in n) if (n[d] > n[b]) b = d; print b }' "$CSV")
# Every table and plot lists the engines in one order (pairs side by side),
# and each plot gives an engine the same column, so the same colour.
EORDER="sqlite-sql sqlite-c bftree-sql bftree-sql-prep bftree-c rocksdb lmdb wiredtiger"
# awk code: sort en[1..ne] by EORDER (others after, in discovery order)
SORT_EN='function rk(e) { return (e in rank) ? rank[e] : 1000 }
  function sort_en(   i, j, t, nro, ro) {
    nro = split(EO, ro, " "); for (i = 1; i <= nro; i++) rank[ro[i]] = i
    for (i = 1; i <= ne; i++) for (j = i + 1; j <= ne; j++)
      if (rk(en[j]) < rk(en[i])) { t = en[i]; en[i] = en[j]; en[j] = t }
  }'

# ------------------------------------------------------------- markdown
{
  echo "# Benchmark results: $(basename "$BASE")"
  echo
  [ -f "$BASE.notes" ] && sed 's/^/- /' "$BASE.notes"
  awk -F, -v EO="$EORDER" "$SORT_EN"'
    NR == 2 { printf "- budget %s MiB per process; keys %s B, values %s B; one client thread (columns ending in /Nt: N client threads, each with its own handle or connection)\n", $6, $8, $9 }
    NR > 1 && !($2 in seen) { seen[$2] = 1; en[++ne] = $2; mib[$2] = $7 }
    END { sort_en(); printf "- engines'"'"' own cache knobs (MiB, the largest share of the budget that keeps each process inside the cap; see bench/run.sh share_for):"
          for (i = 1; i <= ne; i++) printf " %s %s%s", en[i], mib[en[i]], i < ne ? "," : "\n" }' "$CSV"
  awk -F, 'NR > 1 { c[$12]++ } END { if (c["no"]) printf "- **%d run(s) were NOT memory-capped** (column capped = no)\n", c["no"]; else print "- every run was inside the memory cap (capped = yes)" }' "$CSV"
  awk -F, 'NR > 1 && $14 != "yes" { n++ } END { if (n) printf "- **page cache not dropped before %d run(s)**\n", n; else print "- page cache dropped (echo 1 > /proc/sys/vm/drop_caches) before every run" }' "$CSV"
  echo "- main data set: ${MAIN_RATIO}x the budget, key choice $MAIN_DIST (Zipf theta 0.9)"
  awk -F, 'NR > 1 && $3 == "load" { l[$2] = 1 } NR > 1 && $3 != "load" { w[$2] = 1 }
    END { for (e in w) if (!(e in l)) s = s (s ? ", " : "") e
          if (s) printf "- no load of their own (\"-\" under load): %s; each runs on a pristine copy of the load of its twin with the same table format (sqlite-sql, bftree-sql)\n", s }' "$CSV"
  echo "- warm-up: the dropped warm-up of each run is in the table (seconds/operations; \"capped\" = stopped at the maximum before throughput settled); drift = throughput of the 2nd half of the measured window / the 1st half"
  echo "- written B/op: bytes the process sent to the disk (/proc/self/io write_bytes - cancelled_write_bytes, counted when a page is dirtied or a direct write is issued) from open to after close, over all operations of the run; write amp = that / (write operations x (key + value bytes)); window write amp = bytes written in the measured window / its write operations x (key + value bytes) (the steady rate, without what close pays for earlier operations; empty in CSVs from before 2026-12-07); read B/op: read_bytes over the measured window / measured operations"
  if [ -f "$BASE.log" ]; then
    echo
    echo "## Engine configurations"
    echo
    awk '/^ycsb: [a-z-]+ (load|[A-Z]) \|/ { eng = $2; next }
         /^ycsb: config:/ && eng != "" && !(eng in seen) { seen[eng] = 1; sub(/^ycsb: config: /, ""); printf "- **%s**: %s\n", eng, $0 }' "$BASE.log"
  fi
  echo
  echo "## Throughput (operations/s), data = ${MAIN_RATIO}x budget"
  echo
  awk -F, -v R="$MAIN_RATIO" -v D="$MAIN_DIST" -v EO="$EORDER" "$SORT_EN"'
    NR > 1 && $5 + 0 == R {
      w = $3; if ($4 != D && w != "load") w = w "/" $4; if ($34 + 0 > 1) w = w "/" $34 "t"
      if (!(w in wseen)) { wseen[w] = 1; wl[++nw] = w }
      if (!($2 in eseen)) { eseen[$2] = 1; en[++ne] = $2 }
      v[$2, w] = ($33 == "ok") ? sprintf("%.0f", $20) : ($20 != "" ? sprintf("%.0f (%s)", $20, $33) : $33)
    }
    END {
      sort_en()
      # workloads in a fixed order, then extras
      split("load A B C E F W", order, " ")
      n = 0
      for (i = 1; i <= 7; i++) if (order[i] in wseen) { col[++n] = order[i]; used[order[i]] = 1 }
      for (i = 1; i <= nw; i++) if (!(wl[i] in used)) col[++n] = wl[i]
      printf "| engine |"; for (i = 1; i <= n; i++) printf " %s |", col[i]; printf "\n"
      printf "|---|"; for (i = 1; i <= n; i++) printf "---:|"; printf "\n"
      for (e = 1; e <= ne; e++) {
        printf "| %s |", en[e]
        for (i = 1; i <= n; i++) printf " %s |", ((en[e], col[i]) in v) ? v[en[e], col[i]] : "-"
        printf "\n"
      }
    }' "$CSV"
  echo
  echo "## bftree against SQLite, data = ${MAIN_RATIO}x budget"
  echo
  echo "Throughput ratios (bftree / SQLite; above 1: bftree faster) and write-amplification ratios (bftree / SQLite; below 1: bftree writes less; \"write amp\" from open to after close, \"window write amp\" in the measured window alone), from the table above."
  echo
  awk -F, -v R="$MAIN_RATIO" -v D="$MAIN_DIST" '
    NR > 1 && $5 + 0 == R && $33 == "ok" {
      w = $3; if ($4 != D && w != "load") w = w "/" $4; if ($34 + 0 > 1) w = w "/" $34 "t"
      if (!(w in ws)) { ws[w] = 1; wl[++nw] = w }
      t[$2, w] = $20; a[$2, w] = $27; aw[$2, w] = $35
    }
    function ratio(x, y) { return (x != "" && y != "" && y + 0 > 0) ? sprintf("%.2f", x / y) : "-" }
    END {
      split("bftree-sql/sqlite-sql bftree-sql-prep/sqlite-c bftree-c/sqlite-sql bftree-c/sqlite-c", pairs, " ")
      printf "| pair | measure |"; for (i = 1; i <= nw; i++) printf " %s |", wl[i]; printf "\n"
      printf "|---|---|"; for (i = 1; i <= nw; i++) printf "---:|"; printf "\n"
      for (p = 1; p <= 4; p++) {
        split(pairs[p], e, "/")
        printf "| %s | throughput |", pairs[p]
        for (i = 1; i <= nw; i++) printf " %s |", ratio(t[e[1], wl[i]], t[e[2], wl[i]])
        printf "\n| %s | write amp |", pairs[p]
        for (i = 1; i <= nw; i++) printf " %s |", ratio(a[e[1], wl[i]], a[e[2], wl[i]])
        printf "\n| %s | window write amp |", pairs[p]
        for (i = 1; i <= nw; i++) printf " %s |", ratio(aw[e[1], wl[i]], aw[e[2], wl[i]])
        printf "\n"
      }
    }' "$CSV"
  echo
  echo "## All runs"
  echo
  echo "| engine | workload | data/budget | ops/s | p50 us | p99 us | p99.9 us | read B/op | written B/op | write amp | window write amp | peak RSS MiB | cgroup peak MiB | warm-up dropped | drift | errors | status |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|"
  awk -F, -v D="$MAIN_DIST" 'NR > 1 {
      w = $3; if ($4 != D && w != "load") w = w "/" $4; if ($34 + 0 > 1) w = w "/" $34 "t"
      wu = ($3 == "load") ? "none (load)" : sprintf("%s s, %s ops, %s", $15, $16, $17)
      if ($19 == "") wu = "-"
      printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
        $2, w, $5, ($20 == "" ? "-" : $20), $22, $23, $24, $25, $26, ($27 == "" ? "-" : $27),
        ($35 == "" ? "-" : $35), $28, $29, wu, $30, $32, $33
    }' "$CSV"
  NR=$(awk -F, 'NR > 1 { r[$5] = 1 } END { print length(r) }' "$CSV")
  if [ "$NR" -gt 1 ]; then
    echo
    echo "## Throughput (operations/s) against data/budget"
    echo
    awk -F, -v D="$MAIN_DIST" '
      NR > 1 && $3 != "load" && $4 == D && $34 + 0 <= 1 { k = $3 " @" $5 "x"; c[k] = 1; n[$3, $5]++; has[$2, k] = 1; v[$2, k] = ($33 == "ok" ? sprintf("%.0f", $20) : $33)
        if (!($2 in es)) { es[$2] = 1; en[++ne] = $2 } r[$5] = 1; w[$3] = 1 }
      END {
        # columns: workloads present at more than one ratio, each by ratio
        nr = 0; for (x in r) rr[++nr] = x + 0
        for (i = 1; i <= nr; i++) for (j = i + 1; j <= nr; j++) if (rr[j] < rr[i]) { t = rr[i]; rr[i] = rr[j]; rr[j] = t }
        nc = 0
        split("A B C E F W", order, " ")
        for (o = 1; o <= 6; o++) {
          wl = order[o]; cnt = 0
          for (i = 1; i <= nr; i++) if ((wl, rr[i]) in n) cnt++
          if (cnt < 2) continue
          for (i = 1; i <= nr; i++) if ((wl, rr[i]) in n) col[++nc] = wl " @" rr[i] "x"
        }
        printf "| engine |"; for (i = 1; i <= nc; i++) printf " %s |", col[i]; printf "\n"
        printf "|---|"; for (i = 1; i <= nc; i++) printf "---:|"; printf "\n"
        for (e = 1; e <= ne; e++) {
          printf "| %s |", en[e]
          for (i = 1; i <= nc; i++) printf " %s |", ((en[e], col[i]) in has) ? v[en[e], col[i]] : "-"
          printf "\n"
        }
      }' "$CSV"
  fi
  echo
  echo "Plots: $(basename "$BASE")-workloads.png, $(basename "$BASE")-ratio.png; raw data: $(basename "$CSV")"
} > "$MD"

# ---------------------------------------------------------------- plots
command -v gnuplot > /dev/null 2>&1 || { echo "report.sh: gnuplot missing; wrote $MD only" >&2; exit 0; }

# workloads.dat: one row per workload, one column per engine
awk -F, -v R="$MAIN_RATIO" -v D="$MAIN_DIST" -v EO="$EORDER" "$SORT_EN"'
  NR > 1 && !($2 in es) { es[$2] = 1; en[++ne] = $2 }
  NR > 1 && $5 + 0 == R {
    w = $3; if ($4 != D && w != "load") w = w "/" $4; if ($34 + 0 > 1) w = w "/" $34 "t"
    if (!(w in ws)) { ws[w] = 1; wl[++nw] = w }
    if ($33 == "ok" && $20 != "") v[$2, w] = $20
  }
  END {
    sort_en()
    split("load A B C E F W", order, " ")
    n = 0
    for (i = 1; i <= 7; i++) if (order[i] in ws) { col[++n] = order[i]; used[order[i]] = 1 }
    for (i = 1; i <= nw; i++) if (!(wl[i] in used)) col[++n] = wl[i]
    printf "workload"; for (e = 1; e <= ne; e++) printf " %s", en[e]; printf "\n"
    for (i = 1; i <= n; i++) {
      printf "%s", col[i]
      for (e = 1; e <= ne; e++) printf " %s", ((en[e], col[i]) in v) ? v[en[e], col[i]] : "?"
      printf "\n"
    }
  }' "$CSV" > "$TMP/workloads.dat"
NE=$(head -1 "$TMP/workloads.dat" | wc -w)

cat > "$TMP/w.gp" <<EOF
set terminal pngcairo size 1400,700 font "sans,11"
set output "$BASE-workloads.png"
set title "Throughput per workload, data = ${MAIN_RATIO}x the memory budget (key choice $MAIN_DIST; log scale)"
set datafile missing "?"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set logscale y
set yrange [100:*]
set ylabel "operations / s"
set xlabel "workload (load = random-order inserts; A 50/50 read/update; B 95/5; C read; E 100-row scans; F read-modify-write; W 95% updates)"
set grid ytics
set key outside right top
plot for [i=2:$NE] "$TMP/workloads.dat" using i:xtic(1) lt (i - 1) title columnheader(i)
EOF
gnuplot "$TMP/w.gp" || echo "report.sh: gnuplot failed (workloads plot)" >&2

# ratio-<workload>.dat: one row per ratio, one column per engine
SWEEP_WL=$(awk -F, -v D="$MAIN_DIST" 'NR > 1 && $3 != "load" && $4 == D && $34 + 0 <= 1 { k[$3, $5] = 1; w[$3] = 1 }
  END { for (x in w) { c = 0; for (y in k) { split(y, p, SUBSEP); if (p[1] == x) c++ } if (c > 1) printf "%s ", x } }' "$CSV")
# the load counts too: its throughput depends on the data size as well
LOADS=$(awk -F, 'NR > 1 && $3 == "load" { r[$5] = 1 } END { print length(r) }' "$CSV")
[ "$LOADS" -gt 1 ] && SWEEP_WL="$SWEEP_WL load"
if [ -n "$(echo $SWEEP_WL)" ]; then
  n=0
  plots=""
  for wl in $(echo $SWEEP_WL | tr ' ' '\n' | sort); do
    n=$((n + 1))
    awk -F, -v W="$wl" -v D="$MAIN_DIST" -v EO="$EORDER" "$SORT_EN"'
      NR > 1 && !($2 in es) { es[$2] = 1; en[++ne] = $2 }
      NR > 1 && $3 == W && ($4 == D || W == "load") && $34 + 0 <= 1 {
        r[$5] = 1; if ($33 == "ok" && $20 != "") v[$2, $5] = $20
      }
      END {
        sort_en()
        nr = 0; for (x in r) rr[++nr] = x + 0
        for (i = 1; i <= nr; i++) for (j = i + 1; j <= nr; j++) if (rr[j] < rr[i]) { t = rr[i]; rr[i] = rr[j]; rr[j] = t }
        printf "ratio"; for (e = 1; e <= ne; e++) printf " %s", en[e]; printf "\n"
        for (i = 1; i <= nr; i++) {
          printf "%s", rr[i]
          for (e = 1; e <= ne; e++) printf " %s", ((en[e], rr[i]) in v) ? v[en[e], rr[i]] : "?"
          printf "\n"
        }
      }' "$CSV" > "$TMP/ratio-$wl.dat"
    ne=$(head -1 "$TMP/ratio-$wl.dat" | wc -w)
    plots="$plots
set title \"workload $wl\"
plot for [i=2:$ne] \"$TMP/ratio-$wl.dat\" using 1:i with linespoints lw 2 pt 7 lt (i - 1) title columnheader(i)"
  done
  cat > "$TMP/r.gp" <<EOF
set terminal pngcairo size $((560 * n + 200)),560 font "sans,11"
set output "$BASE-ratio.png"
set datafile missing "?"
set logscale xy
set xlabel "data size / memory budget"
set ylabel "operations / s"
set grid
set key bottom left font "sans,9"
set multiplot layout 1,$n title "Throughput against data/budget (key choice $MAIN_DIST; log scales)"
$plots
unset multiplot
EOF
  gnuplot "$TMP/r.gp" || echo "report.sh: gnuplot failed (ratio plot)" >&2
else
  echo "report.sh: only one data/budget ratio in $CSV: no ratio plot" >&2
  rm -f "$BASE-ratio.png"
fi
echo "report: $MD"
ls "$BASE"-*.png 2>/dev/null | sed 's/^/report: /'
