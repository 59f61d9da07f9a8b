-- duet locator schema, version 6 (PostgreSQL): scoped admin API tokens, dashboard logins, drain
-- deadlines. New tables and a nullable column only, so a locator of the previous version runs
-- beside this one during a rolling upgrade (it knows only its static admin token and does not
-- end drained sessions; see docs/operations.md).

-- Tokens are `duet_<id>_<secret>`; only the SHA-256 digest (hex) of the whole token is kept.
CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    scope        TEXT NOT NULL,
    digest       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    created_by   TEXT NOT NULL,
    expires_at   BIGINT,
    revoked_at   BIGINT,
    last_used_at BIGINT
);

-- Dashboard logins: the SHA-256 digest (hex) of the session cookie, who logged in, and the
-- CSRF token the page must echo on every change.
CREATE TABLE dashboard_sessions (
    digest     TEXT PRIMARY KEY,
    principal  TEXT NOT NULL,
    scope      TEXT NOT NULL,
    csrf       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX dashboard_sessions_expires ON dashboard_sessions (expires_at);

-- When a draining edge's remaining sessions are ended (Unix ms); NULL unless draining.
ALTER TABLE edges ADD COLUMN drain_deadline BIGINT;
CREATE INDEX sessions_created ON sessions (created_at, id);
