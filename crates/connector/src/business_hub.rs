//! The business-hub adapter: Meta Business Manager's Graph API (`/v25.0/`): business users
//! with roles, and assets (ad accounts, pages) with the tasks each user may perform on them.
//! The integration's `settings.business_id` names the business and its credential is sent as
//! the `access_token` parameter.
//!
//! Asset roles map to Graph tasks, each role including the ones below it: MANAGE → MANAGE,
//! ADVERTISE, ANALYZE; ADVERTISE → ADVERTISE, ANALYZE; ANALYZE → ANALYZE. Any other asset role
//! is sent as the single task of that name.
//!
//! reqwest puts request URLs (with the token in the query) into its error messages, so every
//! transport error is stripped of its URL before it becomes an [`AppError`] (see [`AppHttp`]).

use crate::adapter::{same_email, AppAccount, AppAdapter, Assets, Removal};
use crate::error::AppError;
use crate::http::{truncate, Answer, AppHttp};
use serde::Deserialize;
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
/// Pages read at most from one list edge (100 000 items), so a hub that keeps answering
/// `next` cannot loop us forever.
const MAX_PAGES: usize = 1_000;
/// The edges of a business user that list its assets.
const ASSET_EDGES: [&str; 2] = ["assigned_ad_accounts", "assigned_pages"];

/// Graph codes that mean "slow down".
fn is_throttle_code(code: i64) -> bool {
    matches!(code, 4 | 17 | 32 | 613) || (80000..=80014).contains(&code)
}

/// The Graph tasks an asset role stands for.
pub fn tasks_for(asset_role: &str) -> Vec<String> {
    let ladder = ["MANAGE", "ADVERTISE", "ANALYZE"];
    match ladder.iter().position(|r| r.eq_ignore_ascii_case(asset_role)) {
        Some(i) => ladder[i..].iter().map(|s| s.to_string()).collect(),
        None => vec![asset_role.to_ascii_uppercase()],
    }
}

/// The asset role a set of Graph tasks amounts to: the highest ladder task held.
pub fn role_of(tasks: &[String]) -> String {
    for role in ["MANAGE", "ADVERTISE", "ANALYZE"] {
        if tasks.iter().any(|t| t.eq_ignore_ascii_case(role)) {
            return role.to_string();
        }
    }
    tasks.first().cloned().unwrap_or_default()
}

/// Speaks to Meta Business Manager (or the project's emulator of it).
#[derive(Clone)]
pub struct BusinessHub {
    http: AppHttp,
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
            self.http.throttled(integration).await;
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

