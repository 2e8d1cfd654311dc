-- Connectors look up, before removing someone from an app, whether another user of the same
-- integration reaches the same app address (ignoring case) and still has access there.
create index access_state_address on access_state (tenant_id, integration_id, lower(email));
