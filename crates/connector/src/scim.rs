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

impl MatchOn {
    fn attribute(self) -> &'static str {
        match self {
            MatchOn::UserName => "userName",
            MatchOn::ExternalId => "externalId",
        }
    }

    fn other(self) -> MatchOn {
        match self {
            MatchOn::UserName => MatchOn::ExternalId,
            MatchOn::ExternalId => MatchOn::UserName,
        }
    }
}

/// The longest resource id put into a URL.
const MAX_ID: usize = 1024;

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

    /// `…/Users/{id}`, the id percent-encoded as one path segment: apps issue ids such as
    /// `auth0|5f1c…` or `jane@corp`, which are theirs to choose (RFC 7643 3.1).
    fn user_url(integration: &Integration, id: &str) -> Result<String, AppError> {
        if id.is_empty() || id.len() > MAX_ID || id == "." || id == ".." {
            return Err(AppError::Protocol(format!(
                "the app gave the SCIM id {:?}, which names no resource",
                truncate(id.into())
            )));
        }
        Self::url(integration, &format!("Users/{}", path_segment(id)))
    }

    fn request(&self, integration: &Integration, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let builder = builder.header(reqwest::header::ACCEPT, SCIM_JSON);
        if integration.credential.is_empty() {
            builder
        } else {
            builder.bearer_auth(&integration.credential)
        }
    }

    /// A request body as SCIM media (RFC 7644 3.1).
    fn with_body(builder: reqwest::RequestBuilder, body: &Value) -> reqwest::RequestBuilder {
        builder.header(reqwest::header::CONTENT_TYPE, SCIM_JSON).body(body.to_string())
    }

    async fn send(
        &self,
        integration: &Integration,
        method: &str,
        builder: reqwest::RequestBuilder,
    ) -> Result<Answer, AppError> {
        let answer = self.http.send(integration, self.request(integration, builder)).await?;
        if answer.is_success() {
            return Ok(answer);
        }
        Err(error_of(&answer, method))
    }

    async fn send_json(
        &self,
        integration: &Integration,
        method: &str,
        builder: reqwest::RequestBuilder,
    ) -> Result<Value, AppError> {
        let answer = self.send(integration, method, builder).await?;
        serde_json::from_slice(&answer.body)
            .map_err(|e| AppError::Protocol(format!("HTTP {} with a body that is not JSON: {e}", answer.status)))
    }

    async fn get_user(&self, integration: &Integration, id: &str) -> Result<Option<AppAccount>, AppError> {
        let url = Self::user_url(integration, id)?;
        match self.send_json(integration, "GET", self.http.client().get(&url)).await {
            Ok(body) => Ok(Some(account_of(&body)?)),
            Err(e) if e.status_code() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The one account whose `on` attribute is `email` (ignoring case, as emails compare),
    /// filtered for by the app. An answer that lists users without that value means the app
    /// did not apply the filter: nobody can be told apart from it, so it is an error, never
    /// "not there".
    async fn lookup(
        &self,
        integration: &Integration,
        on: MatchOn,
        email: &str,
    ) -> Result<Option<(AppAccount, Value)>, AppError> {
        let attribute = on.attribute();
        let wanted = email.trim();
        let url = format!("{}?{}", Self::url(integration, "Users")?, filter_query(attribute, wanted));
        let body = self.send_json(integration, "GET", self.http.client().get(&url)).await?;
        let resources = match field(&body, "Resources") {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(resources)) => resources.as_slice(),
            Some(_) => return Err(AppError::Protocol("Users answered a list whose Resources is not an array".into())),
        };
        let total = field(&body, "totalResults").and_then(Value::as_u64);
        let mut matches = Vec::new();
        for resource in resources {
            if let Some(value) = text(resource, attribute).filter(|v| same_email(v, wanted)) {
                matches
                    .push((AppAccount { email: value.trim().to_string(), ..account_of(resource)? }, resource.clone()));
            }
        }
        let (returned, total) = (resources.len(), total.unwrap_or(0));
        let unfiltered = (matches.is_empty() && (returned > 0 || total > 0))
            || (matches.len() < returned && total > returned as u64);
        if unfiltered {
            // Every lookup in this app fails the same way: the integration needs an admin.
            return Err(AppError::Misconfigured(format!(
                "the app did not apply the filter {attribute} eq {wanted:?}: it listed {returned} users (of \
                 totalResults {total}), {} of them with that {attribute}; nobody can be looked up in it (does \
                 the app filter on {attribute}? see the integration's match_attribute)",
                matches.len()
            )));
        }
        match matches.len() {
            0 => Ok(None),
            1 => Ok(matches.pop()),
            n => Err(AppError::Protocol(format!("{n} accounts match {attribute} {wanted:?}; refusing to guess"))),
        }
    }

    async fn patch(&self, integration: &Integration, id: &str, operations: Value) -> Result<Option<Value>, AppError> {
        let url = Self::user_url(integration, id)?;
        let body = json!({ "schemas": [PATCH_SCHEMA], "Operations": operations });
        let answer = self.send(integration, "PATCH", Self::with_body(self.http.client().patch(&url), &body)).await?;
        // 204 and no body, or 200 and the resource as it now is (RFC 7644 3.5.2).
        Ok(serde_json::from_slice::<Value>(&answer.body).ok().filter(Value::is_object))
    }
}

