//! Property tests: no input makes the parsers panic, a Group PATCH folds its operations the
//! way a plain set model of the member list says, and a group filter whose deciding members are
//! named reads the same on a group carrying only those members as on the whole group.

use crate::{group_patch, Elements, Filter, PatchPath, PatchRequest, User};
use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-zA-Z0-9@. \"\\[\\]:_-]{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("active"),
            Just("userName"),
            Just("emails"),
            Just("members"),
            Just("name.givenName"),
            Just("True")
        ]
        .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("op".to_string()),
                    Just("path".to_string()),
                    Just("value".to_string()),
                    Just("userName".to_string()),
                    Just("active".to_string()),
                    Just("emails".to_string()),
                    Just("members".to_string()),
                    "[a-zA-Z.:]{1,8}"
                ],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn filter_and_path_parsers_never_panic(s in "\\PC{0,60}") {
        let _ = Filter::parse(&s);
        let _ = PatchPath::parse(&s);
    }

    #[test]
    fn filter_like_strings_never_panic(s in "[a-zA-Z. \"()\\[\\]:\\\\]{0,40}( (eq|and|or|pr|not) [a-z\" ]{0,10}){0,3}") {
        if let Ok(f) = Filter::parse(&s) {
            let _ = f.matches(&json!({"userName": "a", "emails": [{"value": "b"}]}));
        }
    }

    #[test]
    fn patches_of_arbitrary_json_never_panic(ops in prop::collection::vec(json_value(), 0..5)) {
        let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops});
        if let Ok(req) = PatchRequest::parse(&body) {
            let base = User::parse(&json!({"userName": "u", "emails": [{"value": "e@x", "type": "work"}]})).unwrap().resource;
            let _ = crate::apply_user_patch(&base, &req, "id");
            let _ = group_patch(&req, "id");
        }
    }

    #[test]
    fn group_patch_matches_a_set_model(
        start in prop::collection::btree_set(0u8..6, 0..6),
        ops in prop::collection::vec((0u8..4, prop::collection::vec(0u8..6, 0..3)), 1..8),
    ) {
        // Model: apply each op to a set directly.
        let mut model: BTreeSet<u8> = start.clone();
        let mut json_ops = Vec::new();
        for (kind, ids) in &ops {
            let values: Vec<Value> = ids.iter().map(|i| json!({"value": i.to_string()})).collect();
            match kind {
                0 => { model.extend(ids.iter().copied()); json_ops.push(json!({"op": "add", "path": "members", "value": values})); }
                1 => { for i in ids { model.remove(i); } json_ops.push(json!({"op": "Remove", "path": "members", "value": values})); }
                2 => { model = ids.iter().copied().collect(); json_ops.push(json!({"op": "replace", "path": "members", "value": values})); }
                _ => {
                    if let Some(i) = ids.first() {
                        model.remove(i);
                        json_ops.push(json!({"op": "remove", "path": format!("members[value eq \"{i}\"]")}));
                    } else {
                        model.clear();
                        json_ops.push(json!({"op": "remove", "path": "members"}));
                    }
                }
            }
        }
        let req = PatchRequest::parse(&json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": json_ops})).unwrap();
        let change = group_patch(&req, "g").unwrap();
        // Apply the delta the way the store does.
        let mut got: BTreeSet<u8> = start;
        match &change.replace_all {
            Some(all) => got = all.iter().map(|s| s.parse().unwrap()).collect(),
            None => {
                for r in &change.remove { got.remove(&r.parse().unwrap()); }
                for a in &change.add { got.insert(a.parse().unwrap()); }
            }
        }
        prop_assert_eq!(got, model);
    }
}

