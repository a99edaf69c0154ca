-- A create checks its owner's total_resource_slots against the slots of the owner's live
-- kernels (summed in the query): found by this index, not by scanning every kernel ever run.
CREATE INDEX kernels_live_owner ON kernels (access_key) WHERE status NOT IN ('TERMINATED', 'ERROR', 'CANCELLED');
