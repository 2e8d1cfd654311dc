//! The business-hub adapter: Meta Business Manager's Graph API (`/v25.0/`): business users
//! with roles, their pending invitations, and assets (ad accounts, pages) with the tasks each
//! user may perform on them. The integration's `settings.business_id` names the business and
//! its credential is sent as the `access_token` parameter.
//!
//! Asset roles map to Graph tasks, each role including the ones below it: MANAGE → MANAGE,
//! ADVERTISE, ANALYZE; ADVERTISE → ADVERTISE, ANALYZE; ANALYZE → ANALYZE. Any other asset role
//! is the single task of that name (FULL_CONTROL, CREATE_CONTENT, AA_ANALYZE, ...), or the
//! tasks it names joined by `+`. A user holds an asset role when the tasks Graph reports on
//! the asset are exactly its tasks.
//!
//! Someone invited who has not accepted is no business user but a pending invitation
//! (`pending_users`): a removal revokes it, and a desired role counts it as present.
//!
//! Meta documents that the `role` field reports only the base roles, ADMIN and EMPLOYEE, so
//! a DEVELOPER or a FINANCE_EDITOR reads back as EMPLOYEE and cannot be told from an EMPLOYEE.
//! By default a role is held only when Graph reports exactly it (ignoring case): a non-base
//! role is written again at every task, which is idempotent and makes every move into a
//! non-base role. `settings.reported_roles: "base"` (any other value reads as the default)
//! instead takes a role as held when Graph reports its base role and it is also the role
//! unseat last applied: one write per move, a move between two non-base roles (FINANCE_EDITOR
//! to DEVELOPER) included, and a write whenever the last role is not known.
//! In both, a reported EMPLOYEE holds a desired EMPLOYEE only when EMPLOYEE is also the role
//! unseat last applied (`access_state.applied_role`, as the runtime passes it to
//! [`converge`](crate::adapter::converge)): Graph reports a FINANCE_EDITOR as EMPLOYEE too,
//! so someone lowered from a non-base role to EMPLOYEE, or whose last role is not known
//! (never set by unseat, or perhaps set by a task that failed or was superseded), gets
//! EMPLOYEE written, idempotently; the next task finds it applied and writes nothing. The
//! same holds for the role a pending invitation offers.
//!
//! reqwest puts request URLs (with the token in the query) into its error messages, so every
//! transport error is stripped of its URL before it becomes an [`AppError`] (see [`AppHttp`]).
//! For the same reason no error message here carries a URL Graph handed us (`paging.next`).

use crate::adapter::{same_email, AppAccount, AppAdapter, Assets, Invitation, Removal};
use crate::error::{is_throttle_code, AppError};
use crate::http::{truncate, Answer, AppHttp};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::collections::{BTreeSet, HashSet};
use unseat_store::apply::Integration;

/// The Graph API version this adapter speaks.
pub const GRAPH_VERSION: &str = "v25.0";
/// The app kind of business hubs.
pub const APP_KIND: &str = "business_hub";
/// Requests per second per integration unless its settings say otherwise: well inside the
/// Business Use Case budget Meta grants a business-management app.
pub const DEFAULT_RATE: f64 = 20.0;
/// Items asked for per page of a list edge (Graph's largest page on these edges).
const PAGE_SIZE: u32 = 100;
/// Pages read at most from one list edge (100 000 items at full pages), so a hub that keeps
/// answering `next` cannot loop us forever.
const MAX_PAGES: usize = 1_000;
/// The edges of a business user that list its assets.
const ASSET_EDGES: [&str; 2] = ["assigned_ad_accounts", "assigned_pages"];
/// The asset-role ladder, highest first.
const LADDER: [&str; 3] = ["MANAGE", "ADVERTISE", "ANALYZE"];
/// The roles Graph's `role` field reports.
const BASE_ROLES: [&str; 2] = ["ADMIN", "EMPLOYEE"];

/// A role as Graph's `role` parameter takes it: its enum values are upper case, and it refuses
/// `Admin` (a ladder stored before the console checked role names may spell it so).
fn graph_role(role: &str) -> String {
    role.trim().to_ascii_uppercase()
}
/// The base role Graph reports for every role but ADMIN.
const EMPLOYEE: &str = "EMPLOYEE";
/// Invitation statuses after which it can no longer be accepted.
const CLOSED_INVITATIONS: [&str; 5] = ["ACCEPTED", "DECLINED", "EXPIRED", "CANCELED", "CANCELLED"];

