-- An operator may give one tenant a SCIM request rate of its own (a noisy tenant held lower, a
-- large one let higher) instead of the fleet's UNSEAT_SCIM_RATE_LIMIT / _BURST. Both or neither.
alter table tenants add column scim_rate_limit integer;
alter table tenants add column scim_rate_burst integer;
alter table tenants add constraint tenants_scim_rate check (
    (scim_rate_limit is null and scim_rate_burst is null)
    or (scim_rate_limit between 1 and 1000000 and scim_rate_burst between 1 and 1000000));
-- The rate and burst the tenant's last lease applied (its own or the fleet's), so one upsert
-- can refill and size each tenant's lease by its own rate.
alter table scim_rate_buckets add column rate double precision not null default 0;
alter table scim_rate_buckets add column burst double precision not null default 0;
