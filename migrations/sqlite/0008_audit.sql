-- The audit log: one row per push, manifest pull, delete, login, token change, policy change,
-- quota refusal, GC run and retention deletion. Written in batches; rows older than
-- `audit.keep` are removed. Actors are names, never credentials. Two indexes only (time, and
-- repository and time): every index is paid for on each pull.
CREATE TABLE audit_log (
    seq        INTEGER PRIMARY KEY,
    id         TEXT NOT NULL,
    time_ms    INTEGER NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT NOT NULL,
    actor      TEXT NOT NULL,
    addr       TEXT NOT NULL,
    repo       TEXT,
    reference  TEXT,
    digest     TEXT,
    success    INTEGER NOT NULL,
    status     INTEGER NOT NULL,
    detail     TEXT NOT NULL,
    request_id TEXT
);
CREATE INDEX audit_log_time ON audit_log (time_ms);
CREATE INDEX audit_log_repo ON audit_log (repo, time_ms);
