-- Console sign-ins. The session cookie held the admin token itself: a copied cookie was the
-- token, good against the API for as long as the token lived. It now holds a random session
-- value, of which only the SHA-256 is kept here: the session ends at its expiry, at sign-out
-- and when its token is revoked (the row goes with it). The operator's sessions keep the hash
-- of the operator token they began with, so a new operator token ends them.
create table console_sessions (
    hash          bytea primary key,
    token_id      uuid references tokens (id) on delete cascade,
    operator_hash bytea,
    created_at    timestamptz not null default now(),
    expires_at    timestamptz not null,
    check ((token_id is null) <> (operator_hash is null))
);
create index console_sessions_token on console_sessions (token_id);
create index console_sessions_expiry on console_sessions (expires_at);
