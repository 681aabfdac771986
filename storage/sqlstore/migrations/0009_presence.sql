-- Presence a user set by hand (PUT /presence), kept so a restart does not
-- forget a status message. Whether someone is online is not stored: it is
-- known only while they are connected.

CREATE TABLE presence (
    user_id        TEXT PRIMARY KEY,
    presence       TEXT NOT NULL,
    status_msg     TEXT NOT NULL,
    last_active_ts BIGINT NOT NULL
);
