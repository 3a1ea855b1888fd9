-- Every statement the SQLite job store runs, except the migrations next to this file.
-- Each block starts with `-- name: <name>` and holds one statement (`pragmas` holds several).
-- Statements take named parameters (:name) and avoid RETURNING and UPSERT, so that the SQLite of
-- older distributions (3.31 on Ubuntu 20.04, common on GPU machines) runs them too.

-- name: pragmas
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
PRAGMA busy_timeout = 5000;
PRAGMA foreign_keys = ON;

-- name: begin_immediate
BEGIN IMMEDIATE;

-- name: commit
COMMIT;

-- name: rollback
ROLLBACK;

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at REAL NOT NULL
);

-- name: applied_migrations
SELECT version FROM schema_migrations ORDER BY version;

-- name: record_migration
INSERT INTO schema_migrations (version, name, applied_at) VALUES (:version, :name, :applied_at);

-- name: insert_job
INSERT INTO jobs (
    id, workflow, priority, status, attempts, max_attempts, created_at, queued_at, started_at,
    finished_at, worker, lease_until, instance, prompt_id, progress, outputs, error,
    cancel_requested, request_hash, options, owner
) VALUES (
    :id, :workflow, :priority, :status, :attempts, :max_attempts, :created_at, :queued_at,
    :started_at, :finished_at, :worker, :lease_until, :instance, :prompt_id, :progress, :outputs,
    :error, :cancel_requested, :request_hash, :options, :owner
);

-- name: update_job
UPDATE jobs SET
    status = :status,
    attempts = :attempts,
    queued_at = :queued_at,
    started_at = :started_at,
    finished_at = :finished_at,
    worker = :worker,
    lease_until = :lease_until,
    instance = :instance,
    prompt_id = :prompt_id,
    progress = :progress,
    outputs = :outputs,
    error = :error,
    cancel_requested = :cancel_requested
WHERE seq = :seq;

-- name: get_job
SELECT * FROM jobs WHERE id = :id;

-- name: list_jobs
SELECT * FROM jobs WHERE seq < :before ORDER BY seq DESC LIMIT :limit;

-- name: list_jobs_by_status
SELECT * FROM jobs WHERE status = :status AND seq < :before ORDER BY seq DESC LIMIT :limit;

-- name: list_owned_jobs
SELECT * FROM jobs WHERE owner = :owner AND seq < :before ORDER BY seq DESC LIMIT :limit;

-- name: list_owned_jobs_by_status
SELECT * FROM jobs
WHERE owner = :owner AND status = :status AND seq < :before
ORDER BY seq DESC LIMIT :limit;

-- name: count_by_status
SELECT count(*) FROM jobs WHERE status = :status;

-- name: queue_position
-- NULL when the job is not queued (or unknown); reads only the columns it compares.
SELECT CASE WHEN me.status = 'queued' THEN (
    SELECT count(*) FROM jobs
    WHERE status = 'queued'
        AND (
            priority > me.priority
            OR (priority = me.priority AND queued_at < me.queued_at)
            OR (priority = me.priority AND queued_at = me.queued_at AND seq < me.seq)
        )
) END
FROM (SELECT status, priority, queued_at, seq FROM jobs WHERE id = :id) AS me;

-- name: next_queued
SELECT * FROM jobs WHERE status = 'queued' ORDER BY priority DESC, queued_at, seq LIMIT 1;

-- name: extend_lease
UPDATE jobs SET lease_until = :lease_until
WHERE id = :id AND status = 'running' AND worker = :worker;

-- name: set_running_info
UPDATE jobs SET
    instance = coalesce(:instance, instance),
    prompt_id = coalesce(:prompt_id, prompt_id),
    progress = coalesce(:progress, progress)
WHERE id = :id AND status = 'running' AND worker = :worker;

-- name: lapsed_leases
SELECT * FROM jobs WHERE status = 'running' AND lease_until < :now ORDER BY seq;

-- name: insert_event
INSERT INTO job_events (job_id, kind, data, at) VALUES (:job_id, :kind, :data, :at);

-- name: events
SELECT * FROM job_events WHERE job_id = :job_id AND seq > :after ORDER BY seq LIMIT :limit;

-- name: events_since
SELECT * FROM job_events WHERE seq > :after ORDER BY seq LIMIT :limit;
