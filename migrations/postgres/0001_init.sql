-- duet locator schema, version 1 (PostgreSQL). Times are Unix milliseconds.
CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    private_key BYTEA NOT NULL,
    public_key  BYTEA NOT NULL,
    created_at  BIGINT NOT NULL,
    retired_at  BIGINT
);

CREATE TABLE edges (
    id                TEXT PRIMARY KEY,
    region            TEXT NOT NULL,
    public_url        TEXT NOT NULL,
    build             TEXT NOT NULL,
    max_connections   BIGINT NOT NULL,
    max_sessions      BIGINT NOT NULL,
    admin_state       TEXT NOT NULL DEFAULT 'active',
    health            TEXT NOT NULL,
    cpu               DOUBLE PRECISION NOT NULL DEFAULT 0,
    loop_lag_ms       BIGINT NOT NULL DEFAULT 0,
    connections       BIGINT NOT NULL DEFAULT 0,
    sessions          BIGINT NOT NULL DEFAULT 0,
    registered_at     BIGINT NOT NULL,
    last_heartbeat_at BIGINT NOT NULL,
    health_changed_at BIGINT NOT NULL
);

CREATE TABLE sessions (
    id                TEXT PRIMARY KEY,
    edge_id           TEXT NOT NULL,
    team              TEXT,
    region_hint       TEXT,
    created_at        BIGINT NOT NULL,
    started_at        BIGINT,
    ended_at          BIGINT,
    end_reason        TEXT,
    participant_count BIGINT NOT NULL
);
CREATE INDEX sessions_edge_ended ON sessions (edge_id, ended_at);

CREATE TABLE participants (
    session_id     TEXT NOT NULL,
    participant_id BIGINT NOT NULL,
    role           TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    display_name   TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    PRIMARY KEY (session_id, participant_id)
);