/// `value` as one path segment: every byte but the unreserved ones (RFC 3986 2.3)
/// percent-encoded, so `/`, `?`, `#`, `%`, `|` or `@` in an id cannot change the URL's
/// meaning.
fn path_segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The query of a filtered list: `attribute eq "value"` with the value a JSON string (RFC 7644
/// 3.4.2.2), percent-encoded with spaces as `%20` (a `+` is a space only in HTML forms;
/// a strict app reads it as a plus sign).
fn filter_query(attribute: &str, value: &str) -> String {
    let filter = format!("{attribute} eq {}", Value::from(value));
    let encoded: String = url::form_urlencoded::byte_serialize(filter.as_bytes()).collect();
    format!("filter={}&count=2", encoded.replace('+', "%20"))
}

/// An attribute of a SCIM resource or message by name, ignoring case: attribute names are
/// case-insensitive (RFC 7643 2.1), and apps write `resources` or `userName` as they please.
fn field<'a>(resource: &'a Value, name: &str) -> Option<&'a Value> {
    let fields = resource.as_object()?;
    fields.get(name).or_else(|| fields.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
}

fn text<'a>(resource: &'a Value, name: &str) -> Option<&'a str> {
    field(resource, name).and_then(Value::as_str)
}

/// An error answer as an [`AppError`]: the SCIM error body's `detail` (and `scimType`) when
/// there is one, else the raw body; a 501 says what the app left out.
fn error_of(answer: &Answer, method: &str) -> AppError {
    let parsed = serde_json::from_slice::<Value>(&answer.body).ok();
    let detail = parsed.as_ref().and_then(|v| text(v, "detail")).map(str::to_string);
    let scim_type = parsed.as_ref().and_then(|v| text(v, "scimType"));
    let message = match (detail, scim_type) {
        (Some(d), Some(t)) => format!("{d} (scimType {t})"),
        (Some(d), None) => d,
        _ => String::from_utf8_lossy(&answer.body).into_owned(),
    };
    let message = match answer.status {
        501 => format!(
            "the app does not implement {method} on Users (SCIM lets an app leave PATCH out, and unseat \
             deactivates and sets roles with it): {message}"
        ),
        505 => format!("the app does not speak the HTTP version unseat used: {message}"),
        _ => message,
    };
    AppError::Api {
        status: answer.status,
        code: None,
        subcode: None,
        message: truncate(message),
        retry_after: answer.retry_after(),
    }
}

/// Reads a SCIM User (attribute names in any case): the email is the userName (or
/// externalId, or the primary email), the role the primary (else first) value of `roles`.
fn account_of(resource: &Value) -> Result<AppAccount, AppError> {
    let id = text(resource, "id").ok_or_else(|| AppError::Protocol("a SCIM user without an id".into()))?.to_string();
    let primary = |values: &Vec<Value>| -> Option<String> {
        values
            .iter()
            .find(|v| field(v, "primary").and_then(Value::as_bool) == Some(true))
            .or_else(|| values.first())
            .and_then(|v| text(v, "value"))
            .map(str::to_string)
    };
    let primary_email = field(resource, "emails").and_then(Value::as_array).and_then(primary);
    let with_at = |name: &str| text(resource, name).filter(|u| u.contains('@')).map(str::to_string);
    let email = with_at("userName").or_else(|| with_at("externalId")).or(primary_email).unwrap_or_default();
    let role = field(resource, "roles").and_then(Value::as_array).and_then(primary);
    let active = match field(resource, "active") {
        Some(Value::Bool(active)) => *active,
        // Some apps send booleans as strings.
        Some(Value::String(active)) => !active.trim().eq_ignore_ascii_case("false"),
        _ => true,
    };
    // An account without roles holds a seat: what a seat-only integration grants.
    let role = role.or_else(|| Some(SEAT.to_string()));
    Ok(AppAccount { id, email, role, assets: None, active })
}