/// Attribute paths as IdPs write them, plus a few that are wrong in each possible way.
fn attr_path() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("userName"),
        Just("USERNAME"),
        Just("active"),
        Just("displayName"),
        Just("externalId"),
        Just("id"),
        Just("name.givenName"),
        Just("emails"),
        Just("emails.value"),
        Just("emails.type"),
        Just("members"),
        Just("members.value"),
        Just("meta.lastModified"),
        Just("meta.created"),
        Just("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber"),
        Just("urn:ietf:params:scim:schemas:core:2.0:User:userName"),
        Just("urn:x"),
        Just("1bad"),
        Just("a..b"),
        Just(""),
    ]
    .prop_map(str::to_string)
}

fn literal() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9@. _-]{0,8}".prop_map(|s| format!("{s:?}")),
        Just("\"2011-05-13T04:42:34Z\"".to_string()),
        Just("\"\\u0000\"".to_string()),
        Just("\"\\ud800\"".to_string()),
        Just("true".to_string()),
        Just("False".to_string()),
        Just("null".to_string()),
        Just("12".to_string()),
        Just("1e999".to_string()),
        Just("bare".to_string()),
    ]
}

/// Filters from the RFC 7644 grammar, with every operator, grouping, `not`, value paths, and
/// now and then a token dropped or doubled.
fn filter_text() -> impl Strategy<Value = String> {
    let op = prop_oneof![
        Just("eq"),
        Just("NE"),
        Just("co"),
        Just("sw"),
        Just("ew"),
        Just("gt"),
        Just("ge"),
        Just("lt"),
        Just("le"),
        Just("xx"),
    ];
    let atom = prop_oneof![
        (attr_path(), op.clone(), literal()).prop_map(|(a, o, v)| format!("{a} {o} {v}")),
        (attr_path(), attr_path(), attr_path(), op, literal())
            .prop_map(|(a, s, t, o, v)| format!("{a}[{s} eq {v}].{t} {o} {v}")),
        attr_path().prop_map(|a| format!("{a} pr")),
        attr_path().prop_map(|a| format!("{a} eq")),
    ];
    atom.prop_recursive(4, 32, 3, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} and {b}")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} or {b}")),
            inner.clone().prop_map(|a| format!("not ({a})")),
            inner.clone().prop_map(|a| format!("({a})")),
            (attr_path(), inner.clone()).prop_map(|(p, a)| format!("{p}[{a}]")),
            inner.clone().prop_map(|a| format!("({a}")),
            inner.prop_map(|a| format!("{a})")),
        ]
    })
}

fn resource() -> Value {
    json!({"id": "u1", "userName": "Alice@Example.com", "active": true, "displayName": "Alice",
           "name": {"givenName": "Alice"},
           "emails": [{"value": "alice@example.com", "type": "work", "primary": true}],
           "members": [{"value": "m1"}, {"value": "m2"}],
           "meta": {"created": "2011-05-13T04:42:34Z", "lastModified": "2020-01-01T00:00:00Z"},
           "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeNumber": "7"}})
}

/// A PATCH operation of the shapes Okta and Entra send, with values of every JSON type.
fn operation() -> impl Strategy<Value = Value> {
    let op = prop_oneof![Just("add"), Just("Replace"), Just("remove"), Just("REMOVE"), Just("move")];
    let path = prop_oneof![
        3 => attr_path().prop_map(Value::String),
        2 => (attr_path(), filter_text()).prop_map(|(p, f)| Value::String(format!("{p}[{f}]"))),
        1 => (attr_path(), filter_text(), attr_path()).prop_map(|(p, f, s)| Value::String(format!("{p}[{f}].{s}"))),
        1 => Just(Value::Null),
        1 => any::<i64>().prop_map(|n| json!(n)),
    ];
    (op, path, prop::option::of(json_value())).prop_map(|(op, path, value)| {
        let mut o = serde_json::Map::new();
        o.insert("op".into(), json!(op));
        if !path.is_null() {
            o.insert("path".into(), path);
        }
        if let Some(v) = value {
            o.insert("value".into(), v);
        }
        Value::Object(o)
    })
}

fn is_client_error(e: &crate::ScimError) -> bool {
    (400..500).contains(&e.status) && e.scim_type.is_some()
}

