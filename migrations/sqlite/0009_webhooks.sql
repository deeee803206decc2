-- The webhook outbox: one row per (event, endpoint) delivery, written in the same batch as
-- the event is recorded and kept until delivered (2xx) or given up on. Times are in
-- milliseconds since the Unix epoch.
--
-- A worker claims due rows by moving `next_attempt_at` past the delivery's timeout (a
-- lease) and counting the attempt in the same UPDATE; a worker that dies mid-delivery leaves
-- the row due again once the lease ends, so it is delivered again, never lost. Receivers
-- deduplicate by `event_id`.
CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT NOT NULL,
    endpoint        TEXT NOT NULL,
    action          TEXT NOT NULL,
    repository      TEXT,
    -- The JSON envelope, serialized once: every attempt sends (and signs) the same bytes.
    body            TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    -- Retrying ends `give_up_after` past this (a redelivery restarts it).
    retry_since     INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_attempt_at INTEGER,
    -- The HTTP status of the last attempt (NULL: no answer), and why it failed.
    last_status     INTEGER,
    last_error      TEXT,
    delivered_at    INTEGER,
    state           TEXT NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivered', 'failed')),
    UNIQUE (event_id, endpoint)
);

-- The worker's "what is due for this endpoint" query.
CREATE INDEX webhook_deliveries_due
    ON webhook_deliveries (endpoint, next_attempt_at) WHERE state = 'pending';
-- Counts per state and the recent deliveries of an endpoint (admin API).
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint, state, id);

-- Each endpoint's last success and last failure, for the admin API.
CREATE TABLE webhook_endpoints (
    name            TEXT PRIMARY KEY,
    last_success_at INTEGER,
    last_failure_at INTEGER,
    last_status     INTEGER,
    last_error      TEXT
) WITHOUT ROWID;
