-- Seed evaluations are paged by store position within a job (`list_rollouts_page`): one
-- index range scan instead of a scan of every row.
CREATE INDEX rollouts_by_job ON rollout_results (job_id, position);
