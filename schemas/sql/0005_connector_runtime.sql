-- Connector runtime: the app's own account id, remembered once a connector found or created
-- the account, so the next task for the same (integration, user) addresses it directly instead
-- of searching the whole app; and the re-drive trail of a task.

-- The app's id for the user's account (a Graph business-user id, a SCIM resource id). A hint,
-- not truth: a connector that finds it stale (404) looks the account up again and replaces it.
alter table access_state add column app_account_id text;

-- How often an admin re-drove a failed or dead-lettered task.
-- attempt_base: the attempts a task had when it was last re-driven; the attempt budget counts
-- from there, so a re-driven task gets a fresh budget while `attempts` keeps the whole history.
alter table tasks
    add column redriven integer not null default 0,
    add column attempt_base integer not null default 0,
    -- when it was last re-driven: the maximum task age counts from here (or created_at)
    add column redriven_at timestamptz;

-- Failed tasks of an integration, for `unseat admin` and the re-drive endpoint.
create index tasks_failed on tasks (tenant_id, integration_id, created_at) where status = 'failed';
