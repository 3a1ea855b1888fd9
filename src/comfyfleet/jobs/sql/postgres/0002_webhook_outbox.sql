-- The webhook outbox, in the job store's database for the reason the SQLite store gives in its
-- own 0002: the relay's cursor lives next to the rows it writes, so storing a batch of
-- deliveries and moving the cursor is one transaction. The queries are in
-- comfyfleet/webhooks/sql/outbox_postgres.sql.

CREATE TABLE webhook_deliveries (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id text NOT NULL UNIQUE,
    event_seq bigint NOT NULL UNIQUE,
    job_id text NOT NULL,
    type text NOT NULL,
    url text NOT NULL,
    body text NOT NULL,
    state text NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts integer NOT NULL,
    created_at double precision NOT NULL,
    next_attempt_at double precision NOT NULL,
    first_attempt_at double precision,
    last_attempt_at double precision,
    delivered_at double precision,
    failed_at double precision,
    last_status integer,
    last_error text
);

-- The head of each job's queue: its oldest pending delivery.
CREATE INDEX webhook_deliveries_job ON webhook_deliveries (job_id, seq) WHERE state = 'pending';

-- Listing by state, newest first.
CREATE INDEX webhook_deliveries_state ON webhook_deliveries (state, seq);

-- The relay's cursor (one row), starting at the newest event already stored.
CREATE TABLE webhook_relay (
    id integer PRIMARY KEY CHECK (id = 1),
    last_event_seq bigint NOT NULL
);

INSERT INTO webhook_relay (id, last_event_seq)
SELECT 1, coalesce(max(seq), 0) FROM job_events;
