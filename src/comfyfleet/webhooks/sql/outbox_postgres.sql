-- Every statement of the PostgreSQL webhook outbox. Its tables are created by the PostgreSQL job
-- store's migration 0002_webhook_outbox.sql (both live in one database). Each block starts with
-- `-- name: <name>` and holds one statement; parameters are psycopg's (%(name)s).

-- name: has_tables
SELECT count(*) AS n FROM pg_tables
WHERE schemaname = current_schema() AND tablename IN ('webhook_deliveries', 'webhook_relay');

-- name: relay_cursor
SELECT last_event_seq FROM webhook_relay WHERE id = 1;

-- name: move_relay_cursor
-- The row lock this takes makes a second relay wait, then find the cursor moved and store nothing.
UPDATE webhook_relay SET last_event_seq = %(last)s WHERE id = 1 AND last_event_seq = %(after)s;

-- name: insert_delivery
INSERT INTO webhook_deliveries (
    id, event_seq, job_id, type, url, body, state, attempts, created_at, next_attempt_at
) VALUES (
    %(id)s, %(event_seq)s, %(job_id)s, %(type)s, %(url)s, %(body)s, 'pending', 0,
    %(created_at)s, %(created_at)s
);

-- name: get_delivery
SELECT * FROM webhook_deliveries WHERE id = %(id)s;

-- name: due
-- The oldest pending delivery of each job, where its time has come (per-job order).
SELECT d.* FROM webhook_deliveries AS d
WHERE d.state = 'pending'
    AND d.next_attempt_at <= %(now)s
    AND d.seq = (
        SELECT min(p.seq) FROM webhook_deliveries AS p
        WHERE p.job_id = d.job_id AND p.state = 'pending'
    )
ORDER BY d.next_attempt_at, d.seq
LIMIT %(limit)s;

-- name: next_due_at
SELECT min(d.next_attempt_at) AS at FROM webhook_deliveries AS d
WHERE d.state = 'pending'
    AND (%(after)s::double precision IS NULL OR d.next_attempt_at > %(after)s)
    AND d.seq = (
        SELECT min(p.seq) FROM webhook_deliveries AS p
        WHERE p.job_id = d.job_id AND p.state = 'pending'
    );

-- name: mark_delivered
UPDATE webhook_deliveries SET
    state = 'delivered',
    attempts = attempts + 1,
    first_attempt_at = coalesce(first_attempt_at, %(now)s),
    last_attempt_at = %(now)s,
    delivered_at = %(now)s,
    last_status = %(status)s,
    last_error = NULL
WHERE id = %(id)s AND state = 'pending';

-- name: mark_retry
UPDATE webhook_deliveries SET
    attempts = attempts + 1,
    first_attempt_at = coalesce(first_attempt_at, %(now)s),
    last_attempt_at = %(now)s,
    next_attempt_at = %(next_at)s,
    last_status = %(status)s,
    last_error = %(error)s
WHERE id = %(id)s AND state = 'pending';

-- name: mark_failed
UPDATE webhook_deliveries SET
    state = 'failed',
    attempts = attempts + 1,
    first_attempt_at = coalesce(first_attempt_at, %(now)s),
    last_attempt_at = %(now)s,
    failed_at = %(now)s,
    last_status = %(status)s,
    last_error = %(error)s
WHERE id = %(id)s AND state = 'pending';

-- name: redeliver
UPDATE webhook_deliveries SET
    state = 'pending',
    attempts = 0,
    first_attempt_at = NULL,
    next_attempt_at = %(now)s,
    failed_at = NULL
WHERE id = %(id)s AND state = 'failed'
RETURNING *;

-- name: count_by_state
-- Through the (state, seq) index: counting the pending or failed ones skips the delivered.
SELECT count(*) AS n FROM webhook_deliveries WHERE state = %(state)s;

-- name: list_deliveries
SELECT * FROM webhook_deliveries WHERE seq < %(before)s ORDER BY seq DESC LIMIT %(limit)s;

-- name: list_deliveries_by_state
SELECT * FROM webhook_deliveries WHERE state = %(state)s AND seq < %(before)s
ORDER BY seq DESC LIMIT %(limit)s;

-- name: count_delivered
-- Retention: what `delete_delivered` would remove (through `webhook_deliveries_delivered`).
SELECT count(*) AS n, coalesce(sum(octet_length(body)), 0) AS bytes
FROM webhook_deliveries WHERE state = 'delivered' AND delivered_at < %(before)s;

-- name: delete_delivered
WITH gone AS (
    DELETE FROM webhook_deliveries WHERE state = 'delivered' AND delivered_at < %(before)s
    RETURNING octet_length(body) AS size
)
SELECT count(*) AS n, coalesce(sum(size), 0) AS bytes FROM gone;

-- name: count_failed
-- Retention: what `delete_failed` would remove (through `webhook_deliveries_failed`).
SELECT count(*) AS n, coalesce(sum(octet_length(body)), 0) AS bytes
FROM webhook_deliveries WHERE state = 'failed' AND failed_at < %(before)s;

-- name: delete_failed
WITH gone AS (
    DELETE FROM webhook_deliveries WHERE state = 'failed' AND failed_at < %(before)s
    RETURNING octet_length(body) AS size
)
SELECT count(*) AS n, coalesce(sum(size), 0) AS bytes FROM gone;
