-- When the operator last took replication quorum away from the node (NULL
-- when never, or once a primary confirmed settings without it). Until
-- then the node may hold acknowledged commits that no other standby has
-- (it was in synchronous_standby_names when they were acknowledged), so
-- every failover rule still counts it as a quorum standby.
ALTER TABLE node ADD COLUMN quorum_dropped_at timestamptz;

-- A planned switchover under way: the candidate's node id, from the
-- operator's request until the candidate is told to promote (or the
-- switchover is given up). While it is set the candidate keeps streaming
-- from the old primary and is promoted only once the old primary stopped
-- cleanly and the candidate has received its last WAL.
ALTER TABLE node_group ADD COLUMN switchover_to bigint;

-- The operator asked for maintenance of the node while it was the
-- primary: a switchover moves the primary away first, and the node then
-- goes into maintenance instead of rejoining as a standby.
ALTER TABLE node ADD COLUMN maintenance_requested boolean NOT NULL DEFAULT false;
