-- Every statement of the SQLite webhook outbox. Its tables are created by the job store's
-- migration 0002_webhook_outbox.sql (both live in one file). Each block starts with
-- `-- name: <name>` and holds one statement; parameters are named (:name). Like the job store's
-- queries, none uses RETURNING or UPSERT, so older SQLite versions run them too.

-- name: pragmas
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
PRAGMA busy_timeout = 5000;

-- name: begin_immediate
BEGIN IMMEDIATE;

-- name: commit
COMMIT;

-- name: rollback
ROLLBACK;

-- name: has_tables
SELECT count(*) FROM sqlite_master
WHERE type = 'table' AND name IN ('webhook_deliveries', 'webhook_relay');

-- name: relay_cursor
SELECT last_event_seq FROM webhook_relay WHERE id = 1;

-- name: move_relay_cursor
UPDATE webhook_relay SET last_event_seq = :last WHERE id = 1 AND last_event_seq = :after;

-- name: insert_delivery
INSERT INTO webhook_deliveries (
    id, event_seq, job_id, type, url, body, state, attempts, created_at, next_attempt_at
) VALUES (
    :id, :event_seq, :job_id, :type, :url, :body, 'pending', 0, :created_at, :created_at
);

-- name: get_delivery
SELECT * FROM webhook_deliveries WHERE id = :id;

-- name: due
-- The oldest pending delivery of each job, where its time has come (per-job order).
SELECT d.* FROM webhook_deliveries AS d
WHERE d.state = 'pending'
    AND d.next_attempt_at <= :now
    AND d.seq = (
        SELECT min(p.seq) FROM webhook_deliveries AS p
        WHERE p.job_id = d.job_id AND p.state = 'pending'
    )
ORDER BY d.next_attempt_at, d.seq
LIMIT :limit;

-- name: next_due_at
SELECT min(d.next_attempt_at) FROM webhook_deliveries AS d
WHERE d.state = 'pending'
    AND (:after IS NULL OR d.next_attempt_at > :after)
    AND d.seq = (
        SELECT min(p.seq) FROM webhook_deliveries AS p
        WHERE p.job_id = d.job_id AND p.state = 'pending'
    );

-- name: mark_delivered
UPDATE webhook_deliveries SET
    state = 'delivered',
    attempts = attempts + 1,
    first_attempt_at = coalesce(first_attempt_at, :now),
    last_attempt_at = :now,
    delivered_at = :now,
    last_status = :status,
    last_error = NULL
WHERE id = :id AND state = 'pending';

-- name: mark_retry
UPDATE webhook_deliveries SET
    attempts = attempts + 1,
    first_attempt_at = coalesce(first_attempt_at, :now),
    last_attempt_at = :now,
    next_attempt_at = :next_at,
    last_status = :status,
    last_error = :error
WHERE id = :id AND state = 'pending';

-- name: mark_failed
UPDATE webhook_deliveries SET
    state = 'failed',
    attempts = attempts + 1,
    first_attempt_at = coalesce(first_attempt_at, :now),
    last_attempt_at = :now,
    failed_at = :now,
    last_status = :status,
    last_error = :error
WHERE id = :id AND state = 'pending';

-- name: redeliver
UPDATE webhook_deliveries SET
    state = 'pending',
    attempts = 0,
    first_attempt_at = NULL,
    next_attempt_at = :now,
    failed_at = NULL
WHERE id = :id AND state = 'failed';

-- name: count_by_state
-- Through the (state, seq) index: counting the pending or failed ones skips the delivered.
SELECT count(*) FROM webhook_deliveries WHERE state = :state;

-- name: list_deliveries
SELECT * FROM webhook_deliveries WHERE seq < :before ORDER BY seq DESC LIMIT :limit;

-- name: list_deliveries_by_state
SELECT * FROM webhook_deliveries WHERE state = :state AND seq < :before
ORDER BY seq DESC LIMIT :limit;

-- name: count_delivered
-- Retention: what `delete_delivered` would remove (through `webhook_deliveries_delivered`).
SELECT count(*) AS n, coalesce(sum(length(CAST(body AS BLOB))), 0) AS bytes
FROM webhook_deliveries WHERE state = 'delivered' AND delivered_at < :before;

-- name: delete_delivered
DELETE FROM webhook_deliveries WHERE state = 'delivered' AND delivered_at < :before;

-- name: count_failed
-- Retention: what `delete_failed` would remove (through `webhook_deliveries_failed`).
SELECT count(*) AS n, coalesce(sum(length(CAST(body AS BLOB))), 0) AS bytes
FROM webhook_deliveries WHERE state = 'failed' AND failed_at < :before;

-- name: delete_failed
DELETE FROM webhook_deliveries WHERE state = 'failed' AND failed_at < :before;
