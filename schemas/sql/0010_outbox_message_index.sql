-- Outbox rows are read by id (the relay claims the oldest pending ones); nothing looks one up
-- by its message id, and writers make each id anew. The unique index on message_id cost every
-- outbox row (one per directory change, one per connector task) an insert at a random place in
-- a B-tree, the most expensive kind.
alter table outbox drop constraint if exists outbox_message_id_key;
