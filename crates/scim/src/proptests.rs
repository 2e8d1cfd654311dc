//! Property tests: no input makes the parsers panic, and a Group PATCH folds its operations
//! the way a plain set model of the member list says.

use crate::{group_patch, Filter, PatchPath, PatchRequest, User};
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
