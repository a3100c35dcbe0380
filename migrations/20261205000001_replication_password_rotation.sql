-- Rotation of the replication password (`pgpilot rotate
-- replication-password`). replication_password stays the password every
-- node may use now; its generation numbers it (1 for the first).
-- pending_replication_password is a rotation's new password (generation
-- replication_password_generation + 1) while it is not yet known to be set
-- on the replication role: the writable node's keeper sets it and reports
-- so, and only then does it replace replication_password. Until then the
-- old one stays current, so no standby is handed a password the role
-- would refuse. Drawn like the first (gen_random_uuid, 244 random bits).
ALTER TABLE formation
    ADD COLUMN replication_password_generation bigint NOT NULL DEFAULT 1,
    ADD COLUMN pending_replication_password text;
