//! What the console's admin API reads and writes: tenants and their tokens, integrations,
//! grants (shares of an integration with a team or a user) and read-only views of the
//! workspace directory.
//!
//! Grant changes alter who has access, so they run in the caller's transaction
//! (`insert_grant`, `update_grant_role`, `delete_grant`): the caller writes the outbox row that
//! announces the change in the same transaction. So do asset changes (`insert_asset`,
//! `delete_asset`, which also strips the asset from every grant). The app credential of an
//! integration is written here but never read back: only the connector loads it.

use crate::tokens::hash;
use crate::{Result, Store, StoreError};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use tokio_postgres::Transaction;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize)]
pub struct Tenant {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
    /// The tenant's own SCIM request rate, when an operator set one instead of the fleet's.
    pub scim_rate_limit: Option<ScimRateLimit>,
}

/// A tenant's own SCIM request rate: requests per second on average, and the burst above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ScimRateLimit {
    pub per_second: i32,
    pub burst: i32,
}

impl ScimRateLimit {
    /// The largest rate or burst a tenant may be given.
    pub const MAX: i32 = 1_000_000;

    /// A rate and burst each from 1 to [`ScimRateLimit::MAX`], else what is wrong.
    pub fn new(per_second: i64, burst: i64) -> std::result::Result<Self, String> {
        let within = |value: i64, field: &str| {
            i32::try_from(value)
                .ok()
                .filter(|v| (1..=Self::MAX).contains(v))
                .ok_or_else(|| format!("{field} must be a whole number from 1 to {}", Self::MAX))
        };
        Ok(Self { per_second: within(per_second, "per_second")?, burst: within(burst, "burst")? })
    }
}

/// A stored token as the console lists it: never the token, never its hash.
#[derive(Debug, Clone, Serialize)]
pub struct TokenInfo {
    /// What the admin API names it by (to revoke it).
    pub id: Uuid,
    /// `scim` or `admin`.
    pub kind: String,
    /// For a SCIM token: the integration it is limited to; None means the workspace directory.
    /// For an integration owner's admin token: the integration it owns.
    pub scope_integration: Option<Uuid>,
    /// For an admin token: its role.
    pub role: Option<String>,
    pub label: String,
    pub created_at: DateTime<Utc>,
    /// When it stops working; None: when revoked.
    pub expires_at: Option<DateTime<Utc>>,
}

/// The columns [`token_info`] reads, in its order.
const TOKEN_COLS: &str = "id, kind, scope_integration, role, label, created_at, expires_at";

fn token_info(r: &tokio_postgres::Row) -> TokenInfo {
    TokenInfo {
        id: r.get(0),
        kind: r.get(1),
        scope_integration: r.get(2),
        role: r.get(3),
        label: r.get(4),
        created_at: r.get(5),
        expires_at: r.get(6),
    }
}

/// An integration to create. The caller has validated it (role ladder, settings).
#[derive(Debug, Clone)]
pub struct NewIntegration {
    pub name: String,
    pub app_kind: String,
    pub base_url: String,
    pub settings: serde_json::Value,
    /// The app credential as it may be stored (sealed by [`crate::credentials::Sealing`]);
    /// empty when none was given.
    pub credential: crate::credentials::StoredCredential,
    pub roles: Vec<String>,
    pub default_role: Option<String>,
    /// The asset-role ladder, highest first; empty when the app has no assets.
    pub asset_roles: Vec<String>,
    /// The assets grants may name.
    pub assets: Vec<Asset>,
}

/// An asset inside an app (an ad account, a page, a catalog) that grants can name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Asset {
    pub asset_id: String,
    pub kind: String,
    pub name: String,
}

/// An integration as admins see it: the credential is reduced to whether one is set.
#[derive(Debug, Clone, Serialize)]
pub struct Integration {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub app_kind: String,
    pub base_url: String,
    pub settings: serde_json::Value,
    pub has_credential: bool,
    pub roles: Vec<String>,
    pub default_role: Option<String>,
    pub asset_roles: Vec<String>,
    pub assets: Vec<Asset>,
    /// Set by a connector when the app refuses the credential or the configuration; an admin
    /// has to look.
    pub needs_attention: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Since when an admin has paused it (connectors call its app for none of its tasks).
    pub paused_at: Option<DateTime<Utc>>,
}

/// Who a grant is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantSubject {
    Team(Uuid),
    User(Uuid),
}

impl GrantSubject {
    pub fn kind(&self) -> &'static str {
        match self {
            GrantSubject::Team(_) => "team",
            GrantSubject::User(_) => "user",
        }
    }

    pub fn id(&self) -> Uuid {
        match self {
            GrantSubject::Team(id) | GrantSubject::User(id) => *id,
        }
    }

    fn from_row(kind: &str, id: Uuid) -> Self {
        if kind == "team" {
            GrantSubject::Team(id)
        } else {
            GrantSubject::User(id)
        }
    }
}

/// A grant with the name of its subject (a team's displayName or a user's userName; empty if
/// the subject has since left the directory).
#[derive(Debug, Clone)]
pub struct GrantRow {
    pub id: Uuid,
    pub integration_id: Uuid,
    pub subject: GrantSubject,
    pub subject_name: String,
    pub role: String,
    /// Asset id → asset role.
    pub assets: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
}

/// A team of the workspace directory with its member count.
#[derive(Debug, Clone)]
pub struct Team {
    pub id: Uuid,
    pub display_name: String,
    pub member_count: i64,
}

#[derive(Debug, Clone)]
pub struct TeamRef {
    pub id: Uuid,
    pub display_name: String,
}

/// A user of the workspace directory with the teams they are in.
#[derive(Debug, Clone)]
pub struct DirectoryUser {
    pub id: Uuid,
    pub user_name: String,
    pub email: Option<String>,
    pub active: bool,
    pub teams: Vec<TeamRef>,
}

const INTEGRATION_COLUMNS: &str =
    "id, tenant_id, name, app_kind, base_url, settings, credential <> '', roles, default_role,
                                   needs_attention, created_at, asset_roles, paused_at";

