//! `attributes` and `excludedAttributes` (RFC 7644 §3.4.2.5, §3.9): which attributes a
//! response carries. `id` and `schemas` are always returned.

use crate::filter::AttrPath;
use serde_json::{Map, Value};

/// Attributes returned whatever the request asks.
const ALWAYS: &[&str] = &["id", "schemas"];

/// A parsed attribute list: each entry a top-level key (an extension URN or a core name)
/// and an optional sub-attribute.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttrList(Vec<(String, Option<String>)>);

impl AttrList {
    /// Parses a comma-separated list; entries that are not attribute paths are ignored (they
    /// can name nothing this service returns).
    pub fn parse(list: &str) -> Self {
        Self::from_items(list.split(','))
    }

    pub fn from_items<'a>(items: impl IntoIterator<Item = &'a str>) -> Self {
        let mut out = Vec::new();
        for item in items {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            // A whole extension (`urn:…:User`) names its own top-level key.
            if item.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("urn:")) && crate::schema::is_extension_urn(item) {
                out.push((item.to_string(), None));
                continue;
            }
            if let Ok(p) = AttrPath::parse(item) {
                match p.urn {
                    Some(urn) => out.push((urn, Some(p.name))),
                    None => out.push((p.name, p.sub)),
                }
            }
        }
        Self(out)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when the list names top-level attribute `name` (wholly or one of its parts).
    pub fn mentions(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k.eq_ignore_ascii_case(name))
    }
}

/// The resource with only `attributes` (when not empty) and without `excluded`.
pub fn project(resource: &Value, attributes: &AttrList, excluded: &AttrList) -> Value {
    let Some(obj) = resource.as_object() else {
        return resource.clone();
    };
    let mut out = Map::new();
    for (k, v) in obj {
        if ALWAYS.iter().any(|a| a.eq_ignore_ascii_case(k)) {
            out.insert(k.clone(), v.clone());
            continue;
        }
        let mut v = v.clone();
        if !attributes.is_empty() {
            let asked: Vec<&Option<String>> =
                attributes.0.iter().filter(|(a, _)| a.eq_ignore_ascii_case(k)).map(|(_, s)| s).collect();
            if asked.is_empty() {
                continue;
            }
            if !asked.iter().any(|s| s.is_none()) {
                let subs: Vec<&str> = asked.iter().filter_map(|s| s.as_deref()).collect();
                v = keep_subs(v, &subs);
            }
        }
        let mut drop_whole = false;
        for (a, sub) in &excluded.0 {
            if a.eq_ignore_ascii_case(k) {
                match sub {
                    None => drop_whole = true,
                    Some(s) => v = drop_sub(v, s),
                }
            }
        }
        if !drop_whole {
            out.insert(k.clone(), v);
        }
    }
    Value::Object(out)
}

fn keep_subs(v: Value, subs: &[&str]) -> Value {
    match v {
        Value::Object(m) => {
            Value::Object(m.into_iter().filter(|(k, _)| subs.iter().any(|s| s.eq_ignore_ascii_case(k))).collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(|i| keep_subs(i, subs)).collect()),
        other => other,
    }
}

fn drop_sub(v: Value, sub: &str) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.into_iter().filter(|(k, _)| !k.eq_ignore_ascii_case(sub)).collect()),
        Value::Array(a) => Value::Array(a.into_iter().map(|i| drop_sub(i, sub)).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user() -> Value {
        json!({"id": "1", "schemas": ["s"], "userName": "a", "name": {"givenName": "A", "familyName": "B"},
               "emails": [{"value": "a@x", "type": "work"}],
               "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeNumber": "7", "department": "D"},
               "meta": {"resourceType": "User"}})
    }

    #[test]
    fn attributes_keep_only_what_is_asked_plus_id_and_schemas() {
        let p = project(&user(), &AttrList::parse("userName, name.givenName,emails.value"), &AttrList::default());
        assert_eq!(
            p,
            json!({"id": "1", "schemas": ["s"], "userName": "a", "name": {"givenName": "A"}, "emails": [{"value": "a@x"}]})
        );
        let p = project(
            &user(),
            &AttrList::parse("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"),
            &AttrList::default(),
        );
        assert_eq!(p["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"], json!({"department": "D"}));
        let p = project(
            &user(),
            &AttrList::parse("urn:ietf:params:scim:schemas:core:2.0:User:userName"),
            &AttrList::default(),
        );
        assert_eq!(p["userName"], "a");
        assert!(p.get("name").is_none());
    }

    #[test]
    fn excluded_attributes_are_dropped_but_never_id() {
        let p = project(
            &user(),
            &AttrList::default(),
            &AttrList::parse("name,id,emails.type,urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"),
        );
        assert!(p.get("name").is_none());
        assert_eq!(p["id"], "1");
        assert_eq!(p["emails"], json!([{"value": "a@x"}]));
        assert!(p.get("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User").is_none());
        assert!(AttrList::parse("Members").mentions("members"));
        // junk is ignored, not an error
        assert_eq!(project(&user(), &AttrList::default(), &AttrList::parse(",,[]!, ")), user());
    }
}
