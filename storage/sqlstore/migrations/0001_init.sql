-- machi schema, version 1. One text for SQLite and PostgreSQL.
-- Booleans are INTEGER 0/1; IDs and stream positions are assigned by machi.

CREATE TABLE users (
    user_id       TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL DEFAULT '',
    is_admin      INTEGER NOT NULL DEFAULT 0,
    deactivated   INTEGER NOT NULL DEFAULT 0,
    displayname   TEXT NOT NULL DEFAULT '',
    avatar_url    TEXT NOT NULL DEFAULT '',
    created_ts    BIGINT NOT NULL
);

-- One access token per device; the token is stored as its SHA-256.
CREATE TABLE devices (
    user_id      TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    display_name TEXT NOT NULL DEFAULT '',
    token_hash   TEXT NOT NULL UNIQUE,
    last_seen_ts BIGINT NOT NULL DEFAULT 0,
    last_seen_ip TEXT NOT NULL DEFAULT '',
    created_ts   BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

CREATE TABLE filters (
    user_id     TEXT NOT NULL,
    filter_id   BIGINT NOT NULL,
    filter_json TEXT NOT NULL,
    PRIMARY KEY (user_id, filter_id)
);

CREATE TABLE rooms (
    room_id      TEXT PRIMARY KEY,
    room_version TEXT NOT NULL,
    creator      TEXT NOT NULL,
    created_ts   BIGINT NOT NULL,
    latest       TEXT NOT NULL,   -- JSON array of forward extremities
    depth        BIGINT NOT NULL,
    state_group  BIGINT NOT NULL,
    published    INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE events (
    stream_pos  BIGINT PRIMARY KEY,
    event_id    TEXT NOT NULL UNIQUE,
    room_id     TEXT NOT NULL,
    type        TEXT NOT NULL,
    state_key   TEXT,
    sender      TEXT NOT NULL,
    depth       BIGINT NOT NULL,
    state_group BIGINT NOT NULL,  -- state before the event
    event_json  TEXT NOT NULL,
    redacted_by TEXT NOT NULL DEFAULT '',
    txn_device  TEXT NOT NULL DEFAULT '',
    txn_id      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX events_room_pos ON events (room_id, stream_pos);
CREATE UNIQUE INDEX events_txn ON events (sender, txn_device, txn_id) WHERE txn_id <> '';

-- State is stored as groups: a group is a delta on its prev_group, or whole
-- when prev_group is 0. chain_len bounds the walk to a whole group.
CREATE TABLE state_groups (
    group_id   BIGINT PRIMARY KEY,
    room_id    TEXT NOT NULL,
    prev_group BIGINT NOT NULL,
    chain_len  INTEGER NOT NULL
);
CREATE TABLE state_group_entries (
    group_id  BIGINT NOT NULL,
    type      TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id  TEXT NOT NULL,
    PRIMARY KEY (group_id, type, state_key)
);

-- Current state, kept in step with rooms.state_group for cheap reads.
CREATE TABLE current_state (
    room_id   TEXT NOT NULL,
    type      TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id  TEXT NOT NULL,
    PRIMARY KEY (room_id, type, state_key)
);

CREATE TABLE memberships (
    room_id    TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    membership TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    forgotten  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX memberships_user ON memberships (user_id);

CREATE TABLE room_aliases (
    alias   TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    creator TEXT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);

CREATE TABLE account_data (
    user_id    TEXT NOT NULL,
    room_id    TEXT NOT NULL,  -- '' for global
    type       TEXT NOT NULL,
    content    TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, type)
);
CREATE INDEX account_data_pos ON account_data (user_id, stream_pos);

CREATE TABLE receipts (
    room_id      TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    thread_id    TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    ts           BIGINT NOT NULL,
    stream_pos   BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id, receipt_type, thread_id)
);
CREATE INDEX receipts_pos ON receipts (stream_pos);

CREATE TABLE to_device (
    stream_pos BIGINT NOT NULL,
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    sender     TEXT NOT NULL,
    type       TEXT NOT NULL,
    content    TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, stream_pos)
);

CREATE TABLE media (
    media_id     TEXT PRIMARY KEY,
    content_type TEXT NOT NULL,
    size         BIGINT NOT NULL,
    filename     TEXT NOT NULL,
    sha256       TEXT NOT NULL,
    uploader     TEXT NOT NULL,
    created_ts   BIGINT NOT NULL
);

-- The highest stream position ever used, kept where rows that carried it
-- may be deleted (delivered to-device messages), so positions never go back.
CREATE TABLE stream_high (
    id  INTEGER PRIMARY KEY,
    pos BIGINT NOT NULL
);
