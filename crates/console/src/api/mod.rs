//! The endpoint handlers and the input checks they share. Each handler extracts the
//! [`Caller`] first, then checks the tenant it names, then reads its input.

pub mod access;
pub mod assets;
pub mod directory;
pub mod grants;
pub mod integrations;
pub mod log;
pub mod redrive;
pub mod tenants;

use crate::auth::{Caller, Need};
use crate::error::ApiError;
use crate::App;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use chrono::{DateTime, Datelike, Utc};
use serde::de::DeserializeOwned;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use std::collections::HashMap;
use unseat_domain::AssetMap;
use unseat_store::logs::Cursor;
use uuid::Uuid;

/// A query string as given, each parameter in order (so that one given twice is seen).
pub type Params = Result<Query<Vec<(String, String)>>, QueryRejection>;
pub type Body = Result<Bytes, BytesRejection>;

/// The parameters of a route's path, as axum's `Path` reads them, refused with this API's
/// `{"error": …}` body rather than axum's plain text: a segment that is not UTF-8 (`%ff`), one
/// that does not parse as the type asked for. Every handler takes this one (clippy refuses
/// axum's own in this crate; see `clippy.toml`).
#[derive(Debug)]
pub struct Path<T>(pub T);

#[allow(clippy::disallowed_types)]
impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(e) => Err(path_error(&e)),
        }
    }
}

/// A path the route matched but the handler cannot read: the caller's mistake (400 with
/// axum's description, which names the segment), or, when the route and its handler disagree
/// on the parameters, ours (500, logged).
fn path_error(e: &PathRejection) -> ApiError {
    let status = e.status();
    if status.is_server_error() {
        tracing::error!(error = %e.body_text(), "a route's path parameters do not fit its handler");
        ApiError::new(status, "internal error")
    } else {
        ApiError::new(status, e.body_text())
    }
}

/// For an optional body field whose absence means its default (an empty list, say): `null`
/// then means the same as leaving the field out, as for every optional field of this API.
/// Use with `#[serde(default, deserialize_with = "null_as_default")]`.
pub fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Option::<T>::deserialize(deserializer).map(Option::unwrap_or_default)
}

/// An asset map (asset id → asset role) from JSON, refusing an asset named twice: serde keeps
/// the last of two equal keys, so `{"act_1": "MANAGE", "act_1": "ANALYZE"}` silently meant
/// ANALYZE. null is no map.
pub fn unique_assets<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<AssetMap>, D::Error> {
    struct Assets;
    impl<'de> Visitor<'de> for Assets {
        type Value = Option<AssetMap>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object of asset id to asset role")
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut assets = AssetMap::new();
            while let Some((asset, role)) = map.next_entry::<String, String>()? {
                if assets.contains_key(&asset) {
                    return Err(serde::de::Error::custom(format!("asset {asset:?} is named twice in assets")));
                }
                assets.insert(asset, role);
            }
            Ok(Some(assets))
        }
    }
    deserializer.deserialize_option(Assets)
}

/// [`unique_assets`], with null or a missing map as no assets.
pub fn unique_assets_or_none<'de, D: Deserializer<'de>>(deserializer: D) -> Result<AssetMap, D::Error> {
    unique_assets(deserializer).map(Option::unwrap_or_default)
}

/// The years of the instants this API takes in (page cursors, the pages' time filters).
/// PostgreSQL's timestamps begin in 4713 BC while chrono's reach far earlier, so an earlier
/// instant would fail in the database instead of being refused as the caller's mistake; these
/// years hold every time the log stores and every time a date field can name.
pub const YEARS: std::ops::RangeInclusive<i32> = 1..=9999;

/// Whether `t` falls in [`YEARS`] (in UTC).
pub fn within_years(t: DateTime<Utc>) -> bool {
    YEARS.contains(&t.year())
}

/// Parses an id from a path or a body; `what` names it in the error.
pub fn parse_id(raw: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::bad_request(format!("{what} {raw:?} is not a UUID")))
}

