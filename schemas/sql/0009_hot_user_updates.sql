-- A (de)activation rewrites a user row but none of its indexed columns. With room left on each
-- page PostgreSQL can write the new version beside the old one (a HOT update) and touch no
-- index; a full page forces a new entry in every index of scim_users for every deactivation.
-- Applies to pages written from now on.
alter table scim_users set (fillfactor = 80);
alter table scim_groups set (fillfactor = 80);
