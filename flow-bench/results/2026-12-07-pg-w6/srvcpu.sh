#!/bin/bash
# Replays on a PostgreSQL 15 with pg_stat_statements on 127.0.0.1:5439 (srvcpu.sh: a cluster of this
# machine, for its postmaster pid); each schema made from the store's migrations (V1..V5, then V6 for
# "schema 6"); run.sql from replay_gen.py, replay_limit.sql for the limit (table bare_commits).
# usage: srvcpu.sh schema script [extra PGOPTIONS]
PM=$(head -1 /tmp/perf17pg/data/postmaster.pid); tick=$(getconf CLK_TCK)
srv() { local t=0; read -r -a a < /proc/$PM/stat; t=$((a[13]+a[14]+a[15]+a[16])); for c in $(pgrep -P $PM); do read -r -a b < /proc/$c/stat 2>/dev/null && t=$((t+b[13]+b[14])); done; echo $t; }
s0=$(srv)
PGOPTIONS="-c search_path=$1 $3" pgbench -n -h 127.0.0.1 -p 5439 -U postgres test -M prepared -c 16 -j 2 -t 60 -f $2 2>&1 | grep -E "^tps|error" | head -2 | tr '\n' ' '
s1=$(srv)
echo "$1 $2 $3 server_ms_per_stmt $(echo "scale=4; ($s1-$s0)*1000/$tick/(16*60*11)" | bc)"
