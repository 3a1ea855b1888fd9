-- Every statement of the PostgreSQL fleet registry. Its tables come from the job store's
-- migration 0003_fleet_registry.sql. Parameters are psycopg's (%(name)s).

-- name: has_tables
SELECT count(*) AS n FROM pg_tables
WHERE schemaname = current_schema()
    AND tablename IN ('fleet_agents', 'fleet_instances', 'fleet_schemas');

-- name: put_agent
INSERT INTO fleet_agents (id, host, version, started_at, heartbeat_at)
VALUES (%(id)s, %(host)s, %(version)s, %(started_at)s, %(heartbeat_at)s)
ON CONFLICT (id) DO UPDATE SET
    host = excluded.host, version = excluded.version, started_at = excluded.started_at,
    heartbeat_at = excluded.heartbeat_at;

-- name: put_instances
-- Every instance of one report in one statement (rows as a JSON array). The model list is kept
-- as stored while its digest is unchanged (it is the big column).
INSERT INTO fleet_instances (
    agent, idx, base_url, state, device, vram_used, vram_total, free_slots, models,
    models_digest, loaded_models, schema_digest, details, updated_at
)
SELECT
    r.agent, r.idx, r.base_url, r.state, r.device, r.vram_used, r.vram_total, r.free_slots,
    r.models, r.models_digest, r.loaded_models, r.schema_digest, r.details, r.updated_at
FROM jsonb_to_recordset(%(rows)s::jsonb) AS r(
    agent text, idx integer, base_url text, state text, device text, vram_used bigint,
    vram_total bigint, free_slots integer, models text, models_digest text, loaded_models text,
    schema_digest text, details text, updated_at double precision
)
ON CONFLICT (agent, idx) DO UPDATE SET
    base_url = excluded.base_url, state = excluded.state, device = excluded.device,
    vram_used = excluded.vram_used, vram_total = excluded.vram_total,
    free_slots = excluded.free_slots,
    models = CASE WHEN fleet_instances.models_digest = excluded.models_digest
        THEN fleet_instances.models ELSE excluded.models END,
    models_digest = excluded.models_digest, loaded_models = excluded.loaded_models,
    schema_digest = excluded.schema_digest, details = excluded.details,
    updated_at = excluded.updated_at;

-- name: delete_other_instances
DELETE FROM fleet_instances
WHERE agent = %(agent)s AND NOT (idx = ANY(%(indexes)s::integer[]));

-- name: delete_agent
DELETE FROM fleet_agents WHERE id = %(id)s;

-- name: delete_agent_instances
DELETE FROM fleet_instances WHERE agent = %(id)s;

-- name: agents
SELECT * FROM fleet_agents ORDER BY id;

-- name: instances
SELECT * FROM fleet_instances ORDER BY agent, idx;

-- name: insert_schemas
INSERT INTO fleet_schemas (digest, body) VALUES (%(digest)s, %(body)s)
ON CONFLICT (digest) DO NOTHING;

-- name: get_schemas
SELECT digest, body FROM fleet_schemas WHERE digest = ANY(%(digests)s::text[]);

-- name: prune_agents
DELETE FROM fleet_agents WHERE heartbeat_at < %(older_than)s;

-- name: prune_instances
DELETE FROM fleet_instances WHERE agent NOT IN (SELECT id FROM fleet_agents);

-- name: prune_frames
DELETE FROM preview_frames WHERE at < %(before)s;

-- name: prune_schemas
DELETE FROM fleet_schemas WHERE digest NOT IN (
    SELECT schema_digest FROM fleet_instances WHERE schema_digest IS NOT NULL
);

-- name: put_frame
INSERT INTO preview_frames (job_id, worker, seq, format, data, at)
VALUES (%(job_id)s, %(worker)s, %(seq)s, %(format)s, %(data)s, %(at)s)
ON CONFLICT (job_id) DO UPDATE SET
    worker = excluded.worker, seq = excluded.seq, format = excluded.format,
    data = excluded.data, at = excluded.at;

-- name: get_frames
SELECT * FROM preview_frames WHERE job_id = ANY(%(job_ids)s::text[]) AND at >= %(since)s;

-- name: lead
-- Taken when free or expired, kept when ours; the row says who holds it either way.
INSERT INTO fleet_leases (name, holder, expires_at) VALUES (%(name)s, %(holder)s, %(expires_at)s)
ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
WHERE fleet_leases.holder = excluded.holder OR fleet_leases.expires_at < %(now)s;

-- name: lease_holder
SELECT holder FROM fleet_leases WHERE name = %(name)s;

-- name: resign_lease
DELETE FROM fleet_leases WHERE name = %(name)s AND holder = %(holder)s;

-- name: count_old_frames
-- Retention: the frames stored before `before`, but those of the jobs in `keep`.
SELECT count(*) AS n, coalesce(sum(octet_length(data)), 0) AS bytes FROM preview_frames
WHERE at < %(before)s AND job_id <> ALL(%(keep)s::text[]);

-- name: delete_old_frames
WITH gone AS (
    DELETE FROM preview_frames WHERE at < %(before)s AND job_id <> ALL(%(keep)s::text[])
    RETURNING octet_length(data) AS size
)
SELECT count(*) AS n, coalesce(sum(size), 0) AS bytes FROM gone;
