-- Notifications: the events whose push rule actions notify a user, one row
-- per user and event, written in batches right after the events commit
-- (clientapi/notify.go). They are what /sync's unread counts are rebuilt
-- from after a restart and what GET /notifications lists. thread_id is the thread root's event ID, or
-- 'main'. Pruned: rows read more than 30 days ago, and any older than 180
-- days (see PruneNotifications). The key is the only index: a message in a
-- room of 50 is 49 rows, on the one writer SQLite has; pruning, every few
-- hours, may scan. (A rowid table: its rows append in order, only the key's
-- pages scatter; WITHOUT ROWID measured slower.)

CREATE TABLE notifications (
    user_id    TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    room_id    TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    thread_id  TEXT NOT NULL,
    notify     BOOLEAN NOT NULL,
    highlight  BOOLEAN NOT NULL,
    actions    TEXT NOT NULL,
    ts         BIGINT NOT NULL,
    PRIMARY KEY (user_id, stream_pos)
);
