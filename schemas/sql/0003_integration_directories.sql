-- Integration directories (the IdLCM flow). Besides the tenant's workspace directory, each
-- integration may have its own SCIM endpoint; the users and groups an IdP provisions through
-- it live in that integration's own directory, told apart by `scope`: 'workspace', or the
-- integration's id (as text, the way jobs.scope names it). Existing rows are the workspace's.
-- userName is unique per tenant and scope: the same person may be provisioned to the
-- workspace and to an integration.

alter table scim_users add column scope text not null default 'workspace';
alter table scim_groups add column scope text not null default 'workspace';

drop index scim_users_user_name;
create unique index scim_users_user_name on scim_users (tenant_id, scope, lower(user_name));

drop index scim_groups_display_name;
create index scim_groups_display_name on scim_groups (tenant_id, scope, lower(display_name));

-- Paging in creation order within one directory.
create index scim_users_scope_created on scim_users (tenant_id, scope, created_at, id);
create index scim_groups_scope_created on scim_groups (tenant_id, scope, created_at, id);
