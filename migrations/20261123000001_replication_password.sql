-- The password of the replication role (pgpilot_replicator) that every node
-- of a formation shares: the first node creates the role with it, and
-- standbys use it for pg_basebackup, streaming and pg_rewind. pg_basebackup
-- copies the role, so all nodes must agree; the monitor hands it out at
-- registration. gen_random_uuid() draws on pg_strong_random(): 244 random
-- bits once the dashes are gone.
ALTER TABLE formation
    ADD COLUMN replication_password text NOT NULL
    DEFAULT replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '');