/// The Graph tasks an asset role stands for, in the order they are sent.
pub fn tasks_for(asset_role: &str) -> Vec<String> {
    let mut tasks: Vec<String> = Vec::new();
    for part in asset_role.split('+').map(str::trim).filter(|p| !p.is_empty()) {
        let expanded: Vec<String> = match LADDER.iter().position(|r| r.eq_ignore_ascii_case(part)) {
            Some(i) => LADDER[i..].iter().map(|s| s.to_string()).collect(),
            None => vec![part.to_ascii_uppercase()],
        };
        for task in expanded {
            if !tasks.contains(&task) {
                tasks.push(task);
            }
        }
    }
    tasks
}

/// The asset role a set of Graph tasks amounts to: the ladder step with exactly these tasks,
/// else the tasks themselves (one task, or several joined by `+`), so that [`tasks_for`] gives
/// them back.
pub fn role_of(tasks: &[String]) -> String {
    let held: BTreeSet<String> = tasks.iter().map(|t| t.trim().to_ascii_uppercase()).collect();
    for role in LADDER {
        if task_set(role) == held {
            return role.to_string();
        }
    }
    held.into_iter().collect::<Vec<_>>().join("+")
}

/// The tasks of an asset role, as a set.
fn task_set(asset_role: &str) -> BTreeSet<String> {
    tasks_for(asset_role).into_iter().collect()
}

/// The role Graph's `role` field reports for a business user holding `role`.
fn base_role(role: &str) -> &'static str {
    if role.eq_ignore_ascii_case("ADMIN") {
        "ADMIN"
    } else {
        EMPLOYEE
    }
}

/// What the integration says Graph's `role` field reports: exactly the role held (the
/// default), or the base role only (`settings.reported_roles: "base"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReportedRoles {
    Exact,
    Base,
}

/// Any other value is taken as `exact`, the safe reading: a setting about role comparison
/// never stops a removal.
fn reported_roles(integration: &Integration) -> ReportedRoles {
    match integration.settings.get("reported_roles").and_then(serde_json::Value::as_str) {
        Some(v) if v.trim().eq_ignore_ascii_case("base") => ReportedRoles::Base,
        _ => ReportedRoles::Exact,
    }
}

/// Speaks to Meta Business Manager (or the project's emulator of it).
#[derive(Clone)]
pub struct BusinessHub {
    http: AppHttp,
}

/// Why reading a list edge stopped.
enum EdgeError {
    /// Graph refused a cursor (code 100 on a page after the first): it may name an item
    /// deleted since, and reading again from the first page gets past it.
    CursorRejected(AppError),
    Other(AppError),
}

impl From<AppError> for EdgeError {
    fn from(e: AppError) -> Self {
        EdgeError::Other(e)
    }
}

impl BusinessHub {
    pub fn new(http: AppHttp) -> Self {
        Self { http }
    }

