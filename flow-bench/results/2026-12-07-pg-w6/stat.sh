#!/bin/bash
# Replays on a PostgreSQL 15 with pg_stat_statements on 127.0.0.1:5439 (srvcpu.sh: a cluster of this
# machine, for its postmaster pid); each schema made from the store's migrations (V1..V5, then V6 for
# "schema 6"); run.sql from replay_gen.py, replay_limit.sql for the limit (table bare_commits).
# usage: stat.sh schema script
P="psql -h 127.0.0.1 -p 5439 -U postgres -d test"
$P -qAtc "select pg_stat_statements_reset()" >/dev/null
w0=$($P -Atc "select pg_current_wal_lsn()")
PGOPTIONS="-c search_path=$1" pgbench -n -h 127.0.0.1 -p 5439 -U postgres test -M prepared -c 16 -j 2 -t 60 -f $2 | grep -E "^tps" | tr '\n' ' '
w1=$($P -Atc "select pg_current_wal_lsn()")
$P -Atc "select '$1 wal/stmt', round(pg_wal_lsn_diff('$w1','$w0')/(16*60*11.0)), 'exec_ms/stmt', round((sum(total_exec_time) filter (where query not like '%FROM ONLY%'))::numeric/(16*60*11),4), 'hits/stmt', sum(shared_blks_hit+shared_blks_dirtied)/(16*60*11) from pg_stat_statements"
