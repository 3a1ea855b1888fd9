-- Retention (comfyfleet.retention) forgets finished jobs and spent webhook deliveries once they
-- are old: these indexes let it find them by age without reading every row. Only finished jobs
-- have a `finished_at`; only delivered and failed deliveries the time they became so.

CREATE INDEX jobs_finished ON jobs (finished_at, seq) WHERE finished_at IS NOT NULL;

CREATE INDEX webhook_deliveries_delivered ON webhook_deliveries (delivered_at)
WHERE state = 'delivered';

CREATE INDEX webhook_deliveries_failed ON webhook_deliveries (failed_at) WHERE state = 'failed';
