-- Every statement the PostgreSQL job store runs, except the migrations next to this file.
-- Each block starts with `-- name: <name>` and holds one statement; parameters are psycopg's
-- named placeholders (%(name)s), so a literal percent sign would have to be written %%.
--
-- Two advisory locks have fixed keys: 0x636f6d6679 ("comfy") serialises migrations, and
-- 0x636f6d6665 ("comfe") is the event horizon (see `writing_events`).

-- name: lock_migrations
SELECT pg_advisory_xact_lock(427071202937);

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at double precision NOT NULL
);

-- name: applied_migrations
SELECT version FROM schema_migrations ORDER BY version;

-- name: record_migration
INSERT INTO schema_migrations (version, name, applied_at)
VALUES (%(version)s, %(name)s, %(applied_at)s);

-- name: writing_events
-- Taken (shared) first in every transaction that appends events, before any row lock, and held
-- until it ends. `event_horizon` takes it exclusively: once granted, no transaction that drew an
-- event seq is still open, so every event up to the newest seq is committed, and later ones will
-- get higher seqs. That is what lets `events_since` hand relays a feed with no holes, although
-- PostgreSQL may commit two transactions in another order than they drew their seqs.
SELECT pg_advisory_xact_lock_shared(427071202917);

-- name: passing_commit
-- For writes that record a moment that passes (progress, the node running, a lease renewal):
-- COMMIT returns without waiting for the disk. A server crash may lose the last few hundred
-- milliseconds of them, never a job's state, which every other write still flushes first.
SET LOCAL synchronous_commit = off;

