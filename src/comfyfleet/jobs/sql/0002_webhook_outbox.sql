-- The webhook outbox: one delivery per job event that a job's webhook asked for.
--
-- It lives in the job store's file so that the relay (events -> deliveries) can keep its cursor
-- next to the rows it writes: inserting a batch of deliveries and moving the cursor is one
-- transaction, so a crash can neither lose an event nor turn it into two deliveries. The queries
-- are in comfyfleet/webhooks/sql/outbox.sql.

CREATE TABLE webhook_deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    event_seq INTEGER NOT NULL UNIQUE,
    job_id TEXT NOT NULL,
    type TEXT NOT NULL,
    url TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts INTEGER NOT NULL,
    created_at REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    first_attempt_at REAL,
    last_attempt_at REAL,
    delivered_at REAL,
    failed_at REAL,
    last_status INTEGER,
    last_error TEXT
);

-- The head of each job's queue: its oldest pending delivery.
CREATE INDEX webhook_deliveries_job ON webhook_deliveries (job_id, state, seq);

-- Listing by state, newest first.
CREATE INDEX webhook_deliveries_state ON webhook_deliveries (state, seq);

-- The relay's cursor: the newest job event it has turned into deliveries (one row). It starts at
-- the newest event already stored, so upgrading a store does not replay its history.
CREATE TABLE webhook_relay (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last_event_seq INTEGER NOT NULL
);

INSERT INTO webhook_relay (id, last_event_seq)
SELECT 1, coalesce(max(seq), 0) FROM job_events;
