-- What the dashboard reads and asks of the fleet, through the store like everything else:
--
-- * each agent's machine (CPU, memory, disks, GPUs), as JSON beside its heartbeat;
-- * commands for an agent's instances (restart, stop, start, tail), written by a gateway and
--   taken (deleted) by the agent that runs the instance, which polls for them;
-- * the last lines of an instance's log, written by its agent while someone watches them.
-- Throughput and latency figures read finished jobs through retention's `jobs_finished` index.

ALTER TABLE fleet_agents ADD COLUMN machine text NOT NULL DEFAULT '{}';

CREATE TABLE fleet_commands (
    id text PRIMARY KEY,
    agent text NOT NULL,
    idx integer NOT NULL,
    action text NOT NULL,
    requested_at double precision NOT NULL,
    requested_by text,
    until double precision
);

CREATE INDEX fleet_commands_agent ON fleet_commands (agent, requested_at);

CREATE TABLE fleet_logs (
    agent text NOT NULL,
    idx integer NOT NULL,
    lines text NOT NULL,
    updated_at double precision NOT NULL,
    PRIMARY KEY (agent, idx)
);
