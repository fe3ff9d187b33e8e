#!/bin/sh
# W5 on PostgreSQL (100 durable steps of one run, bracketed by 100 bare writes) and its limit,
# before (BASE) and after (GROUP) group commit, interleaved twice.
BASE=${BASE:-/tmp/pg17-flow-bench-base}
GROUP=${GROUP:-/tmp/pg17-flow-bench-group}
line() { label=$1; shift; printf '%s %s\n' "$label" "$("$@" 2>/dev/null | tail -1)"; }
for round in 1 2; do
  echo "uptime $(uptime)"
  line "w5-pg-limit" "$GROUP" w5-pg-limit --reps 3
  line "w5-pg-base" "$BASE" w5-pg --reps 3
  line "w5-pg-group" "$GROUP" w5-pg --reps 3
done
echo "uptime $(uptime)"
