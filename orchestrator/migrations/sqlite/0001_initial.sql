-- The first schema, as the first release wrote it: each rollout result one JSON blob.
CREATE TABLE jobs (
    job_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    request_id TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    state_json TEXT NOT NULL
);
CREATE INDEX jobs_by_owner ON jobs (owner, created_at DESC, job_id DESC);
CREATE UNIQUE INDEX jobs_by_request_id ON jobs (owner, request_id) WHERE request_id != '';
CREATE TABLE rollouts (
    job_id TEXT NOT NULL,
    rollout_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    result_json TEXT NOT NULL,
    PRIMARY KEY (job_id, rollout_id)
);
CREATE TABLE events (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    message TEXT NOT NULL,
    data_json TEXT NOT NULL,
    terminal INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);
CREATE TABLE env_keys (
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (owner, name)
);
