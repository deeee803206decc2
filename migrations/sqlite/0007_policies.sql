-- Lifecycle policies set through the admin API or `berth policy`: one row per kind
-- (immutable_tags, retention, quotas) holding the same JSON shape as the config's key. A
-- kind with a row here replaces the config's; without one the config's applies.
CREATE TABLE policies (
    kind       TEXT PRIMARY KEY,
    body       TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    updated_by TEXT NOT NULL
) WITHOUT ROWID;

-- Moves with every policy change, so every process applies it at its next poll.
CREATE TABLE policy_generation (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
);
INSERT INTO policy_generation (id, value) VALUES (1, 0);

CREATE TRIGGER policies_ins AFTER INSERT ON policies
BEGIN UPDATE policy_generation SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER policies_upd AFTER UPDATE ON policies
BEGIN UPDATE policy_generation SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER policies_del AFTER DELETE ON policies
BEGIN UPDATE policy_generation SET value = value + 1 WHERE id = 1; END;
