-- Devices, their sensor streams, raw readings, the latest value per stream, and rejections.

CREATE TABLE devices (
    device_id     text PRIMARY KEY,
    site          text NOT NULL,
    family        text NOT NULL CHECK (family IN ('traffic', 'air', 'waste')),
    name          text NOT NULL DEFAULT '',
    lat           double precision CHECK (lat BETWEEN -90 AND 90),
    lon           double precision CHECK (lon BETWEEN -180 AND 180),
    registered_at timestamptz NOT NULL DEFAULT now(),
    last_seen     timestamptz,           -- when ingest last accepted a message from it
    last_seq      bigint,                -- the sequence number of that message
    state         text CHECK (state IN ('online', 'offline')),
    state_at      timestamptz,           -- when ingest received the status message
    status        jsonb NOT NULL DEFAULT '{}'::jsonb  -- health fields from the status message
);

-- One row per (device, sensor, metric): readings refer to it by a 4-byte id.
CREATE TABLE streams (
    stream_id  integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id  text NOT NULL REFERENCES devices ON DELETE CASCADE,
    sensor     text NOT NULL,
    metric     text NOT NULL,
    unit       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (device_id, sensor, metric)
);

-- The primary key is the deduplication key: a redelivered reading is not stored twice.
-- No foreign key to streams: ingest resolves ids itself, and the check would cost every insert.
CREATE TABLE readings (
    ts        timestamptz NOT NULL,
    stream_id integer NOT NULL,
    value     double precision NOT NULL,
    PRIMARY KEY (stream_id, ts)
);

CREATE TABLE latest (
    stream_id integer PRIMARY KEY REFERENCES streams ON DELETE CASCADE,
    ts        timestamptz NOT NULL,
    value     double precision NOT NULL
);

-- Every refused message or reading, with the reason technicians look for.
CREATE TABLE rejections (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at   timestamptz NOT NULL DEFAULT now(),
    topic         text NOT NULL,
    device_id     text,                  -- from the topic; null when the topic itself was invalid
    reason        text NOT NULL,
    detail        text NOT NULL,
    reading_index integer,               -- null when the whole message was refused
    payload       text NOT NULL          -- the start of the payload, escaped, for diagnosis
);
CREATE INDEX rejections_device_idx ON rejections (device_id, received_at DESC);
CREATE INDEX rejections_reason_idx ON rejections (reason, received_at DESC);

-- A hypertable where TimescaleDB is present (chunk exclusion, drop_chunks); a plain table elsewhere.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        PERFORM create_hypertable('readings', 'ts', chunk_time_interval => INTERVAL '1 day');
    END IF;
END
$$;
