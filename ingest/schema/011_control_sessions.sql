-- Control-room sessions held on the server, so that logging out, disabling a user, changing
-- their role or an admin's "sign out everywhere" ends them at the next request (the signed
-- cookie only carries the session's random token; its SHA-256 is kept here). And the last TOTP
-- time step each user logged in with: a code is accepted once (RFC 6238, section 5.2).
CREATE TABLE control_sessions (
    session_hash bytea PRIMARY KEY,
    user_id      integer NOT NULL REFERENCES users ON DELETE CASCADE,
    role         text NOT NULL,                  -- the role it was opened with
    started_at   timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL,
    ended_at     timestamptz,
    ended_why    text
);
CREATE INDEX control_sessions_open_idx ON control_sessions (user_id) WHERE ended_at IS NULL;

ALTER TABLE users ADD COLUMN totp_last_step bigint;
