-- Tenancy (issue 5): the periodic jobs' last runs, visible at /admin/jobs and kept across a
-- change of leader; indexes for the idle/lifetime checks and the retention prune.

CREATE TABLE periodic_jobs (
  name           text PRIMARY KEY,
  schedule       text NOT NULL,
  last_started   timestamptz,
  last_finished  timestamptz,
  last_outcome   text CHECK (last_outcome IN ('ok', 'failed')),
  last_result    jsonb,
  last_error     text,
  runs           bigint NOT NULL DEFAULT 0,
  failures       bigint NOT NULL DEFAULT 0
);

CREATE INDEX sessions_live_owner ON sessions (access_key) WHERE status NOT IN ('TERMINATED', 'ERROR', 'CANCELLED');
CREATE INDEX sessions_terminated_at ON sessions (terminated_at) WHERE terminated_at IS NOT NULL;
CREATE INDEX usage_records_kernel_time ON usage_records (kernel_id, sampled_at);
