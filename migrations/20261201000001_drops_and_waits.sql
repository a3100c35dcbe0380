-- A node dropped with --force: its keeper is gone for good, so its row is
-- removed once it can no longer accept writes instead of once its keeper
-- reports `dropped`. Until then it keeps its last report, which tells the
-- state machine whether its standbys hold every acknowledged commit.
ALTER TABLE node ADD COLUMN drop_forced boolean NOT NULL DEFAULT false;

-- The state the node had reported when it was dropped. A dropped writer
-- that had reported `primary` (synchronous replication on) left standbys
-- that hold every acknowledged commit between them, so one of them may be
-- promoted; any other writer did not, and its row stays until an operator
-- decides.
ALTER TABLE node ADD COLUMN dropped_from text;

-- What the group waits for, as last recorded in an event (promise 3: a
-- group that cannot move on by itself says why, once).
ALTER TABLE node_group ADD COLUMN waiting_for text;
