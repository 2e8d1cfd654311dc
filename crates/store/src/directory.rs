//! The workspace directory as the IdP provisioned it: SCIM users, groups (teams) and group
//! members, all keyed by tenant.
//!
//! Every function takes the caller's transaction, so a change and the outbox row announcing
//! it commit together. Rows are locked (`for no key update`) before a read-modify-write, so
//! concurrent PATCHes of one resource apply one after the other and none is lost; members are
//! added and removed row by row, never by rewriting the whole list.

use crate::{Result, StoreError};
use chrono::{DateTime, Utc};
use tokio_postgres::{Row, Transaction};
use uuid::Uuid;

/// Most rows a filter evaluated in memory may scan.
pub const MAX_SCAN: i64 = 20_000;

/// A stored SCIM user.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRecord {
    pub id: Uuid,
    pub user_name: String,
    pub external_id: Option<String>,
    pub active: bool,
    pub email: Option<String>,
    /// The SCIM representation without `id` and `meta`.
    pub resource: serde_json::Value,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The indexed fields and representation of a user, as written.
#[derive(Debug, Clone, Copy)]
pub struct UserFields<'a> {
    pub user_name: &'a str,
    pub external_id: Option<&'a str>,
    pub active: bool,
    pub email: Option<&'a str>,
    pub resource: &'a serde_json::Value,
}

/// A stored SCIM group, without its members.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupRecord {
    pub id: Uuid,
    pub display_name: String,
    pub external_id: Option<String>,
    /// The SCIM representation without `id`, `meta` and `members`.
    pub resource: serde_json::Value,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The fields and representation of a group, as written.
#[derive(Debug, Clone, Copy)]
pub struct GroupFields<'a> {
    pub display_name: &'a str,
    pub external_id: Option<&'a str>,
    pub resource: &'a serde_json::Value,
}

/// A member of a group, with what a summary line needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub user_id: Uuid,
    pub user_name: String,
    pub email: Option<String>,
}

const USER_COLS: &str = "id, user_name, external_id, active, email, resource, version, created_at, updated_at";
const GROUP_COLS: &str = "id, display_name, external_id, resource, version, created_at, updated_at";

fn user_row(r: &Row) -> UserRecord {
    UserRecord {
        id: r.get(0),
        user_name: r.get(1),
        external_id: r.get(2),
        active: r.get(3),
        email: r.get(4),
        resource: r.get(5),
        version: r.get(6),
        created_at: r.get(7),
        updated_at: r.get(8),
    }
}

fn group_row(r: &Row) -> GroupRecord {
    GroupRecord {
        id: r.get(0),
        display_name: r.get(1),
        external_id: r.get(2),
        resource: r.get(3),
        version: r.get(4),
        created_at: r.get(5),
        updated_at: r.get(6),
    }
}

/// Maps a unique violation on userName to [`StoreError::Conflict`].
fn user_conflict(e: tokio_postgres::Error, user_name: &str) -> StoreError {
    let e = StoreError::from(e);
    if e.is_unique_violation() {
        StoreError::Conflict(format!("userName {user_name:?} is already taken"))
    } else {
        e
    }
}

// ---- users ------------------------------------------------------------------------------

/// Creates a user. A userName already used in the tenant (compared case-insensitively)
/// gives [`StoreError::Conflict`].
pub async fn insert_user(tx: &Transaction<'_>, tenant_id: Uuid, id: Uuid, f: UserFields<'_>) -> Result<UserRecord> {
    let row = tx
        .query_one(
            &format!(
                "insert into scim_users (tenant_id, id, user_name, external_id, active, email, resource)
                 values ($1, $2, $3, $4, $5, $6, $7) returning {USER_COLS}"
            ),
            &[&tenant_id, &id, &f.user_name, &f.external_id, &f.active, &f.email, f.resource],
        )
        .await
        .map_err(|e| user_conflict(e, f.user_name))?;
    Ok(user_row(&row))
}

pub async fn get_user(tx: &Transaction<'_>, tenant_id: Uuid, id: Uuid) -> Result<Option<UserRecord>> {
    let row = tx
        .query_opt(&format!("select {USER_COLS} from scim_users where tenant_id = $1 and id = $2"), &[&tenant_id, &id])
        .await?;
    Ok(row.as_ref().map(user_row))
}

