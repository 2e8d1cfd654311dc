-- A retry parked in a delay queue comes back by the broker dead-lettering it, at most once: a
-- broker restart as it expires can drop it. resend_after is when a parked task should be back
-- at the latest; a connector sends a task still waiting past it again (apply::take_lost_parked).
alter table tasks add column resend_after timestamptz;
create index tasks_resend on tasks (resend_after) where resend_after is not null;
