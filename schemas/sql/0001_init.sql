-- unseat schema, version 1.
--
-- Every table carries tenant_id in its key: tenants never see each other (invariant 5).
-- Applied by `unseat migrate` and at start-up of every role, inside one transaction under an
-- advisory lock, and recorded in schema_migrations.

create table tenants (
    id          uuid primary key,
    name        text not null,
    created_at  timestamptz not null default now()
);

-- Bearer tokens. Only the SHA-256 of a token is stored.
--   kind 'scim'  : an IdP's SCIM client; scope_integration null = the workspace directory.
--   kind 'admin' : a console admin of the tenant, with a role.
create table tokens (
    hash               bytea primary key,
    tenant_id          uuid not null references tenants(id) on delete cascade,
    kind               text not null check (kind in ('scim', 'admin')),
    scope_integration  uuid,
    role               text check (role in ('owner', 'super_admin', 'admin', 'viewer')),
    label              text not null default '',
    created_at         timestamptz not null default now()
);
create index tokens_tenant on tokens (tenant_id);

-- The workspace directory, as the IdP provisioned it over SCIM.
create table scim_users (
    tenant_id     uuid not null references tenants(id) on delete cascade,
    id            uuid not null,
    user_name     text not null,
    external_id   text,
    active        boolean not null default true,
    email         text,
    resource      jsonb not null,
    version       bigint not null default 1,
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now(),
    primary key (tenant_id, id)
);
create unique index scim_users_user_name on scim_users (tenant_id, lower(user_name));

-- Teams. `resource` never holds the member list: members live in group_members so that adding
-- or removing one member never rewrites the group.
create table scim_groups (
    tenant_id     uuid not null references tenants(id) on delete cascade,
    id            uuid not null,
    display_name  text not null,
    external_id   text,
    resource      jsonb not null,
    version       bigint not null default 1,
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now(),
    primary key (tenant_id, id)
);
create index scim_groups_display_name on scim_groups (tenant_id, lower(display_name));

create table group_members (
    tenant_id  uuid not null,
    group_id   uuid not null,
    user_id    uuid not null,
    primary key (tenant_id, group_id, user_id),
    foreign key (tenant_id, group_id) references scim_groups (tenant_id, id) on delete cascade,
    foreign key (tenant_id, user_id) references scim_users (tenant_id, id) on delete cascade
);
create index group_members_user on group_members (tenant_id, user_id);

-- An external app connection. roles: the role ladder, highest first.
create table integrations (
    tenant_id     uuid not null references tenants(id) on delete cascade,
    id            uuid not null,
    name          text not null,
    app_kind      text not null,
    base_url      text not null,
    -- App-specific settings (for a business hub: business_id). Never holds secrets.
    settings      jsonb not null default '{}'::jsonb,
    -- The app credential; never returned by the API and never logged.
    credential    text not null default '',
    roles         text[] not null,
    default_role  text,
    needs_attention text,
    created_at    timestamptz not null default now(),
    primary key (tenant_id, id)
);

-- A share of an integration with a team (a SCIM group) or one user, carrying a role.
create table grants (
    tenant_id       uuid not null,
    id              uuid not null,
    integration_id  uuid not null,
    subject_kind    text not null check (subject_kind in ('team', 'user')),
    subject_id      uuid not null,
    role            text not null,
    created_at      timestamptz not null default now(),
    primary key (tenant_id, id),
    unique (tenant_id, integration_id, subject_kind, subject_id),
    foreign key (tenant_id, integration_id) references integrations (tenant_id, id) on delete cascade
);
create index grants_subject on grants (tenant_id, subject_kind, subject_id);

-- Desired state per (integration, user): what the app should hold, with a version that only
-- grows. applied_version is the last version a connector converged the app to.
create table access_state (
    tenant_id        uuid not null,
    integration_id   uuid not null,
    user_id          uuid not null,
    email            text not null,
    desired_role     text,
    desired_version  bigint not null,
    applied_version  bigint not null default 0,
    applied_role     text,
    updated_at       timestamptz not null default now(),
    primary key (tenant_id, integration_id, user_id),
    foreign key (tenant_id, integration_id) references integrations (tenant_id, id) on delete cascade
);
create index access_state_user on access_state (tenant_id, user_id);

-- Transactional outbox: written in the same transaction as the state it announces, published
-- by the relay with publisher confirms, then marked sent.
create table outbox (
    id           bigserial primary key,
    tenant_id    uuid not null,
    message_id   uuid not null unique,
    exchange     text not null,
    routing_key  text not null,
    payload      jsonb not null,
    created_at   timestamptz not null default now(),
    sent_at      timestamptz
);
create index outbox_pending on outbox (id) where sent_at is null;

-- Automation Log: one job per trigger, one task per (user, integration).
create table jobs (
    tenant_id       uuid not null references tenants(id) on delete cascade,
    id              uuid not null,
    -- 'workspace' or the integration id of an integration-scoped SCIM endpoint
    scope           text not null default 'workspace',
    trigger_method  text not null,
    trigger_path    text not null,
    user_agent      text not null default '',
    summary         text not null default '',
    received_at     timestamptz not null,
    created_at      timestamptz not null default now(),
    primary key (tenant_id, id)
);
create index jobs_newest on jobs (tenant_id, created_at desc, id desc);

create table tasks (
    tenant_id        uuid not null,
    id               uuid not null,
    job_id           uuid not null,
    integration_id   uuid not null,
    user_id          uuid not null,
    user_email       text not null,
    outcome          text not null check (outcome in ('remove', 'update', 'grant', 'keep')),
    from_role        text,
    to_role          text,
    reason           text not null,
    desired_version  bigint not null,
    status           text not null check (status in
                       ('queued', 'running', 'retrying', 'succeeded', 'kept', 'failed', 'superseded')),
    attempts         integer not null default 0,
    last_error       text,
    dead_lettered    boolean not null default false,
    created_at       timestamptz not null default now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    updated_at       timestamptz not null default now(),
    primary key (tenant_id, id),
    foreign key (tenant_id, job_id) references jobs (tenant_id, id) on delete cascade
);
create index tasks_job on tasks (tenant_id, job_id);
create index tasks_integration on tasks (tenant_id, integration_id, created_at desc);
create index tasks_user on tasks (tenant_id, user_id);

-- Progress events of a task, in order.
create table task_events (
    id           bigserial primary key,
    tenant_id    uuid not null,
    task_id      uuid not null,
    at           timestamptz not null default now(),
    kind         text not null,
    attempt      integer,
    status_code  integer,
    detail       text not null default ''
);
create index task_events_task on task_events (tenant_id, task_id, id);