fn integration_from_row(r: &tokio_postgres::Row) -> Integration {
    Integration {
        id: r.get(0),
        tenant_id: r.get(1),
        name: r.get(2),
        app_kind: r.get(3),
        base_url: r.get(4),
        settings: r.get(5),
        has_credential: r.get(6),
        roles: r.get(7),
        default_role: r.get(8),
        needs_attention: r.get(9),
        created_at: r.get(10),
        asset_roles: r.get(11),
        paused_at: r.get(12),
        assets: Vec::new(),
    }
}

/// Fills in the assets of integrations (one query for all of them).
async fn with_assets<C: tokio_postgres::GenericClient>(
    client: &C,
    tenant_id: Uuid,
    integrations: &mut [Integration],
) -> Result<()> {
    if integrations.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = integrations.iter().map(|i| i.id).collect();
    let rows = client
        .query(
            "select integration_id, asset_id, kind, name from integration_assets
              where tenant_id = $1 and integration_id = any($2) order by asset_id",
            &[&tenant_id, &ids],
        )
        .await?;
    for r in rows {
        let id: Uuid = r.get(0);
        if let Some(i) = integrations.iter_mut().find(|i| i.id == id) {
            i.assets.push(Asset { asset_id: r.get(1), kind: r.get(2), name: r.get(3) });
        }
    }
    Ok(())
}

const GRANT_SELECT: &str = "select g.id, g.integration_id, g.subject_kind, g.subject_id,
        coalesce(case g.subject_kind when 'team' then sg.display_name else su.user_name end, ''),
        g.role, g.created_at, g.assets
   from grants g
   left join scim_groups sg on g.subject_kind = 'team' and sg.tenant_id = g.tenant_id and sg.id = g.subject_id
   left join scim_users su on g.subject_kind = 'user' and su.tenant_id = g.tenant_id and su.id = g.subject_id";

fn grant_from_row(r: &tokio_postgres::Row) -> GrantRow {
    let kind: String = r.get(2);
    GrantRow {
        id: r.get(0),
        integration_id: r.get(1),
        subject: GrantSubject::from_row(&kind, r.get(3)),
        subject_name: r.get(4),
        role: r.get(5),
        created_at: r.get(6),
        assets: serde_json::from_value(r.get(7)).unwrap_or_default(),
    }
}

