//! Replays the corpus of inputs that once broke (or nearly broke) a SCIM parser: each must
//! give a result or a client error (4xx with a scimType), never a panic or a server error.
//! New crashers found by the property tests go into `tests/corpus/`.

use serde_json::{json, Value};
use unseat_scim::{apply_user_patch, group_patch, Filter, PatchRequest, ScimError, User};

fn filters() -> Vec<String> {
    include_str!("corpus/filters.txt")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| serde_json::from_str(l).expect("each corpus line is a JSON string"))
        .collect()
}

fn patches() -> Vec<(String, Value)> {
    include_str!("corpus/patches.jsonl")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("each corpus line is JSON");
            (v["note"].as_str().unwrap_or_default().to_string(), v["body"].clone())
        })
        .collect()
}

fn client_error(e: &ScimError) -> bool {
    (400..500).contains(&e.status) && e.scim_type.is_some()
}

fn user() -> Value {
    User::parse(&json!({"userName": "u@example.com", "name": {"givenName": "U"},
        "emails": [{"value": "u@example.com", "type": "work", "primary": true}],
        "meta": {"created": "2011-05-13T04:42:34Z"}}))
    .unwrap()
    .resource
}

#[test]
fn corpus_filters_parse_or_fail_as_invalid_filter() {
    let corpus = filters();
    assert!(corpus.len() >= 20);
    for f in corpus {
        match Filter::parse(&f) {
            Ok(parsed) => {
                let _ = parsed.matches(&user());
            }
            Err(e) => assert!(client_error(&e), "{f:?}: {e:?}"),
        }
    }
}

#[test]
fn corpus_patches_apply_or_fail_as_client_errors() {
    let corpus = patches();
    assert!(corpus.len() >= 20);
    for (note, body) in corpus {
        // What ingest does first with every body.
        if let Err(e) = unseat_scim::check_storable(&body) {
            assert!(client_error(&e), "{note}: {e:?}");
            continue;
        }
        let req = match PatchRequest::parse(&body) {
            Ok(r) => r,
            Err(e) => {
                assert!(client_error(&e), "{note}: {e:?}");
                continue;
            }
        };
        if let Err(e) = apply_user_patch(&user(), &req, "id-1") {
            assert!(client_error(&e), "{note}: {e:?}");
        }
        if let Err(e) = group_patch(&req, "id-1") {
            assert!(client_error(&e), "{note}: {e:?}");
        }
    }
}
