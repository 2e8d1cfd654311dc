-- The resolver writes one task per decision; tasks_job_newest (tenant_id, job_id, created_at,
-- id) serves every lookup tasks_job (tenant_id, job_id) did, so the narrower one is only a cost.
drop index if exists tasks_job;

-- Desired states are rewritten in place by every decision: room on each page lets PostgreSQL
-- keep the new row version on the same page without touching the indexes (a HOT update).
alter table access_state set (fillfactor = 80);

-- Finished progress rows are purged after a retention window (the resolver's sweep).
create index resolver_progress_finished on resolver_progress (finished_at) where finished_at is not null;
