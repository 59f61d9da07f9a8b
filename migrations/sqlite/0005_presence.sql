-- duet locator schema, version 5 (SQLite): which edge serves each team's presence.
-- A new table and an index only, so a locator of the previous version runs beside this one
-- during a rolling upgrade (it just does not serve presence).
CREATE TABLE team_presence (
    team        TEXT PRIMARY KEY,
    edge_id     TEXT NOT NULL,
    assigned_at BIGINT NOT NULL
);
CREATE INDEX sessions_team_live ON sessions (team, ended_at);