    /// Pages through `/{business_id}/business_users` (following `cursors.after` while the
    /// page has a `next`) until the email turns up.
    async fn lookup(&self, integration: &Integration, email: &str) -> Result<Option<AppAccount>, AppError> {
        let business = Self::business_id(integration)?;
        let url = Self::url(integration, &format!("{business}/business_users"))?;
        let wanted = email.trim();
        let mut after: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut query: Vec<(&str, String)> = vec![
                Self::token(integration),
                ("fields", "id,name,email,role".into()),
                ("limit", PAGE_SIZE.to_string()),
            ];
            if let Some(cursor) = &after {
                query.push(("after", cursor.clone()));
            }
            let body = self.send(integration, self.http.client().get(&url).query(&query)).await?;
            let page: Page = serde_json::from_value(body)
                .map_err(|e| AppError::Protocol(format!("business_users answered an unexpected page: {e}")))?;
            if let Some(user) =
                page.data.into_iter().find(|u| u.email.as_deref().is_some_and(|e| same_email(e, wanted)))
            {
                return Ok(Some(user.into_account()));
            }
            match next_cursor(page.paging, after.as_deref(), "business_users")? {
                Some(cursor) => after = Some(cursor),
                None => return Ok(None),
            }
        }
        Err(AppError::Protocol(format!("business_users has more than {MAX_PAGES} pages")))
    }

    /// The assets a business user holds, from every page of its `assigned_ad_accounts` and
    /// `assigned_pages` edges.
    async fn assets_of(&self, integration: &Integration, user_id: &str) -> Result<Assets, AppError> {
        let business = Self::business_id(integration)?;
        let mut assets = Assets::new();
        for edge in ASSET_EDGES {
            let url = Self::url(integration, &format!("{}/{edge}", Self::node_id(user_id, "business user")?))?;
            let mut after: Option<String> = None;
            let mut complete = false;
            for _ in 0..MAX_PAGES {
                let mut query: Vec<(&str, String)> = vec![
                    Self::token(integration),
                    ("business", business.clone()),
                    ("fields", "id,tasks".into()),
                    ("limit", PAGE_SIZE.to_string()),
                ];
                if let Some(cursor) = &after {
                    query.push(("after", cursor.clone()));
                }
                let body = self.send(integration, self.http.client().get(&url).query(&query)).await?;
                let page: AssetPage = serde_json::from_value(body)
                    .map_err(|e| AppError::Protocol(format!("{edge} answered an unexpected page: {e}")))?;
                for asset in page.data {
                    assets.insert(asset.id, role_of(&asset.tasks));
                }
                match next_cursor(page.paging, after.as_deref(), edge)? {
                    Some(cursor) => after = Some(cursor),
                    None => {
                        complete = true;
                        break;
                    }
                }
            }
            if !complete {
                return Err(AppError::Protocol(format!("{edge} has more than {MAX_PAGES} pages")));
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

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    data: Vec<BusinessUserNode>,
    #[serde(default)]
    paging: Option<Paging>,
}

#[derive(Deserialize)]
struct Paging {
    #[serde(default)]
    cursors: Option<Cursors>,
    #[serde(default)]
    next: Option<String>,
}

#[derive(Deserialize)]
struct Cursors {
    #[serde(default)]
    after: Option<String>,
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

#[derive(Deserialize)]
struct AssetPage {
    #[serde(default)]
    data: Vec<AssetNode>,
    #[serde(default)]
    paging: Option<Paging>,
}

/// The cursor of the page after this one: None on the last page (no `paging.next`); an
/// error when a next page is announced without a new `after` cursor (we would loop).
fn next_cursor(paging: Option<Paging>, current: Option<&str>, what: &str) -> Result<Option<String>, AppError> {
    let Some(paging) = paging.filter(|p| p.next.is_some()) else {
        return Ok(None);
    };
    match paging.cursors.and_then(|c| c.after).filter(|c| !c.is_empty()) {
        Some(cursor) if current != Some(cursor.as_str()) => Ok(Some(cursor)),
        _ => Err(AppError::Protocol(format!("{what} has a next page but no new after cursor"))),
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

    /// `GET /{business-user-id}` for a remembered id (checked against the email), else a
    /// page-by-page lookup; then the user's assets when the integration manages assets.
    async fn find(
        &self,
        integration: &Integration,
        email: &str,
        known_id: Option<&str>,
    ) -> Result<Option<AppAccount>, AppError> {
        let mut found = None;
        if let Some(id) = known_id.filter(|id| !id.is_empty()) {
            found = self.get_user(integration, id).await?.filter(|account| same_email(&account.email, email));
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
    /// deletes the business user.
    async fn remove(&self, integration: &Integration, account: &AppAccount) -> Result<Removal, AppError> {
        let id = Self::node_id(&account.id, "business user")?;
        if Self::manages_assets(integration) {
            let held = match &account.assets {
                Some(assets) => assets.clone(),
                None => match self.assets_of(integration, id).await {
                    Ok(assets) => assets,
                    Err(e) if e.is_not_found() => return Ok(Removal::AlreadyGone),
                    Err(e) => return Err(e),
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
        let form = [Self::token(integration), ("role", role.to_string())];
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
            if held.get(asset) != Some(role) {
                self.assign(integration, asset, &account.id, role).await?;
            }
        }
        Ok(())
    }

    async fn add(&self, integration: &Integration, email: &str, role: &str) -> Result<AppAccount, AppError> {
        let business = Self::business_id(integration)?;
        let url = Self::url(integration, &format!("{business}/business_users"))?;
        let form = [Self::token(integration), ("email", email.trim().to_string()), ("role", role.to_string())];
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
}
