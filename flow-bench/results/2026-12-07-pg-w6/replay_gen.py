import sys, os
NOPRUNE=os.environ.get('NOPRUNE'); NOREADY=os.environ.get('NOREADY')
# mode: base | nohot_fix etc. We only vary schema; script is the same.
NOW="(floor(extract(epoch FROM now()) * 1000))::bigint"
CH="'flows_work_' || hashtext(current_schema())::text"
prog = '{"done":[%s],"ready":["s%d"],"waiting":{},"fired":{},"attempts":{},"or_fired":[],"router_emitted":[]}'
def upsert(keys, statuses, ords):
    return f"""steps AS (INSERT INTO flow_steps (run_id, step_key, ord, method, status, input, output, error, attempt, created_at, updated_at, started_at, finished_at, token_usage)
 SELECT run.run_id, s.step_key, run.version * 1048576 + s.position - 1, s.method, s.status, s.input, s.output, s.error, s.attempt, {NOW}, {NOW}, s.started_at, s.finished_at, s.token_usage
 FROM run, unnest(ARRAY[{keys}]::text[], ARRAY[{keys}]::text[], ARRAY[{statuses}]::text[], ARRAY[{','.join(['NULL']*ords)}]::text[], ARRAY[{','.join(['NULL']*ords)}]::text[], ARRAY[{','.join(['NULL']*ords)}]::text[], ARRAY[{','.join(['1']*ords)}]::bigint[], ARRAY[{','.join(['1']*ords)}]::bigint[], ARRAY[{','.join(['NULL']*ords)}]::bigint[], ARRAY[{','.join(['NULL']*ords)}]::text[]) WITH ORDINALITY
 AS s (step_key, method, status, input, output, error, attempt, started_at, finished_at, token_usage, position)
 ON CONFLICT (run_id, step_key) DO UPDATE SET method = excluded.method, status = excluded.status, input = excluded.input, output = excluded.output, error = excluded.error, attempt = excluded.attempt, updated_at = excluded.updated_at, started_at = excluded.started_at, finished_at = excluded.finished_at, token_usage = excluded.token_usage)"""
lines = ["\\set r random(1, 2000000000)"]
rid = "md5(:r::text || ':' || :client_id::text)::uuid"
create = f"""WITH run AS (INSERT INTO flow_runs (run_id, flow, parent_run_id, status, version, lease_owner, lease_expires_at, epoch, created_at, updated_at, queue, concurrency_key, available_at, graph_digest) VALUES ({rid}, 'bench_chain10', NULL, 'running', 1, 'owner-xyz', {NOW} + 30000, 1, {NOW}, {NOW}, 'default', NULL, NULL, 'digest') ON CONFLICT (run_id) DO NOTHING RETURNING run_id, version, status, queue),
 checkpoint AS (INSERT INTO flow_checkpoints (run_id, seq, step_key, status, state, progress, created_at) SELECT run.run_id, 1, NULL, run.status, '{{"counter":0}}', '{prog % ('', 0)}', {NOW} FROM run), {upsert("'s0'", "'ready'", 1)}
 SELECT run_id, CASE WHEN status = 'queued' THEN pg_notify({CH}, queue)::text END FROM run;"""
lines.append(create.replace("\n"," "))
for i in range(10):
    status = 'completed' if i==9 else 'running'
    stays = 'false' if i==9 else 'true'
    keys = f"'s{i}','s{i+1}'" if i<9 and not NOREADY else f"'s{i}'"
    sts = "'completed','ready'" if i<9 and not NOREADY else "'completed'"
    n = 2 if i<9 and not NOREADY else 1
    done = ','.join(f'"s{j}"' for j in range(i+1))
    c = f"""WITH run AS (UPDATE flow_runs SET version = version + 1,
 status = CASE WHEN cancel_requested IS NOT NULL AND '{status}' IN ('paused', 'failed', 'escalated', 'queued') THEN 'queued' ELSE '{status}' END,
 output = NULL, error = NULL, pause = NULL,
 lease_owner = CASE WHEN {stays}::boolean THEN lease_owner END, lease_expires_at = CASE WHEN {stays}::boolean THEN lease_expires_at END,
 available_at = CASE WHEN cancel_requested IS NOT NULL AND '{status}' IN ('paused', 'failed', 'escalated', 'queued') THEN {NOW} ELSE NULL END, answer = NULL, updated_at = {NOW}
 WHERE run_id = {rid} AND epoch = 1 RETURNING run_id, version, queue, status),
 checkpoint AS (INSERT INTO flow_checkpoints (run_id, seq, step_key, status, state, progress, created_at) SELECT run.run_id, run.version, 's{i}', '{status}', '{{"counter":{i+1}}}', '{prog % (done, i+1)}', {NOW} FROM run),
 {upsert(keys, sts, n)},
 {'pruned AS (SELECT 1)' if NOPRUNE else 'pruned AS (DELETE FROM flow_checkpoints c USING run WHERE c.run_id = '+rid+' AND c.seq <= run.version - 50::bigint)'}
 SELECT version, queue, CASE WHEN status = 'queued' THEN pg_notify({CH}, queue)::text END, status FROM run;"""
    lines.append(c.replace("\n"," "))
open(sys.argv[1],'w').write('\n'.join(lines)+'\n')
