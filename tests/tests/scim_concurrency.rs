//! Concurrent SCIM writes end to end: no lost update, and uniqueness holds under a race.

use reqwest::{Method, StatusCode};
use serde_json::json;
use std::collections::BTreeSet;
use unseat_tests::spawn_app;

#[tokio::test]
async fn fifty_concurrent_member_removals_all_take_effect_and_each_member_is_removed_from_the_app() {
    let app = spawn_app().await;
    let mut people = Vec::new();
    for i in 0..50 {
        let email = format!("member{i:02}@example.com");
        people.push((app.person(&email, "EMPLOYEE").await, email));
    }
    let ids: Vec<_> = people.iter().map(|(id, _)| *id).collect();
    let team = app.team("Everyone", &ids, "EMPLOYEE").await;
    let before = app.settle(50).await.len();
    assert_eq!(app.app_users().await.len(), 50);

    let removals = ids.iter().map(|user| {
        let scim = app.scim.clone();
        let user = *user;
        async move { scim.remove_member(team, user).await }
    });
    for r in futures_util::future::join_all(removals).await {
        r.expect("every removal is accepted");
    }

    let tasks = app.settle(before + 50).await;
    let removed: BTreeSet<&str> = tasks[before..]
        .iter()
        .filter(|t| t.outcome == "remove" && t.status == "succeeded")
        .map(|t| t.email.as_str())
        .collect();
    let want: BTreeSet<&str> = people.iter().map(|(_, e)| e.as_str()).collect();
    assert_eq!(removed, want, "{:#?}", &tasks[before..]);
    assert!(app.app_users().await.is_empty(), "{:?}", app.app_users().await);
    let group = app.scim.send(Method::GET, &format!("/Groups/{team}"), None).await.unwrap();
    let group: serde_json::Value = group.json().await.unwrap();
    assert_eq!(group["members"], json!([]));
    // One version per accepted change: creation, then fifty removals.
    assert_eq!(group["meta"]["version"], "W/\"51\"");
    app.stop().await;
}

#[tokio::test]
async fn two_concurrent_creates_of_one_user_name_give_one_201_and_one_409() {
    let app = spawn_app().await;
    for round in 0..5 {
        let name = format!("twin{round}@example.com");
        let body = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": name});
        let (a, b) = tokio::join!(
            app.scim.send(Method::POST, "/Users", Some(&body)),
            app.scim.send(Method::POST, "/Users", Some(&body))
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        let mut statuses = vec![a.status(), b.status()];
        statuses.sort();
        assert_eq!(statuses, vec![StatusCode::CREATED, StatusCode::CONFLICT], "round {round}");
        let loser = if a.status() == StatusCode::CONFLICT { a } else { b };
        let err: serde_json::Value = loser.json().await.unwrap();
        assert_eq!(err["scimType"], "uniqueness");
        let found = app
            .scim
            .send(Method::GET, &format!("/Users?filter=userName%20eq%20%22{name}%22"), None)
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap();
        assert_eq!(found["totalResults"], 1);
    }
    app.stop().await;
}
