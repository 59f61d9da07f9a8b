-- duet locator schema, version 5 (MySQL): which edge serves each team's presence.
-- A new table and an index only, so a locator of the previous version runs beside this one
-- during a rolling upgrade (it just does not serve presence).
CREATE TABLE team_presence (
    team        VARCHAR(128) PRIMARY KEY,
    edge_id     VARCHAR(128) NOT NULL,
    assigned_at BIGINT NOT NULL
) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
CREATE INDEX sessions_team_live ON sessions (team, ended_at);