/// Reads a user and locks its row until the transaction ends.
pub async fn lock_user(tx: &Transaction<'_>, tenant_id: Uuid, id: Uuid) -> Result<Option<UserRecord>> {
    let row = tx
        .query_opt(
            &format!("select {USER_COLS} from scim_users where tenant_id = $1 and id = $2 for no key update"),
            &[&tenant_id, &id],
        )
        .await?;
    Ok(row.as_ref().map(user_row))
}

/// Replaces a user's fields and bumps its version.
pub async fn update_user(tx: &Transaction<'_>, tenant_id: Uuid, id: Uuid, f: UserFields<'_>) -> Result<UserRecord> {
    let row = tx
        .query_opt(
            &format!(
                "update scim_users set user_name = $3, external_id = $4, active = $5, email = $6, resource = $7,
                        version = version + 1, updated_at = now()
                 where tenant_id = $1 and id = $2 returning {USER_COLS}"
            ),
            &[&tenant_id, &id, &f.user_name, &f.external_id, &f.active, &f.email, f.resource],
        )
        .await
        .map_err(|e| user_conflict(e, f.user_name))?;
    row.as_ref().map(user_row).ok_or(StoreError::NotFound)
}

/// Deletes a user (and so its memberships); returns the ids of the groups it was in, whose
/// versions are bumped first (in id order, the order every writer locks groups in).
pub async fn delete_user(tx: &Transaction<'_>, tenant_id: Uuid, id: Uuid) -> Result<Option<Vec<Uuid>>> {
    let groups: Vec<Uuid> = tx
        .query(
            "update scim_groups g set version = version + 1, updated_at = now()
             where g.tenant_id = $1 and g.id in (
                 select group_id from group_members where tenant_id = $1 and user_id = $2 order by group_id)
             returning g.id",
            &[&tenant_id, &id],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let n = tx.execute("delete from scim_users where tenant_id = $1 and id = $2", &[&tenant_id, &id]).await?;
    Ok((n > 0).then_some(groups))
}

/// The user whose userName equals `user_name` ignoring case (an indexed lookup).
pub async fn user_by_user_name(tx: &Transaction<'_>, tenant_id: Uuid, user_name: &str) -> Result<Option<UserRecord>> {
    let row = tx
        .query_opt(
            &format!("select {USER_COLS} from scim_users where tenant_id = $1 and lower(user_name) = lower($2)"),
            &[&tenant_id, &user_name],
        )
        .await?;
    Ok(row.as_ref().map(user_row))
}

/// Users whose externalId equals `external_id` exactly.
pub async fn users_by_external_id(tx: &Transaction<'_>, tenant_id: Uuid, external_id: &str) -> Result<Vec<UserRecord>> {
    let rows = tx
        .query(
            &format!(
                "select {USER_COLS} from scim_users where tenant_id = $1 and external_id = $2 order by created_at, id"
            ),
            &[&tenant_id, &external_id],
        )
        .await?;
    Ok(rows.iter().map(user_row).collect())
}

/// A page of users in creation order, and the tenant's total.
pub async fn list_users(
    tx: &Transaction<'_>,
    tenant_id: Uuid,
    offset: i64,
    limit: i64,
) -> Result<(i64, Vec<UserRecord>)> {
    let total: i64 = tx.query_one("select count(*) from scim_users where tenant_id = $1", &[&tenant_id]).await?.get(0);
    let rows = tx
        .query(
            &format!(
                "select {USER_COLS} from scim_users where tenant_id = $1 order by created_at, id offset $2 limit $3"
            ),
            &[&tenant_id, &offset, &limit],
        )
        .await?;
    Ok((total, rows.iter().map(user_row).collect()))
}

/// Up to `limit` users in creation order, for filters evaluated in memory.
pub async fn scan_users(tx: &Transaction<'_>, tenant_id: Uuid, limit: i64) -> Result<Vec<UserRecord>> {
    let rows = tx
        .query(
            &format!("select {USER_COLS} from scim_users where tenant_id = $1 order by created_at, id limit $2"),
            &[&tenant_id, &limit],
        )
        .await?;
    Ok(rows.iter().map(user_row).collect())
}

/// Which of `ids` are users of the tenant, with their names.
pub async fn existing_users(tx: &Transaction<'_>, tenant_id: Uuid, ids: &[Uuid]) -> Result<Vec<Member>> {
    let rows = tx
        .query("select id, user_name, email from scim_users where tenant_id = $1 and id = any($2)", &[&tenant_id, &ids])
        .await?;
    Ok(rows.iter().map(|r| Member { user_id: r.get(0), user_name: r.get(1), email: r.get(2) }).collect())
}

// ---- groups -----------------------------------------------------------------------------

pub async fn insert_group(tx: &Transaction<'_>, tenant_id: Uuid, id: Uuid, f: GroupFields<'_>) -> Result<GroupRecord> {
    let row = tx
        .query_one(
            &format!(
                "insert into scim_groups (tenant_id, id, display_name, external_id, resource)
                 values ($1, $2, $3, $4, $5) returning {GROUP_COLS}"
            ),
            &[&tenant_id, &id, &f.display_name, &f.external_id, f.resource],
        )
        .await?;
    Ok(group_row(&row))
}

pub async fn get_group(tx: &Transaction<'_>, tenant_id: Uuid, id: Uuid) -> Result<Option<GroupRecord>> {
    let row = tx
        .query_opt(
            &format!("select {GROUP_COLS} from scim_groups where tenant_id = $1 and id = $2"),
            &[&tenant_id, &id],
        )
        .await?;
    Ok(row.as_ref().map(group_row))
}

/// Reads a group and locks its row until the transaction ends: writers of one group's
/// members queue here, so the version they bump counts every change.
pub async fn lock_group(tx: &Transaction<'_>, tenant_id: Uuid, id: Uuid) -> Result<Option<GroupRecord>> {
    let row = tx
        .query_opt(
            &format!("select {GROUP_COLS} from scim_groups where tenant_id = $1 and id = $2 for no key update"),
            &[&tenant_id, &id],
        )
        .await?;
    Ok(row.as_ref().map(group_row))
}

/// Replaces a group's fields and bumps its version.
pub async fn update_group(tx: &Transaction<'_>, tenant_id: Uuid, id: Uuid, f: GroupFields<'_>) -> Result<GroupRecord> {
    let row = tx
        .query_opt(
            &format!(
                "update scim_groups set display_name = $3, external_id = $4, resource = $5, version = version + 1, updated_at = now()
                 where tenant_id = $1 and id = $2 returning {GROUP_COLS}"
            ),
            &[&tenant_id, &id, &f.display_name, &f.external_id, f.resource],
        )
        .await?;
    row.as_ref().map(group_row).ok_or(StoreError::NotFound)
}

/// Bumps a group's version after its members changed.
pub async fn touch_group(tx: &Transaction<'_>, tenant_id: Uuid, id: Uuid) -> Result<GroupRecord> {
    let row = tx
        .query_opt(
            &format!(
                "update scim_groups set version = version + 1, updated_at = now()
                 where tenant_id = $1 and id = $2 returning {GROUP_COLS}"
            ),
            &[&tenant_id, &id],
        )
        .await?;
    row.as_ref().map(group_row).ok_or(StoreError::NotFound)
}

/// Deletes a group; returns the members it had, or `None` when there was no such group.
pub async fn delete_group(tx: &Transaction<'_>, tenant_id: Uuid, id: Uuid) -> Result<Option<Vec<Member>>> {
    if lock_group(tx, tenant_id, id).await?.is_none() {
        return Ok(None);
    }
    let members = group_members(tx, tenant_id, id).await?;
    tx.execute("delete from scim_groups where tenant_id = $1 and id = $2", &[&tenant_id, &id]).await?;
    Ok(Some(members))
}

/// Groups whose displayName equals `name` ignoring case (an indexed lookup).
pub async fn groups_by_display_name(tx: &Transaction<'_>, tenant_id: Uuid, name: &str) -> Result<Vec<GroupRecord>> {
    let rows = tx
        .query(
            &format!(
                "select {GROUP_COLS} from scim_groups where tenant_id = $1 and lower(display_name) = lower($2) order by created_at, id"
            ),
            &[&tenant_id, &name],
        )
        .await?;
    Ok(rows.iter().map(group_row).collect())
}

/// Groups whose externalId equals `external_id` exactly.
pub async fn groups_by_external_id(
    tx: &Transaction<'_>,
    tenant_id: Uuid,
    external_id: &str,
) -> Result<Vec<GroupRecord>> {
    let rows = tx
        .query(
            &format!("select {GROUP_COLS} from scim_groups where tenant_id = $1 and external_id = $2 order by created_at, id"),
            &[&tenant_id, &external_id],
        )
        .await?;
    Ok(rows.iter().map(group_row).collect())
}

/// A page of groups in creation order, and the tenant's total.
pub async fn list_groups(
    tx: &Transaction<'_>,
    tenant_id: Uuid,
    offset: i64,
    limit: i64,
) -> Result<(i64, Vec<GroupRecord>)> {
    let total: i64 = tx.query_one("select count(*) from scim_groups where tenant_id = $1", &[&tenant_id]).await?.get(0);
    let rows = tx
        .query(
            &format!(
                "select {GROUP_COLS} from scim_groups where tenant_id = $1 order by created_at, id offset $2 limit $3"
            ),
            &[&tenant_id, &offset, &limit],
        )
        .await?;
    Ok((total, rows.iter().map(group_row).collect()))
}

/// Up to `limit` groups in creation order, for filters evaluated in memory.
pub async fn scan_groups(tx: &Transaction<'_>, tenant_id: Uuid, limit: i64) -> Result<Vec<GroupRecord>> {
    let rows = tx
        .query(
            &format!("select {GROUP_COLS} from scim_groups where tenant_id = $1 order by created_at, id limit $2"),
            &[&tenant_id, &limit],
        )
        .await?;
    Ok(rows.iter().map(group_row).collect())
}

// ---- members ----------------------------------------------------------------------------

/// A group's members, ordered by userName.
pub async fn group_members(tx: &Transaction<'_>, tenant_id: Uuid, group_id: Uuid) -> Result<Vec<Member>> {
    let rows = tx
        .query(
            "select u.id, u.user_name, u.email from group_members m
             join scim_users u on u.tenant_id = m.tenant_id and u.id = m.user_id
             where m.tenant_id = $1 and m.group_id = $2 order by lower(u.user_name), u.id",
            &[&tenant_id, &group_id],
        )
        .await?;
    Ok(rows.iter().map(|r| Member { user_id: r.get(0), user_name: r.get(1), email: r.get(2) }).collect())
}

/// Members of several groups at once (for a page of groups): (group id, member).
pub async fn members_of_groups(
    tx: &Transaction<'_>,
    tenant_id: Uuid,
    group_ids: &[Uuid],
) -> Result<Vec<(Uuid, Member)>> {
    let rows = tx
        .query(
            "select m.group_id, u.id, u.user_name, u.email from group_members m
             join scim_users u on u.tenant_id = m.tenant_id and u.id = m.user_id
             where m.tenant_id = $1 and m.group_id = any($2) order by m.group_id, lower(u.user_name), u.id",
            &[&tenant_id, &group_ids],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), Member { user_id: r.get(1), user_name: r.get(2), email: r.get(3) })).collect())
}

