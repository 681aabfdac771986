-- Invites of local users to rooms on other servers that this server is
-- not in: the invite (signed by both servers) and the room's stripped
-- state the inviting server gave, for the invitee's /sync.

CREATE TABLE remote_invites (
    room_id      TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    sender       TEXT NOT NULL,
    room_version TEXT NOT NULL,
    event_json   TEXT NOT NULL,
    invite_state TEXT NOT NULL,
    created_ts   BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
