-- Per-job options that travel with the job and do not change while it runs: the webhook to
-- call, the output storage and image conversion asked for, the job's timeouts. JSON, like the
-- other structured columns.

ALTER TABLE jobs ADD COLUMN options TEXT NOT NULL DEFAULT '{}';
