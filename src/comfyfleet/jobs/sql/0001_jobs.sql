-- The first schema: jobs and their events.
--
-- `seq` is the rowid, so it orders jobs by insertion for free; AUTOINCREMENT makes sure that a
-- seq is never handed out twice, even after the newest row is deleted, because list cursors and
-- event cursors must never point at a different row later. JSON columns are TEXT.

CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    workflow TEXT NOT NULL,
    priority INTEGER NOT NULL,
    status TEXT NOT NULL
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    attempts INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    created_at REAL NOT NULL,
    queued_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    worker TEXT,
    lease_until REAL,
    instance INTEGER,
    prompt_id TEXT,
    progress TEXT,
    outputs TEXT NOT NULL,
    error TEXT,
    cancel_requested INTEGER NOT NULL,
    request_hash TEXT NOT NULL
);

-- claim: the first row of this index among status = 'queued' is the next job.
CREATE INDEX jobs_claim ON jobs (status, priority DESC, queued_at, seq);

-- list_jobs with a status filter, newest first; count by status.
CREATE INDEX jobs_status_seq ON jobs (status, seq);

CREATE TABLE job_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    at REAL NOT NULL
);

CREATE INDEX job_events_job ON job_events (job_id, seq);
