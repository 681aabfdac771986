-- What this server owes other servers: EDUs (and, with rooms across
-- servers, PDUs) in the order they were queued per destination. A row is
-- deleted only once the destination has acknowledged the transaction that
-- carried it, so a restart or an hour offline loses nothing.

CREATE TABLE federation_outbox (
    id          BIGINT NOT NULL PRIMARY KEY,
    destination TEXT NOT NULL,
    kind        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    created_ts  BIGINT NOT NULL
);
CREATE INDEX federation_outbox_destination ON federation_outbox (destination, id);
