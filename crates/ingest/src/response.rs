//! Building SCIM responses: the media type, `meta`, ETags and `Location`.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use unseat_scim::ScimError;
use unseat_store::directory::{GroupRecord, Member, UserRecord};
use uuid::Uuid;

pub const SCIM_MEDIA_TYPE: &str = "application/scim+json";

pub fn scim_response(status: StatusCode, body: &Value) -> Response {
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_MEDIA_TYPE))], body.to_string()).into_response()
}

/// The weak ETag of a resource version, as in `meta.version`.
pub fn etag(version: i64) -> String {
    format!("W/\"{version}\"")
}

/// A resource answer with its `ETag` (and `Location` for a 201).
pub fn resource_response(status: StatusCode, body: &Value, version: i64, location: Option<&str>) -> Response {
    let mut resp = scim_response(status, body);
    if let Ok(v) = HeaderValue::from_str(&etag(version)) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    if let Some(loc) = location.and_then(|l| HeaderValue::from_str(l).ok()) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    resp
}

/// A 204 with the resource's new `ETag`.
pub fn no_content(version: i64) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&etag(version)) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

/// Checks `If-Match` against the current version: absent, `*` or a listed match passes;
/// anything else is 412 so that a client never overwrites a change it did not see.
pub fn check_if_match(headers: &HeaderMap, version: i64) -> Result<(), ScimError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(());
    };
    let v = v.to_str().map_err(|_| ScimError::precondition_failed("If-Match is not readable"))?;
    let want = version.to_string();
    let ok = v.split(',').map(str::trim).any(|tag| {
        let tag = tag.strip_prefix("W/").unwrap_or(tag);
        tag == "*" || tag.trim_matches('"') == want
    });
    if ok {
        Ok(())
    } else {
        Err(ScimError::precondition_failed(format!("the resource is at version {}, not {v}", etag(version))))
    }
}

fn meta(
    kind: &str,
    location: &str,
    created: chrono::DateTime<chrono::Utc>,
    modified: chrono::DateTime<chrono::Utc>,
    version: i64,
) -> Value {
    json!({
        "resourceType": kind,
        "created": created.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "lastModified": modified.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "location": location,
        "version": etag(version),
    })
}

pub fn user_location(base: &str, id: Uuid) -> String {
    format!("{base}/Users/{id}")
}

pub fn group_location(base: &str, id: Uuid) -> String {
    format!("{base}/Groups/{id}")
}

/// A stored user as the IdP sees it.
pub fn render_user(base: &str, u: &UserRecord) -> Value {
    let mut v = u.resource.clone();
    if let Some(obj) = v.as_object_mut() {
        obj.insert("id".into(), Value::String(u.id.to_string()));
        obj.insert("meta".into(), meta("User", &user_location(base, u.id), u.created_at, u.updated_at, u.version));
    }
    v
}

/// A stored group as the IdP sees it; `members` only when they were loaded. Members carry
/// no `display`: clients compare the members they sent with the ones returned.
pub fn render_group(base: &str, g: &GroupRecord, members: Option<&[Member]>) -> Value {
    let mut v = g.resource.clone();
    if let Some(obj) = v.as_object_mut() {
        obj.insert("id".into(), Value::String(g.id.to_string()));
        obj.insert("displayName".into(), Value::String(g.display_name.clone()));
        if let Some(members) = members {
            let list: Vec<Value> = members
                .iter()
                .map(|m| {
                    json!({
                        "value": m.user_id.to_string(),
                        "$ref": user_location(base, m.user_id),
                        "type": "User",
                    })
                })
                .collect();
            obj.insert("members".into(), Value::Array(list));
        }
        obj.insert("meta".into(), meta("Group", &group_location(base, g.id), g.created_at, g.updated_at, g.version));
    }
    v
}
