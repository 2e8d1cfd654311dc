//! The directories as the IdP provisioned them: SCIM users, groups and group members. A tenant
//! has its workspace directory (groups are teams) and, for each integration with its own SCIM
//! endpoint, that integration's directory; [`Dir`] names one, and every query is confined to it.
//!
//! Every function takes the caller's transaction, so a change and the outbox row announcing
//! it commit together. Rows are locked (`for no key update`) before a read-modify-write, so
//! concurrent PATCHes of one resource apply one after the other and none is lost; members are
//! added and removed row by row, never by rewriting the whole list, and a full member list is
//! applied as a set difference in SQL, so a group of 100,000 changes only the rows that differ.

use crate::{Client, Transaction};
use crate::{Result, StoreError};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;
use tokio_postgres::Row;
use unseat_domain::text::{fold, unfolded};
use uuid::Uuid;

/// One directory of a tenant: the workspace, or one integration's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dir {
    pub tenant_id: Uuid,
    /// None: the workspace directory.
    pub integration: Option<Uuid>,
}

impl Dir {
    pub fn workspace(tenant_id: Uuid) -> Self {
        Self { tenant_id, integration: None }
    }

    pub fn integration(tenant_id: Uuid, integration: Uuid) -> Self {
        Self { tenant_id, integration: Some(integration) }
    }

    /// The `scope` column's value (and `DirectoryChanged.scope`, `jobs.scope`): `workspace`
    /// or the integration's id.
    pub fn scope(&self) -> String {
        match self.integration {
            None => WORKSPACE.to_string(),
            Some(i) => i.to_string(),
        }
    }
}

/// The statement for `sql`, prepared once per connection: a query then costs one round trip
/// instead of two (parse, then execute).
async fn stmt(tx: &Transaction<'_>, sql: &str) -> Result<tokio_postgres::Statement> {
    Ok(tx.prepare_cached(sql).await?)
}

/// The scope of the workspace directory.
pub const WORKSPACE: &str = "workspace";

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

/// The reads users and groups share: the same queries on their own table and columns.
struct Kind<R> {
    /// `scim_users` or `scim_groups`.
    table: &'static str,
    cols: &'static str,
    row: fn(&Row) -> R,
}

const USERS: Kind<UserRecord> = Kind { table: "scim_users", cols: USER_COLS, row: user_row };
const GROUPS: Kind<GroupRecord> = Kind { table: "scim_groups", cols: GROUP_COLS, row: group_row };

impl<R> Kind<R> {
    /// The row with `id`; with `lock`, locked until the transaction ends (`for no key update`),
    /// so writers of one row queue there.
    async fn get(&self, tx: &Transaction<'_>, d: Dir, id: Uuid, lock: bool) -> Result<Option<R>> {
        let (cols, table) = (self.cols, self.table);
        let lock = if lock { " for no key update" } else { "" };
        let sql = format!("select {cols} from {table} where tenant_id = $1 and scope = $2 and id = $3{lock}");
        let row = tx.query_opt(&stmt(tx, &sql).await?, &[&d.tenant_id, &d.scope(), &id]).await?;
        Ok(row.as_ref().map(self.row))
    }

    async fn by_external_id(&self, tx: &Transaction<'_>, d: Dir, external_id: &str) -> Result<Vec<R>> {
        let (cols, table) = (self.cols, self.table);
        let sql = format!(
            "select {cols} from {table} where tenant_id = $1 and scope = $2 and external_id = $3 order by created_at, id"
        );
        let rows = tx.query(&stmt(tx, &sql).await?, &[&d.tenant_id, &d.scope(), &external_id]).await?;
        Ok(rows.iter().map(self.row).collect())
    }

    async fn page(&self, tx: &Transaction<'_>, d: Dir, offset: i64, limit: i64) -> Result<(i64, Vec<R>)> {
        let (cols, table) = (self.cols, self.table);
        let count = format!("select count(*) from {table} where tenant_id = $1 and scope = $2");
        let total: i64 = tx.query_one(&stmt(tx, &count).await?, &[&d.tenant_id, &d.scope()]).await?.get(0);
        // The page's ids first, from the index alone, then only their rows: an offset deep into
        // a large directory (an IdP's full import pages through all of it) skips index entries
        // instead of reading every skipped row.
        let sql = format!(
            "select {cols} from {table}
              where tenant_id = $1 and scope = $2
                and id = any(array(select id from {table} where tenant_id = $1 and scope = $2
                                    order by created_at, id offset $3 limit $4))
              order by created_at, id"
        );
        let rows = tx.query(&stmt(tx, &sql).await?, &[&d.tenant_id, &d.scope(), &offset, &limit]).await?;
        Ok((total, rows.iter().map(self.row).collect()))
    }

    /// The whole directory in creation order when it holds at most `max` rows, else `None`,
    /// found by counting index entries (up to one over `max`) before any row is read.
    async fn scan(&self, tx: &Transaction<'_>, d: Dir, max: i64) -> Result<Option<Vec<R>>> {
        let (cols, table) = (self.cols, self.table);
        let count =
            format!("select count(*) from (select 1 from {table} where tenant_id = $1 and scope = $2 limit $3) s");
        let over = max.saturating_add(1);
        let n: i64 = tx.query_one(&stmt(tx, &count).await?, &[&d.tenant_id, &d.scope(), &over]).await?.get(0);
        if n > max {
            return Ok(None);
        }
        let sql =
            format!("select {cols} from {table} where tenant_id = $1 and scope = $2 order by created_at, id limit $3");
        let rows = tx.query(&stmt(tx, &sql).await?, &[&d.tenant_id, &d.scope(), &max]).await?;
        Ok(Some(rows.iter().map(self.row).collect()))
    }

    /// The rows, in creation order, whose stored representation contains `text`, ignoring case
    /// as [`fold`] does, `within` a JSON string (a superset of those with an attribute that
    /// equals, starts with, ends with or contains `text`, searched in the database instead of
    /// loaded), when there are at most `max` (see [`Kind::bounded`]).
    async fn containing(
        &self,
        tx: &Transaction<'_>,
        d: Dir,
        text: &str,
        within: Within,
        max: i64,
    ) -> Result<Option<Vec<R>>> {
        // A regular expression costs PostgreSQL more to compile the longer it is (a second for
        // 20,000 letters): a longer text is searched by its first (or, for `ew`, last) letters
        // only, which finds a superset of what the whole would.
        let folded: Vec<char> = fold(text).chars().collect();
        let cut = folded.len().saturating_sub(MAX_SEARCH_CHARS);
        let (head, tail) = (&folded[..folded.len() - cut], &folded[cut..]);
        let pattern = match within {
            Within::Whole if cut == 0 => format!("\"{}\"", search_pattern(head)),
            Within::Whole | Within::Start => format!("\"{}", search_pattern(head)),
            Within::End => format!("{}\"", search_pattern(tail)),
            Within::Anywhere => search_pattern(head),
        };
        self.bounded(tx, d, "resource::text ~ $3", &[&pattern], max).await
    }

    /// The rows, in creation order, stamped in `range`, when there are at most `max`.
    async fn stamped(&self, tx: &Transaction<'_>, d: Dir, range: &StampRange, max: i64) -> Result<Option<Vec<R>>> {
        let at = range.stamp.column();
        let cond = format!("($3::timestamptz is null or {at} >= $3) and ($4::timestamptz is null or {at} < $4)");
        self.bounded(tx, d, &cond, &[&range.from, &range.until], max).await
    }

    /// The rows, in creation order, for which `cond` holds (its parameters `$3`… are `params`),
    /// when there are at most `max`, else `None`. The search finds their ids first, so that a
    /// search that finds too many reads none of their representations.
    async fn bounded(
        &self,
        tx: &Transaction<'_>,
        d: Dir,
        cond: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        max: i64,
    ) -> Result<Option<Vec<R>>> {
        let (cols, table) = (self.cols, self.table);
        let (scope, over) = (d.scope(), max.saturating_add(1));
        let limit = params.len() + 3;
        let sql = format!(
            "select id from {table} where tenant_id = $1 and scope = $2 and {cond} order by created_at, id limit ${limit}"
        );
        let mut args: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&d.tenant_id, &scope];
        args.extend_from_slice(params);
        args.push(&over);
        let ids: Vec<Uuid> = tx.query(&stmt(tx, &sql).await?, &args).await?.iter().map(|r| r.get(0)).collect();
        if ids.len() as i64 > max {
            return Ok(None);
        }
        if ids.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let sql = format!(
            "select {cols} from {table} where tenant_id = $1 and scope = $2 and id = any($3) order by created_at, id"
        );
        let rows = tx.query(&stmt(tx, &sql).await?, &[&d.tenant_id, &scope, &ids]).await?;
        Ok(Some(rows.iter().map(self.row).collect()))
    }
}

/// A resource's timestamp, rendered as `meta.created` or `meta.lastModified`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamp {
    Created,
    Modified,
}

/// The rows whose `stamp` is at or after `from` and before `until` (either open when `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StampRange {
    pub stamp: Stamp,
    pub from: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

impl Stamp {
    fn column(self) -> &'static str {
        match self {
            Stamp::Created => "created_at",
            Stamp::Modified => "updated_at",
        }
    }
}

