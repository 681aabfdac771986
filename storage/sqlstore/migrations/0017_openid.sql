-- OpenID tokens (/user/{userId}/openid/request_token): a user proves who
-- they are to a widget or an integration manager, which asks this server's
-- /openid/userinfo. Stored as the token's SHA-256, like access tokens.

CREATE TABLE openid_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    expires_ts BIGINT NOT NULL
);

CREATE INDEX openid_tokens_expiry ON openid_tokens (expires_ts);
