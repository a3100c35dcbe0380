-- When the operator's `perform failover` replaced this writer without a
-- standby having lost its stream first: its keeper's fencing exemption
-- ("every other node streams from me") may have held until then, so the
-- lease gate counts the lease from then too (fsm::is_fenced).
ALTER TABLE node ADD COLUMN failed_over_at timestamptz;
