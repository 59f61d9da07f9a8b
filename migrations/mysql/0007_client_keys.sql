-- duet locator schema, version 7 (MySQL): per-team client keys for `client_auth = keys`.
-- A new table only; a locator of the previous version beside this one admits clients its own
-- way (its configuration), so keys mode is switched on once every replica runs this version.
-- Keys are `duetck_<id>_<secret>`; only the SHA-256 digest (hex) of the whole key is kept.
CREATE TABLE client_keys (
    id           VARCHAR(64) PRIMARY KEY,
    team         VARCHAR(128) NOT NULL,
    name         VARCHAR(128) NOT NULL,
    digest       VARCHAR(64) NOT NULL,
    created_at   BIGINT NOT NULL,
    created_by   VARCHAR(160) NOT NULL,
    revoked_at   BIGINT,
    last_used_at BIGINT,
    UNIQUE (team, name)
) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
