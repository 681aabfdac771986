-- Device-list news for one local user only (the viewer): who stopped
-- sharing rooms with them (/sync's device_lists.left and /keys/changes'
-- left; left_rooms = 1), and changes only they may see (changed;
-- left_rooms = 0): their own user-signing key, their signature on
-- another user's master key.

CREATE TABLE device_list_viewer_changes (
    viewer     TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    left_rooms INTEGER NOT NULL,
    PRIMARY KEY (viewer, stream_pos, user_id)
);

CREATE INDEX device_list_viewer_changes_pos ON device_list_viewer_changes (stream_pos);
