-- Namespaces (the first segment of repository names), their members, and access tokens.

CREATE TABLE namespaces (
    name       TEXT PRIMARY KEY,
    public     INTEGER NOT NULL DEFAULT 0 CHECK (public IN (0, 1)),
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE members (
    namespace  TEXT NOT NULL REFERENCES namespaces(name) ON DELETE CASCADE,
    user_name  TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    role       TEXT NOT NULL CHECK (role IN ('guest', 'developer', 'maintainer', 'admin')),
    created_at INTEGER NOT NULL,
    PRIMARY KEY (namespace, user_name)
) WITHOUT ROWID;
CREATE INDEX members_user ON members(user_name);

-- Access tokens for CI and robots. Only the SHA-256 of the secret is kept; secrets are
-- 256 random bits, so a fast hash cannot be reversed and lookup by hash is safe.
CREATE TABLE access_tokens (
    namespace    TEXT NOT NULL REFERENCES namespaces(name) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    access       TEXT NOT NULL CHECK (access IN ('read', 'read-write', 'read-write-delete')),
    secret_hash  TEXT NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    last_used_at INTEGER,
    revoked_at   INTEGER,
    PRIMARY KEY (namespace, name)
) WITHOUT ROWID;