impl Store {
    /// Creates a tenant with its first workspace SCIM token and owner admin token, all or
    /// nothing. Only the tokens' hashes are stored.
    pub async fn create_tenant(&self, name: &str, scim_token: &str, admin_token: &str) -> Result<Tenant> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let id = Uuid::new_v4();
        let row =
            tx.query_one("insert into tenants (id, name) values ($1, $2) returning created_at", &[&id, &name]).await?;
        tx.execute(
            "insert into tokens (hash, tenant_id, kind, label) values ($1, $2, 'scim', 'workspace directory')",
            &[&hash(scim_token), &id],
        )
        .await?;
        tx.execute(
            "insert into tokens (hash, tenant_id, kind, role, label) values ($1, $2, 'admin', 'owner', 'first owner')",
            &[&hash(admin_token), &id],
        )
        .await?;
        tx.commit().await?;
        Ok(Tenant { id, name: name.to_string(), created_at: row.get(0), scim_rate_limit: None })
    }

    pub async fn tenant(&self, tenant_id: Uuid) -> Result<Option<Tenant>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "select id, name, created_at, scim_rate_limit, scim_rate_burst from tenants where id = $1",
                &[&tenant_id],
            )
            .await?;
        Ok(row.map(|r| {
            let (per_second, burst): (Option<i32>, Option<i32>) = (r.get(3), r.get(4));
            let scim_rate_limit = per_second.zip(burst).map(|(per_second, burst)| ScimRateLimit { per_second, burst });
            Tenant { id: r.get(0), name: r.get(1), created_at: r.get(2), scim_rate_limit }
        }))
    }

    /// Gives the tenant a SCIM request rate of its own, or (None) the fleet's again; false when
    /// there is no such tenant. Every ingest process applies it from its next lease on.
    pub async fn set_scim_rate_limit(&self, tenant_id: Uuid, limit: Option<ScimRateLimit>) -> Result<bool> {
        let client = self.client().await?;
        let n = client
            .execute(
                "update tenants set scim_rate_limit = $2, scim_rate_burst = $3 where id = $1",
                &[&tenant_id, &limit.map(|l| l.per_second), &limit.map(|l| l.burst)],
            )
            .await?;
        Ok(n == 1)
    }

    /// The tenant's tokens, newest first (labels and scopes only).
    pub async fn tokens(&self, tenant_id: Uuid) -> Result<Vec<TokenInfo>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!("select {TOKEN_COLS} from tokens where tenant_id = $1 order by created_at desc, label"),
                &[&tenant_id],
            )
            .await?;
        Ok(rows.iter().map(token_info).collect())
    }

    /// The tenant's token with `id`.
    pub async fn token(&self, tenant_id: Uuid, id: Uuid) -> Result<Option<TokenInfo>> {
        let client = self.client().await?;
        let row = client
            .query_opt(&format!("select {TOKEN_COLS} from tokens where tenant_id = $1 and id = $2"), &[&tenant_id, &id])
            .await?;
        Ok(row.as_ref().map(token_info))
    }

    /// Revokes (deletes) the tenant's token with `id`; false when there was none. The
    /// revocation is announced on [`crate::TOKENS_REVOKED`] when it commits, so processes that
    /// cache tokens forget them at once.
    pub async fn revoke_token(&self, tenant_id: Uuid, id: Uuid) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let gone = tx.execute("delete from tokens where tenant_id = $1 and id = $2", &[&tenant_id, &id]).await? > 0;
        if gone {
            tx.execute("select pg_notify($1, '')", &[&crate::TOKENS_REVOKED]).await?;
        }
        tx.commit().await?;
        Ok(gone)
    }

    /// Deletes an integration and everything that exists only for it: its grants, assets,
    /// desired states, rate-limit schedule, its own directory (the IdLCM flow's users and
    /// groups) and the tokens scoped to it (its SCIM tokens, its owners' admin tokens; revoked
    /// as [`Self::revoke_token`] does). Its tasks stay in the log; those not finished, and the
    /// failed ones (which no re-drive could finish now), are marked superseded with an event
    /// saying why, so no connector acts on them and the failed list holds only what someone
    /// can still act on; the event names who deleted it (`by`). `None` when the tenant has no
    /// such integration.
    pub async fn delete_integration(&self, tenant_id: Uuid, id: Uuid, by: &str) -> Result<Option<DeletedIntegration>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(integration) = integration_for_update(&tx, tenant_id, id).await? else {
            return Ok(None);
        };
        let detail = format!("superseded: integration {} was deleted by {by}", integration.name);
        let tasks = tx
            .query_one(
                "with ended as (
                     update tasks set status = 'superseded', updated_at = clock_timestamp(),
                                      finished_at = coalesce(finished_at, clock_timestamp())
                      where tenant_id = $1 and integration_id = $2
                        and status in ('queued', 'running', 'retrying', 'failed')
                     returning id),
                 logged as (
                     insert into task_events (tenant_id, task_id, at, kind, detail)
                     select $1, id, clock_timestamp(), 'superseded', $3 from ended)
                 select count(*) from ended",
                &[&tenant_id, &id, &detail],
            )
            .await?
            .get::<_, i64>(0);
        let tokens = tx
            .execute("delete from tokens where tenant_id = $1 and scope_integration = $2", &[&tenant_id, &id])
            .await?;
        if tokens > 0 {
            tx.execute("select pg_notify($1, '')", &[&crate::TOKENS_REVOKED]).await?;
        }
        let scope = id.to_string();
        tx.execute("delete from scim_groups where tenant_id = $1 and scope = $2", &[&tenant_id, &scope]).await?;
        let directory_users =
            tx.execute("delete from scim_users where tenant_id = $1 and scope = $2", &[&tenant_id, &scope]).await?;
        let grants =
            tx.execute("delete from grants where tenant_id = $1 and integration_id = $2", &[&tenant_id, &id]).await?;
        tx.execute("delete from integrations where tenant_id = $1 and id = $2", &[&tenant_id, &id]).await?;
        tx.commit().await?;
        Ok(Some(DeletedIntegration { integration, grants, tokens, directory_users, tasks_superseded: tasks as u64 }))
    }

    pub async fn create_integration(&self, tenant_id: Uuid, new: &NewIntegration) -> Result<Integration> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let id = Uuid::new_v4();
        claim_integration_name(&tx, tenant_id, &new.name, id).await?;
        let row = tx
            .query_one(
                &format!(
                    "insert into integrations (tenant_id, id, name, app_kind, base_url, settings, credential, roles, default_role,
                                               asset_roles)
                     values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) returning {INTEGRATION_COLUMNS}"
                ),
                &[
                    &tenant_id,
                    &id,
                    &new.name,
                    &new.app_kind,
                    &new.base_url,
                    &new.settings,
                    &new.credential.as_str(),
                    &new.roles,
                    &new.default_role,
                    &new.asset_roles,
                ],
            )
            .await?;
        for a in &new.assets {
            tx.execute(
                "insert into integration_assets (tenant_id, integration_id, asset_id, kind, name) values ($1, $2, $3, $4, $5)",
                &[&tenant_id, &id, &a.asset_id, &a.kind, &a.name],
            )
            .await?;
        }
        claim_integration_app(&tx, tenant_id, id).await?;
        let mut integration = [integration_from_row(&row)];
        with_assets(&*tx, tenant_id, &mut integration).await?;
        tx.commit().await?;
        let [integration] = integration;
        Ok(integration)
    }

    /// The tenant's integrations, oldest first.
    pub async fn integrations(&self, tenant_id: Uuid) -> Result<Vec<Integration>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!("select {INTEGRATION_COLUMNS} from integrations where tenant_id = $1 order by created_at, id"),
                &[&tenant_id],
            )
            .await?;
        let mut integrations: Vec<Integration> = rows.iter().map(integration_from_row).collect();
        with_assets(&**client, tenant_id, &mut integrations).await?;
        Ok(integrations)
    }

    pub async fn integration(&self, tenant_id: Uuid, id: Uuid) -> Result<Option<Integration>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("select {INTEGRATION_COLUMNS} from integrations where tenant_id = $1 and id = $2"),
                &[&tenant_id, &id],
            )
            .await?;
        let mut found: Vec<Integration> = row.as_ref().map(integration_from_row).into_iter().collect();
        with_assets(&**client, tenant_id, &mut found).await?;
        Ok(found.pop())
    }

    /// The integration's grants, teams first, then by name.
    pub async fn grants(&self, tenant_id: Uuid, integration_id: Uuid) -> Result<Vec<GrantRow>> {
        let client = self.client().await?;
        integration_grants(&**client, tenant_id, integration_id).await
    }

    /// The workspace's teams by name (then id), at most `limit`, after the team `after` when
    /// given; `None` when `after` is no team of the workspace (deleted since, say). An
    /// integration's pushed groups are its own directory, not the workspace's teams.
    pub async fn teams(&self, tenant_id: Uuid, after: Option<Uuid>, limit: i64) -> Result<Option<Vec<Team>>> {
        let client = self.client().await?;
        // After a team: the teams that sort after it, by name then id (names need not be unique).
        let from = match after {
            None => None,
            Some(id) => {
                let row = client
                    .query_opt(
                        "select display_name_key from scim_groups where tenant_id = $1 and scope = 'workspace' and id = $2",
                        &[&tenant_id, &id],
                    )
                    .await?;
                match row {
                    Some(r) => Some((r.get::<_, String>(0), id)),
                    None => return Ok(None),
                }
            }
        };
        let (key, id) = from.unzip();
        let rows = client
            .query(
                "select g.id, g.display_name,
                        (select count(*) from group_members m where m.tenant_id = g.tenant_id and m.group_id = g.id)
                   from scim_groups g where g.tenant_id = $1 and g.scope = 'workspace'
                    and ($3::text is null or (g.display_name_key, g.id) > ($3, $4))
                  order by g.display_name_key, g.id limit $2",
                &[&tenant_id, &limit, &key, &id],
            )
            .await?;
        Ok(Some(
            rows.into_iter().map(|r| Team { id: r.get(0), display_name: r.get(1), member_count: r.get(2) }).collect(),
        ))
    }

    /// The workspace's users ordered by their userName's key (folded, unique per tenant), at
    /// most `limit`, after the userName `after` when given; `email_filter` keeps users whose email
    /// contains it, ignoring case as the directory does.
    pub async fn directory_users(
        &self,
        tenant_id: Uuid,
        email_filter: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<DirectoryUser>> {
        let client = self.client().await?;
        let pattern = email_filter.map(crate::directory::containing_pattern);
        let after = after.map(unseat_domain::text::fold);
        let rows = client
            .query(
                "select u.id, u.user_name, u.email, u.active,
                        coalesce(array_agg(g.id order by g.display_name_key, g.id) filter (where g.id is not null), '{}'),
                        coalesce(array_agg(g.display_name order by g.display_name_key, g.id) filter (where g.id is not null), '{}')
                   from scim_users u
                   left join group_members m on m.tenant_id = u.tenant_id and m.user_id = u.id
                   left join scim_groups g on g.tenant_id = m.tenant_id and g.id = m.group_id
                  where u.tenant_id = $1 and u.scope = 'workspace'
                    and ($2::text is null or coalesce(u.email, '') ~ $2)
                    and ($3::text is null or u.user_name_key > $3)
                  group by u.id, u.user_name, u.email, u.active, u.user_name_key
                  order by u.user_name_key limit $4",
                &[&tenant_id, &pattern, &after, &limit],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let ids: Vec<Uuid> = r.get(4);
                let names: Vec<String> = r.get(5);
                DirectoryUser {
                    id: r.get(0),
                    user_name: r.get(1),
                    email: r.get(2),
                    active: r.get(3),
                    teams: ids.into_iter().zip(names).map(|(id, display_name)| TeamRef { id, display_name }).collect(),
                }
            })
            .collect())
    }
}

