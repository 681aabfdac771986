-- Outliers are events known for the room state they carry (another
-- server's room at a join) but in no timeline. Backfilled history takes
-- positions below 0 too, in the timeline: the flag tells them apart.

ALTER TABLE events ADD COLUMN outlier INTEGER NOT NULL DEFAULT 0;
UPDATE events SET outlier = 1 WHERE stream_pos < 0;
CREATE INDEX events_room_timeline ON events (room_id, outlier, stream_pos);
