-- Indexes behind the Automation Log and Activity pages: paging through one job's tasks (a job
-- may hold 10,000), the live-update probe (tasks changed recently), finding a user's tasks by
-- email, and an integration's recent retry and rate-limit events.
create index tasks_job_newest on tasks (tenant_id, job_id, created_at desc, id desc);
create index tasks_updated on tasks (tenant_id, updated_at);
create index tasks_email on tasks (tenant_id, lower(user_email));
create index task_events_recent on task_events (tenant_id, at);
