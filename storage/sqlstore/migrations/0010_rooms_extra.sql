-- Reports of rooms and events (POST /rooms/{roomId}/report[/{eventId}]),
-- for the city's admins; and each event's origin_server_ts, for
-- /timestamp_to_event.

CREATE TABLE reports (
    id         INTEGER PRIMARY KEY AUTOINCREMENT, -- only: sqlite
    id         BIGSERIAL PRIMARY KEY,             -- only: postgres
    ts         BIGINT NOT NULL,
    reporter   TEXT NOT NULL,
    room_id    TEXT NOT NULL,
    event_id   TEXT NOT NULL,  -- '' for a report of the whole room
    reason     TEXT NOT NULL,
    event_json TEXT NOT NULL   -- the event as the reporter saw it, '' for a room
);
CREATE INDEX reports_room ON reports (room_id);

ALTER TABLE events ADD COLUMN origin_ts BIGINT NOT NULL DEFAULT 0;
UPDATE events SET origin_ts = COALESCE(CAST(json_extract(event_json, '$.origin_server_ts') AS INTEGER), 0); -- only: sqlite
UPDATE events SET origin_ts = COALESCE((event_json::json->>'origin_server_ts')::bigint, 0); -- only: postgres
CREATE INDEX events_room_ts ON events (room_id, origin_ts);