/// The integration's grants, teams first, then by name (in the caller's transaction when it
/// holds the integration's lock, so that no grant changes meanwhile).
pub async fn integration_grants<C: tokio_postgres::GenericClient>(
    client: &C,
    tenant_id: Uuid,
    integration_id: Uuid,
) -> Result<Vec<GrantRow>> {
    let rows = client
        .query(
            &format!(
                "{GRANT_SELECT} where g.tenant_id = $1 and g.integration_id = $2
                 order by g.subject_kind, 5, g.id"
            ),
            &[&tenant_id, &integration_id],
        )
        .await?;
    Ok(rows.iter().map(grant_from_row).collect())
}

/// The integration, read in the caller's transaction with a share lock so that it cannot be
/// deleted while a grant on it is being written.
pub async fn integration_for_grant(tx: &Transaction<'_>, tenant_id: Uuid, id: Uuid) -> Result<Option<Integration>> {
    let row = tx
        .query_opt(
            &format!("select {INTEGRATION_COLUMNS} from integrations where tenant_id = $1 and id = $2 for share"),
            &[&tenant_id, &id],
        )
        .await?;
    let mut found: Vec<Integration> = row.as_ref().map(integration_from_row).into_iter().collect();
    with_assets(tx, tenant_id, &mut found).await?;
    Ok(found.pop())
}

/// The name of a grant subject in the tenant's directory (a team's displayName, a user's
/// userName); None when the directory has no such team or user.
pub async fn subject_name(tx: &Transaction<'_>, tenant_id: Uuid, subject: GrantSubject) -> Result<Option<String>> {
    let row = match subject {
        GrantSubject::Team(id) => {
            tx.query_opt(
                "select display_name from scim_groups where tenant_id = $1 and scope = 'workspace' and id = $2 for share",
                &[&tenant_id, &id],
            )
            .await?
        }
        GrantSubject::User(id) => {
            tx.query_opt(
                "select user_name from scim_users where tenant_id = $1 and scope = 'workspace' and id = $2 for share",
                &[&tenant_id, &id],
            )
            .await?
        }
    };
    Ok(row.map(|r| r.get(0)))
}

/// The users a grant reaches now: the team's current members, or the one user (if they are
/// still in the directory). Sorted, so that announcements are deterministic.
pub async fn reached_users(tx: &Transaction<'_>, tenant_id: Uuid, subject: GrantSubject) -> Result<Vec<Uuid>> {
    let rows = match subject {
        GrantSubject::Team(id) => {
            tx.query(
                "select user_id from group_members where tenant_id = $1 and group_id = $2 order by user_id",
                &[&tenant_id, &id],
            )
            .await?
        }
        GrantSubject::User(id) => {
            tx.query("select id from scim_users where tenant_id = $1 and id = $2", &[&tenant_id, &id]).await?
        }
    };
    Ok(rows.into_iter().map(|r| r.get(0)).collect())
}

/// Adds a grant. A second grant to the same subject on the same integration is a
/// [`StoreError::Conflict`]. The caller checked the role against the integration's ladder and
/// the subject against the directory.
pub async fn insert_grant(
    tx: &Transaction<'_>,
    tenant_id: Uuid,
    integration_id: Uuid,
    subject: GrantSubject,
    subject_name: &str,
    role: &str,
    assets: &BTreeMap<String, String>,
) -> Result<GrantRow> {
    let id = Uuid::new_v4();
    let assets_json = serde_json::to_value(assets).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let row = tx
        .query_opt(
            "insert into grants (tenant_id, id, integration_id, subject_kind, subject_id, role, assets)
             values ($1, $2, $3, $4, $5, $6, $7)
             on conflict (tenant_id, integration_id, subject_kind, subject_id) do nothing
             returning created_at",
            &[&tenant_id, &id, &integration_id, &subject.kind(), &subject.id(), &role, &assets_json],
        )
        .await?;
    let Some(row) = row else {
        return Err(StoreError::Conflict(format!(
            "the integration is already shared with this {}; change that grant's role instead",
            subject.kind()
        )));
    };
    Ok(GrantRow {
        id,
        integration_id,
        subject,
        subject_name: subject_name.to_string(),
        role: role.to_string(),
        assets: assets.clone(),
        created_at: row.get(0),
    })
}

