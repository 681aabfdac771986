-- The city's policy: device classes, enrollment codes, suspension,
-- emergencies, exemptions, groups, broadcasts and the audit log.

ALTER TABLE users ADD COLUMN suspended INTEGER NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN device_class TEXT NOT NULL DEFAULT 'office';

-- One-time codes an admin issues to admit a mobile device; stored hashed.
CREATE TABLE enrollment_codes (
    code_id     TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    code_hash   TEXT NOT NULL UNIQUE,
    created_by  TEXT NOT NULL,
    created_ts  BIGINT NOT NULL,
    expires_ts  BIGINT NOT NULL,
    used_ts     BIGINT NOT NULL DEFAULT 0,
    used_device TEXT NOT NULL DEFAULT ''
);
CREATE INDEX enrollment_codes_user ON enrollment_codes (user_id);

CREATE TABLE audit_log (
    id        INTEGER PRIMARY KEY AUTOINCREMENT, -- only: sqlite
    id        BIGSERIAL PRIMARY KEY,             -- only: postgres
    ts        BIGINT NOT NULL,
    actor     TEXT NOT NULL,
    device_id TEXT NOT NULL,
    action    TEXT NOT NULL,
    rule      TEXT NOT NULL,
    target    TEXT NOT NULL,
    detail    TEXT NOT NULL
);
CREATE INDEX audit_log_ts ON audit_log (ts);

-- rooms is a JSON array of room IDs; [] means the whole server.
CREATE TABLE emergencies (
    id         TEXT PRIMARY KEY,
    rooms      TEXT NOT NULL,
    reason     TEXT NOT NULL,
    starts_ts  BIGINT NOT NULL,
    ends_ts    BIGINT NOT NULL,
    created_by TEXT NOT NULL
);

CREATE TABLE exemptions (
    user_id    TEXT PRIMARY KEY,
    reason     TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);

-- Named documents, e.g. the policy admins changed at run time.
CREATE TABLE settings (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_ts BIGINT NOT NULL
);

CREATE TABLE user_groups (
    user_id    TEXT NOT NULL,
    group_name TEXT NOT NULL,
    PRIMARY KEY (user_id, group_name)
);
CREATE INDEX user_groups_group ON user_groups (group_name);

-- Each user's server-notice room (one per user, made on the first notice).
CREATE TABLE notice_rooms (
    user_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL
);

CREATE TABLE broadcasts (
    id           TEXT PRIMARY KEY,
    sender       TEXT NOT NULL,
    target_group TEXT NOT NULL,
    body         TEXT NOT NULL,
    created_ts   BIGINT NOT NULL,
    recipients   INTEGER NOT NULL
);

CREATE TABLE broadcast_deliveries (
    broadcast_id TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    room_id      TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    stream_pos   BIGINT NOT NULL,
    PRIMARY KEY (broadcast_id, user_id)
);
