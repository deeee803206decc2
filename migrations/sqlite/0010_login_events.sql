-- Failed and successful password logins, as the login throttle's log shared by replicas
-- over one database: each replica appends what it saw and applies what the others appended
-- (by `id`, in order). Rows are pruned once no throttle limit can still count them. Times in
-- milliseconds since the Unix epoch. The embedded single-process setup keeps its throttle in
-- memory and writes nothing here.
CREATE TABLE login_events (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    -- The process that saw the attempt (random per start), so it skips its own rows.
    replica   TEXT NOT NULL,
    -- The client address as counted: IPv4, or an IPv6 /64.
    client    TEXT NOT NULL,
    -- The user name tried; NULL for a wrong access-token secret (counted per address only).
    user_name TEXT,
    failed    INTEGER NOT NULL,
    at        INTEGER NOT NULL
);
CREATE INDEX login_events_at ON login_events (at);
