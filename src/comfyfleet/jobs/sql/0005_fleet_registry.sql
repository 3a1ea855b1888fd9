-- The fleet registry: agents, the instances they serve, the node schemas those instances know,
-- the newest preview frame of each running job, and named leases for work that exactly one
-- process does (webhook delivery). It lives in the job store's file so that every role reads
-- one store; the queries are in fleet.sql next to this file.

CREATE TABLE fleet_agents (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    version TEXT NOT NULL,
    started_at REAL NOT NULL,
    heartbeat_at REAL NOT NULL
);

-- `models` is JSON (folder type -> file names), rewritten only when `models_digest` changes;
-- `details` is JSON too (what the supervisor knows besides: pid, port, restarts, reason).
CREATE TABLE fleet_instances (
    agent TEXT NOT NULL,
    idx INTEGER NOT NULL,
    base_url TEXT NOT NULL,
    state TEXT NOT NULL,
    device TEXT NOT NULL,
    vram_used INTEGER,
    vram_total INTEGER,
    free_slots INTEGER NOT NULL,
    models TEXT NOT NULL,
    models_digest TEXT NOT NULL,
    loaded_model TEXT,
    schema_digest TEXT,
    details TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (agent, idx)
);

CREATE TABLE fleet_schemas (
    digest TEXT PRIMARY KEY,
    body TEXT NOT NULL
);

CREATE TABLE preview_frames (
    job_id TEXT PRIMARY KEY,
    worker TEXT NOT NULL,
    seq INTEGER NOT NULL,
    format TEXT NOT NULL,
    data BLOB NOT NULL,
    at REAL NOT NULL
);

CREATE TABLE fleet_leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at REAL NOT NULL
);
