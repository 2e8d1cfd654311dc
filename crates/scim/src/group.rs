//! The SCIM Group (a team): its name, external id and member ids. The stored representation
//! never holds the member list; members live in their own rows.

use crate::error::ScimError;
use crate::filter::get_ci;
use crate::schema::GROUP_SCHEMA;
use crate::user::{canonical, strip_nulls, MAX_NAME_LEN};
use serde_json::{Map, Value};
use std::collections::HashSet;

/// Most members one request may name: bounds the work one request can cause, while letting
/// an IdP push a group of 100,000 in one `replace members` (with a body limit to match).
pub const MAX_MEMBERS_PER_REQUEST: usize = 200_000;

const GROUP_ATTRIBUTES: &[&str] = &["schemas", "displayName", "externalId", "members"];

/// A parsed Group.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub display_name: String,
    pub external_id: Option<String>,
    /// Member ids (`members[].value`), deduplicated, in the order sent.
    pub members: Vec<String>,
    /// The representation to store, without `id`, `meta` and `members`.
    pub resource: Value,
}

/// Reads the ids out of a `members` value: an array of `{"value": id, ...}` (or a single one).
pub fn member_ids(v: &Value) -> Result<Vec<String>, ScimError> {
    let items: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        Value::Object(_) => vec![v],
        Value::Null => Vec::new(),
        other => return Err(ScimError::invalid_value(format!("members must be an array of objects, got {other}"))),
    };
    if items.len() > MAX_MEMBERS_PER_REQUEST {
        return Err(ScimError::invalid_value(format!("at most {MAX_MEMBERS_PER_REQUEST} members per request")));
    }
    let mut ids: Vec<String> = Vec::with_capacity(items.len());
    let mut seen: HashSet<&str> = HashSet::with_capacity(items.len());
    for item in items {
        match get_ci(item, "value") {
            Some(Value::String(s)) if !s.is_empty() => {
                if seen.insert(s.as_str()) {
                    ids.push(s.clone());
                }
            }
            _ => return Err(ScimError::invalid_value("every member needs a non-empty string value (the member's id)")),
        }
    }
    Ok(ids)
}

/// Checks a displayName value.
pub fn display_name(v: Option<&Value>) -> Result<String, ScimError> {
    match v {
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= MAX_NAME_LEN => Ok(s.clone()),
        Some(Value::String(s)) if !s.trim().is_empty() => {
            Err(ScimError::invalid_value(format!("displayName is longer than {MAX_NAME_LEN} bytes")))
        }
        Some(Value::String(_)) | None | Some(Value::Null) => {
            Err(ScimError::invalid_value("displayName is required and must not be empty"))
        }
        Some(other) => Err(ScimError::invalid_value(format!("displayName must be a string, got {other}"))),
    }
}

/// Checks an externalId value (`None` = unassigned).
pub fn external_id(v: Option<&Value>) -> Result<Option<String>, ScimError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= MAX_NAME_LEN => Ok(Some(s.clone())),
        Some(other) => Err(ScimError::invalid_value(format!(
            "externalId must be a string of at most {MAX_NAME_LEN} bytes, got {other}"
        ))),
    }
}

impl Group {
    pub fn parse(body: &Value) -> Result<Self, ScimError> {
        let Some(input) = body.as_object() else {
            return Err(ScimError::invalid_syntax("a Group must be a JSON object"));
        };
        let mut res = Map::new();
        for (k, v) in input {
            if ["id", "meta"].iter().any(|d| d.eq_ignore_ascii_case(k)) || v.is_null() {
                continue;
            }
            res.insert(canonical(k, GROUP_ATTRIBUTES), strip_nulls(v.clone()));
        }
        let display_name = display_name(res.get("displayName"))?;
        let external_id = external_id(res.get("externalId"))?;
        let members = match res.remove("members") {
            Some(v) => member_ids(&v)?,
            None => Vec::new(),
        };
        res.insert("schemas".into(), Value::Array(vec![Value::String(GROUP_SCHEMA.into())]));
        Ok(Self { display_name, external_id, members, resource: Value::Object(res) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_entra_group_with_extra_schema() {
        let g = Group::parse(&json!({
            "schemas": [GROUP_SCHEMA, "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"],
            "externalId": "8aa1", "displayName": "Admins", "meta": {"resourceType": "Group"}
        }))
        .unwrap();
        assert_eq!(g.display_name, "Admins");
        assert_eq!(g.external_id.as_deref(), Some("8aa1"));
        assert!(g.members.is_empty());
        assert!(g.resource.get("meta").is_none());
    }

    #[test]
    fn members_deduplicated_and_not_stored() {
        let g = Group::parse(
            &json!({"displayName": "T", "members": [{"value": "a"}, {"value": "b", "display": "B"}, {"value": "a"}]}),
        )
        .unwrap();
        assert_eq!(g.members, vec!["a", "b"]);
        assert!(g.resource.get("members").is_none());
    }

    #[test]
    fn rejects_bad_groups() {
        for body in [
            json!({}),
            json!({"displayName": ""}),
            json!({"displayName": 1}),
            json!({"displayName": "x", "members": "a"}),
            json!({"displayName": "x", "members": [{"display": "a"}]}),
            json!({"displayName": "x", "members": [{"value": ""}]}),
            json!({"displayName": "x", "externalId": 3}),
        ] {
            assert_eq!(Group::parse(&body).unwrap_err().status, 400, "{body}");
        }
        assert_eq!(Group::parse(&json!("x")).unwrap_err().scim_type, Some("invalidSyntax"));
    }
}
