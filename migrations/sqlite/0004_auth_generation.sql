-- A counter that moves whenever anything access control reads changes: users, namespaces,
-- members, and access tokens (but not a token's last use). Every process serving from this
-- database polls it and drops its cached view of access when it moves, so a change made by
-- another process (the CLI, another replica) applies everywhere within the poll interval.
-- Triggers bump it, so no writer can forget to.

CREATE TABLE auth_generation (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
);
INSERT INTO auth_generation (id, value) VALUES (1, 0);

CREATE TRIGGER users_changed_ins AFTER INSERT ON users
BEGIN UPDATE auth_generation SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER users_changed_upd AFTER UPDATE ON users
BEGIN UPDATE auth_generation SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER users_changed_del AFTER DELETE ON users
BEGIN UPDATE auth_generation SET value = value + 1 WHERE id = 1; END;

CREATE TRIGGER namespaces_changed_ins AFTER INSERT ON namespaces
BEGIN UPDATE auth_generation SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER namespaces_changed_upd AFTER UPDATE ON namespaces
BEGIN UPDATE auth_generation SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER namespaces_changed_del AFTER DELETE ON namespaces
BEGIN UPDATE auth_generation SET value = value + 1 WHERE id = 1; END;

CREATE TRIGGER members_changed_ins AFTER INSERT ON members
BEGIN UPDATE auth_generation SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER members_changed_upd AFTER UPDATE ON members
BEGIN UPDATE auth_generation SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER members_changed_del AFTER DELETE ON members
BEGIN UPDATE auth_generation SET value = value + 1 WHERE id = 1; END;

CREATE TRIGGER tokens_changed_ins AFTER INSERT ON access_tokens
BEGIN UPDATE auth_generation SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER tokens_changed_upd
AFTER UPDATE OF namespace, name, access, secret_hash, created_at, expires_at, revoked_at
ON access_tokens
BEGIN UPDATE auth_generation SET value = value + 1 WHERE id = 1; END;
CREATE TRIGGER tokens_changed_del AFTER DELETE ON access_tokens
BEGIN UPDATE auth_generation SET value = value + 1 WHERE id = 1; END;
