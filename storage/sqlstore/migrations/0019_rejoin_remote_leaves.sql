-- A room this server left and joined again through another server: the
-- stream position of that join, where the room's state here was replaced
-- by the state the other server gave (a timeline that starts before it
-- cannot be told with one state at its start).
ALTER TABLE rooms ADD COLUMN rejoined_pos BIGINT NOT NULL DEFAULT 0;

-- The leave that refused a local user's invite to a room on another
-- server (the leave that server took, or one this server signed alone),
-- for the timeline of /sync's leave section.
CREATE TABLE remote_leaves (
    room_id      TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    room_version TEXT NOT NULL,
    event_json   TEXT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
