-- duet locator schema, version 1 (MySQL / MariaDB). Times are Unix milliseconds.
-- Text columns are VARCHAR, not TEXT, so every driver reads them back as strings.
CREATE TABLE signing_keys (
    kid         VARCHAR(64) PRIMARY KEY,
    private_key BLOB NOT NULL,
    public_key  BLOB NOT NULL,
    created_at  BIGINT NOT NULL,
    retired_at  BIGINT
) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;

CREATE TABLE edges (
    id                VARCHAR(128) PRIMARY KEY,
    region            VARCHAR(64) NOT NULL,
    public_url        VARCHAR(1024) NOT NULL,
    build             VARCHAR(256) NOT NULL,
    max_connections   BIGINT NOT NULL,
    max_sessions      BIGINT NOT NULL,
    admin_state       VARCHAR(16) NOT NULL DEFAULT 'active',
    health            VARCHAR(16) NOT NULL,
    cpu               DOUBLE NOT NULL DEFAULT 0,
    loop_lag_ms       BIGINT NOT NULL DEFAULT 0,
    connections       BIGINT NOT NULL DEFAULT 0,
    sessions          BIGINT NOT NULL DEFAULT 0,
    registered_at     BIGINT NOT NULL,
    last_heartbeat_at BIGINT NOT NULL,
    health_changed_at BIGINT NOT NULL
) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;

CREATE TABLE sessions (
    id                VARCHAR(64) PRIMARY KEY,
    edge_id           VARCHAR(128) NOT NULL,
    team              VARCHAR(128),
    region_hint       VARCHAR(64),
    created_at        BIGINT NOT NULL,
    started_at        BIGINT,
    ended_at          BIGINT,
    end_reason        VARCHAR(64),
    participant_count BIGINT NOT NULL,
    INDEX sessions_edge_ended (edge_id, ended_at)
) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;

CREATE TABLE participants (
    session_id     VARCHAR(64) NOT NULL,
    participant_id BIGINT NOT NULL,
    role           VARCHAR(16) NOT NULL,
    user_id        VARCHAR(256) NOT NULL,
    display_name   VARCHAR(256) NOT NULL,
    created_at     BIGINT NOT NULL,
    PRIMARY KEY (session_id, participant_id)
) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
