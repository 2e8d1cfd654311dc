-- An integration an admin paused: connectors call its app for none of its tasks, which wait
-- (parked in delay queues) until it is resumed. Null: running.
alter table integrations add column paused_at timestamptz;
