-- duet locator schema, version 2 (MySQL / MariaDB): regions, region rules, placement
-- explanations.
-- An admin may move an edge to another region than the one it reports.
ALTER TABLE edges ADD COLUMN region_override VARCHAR(64);

-- Client-to-region rules. `matcher` is normalized (canonical CIDR, upper-case codes), so the
-- unique key refuses the same rule twice.
CREATE TABLE region_rules (
    id         BIGINT AUTO_INCREMENT PRIMARY KEY,
    kind       VARCHAR(16) NOT NULL,
    matcher    VARCHAR(64) NOT NULL,
    region     VARCHAR(64) NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE KEY region_rules_kind_matcher (kind, matcher)
) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;

-- Regions tried, in order, when a region has no available edge (comma-separated names).
CREATE TABLE region_fallbacks (
    region     VARCHAR(64) PRIMARY KEY,
    fallback   VARCHAR(2048) NOT NULL,
    updated_at BIGINT NOT NULL
) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;

-- Why each session went where it went: the explanation is JSON (see docs/placement.md).
CREATE TABLE placements (
    session_id    VARCHAR(64) PRIMARY KEY,
    client_ip     VARCHAR(64),
    wanted_region VARCHAR(64) NOT NULL,
    served_region VARCHAR(64) NOT NULL,
    edge_id       VARCHAR(128) NOT NULL,
    explanation   MEDIUMBLOB NOT NULL,
    created_at    BIGINT NOT NULL,
    INDEX placements_created (created_at)
) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