// The fuzzers: `PROPTEST_CASES=200000 cargo test --release -p unseat-scim fuzz_` runs them
// long (README). A failure prints the minimal input; add it to tests/corpus/.
proptest! {
    #[test]
    fn fuzz_filter_parser_gives_results_or_invalid_filter(f in filter_text()) {
        match Filter::parse(&f) {
            Ok(parsed) => {
                let _ = parsed.matches(&resource());
                let _ = parsed.equality();
                let _ = parsed.elements("members", "value");
                let _ = parsed.conjuncts().iter().filter_map(|t| t.required_text(&["id", "meta"])).count();
                let _ = parsed.conjuncts().iter().filter_map(|t| t.element_equality("emails", "value")).count();
            }
            Err(e) => prop_assert!(is_client_error(&e) && e.scim_type == Some("invalidFilter"), "{f:?}: {e:?}"),
        }
    }

    #[test]
    fn fuzz_patch_applier_gives_results_or_client_errors(ops in prop::collection::vec(operation(), 1..6)) {
        let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops});
        match PatchRequest::parse(&body) {
            Ok(req) => {
                let base = User::parse(&resource()).unwrap().resource;
                match crate::apply_user_patch(&base, &req, "u1") {
                    // What the applier returns is itself a valid user.
                    Ok(u) => prop_assert!(User::parse(&u.resource).is_ok()),
                    Err(e) => prop_assert!(is_client_error(&e), "{body}: {e:?}"),
                }
                if let Err(e) = group_patch(&req, "g1") {
                    prop_assert!(is_client_error(&e), "{body}: {e:?}");
                }
            }
            Err(e) => prop_assert!(is_client_error(&e), "{body}: {e:?}"),
        }
    }
}

/// Filters on a group's members of the shapes IdPs send and a few that need every member.
fn member_filter() -> impl Strategy<Value = String> {
    let member = (0..5u8).prop_map(|i| format!("\"m{i}\""));
    let atom = prop_oneof![
        member.clone().prop_map(|m| format!("members[value eq {m}]")),
        member.clone().prop_map(|m| format!("members.value eq {m}")),
        member.clone().prop_map(|m| format!("members ne {m}")),
        (member.clone(), member.clone()).prop_map(|(a, b)| format!("members[value eq {a} or value eq {b}]")),
        member.clone().prop_map(|m| format!("members[type eq \"User\" and value eq {m}]")),
        member.clone().prop_map(|m| format!("members[not (value eq {m})]")),
        member.prop_map(|m| format!("members[value eq {m} or display eq \"d1\"]")),
        Just("members pr".to_string()),
        Just("members[display co \"d\"]".to_string()),
        Just("displayName eq \"G\"".to_string()),
        Just("id eq \"g1\"".to_string()),
    ];
    atom.prop_recursive(3, 12, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} and {b}")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) or ({b})")),
            inner.prop_map(|a| format!("not ({a})")),
        ]
    })
}

fn group_with(members: &[u8]) -> Value {
    let members: Vec<Value> =
        members.iter().map(|i| json!({"value": format!("m{i}"), "display": format!("d{i}"), "type": "User"})).collect();
    json!({"id": "g1", "displayName": "G", "members": members})
}

proptest! {
    #[test]
    fn a_filter_reads_the_same_on_a_group_carrying_only_the_members_it_names(
        f in member_filter(),
        members in prop::collection::btree_set(0..5u8, 0..5),
    ) {
        let filter = Filter::parse(&f).expect("generated filters are valid");
        let members: Vec<u8> = members.into_iter().collect();
        if let Elements::Named(named) = filter.elements("members", "value") {
            let kept: Vec<u8> = members.iter().copied().filter(|i| named.contains(&format!("m{i}").as_str())).collect();
            prop_assert_eq!(filter.matches(&group_with(&members)), filter.matches(&group_with(&kept)), "{}", f);
        }
    }
}
