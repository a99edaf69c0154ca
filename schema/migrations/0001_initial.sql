-- flotilla's initial schema: what DESIGN.md §4 keeps durable.
-- Statuses are Backend.AI's (schema/status.ts lists the same values).

CREATE TABLE resource_policies (
  name                       text PRIMARY KEY CHECK (name ~ '^[a-zA-Z0-9_.-]{1,64}$'),
  max_concurrent_sessions    integer NOT NULL DEFAULT 30 CHECK (max_concurrent_sessions >= 0),
  total_resource_slots       jsonb   NOT NULL DEFAULT '{}'::jsonb,
  max_pending_session_count  integer CHECK (max_pending_session_count >= 0),
  max_containers_per_session integer NOT NULL DEFAULT 1 CHECK (max_containers_per_session >= 1),
  idle_timeout               integer NOT NULL DEFAULT 0 CHECK (idle_timeout >= 0),          -- seconds, 0 = none
  max_session_lifetime       integer NOT NULL DEFAULT 0 CHECK (max_session_lifetime >= 0),  -- seconds, 0 = none
  max_vfolder_count          integer NOT NULL DEFAULT 10 CHECK (max_vfolder_count >= 0),
  created_at                 timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
  id         uuid PRIMARY KEY,
  email      text NOT NULL UNIQUE,
  role       text NOT NULL DEFAULT 'user' CHECK (role IN ('superadmin', 'admin', 'user')),
  status     text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'inactive', 'deleted')),
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE keypairs (
  access_key      text PRIMARY KEY CHECK (access_key ~ '^AK[A-Z0-9]{18}$'),
  secret_key_enc  text NOT NULL,                      -- encrypted at rest (HMAC needs the secret itself)
  user_id         uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  is_admin        boolean NOT NULL DEFAULT false,
  is_active       boolean NOT NULL DEFAULT true,
  resource_policy text NOT NULL DEFAULT 'default' REFERENCES resource_policies(name),
  rate_limit      integer NOT NULL DEFAULT 10000 CHECK (rate_limit >= 0),  -- requests per 15 minutes
  created_at      timestamptz NOT NULL DEFAULT now(),
  last_used       timestamptz
);
CREATE INDEX keypairs_user ON keypairs (user_id);

CREATE TABLE resource_groups (
  name             text PRIMARY KEY CHECK (name ~ '^[a-zA-Z0-9_.-]{1,64}$'),
  description      text NOT NULL DEFAULT '',
  is_active        boolean NOT NULL DEFAULT true,
  scheduler        text NOT NULL DEFAULT 'fifo' CHECK (scheduler IN ('fifo', 'lifo', 'drf')),
  agent_selector   text NOT NULL DEFAULT 'dispersed' CHECK (agent_selector IN ('dispersed', 'concentrated', 'roundrobin')),
  scheduler_opts   jsonb NOT NULL DEFAULT '{}'::jsonb,   -- pending_timeout, num_retries_to_skip
  created_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE keypair_resource_groups (
  access_key     text NOT NULL REFERENCES keypairs(access_key) ON DELETE CASCADE,
  resource_group text NOT NULL REFERENCES resource_groups(name) ON DELETE CASCADE,
  PRIMARY KEY (access_key, resource_group)
);

CREATE TABLE agents (
  id              text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 128),
  status          text NOT NULL CHECK (status IN ('ALIVE', 'LOST', 'RESTARTING', 'TERMINATED')),
  status_changed  timestamptz NOT NULL DEFAULT now(),
  resource_group  text NOT NULL REFERENCES resource_groups(name),
  addr            text NOT NULL DEFAULT '',
  available_slots jsonb NOT NULL DEFAULT '{}'::jsonb,    -- capacity the agent declares; occupancy is derived from kernels
  images          jsonb NOT NULL DEFAULT '[]'::jsonb,
  version         text NOT NULL DEFAULT '',
  first_contact   timestamptz NOT NULL DEFAULT now(),
  last_heartbeat  timestamptz,
  snapshot        jsonb                                  -- the agent actor's persisted snapshot
);
CREATE INDEX agents_alive ON agents (resource_group) WHERE status = 'ALIVE';

