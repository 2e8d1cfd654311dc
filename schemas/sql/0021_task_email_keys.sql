-- A task's address as the Automation Log's filter compares it: folded by unseat (crate
-- unseat-domain, text::fold), the one comparison ignoring case everywhere, rather than by
-- PostgreSQL's lower(), whose answer depends on the database's collation. Written with every
-- new task. Tasks written before keep a null key, and the filter compares them by lower() as
-- before (tasks_email), so the upgrade rewrites no row of what may be a very large table.
alter table tasks add column user_email_key text;
create index tasks_email_key on tasks (tenant_id, user_email_key);
