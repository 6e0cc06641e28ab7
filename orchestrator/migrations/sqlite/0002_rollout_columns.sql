-- One column per field of a rollout result, written once as the rollout ends; the blobs of
-- version 1 are moved over in their order (a field the blob lacks takes the field's default).
CREATE TABLE rollout_results (
    position INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL,
    rollout_id TEXT NOT NULL,
    phase TEXT NOT NULL,
    candidate INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    reward REAL,
    failure_cause TEXT NOT NULL,
    failure_detail TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    trace_json TEXT,
    UNIQUE (job_id, rollout_id)
);
INSERT OR IGNORE INTO rollout_results (job_id, rollout_id, phase, candidate, seed, reward,
        failure_cause, failure_detail, prompt_tokens, completion_tokens, trace_json)
    SELECT job_id, json_extract(result_json, '$.rollout_id'), json_extract(result_json, '$.phase'),
           json_extract(result_json, '$.candidate_index'), json_extract(result_json, '$.seed'),
           json_extract(result_json, '$.reward'),
           COALESCE(json_extract(result_json, '$.failure_cause'), ''),
           COALESCE(json_extract(result_json, '$.failure_detail'), ''),
           COALESCE(json_extract(result_json, '$.prompt_tokens'), 0),
           COALESCE(json_extract(result_json, '$.completion_tokens'), 0),
           json_extract(result_json, '$.trace')
    FROM rollouts ORDER BY job_id, position;
DROP TABLE rollouts;
