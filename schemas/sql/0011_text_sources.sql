-- The grants behind a desired state are read and written whole, only by the resolver (and the
-- console's explain, through it); nothing in SQL looks inside them. As jsonb, PostgreSQL parsed
-- them on every write and printed them on every read: for a large group's deletion, tens of
-- megabytes of JSON each way. As text they are copied. (Rewrites access_state once.)
alter table access_state alter column desired_sources type text using desired_sources::text;
alter table access_state alter column desired_sources set default '[]';