CREATE TABLE sessions (
  id               uuid PRIMARY KEY,
  name             text NOT NULL CHECK (name ~ '^[a-zA-Z0-9_.-]{4,64}$'),
  access_key       text NOT NULL REFERENCES keypairs(access_key),
  image            text NOT NULL,
  type             text NOT NULL DEFAULT 'interactive' CHECK (type IN ('interactive', 'batch')),
  cluster_mode     text NOT NULL DEFAULT 'single-node' CHECK (cluster_mode IN ('single-node', 'multi-node')),
  cluster_size     integer NOT NULL DEFAULT 1 CHECK (cluster_size >= 1),
  resource_group   text NOT NULL REFERENCES resource_groups(name),
  status           text NOT NULL CHECK (status IN ('PENDING', 'SCHEDULED', 'PREPARING', 'RUNNING', 'RESTARTING',
                                                   'RUNNING_DEGRADED', 'TERMINATING', 'TERMINATED', 'ERROR', 'CANCELLED')),
  status_info      text,
  status_data      jsonb,
  status_changed   timestamptz NOT NULL DEFAULT now(),
  status_history   jsonb NOT NULL DEFAULT '[]'::jsonb,  -- [{status, at}] in order
  requested_slots  jsonb NOT NULL DEFAULT '{}'::jsonb,
  environ          jsonb NOT NULL DEFAULT '{}'::jsonb,
  mounts           jsonb NOT NULL DEFAULT '[]'::jsonb,
  startup_command  text,
  tag              text,
  num_queries      bigint NOT NULL DEFAULT 0,
  created_at       timestamptz NOT NULL DEFAULT now(),
  terminated_at    timestamptz,
  last_activity_at timestamptz NOT NULL DEFAULT now(),
  snapshot         jsonb                                 -- the session actor's persisted snapshot (with its kernels)
);
-- One live session per name and owner (Backend.AI's rule); ended sessions may share names.
CREATE UNIQUE INDEX sessions_live_name ON sessions (access_key, name)
  WHERE status NOT IN ('TERMINATED', 'ERROR', 'CANCELLED');
CREATE INDEX sessions_owner_created ON sessions (access_key, created_at DESC);
CREATE INDEX sessions_live ON sessions (status) WHERE status NOT IN ('TERMINATED', 'ERROR', 'CANCELLED');
CREATE INDEX sessions_pending ON sessions (resource_group, created_at) WHERE status = 'PENDING';

CREATE TABLE kernels (
  id              uuid PRIMARY KEY,
  session_id      uuid NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
  access_key      text NOT NULL REFERENCES keypairs(access_key),
  agent_id        text REFERENCES agents(id),
  cluster_role    text NOT NULL DEFAULT 'main' CHECK (cluster_role IN ('main', 'sub')),
  cluster_idx     integer NOT NULL DEFAULT 1 CHECK (cluster_idx >= 1),
  cluster_hostname text NOT NULL DEFAULT 'main1',
  image           text NOT NULL,
  status          text NOT NULL CHECK (status IN ('PENDING', 'SCHEDULED', 'PREPARING', 'CREATING', 'RUNNING', 'RESTARTING',
                                                  'TERMINATING', 'TERMINATED', 'ERROR', 'CANCELLED')),
  status_info     text,
  status_data     jsonb,
  status_changed  timestamptz NOT NULL DEFAULT now(),
  status_history  jsonb NOT NULL DEFAULT '[]'::jsonb,
  requested_slots jsonb NOT NULL DEFAULT '{}'::jsonb,
  container_id    text,
  exit_code       integer,
  created_at      timestamptz NOT NULL DEFAULT now(),
  terminated_at   timestamptz
);
CREATE INDEX kernels_session ON kernels (session_id);
-- Occupancy per agent is derived from this (DESIGN.md §2 rule 5).
CREATE INDEX kernels_occupying ON kernels (agent_id)
  WHERE status IN ('SCHEDULED', 'PREPARING', 'CREATING', 'RUNNING', 'RESTARTING', 'TERMINATING');

-- Append-only; seq orders every event of the cluster, so watchers can replay from a number.
-- No foreign key to sessions: events may outlive pruned session rows (retention is separate).
CREATE TABLE session_events (
  seq        bigserial PRIMARY KEY,
  session_id uuid NOT NULL,
  kernel_id  uuid,
  access_key text NOT NULL,
  name       text NOT NULL CHECK (name ~ '^(session|kernel)_[a-z_]+$'),
  status     text NOT NULL,
  reason     text,
  data       jsonb,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX session_events_session ON session_events (session_id, seq);
CREATE INDEX session_events_owner ON session_events (access_key, seq);

CREATE TABLE vfolders (
  id          uuid PRIMARY KEY,
  name        text NOT NULL CHECK (name ~ '^[a-zA-Z0-9_.-]{1,64}$'),
  host        text NOT NULL DEFAULT 'local',
  quota_scope text NOT NULL,
  owner_access_key text NOT NULL REFERENCES keypairs(access_key) ON DELETE CASCADE,
  usage_mode  text NOT NULL DEFAULT 'general' CHECK (usage_mode IN ('general', 'model', 'data')),
  permission  text NOT NULL DEFAULT 'rw' CHECK (permission IN ('ro', 'rw', 'wd')),
  status      text NOT NULL DEFAULT 'ready' CHECK (status IN ('ready', 'delete-pending', 'deleted')),
  quota_bytes bigint CHECK (quota_bytes IS NULL OR quota_bytes >= 0),
  cloneable   boolean NOT NULL DEFAULT false,
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX vfolders_owner_name ON vfolders (owner_access_key, name) WHERE status <> 'deleted';

CREATE TABLE vfolder_permissions (
  vfolder_id uuid NOT NULL REFERENCES vfolders(id) ON DELETE CASCADE,
  access_key text NOT NULL REFERENCES keypairs(access_key) ON DELETE CASCADE,
  permission text NOT NULL CHECK (permission IN ('ro', 'rw', 'wd')),
  PRIMARY KEY (vfolder_id, access_key)
);
CREATE INDEX vfolder_permissions_user ON vfolder_permissions (access_key);

-- Samples of kernels' usage (Docker stats) and their hourly roll-up per keypair.
CREATE TABLE usage_records (
  id          bigserial PRIMARY KEY,
  kernel_id   uuid NOT NULL,
  session_id  uuid NOT NULL,
  access_key  text NOT NULL,
  sampled_at  timestamptz NOT NULL DEFAULT now(),
  cpu_used_ms bigint NOT NULL DEFAULT 0 CHECK (cpu_used_ms >= 0),
  mem_bytes   bigint NOT NULL DEFAULT 0 CHECK (mem_bytes >= 0)
);
CREATE INDEX usage_records_owner_time ON usage_records (access_key, sampled_at);

CREATE TABLE usage_hourly (
  access_key      text NOT NULL,
  hour            timestamptz NOT NULL,
  cpu_used_ms     bigint NOT NULL DEFAULT 0,
  mem_byte_hours  numeric NOT NULL DEFAULT 0,
  session_count   integer NOT NULL DEFAULT 0,
  PRIMARY KEY (access_key, hour)
);

INSERT INTO resource_policies (name) VALUES ('default');
INSERT INTO resource_groups (name, description) VALUES ('default', 'the resource group agents join unless configured otherwise');