/// Adds members; returns those that were not members before. Ids that are not users of the
/// tenant are skipped (check them first with [`existing_users`]).
pub async fn add_members(
    tx: &Transaction<'_>,
    tenant_id: Uuid,
    group_id: Uuid,
    user_ids: &[Uuid],
) -> Result<Vec<Uuid>> {
    if user_ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = tx
        .query(
            "insert into group_members (tenant_id, group_id, user_id)
             select $1, $2, u.id from scim_users u where u.tenant_id = $1 and u.id = any($3)
             on conflict do nothing returning user_id",
            &[&tenant_id, &group_id, &user_ids],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Removes members; returns those that were members.
pub async fn remove_members(
    tx: &Transaction<'_>,
    tenant_id: Uuid,
    group_id: Uuid,
    user_ids: &[Uuid],
) -> Result<Vec<Uuid>> {
    if user_ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = tx
        .query(
            "delete from group_members where tenant_id = $1 and group_id = $2 and user_id = any($3) returning user_id",
            &[&tenant_id, &group_id, &user_ids],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Makes the member list exactly `user_ids` by touching only the rows that differ; returns
/// (added, removed).
pub async fn replace_members(
    tx: &Transaction<'_>,
    tenant_id: Uuid,
    group_id: Uuid,
    user_ids: &[Uuid],
) -> Result<(Vec<Uuid>, Vec<Uuid>)> {
    let removed: Vec<Uuid> = tx
        .query(
            "delete from group_members where tenant_id = $1 and group_id = $2 and not (user_id = any($3)) returning user_id",
            &[&tenant_id, &group_id, &user_ids],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let added = add_members(tx, tenant_id, group_id, user_ids).await?;
    Ok((added, removed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::fresh_database;
    use serde_json::json;

    async fn tenant(store: &crate::Store) -> Uuid {
        let t = Uuid::new_v4();
        let c = store.client().await.unwrap();
        c.execute("insert into tenants (id, name) values ($1, 'T')", &[&t]).await.unwrap();
        t
    }

    fn fields<'a>(name: &'a str, res: &'a serde_json::Value) -> UserFields<'a> {
        UserFields { user_name: name, external_id: None, active: true, email: None, resource: res }
    }

    #[tokio::test]
    async fn user_name_unique_per_tenant_ignoring_case() {
        let (_url, store) = fresh_database().await.unwrap();
        let (t1, t2) = (tenant(&store).await, tenant(&store).await);
        let res = json!({});
        let mut c = store.client().await.unwrap();
        let tx = c.transaction().await.unwrap();
        insert_user(&tx, t1, Uuid::new_v4(), fields("Alice@x.io", &res)).await.unwrap();
        insert_user(&tx, t2, Uuid::new_v4(), fields("alice@x.io", &res)).await.unwrap();
        tx.commit().await.unwrap();
        let tx = c.transaction().await.unwrap();
        let err = insert_user(&tx, t1, Uuid::new_v4(), fields("ALICE@X.IO", &res)).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
        drop(tx);
        let tx = c.transaction().await.unwrap();
        let found = user_by_user_name(&tx, t1, "alice@X.io").await.unwrap().unwrap();
        assert_eq!(found.user_name, "Alice@x.io");
        assert_eq!(found.version, 1);
    }

    #[tokio::test]
    async fn members_change_by_diff_and_concurrent_removals_all_apply() {
        let (_url, store) = fresh_database().await.unwrap();
        let t = tenant(&store).await;
        let res = json!({});
        let g = Uuid::new_v4();
        let users: Vec<Uuid> = (0..6).map(|_| Uuid::new_v4()).collect();
        {
            let mut c = store.client().await.unwrap();
            let tx = c.transaction().await.unwrap();
            for (i, u) in users.iter().enumerate() {
                insert_user(&tx, t, *u, fields(&format!("u{i}"), &res)).await.unwrap();
            }
            insert_group(&tx, t, g, GroupFields { display_name: "G", external_id: None, resource: &res })
                .await
                .unwrap();
            assert_eq!(add_members(&tx, t, g, &users).await.unwrap().len(), 6);
            assert!(add_members(&tx, t, g, &users[..1]).await.unwrap().is_empty(), "already a member");
            assert!(add_members(&tx, t, g, &[Uuid::new_v4()]).await.unwrap().is_empty(), "not a user");
            tx.commit().await.unwrap();
        }
        // Six concurrent transactions each remove one member.
        let mut handles = Vec::new();
        for u in users.clone() {
            let store = store.clone();
            handles.push(tokio::spawn(async move {
                let mut c = store.client().await.unwrap();
                let tx = c.transaction().await.unwrap();
                lock_group(&tx, t, g).await.unwrap().unwrap();
                assert_eq!(remove_members(&tx, t, g, &[u]).await.unwrap(), vec![u]);
                touch_group(&tx, t, g).await.unwrap();
                tx.commit().await.unwrap();
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        let mut c = store.client().await.unwrap();
        let tx = c.transaction().await.unwrap();
        assert!(group_members(&tx, t, g).await.unwrap().is_empty());
        assert_eq!(get_group(&tx, t, g).await.unwrap().unwrap().version, 7);

        add_members(&tx, t, g, &users[..3]).await.unwrap();
        let (mut added, mut removed) = replace_members(&tx, t, g, &users[2..5]).await.unwrap();
        added.sort();
        removed.sort();
        let mut want_added = users[3..5].to_vec();
        want_added.sort();
        let mut want_removed = users[..2].to_vec();
        want_removed.sort();
        assert_eq!((added, removed), (want_added, want_removed));

        let groups = delete_user(&tx, t, users[2]).await.unwrap().unwrap();
        assert_eq!(groups, vec![g]);
        assert_eq!(group_members(&tx, t, g).await.unwrap().len(), 2);
        let gone = delete_group(&tx, t, g).await.unwrap().unwrap();
        assert_eq!(gone.len(), 2);
        assert!(delete_group(&tx, t, g).await.unwrap().is_none());
    }
}
