-- Alerts with their lifecycle and history, and the detectors' checkpointed state.

CREATE TABLE alerts (
    alert_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id       integer NOT NULL REFERENCES streams ON DELETE CASCADE,
    device_id       text NOT NULL,
    site            text NOT NULL,
    kind            text NOT NULL,
    severity        text NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    state           text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'acknowledged', 'resolved')),
    message         text NOT NULL,
    score           double precision NOT NULL,
    value           double precision,
    started_at      timestamptz NOT NULL,          -- acquisition time of the reading that opened it
    opened_at       timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now(),
    occurrences     integer NOT NULL DEFAULT 1,    -- detections folded into this alert
    acknowledged_at timestamptz,
    acknowledged_by text,
    resolved_at     timestamptz,
    resolved_by     text
);
-- One alert per stream and kind until it is resolved: the deduplication, atomic across workers.
CREATE UNIQUE INDEX alerts_one_unresolved ON alerts (stream_id, kind) WHERE state <> 'resolved';
CREATE INDEX alerts_state_idx ON alerts (state, opened_at DESC);
CREATE INDEX alerts_site_idx ON alerts (site, opened_at DESC);
CREATE INDEX alerts_device_idx ON alerts (device_id, opened_at DESC);

-- Who did what to an alert and when; published_at is the MQTT outbox (null: not yet sent).
CREATE TABLE alert_events (
    event_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id     bigint NOT NULL REFERENCES alerts ON DELETE CASCADE,
    at           timestamptz NOT NULL DEFAULT now(),
    action       text NOT NULL CHECK (action IN ('opened', 'acknowledged', 'commented', 'resolved')),
    actor        text NOT NULL,                    -- 'detector' or the user's name
    comment      text NOT NULL DEFAULT '',
    published_at timestamptz
);
CREATE INDEX alert_events_alert_idx ON alert_events (alert_id, event_id);
CREATE INDEX alert_events_outbox_idx ON alert_events (event_id) WHERE published_at IS NULL;

-- Detector memory per stream, so a restart does not relearn from zero.
CREATE TABLE detector_state (
    stream_id integer PRIMARY KEY REFERENCES streams ON DELETE CASCADE,
    state     bytea NOT NULL,
    saved_at  timestamptz NOT NULL DEFAULT now()
);
