-- The city's time zone. History answers and the 1-day rollup count days as its local days
-- (23 or 25 hours across a daylight-saving change). Existing 1-day rollups were UTC days, so
-- the recorded zone starts as UTC; `smartcity migrate` and ingest's start-up then move the day
-- rollups to the configured city_timezone (ingest/schema/zone.py).
CREATE TABLE city_settings (
    only_row  boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    time_zone text NOT NULL
);
INSERT INTO city_settings (time_zone) VALUES ('UTC');

-- Everyone who reads history needs the zone, and which minutes are not rolled up yet (those
-- are answered from the raw readings).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'smartcity_ingest') THEN
        GRANT SELECT, UPDATE ON city_settings TO smartcity_ingest;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'smartcity_dashboard') THEN
        GRANT SELECT ON city_settings, rollup_dirty, rollup_1m, rollup_1h, rollup_1d
            TO smartcity_dashboard;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'smartcity_api') THEN
        GRANT SELECT ON city_settings, rollup_dirty TO smartcity_api;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'smartcity_planner') THEN
        GRANT SELECT ON city_settings TO smartcity_planner;
    END IF;
END
$$;
