#!/bin/sh
# W6 and its limit, interleaved, for 1, 2 and 4 workers: the limit before and after each
# group of lines. BASE is flow-bench built at 2d8402c (each commit its own statement), GROUP at
# this branch (group commit, default 64 per batch, 4 batches in flight; FLOW_BENCH_PG_GROUP=64,8
# for 8). Output: one JSON line per measurement (median of 3), prefixed by a label, and uptime.
BASE=${BASE:-/tmp/pg17-flow-bench-base}
GROUP=${GROUP:-/tmp/pg17-flow-bench-group}
line() { label=$1; shift; printf '%s %s\n' "$label" "$("$@" 2>/dev/null | tail -1)"; }
for n in 1 2 4; do
  echo "uptime $(uptime)"
  line "limit-before" "$GROUP" w6-limit --workers "$n" --secs 4 --reps 3
  line "w6-base" "$BASE" w6 --workers "$n" --secs 4 --reps 3
  line "w6-group-64-4" "$GROUP" w6 --workers "$n" --secs 4 --reps 3
  FLOW_BENCH_PG_GROUP=64,8 line "w6-group-64-8" "$GROUP" w6 --workers "$n" --secs 4 --reps 3
  line "limit-after" "$GROUP" w6-limit --workers "$n" --secs 4 --reps 3
done
echo "uptime $(uptime)"
