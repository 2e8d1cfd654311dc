-- The address an app was last converged at for a user (null while they are out of it). When
-- the IdP changes a person's email, an invitation the app sent to the old address is not
-- found under the new one; connectors withdraw it by this address.
alter table access_state add column applied_email text;
