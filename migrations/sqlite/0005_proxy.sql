-- The pull-through cache. Cached content lives in the same tables as hosted content, in
-- repositories named <upstream>/<upstream repository>; these columns and tables hold what
-- the cache needs besides.

-- A cached tag's last revalidation with its upstream (NULL for hosted tags).
ALTER TABLE tags ADD COLUMN checked_at INTEGER;
-- Last pulls, recorded in batches: by tag, and of each manifest (eviction picks the least
-- recently pulled).
ALTER TABLE tags ADD COLUMN pulled_at INTEGER;
ALTER TABLE manifests ADD COLUMN pulled_at INTEGER;

-- Repositories eviction never touches.
CREATE TABLE proxy_pins (
    repo       TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

-- Per upstream: counters since the cache began, and the last rate-limit budget it reported.
CREATE TABLE proxy_upstreams (
    name          TEXT PRIMARY KEY,
    hits          INTEGER NOT NULL DEFAULT 0,
    misses        INTEGER NOT NULL DEFAULT 0,
    stale         INTEGER NOT NULL DEFAULT 0,
    errors        INTEGER NOT NULL DEFAULT 0,
    mismatches    INTEGER NOT NULL DEFAULT 0,
    coalesced     INTEGER NOT NULL DEFAULT 0,
    bytes_fetched INTEGER NOT NULL DEFAULT 0,
    bytes_served  INTEGER NOT NULL DEFAULT 0,
    rl_limit      INTEGER,
    rl_remaining  INTEGER,
    rl_window     INTEGER,
    rl_seen_at    INTEGER,
    updated_at    INTEGER NOT NULL
) WITHOUT ROWID;