/// Parses a JSON body into `T`, with the parser's message on failure. PostgreSQL's text and
/// jsonb cannot hold the NUL character, so a body with one in any string or key is refused
/// here rather than failing in the database.
pub fn parse_body<T: DeserializeOwned>(body: Body) -> Result<T, ApiError> {
    let bytes = body.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    // Every body of this API is a JSON object; serde would also fill a struct from an array.
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(ApiError::bad_request("invalid JSON body: expected a JSON object"));
    }
    let parsed =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    // In JSON text a NUL can only be the escape `\u0000`; only a body with one is walked.
    if bytes.windows(6).any(|w| w == b"\\u0000") && serde_json::from_slice::<Value>(&bytes).is_ok_and(|v| holds_nul(&v))
    {
        return Err(ApiError::bad_request("text must not contain the NUL character (U+0000)"));
    }
    Ok(parsed)
}

/// Whether any string or key of `v` holds U+0000.
fn holds_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

/// The query string's parameters, refusing one the endpoint does not take (`known`): a filter
/// it does not have would otherwise be ignored, and the caller would take the whole list for
/// a filtered one.
pub fn parse_params(params: Params, known: &[&str]) -> Result<HashMap<String, String>, ApiError> {
    let given = params
        .map(|Query(p)| p)
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {}", e.body_text())))?;
    let mut unknown: Vec<&str> = given.iter().map(|(k, _)| k.as_str()).filter(|k| !known.contains(k)).collect();
    unknown.sort_unstable();
    if let Some(name) = unknown.first() {
        let name: String = name.chars().take(100).collect();
        let takes = if known.is_empty() { "none".to_string() } else { known.join(", ") };
        return Err(ApiError::bad_request(format!("unknown query parameter {name:?}; this list takes {takes}")));
    }
    let mut params = HashMap::with_capacity(given.len());
    for (name, value) in given {
        // Which of two values was meant cannot be told: neither is guessed.
        if params.contains_key(&name) {
            return Err(ApiError::bad_request(format!("query parameter {name:?} is given more than once")));
        }
        params.insert(name, value);
    }
    Ok(params)
}

/// Checks the caller against the tenant named in the path and returns its id. The operator
/// may name any tenant, so for the operator the tenant must exist (404 otherwise); a tenant
/// admin's own tenant exists as long as the token does.
pub async fn authorize(app: &App, caller: &Caller, tenant: &str, need: Need) -> Result<Uuid, ApiError> {
    let tenant_id = parse_id(tenant, "tenant id")?;
    caller.require(tenant_id, need)?;
    if matches!(caller, Caller::Operator) && app.state.store.tenant(tenant_id).await?.is_none() {
        return Err(ApiError::not_found("no such tenant"));
    }
    Ok(tenant_id)
}

/// One page request of a newest-first list.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub limit: i64,
    pub before: Option<Cursor>,
}

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 200;

impl Page {
    pub fn from_params(params: &HashMap<String, String>) -> Result<Self, ApiError> {
        let limit = match params.get("limit") {
            None => DEFAULT_LIMIT,
            Some(raw) => match raw.parse::<i64>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => return Err(ApiError::bad_request(format!("limit must be a whole number from 1 to {MAX_LIMIT}"))),
            },
        };
        let before = match params.get("before").filter(|b| !b.is_empty()) {
            None => None,
            // A cursor this API returned names a row's time, so one outside `YEARS` is not one.
            Some(raw) => Some(Cursor::parse(raw).filter(|c| within_years(c.created_at)).ok_or_else(|| {
                ApiError::bad_request("before is not a cursor this API returned (use the `next` of a previous page)")
            })?),
        };
        Ok(Self { limit, before })
    }

    /// Trims the extra row fetched to learn whether another page follows and returns the
    /// cursor of that next page.
    pub fn finish<T>(&self, rows: &mut Vec<T>, cursor: impl Fn(&T) -> Cursor) -> Option<String> {
        let limit = usize::try_from(self.limit).unwrap_or(usize::MAX);
        if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|r| cursor(r).encode())
        } else {
            None
        }
    }
}

/// An optional id query parameter.
pub fn optional_id(params: &HashMap<String, String>, name: &str) -> Result<Option<Uuid>, ApiError> {
    params.get(name).filter(|v| !v.is_empty()).map(|v| parse_id(v, name)).transpose()
}

