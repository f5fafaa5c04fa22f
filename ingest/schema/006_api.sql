-- The planner API: bearer tokens by role, and an audit log of who did what.
--
-- A token is shown once when made; only its SHA-256 is kept. Tokens are 256-bit random strings,
-- so a fast hash is safe for them (a slow KDF is for passwords people choose).
CREATE TABLE api_tokens (
    token_id     integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text NOT NULL UNIQUE,
    role         text NOT NULL CHECK (role IN ('planner', 'operator', 'technician', 'admin')),
    secret_hash  bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);

-- Logins, acknowledgements, configuration changes and exports: append-only for the services.
CREATE TABLE audit_log (
    entry_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    actor    text NOT NULL,
    action   text NOT NULL,
    detail   jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_at_idx ON audit_log (at DESC);

-- The API reads what the query layer reads, checks tokens and writes the audit log.
CREATE OR REPLACE FUNCTION smartcity_apply_grants() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    can_create boolean := (SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user);
    name text;
BEGIN
    FOREACH name IN ARRAY ARRAY['smartcity_ingest', 'smartcity_dashboard', 'smartcity_planner',
                            'smartcity_api'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = name) THEN
            IF NOT can_create THEN
                RAISE NOTICE 'role % is missing and % may not create it', name, current_user;
                CONTINUE;
            END IF;
            EXECUTE format('CREATE ROLE %I NOLOGIN', name);
        END IF;
    END LOOP;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'smartcity_ingest') THEN
        GRANT USAGE ON SCHEMA public TO smartcity_ingest;
        GRANT SELECT, INSERT, UPDATE ON devices, streams, latest, alerts, detector_state,
            rollup_1m, rollup_1h, rollup_1d TO smartcity_ingest;
        GRANT SELECT, INSERT ON readings, rejections, alert_events TO smartcity_ingest;
        GRANT UPDATE (published_at) ON alert_events TO smartcity_ingest;
        GRANT SELECT, INSERT, UPDATE, DELETE ON rollup_dirty TO smartcity_ingest;  -- FOR UPDATE
        GRANT DELETE ON readings, rollup_1m, rollup_1h, rollup_1d TO smartcity_ingest;  -- retention
        GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO smartcity_ingest;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'smartcity_dashboard') THEN
        GRANT USAGE ON SCHEMA public TO smartcity_dashboard;
        GRANT SELECT ON devices, streams, readings, latest, rejections, alerts, alert_events,
            rollup_1m, rollup_1h, rollup_1d TO smartcity_dashboard;
        GRANT UPDATE (state, acknowledged_at, acknowledged_by, resolved_at, resolved_by)
            ON alerts TO smartcity_dashboard;
        GRANT INSERT ON alert_events, audit_log TO smartcity_dashboard;
        GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO smartcity_dashboard;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'smartcity_planner') THEN
        GRANT USAGE ON SCHEMA public TO smartcity_planner;
        GRANT SELECT ON planner_devices, planner_streams, planner_readings, planner_minutely,
            planner_hourly, planner_daily, planner_alerts TO smartcity_planner;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'smartcity_api') THEN
        GRANT USAGE ON SCHEMA public TO smartcity_api;
        GRANT SELECT ON devices, streams, readings, latest, alerts, rollup_1m, rollup_1h,
            rollup_1d, alert_events, api_tokens TO smartcity_api;
        GRANT UPDATE (last_used_at) ON api_tokens TO smartcity_api;
        GRANT INSERT ON audit_log TO smartcity_api;
        GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO smartcity_api;
    END IF;
END
$$;


SELECT smartcity_apply_grants();