/// The grant, locked for the rest of the caller's transaction.
pub async fn grant_for_update(
    tx: &Transaction<'_>,
    tenant_id: Uuid,
    integration_id: Uuid,
    grant_id: Uuid,
) -> Result<Option<GrantRow>> {
    let row = tx
        .query_opt(
            &format!("{GRANT_SELECT} where g.tenant_id = $1 and g.integration_id = $2 and g.id = $3 for update of g"),
            &[&tenant_id, &integration_id, &grant_id],
        )
        .await?;
    Ok(row.as_ref().map(grant_from_row))
}

/// Changes a grant's role; [`StoreError::NotFound`] when there is no such grant.
pub async fn update_grant_role(
    tx: &Transaction<'_>,
    tenant_id: Uuid,
    integration_id: Uuid,
    grant_id: Uuid,
    role: &str,
) -> Result<()> {
    let n = tx
        .execute(
            "update grants set role = $4 where tenant_id = $1 and integration_id = $2 and id = $3",
            &[&tenant_id, &integration_id, &grant_id, &role],
        )
        .await?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// Changes a grant's role and assets; [`StoreError::NotFound`] when there is no such grant.
pub async fn update_grant(
    tx: &Transaction<'_>,
    tenant_id: Uuid,
    integration_id: Uuid,
    grant_id: Uuid,
    role: &str,
    assets: &BTreeMap<String, String>,
) -> Result<()> {
    let assets = serde_json::to_value(assets).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let n = tx
        .execute(
            "update grants set role = $4, assets = $5 where tenant_id = $1 and integration_id = $2 and id = $3",
            &[&tenant_id, &integration_id, &grant_id, &role, &assets],
        )
        .await?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// Removes a grant; [`StoreError::NotFound`] when there is no such grant.
pub async fn delete_grant(tx: &Transaction<'_>, tenant_id: Uuid, integration_id: Uuid, grant_id: Uuid) -> Result<()> {
    let n = tx
        .execute(
            "delete from grants where tenant_id = $1 and integration_id = $2 and id = $3",
            &[&tenant_id, &integration_id, &grant_id],
        )
        .await?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// Where an integration's users get their access: console shares to teams and users (the
/// workspace flow) or the integration's own SCIM directory (the IdLCM flow). One integration
/// takes one of them, never both: the same person would otherwise be two users of one app
/// account, and one flow's removal would undo what the other still grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessSources {
    /// Grants on the integration exist.
    pub shares: usize,
    /// A SCIM token for the integration's own directory exists, or that directory holds users
    /// or groups.
    pub own_directory: bool,
}

/// What the integration's access comes from now (see [`AccessSources`]). The caller holds the
/// integration's lock, so this cannot change before its transaction ends.
pub async fn access_sources(tx: &Transaction<'_>, tenant_id: Uuid, integration_id: Uuid) -> Result<AccessSources> {
    let scope = integration_id.to_string();
    let row = tx
        .query_one(
            "select (select count(*) from grants where tenant_id = $1 and integration_id = $2),
                    exists(select 1 from tokens where tenant_id = $1 and kind = 'scim' and scope_integration = $2)
                    or exists(select 1 from scim_users where tenant_id = $1 and scope = $3)
                    or exists(select 1 from scim_groups where tenant_id = $1 and scope = $3)",
            &[&tenant_id, &integration_id, &scope],
        )
        .await?;
    Ok(AccessSources { shares: row.get::<_, i64>(0) as usize, own_directory: row.get(1) })
}

/// The integration, locked for the rest of the caller's transaction: asset changes take this
/// lock, grant changes a share lock ([`integration_for_grant`]), so a grant cannot name an
/// asset that is being removed.
pub async fn integration_for_update(tx: &Transaction<'_>, tenant_id: Uuid, id: Uuid) -> Result<Option<Integration>> {
    let row = tx
        .query_opt(
            &format!("select {INTEGRATION_COLUMNS} from integrations where tenant_id = $1 and id = $2 for update"),
            &[&tenant_id, &id],
        )
        .await?;
    let mut found: Vec<Integration> = row.as_ref().map(integration_from_row).into_iter().collect();
    with_assets(tx, tenant_id, &mut found).await?;
    Ok(found.pop())
}

/// Whether the integration's stored credential is an `env:`/`file:` reference (a secret of the
/// deployment, which only the operator gives), under the caller's lock of the row.
pub async fn credential_is_reference(tx: &Transaction<'_>, tenant_id: Uuid, id: Uuid) -> Result<bool> {
    let row = tx
        .query_opt(
            "select credential like 'env:%' or credential like 'file:%' from integrations
              where tenant_id = $1 and id = $2",
            &[&tenant_id, &id],
        )
        .await?;
    Ok(row.is_some_and(|r| r.get(0)))
}

/// Adds an asset to an integration; [`StoreError::Conflict`] when it already has one with that
/// id. The caller validated the asset and holds [`integration_for_update`]'s lock.
pub async fn insert_asset(tx: &Transaction<'_>, tenant_id: Uuid, integration_id: Uuid, asset: &Asset) -> Result<()> {
    let n = tx
        .execute(
            "insert into integration_assets (tenant_id, integration_id, asset_id, kind, name) values ($1, $2, $3, $4, $5)
             on conflict (tenant_id, integration_id, asset_id) do nothing",
            &[&tenant_id, &integration_id, &asset.asset_id, &asset.kind, &asset.name],
        )
        .await?;
    if n == 0 {
        return Err(StoreError::Conflict(format!("the integration already has an asset {:?}", asset.asset_id)));
    }
    Ok(())
}

/// Changes an asset's kind and name (its id is the app's and stays); [`StoreError::NotFound`]
/// when the integration has no such asset.
pub async fn update_asset(tx: &Transaction<'_>, tenant_id: Uuid, integration_id: Uuid, asset: &Asset) -> Result<()> {
    let n = tx
        .execute(
            "update integration_assets set kind = $4, name = $5
              where tenant_id = $1 and integration_id = $2 and asset_id = $3",
            &[&tenant_id, &integration_id, &asset.asset_id, &asset.kind, &asset.name],
        )
        .await?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// The integration's grants that name `asset_id`, locked for the rest of the caller's
/// transaction.
pub async fn grants_naming_asset(
    tx: &Transaction<'_>,
    tenant_id: Uuid,
    integration_id: Uuid,
    asset_id: &str,
) -> Result<Vec<GrantRow>> {
    let rows = tx
        .query(
            &format!(
                "{GRANT_SELECT} where g.tenant_id = $1 and g.integration_id = $2 and jsonb_exists(g.assets, $3)
                 order by g.subject_kind, 5, g.id for update of g"
            ),
            &[&tenant_id, &integration_id, &asset_id],
        )
        .await?;
    Ok(rows.iter().map(grant_from_row).collect())
}

/// Removes an asset from an integration and from every grant that names it, so that an asset
/// added again later under the same id gives nobody access by an old grant.
/// [`StoreError::NotFound`] when the integration has no such asset.
pub async fn delete_asset(tx: &Transaction<'_>, tenant_id: Uuid, integration_id: Uuid, asset_id: &str) -> Result<()> {
    let n = tx
        .execute(
            "delete from integration_assets where tenant_id = $1 and integration_id = $2 and asset_id = $3",
            &[&tenant_id, &integration_id, &asset_id],
        )
        .await?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    tx.execute(
        "update grants set assets = assets - $3::text
          where tenant_id = $1 and integration_id = $2 and jsonb_exists(assets, $3)",
        &[&tenant_id, &integration_id, &asset_id],
    )
    .await?;
    Ok(())
}

/// The users whose access an asset change may alter: everyone the given grants reach now, and
/// everyone the app is meant to hold on that asset (their desired state names it). Sorted and
/// without repeats, so that announcements are deterministic.
pub async fn users_of_asset(
    tx: &Transaction<'_>,
    tenant_id: Uuid,
    integration_id: Uuid,
    asset_id: &str,
    grants: &[GrantRow],
) -> Result<Vec<Uuid>> {
    let mut teams = Vec::new();
    let mut users = Vec::new();
    for g in grants {
        match g.subject {
            GrantSubject::Team(id) => teams.push(id),
            GrantSubject::User(id) => users.push(id),
        }
    }
    let rows = tx
        .query(
            "select user_id from group_members where tenant_id = $1 and group_id = any($3)
             union
             select id from scim_users where tenant_id = $1 and id = any($4)
             union
             select user_id from access_state
              where tenant_id = $1 and integration_id = $2 and jsonb_exists(desired_assets, $5)
             order by 1",
            &[&tenant_id, &integration_id, &teams, &users, &asset_id],
        )
        .await?;
    Ok(rows.into_iter().map(|r| r.get(0)).collect())
}

/// Replaces an integration's role ladder, asset-role ladder and default role. The caller
/// validated them and holds [`integration_for_update`]'s lock; grants keep the roles they name
/// (a role or asset role off the new ladder gives nothing) and the caller announces the users
/// of the integration ([`users_of_integration`]). [`StoreError::NotFound`] when there is no
/// such integration.
pub async fn update_ladders(
    tx: &Transaction<'_>,
    tenant_id: Uuid,
    integration_id: Uuid,
    roles: &[String],
    asset_roles: &[String],
    default_role: Option<&str>,
) -> Result<()> {
    let n = tx
        .execute(
            "update integrations set roles = $3, asset_roles = $4, default_role = $5 where tenant_id = $1 and id = $2",
            &[&tenant_id, &integration_id, &roles, &asset_roles, &default_role],
        )
        .await?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// Re-points the integration's grants from each old rung to its new spelling (`roles` and
/// `asset_roles`: (old, new) pairs), so that a ladder re-spelt (`Admin` to `ADMIN`) takes no
/// access away. Returns how many grants changed.
pub async fn respell_grants(
    tx: &Transaction<'_>,
    tenant_id: Uuid,
    integration_id: Uuid,
    roles: &[(String, String)],
    asset_roles: &[(String, String)],
) -> Result<u64> {
    if roles.is_empty() && asset_roles.is_empty() {
        return Ok(0);
    }
    let (old_roles, new_roles): (Vec<&str>, Vec<&str>) = roles.iter().map(|(o, n)| (o.as_str(), n.as_str())).unzip();
    let (old_assets, new_assets): (Vec<&str>, Vec<&str>) =
        asset_roles.iter().map(|(o, n)| (o.as_str(), n.as_str())).unzip();
    let n = tx
        .execute(
            "with r(old, new) as (select * from unnest($3::text[], $4::text[])),
                  a(old, new) as (select * from unnest($5::text[], $6::text[]))
             update grants g
                set role = coalesce((select r.new from r where r.old = g.role), g.role),
                    assets = (select coalesce(jsonb_object_agg(e.key,
                                  coalesce((select to_jsonb(a.new) from a where a.old = e.value), to_jsonb(e.value))),
                                  '{}'::jsonb)
                                from jsonb_each_text(g.assets) e)
              where g.tenant_id = $1 and g.integration_id = $2
                and (g.role = any($3) or exists (select 1 from jsonb_each_text(g.assets) e where e.value = any($5)))",
            &[&tenant_id, &integration_id, &old_roles, &new_roles, &old_assets, &new_assets],
        )
        .await?;
    Ok(n)
}

/// What deleting an integration took with it ([`Store::delete_integration`]).
#[derive(Debug)]
pub struct DeletedIntegration {
    /// The integration as it was.
    pub integration: Integration,
    pub grants: u64,
    pub tokens: u64,
    /// Users of its own directory.
    pub directory_users: u64,
    /// Its unfinished and failed tasks, now superseded.
    pub tasks_superseded: u64,
}

/// What a change of an integration's name and connection sets; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct Connection {
    pub name: Option<String>,
    pub base_url: Option<String>,
    pub settings: Option<serde_json::Value>,
    /// Sealed; empty for no credential.
    pub credential: Option<crate::credentials::StoredCredential>,
    /// Pause (true) or resume (false) the integration.
    pub paused: Option<bool>,
}

impl Connection {
    /// The fields this change sets, by name.
    pub fn changed(&self) -> Vec<&'static str> {
        [
            ("name", self.name.is_some()),
            ("base_url", self.base_url.is_some()),
            ("settings", self.settings.is_some()),
            ("credential", self.credential.is_some()),
            ("paused", self.paused.is_some()),
        ]
        .into_iter()
        .filter_map(|(field, set)| set.then_some(field))
        .collect()
    }
}

/// Makes sure no other integration of the tenant has `name` (compared without case, as people
/// read names in the log's filter and on pages), until the transaction ends: concurrent claims
/// of names in one tenant wait for each other. A conflict names the integration holding it.
pub async fn claim_integration_name(
    tx: &Transaction<'_>,
    tenant_id: Uuid,
    name: &str,
    integration_id: Uuid,
) -> Result<()> {
    tx.execute(
        "select pg_advisory_xact_lock(hashtextextended('integration names ' || $1::uuid::text, 0))",
        &[&tenant_id],
    )
    .await?;
    let holder = tx
        .query_opt(
            "select id, name from integrations where tenant_id = $1 and lower(name) = lower($2) and id <> $3 limit 1",
            &[&tenant_id, &name, &integration_id],
        )
        .await?;
    match holder {
        Some(row) => Err(StoreError::Conflict(format!(
            "integration {} is already named {:?}; give this one another name",
            row.get::<_, Uuid>(0),
            row.get::<_, String>(1)
        ))),
        None => Ok(()),
    }
}

/// Makes sure no other integration of the tenant calls the same app as `integration_id` (the
/// same kind, base URL ignoring case and a trailing slash, and business), until the transaction
/// ends; call it once the integration's row holds its new connection. Two such integrations
/// would each keep their own desired state of one app account and undo each other: a person
/// unassigned in one would be removed from the app while the other still grants them access.
/// A conflict names the integration holding the app.
pub async fn claim_integration_app(tx: &Transaction<'_>, tenant_id: Uuid, integration_id: Uuid) -> Result<()> {
    tx.execute(
        "select pg_advisory_xact_lock(hashtextextended('integration apps ' || $1::uuid::text, 0))",
        &[&tenant_id],
    )
    .await?;
    let holder = tx
        .query_opt(
            "select o.id, o.name from integrations me
               join integrations o on o.tenant_id = me.tenant_id and o.id <> me.id and o.app_kind = me.app_kind
                and lower(rtrim(o.base_url, '/')) = lower(rtrim(me.base_url, '/'))
                and btrim(coalesce(o.settings ->> 'business_id', '')) = btrim(coalesce(me.settings ->> 'business_id', ''))
              where me.tenant_id = $1 and me.id = $2
              limit 1",
            &[&tenant_id, &integration_id],
        )
        .await?;
    match holder {
        Some(row) => Err(StoreError::Conflict(format!(
            "integration {} ({:?}) already manages this app (the same base_url and business): two integrations \
             on one app would each undo the other's changes; change that one instead",
            row.get::<_, Uuid>(0),
            row.get::<_, String>(1)
        ))),
        None => Ok(()),
    }
}

/// Sets the fields of `change` that are given; returns since when the integration is paused
/// now. A new base URL or business is refused when another integration calls that app
/// ([`claim_integration_app`]). The caller validated them and holds
/// [`integration_for_update`]'s lock. A resume adds to each unfinished task the time it waited while paused, which its age leaves out. A new
/// base URL or business forgets the app's account ids remembered for the integration's users:
/// they name accounts of the app as it was (in another app or business they could name someone
/// else); connectors look each person up again.
pub async fn update_connection(
    tx: &Transaction<'_>,
    tenant_id: Uuid,
    integration_id: Uuid,
    change: &Connection,
) -> Result<Option<DateTime<Utc>>> {
    if let Some(name) = &change.name {
        claim_integration_name(tx, tenant_id, name, integration_id).await?;
    }
    let row = tx
        .query_opt(
            "with before as (
                 select paused_at, base_url, settings from integrations where tenant_id = $1 and id = $2),
             forgotten as (
                 update access_state a set app_account_id = null
                   from before b
                  where a.tenant_id = $1 and a.integration_id = $2 and a.app_account_id is not null
                    and (($4::text is not null and $4 <> b.base_url)
                         or ($5::jsonb is not null
                             and ($5::jsonb ->> 'business_id') is distinct from (b.settings ->> 'business_id')))),
             resumed as (
                 update tasks t
                    set paused_for = t.paused_for + (now() - greatest(b.paused_at, coalesce(t.redriven_at, t.created_at)))
                   from before b
                  where $7 = false and b.paused_at is not null
                    and t.tenant_id = $1 and t.integration_id = $2 and t.status in ('queued', 'running', 'retrying')
                    and coalesce(t.redriven_at, t.created_at) < now())
             update integrations set name = coalesce($3, name), base_url = coalesce($4, base_url),
                    settings = coalesce($5, settings), credential = coalesce($6, credential),
                    paused_at = case when $7::bool is null then paused_at
                                     when $7 then coalesce(paused_at, now()) end
              where tenant_id = $1 and id = $2
              returning paused_at",
            &[
                &tenant_id,
                &integration_id,
                &change.name,
                &change.base_url,
                &change.settings,
                &change.credential.as_ref().map(|c| c.as_str()),
                &change.paused,
            ],
        )
        .await?;
    let paused_at = row.map(|r| r.get(0)).ok_or(StoreError::NotFound)?;
    if change.base_url.is_some() || change.settings.is_some() {
        claim_integration_app(tx, tenant_id, integration_id).await?;
    }
    Ok(paused_at)
}

/// The users whose access on an integration depends on its configuration, by the directory
/// their access comes from: the resolver recomputes each in the scope of that directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntegrationUsers {
    /// Users of the workspace directory: everyone a grant on the integration reaches (a team's
    /// members, an individual grant's user) and everyone with a desired state on it. A user
    /// gone from every directory is counted here (the workspace flow then removes what they
    /// still hold).
    pub workspace: Vec<Uuid>,
    /// Users of the integration's own directory (the IdLCM flow), whose assignments are its
    /// grants.
    pub own_directory: Vec<Uuid>,
}

