-- A tenant's SCIM request rate is the tenant's, not each ingest process's: every process leases
-- request tokens from the tenant's bucket here, a few at a time (crates/ingest/src/limit.rs).
-- `granted` is what the last lease took, kept so the lease's one upsert can return it.
create table scim_rate_buckets (
    tenant_id uuid primary key references tenants (id) on delete cascade,
    tokens double precision not null,
    refilled_at timestamptz not null,
    granted double precision not null
);
