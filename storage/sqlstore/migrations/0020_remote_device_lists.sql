-- Other servers' users' device lists, kept while a local user shares a
-- room with them (joined or invited): filled from their server's
-- /user/devices, kept current by m.device_list_update and
-- m.signing_key_update, served to /keys/query. stream_id is the last
-- update applied; stale = 1 when an update showed a gap that a resync
-- has not closed yet (the list is served as it is meanwhile).

CREATE TABLE remote_device_lists (
    user_id          TEXT PRIMARY KEY,
    stream_id        BIGINT NOT NULL,
    master_key       TEXT NOT NULL DEFAULT '',
    self_signing_key TEXT NOT NULL DEFAULT '',
    stale            INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE remote_devices (
    user_id      TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    display_name TEXT NOT NULL DEFAULT '',
    key_json     TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (user_id, device_id)
);
