-- berth metadata schema, version 1. Blob and manifest bytes live in the blob store; these
-- rows only ever point at bytes that are already durable there.

CREATE TABLE repositories (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

-- Every committed blob (layers, configs and manifests alike), by digest.
CREATE TABLE blobs (
    digest     TEXT PRIMARY KEY,
    size       INTEGER NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

-- Which repositories may serve which blobs: pushed, mounted or referenced there.
CREATE TABLE repo_blobs (
    repo_id    INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    digest     TEXT NOT NULL REFERENCES blobs(digest),
    created_at INTEGER NOT NULL,
    PRIMARY KEY (repo_id, digest)
) WITHOUT ROWID;
CREATE INDEX repo_blobs_digest ON repo_blobs(digest);

CREATE TABLE manifests (
    repo_id       INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    digest        TEXT NOT NULL REFERENCES blobs(digest),
    media_type    TEXT NOT NULL,
    size          INTEGER NOT NULL,
    artifact_type TEXT,
    subject       TEXT,
    annotations   TEXT,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (repo_id, digest)
) WITHOUT ROWID;
CREATE INDEX manifests_subject ON manifests(repo_id, subject) WHERE subject IS NOT NULL;

-- What each manifest references (config, layers, child manifests): the roots of GC marking.
CREATE TABLE manifest_refs (
    repo_id         INTEGER NOT NULL,
    manifest_digest TEXT NOT NULL,
    ref_digest      TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('blob', 'manifest')),
    PRIMARY KEY (repo_id, manifest_digest, ref_digest),
    FOREIGN KEY (repo_id, manifest_digest) REFERENCES manifests(repo_id, digest) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX manifest_refs_ref ON manifest_refs(ref_digest);

CREATE TABLE tags (
    repo_id    INTEGER NOT NULL,
    name       TEXT NOT NULL,
    digest     TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (repo_id, name),
    FOREIGN KEY (repo_id, digest) REFERENCES manifests(repo_id, digest) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX tags_digest ON tags(repo_id, digest);

-- Upload sessions; `size` is the acknowledged length (fsynced before it was recorded).
CREATE TABLE uploads (
    id         TEXT PRIMARY KEY,
    repo       TEXT NOT NULL,
    size       INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
