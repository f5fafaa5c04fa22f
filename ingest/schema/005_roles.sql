-- Least privilege: a group role per service, and planners reading only documented views.
-- Login users are made members of these (docs/schema.md). Roles belong to the whole server, so
-- they are created only when missing, and only by a migrating user allowed to create roles;
-- otherwise a DBA creates the roles and runs SELECT smartcity_apply_grants() to grant them.

CREATE VIEW planner_devices AS
    SELECT device_id, site, family, name, lat, lon, registered_at, last_seen, state
    FROM devices;
CREATE VIEW planner_streams AS
    SELECT s.stream_id, s.device_id, d.site, d.family, s.sensor, s.metric, s.unit
    FROM streams s JOIN devices d USING (device_id);
CREATE VIEW planner_readings AS
    SELECT r.ts, r.stream_id, r.value FROM readings r;
CREATE VIEW planner_minutely AS
    SELECT stream_id, bucket, n, total / n AS mean, low, high, last_value FROM rollup_1m;
CREATE VIEW planner_hourly AS
    SELECT stream_id, bucket, n, total / n AS mean, low, high, last_value FROM rollup_1h;
CREATE VIEW planner_daily AS
    SELECT stream_id, bucket, n, total / n AS mean, low, high, last_value FROM rollup_1d;
CREATE VIEW planner_alerts AS
    SELECT alert_id, stream_id, device_id, site, kind, severity, state, message, score,
           started_at, opened_at, acknowledged_at, resolved_at
    FROM alerts;

CREATE FUNCTION smartcity_apply_grants() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    can_create boolean := (SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user);
    name text;
BEGIN
    FOREACH name IN ARRAY ARRAY['smartcity_ingest', 'smartcity_dashboard', 'smartcity_planner'] LOOP
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
        GRANT INSERT ON alert_events TO smartcity_dashboard;
        GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO smartcity_dashboard;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'smartcity_planner') THEN
        GRANT USAGE ON SCHEMA public TO smartcity_planner;
        GRANT SELECT ON planner_devices, planner_streams, planner_readings, planner_minutely,
            planner_hourly, planner_daily, planner_alerts TO smartcity_planner;
    END IF;
END
$$;

SELECT smartcity_apply_grants();
