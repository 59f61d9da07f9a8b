-- duet locator schema, version 7 (PostgreSQL): per-team client keys for `client_auth = keys`.
-- A new table only; a locator of the previous version beside this one admits clients its own
-- way (its configuration), so keys mode is switched on once every replica runs this version.
-- Keys are `duetck_<id>_<secret>`; only the SHA-256 digest (hex) of the whole key is kept.
CREATE TABLE client_keys (
    id           TEXT PRIMARY KEY,
    team         TEXT NOT NULL,
    name         TEXT NOT NULL,
    digest       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    created_by   TEXT NOT NULL,
    revoked_at   BIGINT,
    last_used_at BIGINT,
    UNIQUE (team, name)
);