/// Where in a JSON string a searched text stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Within {
    /// The whole string.
    Whole,
    /// Its start.
    Start,
    /// Its end.
    End,
    /// Anywhere in it.
    Anywhere,
}

/// `text` as it stands inside a JSON string in PostgreSQL's printing of a `jsonb`: quotes and
/// backslashes escaped, control characters as PostgreSQL writes them.
fn json_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// Most letters of a text [`Kind::containing`] searches for.
const MAX_SEARCH_CHARS: usize = 200;

/// A regular expression that matches every text containing `text` ignoring case as [`fold`]
/// does (of `text`, at most its first [`MAX_SEARCH_CHARS`] letters): for a search of a plain
/// column, such as the console's filter of users by email.
pub fn containing_pattern(text: &str) -> String {
    let folded: Vec<char> = fold(text).chars().take(MAX_SEARCH_CHARS).collect();
    pattern(&folded, false)
}

/// [`pattern`] for a text inside a JSON string, as PostgreSQL prints a `jsonb`.
fn search_pattern(folded: &[char]) -> String {
    pattern(folded, true)
}

/// A regular expression (PostgreSQL's, case-sensitive, so that it means the same under every
/// collation) that matches every text containing a text that folds ([`fold`]) to `folded`,
/// inside a JSON string when `json`: each letter written as a class of every character that
/// folds to it, and everything else escaped.
fn pattern(folded: &[char], json: bool) -> String {
    let mut out = String::with_capacity(folded.len() * 4);
    let mut i = 0;
    while let Some(&c) = folded.get(i) {
        i += 1;
        let dotted = c == 'i' && folded.get(i) == Some(&'\u{307}');
        if dotted {
            // `İ` folds to these two: it stands for both. At an end of the text it stands for
            // either one alone, which the classes below allow.
            i += 1;
            out.push_str("[iI\u{130}]\u{307}?");
            continue;
        }
        let mut class: Vec<char> = unfolded(c).to_vec();
        if matches!(c, 'i' | '\u{307}') {
            class.push('\u{130}');
        }
        if class.is_empty() {
            let literal = if json { json_escaped(c.encode_utf8(&mut [0; 4])) } else { c.to_string() };
            for e in literal.chars() {
                if e.is_ascii() && !e.is_ascii_alphanumeric() {
                    out.push('\\');
                }
                out.push(e);
            }
        } else {
            out.push('[');
            out.push(c);
            out.extend(class);
            out.push(']');
        }
    }
    out
}

/// `cols` (a column list) with every column qualified by `alias`.
fn qualified(cols: &str, alias: &str) -> String {
    cols.split(", ").map(|c| format!("{alias}.{c}")).collect::<Vec<_>>().join(", ")
}

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

/// Creates a user. A userName already used in the directory (compared case-insensitively)
/// gives [`StoreError::Conflict`].
pub async fn insert_user(tx: &Transaction<'_>, d: Dir, id: Uuid, f: UserFields<'_>) -> Result<UserRecord> {
    let row = tx
        .query_one(
            &stmt(
                tx,
                &format!(
                    "insert into scim_users (tenant_id, scope, id, user_name, external_id, active, email, resource,
                                         user_name_key)
                 values ($1, $2, $3, $4, $5, $6, $7, $8, $9) returning {USER_COLS}"
                ),
            )
            .await?,
            &[
                &d.tenant_id,
                &d.scope(),
                &id,
                &f.user_name,
                &f.external_id,
                &f.active,
                &f.email,
                f.resource,
                &fold(f.user_name),
            ],
        )
        .await
        .map_err(|e| user_conflict(e, f.user_name))?;
    write_emails(tx, d, id, f.resource).await?;
    Ok(user_row(&row))
}

/// Makes the user's rows in `scim_user_emails` those of `resource`'s `emails` (schemas/sql/0013,
/// 0019): the addresses no longer there go, the new ones come.
async fn write_emails(tx: &Transaction<'_>, d: Dir, id: Uuid, resource: &serde_json::Value) -> Result<()> {
    let sql = "with new as (select unnest($3::text[]) as email),
               gone as (
                   delete from scim_user_emails
                    where tenant_id = $1 and user_id = $2 and email not in (select email from new))
               insert into scim_user_emails (tenant_id, user_id, email)
               select $1, $2, email from new
               on conflict do nothing";
    tx.execute(&stmt(tx, sql).await?, &[&d.tenant_id, &id, &email_keys(resource)]).await?;
    Ok(())
}

/// Longest email key (in bytes) that has a row in `scim_user_emails`: a B-tree entry must stay
/// small. A lookup of a longer address searches the users' JSON instead.
pub const MAX_EMAIL_KEY: usize = 1024;

/// The rows `resource` gives in `scim_user_emails`: its `emails`' string values folded
/// ([`fold`]), each once, those of at most [`MAX_EMAIL_KEY`] bytes.
pub fn email_keys(resource: &serde_json::Value) -> Vec<String> {
    let mut keys: Vec<String> = resource
        .get("emails")
        .and_then(|e| e.as_array())
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("value")?.as_str())
        .map(fold)
        .filter(|k| k.len() <= MAX_EMAIL_KEY)
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

pub async fn get_user(tx: &Transaction<'_>, d: Dir, id: Uuid) -> Result<Option<UserRecord>> {
    USERS.get(tx, d, id, false).await
}

/// Reads a user and locks its row until the transaction ends.
pub async fn lock_user(tx: &Transaction<'_>, d: Dir, id: Uuid) -> Result<Option<UserRecord>> {
    USERS.get(tx, d, id, true).await
}

/// Replaces the fields of user `old` (as read, and locked, in this transaction) and bumps its
/// version. Its rows in `scim_user_emails` are rewritten when its `emails` changed.
pub async fn update_user(tx: &Transaction<'_>, d: Dir, old: &UserRecord, f: UserFields<'_>) -> Result<UserRecord> {
    let id = old.id;
    let row = tx
        .query_opt(
            &stmt(
                tx,
                &format!(
                    "update scim_users set user_name = $4, external_id = $5, active = $6, email = $7, resource = $8,
                        user_name_key = $9, version = version + 1, updated_at = now()
                 where tenant_id = $1 and scope = $2 and id = $3 returning {USER_COLS}"
                ),
            )
            .await?,
            &[
                &d.tenant_id,
                &d.scope(),
                &id,
                &f.user_name,
                &f.external_id,
                &f.active,
                &f.email,
                f.resource,
                &fold(f.user_name),
            ],
        )
        .await
        .map_err(|e| user_conflict(e, f.user_name))?;
    let user = row.as_ref().map(user_row).ok_or(StoreError::NotFound)?;
    // What email_keys reads.
    if old.resource.get("emails") != f.resource.get("emails") {
        write_emails(tx, d, id, f.resource).await?;
    }
    Ok(user)
}

/// The outbox row that announces a change made by a single statement: the message, whose
/// `trigger.summary` the statement fills in as `user <email or userName> <verb>`.
/// [`set_active_announced`]'s statement, built once.
static SET_ACTIVE_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "with i as (
             select * from unnest($1::uuid[], $2::text[], $3::uuid[], $4::bool[], $5::uuid[], $6::jsonb[], $7::text[],
                                  $8::int[]) as i(tenant_id, scope, id, active, message_id, payload, verb, n)),
         u as (
             update scim_users s set active = i.active,
                    resource = jsonb_set(s.resource, '{{active}}', to_jsonb(i.active)),
                    version = s.version + 1, updated_at = now()
               from i
              where s.tenant_id = i.tenant_id and s.scope = i.scope and s.id = i.id and s.active <> i.active
          returning i.n, i.message_id, i.payload, i.verb, s.tenant_id as owner, {}),
         o as (
             insert into outbox (tenant_id, message_id, exchange, routing_key, payload)
             select u.owner, u.message_id, $9, $10,
                    jsonb_set(u.payload, '{{trigger,summary}}',
                              to_jsonb('user ' || coalesce(u.email, u.user_name) || ' ' || u.verb))
               from u)
         select {USER_COLS}, n from u",
        qualified(USER_COLS, "s")
    )
});

/// One (de)activation for [`set_active_announced`]: the user, the value, and the outbox row
/// announcing it (its summary is completed with the user's name and `verb`).
pub struct ActiveChange<'a> {
    pub dir: Dir,
    pub id: Uuid,
    pub active: bool,
    pub message_id: Uuid,
    pub payload: &'a serde_json::Value,
    pub verb: &'a str,
}

