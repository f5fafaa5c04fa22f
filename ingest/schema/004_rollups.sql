-- Rollups at 1 minute, 1 hour and 1 day per stream (count, sum, min, max, last), kept exact by
-- recomputing the buckets that new readings touched, late or backfilled ones included.
-- The portable path: plain tables on PostgreSQL and TimescaleDB's Apache edition alike.
CREATE TABLE rollup_1m (
    stream_id  integer NOT NULL,
    bucket     timestamptz NOT NULL,    -- start of the minute, UTC
    n          bigint NOT NULL,
    total      double precision NOT NULL,
    low        double precision NOT NULL,
    high       double precision NOT NULL,
    last_ts    timestamptz NOT NULL,
    last_value double precision NOT NULL,
    PRIMARY KEY (stream_id, bucket)
);
CREATE TABLE rollup_1h (LIKE rollup_1m INCLUDING ALL);
CREATE TABLE rollup_1d (LIKE rollup_1m INCLUDING ALL);

-- Minutes written since the last refresh. Ingest adds them in the transaction that stores the
-- readings, so no stored reading can be missed by the rollups.
CREATE TABLE rollup_dirty (
    stream_id integer NOT NULL,
    bucket    timestamptz NOT NULL,
    PRIMARY KEY (stream_id, bucket)
);
