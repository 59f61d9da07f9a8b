-- duet locator schema, version 4 (MySQL): session options chosen by the host at creation.
-- Both columns have defaults, so a locator of the previous version keeps inserting sessions
-- during a rolling upgrade (its sessions get no approval and the edge's participant limit).
ALTER TABLE sessions ADD COLUMN require_approval BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN max_participants BIGINT;
