-- Stateless replicas (issue 12): rollouts open for model calls, the exchanges any
-- interceptor replica records for them, and each job's usage, metered so budgets hold
-- across replicas. New tables only.
CREATE TABLE open_rollouts (
    rollout_id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    nonce TEXT NOT NULL,
    candidate INTEGER NOT NULL,
    calls INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX open_rollouts_by_job ON open_rollouts (job_id);
CREATE TABLE rollout_exchanges (
    position INTEGER PRIMARY KEY,
    rollout_id TEXT NOT NULL,
    nonce TEXT NOT NULL,
    exchange_json TEXT NOT NULL
);
CREATE INDEX rollout_exchanges_by_rollout ON rollout_exchanges (rollout_id);
CREATE TABLE job_usage (
    job_id TEXT PRIMARY KEY,
    rollouts INTEGER NOT NULL DEFAULT 0,
    policy_prompt_tokens INTEGER NOT NULL DEFAULT 0,
    policy_completion_tokens INTEGER NOT NULL DEFAULT 0,
    proposer_tokens INTEGER NOT NULL DEFAULT 0,
    proposer_cost_usd REAL NOT NULL DEFAULT 0
);
