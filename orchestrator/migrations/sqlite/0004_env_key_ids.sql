-- Environment keys are sealed at rest; `key_id` names the server key that sealed a value
-- (NULL: plain text from before, sealed when the store opens with a vault).
ALTER TABLE env_keys ADD COLUMN key_id TEXT;