/// The IdPs' (de)activations, any number of them, in one statement and one round trip outside
/// any explicit transaction: each sets `active` and writes the outbox row announcing it, and
/// the statement commits or fails as a whole. Concurrent requests are written together this
/// way, so a burst of deactivations costs the database one commit per batch instead of one per
/// user. Per change, in order: the stored user, or `None` when there is no such user in that
/// directory, it already had that value, or the same user came earlier in `changes` (the
/// caller then takes its general path, which sees the earlier change); nothing is written for
/// a `None`.
pub async fn set_active_announced(
    client: &Client,
    exchange: &str,
    routing_key: &str,
    changes: &[ActiveChange<'_>],
) -> Result<Vec<Option<UserRecord>>> {
    if changes.is_empty() {
        return Ok(Vec::new());
    }
    let stmt = client.prepare_cached(&SET_ACTIVE_SQL).await?;
    let tenants: Vec<Uuid> = changes.iter().map(|c| c.dir.tenant_id).collect();
    let scopes: Vec<String> = changes.iter().map(|c| c.dir.scope()).collect();
    let ids: Vec<Uuid> = changes.iter().map(|c| c.id).collect();
    let actives: Vec<bool> = changes.iter().map(|c| c.active).collect();
    let messages: Vec<Uuid> = changes.iter().map(|c| c.message_id).collect();
    let payloads: Vec<&serde_json::Value> = changes.iter().map(|c| c.payload).collect();
    let verbs: Vec<&str> = changes.iter().map(|c| c.verb).collect();
    let ns: Vec<i32> = (0..changes.len() as i32).collect();
    let rows = client
        .query(&stmt, &[&tenants, &scopes, &ids, &actives, &messages, &payloads, &verbs, &ns, &exchange, &routing_key])
        .await?;
    let mut out = vec![None; changes.len()];
    for r in &rows {
        let n: i32 = r.get(9);
        if let Some(slot) = usize::try_from(n).ok().and_then(|n| out.get_mut(n)) {
            *slot = Some(user_row(r));
        }
    }
    Ok(out)
}

/// Deletes a user (and so its memberships); returns the ids of the groups it was in, whose
/// versions are bumped first (in id order, the order every writer locks groups in).
pub async fn delete_user(tx: &Transaction<'_>, d: Dir, id: Uuid) -> Result<Option<Vec<Uuid>>> {
    let groups: Vec<Uuid> = tx
        .query(
            &stmt(
                tx,
                "update scim_groups g set version = version + 1, updated_at = now()
             where g.tenant_id = $1 and g.scope = $2 and g.id in (
                 select group_id from group_members where tenant_id = $1 and user_id = $3 order by group_id)
             returning g.id",
            )
            .await?,
            &[&d.tenant_id, &d.scope(), &id],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let n = tx
        .execute(
            &stmt(tx, "delete from scim_users where tenant_id = $1 and scope = $2 and id = $3").await?,
            &[&d.tenant_id, &d.scope(), &id],
        )
        .await?;
    if n > 0 {
        delete_grants_of(tx, d.tenant_id, "user", id).await?;
    }
    Ok((n > 0).then_some(groups))
}

/// The user whose userName equals `user_name` ignoring case (an indexed lookup).
pub async fn user_by_user_name(tx: &Transaction<'_>, d: Dir, user_name: &str) -> Result<Option<UserRecord>> {
    let row = tx
        .query_opt(
            &stmt(
                tx,
                &format!(
                    "select {USER_COLS} from scim_users where tenant_id = $1 and scope = $2 and user_name_key = $3"
                ),
            )
            .await?,
            &[&d.tenant_id, &d.scope(), &fold(user_name)],
        )
        .await?;
    Ok(row.as_ref().map(user_row))
}

/// Users with an email whose `value` is `email`, ignoring case, in creation order: the
/// candidates for Entra's `emails[type eq "work"].value eq "…"` lookup (the caller evaluates
/// the whole filter on them), when there are at most `max` (else `None`). Found through
/// `scim_user_emails`; an address too long to have rows there (schemas/sql/0013) through a
/// search of the users' JSON for it as a whole string.
pub async fn users_by_email(tx: &Transaction<'_>, d: Dir, email: &str, max: i64) -> Result<Option<Vec<UserRecord>>> {
    // An address folds to the key of every address equal to it ignoring case.
    let key = fold(email);
    if key.len() > MAX_EMAIL_KEY {
        return USERS.containing(tx, d, email, Within::Whole, max).await;
    }
    let sql = format!(
        "select {USER_COLS} from scim_users
          where tenant_id = $1 and scope = $2
            and id in (select user_id from scim_user_emails where tenant_id = $1 and email = $3)
          order by created_at, id limit $4"
    );
    let over = max.saturating_add(1);
    let rows = tx.query(&stmt(tx, &sql).await?, &[&d.tenant_id, &d.scope(), &key, &over]).await?;
    Ok((rows.len() as i64 <= max).then(|| rows.iter().map(user_row).collect()))
}

/// Users whose externalId equals `external_id` exactly.
pub async fn users_by_external_id(tx: &Transaction<'_>, d: Dir, external_id: &str) -> Result<Vec<UserRecord>> {
    USERS.by_external_id(tx, d, external_id).await
}

/// A page of users in creation order, and the directory's total.
pub async fn list_users(tx: &Transaction<'_>, d: Dir, offset: i64, limit: i64) -> Result<(i64, Vec<UserRecord>)> {
    USERS.page(tx, d, offset, limit).await
}

/// Every user of the directory in creation order, for a filter evaluated in memory, when there
/// are at most `max` (else `None`, without reading them).
pub async fn scan_users(tx: &Transaction<'_>, d: Dir, max: i64) -> Result<Option<Vec<UserRecord>>> {
    USERS.scan(tx, d, max).await
}

/// The users, in creation order, whose representation contains `text` ignoring case, `within` a
/// JSON string (the candidates for a filter that compares an attribute with it), when there are
/// at most `max` (else `None`, without reading them).
pub async fn users_containing(
    tx: &Transaction<'_>,
    d: Dir,
    text: &str,
    within: Within,
    max: i64,
) -> Result<Option<Vec<UserRecord>>> {
    USERS.containing(tx, d, text, within, max).await
}

/// The groups, in creation order, whose representation (without members) contains `text`
/// ignoring case, `within` a JSON string, when there are at most `max`.
pub async fn groups_containing(
    tx: &Transaction<'_>,
    d: Dir,
    text: &str,
    within: Within,
    max: i64,
) -> Result<Option<Vec<GroupRecord>>> {
    GROUPS.containing(tx, d, text, within, max).await
}

/// The users, in creation order, stamped in `range` (the candidates for a filter on
/// `meta.created` or `meta.lastModified`), when there are at most `max`.
pub async fn users_stamped(
    tx: &Transaction<'_>,
    d: Dir,
    range: &StampRange,
    max: i64,
) -> Result<Option<Vec<UserRecord>>> {
    USERS.stamped(tx, d, range, max).await
}

/// The groups, in creation order, stamped in `range`, when there are at most `max`.
pub async fn groups_stamped(
    tx: &Transaction<'_>,
    d: Dir,
    range: &StampRange,
    max: i64,
) -> Result<Option<Vec<GroupRecord>>> {
    GROUPS.stamped(tx, d, range, max).await
}

/// Which of `ids` are users of the directory, with their names.
pub async fn existing_users(tx: &Transaction<'_>, d: Dir, ids: &[Uuid]) -> Result<Vec<Member>> {
    let rows = tx
        .query(
            &stmt(
                tx,
                "select u.id, u.user_name, u.email from unnest($3::uuid[]) as i(id)
             join scim_users u on u.tenant_id = $1 and u.scope = $2 and u.id = i.id",
            )
            .await?,
            &[&d.tenant_id, &d.scope(), &ids],
        )
        .await?;
    Ok(rows.iter().map(|r| Member { user_id: r.get(0), user_name: r.get(1), email: r.get(2) }).collect())
}

// ---- groups -----------------------------------------------------------------------------

pub async fn insert_group(tx: &Transaction<'_>, d: Dir, id: Uuid, f: GroupFields<'_>) -> Result<GroupRecord> {
    let row = tx
        .query_one(
            &stmt(
                tx,
                &format!(
                    "insert into scim_groups (tenant_id, scope, id, display_name, external_id, resource, display_name_key)
                 values ($1, $2, $3, $4, $5, $6, $7) returning {GROUP_COLS}"
                ),
            )
            .await?,
            &[&d.tenant_id, &d.scope(), &id, &f.display_name, &f.external_id, f.resource, &fold(f.display_name)],
        )
        .await?;
    Ok(group_row(&row))
}

pub async fn get_group(tx: &Transaction<'_>, d: Dir, id: Uuid) -> Result<Option<GroupRecord>> {
    GROUPS.get(tx, d, id, false).await
}

/// Reads a group and locks its row until the transaction ends: writers of one group's
/// members queue here, so the version they bump counts every change.
pub async fn lock_group(tx: &Transaction<'_>, d: Dir, id: Uuid) -> Result<Option<GroupRecord>> {
    GROUPS.get(tx, d, id, true).await
}

/// Replaces a group's fields and bumps its version.
pub async fn update_group(tx: &Transaction<'_>, d: Dir, id: Uuid, f: GroupFields<'_>) -> Result<GroupRecord> {
    let row = tx
        .query_opt(
            &stmt(
                tx,
                &format!(
                    "update scim_groups set display_name = $4, external_id = $5, resource = $6, display_name_key = $7,
                        version = version + 1, updated_at = now()
                 where tenant_id = $1 and scope = $2 and id = $3 returning {GROUP_COLS}"
                ),
            )
            .await?,
            &[&d.tenant_id, &d.scope(), &id, &f.display_name, &f.external_id, f.resource, &fold(f.display_name)],
        )
        .await?;
    row.as_ref().map(group_row).ok_or(StoreError::NotFound)
}

/// Bumps a group's version after its members changed.
pub async fn touch_group(tx: &Transaction<'_>, d: Dir, id: Uuid) -> Result<GroupRecord> {
    let row = tx
        .query_opt(
            &stmt(
                tx,
                &format!(
                    "update scim_groups set version = version + 1, updated_at = now()
                 where tenant_id = $1 and scope = $2 and id = $3 returning {GROUP_COLS}"
                ),
            )
            .await?,
            &[&d.tenant_id, &d.scope(), &id],
        )
        .await?;
    row.as_ref().map(group_row).ok_or(StoreError::NotFound)
}

/// Deletes a group; returns the ids of the members it had, or `None` when there was no such
/// group.
pub async fn delete_group(tx: &Transaction<'_>, d: Dir, id: Uuid) -> Result<Option<Vec<Uuid>>> {
    if lock_group(tx, d, id).await?.is_none() {
        return Ok(None);
    }
    let members: Vec<Uuid> = tx
        .query(
            &stmt(tx, "delete from group_members where tenant_id = $1 and group_id = $2 returning user_id").await?,
            &[&d.tenant_id, &id],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    tx.execute(
        &stmt(tx, "delete from scim_groups where tenant_id = $1 and scope = $2 and id = $3").await?,
        &[&d.tenant_id, &d.scope(), &id],
    )
    .await?;
    delete_grants_of(tx, d.tenant_id, "team", id).await?;
    Ok(Some(members))
}

/// Deletes the grants (console shares) of a user or team the directory just deleted: SCIM ids
/// are never given again, so such a grant could never give anything and would stay listed
/// with no one behind it. Access is resolved without it either way.
async fn delete_grants_of(tx: &Transaction<'_>, tenant_id: Uuid, subject_kind: &str, id: Uuid) -> Result<()> {
    tx.execute(
        &stmt(tx, "delete from grants where tenant_id = $1 and subject_kind = $2 and subject_id = $3").await?,
        &[&tenant_id, &subject_kind, &id],
    )
    .await?;
    Ok(())
}

/// Groups whose displayName equals `name` ignoring case (an indexed lookup).
pub async fn groups_by_display_name(tx: &Transaction<'_>, d: Dir, name: &str) -> Result<Vec<GroupRecord>> {
    let rows = tx
        .query(
            &stmt(
                tx,
                &format!(
                    "select {GROUP_COLS} from scim_groups where tenant_id = $1 and scope = $2 and display_name_key = $3
                 order by created_at, id"
                ),
            )
            .await?,
            &[&d.tenant_id, &d.scope(), &fold(name)],
        )
        .await?;
    Ok(rows.iter().map(group_row).collect())
}

/// Groups whose externalId equals `external_id` exactly.
pub async fn groups_by_external_id(tx: &Transaction<'_>, d: Dir, external_id: &str) -> Result<Vec<GroupRecord>> {
    GROUPS.by_external_id(tx, d, external_id).await
}

/// A page of groups in creation order, and the directory's total.
pub async fn list_groups(tx: &Transaction<'_>, d: Dir, offset: i64, limit: i64) -> Result<(i64, Vec<GroupRecord>)> {
    GROUPS.page(tx, d, offset, limit).await
}

/// Every group of the directory (without members) in creation order, for a filter evaluated in
/// memory, when there are at most `max` (else `None`, without reading them).
pub async fn scan_groups(tx: &Transaction<'_>, d: Dir, max: i64) -> Result<Option<Vec<GroupRecord>>> {
    GROUPS.scan(tx, d, max).await
}

/// Groups that have `user_id` as a member, for filters on `members.value`.
pub async fn groups_with_member(tx: &Transaction<'_>, d: Dir, user_id: Uuid) -> Result<Vec<GroupRecord>> {
    let rows = tx
        .query(
            &stmt(tx, &format!(
                "select {GROUP_COLS} from scim_groups g
                 where g.tenant_id = $1 and g.scope = $2
                   and exists (select 1 from group_members m where m.tenant_id = $1 and m.group_id = g.id and m.user_id = $3)
                 order by created_at, id"
            )).await?,
            &[&d.tenant_id, &d.scope(), &user_id],
        )
        .await?;
    Ok(rows.iter().map(group_row).collect())
}

/// How many members `group_ids` have together.
pub async fn count_members(tx: &Transaction<'_>, d: Dir, group_ids: &[Uuid]) -> Result<i64> {
    let row = tx
        .query_one(
            &stmt(tx, "select count(*) from group_members where tenant_id = $1 and group_id = any($2)").await?,
            &[&d.tenant_id, &group_ids],
        )
        .await?;
    Ok(row.get(0))
}

// ---- members ----------------------------------------------------------------------------
//
// Member functions take a group the caller has already found (and locked) in its directory,
// and only ever add users of that same directory.

/// A group's members, ordered by userName.
pub async fn group_members(tx: &Transaction<'_>, d: Dir, group_id: Uuid) -> Result<Vec<Member>> {
    let rows = tx
        .query(
            &stmt(
                tx,
                "select u.id, u.user_name, u.email from group_members m
             join scim_users u on u.tenant_id = m.tenant_id and u.id = m.user_id
             where m.tenant_id = $1 and m.group_id = $2 order by u.user_name_key, u.id",
            )
            .await?,
            &[&d.tenant_id, &group_id],
        )
        .await?;
    Ok(rows.iter().map(|r| Member { user_id: r.get(0), user_name: r.get(1), email: r.get(2) }).collect())
}

/// A (group id, member) read: the member rows joined to their users.
const GROUP_MEMBERS_FROM: &str = "select m.group_id, u.id, u.user_name, u.email from group_members m
             join scim_users u on u.tenant_id = m.tenant_id and u.id = m.user_id";

fn group_member_row(r: &Row) -> (Uuid, Member) {
    (r.get(0), Member { user_id: r.get(1), user_name: r.get(2), email: r.get(3) })
}

/// Members of several groups at once (for a page of groups): (group id, member).
pub async fn members_of_groups(tx: &Transaction<'_>, d: Dir, group_ids: &[Uuid]) -> Result<Vec<(Uuid, Member)>> {
    let sql = format!(
        "{GROUP_MEMBERS_FROM} where m.tenant_id = $1 and m.group_id = any($2) order by m.group_id, u.user_name_key, u.id"
    );
    let rows = tx.query(&stmt(tx, &sql).await?, &[&d.tenant_id, &group_ids]).await?;
    Ok(rows.iter().map(group_member_row).collect())
}

/// Which of `user_ids` are members of which of `group_ids`: (group id, member), for filters
/// that name the members they test.
pub async fn named_members_of_groups(
    tx: &Transaction<'_>,
    d: Dir,
    group_ids: &[Uuid],
    user_ids: &[Uuid],
) -> Result<Vec<(Uuid, Member)>> {
    if group_ids.is_empty() || user_ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "{GROUP_MEMBERS_FROM} where m.tenant_id = $1 and m.group_id = any($2) and m.user_id = any($3)
         order by m.group_id, u.user_name_key, u.id"
    );
    let rows = tx.query(&stmt(tx, &sql).await?, &[&d.tenant_id, &group_ids, &user_ids]).await?;
    Ok(rows.iter().map(group_member_row).collect())
}

/// Adds members; returns those that were not members before. Ids that are not users of the
/// directory are skipped (check them first with [`existing_users`]).
pub async fn add_members(tx: &Transaction<'_>, d: Dir, group_id: Uuid, user_ids: &[Uuid]) -> Result<Vec<Uuid>> {
    if user_ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = tx
        .query(
            &stmt(
                tx,
                "insert into group_members (tenant_id, group_id, user_id)
             select $1, $3, u.id from unnest($4::uuid[]) as i(id)
             join scim_users u on u.tenant_id = $1 and u.scope = $2 and u.id = i.id
             on conflict do nothing returning user_id",
            )
            .await?,
            &[&d.tenant_id, &d.scope(), &group_id, &user_ids],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Removes members; returns those that were members.
pub async fn remove_members(tx: &Transaction<'_>, d: Dir, group_id: Uuid, user_ids: &[Uuid]) -> Result<Vec<Uuid>> {
    if user_ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = tx
        .query(
            &stmt(
                tx,
                "delete from group_members m using unnest($3::uuid[]) as i(id)
             where m.tenant_id = $1 and m.group_id = $2 and m.user_id = i.id returning m.user_id",
            )
            .await?,
            &[&d.tenant_id, &group_id, &user_ids],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// [`lock_groups`]'s statement, built once.
static LOCK_GROUPS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "select {}, g.tenant_id, g.scope from scim_groups g
          where (g.tenant_id, g.scope, g.id) in (select * from unnest($1::uuid[], $2::text[], $3::uuid[]))
          order by g.id for no key update",
        qualified(GROUP_COLS, "g")
    )
});

/// Locks the groups named by `keys` (each a directory and a group id) in id order, the order
/// every writer locks groups in; returns the ones that exist.
pub async fn lock_groups(tx: &Transaction<'_>, keys: &[(Dir, Uuid)]) -> Result<HashMap<(Dir, Uuid), GroupRecord>> {
    let tenants: Vec<Uuid> = keys.iter().map(|(d, _)| d.tenant_id).collect();
    let scopes: Vec<String> = keys.iter().map(|(d, _)| d.scope()).collect();
    let ids: Vec<Uuid> = keys.iter().map(|(_, g)| *g).collect();
    let rows = tx.query(&stmt(tx, &LOCK_GROUPS_SQL).await?, &[&tenants, &scopes, &ids]).await?;
    let asked: HashMap<(Uuid, String, Uuid), Dir> =
        keys.iter().zip(scopes).map(|((d, g), scope)| ((d.tenant_id, scope, *g), *d)).collect();
    let mut found = HashMap::new();
    for r in &rows {
        let rec = group_row(r);
        if let Some(d) = asked.get(&(r.get(7), r.get(8), rec.id)) {
            found.insert((*d, rec.id), rec);
        }
    }
    Ok(found)
}

/// Deletes the memberships `(tenant, group, user)` that exist; returns the removed ones (tenant,
/// group, and the member with its name and email, for the log).
pub async fn remove_memberships(
    tx: &Transaction<'_>,
    pairs: &[(Uuid, Uuid, Uuid)],
) -> Result<Vec<(Uuid, Uuid, Member)>> {
    if pairs.is_empty() {
        return Ok(Vec::new());
    }
    let tenants: Vec<Uuid> = pairs.iter().map(|p| p.0).collect();
    let groups: Vec<Uuid> = pairs.iter().map(|p| p.1).collect();
    let users: Vec<Uuid> = pairs.iter().map(|p| p.2).collect();
    let rows = tx
        .query(
            &stmt(
                tx,
                "with d as (
                     delete from group_members m using unnest($1::uuid[], $2::uuid[], $3::uuid[]) as i(t, g, u)
                      where m.tenant_id = i.t and m.group_id = i.g and m.user_id = i.u
                  returning m.tenant_id, m.group_id, m.user_id)
                 select d.tenant_id, d.group_id, d.user_id, u.user_name, u.email
                   from d join scim_users u on u.tenant_id = d.tenant_id and u.id = d.user_id",
            )
            .await?,
            &[&tenants, &groups, &users],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), Member { user_id: r.get(2), user_name: r.get(3), email: r.get(4) }))
        .collect())
}

