-- Every scheduler pass sums the occupying kernels' requested slots per agent and per keypair.
-- With the owner and the slots in the index, that is an index-only scan of the live kernels
-- instead of a scan of the whole (wide) kernels table: 20 → 3 ms of the query's 25 at 10,000
-- kernels. Same key and predicate as the index it replaces, so per-agent lookups use it too.
CREATE INDEX kernels_occupying_cover ON kernels (agent_id) INCLUDE (access_key, requested_slots)
  WHERE status IN ('SCHEDULED', 'PREPARING', 'CREATING', 'RUNNING', 'RESTARTING', 'TERMINATING');
DROP INDEX kernels_occupying;
