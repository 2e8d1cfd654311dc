//! The outbound SCIM 2.0 adapter (RFC 7644): the many SaaS apps that deprovision through a
//! SCIM service provider. The integration's `base_url` is the app's SCIM base (the URL that
//! `/Users` hangs off) and its credential is the bearer token.
//!
//! Settings:
//! - `match_attribute`: `userName` (default) or `externalId`: which attribute holds the
//!   user's email in the app;
//! - `deprovision`: `deactivate` (default: PATCH `active: false`, the account stays) or
//!   `delete` (DELETE the resource);
//! - `rate_limit_per_second`: as for every app kind.
//!
//! The role goes into the multi-valued `roles` attribute as its one primary value. SCIM apps
//! have no assets here: granting assets to a SCIM integration is a misconfiguration.

use crate::adapter::{same_email, AppAccount, AppAdapter, Assets, Removal};
use crate::error::AppError;
use crate::http::{truncate, Answer, AppHttp};
use serde::Deserialize;
use serde_json::{json, Value};
use unseat_domain::SEAT;
use unseat_store::apply::Integration;

/// The app kind of outbound SCIM apps.
pub const APP_KIND: &str = "scim";
/// Requests per second per integration unless its settings say otherwise: most SaaS SCIM
/// endpoints allow a few hundred requests a minute.
pub const DEFAULT_RATE: f64 = 10.0;

const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const SCIM_JSON: &str = "application/scim+json";

/// Speaks SCIM 2.0 to an app.
#[derive(Clone)]
pub struct ScimApp {
    http: AppHttp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MatchOn {
    UserName,
    ExternalId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deprovision {
    Deactivate,
    Delete,
}

impl ScimApp {
    pub fn new(http: AppHttp) -> Self {
        Self { http }
    }

    fn match_on(integration: &Integration) -> Result<MatchOn, AppError> {
        match integration.settings.get("match_attribute").and_then(Value::as_str) {
            None | Some("userName") => Ok(MatchOn::UserName),
            Some("externalId") => Ok(MatchOn::ExternalId),
            Some(other) => Err(AppError::Misconfigured(format!(
                "settings.match_attribute {other:?} is not userName or externalId"
            ))),
        }
    }

    fn deprovision(integration: &Integration) -> Result<Deprovision, AppError> {
        match integration.settings.get("deprovision").and_then(Value::as_str) {
            None | Some("deactivate") => Ok(Deprovision::Deactivate),
            Some("delete") => Ok(Deprovision::Delete),
            Some(other) => {
                Err(AppError::Misconfigured(format!("settings.deprovision {other:?} is not deactivate or delete")))
            }
        }
    }

    fn url(integration: &Integration, path: &str) -> Result<String, AppError> {
        let base = integration.base_url.trim_end_matches('/');
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(AppError::Misconfigured(format!("base_url {base:?} is not an http(s) URL")));
        }
        Ok(format!("{base}/{path}"))
    }

    fn user_url(integration: &Integration, id: &str) -> Result<String, AppError> {
        if id.is_empty() || id.len() > 256 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            return Err(AppError::Protocol(format!("SCIM id {id:?} is not a plain resource id")));
        }
        Self::url(integration, &format!("Users/{id}"))
    }

    fn request(&self, integration: &Integration, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let builder = builder.header(reqwest::header::ACCEPT, SCIM_JSON);
        if integration.credential.is_empty() {
            builder
        } else {
            builder.bearer_auth(&integration.credential)
        }
    }

    async fn send(&self, integration: &Integration, builder: reqwest::RequestBuilder) -> Result<Answer, AppError> {
        let answer = self.http.send(integration, self.request(integration, builder)).await?;
        if answer.is_success() {
            return Ok(answer);
        }
        Err(error_of(&answer))
    }

    async fn send_json(&self, integration: &Integration, builder: reqwest::RequestBuilder) -> Result<Value, AppError> {
        let answer = self.send(integration, builder).await?;
        serde_json::from_slice(&answer.body)
            .map_err(|e| AppError::Protocol(format!("HTTP {} with a body that is not JSON: {e}", answer.status)))
    }

