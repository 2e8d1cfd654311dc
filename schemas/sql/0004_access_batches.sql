-- The grants behind each desired state (a JSON list of {source, role, assets}), recorded with
-- every decision so that the next one can name what the user lost ("left team Admins").
alter table access_state add column desired_sources jsonb not null default '[]'::jsonb;

-- How far the resolver got through one directory change. A change naming many users (a deleted
-- group of 100,000 members) is resolved in batches, one transaction each; a redelivered message
-- resumes after the last committed batch, and a finished one is recognised as a duplicate even
-- when it left no job behind (it touched nobody's access).
create table resolver_progress (
    tenant_id    uuid not null,
    message_id   uuid not null,
    users_done   bigint not null default 0,
    finished_at  timestamptz,
    created_at   timestamptz not null default now(),
    primary key (tenant_id, message_id)
);
