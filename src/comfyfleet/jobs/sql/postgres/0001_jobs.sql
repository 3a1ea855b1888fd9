-- The first PostgreSQL schema: jobs, their events, and the notifications that wake waiters.
--
-- The columns are the SQLite store's, so that one row means the same thing in both. JSON columns
-- are TEXT holding exactly what `json.dumps` wrote: a job reads back byte for byte as it was
-- stored in every backend (jsonb would reorder keys and refuse some strings SQLite keeps).
-- Times are unix seconds as double precision, like `time.time()`.
--
-- `seq` columns come from identity sequences, which never hand a value out twice: list and event
-- cursors must never point at another row later. Sequences keep the default CACHE 1, so values
-- grow in the order sessions ask for them, which the event horizon (queries.sql) relies on.

CREATE TABLE jobs (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id text NOT NULL UNIQUE,
    workflow text NOT NULL,
    priority integer NOT NULL,
    status text NOT NULL
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    attempts integer NOT NULL,
    max_attempts integer NOT NULL,
    created_at double precision NOT NULL,
    queued_at double precision NOT NULL,
    started_at double precision,
    finished_at double precision,
    worker text,
    lease_until double precision,
    instance integer,
    prompt_id text,
    progress text,
    outputs text NOT NULL,
    error text,
    cancel_requested boolean NOT NULL,
    request_hash text NOT NULL,
    options text NOT NULL DEFAULT '{}',
    owner text
);

-- claim and queue_position: the queued jobs in claim order, and nothing else.
CREATE INDEX jobs_claim ON jobs (priority DESC, queued_at, seq) WHERE status = 'queued';

-- release_expired: the running jobs by lease.
CREATE INDEX jobs_leases ON jobs (lease_until) WHERE status = 'running';

-- Listings newest first, with and without a status or an owner; count by status.
CREATE INDEX jobs_status_seq ON jobs (status, seq);
CREATE INDEX jobs_owner_seq ON jobs (owner, seq);
CREATE INDEX jobs_owner_status_seq ON jobs (owner, status, seq);

CREATE TABLE job_events (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    kind text NOT NULL,
    data text NOT NULL,
    at double precision NOT NULL
);

CREATE INDEX job_events_job ON job_events (job_id, seq);

-- Every process's store listens on two channels. `comfyfleet_events` carries the id of a job
-- that has a new event (event streams wake on it); `comfyfleet_queued` says that some job became
-- claimable (dispatchers wake on it). Triggers send them, so no write path can forget one, and
-- PostgreSQL delivers them only when the transaction commits, so a woken reader finds the rows.

CREATE FUNCTION comfyfleet_event_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('comfyfleet_events', NEW.job_id);
    RETURN NULL;
END;
$$;

CREATE TRIGGER job_events_notify AFTER INSERT ON job_events
FOR EACH ROW EXECUTE FUNCTION comfyfleet_event_added();

CREATE FUNCTION comfyfleet_job_queued() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('comfyfleet_queued', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_queued_insert AFTER INSERT ON jobs
FOR EACH ROW WHEN (NEW.status = 'queued') EXECUTE FUNCTION comfyfleet_job_queued();

CREATE TRIGGER jobs_queued_update AFTER UPDATE OF status ON jobs
FOR EACH ROW WHEN (NEW.status = 'queued' AND OLD.status <> 'queued')
EXECUTE FUNCTION comfyfleet_job_queued();
