-- Request buckets need not survive a crash: after one, PostgreSQL empties an unlogged table and
-- every tenant's bucket starts full again, which costs at most one burst. In exchange a lease
-- writes no WAL, so its commit does not wait for the disk (crates/ingest/src/limit.rs).
alter table scim_rate_buckets set unlogged;
