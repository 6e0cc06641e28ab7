-- Postgres joined at schema version 4: this file creates that schema at once (the SQLite
-- files 0001-0004 reach the same tables step by step). `event_counters` holds each job's last
-- event number, so writers in any number of processes number events without gaps.
CREATE TABLE jobs (
    job_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    request_id TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    state_json JSON NOT NULL
);
CREATE INDEX jobs_by_owner ON jobs (owner, created_at DESC, job_id DESC);
CREATE INDEX jobs_by_status ON jobs (status, created_at, job_id);
CREATE UNIQUE INDEX jobs_by_request_id ON jobs (owner, request_id) WHERE request_id <> '';
CREATE TABLE rollout_results (
    position BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id TEXT NOT NULL,
    rollout_id TEXT NOT NULL,
    phase TEXT NOT NULL,
    candidate INTEGER NOT NULL,
    seed BIGINT NOT NULL,
    reward DOUBLE PRECISION,
    failure_cause TEXT NOT NULL,
    failure_detail TEXT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    trace_json JSON,
    UNIQUE (job_id, rollout_id)
);
CREATE TABLE event_counters (
    job_id TEXT PRIMARY KEY,
    last_seq BIGINT NOT NULL
);
CREATE TABLE events (
    job_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    type TEXT NOT NULL,
    message TEXT NOT NULL,
    data_json JSON NOT NULL,
    terminal BOOLEAN NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (job_id, seq)
);
CREATE TABLE env_keys (
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    key_id TEXT,
    PRIMARY KEY (owner, name)
);
CREATE TABLE tenants (
    tenant_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE api_keys (
    key_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (tenant_id),
    name TEXT NOT NULL,
    prefix TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ
);
