-- Every statement of the SQLite fleet registry. Its tables come from the job store's migration
-- 0005_fleet_registry.sql. Like queries.sql, no UPSERT or RETURNING (old SQLite runs them too).

-- name: pragmas
PRAGMA busy_timeout = 5000;

-- name: begin_immediate
BEGIN IMMEDIATE;

-- name: commit
COMMIT;

-- name: rollback
ROLLBACK;

-- name: has_tables
SELECT count(*) FROM sqlite_master
WHERE type = 'table' AND name IN ('fleet_agents', 'fleet_instances', 'fleet_schemas');

-- name: put_agent
INSERT OR REPLACE INTO fleet_agents (id, host, version, started_at, heartbeat_at)
VALUES (:id, :host, :version, :started_at, :heartbeat_at);

-- name: instance_indexes
SELECT idx FROM fleet_instances WHERE agent = :agent;

-- name: delete_instance
DELETE FROM fleet_instances WHERE agent = :agent AND idx = :idx;

-- name: insert_instance
INSERT OR IGNORE INTO fleet_instances (
    agent, idx, base_url, state, device, vram_used, vram_total, free_slots, models,
    models_digest, loaded_models, schema_digest, details, updated_at
) VALUES (
    :agent, :idx, :base_url, :state, :device, :vram_used, :vram_total, :free_slots, :models,
    :models_digest, :loaded_models, :schema_digest, :details, :updated_at
);

-- name: update_instance
-- The model list is kept as stored while its digest is unchanged (it is the big column).
UPDATE fleet_instances SET
    base_url = :base_url, state = :state, device = :device, vram_used = :vram_used,
    vram_total = :vram_total, free_slots = :free_slots,
    models = CASE WHEN models_digest = :models_digest THEN models ELSE :models END,
    models_digest = :models_digest, loaded_models = :loaded_models,
    schema_digest = :schema_digest, details = :details, updated_at = :updated_at
WHERE agent = :agent AND idx = :idx;

-- name: delete_agent
DELETE FROM fleet_agents WHERE id = :id;

-- name: delete_agent_instances
DELETE FROM fleet_instances WHERE agent = :id;

-- name: agents
SELECT * FROM fleet_agents ORDER BY id;

-- name: instances
SELECT * FROM fleet_instances ORDER BY agent, idx;

-- name: insert_schemas
INSERT OR IGNORE INTO fleet_schemas (digest, body) VALUES (:digest, :body);

-- name: get_schemas
SELECT digest, body FROM fleet_schemas WHERE digest = :digest;

-- name: prune_agents
DELETE FROM fleet_agents WHERE heartbeat_at < :older_than;

-- name: prune_instances
DELETE FROM fleet_instances WHERE agent NOT IN (SELECT id FROM fleet_agents);

-- name: prune_frames
DELETE FROM preview_frames WHERE at < :before;

-- name: prune_schemas
DELETE FROM fleet_schemas WHERE digest NOT IN (
    SELECT schema_digest FROM fleet_instances WHERE schema_digest IS NOT NULL
);

-- name: put_frame
INSERT OR REPLACE INTO preview_frames (job_id, worker, seq, format, data, at)
VALUES (:job_id, :worker, :seq, :format, :data, :at);

-- name: get_frame
SELECT * FROM preview_frames WHERE job_id = :job_id AND at >= :since;

-- name: insert_lease
INSERT OR IGNORE INTO fleet_leases (name, holder, expires_at) VALUES (:name, :holder, :expires_at);

-- name: take_lease
UPDATE fleet_leases SET holder = :holder, expires_at = :expires_at
WHERE name = :name AND (holder = :holder OR expires_at < :now);

-- name: lease_holder
SELECT holder FROM fleet_leases WHERE name = :name;

-- name: resign_lease
DELETE FROM fleet_leases WHERE name = :name AND holder = :holder;

-- name: count_old_frames
-- Retention: the frames stored before :before, but those of the jobs in :keep (a JSON array).
SELECT count(*) AS n, coalesce(sum(length(data)), 0) AS bytes FROM preview_frames
WHERE at < :before AND job_id NOT IN (SELECT value FROM json_each(:keep));

-- name: delete_old_frames
DELETE FROM preview_frames
WHERE at < :before AND job_id NOT IN (SELECT value FROM json_each(:keep));
