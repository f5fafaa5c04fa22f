-- Broker credentials issued by `smartcity devices`: when the current password was issued and,
-- once revoked, when (the device then cannot connect; its history stays).
ALTER TABLE devices
    ADD COLUMN credentials_at timestamptz,
    ADD COLUMN revoked_at     timestamptz;