/// Bumps the version of each group named (already locked) by its count of changes, as if
/// the changes had been written one after another.
pub async fn touch_groups(tx: &Transaction<'_>, bumps: &[((Dir, Uuid), i64)]) -> Result<()> {
    let tenants: Vec<Uuid> = bumps.iter().map(|((d, _), _)| d.tenant_id).collect();
    let scopes: Vec<String> = bumps.iter().map(|((d, _), _)| d.scope()).collect();
    let ids: Vec<Uuid> = bumps.iter().map(|((_, g), _)| *g).collect();
    let by: Vec<i64> = bumps.iter().map(|(_, n)| *n).collect();
    tx.execute(
        &stmt(
            tx,
            "update scim_groups g set version = version + i.n, updated_at = now()
               from unnest($1::uuid[], $2::text[], $3::uuid[], $4::bigint[]) as i(t, s, id, n)
              where g.tenant_id = i.t and g.scope = i.s and g.id = i.id",
        )
        .await?,
        &[&tenants, &scopes, &ids, &by],
    )
    .await?;
    Ok(())
}

/// Makes the member list exactly `user_ids` by touching only the rows that differ (a set
/// difference computed by PostgreSQL, so a list of 100,000 costs two statements); returns
/// (added, removed).
pub async fn replace_members(
    tx: &Transaction<'_>,
    d: Dir,
    group_id: Uuid,
    user_ids: &[Uuid],
) -> Result<(Vec<Uuid>, Vec<Uuid>)> {
    let removed: Vec<Uuid> = tx
        .query(
            &stmt(
                tx,
                // `not in (subquery)` runs as a hashed subplan: one pass over the members.
                "delete from group_members m
             where m.tenant_id = $1 and m.group_id = $2 and m.user_id not in (select unnest($3::uuid[]))
             returning m.user_id",
            )
            .await?,
            &[&d.tenant_id, &group_id, &user_ids],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let added = add_members(tx, d, group_id, user_ids).await?;
    Ok((added, removed))
}

// ---- integration directories ----------------------------------------------------------------

/// What an integration's directory says about one of its users: whether they are active, the
/// address the app knows them by, the role names the IdP sent (`roles` and `entitlements`
/// values, primary first), and the pushed groups they are in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub active: bool,
    pub email: String,
    pub roles: Vec<String>,
    pub groups: Vec<String>,
}

