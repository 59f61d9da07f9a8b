-- duet locator schema, version 9 (PostgreSQL): nullable columns only, so a locator of version 8
-- keeps working beside one of version 9 during a rolling upgrade (it never reads the column).
-- When an edge said it is stopping (SIGTERM, link message Draining); cleared when it registers
-- again. A stopping edge gets no new sessions.
ALTER TABLE edges ADD COLUMN stopping_since BIGINT;
