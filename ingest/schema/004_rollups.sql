-- Rollups at 1 minute, 1 hour and 1 day per stream (count, sum, min, max, last), kept exact by
-- recomputing the minutes that new readings touched, late or backfilled ones included.
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

-- Minutes written since they were last rolled up. Ingest adds them in the transaction that
-- stores the readings (a batch touches one or two), so no stored reading can be missed.
CREATE TABLE rollup_dirty (
    bucket timestamptz PRIMARY KEY
);

-- Rolling up a minute reads every stream's readings of that minute: by time. TimescaleDB's
-- hypertable has a time index already; plain PostgreSQL gets a BRIN index, which costs the
-- time-ordered inserts almost nothing.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        CREATE INDEX readings_ts_brin ON readings USING brin (ts);
    END IF;
END
$$;