/// A required, non-empty text of at most `max` characters as sent (the bound the OpenAPI
/// document states), stored trimmed.
pub fn required_text(value: &str, what: &str, max: usize) -> Result<String, ApiError> {
    let value = optional_text(value, what, max)?;
    if value.is_empty() {
        return Err(ApiError::bad_request(format!("{what} must not be empty")));
    }
    if value.chars().all(|c| c.is_whitespace() || invisible(c)) {
        return Err(ApiError::bad_request(format!("{what} must contain a visible character")));
    }
    Ok(value)
}

/// Characters that show as nothing: zero-width spaces and joiners, fillers, variation
/// selectors, the soft hyphen, the byte-order mark.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{2060}'..='\u{2064}'
        | '\u{206A}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}')
}

/// A text of at most `max` characters as sent, stored trimmed (possibly empty). Names are
/// shown on pages and in logs: control characters (line breaks, escapes) and the characters
/// that reorder text (U+202A–U+202E, U+2066–U+2069, which can make one name read as another)
/// are refused.
pub fn optional_text(value: &str, what: &str, max: usize) -> Result<String, ApiError> {
    if value.chars().count() > max {
        return Err(ApiError::bad_request(format!("{what} must be at most {max} characters")));
    }
    let reorders = |c: char| matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
    if value.chars().any(|c| c.is_control() || reorders(c)) {
        return Err(ApiError::bad_request(format!(
            "{what} must not contain control characters or characters that reorder text"
        )));
    }
    Ok(value.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use axum::Router;

    #[test]
    fn texts_refuse_control_and_reordering_characters() {
        assert_eq!(required_text("  Meta Business ", "name", 200).unwrap(), "Meta Business");
        assert_eq!(required_text("Café ads 广告", "name", 200).unwrap(), "Café ads 广告");
        for bad in ["Meta\nBusiness", "tab\there", "esc\u{1b}[31m", "admin\u{202E}nimda", "x\u{2067}y"] {
            let error = required_text(bad, "name", 200).expect_err(bad);
            assert!(error.message.contains("control characters"), "{bad:?}: {}", error.message);
        }
        assert!(required_text(" ", "name", 200).is_err());
        for blank in ["\u{200B}", " \u{200B}\u{FEFF} ", "\u{2060}\u{00AD}", "\u{3164}"] {
            let error = required_text(blank, "name", 200).expect_err(blank);
            assert!(error.message.contains("visible"), "{blank:?}: {}", error.message);
        }
        // Invisible characters beside visible ones are part of some scripts' spelling.
        assert_eq!(required_text("Team\u{200D}A", "name", 200).unwrap(), "Team\u{200D}A");
    }

    /// Every way the path extractor can refuse answers with the API's JSON error: a segment
    /// that is not UTF-8 or not the type asked for is the caller's 400, a handler asking for
    /// more parameters than its route has is our 500, its cause logged rather than sent.
    #[tokio::test]
    async fn path_rejections_are_json_errors() {
        let router = Router::new()
            .route("/ids/{id}", get(|Path(id): Path<Uuid>| async move { id.to_string() }))
            .route("/pairs/{a}", get(|Path((a, b)): Path<(String, String)>| async move { a + &b }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        let id = Uuid::new_v4();
        for (path, status, says) in [
            (format!("/ids/{id}"), 200, id.to_string()),
            ("/ids/%ff".to_string(), 400, "Invalid UTF-8 in `id`".to_string()),
            ("/ids/not-a-uuid".to_string(), 400, "Cannot parse `id` with value `not-a-uuid`".to_string()),
            ("/pairs/x".to_string(), 500, r#"{"error":"internal error"}"#.to_string()),
        ] {
            let answer = reqwest::get(format!("{base}{path}")).await.unwrap();
            assert_eq!(answer.status().as_u16(), status, "{path}");
            let json = answer.headers()["content-type"].to_str().unwrap().starts_with("application/json");
            let text = answer.text().await.unwrap();
            assert!(text.contains(&says), "{path}: {text}");
            if status != 200 {
                assert!(json, "{path}: {text}");
                let body: Value = serde_json::from_str(&text).unwrap();
                assert!(body["error"].is_string(), "{path}: {text}");
            }
        }
    }
}
