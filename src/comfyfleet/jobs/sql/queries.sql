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
    cancel_requested, request_hash, options, owner, models, max_running
) VALUES (
    :id, :workflow, :priority, :status, :attempts, :max_attempts, :created_at, :queued_at,
    :started_at, :finished_at, :worker, :lease_until, :instance, :prompt_id, :progress, :outputs,
    :error, :cancel_requested, :request_hash, :options, :owner, :models, :max_running
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

-- name: queue_depths
SELECT priority, count(*) AS n FROM jobs WHERE status = 'queued' GROUP BY priority;

-- name: endings
-- Finished jobs, newest first (index jobs_finished): the figures of throughput and latency.
SELECT status, priority, created_at, started_at, finished_at FROM jobs
WHERE finished_at >= :since
ORDER BY finished_at DESC LIMIT :limit;

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
-- The claim, as `_routing.best_claim` decides it: among the first :window claimable jobs in
-- queue order (a job whose key already runs `max_running` jobs is not claimable), the first by
-- priority, then affinity tier (0: needs no model, waited past :overdue_before, or shares one
-- with :loaded; 1: shares one with :on_disk; 2: the rest), then age; none of a tier above
-- :max_tier is taken. :loaded and :on_disk are JSON arrays; running jobs are few, so counting
-- them per key is cheap.
WITH running AS (
    SELECT owner, count(*) AS n FROM jobs
    WHERE status = 'running' AND owner IS NOT NULL
    GROUP BY owner
), candidates AS (
    SELECT jobs.* FROM jobs LEFT JOIN running ON running.owner = jobs.owner
    WHERE jobs.status = 'queued'
        AND (jobs.owner IS NULL OR jobs.max_running IS NULL
            OR coalesce(running.n, 0) < jobs.max_running)
    ORDER BY jobs.priority DESC, jobs.queued_at, jobs.seq
    LIMIT :window
), ranked AS (
    SELECT c.seq,
        CASE
            WHEN c.models = '[]' OR c.queued_at <= :overdue_before OR EXISTS (
                SELECT 1 FROM json_each(c.models) AS m
                WHERE m.value IN (SELECT value FROM json_each(:loaded))
            ) THEN 0
            WHEN EXISTS (
                SELECT 1 FROM json_each(c.models) AS m
                WHERE m.value IN (SELECT value FROM json_each(:on_disk))
            ) THEN 1
            ELSE 2
        END AS tier
    FROM candidates AS c
)
SELECT c.* FROM candidates AS c JOIN ranked ON ranked.seq = c.seq
WHERE ranked.tier <= :max_tier
ORDER BY c.priority DESC, ranked.tier, c.queued_at, c.seq
LIMIT 1;

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

-- name: newest_event
SELECT coalesce(max(seq), 0) AS seq FROM job_events;

-- name: events_since
SELECT * FROM job_events WHERE seq > :after ORDER BY seq LIMIT :limit;

-- name: forget_job
-- A finished job and (cascading) its events; a job still queued or running is kept.
DELETE FROM jobs WHERE id = :id AND status IN ('succeeded', 'failed', 'cancelled');

-- name: finished_jobs
-- Retention: finished jobs that ended before :before, oldest end first, after the cursor
-- (:at, :seq), each with the size of what it and its events hold (UTF-8 bytes of their JSON),
-- how many events it has and its newest one. Read through `jobs_finished`.
SELECT
    j.id, j.seq, j.status, j.finished_at,
    j.size AS bytes,
    coalesce(sum(length(CAST(e.data AS BLOB))), 0) AS event_bytes,
    count(e.seq) AS events,
    coalesce(max(e.seq), 0) AS last_event
FROM (
    SELECT id, seq, status, finished_at,
        length(CAST(workflow AS BLOB)) + length(CAST(options AS BLOB))
            + length(CAST(outputs AS BLOB)) + coalesce(length(CAST(error AS BLOB)), 0)
            + coalesce(length(CAST(progress AS BLOB)), 0) AS size
    FROM jobs
    WHERE finished_at < :before AND (finished_at, seq) > (:at, :seq)
        AND status IN ('succeeded', 'failed', 'cancelled')
    ORDER BY finished_at, seq
    LIMIT :limit
) AS j LEFT JOIN job_events AS e ON e.job_id = j.id
GROUP BY j.seq
ORDER BY j.finished_at, j.seq;

-- name: live_jobs
-- Retention: the queued and running jobs after seq :after, whose files and events stay.
SELECT * FROM jobs WHERE status IN ('queued', 'running') AND seq > :after ORDER BY seq
LIMIT :limit;
