-- Who submitted each job: the id of its API key, so that a key sees and acts on its own jobs
-- only (keys with the admin scope see every job). NULL for jobs submitted with keys off and for
-- every job stored before this migration: nobody knows their owner, so with keys on only admin
-- keys see them.

ALTER TABLE jobs ADD COLUMN owner TEXT;

-- A key's listing, newest first, with and without a status filter: each reads only that key's
-- rows, however many jobs other keys have.
CREATE INDEX jobs_owner_seq ON jobs (owner, seq);
CREATE INDEX jobs_owner_status_seq ON jobs (owner, status, seq);
