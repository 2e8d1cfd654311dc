-- A token may be given an end: past expires_at it is refused like a revoked one (null: it
-- lasts until revoked). Console sessions of an admin token end with it.
alter table tokens add column expires_at timestamptz;
