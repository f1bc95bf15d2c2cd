-- call-engine-store, SQLite schema v1.
-- Timestamps: UTC, integer Unix milliseconds (*_ms). Numeric ids (call, event,
-- correlation): the u64 value's bits as a signed 64-bit INTEGER.

CREATE TABLE queues (
    name              TEXT    NOT NULL PRIMARY KEY,
    strategy          TEXT    NOT NULL,
    moh               TEXT,
    ring_timeout_secs INTEGER NOT NULL,
    settings          TEXT    NOT NULL DEFAULT '{}',   -- JSON
    created_at_ms     INTEGER NOT NULL,
    updated_at_ms     INTEGER NOT NULL
);

CREATE TABLE agents (
    id            TEXT    NOT NULL PRIMARY KEY,
    display_name  TEXT    NOT NULL,
    max_calls     INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);

-- Which queues an agent serves, in the order configured.
CREATE TABLE agent_queues (
    agent_id TEXT    NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    queue    TEXT    NOT NULL REFERENCES queues(name) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    PRIMARY KEY (agent_id, queue)
);
CREATE INDEX agent_queues_by_queue ON agent_queues (queue, agent_id);

-- One row per call. No foreign keys: history outlives configuration.
CREATE TABLE cdrs (
    call_id              INTEGER NOT NULL PRIMARY KEY,
    queue                TEXT,
    caller_user          TEXT    NOT NULL,
    caller_display       TEXT,
    caller_uri           TEXT    NOT NULL,
    agent                TEXT,
    entered_queue_at_ms  INTEGER,
    agent_answered_at_ms INTEGER,
    ended_at_ms          INTEGER NOT NULL,
    wait_secs            REAL    NOT NULL,
    talk_secs            REAL    NOT NULL,
    disposition          TEXT    NOT NULL,
    hung_up_by           TEXT    NOT NULL,
    hangup_cause         TEXT    NOT NULL,
    recorded_at_ms       INTEGER NOT NULL
);
CREATE INDEX cdrs_by_end ON cdrs (ended_at_ms, call_id);
CREATE INDEX cdrs_by_queue ON cdrs (queue, ended_at_ms);
CREATE INDEX cdrs_by_agent ON cdrs (agent, ended_at_ms);

-- The event log: envelopes in append order.
CREATE TABLE events (
    seq            INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    event_id       INTEGER NOT NULL,
    correlation    INTEGER NOT NULL,
    causation      INTEGER,
    source         TEXT    NOT NULL,
    priority       TEXT    NOT NULL,
    bus_ts_ns      INTEGER NOT NULL,
    recorded_at_ms INTEGER NOT NULL,
    kind           TEXT    NOT NULL,
    payload        TEXT    NOT NULL   -- JSON of the EngineEvent
);
CREATE INDEX events_by_correlation ON events (correlation, seq);