    async fn get_user(&self, integration: &Integration, id: &str) -> Result<Option<AppAccount>, AppError> {
        let url = Self::user_url(integration, id)?;
        match self.send_json(integration, self.http.client().get(&url)).await {
            Ok(body) => Ok(Some(account_of(body)?)),
            Err(e) if e.status_code() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn lookup(&self, integration: &Integration, email: &str) -> Result<Option<AppAccount>, AppError> {
        let attribute = match Self::match_on(integration)? {
            MatchOn::UserName => "userName",
            MatchOn::ExternalId => "externalId",
        };
        let escaped = email.trim().replace('\\', "\\\\").replace('"', "\\\"");
        let filter = format!("{attribute} eq \"{escaped}\"");
        let url = Self::url(integration, "Users")?;
        let query = [("filter", filter.as_str()), ("count", "2")];
        let body = self.send_json(integration, self.http.client().get(&url).query(&query)).await?;
        let list: ListResponse = serde_json::from_value(body)
            .map_err(|e| AppError::Protocol(format!("Users answered an unexpected list: {e}")))?;
        let wanted = email.trim();
        let mut matches = list.resources.into_iter().map(account_of).collect::<Result<Vec<_>, _>>()?;
        matches.retain(|a| same_email(&a.email, wanted));
        match matches.len() {
            0 => Ok(None),
            1 => Ok(matches.pop()),
            n => Err(AppError::Protocol(format!("{n} accounts match {attribute} {wanted:?}; refusing to guess"))),
        }
    }

    async fn patch(&self, integration: &Integration, id: &str, operations: Value) -> Result<(), AppError> {
        let url = Self::user_url(integration, id)?;
        let body = json!({ "schemas": [PATCH_SCHEMA], "Operations": operations });
        self.send(integration, self.http.client().patch(&url).json(&body)).await.map(|_| ())
    }
}

/// An error answer as an [`AppError`]: the SCIM error body's `detail` (and `scimType`) when
/// there is one, else the raw body.
fn error_of(answer: &Answer) -> AppError {
    let parsed = serde_json::from_slice::<Value>(&answer.body).ok();
    let detail = parsed.as_ref().and_then(|v| v.get("detail")).and_then(Value::as_str).map(str::to_string);
    let scim_type = parsed.as_ref().and_then(|v| v.get("scimType")).and_then(Value::as_str);
    let message = match (detail, scim_type) {
        (Some(d), Some(t)) => format!("{d} (scimType {t})"),
        (Some(d), None) => d,
        _ => String::from_utf8_lossy(&answer.body).into_owned(),
    };
    AppError::Api {
        status: answer.status,
        code: None,
        subcode: None,
        message: truncate(message),
        retry_after: answer.retry_after(),
    }
}

#[derive(Deserialize)]
struct ListResponse {
    #[serde(rename = "Resources", default)]
    resources: Vec<Value>,
}

/// Reads a SCIM User: the email is the userName (or externalId, or the primary email), the
/// role the primary (else first) value of `roles`.
fn account_of(resource: Value) -> Result<AppAccount, AppError> {
    let id = resource
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| AppError::Protocol("a SCIM user without an id".into()))?
        .to_string();
    let text = |name: &str| resource.get(name).and_then(Value::as_str).map(str::to_string);
    let primary_email = resource.get("emails").and_then(Value::as_array).and_then(|emails| {
        emails
            .iter()
            .find(|e| e.get("primary").and_then(Value::as_bool) == Some(true))
            .or_else(|| emails.first())
            .and_then(|e| e.get("value"))
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let user_name = text("userName").filter(|u| u.contains('@'));
    let email =
        user_name.or_else(|| text("externalId").filter(|u| u.contains('@'))).or(primary_email).unwrap_or_default();
    let role = resource.get("roles").and_then(Value::as_array).and_then(|roles| {
        roles
            .iter()
            .find(|r| r.get("primary").and_then(Value::as_bool) == Some(true))
            .or_else(|| roles.first())
            .and_then(|r| r.get("value"))
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let active = resource.get("active").and_then(Value::as_bool).unwrap_or(true);
    // An account without roles holds a seat: what a seat-only integration grants.
    let role = role.or_else(|| Some(SEAT.to_string()));
    Ok(AppAccount { id, email, role, assets: None, active })
}

/// A lookup that matched on externalId leaves the email in externalId; keep it comparable.
fn with_email(mut account: AppAccount, email: &str) -> AppAccount {
    if account.email.is_empty() {
        account.email = email.trim().to_string();
    }
    account
}

impl AppAdapter for ScimApp {
    fn app_kind(&self) -> &str {
        APP_KIND
    }

    fn http(&self) -> &AppHttp {
        &self.http
    }

    async fn find(
        &self,
        integration: &Integration,
        email: &str,
        known_id: Option<&str>,
    ) -> Result<Option<AppAccount>, AppError> {
        if let Some(id) = known_id.filter(|id| !id.is_empty()) {
            if let Some(account) = self.get_user(integration, id).await? {
                let account = with_email(account, email);
                if same_email(&account.email, email) {
                    return Ok(Some(account));
                }
            }
        }
        Ok(self.lookup(integration, email).await?.map(|a| with_email(a, email)))
    }

    async fn remove(&self, integration: &Integration, account: &AppAccount) -> Result<Removal, AppError> {
        let result = match Self::deprovision(integration)? {
            Deprovision::Deactivate => {
                self.patch(integration, &account.id, json!([{ "op": "replace", "value": { "active": false } }])).await
            }
            Deprovision::Delete => {
                let url = Self::user_url(integration, &account.id)?;
                self.send(integration, self.http.client().delete(&url)).await.map(|_| ())
            }
        };
        match result {
            Ok(()) => Ok(Removal::Removed),
            Err(e) if e.status_code() == Some(404) => Ok(Removal::AlreadyGone),
            Err(e) => Err(e),
        }
    }

    async fn set_role(&self, integration: &Integration, account: &AppAccount, role: &str) -> Result<(), AppError> {
        // A seat is no role the app knows: a seat-only integration only keeps the account active.
        let value = if role == SEAT {
            json!({ "active": true })
        } else {
            json!({ "active": true, "roles": [{ "value": role, "primary": true }] })
        };
        self.patch(integration, &account.id, json!([{ "op": "replace", "value": value }])).await
    }

    async fn set_assets(
        &self,
        _integration: &Integration,
        _account: &AppAccount,
        desired: &Assets,
    ) -> Result<(), AppError> {
        if desired.is_empty() {
            return Ok(());
        }
        Err(AppError::Misconfigured("assets were granted but SCIM apps have no assets".into()))
    }

    async fn add(&self, integration: &Integration, email: &str, role: &str) -> Result<AppAccount, AppError> {
        let email = email.trim();
        let mut body = json!({
            "schemas": [USER_SCHEMA],
            "userName": email,
            "active": true,
            "emails": [{ "value": email, "primary": true, "type": "work" }],
        });
        if role != SEAT {
            body["roles"] = json!([{ "value": role, "primary": true }]);
        }
        if Self::match_on(integration)? == MatchOn::ExternalId {
            body["externalId"] = json!(email);
        }
        let url = Self::url(integration, "Users")?;
        let created = self.send_json(integration, self.http.client().post(&url).json(&body)).await?;
        let account = with_email(account_of(created)?, email);
        Ok(AppAccount { role: Some(role.to_string()), ..account })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_users_as_apps_send_them() {
        let a = account_of(json!({
            "id": "u1", "userName": "Alice@Example.com", "active": false,
            "roles": [{"value": "viewer"}, {"value": "admin", "primary": true}]
        }))
        .expect("user");
        assert_eq!(
            (a.id.as_str(), a.email.as_str(), a.role.as_deref(), a.active),
            ("u1", "Alice@Example.com", Some("admin"), false)
        );
        let b = account_of(json!({ "id": "u2", "userName": "bob", "emails": [{"value": "bob@x.io"}] })).expect("user");
        assert_eq!((b.email.as_str(), b.role.as_deref(), b.active), ("bob@x.io", Some(SEAT), true), "no roles: a seat");
        assert!(account_of(json!({ "userName": "no id" })).is_err());
    }
}
