-- Case-insensitive keys computed by unseat (unseat_domain::text::fold), no longer by
-- PostgreSQL's lower(), whose answer depends on the database's collation (under C it
-- lower-cases ASCII only, so "Émile" and "émile" were two users) and differs from the filter
-- evaluated in memory for a few letters (a final sigma, İ). A lookup now finds exactly what
-- the filter selects, on any database.
--
-- This migration adds the columns; unseat fills them, and recomputes every row of
-- scim_user_emails, right after it (crate unseat-store, migrate.rs); 0020 then makes them
-- required and indexes them. Once 0020 is applied, an ingest of an earlier version can no longer
-- create users or groups: upgrade every ingest process together.
alter table scim_users add column user_name_key text;
alter table scim_groups add column display_name_key text;
