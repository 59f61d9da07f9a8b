-- duet locator schema, version 6 (MySQL): scoped admin API tokens, dashboard logins, drain
-- deadlines. New tables and a nullable column only, so a locator of the previous version runs
-- beside this one during a rolling upgrade (it knows only its static admin token and does not
-- end drained sessions; see docs/operations.md).

-- Tokens are `duet_<id>_<secret>`; only the SHA-256 digest (hex) of the whole token is kept.
CREATE TABLE api_tokens (
    id           VARCHAR(64) PRIMARY KEY,
    name         VARCHAR(128) NOT NULL UNIQUE,
    scope        VARCHAR(16) NOT NULL,
    digest       VARCHAR(64) NOT NULL,
    created_at   BIGINT NOT NULL,
    created_by   VARCHAR(160) NOT NULL,
    expires_at   BIGINT,
    revoked_at   BIGINT,
    last_used_at BIGINT
) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;

-- Dashboard logins: the SHA-256 digest (hex) of the session cookie, who logged in, and the
-- CSRF token the page must echo on every change.
CREATE TABLE dashboard_sessions (
    digest     VARCHAR(64) PRIMARY KEY,
    principal  VARCHAR(160) NOT NULL,
    scope      VARCHAR(16) NOT NULL,
    csrf       VARCHAR(64) NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
CREATE INDEX dashboard_sessions_expires ON dashboard_sessions (expires_at);

-- When a draining edge's remaining sessions are ended (Unix ms); NULL unless draining.
ALTER TABLE edges ADD COLUMN drain_deadline BIGINT;
CREATE INDEX sessions_created ON sessions (created_at, id);
