-- What the dashboard reads and asks of the fleet, through the store like everything else:
--
-- * each agent's machine (CPU, memory, disks, GPUs), as JSON beside its heartbeat;
-- * commands for an agent's instances (restart, stop, start, tail), written by a gateway and
--   taken (deleted) by the agent that runs the instance, which polls for them;
-- * the last lines of an instance's log, written by its agent while someone watches them.
-- Throughput and latency figures read finished jobs through retention's `jobs_finished` index.

ALTER TABLE fleet_agents ADD COLUMN machine TEXT NOT NULL DEFAULT '{}';

CREATE TABLE fleet_commands (
    id TEXT PRIMARY KEY,
    agent TEXT NOT NULL,
    idx INTEGER NOT NULL,
    action TEXT NOT NULL,
    requested_at REAL NOT NULL,
    requested_by TEXT,
    until REAL
);

CREATE INDEX fleet_commands_agent ON fleet_commands (agent, requested_at);

CREATE TABLE fleet_logs (
    agent TEXT NOT NULL,
    idx INTEGER NOT NULL,
    lines TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (agent, idx)
);