    fn business_id(integration: &Integration) -> Result<String, AppError> {
        let id = match integration.settings.get("business_id") {
            Some(serde_json::Value::String(s)) => s.trim().to_string(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            _ => return Err(AppError::Misconfigured("settings.business_id is missing".into())),
        };
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AppError::Misconfigured(format!("settings.business_id {id:?} is not a numeric id")));
        }
        Ok(id)
    }

    fn url(integration: &Integration, path: &str) -> Result<String, AppError> {
        let base = integration.base_url.trim_end_matches('/');
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(AppError::Misconfigured(format!("base_url {base:?} is not an http(s) URL")));
        }
        Ok(format!("{base}/{GRAPH_VERSION}/{path}"))
    }

    /// A `paging.next` link, checked to lead to the integration's own host (scheme, host and
    /// port of its `base_url`): the token goes only there. The token is added when the link
    /// does not repeat it.
    fn next_url(integration: &Integration, next: &str, what: &str) -> Result<reqwest::Url, AppError> {
        let base = reqwest::Url::parse(integration.base_url.trim())
            .map_err(|_| AppError::Misconfigured("base_url is not a URL".into()))?;
        let mut url = reqwest::Url::parse(next)
            .map_err(|_| AppError::Protocol(format!("{what} answered a paging.next that is not a URL")))?;
        let origin =
            |u: &reqwest::Url| (u.scheme().to_string(), u.host_str().map(str::to_string), u.port_or_known_default());
        if origin(&url) != origin(&base) {
            return Err(AppError::Protocol(format!(
                "{what} answered a paging.next on another host ({}); it is not followed",
                url.host_str().unwrap_or("none")
            )));
        }
        if !url.query_pairs().any(|(k, _)| k == "access_token") {
            url.query_pairs_mut().append_pair("access_token", &integration.credential);
        }
        Ok(url)
    }

    /// Graph node ids: digits, or `act_` and digits for ad accounts.
    fn node_id<'a>(id: &'a str, what: &str) -> Result<&'a str, AppError> {
        let digits = id.strip_prefix("act_").unwrap_or(id);
        if digits.is_empty() || digits.len() > 32 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AppError::Protocol(format!("{what} id {id:?} is not a Graph id")));
        }
        Ok(id)
    }

    /// Does this integration manage assets? Only then are a user's assets read and written.
    fn manages_assets(integration: &Integration) -> bool {
        !integration.asset_roles.is_empty()
    }

    /// Sends a request and returns the body of a 2xx answer; anything else becomes an
    /// [`AppError`] with the Graph code, subcode and message, and the wait the app asked for.
    async fn send(
        &self,
        integration: &Integration,
        request: reqwest::RequestBuilder,
    ) -> Result<serde_json::Value, AppError> {
        let answer = self.http.send(integration, request).await?;
        self.read(integration, answer).await
    }

    async fn read(&self, integration: &Integration, answer: Answer) -> Result<serde_json::Value, AppError> {
        if answer.is_success() {
            return serde_json::from_slice(&answer.body)
                .map_err(|e| AppError::Protocol(format!("HTTP {} with a body that is not JSON: {e}", answer.status)));
        }
        let retry_after = answer.retry_after();
        let graph = serde_json::from_slice::<GraphErrorBody>(&answer.body).ok().map(|b| b.error);
        let (code, subcode, message) = match graph {
            Some(g) => (g.code, g.error_subcode, g.message.unwrap_or_default()),
            None => (None, None, String::from_utf8_lossy(&answer.body).into_owned()),
        };
        if answer.status != 429 && code.is_some_and(is_throttle_code) {
            self.http.throttled(integration, &answer).await;
        }
        Err(AppError::Api { status: answer.status, code, subcode, message: truncate(message), retry_after })
    }

    fn token(integration: &Integration) -> (&'static str, String) {
        ("access_token", integration.credential.clone())
    }

    /// Reads one business user by id; None when the app says it does not exist.
    async fn get_user(&self, integration: &Integration, id: &str) -> Result<Option<AppAccount>, AppError> {
        let url = Self::url(integration, Self::node_id(id, "business user")?)?;
        let query = [Self::token(integration), ("fields", "id,email,role".to_string())];
        match self.send(integration, self.http.client().get(&url).query(&query)).await {
            Ok(body) => {
                let node: BusinessUserNode = serde_json::from_value(body)
                    .map_err(|e| AppError::Protocol(format!("business user answered an unexpected body: {e}")))?;
                Ok(Some(node.into_account()))
            }
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads the list edge `path` (with `params`, the token and the page size) page by page,
    /// following each page's `paging.next` as Graph gave it, and returns the items `keep`
    /// accepts; with `first_only`, it stops at the first one. A page may hold fewer items than
    /// asked for, or none, and still have a `next`. When Graph refuses a cursor (its item was
    /// deleted meanwhile), the edge is read again from the first page, once.
    async fn read_edge<T: DeserializeOwned>(
        &self,
        integration: &Integration,
        path: &str,
        params: &[(&'static str, String)],
        keep: impl Fn(&T) -> bool,
        first_only: bool,
    ) -> Result<Vec<T>, AppError> {
        let what = path.rsplit('/').next().unwrap_or(path);
        match self.read_edge_once(integration, path, params, &keep, first_only, what).await {
            Ok(items) => Ok(items),
            Err(EdgeError::Other(e)) => Err(e),
            Err(EdgeError::CursorRejected(_)) => {
                match self.read_edge_once(integration, path, params, &keep, first_only, what).await {
                    Ok(items) => Ok(items),
                    Err(EdgeError::Other(e) | EdgeError::CursorRejected(e)) => Err(e),
                }
            }
        }
    }

    async fn read_edge_once<T: DeserializeOwned>(
        &self,
        integration: &Integration,
        path: &str,
        params: &[(&'static str, String)],
        keep: &impl Fn(&T) -> bool,
        first_only: bool,
        what: &str,
    ) -> Result<Vec<T>, EdgeError> {
        let first = Self::url(integration, path)?;
        let mut query: Vec<(&str, String)> = vec![Self::token(integration), ("limit", PAGE_SIZE.to_string())];
        query.extend(params.iter().cloned());
        let mut request = self.http.client().get(&first).query(&query);
        let mut followed: HashSet<String> = HashSet::new();
        let mut kept = Vec::new();
        for page_number in 0..MAX_PAGES {
            let body = match self.send(integration, request).await {
                Ok(body) => body,
                Err(e @ AppError::Api { code: Some(100), .. }) if page_number > 0 => {
                    return Err(EdgeError::CursorRejected(e))
                }
                Err(e) => return Err(e.into()),
            };
            let page: ListPage<T> = serde_json::from_value(body)
                .map_err(|e| AppError::Protocol(format!("{what} answered an unexpected page: {e}")))?;
            for item in page.data {
                if keep(&item) {
                    kept.push(item);
                    if first_only {
                        return Ok(kept);
                    }
                }
            }
            let Some(next) = page.paging.and_then(|p| p.next).filter(|n| !n.is_empty()) else {
                return Ok(kept);
            };
            if !followed.insert(next.clone()) {
                return Err(AppError::Protocol(format!("{what} links back to a page already read")).into());
            }
            request = self.http.client().get(Self::next_url(integration, &next, what)?);
        }
        Err(AppError::Protocol(format!("{what} has more than {MAX_PAGES} pages")).into())
    }

    /// Pages through `/{business_id}/business_users` until the email turns up.
    async fn lookup(&self, integration: &Integration, email: &str) -> Result<Option<AppAccount>, AppError> {
        let business = Self::business_id(integration)?;
        let wanted = email.trim();
        let params = [("fields", "id,name,email,role".to_string())];
        let found = self
            .read_edge::<BusinessUserNode>(
                integration,
                &format!("{business}/business_users"),
                &params,
                |u| u.email.as_deref().is_some_and(|e| same_email(e, wanted)),
                true,
            )
            .await?;
        Ok(found.into_iter().next().map(BusinessUserNode::into_account))
    }

    /// The assets a business user holds, from every page of its `assigned_ad_accounts` and
    /// `assigned_pages` edges.
    async fn assets_of(&self, integration: &Integration, user_id: &str) -> Result<Assets, AppError> {
        let business = Self::business_id(integration)?;
        let user = Self::node_id(user_id, "business user")?;
        let mut assets = Assets::new();
        for edge in ASSET_EDGES {
            let params = [("business", business.clone()), ("fields", "id,tasks".to_string())];
            let held =
                self.read_edge::<AssetNode>(integration, &format!("{user}/{edge}"), &params, |_| true, false).await?;
            for asset in held {
                assets.insert(asset.id, role_of(&asset.tasks));
            }
        }
        Ok(assets)
    }

    async fn unassign(&self, integration: &Integration, asset: &str, user_id: &str) -> Result<(), AppError> {
        let url = Self::url(integration, &format!("{}/assigned_users", Self::node_id(asset, "asset")?))?;
        let query = [Self::token(integration), ("user", user_id.to_string())];
        match self.send(integration, self.http.client().delete(&url).query(&query)).await {
            Ok(body) => expect_success(body, "DELETE assigned_users"),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn assign(&self, integration: &Integration, asset: &str, user_id: &str, role: &str) -> Result<(), AppError> {
        let url = Self::url(integration, &format!("{}/assigned_users", Self::node_id(asset, "asset")?))?;
        let tasks = serde_json::to_string(&tasks_for(role)).unwrap_or_else(|_| "[]".into());
        let business = Self::business_id(integration)?;
        let form = [Self::token(integration), ("user", user_id.to_string()), ("tasks", tasks), ("business", business)];
        let body = self.send(integration, self.http.client().post(&url).form(&form)).await?;
        expect_success(body, "POST assigned_users")
    }

    /// The assets a remembered business user holds, None when Graph says the user is gone.
    /// An asset edge answering code 100 without the "does not exist" subcode is checked
    /// against the user node itself before it counts as an error.
    async fn assets_of_known(&self, integration: &Integration, id: &str) -> Result<Option<Assets>, AppError> {
        match self.assets_of(integration, id).await {
            Ok(assets) => Ok(Some(assets)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e @ AppError::Api { code: Some(100), .. }) => match self.get_user(integration, id).await? {
                None => Ok(None),
                Some(_) => Err(e),
            },
            Err(e) => Err(e),
        }
    }
}

#[derive(Deserialize)]
struct GraphErrorBody {
    error: GraphError,
}

#[derive(Deserialize)]
struct GraphError {
    message: Option<String>,
    code: Option<i64>,
    error_subcode: Option<i64>,
}

/// A page of a list edge.
#[derive(Deserialize)]
struct ListPage<T> {
    #[serde(default = "Vec::new")]
    data: Vec<T>,
    #[serde(default)]
    paging: Option<Paging>,
}

#[derive(Deserialize)]
struct Paging {
    #[serde(default)]
    next: Option<String>,
}

#[derive(Deserialize)]
struct BusinessUserNode {
    id: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    role: Option<String>,
}

impl BusinessUserNode {
    fn into_account(self) -> AppAccount {
        AppAccount { id: self.id, email: self.email.unwrap_or_default(), role: self.role, assets: None, active: true }
    }
}

/// A pending invitation (BusinessRoleRequest) as `pending_users` lists it.
#[derive(Deserialize)]
struct InvitationNode {
    id: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

impl InvitationNode {
    /// Whether the invitation can still be accepted.
    fn is_open(&self) -> bool {
        !self.status.as_deref().is_some_and(|s| CLOSED_INVITATIONS.iter().any(|c| c.eq_ignore_ascii_case(s.trim())))
    }
}

#[derive(Deserialize)]
struct AssetNode {
    id: String,
    #[serde(default)]
    tasks: Vec<String>,
}

#[derive(Deserialize)]
struct Success {
    success: bool,
}

#[derive(Deserialize)]
struct Created {
    id: String,
}

fn expect_success(body: serde_json::Value, what: &str) -> Result<(), AppError> {
    match serde_json::from_value::<Success>(body) {
        Ok(Success { success: true }) => Ok(()),
        Ok(Success { success: false }) => Err(AppError::Protocol(format!("{what} answered success: false"))),
        Err(e) => Err(AppError::Protocol(format!("{what} answered an unexpected body: {e}"))),
    }
}

impl AppAdapter for BusinessHub {
    fn app_kind(&self) -> &str {
        APP_KIND
    }

    fn http(&self) -> &AppHttp {
        &self.http
    }

    /// `GET /{business-user-id}` for a remembered id, else a page-by-page lookup; then the
    /// user's assets when the integration manages assets. A business user the hub still has
    /// under the remembered id is the person's whatever email it shows: Meta's ids are stable,
    /// and the IdP may have changed the person's email since (looking the new one up would
    /// invite them a second time and leave the first business user in place).
    async fn find(
        &self,
        integration: &Integration,
        email: &str,
        known_id: Option<&str>,
    ) -> Result<Option<AppAccount>, AppError> {
        let mut found = None;
        if let Some(id) = known_id.filter(|id| !id.is_empty()) {
            found = self.get_user(integration, id).await?;
        }
        if found.is_none() {
            found = self.lookup(integration, email).await?;
        }
        let Some(mut account) = found else {
            return Ok(None);
        };
        if Self::manages_assets(integration) {
            account.assets = Some(self.assets_of(integration, &account.id).await?);
        }
        Ok(Some(account))
    }

    /// Takes the user off every asset it holds (when the integration manages assets), then
    /// deletes the business user. Meta does not document that deleting a business user takes
    /// its asset assignments with it, so they are removed first, each removal idempotent: no
    /// asset access is left behind whatever Meta keeps, even when the DELETE itself is refused
    /// (the last admin, say). A user whose asset edges say it does not exist is already gone.
    async fn remove(&self, integration: &Integration, account: &AppAccount) -> Result<Removal, AppError> {
        let id = Self::node_id(&account.id, "business user")?;
        if Self::manages_assets(integration) {
            let held = match &account.assets {
                Some(assets) => assets.clone(),
                None => match self.assets_of_known(integration, id).await? {
                    Some(assets) => assets,
                    None => return Ok(Removal::AlreadyGone),
                },
            };
            for asset in held.keys() {
                self.unassign(integration, asset, id).await?;
            }
        }
        let url = Self::url(integration, id)?;
        let request = self.http.client().delete(&url).query(&[Self::token(integration)]);
        match self.send(integration, request).await {
            Ok(body) => expect_success(body, "DELETE business user").map(|()| Removal::Removed),
            Err(e) if e.is_not_found() => Ok(Removal::AlreadyGone),
            Err(e) => Err(e),
        }
    }

    async fn set_role(&self, integration: &Integration, account: &AppAccount, role: &str) -> Result<(), AppError> {
        let url = Self::url(integration, Self::node_id(&account.id, "business user")?)?;
        let form = [Self::token(integration), ("role", graph_role(role))];
        let body = self.send(integration, self.http.client().post(&url).form(&form)).await?;
        expect_success(body, "POST business user role")
    }

    /// Unassigns the assets not desired, then assigns each desired asset whose tasks differ
    /// (a POST replaces the user's tasks on that asset).
    async fn set_assets(
        &self,
        integration: &Integration,
        account: &AppAccount,
        desired: &Assets,
    ) -> Result<(), AppError> {
        if !Self::manages_assets(integration) && !desired.is_empty() {
            return Err(AppError::Misconfigured("assets were granted but the integration has no asset roles".into()));
        }
        let held = match &account.assets {
            Some(assets) => assets.clone(),
            None => self.assets_of(integration, &account.id).await?,
        };
        for asset in held.keys().filter(|a| !desired.contains_key(*a)) {
            self.unassign(integration, asset, &account.id).await?;
        }
        for (asset, role) in desired {
            if !held.get(asset).is_some_and(|have| self.asset_role_held(have, role)) {
                self.assign(integration, asset, &account.id, role).await?;
            }
        }
        Ok(())
    }

    async fn add(&self, integration: &Integration, email: &str, role: &str) -> Result<AppAccount, AppError> {
        let business = Self::business_id(integration)?;
        let url = Self::url(integration, &format!("{business}/business_users"))?;
        let form = [Self::token(integration), ("email", email.trim().to_string()), ("role", graph_role(role))];
        let body = self.send(integration, self.http.client().post(&url).form(&form)).await?;
        let created: Created = serde_json::from_value(body)
            .map_err(|e| AppError::Protocol(format!("POST business_users answered an unexpected body: {e}")))?;
        Ok(AppAccount {
            id: created.id,
            email: email.trim().to_string(),
            role: Some(role.to_string()),
            assets: Some(Assets::new()),
            active: true,
        })
    }

    /// `GET /{business-id}/pending_users?email=`: the invitations for the email that can still
    /// be accepted (the address is compared again here, as the directory compares it).
    async fn invitations(&self, integration: &Integration, email: &str) -> Result<Vec<Invitation>, AppError> {
        let business = Self::business_id(integration)?;
        let wanted = email.trim();
        let params = [("email", wanted.to_string()), ("fields", "id,email,role,status".to_string())];
        let open = self
            .read_edge::<InvitationNode>(
                integration,
                &format!("{business}/pending_users"),
                &params,
                |i| i.email.as_deref().is_some_and(|e| same_email(e, wanted)) && i.is_open(),
                false,
            )
            .await?;
        open.into_iter()
            .map(|i| {
                Self::node_id(&i.id, "invitation")?;
                Ok(Invitation { id: i.id, role: i.role })
            })
            .collect()
    }

    /// `DELETE /{business-role-request-id}`.
    async fn revoke_invitation(&self, integration: &Integration, invitation: &Invitation) -> Result<Removal, AppError> {
        let url = Self::url(integration, Self::node_id(&invitation.id, "invitation")?)?;
        let request = self.http.client().delete(&url).query(&[Self::token(integration)]);
        match self.send(integration, request).await {
            Ok(body) => expect_success(body, "DELETE invitation").map(|()| Removal::Removed),
            Err(e) if e.is_not_found() => Ok(Removal::AlreadyGone),
            Err(e) => Err(e),
        }
    }

    /// `POST /{business-role-request-id}` with `role`.
    async fn set_invitation_role(
        &self,
        integration: &Integration,
        invitation: &Invitation,
        role: &str,
    ) -> Result<(), AppError> {
        let url = Self::url(integration, Self::node_id(&invitation.id, "invitation")?)?;
        let form = [Self::token(integration), ("role", graph_role(role))];
        let body = self.send(integration, self.http.client().post(&url).form(&form)).await?;
        expect_success(body, "POST invitation role")
    }

    /// Ignoring case; with `settings.reported_roles: "base"`, a role is also held when Graph
    /// reports the base role Meta shows for it and it is the role last applied. A reported EMPLOYEE may be any non-base role,
    /// so it holds a desired EMPLOYEE only when EMPLOYEE was also the role last applied (see
    /// the module's documentation).
    fn role_held(&self, integration: &Integration, reported: &str, desired: &str, last_applied: Option<&str>) -> bool {
        let (reported, desired) = (reported.trim(), desired.trim());
        if reported.eq_ignore_ascii_case(EMPLOYEE) && desired.eq_ignore_ascii_case(EMPLOYEE) {
            return last_applied.is_some_and(|applied| applied.trim().eq_ignore_ascii_case(EMPLOYEE));
        }
        reported.eq_ignore_ascii_case(desired)
            || (reported_roles(integration) == ReportedRoles::Base
                && BASE_ROLES.iter().any(|b| b.eq_ignore_ascii_case(reported))
                && reported.eq_ignore_ascii_case(base_role(desired))
                && last_applied.is_some_and(|applied| applied.trim().eq_ignore_ascii_case(desired)))
    }

    /// The same tasks, whatever their order or case.
    fn asset_role_held(&self, reported: &str, desired: &str) -> bool {
        task_set(reported) == task_set(desired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asset_roles_map_to_graph_tasks_and_back() {
        assert_eq!(tasks_for("MANAGE"), ["MANAGE", "ADVERTISE", "ANALYZE"]);
        assert_eq!(tasks_for("advertise"), ["ADVERTISE", "ANALYZE"]);
        assert_eq!(tasks_for("ANALYZE"), ["ANALYZE"]);
        assert_eq!(tasks_for("CREATE_CONTENT"), ["CREATE_CONTENT"]);
        for role in ["MANAGE", "ADVERTISE", "ANALYZE"] {
            assert_eq!(role_of(&tasks_for(role)), role);
        }
        assert_eq!(role_of(&[]), "");
    }

    fn tasks(list: &[&str]) -> Vec<String> {
        list.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn an_asset_role_is_held_only_with_exactly_its_tasks() {
        assert_eq!(tasks_for("full_control"), ["FULL_CONTROL"]);
        assert_eq!(tasks_for("CREATE_CONTENT+MODERATE"), ["CREATE_CONTENT", "MODERATE"]);
        // A ladder step with one task more is no longer that step.
        let extra = role_of(&tasks(&["ADVERTISE", "ANALYZE", "DRAFT"]));
        assert_eq!(extra, "ADVERTISE+ANALYZE+DRAFT");
        assert_ne!(task_set(&extra), task_set("ADVERTISE"));
        assert_eq!(role_of(&tasks(&["analyze", "Advertise"])), "ADVERTISE");
        assert_eq!(role_of(&tasks(&["FULL_CONTROL"])), "FULL_CONTROL");
        assert_eq!(task_set(&role_of(&tasks(&["FULL_CONTROL"]))), task_set("full_control"));
        for role in ["MANAGE", "AA_ANALYZE", "CONTENT+MESSAGES"] {
            assert_eq!(task_set(&role_of(&tasks_for(role))), task_set(role), "{role}");
        }
    }

    fn integration(base_url: &str) -> Integration {
        Integration {
            tenant_id: uuid::Uuid::nil(),
            id: uuid::Uuid::nil(),
            name: "Hub".into(),
            app_kind: APP_KIND.into(),
            base_url: base_url.into(),
            settings: serde_json::json!({ "business_id": "1" }),
            credential: "tok".into(),
            roles: Vec::new(),
            asset_roles: Vec::new(),
            needs_attention: None,
        }
    }

    /// Graph reports EMPLOYEE for every non-base role, so a reported EMPLOYEE holds a desired
    /// EMPLOYEE only when EMPLOYEE is known to be the role last applied, whatever the
    /// integration says Graph reports; every other comparison is as it was.
    #[test]
    fn a_reported_employee_holds_employee_only_when_employee_was_last_applied() {
        let limits = std::sync::Arc::new(crate::limit::RateLimits::new());
        let hub =
            BusinessHub::new(AppHttp::new(std::time::Duration::from_secs(1), limits, DEFAULT_RATE).expect("client"));
        let exact = integration("https://graph.facebook.com");
        let mut base = exact.clone();
        base.settings = serde_json::json!({ "business_id": "1", "reported_roles": "base" });
        for i in [&exact, &base] {
            let held = |reported, desired, applied| hub.role_held(i, reported, desired, applied);
            assert!(held("EMPLOYEE", "EMPLOYEE", Some("EMPLOYEE")));
            assert!(held("employee", " EMPLOYEE", Some("Employee ")), "ignoring case and space");
            assert!(!held("EMPLOYEE", "EMPLOYEE", None), "not known: written, not assumed");
            assert!(!held("EMPLOYEE", "EMPLOYEE", Some("FINANCE_EDITOR")), "a move down to EMPLOYEE");
            assert!(!held("EMPLOYEE", "EMPLOYEE", Some("DEVELOPER")));
            assert!(held("ADMIN", "ADMIN", None), "ADMIN stands for nothing else");
            assert!(!held("ADMIN", "EMPLOYEE", Some("EMPLOYEE")));
            assert!(!held("EMPLOYEE", "ADMIN", Some("ADMIN")));
        }
        // Non-base roles: exact mode writes them at every task; base mode takes their base role
        // as them when they were last applied, and writes them on a move or when not known.
        assert!(!hub.role_held(&exact, "EMPLOYEE", "DEVELOPER", Some("DEVELOPER")));
        assert!(hub.role_held(&base, "EMPLOYEE", "DEVELOPER", Some("DEVELOPER")));
        assert!(hub.role_held(&base, "EMPLOYEE", "developer", Some("Developer")));
        assert!(!hub.role_held(&base, "EMPLOYEE", "DEVELOPER", Some("FINANCE_EDITOR")), "a move between them");
        assert!(!hub.role_held(&base, "EMPLOYEE", "DEVELOPER", None));
        assert!(!hub.role_held(&base, "ADMIN", "DEVELOPER", Some("DEVELOPER")));
    }

    #[test]
    fn next_links_are_followed_only_to_the_integrations_own_host() {
        let i = integration("https://graph.facebook.com/");
        let kept = BusinessHub::next_url(
            &i,
            "https://graph.facebook.com/v25.0/1/business_users?access_token=tok&after=QQ",
            "x",
        )
        .expect("same host");
        assert_eq!(kept.query_pairs().filter(|(k, _)| k == "access_token").count(), 1, "not added twice");
        let added = BusinessHub::next_url(&i, "https://graph.facebook.com:443/v25.0/1/business_users?after=QQ", "x")
            .expect("the default port is the same port");
        assert!(added.query_pairs().any(|(k, v)| k == "access_token" && v == "tok"), "{added}");
        for elsewhere in [
            "https://evil.example/v25.0/1/business_users?after=QQ",
            "http://graph.facebook.com/v25.0/1/business_users?after=QQ",
            "https://graph.facebook.com:8443/v25.0/1/business_users?after=QQ",
            "/v25.0/1/business_users?after=QQ",
        ] {
            let err = BusinessHub::next_url(&i, elsewhere, "business_users").expect_err(elsewhere);
            assert!(matches!(err, AppError::Protocol(_)), "{elsewhere}: {err:?}");
            assert!(!err.to_string().contains("tok"), "{err}");
        }
    }
}
