-- Per-integration request schedules shared by every connector replica. A connector leases a
-- few request slots at a time from its integration's row with one upsert (`next_free` moves
-- on by that many intervals), so all replicas together keep to the integration's limit; a
-- throttling answer lowers `rate` for every replica, and it climbs back when quiet.
create table rate_limit_schedules (
    tenant_id      uuid not null,
    integration_id uuid not null,
    -- requests per second the integration is configured for (setting or app-kind default)
    configured     double precision not null,
    -- requests per second used now: the configured rate, or lower after throttling
    rate           double precision not null,
    -- when the next request slot begins
    next_free      timestamptz not null,
    -- when the rate last changed (halved, or a recovery step)
    lowered_at     timestamptz not null,
    primary key (tenant_id, integration_id),
    foreign key (tenant_id, integration_id) references integrations (tenant_id, id) on delete cascade
);