/// Whether a written resource, as the app answered it, says `active` is not `wanted`.
fn active_is_not(answer: &Option<Value>, wanted: bool) -> bool {
    answer.as_ref().is_some_and(|resource| {
        field(resource, "active").is_some() && account_of(resource).is_ok_and(|a| a.active != wanted)
    })
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

    /// The remembered id's account while the app still has it (SCIM ids are stable; the
    /// person's email may have changed in the IdP). Else the account whose match attribute
    /// is the email; failing that, one whose other attribute is (made by hand, or before
    /// `match_attribute` changed), so that nobody is added twice: it is theirs when its match
    /// attribute is empty, and an error when that names someone else.
    async fn find(
        &self,
        integration: &Integration,
        email: &str,
        known_id: Option<&str>,
    ) -> Result<Option<AppAccount>, AppError> {
        if let Some(id) = known_id.filter(|id| !id.is_empty()) {
            if let Some(account) = self.get_user(integration, id).await? {
                return Ok(Some(with_email(account, email)));
            }
        }
        let on = Self::match_on(integration)?;
        if let Some((account, _)) = self.lookup(integration, on, email).await? {
            return Ok(Some(account));
        }
        let Some((account, resource)) = self.lookup(integration, on.other(), email).await? else {
            return Ok(None);
        };
        match text(&resource, on.attribute()).map(str::trim).filter(|v| !v.is_empty()) {
            None => Ok(Some(account)),
            Some(own) => Err(AppError::Protocol(format!(
                "no account has {} {:?}, but account {} has it as its {} (and {} {own:?}): refusing to guess \
                 whose it is or to add a second account; check the integration's match_attribute",
                on.attribute(),
                email.trim(),
                account.id,
                on.other().attribute(),
                on.attribute(),
            ))),
        }
    }

    async fn remove(&self, integration: &Integration, account: &AppAccount) -> Result<Removal, AppError> {
        let result = match Self::deprovision(integration)? {
            // Deactivating an inactive account changes nothing.
            Deprovision::Deactivate if !account.active => return Ok(Removal::AlreadyGone),
            Deprovision::Deactivate => {
                let operations = json!([{ "op": "replace", "value": { "active": false } }]);
                match self.patch(integration, &account.id, operations).await {
                    Ok(answer) if active_is_not(&answer, false) => {
                        return Err(AppError::Protocol(format!(
                            "the app answered the deactivation of account {} (PATCH active: false) with the \
                             account still active: it did not deactivate it",
                            account.id
                        )))
                    }
                    Ok(_) => Ok(Removal::Deactivated),
                    Err(e) => Err(e),
                }
            }
            Deprovision::Delete => {
                let url = Self::user_url(integration, &account.id)?;
                self.send(integration, "DELETE", self.http.client().delete(&url)).await.map(|_| Removal::Deleted)
            }
        };
        match result {
            Err(e) if e.status_code() == Some(404) => Ok(Removal::AlreadyGone),
            other => other,
        }
    }

    async fn set_role(&self, integration: &Integration, account: &AppAccount, role: &str) -> Result<(), AppError> {
        // A seat is no role the app knows: a seat-only integration only keeps the account active.
        let value = if role == SEAT {
            json!({ "active": true })
        } else {
            json!({ "active": true, "roles": [{ "value": role, "primary": true }] })
        };
        let answer = self.patch(integration, &account.id, json!([{ "op": "replace", "value": value }])).await?;
        if active_is_not(&answer, true) {
            return Err(AppError::Protocol(format!(
                "the app answered the activation of account {} (PATCH active: true) with the account still \
                 inactive: it did not activate it",
                account.id
            )));
        }
        // An answer that shows the account's roles must show the one asked for: an app that
        // ignores `roles` would otherwise be taken to hold it.
        if let Some(resource) = answer.as_ref().filter(|r| role != SEAT && field(r, "roles").is_some()) {
            let held = account_of(resource)?.role.unwrap_or_default();
            if !self.role_held(integration, &held, role, None) {
                return Err(AppError::Protocol(format!(
                    "the app answered the role change of account {} (PATCH roles: {role}) with the role {held}: it \
                     did not take the role",
                    account.id
                )));
            }
        }
        Ok(())
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
        let created =
            self.send_json(integration, "POST", Self::with_body(self.http.client().post(&url), &body)).await?;
        let account = with_email(account_of(&created)?, email);
        Ok(AppAccount { role: Some(role.to_string()), ..account })
    }

    /// The new address goes where [`ScimApp::add`] puts one: the primary work email, and the
    /// match attribute (`userName`, or `externalId`), by which the account is found from now on.
    /// An answer that shows the match attribute must show the new address.
    async fn set_address(
        &self,
        integration: &Integration,
        account: &AppAccount,
        email: &str,
    ) -> Result<bool, AppError> {
        let email = email.trim();
        let on = Self::match_on(integration)?;
        let mut value = json!({ "emails": [{ "value": email, "primary": true, "type": "work" }] });
        value[on.attribute()] = json!(email);
        let answer = self.patch(integration, &account.id, json!([{ "op": "replace", "value": value }])).await?;
        if let Some(shown) = answer.as_ref().and_then(|r| text(r, on.attribute())) {
            if !same_email(shown, email) {
                return Err(AppError::Protocol(format!(
                    "the app answered the address change of account {} ({} {email}) with {} {shown:?}: it did \
                     not take the new address",
                    account.id,
                    on.attribute(),
                    on.attribute()
                )));
            }
        }
        Ok(true)
    }

    /// Any active account holds a seat (what a seat-only integration grants); roles compare
    /// ignoring case, as the role ladder's names do.
    fn role_held(
        &self,
        _integration: &Integration,
        reported: &str,
        desired: &str,
        _last_applied: Option<&str>,
    ) -> bool {
        desired == SEAT || reported.trim().eq_ignore_ascii_case(desired.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_users_as_apps_send_them() {
        let a = account_of(&json!({
            "id": "u1", "userName": "Alice@Example.com", "active": false,
            "roles": [{"value": "viewer"}, {"value": "admin", "primary": true}]
        }))
        .expect("user");
        assert_eq!(
            (a.id.as_str(), a.email.as_str(), a.role.as_deref(), a.active),
            ("u1", "Alice@Example.com", Some("admin"), false)
        );
        let b = account_of(&json!({ "id": "u2", "userName": "bob", "emails": [{"value": "bob@x.io"}] })).expect("user");
        assert_eq!((b.email.as_str(), b.role.as_deref(), b.active), ("bob@x.io", Some(SEAT), true), "no roles: a seat");
        assert!(account_of(&json!({ "userName": "no id" })).is_err());
        let c = account_of(&json!({ "ID": "u3", "username": "c@x.io", "ACTIVE": false, "Roles": [{"Value": "x"}] }))
            .expect("names in any case");
        assert_eq!((c.id.as_str(), c.email.as_str(), c.role.as_deref(), c.active), ("u3", "c@x.io", Some("x"), false));
    }

    #[test]
    fn filters_are_json_strings_with_spaces_as_percent_20() {
        assert_eq!(filter_query("userName", "a@x.io"), "filter=userName%20eq%20%22a%40x.io%22&count=2");
        let tricky = filter_query("externalId", "a+\"b\"\\\t@x");
        let decoded: Vec<(String, String)> = url::form_urlencoded::parse(tricky.as_bytes()).into_owned().collect();
        assert_eq!(decoded[0].1, r#"externalId eq "a+\"b\"\\\t@x""#);
        assert!(!tricky.contains('+') || tricky.contains("%2B"), "{tricky}");
    }

    #[test]
    fn ids_are_one_path_segment() {
        assert_eq!(path_segment("auth0|5f1c@corp/x y%"), "auth0%7C5f1c%40corp%2Fx%20y%25");
        assert_eq!(path_segment("2819c223-7f76.a_b~c"), "2819c223-7f76.a_b~c");
    }
}
