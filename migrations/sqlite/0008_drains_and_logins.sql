-- duet locator schema, version 8 (SQLite): nullable columns only.
-- When a draining edge's deadline was acted on (the deadline itself stays, for admins to see).
ALTER TABLE edges ADD COLUMN drained_at BIGINT;
-- The credential a dashboard login was made with (`token:<id>`, or a fingerprint of the
-- bootstrap token or of the configured password hash), checked on every request so that
-- revoking, expiring or replacing it ends the login. Logins without one are refused.
ALTER TABLE dashboard_sessions ADD COLUMN credential TEXT;
