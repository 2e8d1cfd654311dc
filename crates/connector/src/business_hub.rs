//! The business-hub adapter: Meta Business Manager's Graph API (`/v25.0/`), business users
//! only. The integration's `settings.business_id` names the business and its credential is
//! sent as the `access_token` parameter.
//!
//! reqwest puts request URLs (with the token in the query) into its error messages, so every
//! transport error is stripped of its URL before it becomes an [`AppError`].

use crate::adapter::{AppAccount, AppAdapter, Removal};
use crate::error::{parse_retry_after, AppError};
use serde::Deserialize;
use std::time::Duration;
use unseat_store::apply::Integration;

/// The Graph API version this adapter speaks.
pub const GRAPH_VERSION: &str = "v25.0";
/// The app kind of business hubs.
pub const APP_KIND: &str = "business_hub";
/// Users fetched per page when looking someone up.
const PAGE_SIZE: u32 = 100;
/// Pages read at most while looking someone up (100 000 users), so a hub that keeps answering
/// `next` cannot loop us forever.
const MAX_PAGES: usize = 1_000;
/// Longest error message kept from an app's body.
const MAX_MESSAGE: usize = 300;

/// Speaks to Meta Business Manager (or the project's emulator of it).
#[derive(Clone)]
pub struct BusinessHub {
    http: reqwest::Client,
    timeout: Duration,
}

impl BusinessHub {
    /// A client with rustls and a per-request `timeout`.
    pub fn new(timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("unseat/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { http, timeout })
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

    fn node_id(account: &AppAccount) -> Result<&str, AppError> {
        if account.id.is_empty() || !account.id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AppError::Protocol(format!("business user id {:?} is not numeric", account.id)));
        }
        Ok(&account.id)
    }

    /// Sends a request and returns the body of a 2xx answer; anything else becomes an
    /// [`AppError`] with the Graph code, subcode and message, and `Retry-After`.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<serde_json::Value, AppError> {
        let response = request.send().await.map_err(|e| self.transport(e))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
        let bytes = response.bytes().await.map_err(|e| self.transport(e))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| {
                AppError::Protocol(format!("HTTP {} with a body that is not JSON: {e}", status.as_u16()))
            });
        }
        let graph = serde_json::from_slice::<GraphErrorBody>(&bytes).ok().map(|b| b.error);
        let (code, subcode, message) = match graph {
            Some(g) => (g.code, g.error_subcode, g.message.unwrap_or_default()),
            None => (None, None, String::from_utf8_lossy(&bytes).into_owned()),
        };
        Err(AppError::Api { status: status.as_u16(), code, subcode, message: truncate(message), retry_after })
    }

    fn transport(&self, error: reqwest::Error) -> AppError {
        if error.is_timeout() {
            return AppError::Timeout(self.timeout);
        }
        // Never let the URL (and its access_token) into a message.
        let error = error.without_url();
        let mut message = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        AppError::Unreachable(truncate(message))
    }
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
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

    /// Pages through `/{business_id}/business_users` (following `cursors.after` while the
    /// page has a `next`) until the email turns up.
    async fn find(&self, integration: &Integration, email: &str) -> Result<Option<AppAccount>, AppError> {
        let business = Self::business_id(integration)?;
        let url = Self::url(integration, &format!("{business}/business_users"))?;
        let wanted = email.trim();
        let mut after: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut query: Vec<(&str, String)> = vec![
                ("access_token", integration.credential.clone()),
                ("fields", "id,name,email,role".into()),
                ("limit", PAGE_SIZE.to_string()),
            ];
            if let Some(cursor) = &after {
                query.push(("after", cursor.clone()));
            }
            let body = self.send(self.http.get(&url).query(&query)).await?;
            let page: Page = serde_json::from_value(body)
                .map_err(|e| AppError::Protocol(format!("business_users answered an unexpected page: {e}")))?;
            if let Some(user) = page
                .data
                .into_iter()
                .find(|u| u.email.as_deref().is_some_and(|e| e.trim().eq_ignore_ascii_case(wanted)))
            {
                return Ok(Some(AppAccount { id: user.id, email: user.email.unwrap_or_default(), role: user.role }));
            }
            let Some(paging) = page.paging.filter(|p| p.next.is_some()) else {
                return Ok(None);
            };
            let next = paging.cursors.and_then(|c| c.after).filter(|c| !c.is_empty());
            match next {
                Some(cursor) if after.as_ref() != Some(&cursor) => after = Some(cursor),
                _ => return Err(AppError::Protocol("business_users has a next page but no new after cursor".into())),
            }
        }
        Err(AppError::Protocol(format!("business_users has more than {MAX_PAGES} pages")))
    }

    async fn remove(&self, integration: &Integration, account: &AppAccount) -> Result<Removal, AppError> {
        let url = Self::url(integration, Self::node_id(account)?)?;
        let request = self.http.delete(&url).query(&[("access_token", integration.credential.as_str())]);
        match self.send(request).await {
            Ok(body) => expect_success(body, "DELETE business user").map(|()| Removal::Removed),
            Err(e) if e.is_not_found() => Ok(Removal::AlreadyGone),
            Err(e) => Err(e),
        }
    }

    async fn set_role(&self, integration: &Integration, account: &AppAccount, role: &str) -> Result<(), AppError> {
        let url = Self::url(integration, Self::node_id(account)?)?;
        let form = [("access_token", integration.credential.as_str()), ("role", role)];
        let body = self.send(self.http.post(&url).form(&form)).await?;
        expect_success(body, "POST business user role")
    }

    async fn add(&self, integration: &Integration, email: &str, role: &str) -> Result<AppAccount, AppError> {
        let business = Self::business_id(integration)?;
        let url = Self::url(integration, &format!("{business}/business_users"))?;
        let form = [("access_token", integration.credential.as_str()), ("email", email.trim()), ("role", role)];
        let body = self.send(self.http.post(&url).form(&form)).await?;
        let created: Created = serde_json::from_value(body)
            .map_err(|e| AppError::Protocol(format!("POST business_users answered an unexpected body: {e}")))?;
        Ok(AppAccount { id: created.id, email: email.trim().to_string(), role: Some(role.to_string()) })
    }
}
