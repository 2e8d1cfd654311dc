-- Assets inside an app (ad accounts, pages, catalogs of a business hub), with their own role
-- ladder per integration. Grants give asset roles; the desired state carries the assets the
-- grants give, and tasks record the assets before and after.
--
-- Asset maps are JSON objects from the app's asset id to an asset role, e.g.
-- {"act_1234": "ADVERTISE", "page_99": "ANALYZE"}.

-- The asset-role ladder, highest first; empty when the app has no assets.
alter table integrations add column asset_roles text[] not null default '{}';

-- The assets an integration knows, so grants can name them and admins can read their names.
create table integration_assets (
    tenant_id       uuid not null,
    integration_id  uuid not null,
    asset_id        text not null,
    kind            text not null,
    name            text not null default '',
    primary key (tenant_id, integration_id, asset_id),
    foreign key (tenant_id, integration_id) references integrations (tenant_id, id) on delete cascade
);

alter table grants add column assets jsonb not null default '{}'::jsonb;

alter table access_state
    add column desired_assets jsonb not null default '{}'::jsonb,
    add column applied_assets jsonb;

alter table tasks
    add column from_assets jsonb,
    add column to_assets jsonb;
