-- duet locator schema, version 2 (SQLite): regions, region rules, placement explanations.
-- An admin may move an edge to another region than the one it reports.
ALTER TABLE edges ADD COLUMN region_override TEXT;

-- Client-to-region rules. `matcher` is normalized (canonical CIDR, upper-case codes), so the
-- unique key refuses the same rule twice.
CREATE TABLE region_rules (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT NOT NULL,
    matcher    TEXT NOT NULL,
    region     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (kind, matcher)
);

-- Regions tried, in order, when a region has no available edge (comma-separated names).
CREATE TABLE region_fallbacks (
    region     TEXT PRIMARY KEY,
    fallback   TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Why each session went where it went: the explanation is JSON (see docs/placement.md).
CREATE TABLE placements (
    session_id    TEXT PRIMARY KEY,
    client_ip     TEXT,
    wanted_region TEXT NOT NULL,
    served_region TEXT NOT NULL,
    edge_id       TEXT NOT NULL,
    explanation   BLOB NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE INDEX placements_created ON placements (created_at);
