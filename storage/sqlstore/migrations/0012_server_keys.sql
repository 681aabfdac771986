-- Other servers' signing keys, as fetched from them (or a notary): one row
-- per key, with the signed response that carried it, so this server can
-- vouch for it as a notary.

CREATE TABLE server_keys (
    server_name    TEXT NOT NULL,
    key_id         TEXT NOT NULL,
    public_key     TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    expired_ts     BIGINT NOT NULL,
    fetched_ts     BIGINT NOT NULL,
    response       TEXT NOT NULL,
    PRIMARY KEY (server_name, key_id)
);
