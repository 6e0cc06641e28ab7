-- Stateless replicas (issue 12): what each candidate does to the task app's calls (its
-- per-stage instructions and demos, a `CandidatePrompt` as JSON), written by the worker that
-- runs the candidate's rollouts and read by any interceptor replica. A new table only.
CREATE TABLE candidate_prompts (
    job_id TEXT NOT NULL,
    candidate INTEGER NOT NULL,
    prompt_json JSON,
    PRIMARY KEY (job_id, candidate)
);
-- Tenant limits across replicas: a tenant's queued and running jobs are counted by status.
CREATE INDEX jobs_by_owner_status ON jobs (owner, status);
