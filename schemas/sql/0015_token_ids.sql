-- Tokens can be revoked: each has an id to name it by in the admin API (the token itself is
-- shown once, and its hash never).
alter table tokens add column id uuid not null default gen_random_uuid();
create unique index tokens_id on tokens (id);
