-- duet locator schema, version 3 (MySQL / MariaDB): audit and metrics entries, edges' outbox
-- status and link epoch.
-- Entries relayed by edges are stored once per (edge, outbox, sequence number): the unique key
-- decides, so an entry that arrives again is skipped. Entries the locator makes itself have no
-- outbox_id and edge_seq (NULLs never collide in a unique key) and name their `actor`.
-- Text is VARCHAR (read back as strings by every driver, usable in keys); the store cuts
-- longer values to these lengths on every database alike.
CREATE TABLE audit_entries (
    id             BIGINT AUTO_INCREMENT PRIMARY KEY,
    edge_id        VARCHAR(128),
    outbox_id      BIGINT,
    edge_seq       BIGINT,
    at             BIGINT NOT NULL,
    kind           VARCHAR(64) NOT NULL,
    session_id     VARCHAR(128),
    participant_id BIGINT,
    user_id        VARCHAR(256),
    actor          VARCHAR(128),
    detail         VARCHAR(4096) NOT NULL,
    stored_at      BIGINT NOT NULL,
    UNIQUE KEY audit_entries_origin (edge_id, outbox_id, edge_seq),
    -- Queries read oldest first by (at, id) within a filter; retention deletes by `at`.
    INDEX audit_entries_at (at, id),
    INDEX audit_entries_session_at (session_id, at, id),
    INDEX audit_entries_edge_at (edge_id, at, id),
    INDEX audit_entries_kind_at (kind, at, id)
) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;

-- `kind` is `usage` (interval_ms, connections, sessions set) or `session_summary` (session_id,
-- session_started_at, participants, end_reason set); both carry the relayed counters.
CREATE TABLE metrics_entries (
    id                 BIGINT AUTO_INCREMENT PRIMARY KEY,
    edge_id            VARCHAR(128) NOT NULL,
    outbox_id          BIGINT NOT NULL,
    edge_seq           BIGINT NOT NULL,
    at                 BIGINT NOT NULL,
    kind               VARCHAR(64) NOT NULL,
    interval_ms        BIGINT,
    connections        BIGINT,
    sessions           BIGINT,
    messages_relayed   BIGINT NOT NULL,
    bytes_relayed      BIGINT NOT NULL,
    session_id         VARCHAR(128),
    session_started_at BIGINT,
    participants       BIGINT,
    end_reason         VARCHAR(64),
    stored_at          BIGINT NOT NULL,
    UNIQUE KEY metrics_entries_origin (edge_id, outbox_id, edge_seq),
    INDEX metrics_entries_at (at, id),
    INDEX metrics_entries_edge_at (edge_id, at, id),
    INDEX metrics_entries_session (session_id)
) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;

-- The outbox status of the last heartbeat, the outbox the edge registered with, and the link
-- epoch: bumped at every registration, so updates from an older link can be told apart.
ALTER TABLE edges
    ADD COLUMN outbox_depth BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN outbox_oldest_age_ms BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN outbox_last_seq BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN outbox_dropped_audit BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN outbox_dropped_metrics BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN outbox_id BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN link_epoch BIGINT NOT NULL DEFAULT 0;
