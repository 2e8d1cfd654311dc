-- The keys 0019 added, filled: userName is unique per directory by its key, and groups are
-- looked up by theirs. The email rows are written by unseat with the user (email_keys).
alter table scim_users alter column user_name_key set not null;
alter table scim_groups alter column display_name_key set not null;

drop index scim_users_user_name;
create unique index scim_users_user_name on scim_users (tenant_id, scope, user_name_key);

drop index scim_groups_display_name;
create index scim_groups_display_name on scim_groups (tenant_id, scope, display_name_key);

drop function if exists scim_user_email_rows;
