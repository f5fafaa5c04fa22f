-- The roles and what each may do, in one place. Unlike the numbered migrations, this file is
-- repeatable: `migrate` runs it after them whenever its checksum differs from the one recorded in
-- schema_repeatable, so a new grant is one line here. A DBA who creates the roles later runs
-- `SELECT smartcity_apply_grants()`.

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
        GRANT SELECT, UPDATE ON city_settings TO smartcity_ingest;  -- the zone of the days
        -- Detection's feed of committed batches, its partitions' owners and their leases.
        GRANT SELECT, INSERT, DELETE ON detection_feed TO smartcity_ingest;
        GRANT SELECT, INSERT, UPDATE, DELETE ON detection_partitions, detection_workers
            TO smartcity_ingest;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'smartcity_dashboard') THEN
        GRANT USAGE ON SCHEMA public TO smartcity_dashboard;
        GRANT SELECT ON devices, streams, readings, latest, rejections, alerts, alert_events,
            rollup_1m, rollup_1h, rollup_1d TO smartcity_dashboard;
        GRANT UPDATE (state, acknowledged_at, acknowledged_by, resolved_at, resolved_by)
            ON alerts TO smartcity_dashboard;
        GRANT INSERT ON alert_events, audit_log TO smartcity_dashboard;
        -- Accounts: check logins, record failures and lockouts, let admins manage users; the
        -- dashboard never reads a password, only its hash.
        GRANT SELECT, INSERT ON users TO smartcity_dashboard;
        GRANT UPDATE (role, password_hash, totp_secret, failed_logins, locked_until,
                      disabled_at, last_login_at, totp_last_step) ON users TO smartcity_dashboard;
        GRANT SELECT, INSERT, UPDATE, DELETE ON control_sessions TO smartcity_dashboard;
        GRANT SELECT, UPDATE (used_at) ON login_links TO smartcity_dashboard;
        GRANT SELECT ON audit_log, api_tokens TO smartcity_dashboard;
        GRANT SELECT ON detector_state TO smartcity_dashboard;  -- the bins' time-to-full
        GRANT SELECT ON city_settings, rollup_dirty TO smartcity_dashboard;  -- history answers
        GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO smartcity_dashboard;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'smartcity_planner') THEN
        GRANT USAGE ON SCHEMA public TO smartcity_planner;
        GRANT SELECT ON planner_devices, planner_streams, planner_readings, planner_minutely,
            planner_hourly, planner_daily, planner_alerts TO smartcity_planner;
        GRANT SELECT ON city_settings TO smartcity_planner;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'smartcity_api') THEN
        GRANT USAGE ON SCHEMA public TO smartcity_api;
        GRANT SELECT ON devices, streams, readings, latest, alerts, rollup_1m, rollup_1h,
            rollup_1d, alert_events, api_tokens TO smartcity_api;
        GRANT UPDATE (last_used_at) ON api_tokens TO smartcity_api;
        GRANT INSERT ON audit_log TO smartcity_api;
        GRANT SELECT ON city_settings, rollup_dirty TO smartcity_api;  -- history answers
        GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO smartcity_api;
    END IF;
END
$$;

SELECT smartcity_apply_grants();