/// Everyone whose access on the integration a change of its ladders may alter (see
/// [`IntegrationUsers`]). Sorted and without repeats, so that announcements are deterministic.
pub async fn users_of_integration(
    tx: &Transaction<'_>,
    tenant_id: Uuid,
    integration_id: Uuid,
) -> Result<IntegrationUsers> {
    let scope = integration_id.to_string();
    let rows = tx
        .query(
            "with reached as (
               select m.user_id from grants g
                 join group_members m on m.tenant_id = g.tenant_id and m.group_id = g.subject_id
                where g.tenant_id = $1 and g.integration_id = $2 and g.subject_kind = 'team'
               union
               select u.id from grants g
                 join scim_users u on u.tenant_id = g.tenant_id and u.id = g.subject_id
                where g.tenant_id = $1 and g.integration_id = $2 and g.subject_kind = 'user'
               union
               select user_id from access_state where tenant_id = $1 and integration_id = $2
               union
               select id from scim_users where tenant_id = $1 and scope = $3
             )
             select r.user_id, coalesce(u.scope = $3, false)
               from reached r left join scim_users u on u.tenant_id = $1 and u.id = r.user_id
              order by 1",
            &[&tenant_id, &integration_id, &scope],
        )
        .await?;
    let mut users = IntegrationUsers::default();
    for r in rows {
        if r.get(1) {
            users.own_directory.push(r.get(0));
        } else {
            users.workspace.push(r.get(0));
        }
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::fresh_database;

    /// A ladder change reaches: team members and individual grantees of the integration, users
    /// with a desired state on it (a grant gone since), and the users of its own directory;
    /// not users reached only by grants on another integration.
    #[tokio::test]
    async fn users_of_integration_are_every_grantee_holder_and_own_directory_user() {
        let (_url, store) = fresh_database().await.unwrap();
        let mut c = store.client().await.unwrap();
        let t = Uuid::new_v4();
        let (hub, other) = (Uuid::new_v4(), Uuid::new_v4());
        c.execute("insert into tenants (id, name) values ($1, 'T')", &[&t]).await.unwrap();
        for i in [hub, other] {
            c.execute(
                "insert into integrations (tenant_id, id, name, app_kind, base_url, roles, default_role)
                 values ($1, $2, 'i', 'business_hub', 'http://x', '{ADMIN,EMPLOYEE}', 'EMPLOYEE')",
                &[&t, &i],
            )
            .await
            .unwrap();
        }
        let mut ids: Vec<Uuid> = (0..6).map(|_| Uuid::new_v4()).collect();
        ids.sort();
        let [member, individual, holder, elsewhere, own, unrelated] = ids[..] else { unreachable!() };
        for (u, scope) in [
            (member, "workspace".to_string()),
            (individual, "workspace".to_string()),
            (holder, "workspace".to_string()),
            (elsewhere, "workspace".to_string()),
            (own, hub.to_string()),
            (unrelated, "workspace".to_string()),
        ] {
            c.execute(
                "insert into scim_users (tenant_id, id, user_name, user_name_key, resource, scope)
                 values ($1, $2, $3, $3, '{}', $4)",
                &[&t, &u, &u.to_string(), &scope],
            )
            .await
            .unwrap();
        }
        let (team, other_team) = (Uuid::new_v4(), Uuid::new_v4());
        for (g, members) in [(team, vec![member]), (other_team, vec![elsewhere])] {
            c.execute(
                "insert into scim_groups (tenant_id, id, display_name, display_name_key, resource)
                 values ($1, $2, $3, $3, '{}')",
                &[&t, &g, &g.to_string()],
            )
            .await
            .unwrap();
            for m in members {
                c.execute(
                    "insert into group_members (tenant_id, group_id, user_id) values ($1, $2, $3)",
                    &[&t, &g, &m],
                )
                .await
                .unwrap();
            }
        }
        for (integration, kind, subject) in
            [(hub, "team", team), (hub, "user", individual), (other, "team", other_team)]
        {
            c.execute(
                "insert into grants (tenant_id, id, integration_id, subject_kind, subject_id, role)
                 values ($1, $2, $3, $4, $5, 'ADMIN')",
                &[&t, &Uuid::new_v4(), &integration, &kind, &subject],
            )
            .await
            .unwrap();
        }
        c.execute(
            "insert into access_state (tenant_id, integration_id, user_id, email, desired_role, desired_version)
             values ($1, $2, $3, 'h@x.io', 'ADMIN', 1)",
            &[&t, &hub, &holder],
        )
        .await
        .unwrap();

        let tx = c.transaction().await.unwrap();
        let users = users_of_integration(&tx, t, hub).await.unwrap();
        assert_eq!(users, IntegrationUsers { workspace: vec![member, individual, holder], own_directory: vec![own] });
        assert_eq!(
            users_of_integration(&tx, t, other).await.unwrap(),
            IntegrationUsers { workspace: vec![elsewhere], own_directory: vec![] }
        );
        assert_eq!(users_of_integration(&tx, Uuid::new_v4(), hub).await.unwrap(), IntegrationUsers::default());

        update_ladders(&tx, t, hub, &["OWNER".into(), "ADMIN".into()], &["MANAGE".into()], Some("ADMIN"))
            .await
            .unwrap();
        let i = integration_for_update(&tx, t, hub).await.unwrap().unwrap();
        assert_eq!(
            (i.roles, i.asset_roles, i.default_role.as_deref()),
            (vec!["OWNER".to_string(), "ADMIN".to_string()], vec!["MANAGE".to_string()], Some("ADMIN"))
        );
        assert!(matches!(update_ladders(&tx, t, Uuid::new_v4(), &[], &[], None).await, Err(StoreError::NotFound)));
    }
}
