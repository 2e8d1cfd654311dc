-- How long a task waited while its integration was paused, added when the integration is
-- resumed: a task's age (which bounds its retries) leaves that time out, so a weekend's pause
-- does not fail everything it held. A re-drive starts the count again.
alter table tasks add column paused_for interval not null default interval '0';
