-- Connectors look up, before converging an app account, whether other users of the same
-- integration reach the same app address (ignoring case and surrounding spaces) with access.
create index access_state_address on access_state (tenant_id, integration_id, lower(btrim(email)));