/// Reads the assignments of `users` in integration `d`'s directory; deleted users are missing
/// from the map. Two queries, whatever the number of users.
pub async fn assignments(tx: &Transaction<'_>, d: Dir, users: &[Uuid]) -> Result<HashMap<Uuid, Assignment>> {
    let rows = tx
        .query(
            &stmt(
                tx,
                "select id, active, coalesce(email, user_name), resource from scim_users
             where tenant_id = $1 and scope = $2 and id = any($3)",
            )
            .await?,
            &[&d.tenant_id, &d.scope(), &users],
        )
        .await?;
    let mut out: HashMap<Uuid, Assignment> = rows
        .iter()
        .map(|r| {
            let resource: serde_json::Value = r.get(3);
            (
                r.get(0),
                Assignment { active: r.get(1), email: r.get(2), roles: role_values(&resource), groups: Vec::new() },
            )
        })
        .collect();
    let rows = tx
        .query(
            &stmt(
                tx,
                "select m.user_id, g.display_name from group_members m
             join scim_groups g on g.tenant_id = m.tenant_id and g.id = m.group_id and g.scope = $2
             where m.tenant_id = $1 and m.user_id = any($3) order by g.display_name",
            )
            .await?,
            &[&d.tenant_id, &d.scope(), &users],
        )
        .await?;
    for r in rows {
        if let Some(a) = out.get_mut(&r.get::<_, Uuid>(0)) {
            a.groups.push(r.get(1));
        }
    }
    Ok(out)
}

/// The `value`s of `roles` then `entitlements` (RFC 7643 §4.1.2), primary ones first.
fn role_values(resource: &serde_json::Value) -> Vec<String> {
    let mut primary = Vec::new();
    let mut rest = Vec::new();
    for attr in ["roles", "entitlements"] {
        let Some(items) = resource.get(attr).and_then(|v| v.as_array()) else { continue };
        for item in items {
            let (value, is_primary) = match item {
                serde_json::Value::String(s) => (Some(s.as_str()), false),
                serde_json::Value::Object(o) => (
                    o.get("value").and_then(|v| v.as_str()),
                    matches!(o.get("primary"), Some(serde_json::Value::Bool(true))),
                ),
                _ => (None, false),
            };
            if let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) {
                if is_primary {
                    primary.push(v.to_string())
                } else {
                    rest.push(v.to_string())
                }
            }
        }
    }
    primary.extend(rest);
    primary
}

/// The role an integration gives users its IdP assigns without naming a role on its ladder.
pub async fn default_role(tx: &Transaction<'_>, tenant_id: Uuid, integration: Uuid) -> Result<Option<String>> {
    let row = tx
        .query_opt(
            &stmt(tx, "select default_role from integrations where tenant_id = $1 and id = $2").await?,
            &[&tenant_id, &integration],
        )
        .await?;
    Ok(row.and_then(|r| r.get(0)))
}

/// True when the integration exists in the tenant (its SCIM endpoint is live only then).
pub async fn integration_exists(tx: &Transaction<'_>, tenant_id: Uuid, integration: Uuid) -> Result<bool> {
    Ok(tx
        .query_opt(
            &stmt(tx, "select 1 from integrations where tenant_id = $1 and id = $2").await?,
            &[&tenant_id, &integration],
        )
        .await?
        .is_some())
}

/// Users of one directory whose userNames are the same ignoring case but were told apart
/// before unseat compared names by their fold (migration 19): the first created kept the name's
/// key, so lookups by that name find it; each later one holds a key of its own (its fold and
/// id). An IdP takes them for one user, so the others are never deprovisioned through it: an
/// operator lists them (`unseat admin case-duplicates`) to merge or remove them.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseDuplicates {
    pub tenant_id: Uuid,
    pub scope: String,
    /// The userName folded.
    pub key: String,
    /// The first created first: the one lookups find.
    pub users: Vec<CaseDuplicate>,
}

/// One of [`CaseDuplicates`].
#[derive(Debug, Clone, PartialEq)]
pub struct CaseDuplicate {
    pub id: Uuid,
    pub user_name: String,
    pub active: bool,
    pub created_at: DateTime<Utc>,
}

