-- duet locator schema, version 3 (SQLite): audit and metrics entries, edges' outbox status and
-- link epoch.
-- Entries relayed by edges are stored once per (edge, outbox, sequence number): the unique key
-- decides, so an entry that arrives again is skipped. Entries the locator makes itself have no
-- outbox_id and edge_seq (NULLs never collide in a unique key) and name their `actor`.
CREATE TABLE audit_entries (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    edge_id        TEXT,
    outbox_id      BIGINT,
    edge_seq       BIGINT,
    at             BIGINT NOT NULL,
    kind           TEXT NOT NULL,
    session_id     TEXT,
    participant_id BIGINT,
    user_id        TEXT,
    actor          TEXT,
    detail         TEXT NOT NULL,
    stored_at      BIGINT NOT NULL,
    UNIQUE (edge_id, outbox_id, edge_seq)
);
-- Queries read oldest first by (at, id) within a filter; retention deletes by `at`.
CREATE INDEX audit_entries_at ON audit_entries (at, id);
CREATE INDEX audit_entries_session_at ON audit_entries (session_id, at, id);
CREATE INDEX audit_entries_edge_at ON audit_entries (edge_id, at, id);
CREATE INDEX audit_entries_kind_at ON audit_entries (kind, at, id);

-- `kind` is `usage` (interval_ms, connections, sessions set) or `session_summary` (session_id,
-- session_started_at, participants, end_reason set); both carry the relayed counters.
CREATE TABLE metrics_entries (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    edge_id            TEXT NOT NULL,
    outbox_id          BIGINT NOT NULL,
    edge_seq           BIGINT NOT NULL,
    at                 BIGINT NOT NULL,
    kind               TEXT NOT NULL,
    interval_ms        BIGINT,
    connections        BIGINT,
    sessions           BIGINT,
    messages_relayed   BIGINT NOT NULL,
    bytes_relayed      BIGINT NOT NULL,
    session_id         TEXT,
    session_started_at BIGINT,
    participants       BIGINT,
    end_reason         TEXT,
    stored_at          BIGINT NOT NULL,
    UNIQUE (edge_id, outbox_id, edge_seq)
);
CREATE INDEX metrics_entries_at ON metrics_entries (at, id);
CREATE INDEX metrics_entries_edge_at ON metrics_entries (edge_id, at, id);
CREATE INDEX metrics_entries_session ON metrics_entries (session_id);

-- The outbox status of the last heartbeat, the outbox the edge registered with, and the link
-- epoch: bumped at every registration, so updates from an older link can be told apart.
ALTER TABLE edges ADD COLUMN outbox_depth BIGINT NOT NULL DEFAULT 0;
ALTER TABLE edges ADD COLUMN outbox_oldest_age_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE edges ADD COLUMN outbox_last_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE edges ADD COLUMN outbox_dropped_audit BIGINT NOT NULL DEFAULT 0;
ALTER TABLE edges ADD COLUMN outbox_dropped_metrics BIGINT NOT NULL DEFAULT 0;
ALTER TABLE edges ADD COLUMN outbox_id BIGINT NOT NULL DEFAULT 0;
ALTER TABLE edges ADD COLUMN link_epoch BIGINT NOT NULL DEFAULT 0;
