\set r random(1, 2000000000)
INSERT INTO bare_commits (run, seq, state) VALUES (md5(:r::text || ':' || :client_id::text), 1, '{"counter":1,"task":5}');
INSERT INTO bare_commits (run, seq, state) VALUES (md5(:r::text || ':' || :client_id::text), 2, '{"counter":2,"task":5}');
INSERT INTO bare_commits (run, seq, state) VALUES (md5(:r::text || ':' || :client_id::text), 3, '{"counter":3,"task":5}');
INSERT INTO bare_commits (run, seq, state) VALUES (md5(:r::text || ':' || :client_id::text), 4, '{"counter":4,"task":5}');
INSERT INTO bare_commits (run, seq, state) VALUES (md5(:r::text || ':' || :client_id::text), 5, '{"counter":5,"task":5}');
INSERT INTO bare_commits (run, seq, state) VALUES (md5(:r::text || ':' || :client_id::text), 6, '{"counter":6,"task":5}');
INSERT INTO bare_commits (run, seq, state) VALUES (md5(:r::text || ':' || :client_id::text), 7, '{"counter":7,"task":5}');
INSERT INTO bare_commits (run, seq, state) VALUES (md5(:r::text || ':' || :client_id::text), 8, '{"counter":8,"task":5}');
INSERT INTO bare_commits (run, seq, state) VALUES (md5(:r::text || ':' || :client_id::text), 9, '{"counter":9,"task":5}');
INSERT INTO bare_commits (run, seq, state) VALUES (md5(:r::text || ':' || :client_id::text), 10, '{"counter":10,"task":5}');
INSERT INTO bare_commits (run, seq, state) VALUES (md5(:r::text || ':' || :client_id::text), 11, '{"counter":11,"task":5}');