impl crate::Store {
    /// Every set of [`CaseDuplicates`], directory by directory: two statements whatever the
    /// number of sets (the later users, then the first of each set through the unique index).
    pub async fn case_duplicates(&self) -> Result<Vec<CaseDuplicates>> {
        let client = self.client().await?;
        let duplicate =
            |r: &Row| CaseDuplicate { id: r.get(0), user_name: r.get(1), active: r.get(2), created_at: r.get(3) };
        // Keys the migration made for a later user: its name's fold, then U+0001 and its id.
        let marked = client
            .query(
                "select id, user_name, active, created_at, tenant_id, scope, user_name_key from scim_users
                  where strpos(user_name_key, chr(1)) > 0",
                &[],
            )
            .await?;
        let mut sets: BTreeMap<(Uuid, String, String), Vec<CaseDuplicate>> = BTreeMap::new();
        for r in &marked {
            let (tenant_id, scope, key): (Uuid, String, String) = (r.get(4), r.get(5), r.get(6));
            let later = duplicate(r);
            let folded = fold(&later.user_name);
            if key == format!("{folded}\u{1}{}", later.id) {
                sets.entry((tenant_id, scope, folded)).or_default().push(later);
            }
        }
        let (tenants, scopes, keys): (Vec<Uuid>, Vec<&str>, Vec<&str>) =
            sets.keys().map(|(t, s, k)| (*t, s.as_str(), k.as_str())).collect();
        let first = client
            .query(
                "select s.id, s.user_name, s.active, s.created_at, s.tenant_id, s.scope, s.user_name_key
                   from unnest($1::uuid[], $2::text[], $3::text[]) as k(tenant_id, scope, key)
                   join scim_users s on s.tenant_id = k.tenant_id and s.scope = k.scope and s.user_name_key = k.key",
                &[&tenants, &scopes, &keys],
            )
            .await?;
        for r in &first {
            if let Some(users) = sets.get_mut(&(r.get(4), r.get(5), r.get(6))) {
                users.push(duplicate(r));
            }
        }
        Ok(sets
            .into_iter()
            .map(|((tenant_id, scope, key), mut users)| {
                users.sort_by_key(|u| (u.created_at, u.id));
                CaseDuplicates { tenant_id, scope, key, users }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::fresh_database;
    use serde_json::json;

    async fn tenant(store: &crate::Store) -> Dir {
        let t = Uuid::new_v4();
        let c = store.client().await.unwrap();
        c.execute("insert into tenants (id, name) values ($1, 'T')", &[&t]).await.unwrap();
        Dir::workspace(t)
    }

    fn fields<'a>(name: &'a str, res: &'a serde_json::Value) -> UserFields<'a> {
        UserFields { user_name: name, external_id: None, active: true, email: None, resource: res }
    }

    /// The ids `users_by_email` finds, sorted.
    async fn by_email(store: &crate::Store, d: Dir, email: &str) -> Vec<Uuid> {
        let mut c = store.client().await.unwrap();
        let tx = c.transaction().await.unwrap();
        let mut ids: Vec<Uuid> =
            users_by_email(&tx, d, email, MAX_SCAN).await.unwrap().unwrap().iter().map(|u| u.id).collect();
        ids.sort();
        ids
    }

    #[tokio::test]
    async fn email_lookups_follow_every_write_of_a_user() {
        let (_url, store) = fresh_database().await.unwrap();
        let (d, other) = (tenant(&store).await, tenant(&store).await);
        let long = format!("{}@corp.example", "x".repeat(1100));
        let (a, b, o) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let mut c = store.client().await.unwrap();
        let tx = c.transaction().await.unwrap();
        let res_a = json!({"emails": [{"value": "Ann@Corp.example", "type": "work"}, {"value": "ann@home.example"},
                                      {"value": long}, {"value": 7}]});
        insert_user(&tx, d, a, fields("ann", &res_a)).await.unwrap();
        insert_user(&tx, d, b, fields("bea", &json!({"emails": [{"value": "ann@corp.example", "type": "home"}]})))
            .await
            .unwrap();
        insert_user(&tx, other, o, fields("ann", &res_a)).await.unwrap();
        tx.commit().await.unwrap();
        let mut both = vec![a, b];
        both.sort();
        assert_eq!(by_email(&store, d, "ANN@corp.example").await, both);
        assert_eq!(by_email(&store, d, "ann@home.example").await, vec![a]);
        assert_eq!(by_email(&store, d, &long.to_uppercase()).await, vec![a], "an address too long for a row");
        assert_eq!(by_email(&store, other, "ann@corp.example").await, vec![o], "tenants never see each other");
        // An integration's own directory of the same tenant is a directory of its own.
        let (own, i) = (Dir::integration(d.tenant_id, Uuid::new_v4()), Uuid::new_v4());
        let tx = c.transaction().await.unwrap();
        insert_user(&tx, own, i, fields("ann", &json!({"emails": [{"value": "ann@corp.example"}]}))).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(by_email(&store, own, "ann@corp.example").await, vec![i]);
        assert_eq!(by_email(&store, d, "ann@corp.example").await, both);

        // A new representation replaces the addresses; one with the same emails, or a
        // (de)activation, leaves them.
        for title in ["A", "B"] {
            let res = json!({"emails": [{"value": "ann@new.example"}, {"value": "ann@home.example"}], "title": title});
            let tx = c.transaction().await.unwrap();
            let old = lock_user(&tx, d, a).await.unwrap().unwrap();
            update_user(&tx, d, &old, fields("ann", &res)).await.unwrap();
            tx.commit().await.unwrap();
            assert_eq!(by_email(&store, d, "ann@corp.example").await, vec![b], "after title {title}");
            assert_eq!(by_email(&store, d, "ann@new.example").await, vec![a], "after title {title}");
        }
        let change = ActiveChange {
            dir: d,
            id: a,
            active: false,
            message_id: Uuid::new_v4(),
            payload: &json!({"trigger": {}}),
            verb: "deactivated",
        };
        set_active_announced(&c, "x", "y", &[change]).await.unwrap();
        assert_eq!(by_email(&store, d, "ann@corp.example").await, vec![b]);
        assert_eq!(by_email(&store, d, "ann@new.example").await, vec![a]);
        assert_eq!(by_email(&store, d, "ann@home.example").await, vec![a]);
        assert_eq!(by_email(&store, d, &long).await, Vec::<Uuid>::new());

        let tx = c.transaction().await.unwrap();
        delete_user(&tx, d, a).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(by_email(&store, d, "ann@new.example").await, Vec::<Uuid>::new());
    }

    #[tokio::test]
    async fn the_case_key_migration_keys_what_is_already_stored() {
        let (url, store) = fresh_database().await.unwrap();
        let (d, other) = (tenant(&store).await, tenant(&store).await);
        let c = store.client().await.unwrap();
        // The directory as the migrations before 19 left it.
        c.batch_execute(
            "drop index scim_users_user_name; drop index scim_groups_display_name;
             alter table scim_users drop column user_name_key; alter table scim_groups drop column display_name_key;
             create unique index scim_users_user_name on scim_users (tenant_id, scope, lower(user_name));
             create index scim_groups_display_name on scim_groups (tenant_id, scope, lower(display_name));
             delete from schema_migrations where version in (19, 20)",
        )
        .await
        .unwrap();
        let (ann, upper, lower, group) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        // The same name in another tenant's directory is no duplicate of this one's; two names
        // there that fold alike are a set of their own.
        let (other_ann, other_first, other_later) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        c.execute(
            "insert into scim_users (tenant_id, id, user_name, resource, created_at)
             values ($1, $2, 'ANN', '{}', '2026-01-01'), ($1, $3, 'οδος', '{}', '2026-01-05'),
                    ($1, $4, 'ΟΔΟΣ', '{}', '2026-01-02')",
            &[&other.tenant_id, &other_ann, &other_later, &other_first],
        )
        .await
        .unwrap();
        let emails = json!({"emails": [{"value": "Ann@Corp.example"}, {"value": "ann@corp.example"},
                                       {"value": "ΟΔΟΣ@x.example"}, {"value": 7}]});
        // lower() tells the last two names apart (a final sigma); folded, they are one.
        for (id, name, resource, at) in [
            (ann, "Ann", &emails, "2026-01-01T00:00:00Z"),
            (upper, "ΑΣ", &json!({}), "2026-01-02T00:00:00Z"),
            (lower, "ας", &json!({}), "2026-01-03T00:00:00Z"),
        ] {
            c.execute(
                "insert into scim_users (tenant_id, id, user_name, resource, created_at)
                 values ($1, $2, $3, $4, $5::text::timestamptz)",
                &[&d.tenant_id, &id, &name, resource, &at],
            )
            .await
            .unwrap();
        }
        c.execute(
            "insert into scim_user_emails (tenant_id, user_id, email) values ($1, $2, 'stale@corp.example')",
            &[&d.tenant_id, &ann],
        )
        .await
        .unwrap();
        c.execute(
            "insert into scim_groups (tenant_id, id, display_name, resource) values ($1, $2, 'ΟΜΑΔΑ Σ', '{}')",
            &[&d.tenant_id, &group],
        )
        .await
        .unwrap();

        assert_eq!(crate::migrate::migrate(&url).await.unwrap(), vec![19, 20]);
        let mut rows: Vec<String> = c
            .query("select email from scim_user_emails where user_id = $1", &[&ann])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        rows.sort();
        assert_eq!(rows, ["ann@corp.example", "οδοσ@x.example"]);
        assert_eq!(by_email(&store, d, "ANN@corp.example").await, vec![ann]);
        assert_eq!(by_email(&store, d, "οδος@X.example").await, vec![ann]);
        assert_eq!(by_email(&store, d, "stale@corp.example").await, Vec::<Uuid>::new());

        let mut c = store.client().await.unwrap();
        let tx = c.transaction().await.unwrap();
        assert_eq!(user_by_user_name(&tx, d, "ANN").await.unwrap().map(|u| u.id), Some(ann));
        assert_eq!(user_by_user_name(&tx, other, "ann").await.unwrap().map(|u| u.id), Some(other_ann));
        // The first created keeps the key; the other keeps its name and a key of its own.
        assert_eq!(user_by_user_name(&tx, d, "ας").await.unwrap().map(|u| u.id), Some(upper));
        assert_eq!(user_by_user_name(&tx, d, "ασ").await.unwrap().map(|u| u.id), Some(upper));
        assert_eq!(get_user(&tx, d, lower).await.unwrap().map(|u| u.user_name), Some("ας".to_string()));
        let groups: Vec<Uuid> = groups_by_display_name(&tx, d, "ομαδα ς").await.unwrap().iter().map(|g| g.id).collect();
        assert_eq!(groups, vec![group]);
        let taken = insert_user(&tx, d, Uuid::new_v4(), fields("Ασ", &json!({}))).await.unwrap_err();
        assert!(matches!(taken, StoreError::Conflict(_)), "{taken:?}");
        drop(tx);

        // The operator's list: the two users one IdP takes for one, the first created first.
        let sets = store.case_duplicates().await.unwrap();
        let mut found: Vec<_> = sets
            .iter()
            .map(|s| {
                let users: Vec<(Uuid, &str)> = s.users.iter().map(|u| (u.id, u.user_name.as_str())).collect();
                (s.tenant_id, s.scope.clone(), s.key.as_str(), users)
            })
            .collect();
        found.sort_by_key(|(t, ..)| *t != d.tenant_id);
        assert_eq!(
            found,
            [
                (d.tenant_id, d.scope(), "ασ", vec![(upper, "ΑΣ"), (lower, "ας")]),
                (other.tenant_id, other.scope(), "οδοσ", vec![(other_first, "ΟΔΟΣ"), (other_later, "οδος")]),
            ]
        );
    }

    #[tokio::test]
    async fn a_scan_reads_a_directory_only_when_it_holds_no_more_than_its_bound() {
        let (_url, store) = fresh_database().await.unwrap();
        let (d, other) = (tenant(&store).await, tenant(&store).await);
        let mut c = store.client().await.unwrap();
        let mut ids = Vec::new();
        // One transaction each, so that they are stamped in this order.
        for name in ["ann", "bea", "cy"] {
            let tx = c.transaction().await.unwrap();
            let id = Uuid::new_v4();
            insert_user(&tx, d, id, fields(name, &json!({}))).await.unwrap();
            tx.commit().await.unwrap();
            ids.push(id);
        }
        let tx = c.transaction().await.unwrap();
        for name in ["dee", "eve"] {
            insert_user(&tx, other, Uuid::new_v4(), fields(name, &json!({}))).await.unwrap();
        }
        let g = Uuid::new_v4();
        insert_group(&tx, d, g, GroupFields { display_name: "Staff", external_id: None, resource: &json!({}) })
            .await
            .unwrap();
        let scanned = |users: Option<Vec<UserRecord>>| users.map(|us| us.iter().map(|u| u.id).collect::<Vec<_>>());
        assert_eq!(scanned(scan_users(&tx, d, 3).await.unwrap()), Some(ids.clone()), "every user, in creation order");
        assert_eq!(scanned(scan_users(&tx, d, 2).await.unwrap()), None, "one over the bound");
        assert_eq!(
            scanned(scan_users(&tx, other, 2).await.unwrap()).map(|v| v.len()),
            Some(2),
            "the other tenant's own"
        );
        let groups = scan_groups(&tx, d, 1).await.unwrap().map(|gs| gs.iter().map(|g| g.id).collect::<Vec<_>>());
        assert_eq!(groups, Some(vec![g]));
        assert!(scan_groups(&tx, d, 0).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_search_reads_what_it_finds_only_when_no_more_than_its_bound() {
        let (_url, store) = fresh_database().await.unwrap();
        let d = tenant(&store).await;
        let mut c = store.client().await.unwrap();
        let mut engineers = Vec::new();
        // One transaction each, so that they are stamped in this order.
        for (name, title) in [("ann", "Engineer"), ("bea", "Sales"), ("cy", "engineer"), ("dee", "Engineering lead")] {
            let tx = c.transaction().await.unwrap();
            let id = Uuid::new_v4();
            let res = json!({"title": title, "emails": [{"value": "team@corp.example"}]});
            insert_user(&tx, d, id, fields(name, &res)).await.unwrap();
            tx.commit().await.unwrap();
            if title.to_lowercase().starts_with("engineer") {
                engineers.push(id);
            }
        }
        let tx = c.transaction().await.unwrap();
        let ids = |users: Option<Vec<UserRecord>>| users.map(|us| us.iter().map(|u| u.id).collect::<Vec<_>>());
        let search = |text: &'static str, within, max| users_containing(&tx, d, text, within, max);
        assert_eq!(ids(search("ENGINEER", Within::Start, 3).await.unwrap()), Some(engineers.clone()));
        assert_eq!(ids(search("engineer", Within::Start, 2).await.unwrap()), None, "one over the bound");
        assert_eq!(ids(search("engineer", Within::Whole, 2).await.unwrap()), Some(vec![engineers[0], engineers[1]]));
        assert_eq!(ids(search("nobody", Within::Anywhere, 0).await.unwrap()), Some(vec![]));
        let all = StampRange { stamp: Stamp::Created, from: None, until: None };
        assert_eq!(ids(users_stamped(&tx, d, &all, 4).await.unwrap()).map(|v| v.len()), Some(4));
        assert_eq!(ids(users_stamped(&tx, d, &all, 3).await.unwrap()), None);
        assert_eq!(ids(users_by_email(&tx, d, "TEAM@corp.example", 4).await.unwrap()).map(|v| v.len()), Some(4));
        assert_eq!(ids(users_by_email(&tx, d, "team@corp.example", 3).await.unwrap()), None);
        let long = format!("{}@corp.example", "x".repeat(700));
        assert_eq!(ids(users_by_email(&tx, d, &long, 0).await.unwrap()), Some(vec![]), "searched, found none");
    }

    #[tokio::test]
    async fn pages_follow_creation_order_whatever_the_ids() {
        let (_url, store) = fresh_database().await.unwrap();
        let (d, other) = (tenant(&store).await, tenant(&store).await);
        let mut c = store.client().await.unwrap();
        // Created in this order, with ids that sort the other way round.
        let ids: Vec<Uuid> = (0..7u128).map(|i| Uuid::from_u128(u128::MAX - i)).collect();
        for (i, id) in ids.iter().enumerate() {
            let tx = c.transaction().await.unwrap();
            insert_user(&tx, d, *id, fields(&format!("u{i}"), &json!({}))).await.unwrap();
            tx.commit().await.unwrap();
        }
        let tx = c.transaction().await.unwrap();
        insert_user(&tx, other, Uuid::new_v4(), fields("elsewhere", &json!({}))).await.unwrap();
        // A rewritten row moves behind the others in the table: rewritten last to first, the
        // table's physical order is not the creation order either.
        for id in ids[..4].iter().rev() {
            tx.execute("update scim_users set version = version + 1 where id = $1", &[id]).await.unwrap();
        }
        let mut paged = Vec::new();
        for offset in (0..9).step_by(3) {
            let (total, page) = list_users(&tx, d, offset, 3).await.unwrap();
            assert_eq!(total, 7);
            paged.extend(page.iter().map(|u| u.id));
        }
        assert_eq!(paged, ids, "every user once, in creation order");
        let (_, page) = list_users(&tx, d, 5, 100).await.unwrap();
        assert_eq!(page.iter().map(|u| u.id).collect::<Vec<_>>(), ids[5..]);
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

#[cfg(test)]
mod scope_tests {
    use super::*;
    use crate::testing::fresh_database;
    use serde_json::json;

    /// The workspace and an integration's directory of one tenant are separate: same userName
    /// in both, and neither reads, locks or adds members from the other.
    #[tokio::test]
    async fn directories_of_one_tenant_are_separate() {
        let (_url, store) = fresh_database().await.unwrap();
        let t = Uuid::new_v4();
        let integration = Uuid::new_v4();
        let mut c = store.client().await.unwrap();
        c.execute("insert into tenants (id, name) values ($1, 'T')", &[&t]).await.unwrap();
        c.execute(
            "insert into integrations (tenant_id, id, name, app_kind, base_url, roles, default_role)
             values ($1, $2, 'i', 'business_hub', 'http://x', '{ADMIN,EMPLOYEE}', 'EMPLOYEE')",
            &[&t, &integration],
        )
        .await
        .unwrap();
        let (ws, it) = (Dir::workspace(t), Dir::integration(t, integration));
        let res = json!({"roles": [{"value": "viewer"}, {"value": "ADMIN", "primary": true}], "entitlements": ["x"]});
        let f = UserFields { user_name: "a@x.io", external_id: None, active: true, email: None, resource: &res };
        let tx = c.transaction().await.unwrap();
        let (u_ws, u_it) = (Uuid::new_v4(), Uuid::new_v4());
        insert_user(&tx, ws, u_ws, f).await.unwrap();
        insert_user(&tx, it, u_it, f).await.unwrap();
        tx.commit().await.unwrap();
        let tx = c.transaction().await.unwrap();
        assert!(matches!(insert_user(&tx, it, Uuid::new_v4(), f).await, Err(StoreError::Conflict(_))));
        drop(tx);

        let tx = c.transaction().await.unwrap();
        assert!(get_user(&tx, ws, u_it).await.unwrap().is_none());
        assert!(lock_user(&tx, it, u_ws).await.unwrap().is_none());
        assert_eq!(user_by_user_name(&tx, it, "A@X.IO").await.unwrap().unwrap().id, u_it);
        assert_eq!(list_users(&tx, ws, 0, 10).await.unwrap().0, 1);
        let g = Uuid::new_v4();
        insert_group(&tx, it, g, GroupFields { display_name: "ADMIN", external_id: None, resource: &json!({}) })
            .await
            .unwrap();
        assert!(get_group(&tx, ws, g).await.unwrap().is_none());
        assert_eq!(add_members(&tx, it, g, &[u_ws, u_it]).await.unwrap(), vec![u_it], "only its own users");
        assert_eq!(groups_with_member(&tx, it, u_it).await.unwrap().len(), 1);

        let a = assignments(&tx, it, &[u_it, u_ws]).await.unwrap();
        assert_eq!(a.len(), 1, "the workspace user is not in the integration's directory");
        assert_eq!(
            a[&u_it],
            Assignment {
                active: true,
                email: "a@x.io".into(),
                roles: vec!["ADMIN".into(), "viewer".into(), "x".into()],
                groups: vec!["ADMIN".into()]
            }
        );
        assert_eq!(default_role(&tx, t, integration).await.unwrap().as_deref(), Some("EMPLOYEE"));
        tx.commit().await.unwrap();

        let payload = json!({"trigger": {"summary": ""}});
        let change = |dir, id, active, verb| ActiveChange {
            dir,
            id,
            active,
            message_id: Uuid::new_v4(),
            payload: &payload,
            verb,
        };
        let batch = [
            change(it, u_it, false, "unassigned"),
            change(ws, u_ws, false, "deactivated"),
            change(it, u_it, true, "assigned"),
            change(ws, u_it, false, "deactivated"),
            change(it, Uuid::new_v4(), false, "unassigned"),
        ];
        let out = set_active_announced(&c, "t.directory", "changed", &batch).await.unwrap();
        let off = out[0].as_ref().expect("the first change of the integration's user is written");
        assert_eq!((off.id, off.active, off.version, off.resource["active"].clone()), (u_it, false, 2, json!(false)));
        assert_eq!(out[1].as_ref().map(|u| (u.id, u.active)), Some((u_ws, false)), "another directory, same statement");
        assert!(out[2].is_none(), "the same user again waits for the general path");
        assert!(out[3].is_none(), "no such user in that scope");
        assert!(out[4].is_none(), "no such user");
        let written: Vec<(Uuid, String, String, String)> = c
            .query(
                "select message_id, exchange, routing_key, payload->'trigger'->>'summary' from outbox
                  where message_id = any($1) order by payload->'trigger'->>'summary'",
                &[&batch.iter().map(|b| b.message_id).collect::<Vec<_>>()],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect();
        let expected = |m: Uuid, s: &str| (m, "t.directory".to_string(), "changed".to_string(), s.to_string());
        assert_eq!(
            written,
            vec![
                expected(batch[1].message_id, "user a@x.io deactivated"),
                expected(batch[0].message_id, "user a@x.io unassigned"),
            ],
            "one outbox row per written change, by the same statement"
        );
        let again = [change(it, u_it, false, "unassigned")];
        let out = set_active_announced(&c, "t.directory", "changed", &again).await.unwrap();
        assert!(out[0].is_none(), "already inactive");
        let announced: i64 = c
            .query_one("select count(*) from outbox where message_id = $1", &[&again[0].message_id])
            .await
            .unwrap()
            .get(0);
        assert_eq!(announced, 0, "nothing changed, nothing announced");
    }
}

#[cfg(test)]
mod search_tests {
    use super::*;
    use crate::testing::fresh_database;

    /// Letters with case (ASCII, beyond, and those folding to several or to another's letter),
    /// characters JSON escapes, and characters regular expressions treat specially.
    const ALPHABET: &[char] = &[
        'a', 'A', 'z', 'i', 'I', 'İ', '\u{307}', 'k', 'K', '\u{212A}', 'σ', 'Σ', 'ς', 'ß', 'é', 'É', 'ǅ', 'ǆ', 'Ǆ',
        '"', '\\', '\n', '\t', '\u{1}', '\u{7f}', '%', '_', '.', '*', '(', ')', '[', ']', '{', '}', '^', '$', '|', '?',
        '+', '-', ' ', '/', '0', '9', '😀', '中',
    ];

    /// A small deterministic generator, so that a failure names a case that comes back.
    struct Lcg(u64);
    impl Lcg {
        fn below(&mut self, n: usize) -> usize {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((self.0 >> 33) % n as u64) as usize
        }
    }

    /// The database's answers to whether each text (its JSON string when `json`) matches its
    /// pattern.
    async fn matches(store: &crate::Store, cases: &[(String, String)], json: bool) -> Vec<bool> {
        let texts: Vec<&str> = cases.iter().map(|(t, _)| t.as_str()).collect();
        let patterns: Vec<&str> = cases.iter().map(|(_, p)| p.as_str()).collect();
        let c = store.client().await.unwrap();
        c.query(
            "select (case when $3 then to_jsonb(t)::text else t end) ~ p
               from unnest($1::text[], $2::text[]) with ordinality as c(t, p, n) order by n",
            &[&texts, &patterns, &json],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    }

    /// Whatever a stored text holds, the pattern for any part of its fold finds it (where it
    /// must stand for eq, sw and ew), on this database: the search is a superset of what the
    /// filter selects. Among texts of letters only, it finds nothing else. The same under a `C`
    /// collation.
    #[tokio::test]
    async fn a_search_finds_every_text_holding_what_it_looks_for() {
        let (_url, store) = fresh_database().await.unwrap();
        finds_what_it_looks_for(&store).await;
        let (_url, store) = crate::testing::fresh_database_in_locale("C").await.unwrap();
        finds_what_it_looks_for(&store).await;
    }

    async fn finds_what_it_looks_for(store: &crate::Store) {
        let mut rng = Lcg(7);
        let mut cases = Vec::new();
        for _ in 0..4000 {
            let text: String = (0..1 + rng.below(10)).map(|_| ALPHABET[rng.below(ALPHABET.len())]).collect();
            let folded: Vec<char> = fold(&text).chars().collect();
            let from = rng.below(folded.len());
            let to = from + 1 + rng.below(folded.len() - from);
            let part = search_pattern(&folded[from..to]);
            cases.push((text.clone(), part.clone()));
            cases.push((text.clone(), format!("\"{}\"", search_pattern(&folded))));
            cases.push((text.clone(), format!("\"{}", search_pattern(&folded[..to]))));
            cases.push((text, format!("{}\"", search_pattern(&folded[from..]))));
        }
        let found = matches(store, &cases, true).await;
        let missed: Vec<&(String, String)> = cases.iter().zip(&found).filter(|(_, f)| !**f).map(|(c, _)| c).collect();
        assert!(
            missed.is_empty(),
            "{} of {} missed, e.g. {:?}",
            missed.len(),
            cases.len(),
            &missed[..missed.len().min(5)]
        );

        let letters: Vec<char> = ALPHABET.iter().copied().filter(|c| c.is_alphabetic() && *c != 'İ').collect();
        let mut cases = Vec::new();
        let mut expected = Vec::new();
        for _ in 0..4000 {
            let text: String = (0..1 + rng.below(8)).map(|_| letters[rng.below(letters.len())]).collect();
            let probe: String = (0..1 + rng.below(3)).map(|_| letters[rng.below(letters.len())]).collect();
            let folded: Vec<char> = fold(&probe).chars().collect();
            expected.push(fold(&text).contains(&fold(&probe)));
            cases.push((text, search_pattern(&folded)));
        }
        assert_eq!(matches(store, &cases, true).await, expected);

        // A plain text (the console's filter) is found exactly when it holds the text, whatever
        // characters either holds (but `İ`, which a pattern allows for either half of its fold).
        let plain: Vec<char> = ALPHABET.iter().copied().filter(|c| !matches!(c, 'İ' | '\u{307}')).collect();
        let mut cases = Vec::new();
        let mut expected = Vec::new();
        for _ in 0..4000 {
            let text: String = (0..1 + rng.below(8)).map(|_| plain[rng.below(plain.len())]).collect();
            let probe: String = (0..1 + rng.below(3)).map(|_| plain[rng.below(plain.len())]).collect();
            expected.push(fold(&text).contains(&fold(&probe)));
            cases.push((text, containing_pattern(&probe)));
        }
        assert_eq!(matches(store, &cases, false).await, expected);
    }
}
