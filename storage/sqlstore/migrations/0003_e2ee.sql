-- End-to-end encryption, server side: the keys clients publish, and when a
-- user's device list changed (for /sync's device_lists and /keys/changes).

CREATE TABLE device_keys (
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    key_json  TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

CREATE TABLE one_time_keys (
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    key_id    TEXT NOT NULL, -- algorithm:id
    algorithm TEXT NOT NULL,
    key_json  TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, key_id)
);
CREATE INDEX one_time_keys_alg ON one_time_keys (user_id, device_id, algorithm);

CREATE TABLE fallback_keys (
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id    TEXT NOT NULL,
    key_json  TEXT NOT NULL,
    used      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, device_id, algorithm)
);

-- master, self_signing, user_signing
CREATE TABLE cross_signing_keys (
    user_id  TEXT NOT NULL,
    key_type TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);

CREATE TABLE device_list_changes (
    user_id    TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    PRIMARY KEY (user_id, stream_pos)
);
CREATE INDEX device_list_changes_pos ON device_list_changes (stream_pos);
