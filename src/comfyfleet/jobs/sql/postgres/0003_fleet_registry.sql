-- The fleet registry: agents, the instances they serve, the node schemas those instances know,
-- the newest preview frame of each running job, and named leases for work that exactly one
-- process does (webhook delivery). It lives in the job store's database so that every role reads
-- one store; the queries are in fleet.sql next to this file (the SQLite store has the same tables).

CREATE TABLE fleet_agents (
    id text PRIMARY KEY,
    host text NOT NULL,
    version text NOT NULL,
    started_at double precision NOT NULL,
    heartbeat_at double precision NOT NULL
);

-- `models` is JSON (folder type -> file names), rewritten only when `models_digest` changes;
-- `details` is JSON too (what the supervisor knows besides: pid, port, restarts, reason).
CREATE TABLE fleet_instances (
    agent text NOT NULL,
    idx integer NOT NULL,
    base_url text NOT NULL,
    state text NOT NULL,
    device text NOT NULL,
    vram_used bigint,
    vram_total bigint,
    free_slots integer NOT NULL,
    models text NOT NULL,
    models_digest text NOT NULL,
    loaded_model text,
    schema_digest text,
    details text NOT NULL,
    updated_at double precision NOT NULL,
    PRIMARY KEY (agent, idx)
);

CREATE TABLE fleet_schemas (
    digest text PRIMARY KEY,
    body text NOT NULL
);

CREATE TABLE preview_frames (
    job_id text PRIMARY KEY,
    worker text NOT NULL,
    seq bigint NOT NULL,
    format text NOT NULL,
    data bytea NOT NULL,
    at double precision NOT NULL
);

CREATE TABLE fleet_leases (
    name text PRIMARY KEY,
    holder text NOT NULL,
    expires_at double precision NOT NULL
);
