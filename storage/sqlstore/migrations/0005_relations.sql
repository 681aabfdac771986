-- Relations between events (content."m.relates_to"): one row per child
-- event, written in the same transaction as the event and removed in the
-- same transaction as its redaction. origin_ts orders edits (the spec picks
-- the most recent m.replace by origin_server_ts, then event ID).

CREATE TABLE event_relations (
    event_id        TEXT PRIMARY KEY,
    room_id         TEXT NOT NULL,
    relates_to      TEXT NOT NULL,
    rel_type        TEXT NOT NULL,
    sender          TEXT NOT NULL,
    type            TEXT NOT NULL,
    aggregation_key TEXT NOT NULL DEFAULT '',
    origin_ts       BIGINT NOT NULL,
    stream_pos      BIGINT NOT NULL UNIQUE
);
CREATE INDEX event_relations_parent ON event_relations (relates_to, rel_type, stream_pos);
-- The thread list of a room.
CREATE INDEX event_relations_room ON event_relations (room_id, rel_type, stream_pos);
