-- Media of other servers fetched over federation, kept as local copies:
-- which local item holds another server's media ID.

CREATE TABLE remote_media (
    server_name TEXT NOT NULL,
    media_id    TEXT NOT NULL,
    local_id    TEXT NOT NULL,
    PRIMARY KEY (server_name, media_id)
);