-- name: durable_mark
-- Sent in a transaction of its own after one that committed with `passing_commit`: this one's
-- commit is flushed (the session's default), and a flush covers all the log written before
-- it, so once it returns the transaction before it is on disk too. For a change that should
-- be seen at once but acknowledged only once durable (an enqueue: a dispatcher claims the job
-- while the gateway still waits for the disk). A transaction must write to the log for its
-- commit to be flushed at all (taking a transaction id is not enough): a logical decoding
-- message is the smallest such write, needs no table and no privilege, and is ignored by
-- replication (no consumer knows the prefix).
SELECT pg_logical_emit_message(true, 'comfyfleet', '') AS mark;

-- name: horizon_lock_timeout
SET LOCAL lock_timeout = '5s';

-- name: event_horizon
SELECT pg_advisory_xact_lock(427071202917);

-- name: newest_event
SELECT coalesce(max(seq), 0) AS seq FROM job_events;

-- name: insert_jobs
-- One statement for a batch of enqueues (`_pgbatch`): each job with its first event, except
-- those whose id is taken and those over their queue limit; the store then reads which each
-- was. `jobs` is a JSON array of rows; `n` is a row's place among the batch's rows that have a
-- limit, so that a batch fills the queue up to the limit and no further (`most` is the largest
-- limit: the count of waiting jobs stops there). The limit is checked without a lock, so
-- batches of other processes racing at the limit may pass it by their size. Rows are inserted
-- in id order, so two batches holding one id each wait in the same order (no deadlock).
WITH new AS (
    SELECT * FROM json_to_recordset(%(jobs)s::json) AS r(
        id text, workflow text, priority integer, status text, attempts integer,
        max_attempts integer, created_at double precision, queued_at double precision,
        started_at double precision, finished_at double precision, worker text,
        lease_until double precision, instance integer, prompt_id text, progress text,
        outputs text, error text, cancel_requested boolean, request_hash text, options text,
        owner text, models text[], max_running integer, max_queued bigint, n bigint,
        kind text, data text
    )
), waiting AS (
    SELECT count(*) AS n FROM (
        SELECT 1 FROM jobs WHERE status = 'queued' LIMIT %(most)s::bigint
    ) AS w
), job AS (
    INSERT INTO jobs (
        id, workflow, priority, status, attempts, max_attempts, created_at, queued_at,
        started_at, finished_at, worker, lease_until, instance, prompt_id, progress, outputs,
        error, cancel_requested, request_hash, options, owner, models, max_running
    )
    SELECT
        new.id, new.workflow, new.priority, new.status, new.attempts, new.max_attempts,
        new.created_at, new.queued_at, new.started_at, new.finished_at, new.worker,
        new.lease_until, new.instance, new.prompt_id, new.progress, new.outputs, new.error,
        new.cancel_requested, new.request_hash, new.options, new.owner, new.models,
        new.max_running
    FROM new, waiting
    WHERE new.max_queued IS NULL OR waiting.n + new.n <= new.max_queued
    ORDER BY new.id
    ON CONFLICT (id) DO NOTHING
    RETURNING seq, id
), event AS (
    INSERT INTO job_events (job_id, kind, data, at)
    SELECT job.id, new.kind, new.data, new.created_at
    FROM job JOIN new ON new.id = job.id
    ORDER BY job.seq
    RETURNING seq
)
SELECT job.id, job.seq FROM job;

-- name: get_jobs
SELECT * FROM jobs WHERE id = ANY(%(ids)s::text[]);

-- name: record_changes
-- Jobs' new states and the events that record the moves, in one statement (`changes` is a
-- JSON array of rows: the columns a change may touch, the job's `seq`, and its event).
WITH change AS (
    SELECT * FROM json_to_recordset(%(changes)s::json) AS c(
        seq bigint, status text, attempts integer, queued_at double precision,
        started_at double precision, finished_at double precision, worker text,
        lease_until double precision, instance integer, prompt_id text, progress text,
        outputs text, error text, cancel_requested boolean, kind text, data text,
        at double precision
    )
), job AS (
    UPDATE jobs SET
        status = change.status,
        attempts = change.attempts,
        queued_at = change.queued_at,
        started_at = change.started_at,
        finished_at = change.finished_at,
        worker = change.worker,
        lease_until = change.lease_until,
        instance = change.instance,
        prompt_id = change.prompt_id,
        progress = change.progress,
        outputs = change.outputs,
        error = change.error,
        cancel_requested = change.cancel_requested
    FROM change
    WHERE jobs.seq = change.seq
    RETURNING jobs.id, jobs.seq, change.kind, change.data, change.at
)
INSERT INTO job_events (job_id, kind, data, at)
SELECT id, kind, data, at FROM job ORDER BY seq
RETURNING seq;

-- name: insert_event
-- The job's row lock comes first, so one job's events commit in seq order (event streams
-- resume after a seq and must not skip one still being written). No row: no such job.
WITH job AS (SELECT id FROM jobs WHERE id = %(job_id)s FOR UPDATE)
INSERT INTO job_events (job_id, kind, data, at)
SELECT id, %(kind)s, %(data)s, %(at)s FROM job
RETURNING seq;

-- name: lock_event_jobs
-- `insert_events` first takes the row locks of every job it writes events for, as
-- `insert_event` does for one, and in id order, so two batches never wait for each other in a
-- circle.
SELECT id FROM jobs WHERE id = ANY(%(job_ids)s::text[]) ORDER BY id FOR UPDATE;

-- name: insert_events
-- Several events in one statement, their seqs in the given order (`ord`). A job that does not
-- exist fails the foreign key, and with it the whole batch.
INSERT INTO job_events (job_id, kind, data, at)
SELECT e.job_id, e.kind, e.data, %(at)s
FROM unnest(%(job_ids)s::text[], %(kinds)s::text[], %(datas)s::text[])
    WITH ORDINALITY AS e (job_id, kind, data, ord)
ORDER BY e.ord
RETURNING seq;

-- name: get_job
SELECT * FROM jobs WHERE id = %(id)s;

-- name: lock_job
SELECT * FROM jobs WHERE id = %(id)s FOR UPDATE;

-- name: lock_jobs
-- A batch's jobs, locked in one order (id) that every batch follows, so two never deadlock.
SELECT * FROM jobs WHERE id = ANY(%(ids)s::text[]) ORDER BY id FOR UPDATE;

-- name: next_queued
-- The claim, as `_routing.best_claim` decides it: the best queued job nobody else is locking
-- right now; for a batch of claimers with one affinity, the best `count` of them (the second
-- claimer's best is the best job the first did not take). Racing claimers each skip the rows
-- the others hold, so none waits and none gets a job twice. Among the first `window`
-- claimable jobs in queue order (a job whose key already runs `max_running` jobs, or whose key
-- is `excluded`, is not claimable), the first by priority, then affinity tier (0: needs no
-- model, waited past `overdue_before`, or shares one with `loaded`; 1: shares one with
-- `on_disk`; 2: the rest), then age; none of a tier above `max_tier` is taken.
--
-- Written so that the plan does not depend on the table's statistics (a new database has
-- none, and the queue's churn outruns them): the window is a walk of `jobs_claim` in its own
-- order that stops after `window` rows, a key's running jobs are counted only for jobs that
-- have a limit (through `jobs_owner_status_seq`), and the window's rows are then fetched by
-- primary key. (Parameter names are written without their placeholder syntax here: the
-- client binds placeholders in comments too.)
WITH candidates AS (
    SELECT seq, priority, queued_at, models FROM jobs
    WHERE status = 'queued'
        AND (owner IS NULL OR (
            owner <> ALL(%(excluded)s::text[])
            AND (max_running IS NULL OR (
                SELECT count(*) FROM jobs AS mine
                WHERE mine.owner = jobs.owner AND mine.status = 'running'
            ) < max_running)
        ))
    ORDER BY priority DESC, queued_at, seq
    LIMIT %(window)s
), ranked AS (
    SELECT seq, priority, queued_at,
        CASE
            WHEN cardinality(models) = 0 OR queued_at <= %(overdue_before)s
                OR models && %(loaded)s::text[] THEN 0
            WHEN models && %(on_disk)s::text[] THEN 1
            ELSE 2
        END AS tier
    FROM candidates
)
SELECT jobs.* FROM ranked JOIN jobs ON jobs.seq = ranked.seq
WHERE jobs.status = 'queued' AND ranked.tier <= %(max_tier)s
ORDER BY ranked.priority DESC, ranked.tier, ranked.queued_at, ranked.seq
LIMIT %(count)s
FOR UPDATE OF jobs SKIP LOCKED;

-- name: lock_owners_running
-- Taken before claims of jobs with a running limit are written, and held until they commit:
-- claimers of one key's jobs take turns here, so two agents cannot both see the key one job
-- under its limit and both start one. The keys are locked in one order (sorted), so batches
-- locking several never deadlock. `owners_running` then counts what committed before.
SELECT pg_advisory_xact_lock(hashtextextended('comfyfleet-running:' || owner, 0))
FROM unnest(%(owners)s::text[]) AS owner;

-- name: owners_running
SELECT owner, count(*) AS n FROM jobs
WHERE owner = ANY(%(owners)s::text[]) AND status = 'running'
GROUP BY owner;

-- name: list_jobs
SELECT * FROM jobs WHERE seq < %(before)s ORDER BY seq DESC LIMIT %(limit)s;

-- name: list_jobs_by_status
SELECT * FROM jobs WHERE status = %(status)s AND seq < %(before)s
ORDER BY seq DESC LIMIT %(limit)s;

-- name: list_owned_jobs
SELECT * FROM jobs WHERE owner = %(owner)s AND seq < %(before)s ORDER BY seq DESC LIMIT %(limit)s;

-- name: list_owned_jobs_by_status
SELECT * FROM jobs
WHERE owner = %(owner)s AND status = %(status)s AND seq < %(before)s
ORDER BY seq DESC LIMIT %(limit)s;

-- name: count_by_status
SELECT count(*) AS n FROM jobs WHERE status = %(status)s;

-- name: queue_depths
SELECT priority, count(*) AS n FROM jobs WHERE status = 'queued' GROUP BY priority;

-- name: endings
-- Finished jobs, newest first (index jobs_finished): the figures of throughput and latency.
SELECT status, priority, created_at, started_at, finished_at FROM jobs
WHERE finished_at >= %(since)s
ORDER BY finished_at DESC LIMIT %(limit)s;

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
) END AS n
FROM (SELECT status, priority, queued_at, seq FROM jobs WHERE id = %(id)s) AS me;

-- name: extend_lease
-- The rows are locked in id order first, as batches of changes lock theirs (`lock_jobs`):
-- an UPDATE of several rows takes them in whatever order it finds them, and two transactions
-- taking one pair of rows in opposite orders deadlock.
WITH held AS (
    SELECT seq FROM jobs
    WHERE id = ANY(%(ids)s::text[]) AND status = 'running' AND worker = %(worker)s
    ORDER BY id
    FOR UPDATE
)
UPDATE jobs SET lease_until = %(lease_until)s
FROM held
WHERE jobs.seq = held.seq AND jobs.status = 'running' AND jobs.worker = %(worker)s
RETURNING jobs.id;

-- name: set_running_info
UPDATE jobs SET
    instance = coalesce(%(instance)s, instance),
    prompt_id = coalesce(%(prompt_id)s, prompt_id),
    progress = coalesce(%(progress)s, progress)
WHERE id = %(id)s AND status = 'running' AND worker = %(worker)s
RETURNING id;

-- name: lapsed_leases
-- Locked, skipping rows another store is changing now: a job being completed right as its
-- lease lapses is left to that completion, and two stores never expire the same lease twice.
SELECT * FROM jobs WHERE status = 'running' AND lease_until < %(now)s ORDER BY seq
FOR UPDATE SKIP LOCKED;

-- name: events
SELECT * FROM job_events WHERE job_id = %(job_id)s AND seq > %(after)s ORDER BY seq
LIMIT %(limit)s;

-- name: job_exists
SELECT 1 FROM jobs WHERE id = %(id)s;

-- name: events_since
SELECT * FROM job_events WHERE seq > %(after)s AND seq <= %(horizon)s ORDER BY seq
LIMIT %(limit)s;

-- name: forget_jobs
-- Finished jobs and (cascading) their events, in one statement (retention forgets thousands);
-- a job still queued or running is kept. Locked in id order first, as `extend_lease` says.
WITH gone AS (
    SELECT seq FROM jobs
    WHERE id = ANY(%(ids)s::text[]) AND status IN ('succeeded', 'failed', 'cancelled')
    ORDER BY id
    FOR UPDATE
)
DELETE FROM jobs USING gone
WHERE jobs.seq = gone.seq AND jobs.status IN ('succeeded', 'failed', 'cancelled');

-- name: finished_jobs
-- Retention: finished jobs that ended before `before`, oldest end first, after the cursor
-- (`at`, `seq`), each with the size of what it and its events hold (UTF-8 bytes of their JSON),
-- how many events it has and its newest one. Read through `jobs_finished`.
SELECT
    j.id, j.seq, j.status, j.finished_at,
    j.size AS bytes,
    coalesce(sum(octet_length(e.data)), 0) AS event_bytes,
    count(e.seq) AS events,
    coalesce(max(e.seq), 0) AS last_event
FROM (
    SELECT id, seq, status, finished_at,
        octet_length(workflow) + octet_length(options) + octet_length(outputs)
            + coalesce(octet_length(error), 0) + coalesce(octet_length(progress), 0) AS size
    FROM jobs
    WHERE finished_at < %(before)s AND (finished_at, seq) > (%(at)s, %(seq)s)
        AND status IN ('succeeded', 'failed', 'cancelled')
    ORDER BY finished_at, seq
    LIMIT %(limit)s
) AS j LEFT JOIN job_events AS e ON e.job_id = j.id
GROUP BY j.id, j.seq, j.status, j.finished_at, j.size
ORDER BY j.finished_at, j.seq;

-- name: live_jobs
-- Retention: the queued and running jobs after seq `after`, whose files and events stay.
SELECT * FROM jobs WHERE status IN ('queued', 'running') AND seq > %(after)s ORDER BY seq
LIMIT %(limit)s;
