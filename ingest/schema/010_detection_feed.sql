-- Detection as a partitioned consumer of committed batches (docs/scaling.md, "Each stream on one
-- worker"). Ingest writes each batch's readings here, one row per partition (a hash of the
-- site), in the batch's own transaction: detection sees exactly what was committed, whichever
-- worker committed it. One live worker owns each partition at a time, under a lease.
CREATE TABLE detection_feed (
    partition  smallint NOT NULL,
    -- The writing transaction: a row whose xid is below every running transaction's is final,
    -- so an owner reading in xid order below that horizon never misses a late commit.
    xid        xid8 NOT NULL DEFAULT pg_current_xact_id(),
    -- When the batch was written: rows are judged once they settle, so batches of the same
    -- moment from two workers are merged in time order.
    written_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    stream_ids bytea NOT NULL,  -- little-endian int32 per reading
    ts_us      bytea NOT NULL,  -- little-endian int64, µs since the Unix epoch
    vals       bytea NOT NULL,  -- little-endian float64
    PRIMARY KEY (partition, xid)
);

-- Who owns each partition, until when, and how far into the feed its saved detector state
-- reaches: rows with xid <= read_to are in detector_state. epoch counts changes of owner, so a
-- worker whose lease lapsed cannot checkpoint over its successor.
CREATE TABLE detection_partitions (
    partition   smallint PRIMARY KEY,
    owner       text,
    epoch       bigint NOT NULL DEFAULT 0,
    lease_until timestamptz NOT NULL DEFAULT '-infinity',
    read_to     xid8 NOT NULL DEFAULT '0'
);
INSERT INTO detection_partitions (partition) SELECT generate_series(0, 15);

-- The live workers, by heartbeat: partitions are shared among these.
CREATE TABLE detection_workers (
    worker      text PRIMARY KEY,
    alive_until timestamptz NOT NULL
);

-- A replayed transition (a new owner going over what its predecessor did after the last
-- checkpoint) is recognised by the start time of the alerts already there.
CREATE INDEX alerts_stream_kind_started_idx ON alerts (stream_id, kind, started_at DESC);
