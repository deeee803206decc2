-- Storage lifecycle: garbage collection, retention, quotas and scrub.

-- When a link or a blob last lost its last reference (a manifest that used it was deleted).
-- GC counts its grace from the later of this and the row's creation.
ALTER TABLE repo_blobs ADD COLUMN idle_since INTEGER;
ALTER TABLE blobs ADD COLUMN idle_since INTEGER;
-- Set by scrub when the stored bytes no longer hash to the digest (or are missing): the blob
-- is then answered as unknown everywhere until a push or a fill stores it again.
ALTER TABLE blobs ADD COLUMN quarantined_at INTEGER;
-- When a manifest lost its last tag, for retention's delete_untagged_after.
ALTER TABLE manifests ADD COLUMN untagged_at INTEGER;

-- GC asks "is any manifest this digest?" for every candidate blob.
CREATE INDEX manifests_digest ON manifests(digest);

CREATE TRIGGER tags_untag_del AFTER DELETE ON tags
BEGIN
  UPDATE manifests SET untagged_at = CAST(strftime('%s', 'now') AS INTEGER)
  WHERE repo_id = old.repo_id AND digest = old.digest
    AND NOT EXISTS (SELECT 1 FROM tags WHERE repo_id = old.repo_id AND digest = old.digest);
END;
CREATE TRIGGER tags_untag_upd AFTER UPDATE OF digest ON tags WHEN old.digest <> new.digest
BEGIN
  UPDATE manifests SET untagged_at = CAST(strftime('%s', 'now') AS INTEGER)
  WHERE repo_id = old.repo_id AND digest = old.digest
    AND NOT EXISTS (SELECT 1 FROM tags WHERE repo_id = old.repo_id AND digest = old.digest);
END;

-- Named leases: one GC (or retention run, or scrub) at a time across every process sharing
-- this database. A holder renews its lease while it works; an expired one may be taken.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;

-- Small named values kept between runs: the scrub's resume point, the last GC's report.
CREATE TABLE lifecycle_state (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;

-- A counter that moves whenever content is removed or moved by anyone: a tag moved or
-- deleted, a manifest deleted, a blob link removed, a blob quarantined. Servers poll it and
-- drop their in-memory lookups when it moves, so removals made by another process (the CLI,
-- another replica) are never answered from a stale cache.
CREATE TABLE content_generation (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
);
INSERT INTO content_generation (id, value) VALUES (1, 0);

CREATE TRIGGER content_tags_upd AFTER UPDATE OF digest ON tags WHEN old.digest <> new.digest
BEGIN UPDATE content_generation SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER content_tags_del AFTER DELETE ON tags
BEGIN UPDATE content_generation SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER content_manifests_del AFTER DELETE ON manifests
BEGIN UPDATE content_generation SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER content_links_del AFTER DELETE ON repo_blobs
BEGIN UPDATE content_generation SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER content_blobs_quarantined AFTER UPDATE OF quarantined_at ON blobs
WHEN new.quarantined_at IS NOT NULL
BEGIN UPDATE content_generation SET value = value + 1 WHERE id = 1; END;

-- Whether a blob holds a manifest's bytes, so GC can say how many manifests it removed.
ALTER TABLE blobs ADD COLUMN is_manifest INTEGER NOT NULL DEFAULT 0;
UPDATE blobs SET is_manifest = 1 WHERE digest IN (SELECT digest FROM manifests);

-- Blobs GC has unlinked and forgotten, whose bytes it is about to delete. A crash leaves
-- them here, and the next run finishes them (unless a push stored the blob again meanwhile).
CREATE TABLE gc_pending (
    digest      TEXT PRIMARY KEY,
    size        INTEGER NOT NULL,
    is_manifest INTEGER NOT NULL,
    at          INTEGER NOT NULL
) WITHOUT ROWID;
