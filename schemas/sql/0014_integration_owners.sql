-- Integration owners: a person who owns one integration (a business hub) manages its shares
-- without administering the tenant. Their admin token has role 'integration_owner' and names
-- that integration in scope_integration; it reads the tenant like a viewer's. No other admin
-- token names an integration.
alter table tokens drop constraint tokens_role_check;
alter table tokens add constraint tokens_role_check
    check (role in ('owner', 'super_admin', 'admin', 'integration_owner', 'viewer'));
alter table tokens add constraint tokens_admin_scope
    check (kind <> 'admin' or (role = 'integration_owner') = (scope_integration is not null));
