-- Attempts since the task was last re-driven that the app answered "slow down" (HTTP 429,
-- Graph throttling codes). They do not spend the attempt budget: calling again sooner only
-- adds to what the app counts against the integration, so the runtime waits longer each time
-- and the task's age bounds them instead.
alter table tasks add column throttled_attempts integer not null default 0;
