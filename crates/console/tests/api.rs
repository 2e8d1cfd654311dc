//! The admin API over real HTTP against a fresh database per test.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::*;
use uuid::Uuid;

/// Fills a route template with ids; `tenant` for `{tenant}`, fresh UUIDs elsewhere.
fn fill(path: &str, tenant: Uuid) -> String {
    path.replace("{tenant}", &tenant.to_string())
        .replace("{integration}", &Uuid::new_v4().to_string())
        .replace("{grant}", &Uuid::new_v4().to_string())
        .replace("{job}", &Uuid::new_v4().to_string())
        .replace("{task}", &Uuid::new_v4().to_string())
}

fn method(m: &str) -> Method {
    Method::from_bytes(m.as_bytes()).expect("method")
}

fn body_for(m: &str) -> Option<Value> {
    matches!(m, "POST" | "PATCH").then(|| json!({}))
}

#[tokio::test]
async fn tenant_creation_returns_working_tokens_stored_only_as_hashes() {
    let app = spawn_app().await;
    let (tenant, scim, admin) = app.tenant("Acme").await;

    assert!(admin.starts_with("adm_") && scim.starts_with("scim_"));
    let a = app.get(&format!("/api/v1/tenants/{tenant}"), &admin).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.body["name"], "Acme");
    assert_eq!(a.body["id"], tenant.to_string());

    // The SCIM token is a SCIM token of the workspace directory, and not an admin token.
    let owner = app.store.token_owner(&scim).await.unwrap();
    assert_eq!(
        owner,
        Some(unseat_store::tokens::TokenOwner::Scim {
            tenant_id: tenant,
            scope: unseat_store::tokens::ScimScope::Workspace
        })
    );
    let a = app.get(&format!("/api/v1/tenants/{tenant}"), &scim).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);

    // Only hashes are stored.
    let client = app.store.client().await.unwrap();
    let rows = client.query("select hash, label from tokens", &[]).await.unwrap();
    assert_eq!(rows.len(), 2);
    for r in &rows {
        let stored: Vec<u8> = r.get(0);
        for raw in [&scim, &admin] {
            assert!(!stored.windows(raw.len()).any(|w| w == raw.as_bytes()), "raw token stored");
        }
        assert!(stored == unseat_store::tokens::hash(&scim) || stored == unseat_store::tokens::hash(&admin));
    }
    let text_dump: i64 = client
        .query_one(
            "select count(*) from tokens t where row_to_json(t)::text like '%' || $1 || '%' or row_to_json(t)::text like '%' || $2 || '%'",
            &[&scim, &admin],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(text_dump, 0);

    // The token listing shows scopes and roles, never tokens.
    let a = app.get(&format!("/api/v1/tenants/{tenant}/tokens"), &admin).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["tokens"].as_array().map(Vec::len), Some(2));
    assert!(!a.text.contains(&scim) && !a.text.contains(&admin));

    // More tokens: a SCIM token scoped to an integration, and admin tokens.
    let integration = app.integration(tenant, &admin, "Meta Business").await;
    let a = app
        .post(
            &format!("/api/v1/tenants/{tenant}/scim-tokens"),
            &admin,
            json!({ "label": "okta app", "integration_id": integration }),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    assert_eq!(a.body["scope"], integration.to_string());
    let token = a.body["token"].as_str().unwrap();
    assert_eq!(
        app.store.token_owner(token).await.unwrap(),
        Some(unseat_store::tokens::TokenOwner::Scim {
            tenant_id: tenant,
            scope: unseat_store::tokens::ScimScope::Integration(integration)
        })
    );
    let a = app
        .post(&format!("/api/v1/tenants/{tenant}/scim-tokens"), &admin, json!({ "integration_id": Uuid::new_v4() }))
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);

    let viewer = app.admin_token(tenant, &admin, "viewer").await;
    assert_eq!(app.get(&format!("/api/v1/tenants/{tenant}"), &viewer).await.status, StatusCode::OK);
    let a = app.post(&format!("/api/v1/tenants/{tenant}/admin-tokens"), &admin, json!({ "role": "root" })).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.body["error"].as_str().unwrap().contains("root"));

    // Bad tenant input changes nothing.
    for body in [json!({ "name": "" }), json!({ "name": "   " }), json!({}), json!({ "name": "x", "extra": 1 })] {
        let a = app.post("/api/v1/tenants", OPERATOR, body).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text);
    }
    let a = app.raw(Method::POST, "/api/v1/tenants", OPERATOR, "{not json").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.body["error"].as_str().unwrap().contains("invalid JSON"));
    let huge = "x".repeat(unseat_console::MAX_BODY_BYTES + 1);
    let a = app.post("/api/v1/tenants", OPERATOR, json!({ "name": huge })).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(a.body["error"].is_string());
    assert_eq!(app.count("select count(*) from tenants").await, 1);

    // Only the operator creates tenants.
    let a = app.post("/api/v1/tenants", &admin, json!({ "name": "Other" })).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(app.count("select count(*) from tenants").await, 1);
}

#[tokio::test]
async fn every_endpoint_but_the_openapi_document_needs_a_valid_admin_token() {
    let app = spawn_app().await;
    let (tenant, scim, _) = app.tenant("Acme").await;
    let routes = unseat_console::routes();
    assert!(routes.len() >= 20);
    for (m, path) in routes {
        if path == "/api/v1/openapi.json" {
            continue;
        }
        // The same answer whether the named tenant exists or not.
        for t in [tenant, Uuid::new_v4()] {
            let url = fill(path, t);
            for token in [None, Some("adm_not-a-real-token"), Some(scim.as_str()), Some("")] {
                let a = app.call(method(m), &url, token, body_for(m)).await;
                assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{m} {path} with {token:?}: {}", a.text);
                assert!(a.body["error"].is_string(), "{m} {path}: {}", a.text);
            }
            // Also with a malformed Authorization header.
            let resp = app
                .http
                .request(method(m), format!("{}{}", app.base, url))
                .header("authorization", format!("Basic {scim}"))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        }
    }
    // The scheme's name in any case (RFC 7235 §2.1).
    let (_, _, admin) = app.tenant("Beta").await;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let resp = app
            .http
            .get(format!("{}/api/v1/tenants/{tenant}/integrations", app.base))
            .header("authorization", format!("{scheme} {admin}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{scheme}: known, but of another tenant");
    }
    // Nothing was created by any of it.
    assert_eq!(app.count("select count(*) from tenants").await, 2);
    assert_eq!(app.count("select count(*) from integrations").await, 0);
    assert_eq!(app.count("select count(*) from tokens").await, 4);

    let metrics = app.metrics.encode();
    assert!(metrics.contains("unseat_console_requests_total{outcome=\"client_error\"}"), "{metrics}");
    assert!(metrics.contains("unseat_console_requests_total{outcome=\"ok\"}"), "{metrics}");
}

#[tokio::test]
async fn a_tenant_admin_cannot_touch_another_tenant() {
    let app = spawn_app().await;
    let (a_id, _, a_admin) = app.tenant("A").await;
    let (b_id, _, b_admin) = app.tenant("B").await;
    let b_integration = app.integration(b_id, &b_admin, "B hub").await;

    for (m, path) in unseat_console::routes() {
        if !path.contains("{tenant}") {
            continue;
        }
        for target in [b_id, Uuid::new_v4()] {
            let url = fill(path, target);
            let a = app.call(method(m), &url, Some(&a_admin), body_for(m)).await;
            assert_eq!(a.status, StatusCode::FORBIDDEN, "{m} {path}: {}", a.text);
        }
    }
    // With real ids of B, too.
    let a = app.get(&format!("/api/v1/tenants/{b_id}/integrations/{b_integration}"), &a_admin).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = app.post(&format!("/api/v1/tenants/{b_id}/integrations"), &a_admin, integration_body("sneaky")).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    // And A's own id with B's integration is simply not found.
    let a = app.get(&format!("/api/v1/tenants/{a_id}/integrations/{b_integration}"), &a_admin).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(app.count("select count(*) from integrations").await, 1);

    // The operator reaches both; an unknown tenant is 404 for the operator.
    assert_eq!(app.get(&format!("/api/v1/tenants/{b_id}/integrations"), OPERATOR).await.status, StatusCode::OK);
    let a = app.get(&format!("/api/v1/tenants/{}", Uuid::new_v4()), OPERATOR).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = app.get("/api/v1/tenants/not-a-uuid", OPERATOR).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.body["error"].as_str().unwrap().contains("not a UUID"));
}

#[tokio::test]
async fn viewers_read_and_only_owners_and_super_admins_mint_admin_tokens() {
    let app = spawn_app().await;
    let (tenant, _, owner) = app.tenant("Acme").await;
    let integration = app.integration(tenant, &owner, "Meta Business").await;
    let u = app.add_user(tenant, "alice@example.com").await;
    let team = app.add_team(tenant, "Marketing", &[u]).await;
    let a = app
        .post(
            &format!("/api/v1/tenants/{tenant}/integrations/{integration}/grants"),
            &owner,
            json!({ "team_id": team, "role": "ADMIN" }),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    let grant = a.body["id"].as_str().unwrap().to_string();
    let viewer = app.admin_token(tenant, &owner, "viewer").await;
    let outbox_before = app.count("select count(*) from outbox").await;

    for path in ["", "/integrations", "/teams", "/users", "/jobs", "/tasks"] {
        let a = app.get(&format!("/api/v1/tenants/{tenant}{path}"), &viewer).await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.text);
    }
    // Who holds which token is for those who manage tokens, not for a viewer.
    let a = app.get(&format!("/api/v1/tenants/{tenant}/tokens"), &viewer).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.text);
    let base = format!("/api/v1/tenants/{tenant}");
    let writes = [
        (Method::POST, format!("{base}/integrations"), integration_body("x")),
        (Method::POST, format!("{base}/scim-tokens"), json!({})),
        (Method::POST, format!("{base}/admin-tokens"), json!({ "role": "viewer" })),
        (Method::POST, format!("{base}/integrations/{integration}/grants"), json!({ "user_id": u, "role": "ADMIN" })),
        (Method::PATCH, format!("{base}/integrations/{integration}/grants/{grant}"), json!({ "role": "EMPLOYEE" })),
        (Method::DELETE, format!("{base}/integrations/{integration}/grants/{grant}"), json!({})),
    ];
    for (m, path, body) in &writes {
        let a = app.call(m.clone(), path, Some(&viewer), Some(body.clone())).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{m} {path}: {}", a.text);
    }
    assert_eq!(app.count("select count(*) from integrations").await, 1);
    assert_eq!(app.count("select count(*) from tokens").await, 3);
    assert_eq!(app.count("select count(*) from grants where role = 'ADMIN'").await, 1);
    assert_eq!(app.count("select count(*) from outbox").await, outbox_before);

    // An admin manages integrations but not admin tokens; a super_admin cannot mint an owner.
    let admin = app.admin_token(tenant, &owner, "admin").await;
    assert_eq!(
        app.post(&format!("{base}/integrations"), &admin, integration_body("y")).await.status,
        StatusCode::CREATED
    );
    let a = app.post(&format!("{base}/admin-tokens"), &admin, json!({ "role": "viewer" })).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let super_admin = app.admin_token(tenant, &owner, "super_admin").await;
    let a = app.post(&format!("{base}/admin-tokens"), &super_admin, json!({ "role": "owner" })).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = app.post(&format!("{base}/admin-tokens"), &super_admin, json!({ "role": "admin" })).await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(a.body["role"], "admin");
}

#[tokio::test]
async fn an_integration_owner_shares_only_its_integration_and_reads_like_a_viewer() {
    let app = spawn_app().await;
    let (tenant, _, owner) = app.tenant("Acme").await;
    let (other_tenant, _, _) = app.tenant("Other").await;
    let mine = app.integration(tenant, &owner, "Meta Business").await;
    let theirs = app.integration(tenant, &owner, "Ads Hub").await;
    let u = app.add_user(tenant, "alice@example.com").await;
    let base = format!("/api/v1/tenants/{tenant}");

    // Minting: the integration is required for this role, exists in the tenant, and is
    // refused for every other role; admins mint no admin tokens at all.
    let tokens_path = format!("{base}/admin-tokens");
    let mint = |body: Value| app.post(&tokens_path, &owner, body);
    let a = mint(json!({ "role": "integration_owner", "integration_id": mine })).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    assert_eq!(
        (a.body["role"].as_str(), a.body["integration_id"].as_str()),
        (Some("integration_owner"), Some(&*mine.to_string()))
    );
    let io = a.body["token"].as_str().unwrap().to_string();
    assert_eq!(mint(json!({ "role": "integration_owner" })).await.status, StatusCode::BAD_REQUEST);
    let unknown = mint(json!({ "role": "integration_owner", "integration_id": Uuid::new_v4() })).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.text);
    let foreign = app.integration(other_tenant, OPERATOR, "Elsewhere").await;
    let a = mint(json!({ "role": "integration_owner", "integration_id": foreign })).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "another tenant's integration: {}", a.text);
    let a = mint(json!({ "role": "viewer", "integration_id": mine })).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text);
    let admin = app.admin_token(tenant, &owner, "admin").await;
    let a = app
        .post(&format!("{base}/admin-tokens"), &admin, json!({ "role": "integration_owner", "integration_id": mine }))
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);

    // Sharing its own integration: add, change and remove a grant.
    let grants = format!("{base}/integrations/{mine}/grants");
    let a = app.post(&grants, &io, json!({ "user_id": u, "role": "ADMIN" })).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    let grant = a.body["id"].as_str().unwrap().to_string();
    let a = app.call(Method::PATCH, &format!("{grants}/{grant}"), Some(&io), Some(json!({ "role": "EMPLOYEE" }))).await;
    assert_eq!((a.status, a.body["role"].as_str()), (StatusCode::OK, Some("EMPLOYEE")), "{}", a.text);
    let a = app.call(Method::DELETE, &format!("{grants}/{grant}"), Some(&io), None).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.text);
    let a = app.post(&grants, &io, json!({ "user_id": u, "role": "ADMIN" })).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);

    // Nothing else: another integration's grants, the integrations, tokens.
    let theirs_grant = app
        .post(&format!("{base}/integrations/{theirs}/grants"), &owner, json!({ "user_id": u, "role": "ADMIN" }))
        .await;
    assert_eq!(theirs_grant.status, StatusCode::CREATED, "{}", theirs_grant.text);
    let theirs_grant = theirs_grant.body["id"].as_str().unwrap().to_string();
    let outbox_before = app.count("select count(*) from outbox").await;
    let refused = [
        (Method::POST, format!("{base}/integrations/{theirs}/grants"), json!({ "user_id": u, "role": "ADMIN" })),
        (Method::PATCH, format!("{base}/integrations/{theirs}/grants/{theirs_grant}"), json!({ "role": "EMPLOYEE" })),
        (Method::DELETE, format!("{base}/integrations/{theirs}/grants/{theirs_grant}"), json!({})),
        (Method::PATCH, format!("{base}/integrations/{mine}"), json!({ "roles": ["ADMIN"] })),
        (Method::POST, format!("{base}/integrations"), integration_body("x")),
        (Method::POST, format!("{base}/scim-tokens"), json!({})),
        (Method::POST, format!("{base}/admin-tokens"), json!({ "role": "viewer" })),
        (
            Method::POST,
            format!("/api/v1/tenants/{other_tenant}/integrations/{foreign}/grants"),
            json!({ "user_id": u, "role": "ADMIN" }),
        ),
    ];
    for (m, path, body) in &refused {
        let a = app.call(m.clone(), path, Some(&io), Some(body.clone())).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{m} {path}: {}", a.text);
    }
    assert_eq!(app.count("select count(*) from outbox").await, outbox_before, "nothing refused was announced");
    assert_eq!(app.count(&format!("select count(*) from grants where integration_id = '{theirs}'")).await, 1);
    assert_eq!(app.count("select count(*) from integrations").await, 3);

    // Reads like a viewer (who is not shown the tenant's tokens); the tokens list names the
    // integration it owns.
    for path in ["", "/integrations", "/teams", "/users", "/jobs", "/tasks"] {
        let a = app.get(&format!("{base}{path}"), &io).await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.text);
    }
    let a = app.get(&format!("{base}/tokens"), &io).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.text);
    let tokens = app.get(&format!("{base}/tokens"), &owner).await.body;
    let io_token: Vec<&Value> =
        tokens["tokens"].as_array().unwrap().iter().filter(|t| t["role"] == "integration_owner").collect();
    assert_eq!(io_token.len(), 1, "{tokens}");
    assert_eq!(io_token[0]["scope"], mine.to_string());

    // The database holds the rule too: an integration owner names an integration, no one else does.
    let client = app.store.client().await.unwrap();
    for (role, scope) in [("integration_owner", None), ("admin", Some(mine))] {
        let broken = client
            .execute(
                "insert into tokens (hash, tenant_id, kind, scope_integration, role) values ($1, $2, 'admin', $3, $4)",
                &[&Uuid::new_v4().as_bytes().to_vec(), &tenant, &scope, &role],
            )
            .await;
        assert!(broken.is_err(), "{role} {scope:?} was stored");
    }
}

#[tokio::test]
async fn tokens_are_revoked_by_whoever_may_mint_them() {
    let app = spawn_app().await;
    let (tenant, _, owner) = app.tenant("Acme").await;
    let (other_tenant, _, other_owner) = app.tenant("Other").await;
    let base = format!("/api/v1/tenants/{tenant}");
    let a = app.post(&format!("{base}/scim-tokens"), &owner, json!({ "label": "okta" })).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    let viewer = app.admin_token(tenant, &owner, "viewer").await;
    let admin = app.admin_token(tenant, &owner, "admin").await;
    let super_admin = app.admin_token(tenant, &owner, "super_admin").await;
    // The token list's ids, by kind and role.
    let ids = |tokens: Value| -> Vec<(String, String, String)> {
        tokens["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let what = t["role"].as_str().unwrap_or("scim").to_string();
                (what, t["label"].as_str().unwrap().to_string(), t["id"].as_str().unwrap().to_string())
            })
            .collect()
    };
    let listed = ids(app.get(&format!("{base}/tokens"), &owner).await.body);
    let id_of = |what: &str, label: &str| {
        listed.iter().find(|(w, l, _)| w == what && l == label).map(|(_, _, id)| id.clone()).unwrap()
    };
    let okta = id_of("scim", "okta");
    let viewer_id = id_of("viewer", "");
    let owner_id = listed.iter().find(|(w, _, _)| w == "owner").unwrap().2.clone();
    let revoke = |id: &str, token: &str| {
        let (path, token) = (format!("{base}/tokens/{id}"), token.to_string());
        let app = &app;
        async move { app.call(Method::DELETE, &path, Some(&token), None).await }
    };

    assert_eq!(revoke(&okta, &viewer).await.status, StatusCode::FORBIDDEN, "a viewer revokes nothing");
    assert_eq!(revoke(&viewer_id, &admin).await.status, StatusCode::FORBIDDEN, "an admin mints no admin tokens");
    assert_eq!(revoke(&owner_id, &super_admin).await.status, StatusCode::FORBIDDEN, "nor revokes one above it");
    assert_eq!(revoke(&Uuid::new_v4().to_string(), &owner).await.status, StatusCode::NOT_FOUND);
    assert_eq!(revoke("not-a-uuid", &owner).await.status, StatusCode::BAD_REQUEST);
    // Another tenant's token: not found through this tenant, forbidden through that one.
    let theirs = ids(app.get(&format!("/api/v1/tenants/{other_tenant}/tokens"), &other_owner).await.body);
    assert_eq!(revoke(&theirs[0].2, &owner).await.status, StatusCode::NOT_FOUND);
    let a = app
        .call(Method::DELETE, &format!("/api/v1/tenants/{other_tenant}/tokens/{}", theirs[0].2), Some(&owner), None)
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(app.count("select count(*) from tokens").await, 8, "nothing was revoked (six here, two there)");

    let a = revoke(&okta, &admin).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.text);
    let a = revoke(&viewer_id, &super_admin).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.text);
    assert_eq!(app.get(&base, &viewer).await.status, StatusCode::UNAUTHORIZED, "the revoked token is refused");
    let left = ids(app.get(&format!("{base}/tokens"), &owner).await.body);
    assert!(left.iter().all(|(_, _, id)| *id != okta && *id != viewer_id), "{left:?}");
    assert_eq!(left.len(), 4);
    assert_eq!(revoke(&okta, &owner).await.status, StatusCode::NOT_FOUND, "revoked once");
}

#[tokio::test]
async fn without_a_credential_key_plain_secrets_are_refused_unless_plaintext_is_allowed() {
    use unseat_store::credentials::Sealing;
    let app = support::spawn_app_with(Sealing { key: None, allow_plaintext: false }).await;
    let (tenant, _, owner) = app.tenant("Acme").await;
    let base = format!("/api/v1/tenants/{tenant}/integrations");
    let a = app.post(&base, &owner, integration_body("Meta Business")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text);
    let msg = a.body["error"].as_str().unwrap_or_default();
    assert!(msg.contains("UNSEAT_CREDENTIAL_KEY") && msg.contains("env:"), "{msg}");
    assert!(!a.text.contains("s3cret-credential-value"));
    assert_eq!(app.count("select count(*) from integrations").await, 0, "nothing was stored");
    // References need no key: they are stored as references. They name secrets of the
    // deployment, not of the tenant, so only the operator gives them: a tenant's owner could
    // otherwise have any app secret of the deployment sent to an address of theirs.
    let mut reference = integration_body("By reference");
    reference["credential"] = json!("env:UNSEAT_APP_CREDENTIAL_META");
    let a = app.post(&base, &owner, reference.clone()).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.text);
    assert!(a.text.contains("only the operator"), "{}", a.text);
    assert_eq!(app.count("select count(*) from integrations").await, 0, "nothing was stored");
    let a = app.post(&base, OPERATOR, reference).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    assert_eq!(
        app.count("select count(*) from integrations where credential = 'env:UNSEAT_APP_CREDENTIAL_META'").await,
        1
    );

    // Development: plaintext explicitly allowed.
    let dev = support::spawn_app_with(Sealing { key: None, allow_plaintext: true }).await;
    let (tenant, _, owner) = dev.tenant("Acme").await;
    let a = dev.post(&format!("/api/v1/tenants/{tenant}/integrations"), &owner, integration_body("Dev")).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    assert!(!a.text.contains("s3cret-credential-value"));
    assert_eq!(dev.count("select count(*) from integrations where credential = 's3cret-credential-value'").await, 1);
}

#[tokio::test]
async fn integrations_are_validated_and_never_show_their_credential() {
    let app = spawn_app().await;
    let (tenant, _, owner) = app.tenant("Acme").await;
    let base = format!("/api/v1/tenants/{tenant}/integrations");

    let a = app.post(&base, &owner, integration_body("Meta Business")).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    assert_eq!(a.body["has_credential"], true);
    assert_eq!(a.body["roles"], json!(["ADMIN", "EMPLOYEE"]));
    assert_eq!(a.body["default_role"], "EMPLOYEE");
    assert_eq!(a.body["settings"]["business_id"], "4100000001");
    assert_eq!(a.body["needs_attention"], Value::Null);
    assert!(a.body.get("credential").is_none());
    assert!(!a.text.contains("s3cret-credential-value"));
    let id = a.body["id"].as_str().unwrap().to_string();

    let mut without = integration_body("No credential");
    without.as_object_mut().unwrap().remove("credential");
    let a = app.post(&base, &owner, without).await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(a.body["has_credential"], false);

    let a = app.get(&base, &owner).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["integrations"].as_array().map(Vec::len), Some(2));
    assert!(!a.text.contains("s3cret-credential-value"));
    let a = app.get(&format!("{base}/{id}"), &owner).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["name"], "Meta Business");
    assert!(a.body.get("needs_attention").is_some());
    assert!(!a.text.contains("s3cret-credential-value"));
    // The credential is stored for the connector, encrypted.
    assert_eq!(app.count("select count(*) from integrations where credential like 'enc:v1:%'").await, 1);
    assert_eq!(app.count("select count(*) from integrations where credential like '%s3cret%'").await, 0);

    let with = |key: &str, value: Value| {
        let mut b = integration_body("Bad");
        b[key] = value;
        b
    };
    let scim = |settings: Value| {
        let mut b = with("app_kind", json!("scim"));
        b["settings"] = settings;
        b["roles"] = json!(["ADMIN", "EMPLOYEE"]);
        b
    };
    let bad = [
        (scim(json!({"deprovision": "archive"})), "deprovision"),
        (scim(json!({"match_attribute": "email"})), "match_attribute"),
        (with("default_role", json!("OWNER")), "default_role"),
        (with("roles", json!(["ADMIN", "ADMIN"])), "twice"),
        (with("roles", json!(["Admin", "EMPLOYEE", "ADMIN"])), "differ only in case"),
        (with("roles", json!(["ΟΔΟΣ", "EMPLOYEE", " οδοσ"])), "differ only in case"),
        (with("roles", json!(["ADMIN", " "])), "non-empty"),
        // Graph refuses any other role name, so every task giving one would fail.
        (with("roles", json!(["Admin", "EMPLOYEE"])), "spelt \"ADMIN\" in Meta's Graph API"),
        (with("roles", json!(["ADMINS", "EMPLOYEE"])), "not a Meta business role"),
        (with("name", json!("")), "name"),
        // The bound is on what is sent (as the OpenAPI document says), not on what is kept.
        (with("name", json!(format!(" {} ", "x".repeat(199)))), "at most 200"),
        (with("app_kind", json!("spreadsheet")), "app_kind"),
        (with("base_url", json!("not a url")), "base_url"),
        (with("base_url", json!("ftp://example.com")), "base_url"),
        (with("base_url", json!("https://hub:s3cret@example.com/")), "credential"),
        (with("base_url", json!("https://hub@example.com/")), "credential"),
        (with("base_url", json!("https://example.com/hub?x=1")), "query"),
        (with("base_url", json!("https://example.com/hub#top")), "fragment"),
        (with("settings", json!({})), "business_id"),
        // What the connector would refuse at every task is refused here.
        (with("settings", json!({"business_id": "biz1"})), "numeric id"),
        (with("settings", json!({"business_id": "4100000001", "rate_limit_per_second": 0})), "a number from"),
        (with("settings", json!({"business_id": "4100000001", "rate_limit_per_second": "fast"})), "a number from"),
        (with("settings", json!([1])), "settings"),
        (with("roles", json!("ADMIN")), "invalid JSON"),
        (with("surprise", json!(1)), "surprise"),
        (with("credential", json!("env:HOME")), "UNSEAT_APP_CREDENTIAL_"),
        (with("credential", json!("file:../../etc/passwd")), "plain file name"),
        (with("credential", json!("enc:v1:00ff")), "another key"),
    ];
    for (body, needle) in bad {
        // Only the operator may give a reference (below): its checks are the operator's.
        let reference = body["credential"].as_str().is_some_and(|c| c.starts_with("env:") || c.starts_with("file:"));
        let a = app.post(&base, if reference { OPERATOR } else { &owner }, body.clone()).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}: {}", a.text);
        let msg = a.body["error"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
        assert!(!a.text.contains("s3cret-credential-value"));
    }
    let a = app.raw(Method::POST, &base, &owner, "[").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(app.count("select count(*) from integrations").await, 2);

    let a = app.get(&format!("{base}/{}", Uuid::new_v4()), &owner).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = app.get(&format!("{base}/123"), &owner).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.body["error"].as_str().unwrap().contains("integration id"));
}

async fn outbox(app: &TestApp) -> Vec<(String, String, Value)> {
    let client = app.store.client().await.unwrap();
    client
        .query("select exchange, routing_key, payload from outbox order by id", &[])
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

fn users_of(payload: &Value) -> Vec<Uuid> {
    serde_json::from_value(payload["users"].clone()).unwrap()
}

#[tokio::test]
async fn grant_changes_announce_the_users_they_reach_in_one_outbox_row() {
    let app = spawn_app().await;
    let (tenant, _, owner) = app.tenant("Acme").await;
    let integration = app.integration(tenant, &owner, "Meta Business").await;
    let alice = app.add_user(tenant, "alice@example.com").await;
    let bob = app.add_user(tenant, "bob@example.com").await;
    let carol = app.add_user(tenant, "carol@example.com").await;
    let marketing = app.add_team(tenant, "Marketing", &[alice, bob]).await;
    let empty = app.add_team(tenant, "Empty", &[]).await;
    // Another tenant's team must not be usable.
    let (other, _, _) = app.tenant("Other").await;
    let foreign_user = app.add_user(other, "mallory@example.com").await;
    let foreign_team = app.add_team(other, "Foreign", &[foreign_user]).await;
    let grants = format!("/api/v1/tenants/{tenant}/integrations/{integration}/grants");

    // Errors write nothing.
    let bad = [
        (json!({ "team_id": marketing, "role": "OWNER" }), StatusCode::BAD_REQUEST),
        (json!({ "team_id": marketing, "user_id": alice, "role": "ADMIN" }), StatusCode::BAD_REQUEST),
        (json!({ "role": "ADMIN" }), StatusCode::BAD_REQUEST),
        // null is the same as leaving a field out (the OpenAPI document says so).
        (json!({ "team_id": null, "user_id": null, "role": "ADMIN" }), StatusCode::BAD_REQUEST),
        (json!({ "team_id": "nope", "role": "ADMIN" }), StatusCode::BAD_REQUEST),
        (json!({ "team_id": Uuid::new_v4(), "role": "ADMIN" }), StatusCode::NOT_FOUND),
        (json!({ "team_id": foreign_team, "role": "ADMIN" }), StatusCode::NOT_FOUND),
        (json!({ "user_id": foreign_user, "role": "ADMIN" }), StatusCode::NOT_FOUND),
        (json!({ "team_id": alice, "role": "ADMIN" }), StatusCode::NOT_FOUND),
    ];
    for (body, status) in &bad {
        let a = app.post(&grants, &owner, body.clone()).await;
        assert_eq!(a.status, *status, "{body}: {}", a.text);
        assert!(a.body["error"].is_string());
    }
    let a = app
        .post(
            &format!("/api/v1/tenants/{tenant}/integrations/{}/grants", Uuid::new_v4()),
            &owner,
            json!({ "team_id": marketing, "role": "ADMIN" }),
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    // An asset named twice (serde would keep the last), and a role of 60,000 characters,
    // whose refusal quotes only the start of it.
    let twice = format!(
        r#"{{"team_id": "{marketing}", "role": "ADMIN", "assets": {{"act_1": "MANAGE", "act_1": "ANALYZE"}}}}"#
    );
    let a = app.raw(Method::POST, &grants, &owner, twice).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text);
    assert!(a.text.contains(r#"asset \"act_1\" is named twice"#), "{}", a.text);
    let a = app.post(&grants, &owner, json!({ "team_id": marketing, "role": "R".repeat(60_000) })).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", &a.text[..200]);
    let error = a.body["error"].as_str().expect("error");
    assert!(error.contains("RRRR") && error.chars().count() <= 1001 && error.ends_with('…'), "{error}");
    assert_eq!(app.count("select count(*) from grants").await, 0);
    assert!(outbox(&app).await.is_empty());

    // A team grant: one row naming the team's members.
    let a = app.post(&grants, &owner, json!({ "team_id": marketing, "role": "ADMIN" })).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    assert_eq!(a.body["team_id"], marketing.to_string());
    assert_eq!(a.body["user_id"], Value::Null);
    assert_eq!(a.body["subject_name"], "Marketing");
    let team_grant = a.body["id"].as_str().unwrap().to_string();
    let rows = outbox(&app).await;
    assert_eq!(rows.len(), 1);
    let (exchange, key, payload) = &rows[0];
    assert_eq!(exchange, EXCHANGE);
    assert_eq!(key, unseat_bus::DIRECTORY_ROUTING_KEY);
    let msg: unseat_bus::messages::DirectoryChanged = serde_json::from_value(payload.clone()).unwrap();
    assert_eq!(msg.v, unseat_bus::messages::MESSAGE_VERSION);
    assert_eq!(msg.tenant_id, tenant);
    assert_eq!(msg.scope, "workspace");
    let mut expected = vec![alice, bob];
    expected.sort();
    assert_eq!(msg.users, expected);
    assert_eq!(msg.trigger.method, "POST");
    assert_eq!(msg.trigger.path, grants);
    // The log says who did it: the owner's token by role, label and id, never the token.
    let owner_id = app.token_id(tenant, &owner, "role", "owner").await;
    let summary = &msg.trigger.summary;
    assert!(summary.starts_with("grant ADMIN on Meta Business to team Marketing added; by owner token "), "{summary}");
    assert!(summary.contains(&owner_id) && !summary.contains(&owner), "{summary}");

    // The same team again is a conflict and writes nothing.
    let a = app.post(&grants, &owner, json!({ "team_id": marketing, "role": "EMPLOYEE" })).await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.text);
    assert_eq!(outbox(&app).await.len(), 1);

    // A team with no members: the grant exists, nobody to announce.
    let a = app.post(&grants, &owner, json!({ "team_id": empty, "role": "EMPLOYEE" })).await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(outbox(&app).await.len(), 1);

    // A user grant names that user.
    let a = app.post(&grants, &owner, json!({ "user_id": carol, "role": "EMPLOYEE" })).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    assert_eq!(a.body["subject_name"], "carol@example.com");
    let user_grant = a.body["id"].as_str().unwrap().to_string();
    let rows = outbox(&app).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(users_of(&rows[1].2), vec![carol]);

    // The list names teams and users.
    let a = app.get(&grants, &owner).await;
    assert_eq!(a.status, StatusCode::OK);
    let names: Vec<&str> =
        a.body["grants"].as_array().unwrap().iter().filter_map(|g| g["subject_name"].as_str()).collect();
    assert_eq!(names.len(), 3);
    assert!(names.contains(&"Marketing") && names.contains(&"Empty") && names.contains(&"carol@example.com"));

    // Changing a role announces; the same role or a bad one does not.
    let a = app
        .call(Method::PATCH, &format!("{grants}/{team_grant}"), Some(&owner), Some(json!({ "role": "EMPLOYEE" })))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.body["role"], "EMPLOYEE");
    let rows = outbox(&app).await;
    assert_eq!(rows.len(), 3);
    assert_eq!(users_of(&rows[2].2), expected);
    assert_eq!(
        rows[2].2["trigger"]["summary"],
        format!(
            "grant on Meta Business to team Marketing changed from ADMIN to EMPLOYEE; by owner token \"first owner\" \
             ({owner_id})"
        )
    );
    for (body, status) in [
        (json!({ "role": "EMPLOYEE" }), StatusCode::OK),
        (json!({ "role": "EMPLOYEE", "assets": null }), StatusCode::OK),
        (json!({ "role": "GOD" }), StatusCode::BAD_REQUEST),
        (json!({}), StatusCode::BAD_REQUEST),
        (json!({ "role": null, "assets": null }), StatusCode::BAD_REQUEST),
    ] {
        let a = app.call(Method::PATCH, &format!("{grants}/{team_grant}"), Some(&owner), Some(body)).await;
        assert_eq!(a.status, status, "{}", a.text);
    }
    assert_eq!(app.count("select count(*) from grants where role = 'GOD'").await, 0);
    assert_eq!(outbox(&app).await.len(), 3);
    let a = app
        .call(Method::PATCH, &format!("{grants}/{}", Uuid::new_v4()), Some(&owner), Some(json!({ "role": "ADMIN" })))
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);

    // Removing announces to the grant's users.
    let a = app.call(Method::DELETE, &format!("{grants}/{user_grant}"), Some(&owner), None).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.text);
    let rows = outbox(&app).await;
    assert_eq!(rows.len(), 4);
    assert_eq!(users_of(&rows[3].2), vec![carol]);
    assert_eq!(rows[3].2["trigger"]["method"], "DELETE");
    let a = app.call(Method::DELETE, &format!("{grants}/{user_grant}"), Some(&owner), None).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(outbox(&app).await.len(), 4);
    assert_eq!(app.count("select count(*) from grants").await, 2);
}

#[tokio::test]
async fn directory_reads_show_teams_and_users() {
    let app = spawn_app().await;
    let (tenant, _, owner) = app.tenant("Acme").await;
    let alice = app.add_user(tenant, "alice@example.com").await;
    let bob = app.add_user(tenant, "bob@example.com").await;
    app.add_team(tenant, "Marketing", &[alice, bob]).await;
    app.add_team(tenant, "Admins", &[alice]).await;
    let (other, _, _) = app.tenant("Other").await;
    app.add_user(other, "mallory@example.com").await;
    // An integration's own directory (users and pushed groups its IdP app assigns) is not
    // the workspace's: it shows neither among the teams nor among the users.
    let scope = Uuid::new_v4().to_string();
    let client = app.store.client().await.unwrap();
    client
        .execute(
            "insert into scim_users (tenant_id, id, scope, user_name, user_name_key, email, resource)
             values ($1, gen_random_uuid(), $2, 'alice@example.com', 'alice@example.com', 'alice@example.com', '{}')",
            &[&tenant, &scope],
        )
        .await
        .unwrap();
    client
        .execute(
            "insert into scim_groups (tenant_id, id, scope, display_name, display_name_key, resource)
             values ($1, gen_random_uuid(), $2, 'ADMIN', 'admin', '{}')",
            &[&tenant, &scope],
        )
        .await
        .unwrap();

    let a = app.get(&format!("/api/v1/tenants/{tenant}/teams"), &owner).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["teams"][0]["displayName"], "Admins");
    assert_eq!(a.body["teams"][1]["displayName"], "Marketing");
    assert_eq!(a.body["teams"][1]["member_count"], 2);
    assert_eq!(a.body["teams"].as_array().map(Vec::len), Some(2), "{}", a.body);
    assert_eq!(a.body["next"], Value::Null);
    // Page by page, one team a page, through two teams of the same name.
    for _ in 0..2 {
        client
            .execute(
                "insert into scim_groups (tenant_id, id, display_name, display_name_key, resource)
                 values ($1, gen_random_uuid(), 'Ops', 'ops', '{}')",
                &[&tenant],
            )
            .await
            .unwrap();
    }
    let (mut names, mut after) = (Vec::new(), String::new());
    for _ in 0..10 {
        let a = app.get(&format!("/api/v1/tenants/{tenant}/teams?limit=1&after={after}"), &owner).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        names
            .extend(a.body["teams"].as_array().unwrap().iter().map(|t| t["displayName"].as_str().unwrap().to_string()));
        match a.body["next"].as_str() {
            Some(next) => after = next.to_string(),
            None => break,
        }
    }
    assert_eq!(names, ["Admins", "Marketing", "Ops", "Ops"]);
    for bad in ["x", &Uuid::new_v4().to_string()] {
        let a = app.get(&format!("/api/v1/tenants/{tenant}/teams?after={bad}"), &owner).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}: {}", a.text);
        assert!(a.body["error"].as_str().unwrap().contains("after is not a team"), "{}", a.text);
    }

    let a = app.get(&format!("/api/v1/tenants/{tenant}/users"), &owner).await;
    assert_eq!(a.status, StatusCode::OK);
    let users = a.body["users"].as_array().unwrap();
    assert_eq!(users.len(), 2);
    assert_eq!(users[0]["userName"], "alice@example.com");
    assert_eq!(users[0]["teams"].as_array().map(Vec::len), Some(2));
    assert_eq!(users[0]["active"], true);

    let a = app.get(&format!("/api/v1/tenants/{tenant}/users?filter_email=BOB"), &owner).await;
    let users = a.body["users"].as_array().unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0]["id"], bob.to_string());

    let a = app.get(&format!("/api/v1/tenants/{tenant}/users?limit=1"), &owner).await;
    assert_eq!(a.body["users"].as_array().map(Vec::len), Some(1));
    let next = a.body["next"].as_str().unwrap().to_string();
    let a = app.get(&format!("/api/v1/tenants/{tenant}/users?limit=1&after={next}"), &owner).await;
    assert_eq!(a.body["users"][0]["userName"], "bob@example.com");
    assert_eq!(a.body["next"], Value::Null);
    let a = app.get(&format!("/api/v1/tenants/{tenant}/users?limit=0"), &owner).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
}

/// Paging the users and filtering them by email ignore case the way the directory does: a
/// cursor after a name with a final sigma (which a context-sensitive lower-casing writes `ς`
/// and the directory `σ`) moves on instead of showing the same user again.
#[tokio::test]
async fn directory_users_page_and_filter_by_any_letters_case() {
    let app = spawn_app().await;
    let (tenant, _, owner) = app.tenant("Acme").await;
    let names = ["ΑΣ@a.example", "ας@b.example", "Émile@c.example", "ΟΔΟΣ@d.example"];
    for name in names {
        app.add_user(tenant, name).await;
    }
    let mut seen = Vec::new();
    let mut after = String::new();
    for _ in 0..names.len() + 1 {
        let a = app.get(&format!("/api/v1/tenants/{tenant}/users?limit=1&after={after}"), &owner).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        seen.extend(a.body["users"].as_array().unwrap().iter().map(|u| u["userName"].as_str().unwrap().to_string()));
        match a.body["next"].as_str() {
            Some(next) => after = url_encoded(next),
            None => break,
        }
    }
    let mut want: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    want.sort_by_key(|n| unseat_domain::text::fold(n));
    assert_eq!(seen.len(), names.len(), "{seen:?}");
    let mut got = seen.clone();
    got.sort_by_key(|n| unseat_domain::text::fold(n));
    assert_eq!(got, want);

    for (filter, want) in [
        ("οδοσ@D", vec!["ΟΔΟΣ@d.example"]),
        ("οδος@d", vec!["ΟΔΟΣ@d.example"]),
        ("ΟΔΟς", vec!["ΟΔΟΣ@d.example"]),
        ("Σ@D.E", vec!["ΟΔΟΣ@d.example"]),
        ("ÉMILE", vec!["Émile@c.example"]),
        // Characters regular expressions treat specially are only themselves.
        ("a.example", vec!["ΑΣ@a.example"]),
        ("a.exampl.", vec![]),
        ("(", vec![]),
        ("*", vec![]),
        ("\\", vec![]),
        ("[", vec![]),
        ("%", vec![]),
        ("_", vec![]),
        ("^", vec![]),
        ("$", vec![]),
    ] {
        let path = format!("/api/v1/tenants/{tenant}/users?filter_email={}", url_encoded(filter));
        let a = app.get(&path, &owner).await;
        assert_eq!(a.status, StatusCode::OK, "{filter}: {}", a.text);
        let found: Vec<&str> =
            a.body["users"].as_array().unwrap().iter().map(|u| u["userName"].as_str().unwrap()).collect();
        assert_eq!(found, want, "{filter}");
    }
}

fn url_encoded(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Follows `next` until the end; returns the ids in order.
async fn walk(app: &TestApp, path: &str, key: &str, token: &str, limit: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut next: Option<String> = None;
    for _ in 0..100 {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = match &next {
            None => format!("{path}{sep}limit={limit}"),
            Some(c) => format!("{path}{sep}limit={limit}&before={c}"),
        };
        let a = app.get(&url, token).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        let page = a.body[key].as_array().unwrap();
        assert!(page.len() <= limit);
        ids.extend(page.iter().map(|j| j["id"].as_str().unwrap().to_string()));
        match a.body["next"].as_str() {
            Some(c) => next = Some(c.to_string()),
            None => return ids,
        }
    }
    panic!("pagination did not end");
}

#[tokio::test]
async fn the_automation_log_pages_newest_first_and_stays_stable() {
    let app = spawn_app().await;
    let (tenant, _, owner) = app.tenant("Acme").await;
    let integration = app.integration(tenant, &owner, "Meta Business").await;
    let other_integration = app.integration(tenant, &owner, "Ads").await;
    let (other, _, other_admin) = app.tenant("Other").await;
    let foreign_job = add_job(&app, other, "2026-01-01T00:00:09Z", "foreign").await;

    // Seven jobs, two of them at the same instant.
    let mut jobs = Vec::new();
    for (i, at) in [
        "2026-01-01T00:00:01Z",
        "2026-01-01T00:00:02Z",
        "2026-01-01T00:00:03Z",
        "2026-01-01T00:00:03Z",
        "2026-01-01T00:00:04.000001Z",
        "2026-01-01T00:00:05Z",
        "2026-01-01T00:00:06Z",
    ]
    .iter()
    .enumerate()
    {
        jobs.push((at.to_string(), add_job(&app, tenant, at, &format!("job {i}")).await));
    }
    let first = jobs[0].1;
    let t1 = add_task(&app, tenant, first, integration, "succeeded", "2026-01-01T00:00:01Z").await;
    let t2 = add_task(&app, tenant, first, integration, "failed", "2026-01-01T00:00:02Z").await;
    let t3 = add_task(&app, tenant, first, other_integration, "failed", "2026-01-01T00:00:03Z").await;
    let client = app.store.client().await.unwrap();
    // The first event, `decided`, is the reason the task was stored with.
    for (kind, detail) in [("attempt", "500 from app"), ("dead_lettered", "gave up")] {
        client
            .execute(
                "insert into task_events (tenant_id, task_id, kind, detail) values ($1, $2, $3, $4)",
                &[&tenant, &t2, &kind, &detail],
            )
            .await
            .unwrap();
    }

    // Newest first by (created_at, id); every job once, whatever the page size.
    let mut expected = jobs.clone();
    expected.sort_by(|a, b| (b.0.as_str(), b.1).cmp(&(a.0.as_str(), a.1)));
    let expected: Vec<String> = expected.iter().map(|j| j.1.to_string()).collect();
    let path = format!("/api/v1/tenants/{tenant}/jobs");
    for limit in [1, 2, 3, 7, 50] {
        assert_eq!(walk(&app, &path, "jobs", &owner, limit).await, expected, "limit {limit}");
    }

    // A job arriving while paging does not shift later pages.
    let a = app.get(&format!("{path}?limit=3"), &owner).await;
    let page1: Vec<String> =
        a.body["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap().to_string()).collect();
    let cursor = a.body["next"].as_str().unwrap().to_string();
    add_job(&app, tenant, "2026-06-01T00:00:00Z", "late").await;
    let a = app.get(&format!("{path}?limit=3&before={cursor}"), &owner).await;
    let page2: Vec<String> =
        a.body["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap().to_string()).collect();
    assert_eq!([page1, page2].concat(), expected[..6].to_vec());

    // Summaries carry the trigger and task counts.
    let a = app.get(&format!("{path}?limit=50"), &owner).await;
    let job = a.body["jobs"].as_array().unwrap().iter().find(|j| j["id"] == first.to_string()).unwrap().clone();
    assert_eq!(job["trigger"]["method"], "PATCH");
    assert_eq!(job["trigger"]["user_agent"], "Okta SCIM Client");
    assert_eq!(job["summary"], "job 0");
    assert_eq!(job["task_counts"]["failed"], 2);
    assert_eq!(job["task_counts"]["succeeded"], 1);
    assert_eq!(job["task_counts"]["queued"], 0);
    assert!(!a.text.contains(&foreign_job.to_string()));

    // One job with its tasks, paged.
    let a = app.get(&format!("{path}/{first}"), &owner).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["job"]["id"], first.to_string());
    let tasks: Vec<&str> = a.body["tasks"].as_array().unwrap().iter().filter_map(|t| t["id"].as_str()).collect();
    assert_eq!(tasks, vec![t3.to_string(), t2.to_string(), t1.to_string()]);
    assert_eq!(walk(&app, &format!("{path}/{first}"), "tasks", &owner, 1).await, tasks);

    // Task lists with filters.
    let tasks_path = format!("/api/v1/tenants/{tenant}/tasks");
    let a = app.get(&format!("{tasks_path}?status=failed"), &owner).await;
    assert_eq!(a.body["tasks"].as_array().map(Vec::len), Some(2));
    let a = app.get(&format!("{tasks_path}?status=failed&integration={integration}"), &owner).await;
    let t = &a.body["tasks"][0];
    assert_eq!(a.body["tasks"].as_array().map(Vec::len), Some(1));
    assert_eq!(t["id"], t2.to_string());
    for field in [
        "job_id",
        "integration_id",
        "user_id",
        "user_email",
        "outcome",
        "from_role",
        "to_role",
        "reason",
        "status",
        "attempts",
        "last_error",
        "dead_lettered",
        "created_at",
        "started_at",
        "finished_at",
    ] {
        assert!(t.get(field).is_some(), "task misses {field}");
    }
    assert_eq!(
        walk(&app, &format!("{tasks_path}?status=failed"), "tasks", &owner, 1).await,
        vec![t3.to_string(), t2.to_string()]
    );

    // A task with its events in order.
    let a = app.get(&format!("{tasks_path}/{t2}"), &owner).await;
    assert_eq!(a.status, StatusCode::OK);
    let kinds: Vec<&str> = a.body["events"].as_array().unwrap().iter().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(kinds, vec!["decided", "attempt", "dead_lettered"]);
    assert_eq!(a.body["events"][0]["detail"], "removed: no grant", "the decision's reason, as the task holds it");

    // An integration's Activity.
    client
        .execute("update integrations set needs_attention = 'credential rejected' where id = $1", &[&integration])
        .await
        .unwrap();
    let a = app.get(&format!("/api/v1/tenants/{tenant}/integrations/{integration}/activity"), &owner).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.body["needs_attention"], "credential rejected");
    assert_eq!(a.body["tasks"].as_array().map(Vec::len), Some(2));

    // Bad input and other tenants' rows.
    for q in ["limit=0", "limit=201", "limit=x", "before=garbage", "status=weird", "integration=1", "user=x"] {
        let a = app.get(&format!("{tasks_path}?{q}"), &owner).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{q}: {}", a.text);
    }
    assert_eq!(app.get(&format!("{path}?before=1.2"), &owner).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(app.get(&format!("{path}/{foreign_job}"), &owner).await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.get(&format!("{path}/{}", Uuid::new_v4()), &owner).await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.get(&format!("{tasks_path}/{}", Uuid::new_v4()), &owner).await.status, StatusCode::NOT_FOUND);
    let a = app.get(&format!("/api/v1/tenants/{other}/jobs"), &other_admin).await;
    assert_eq!(a.body["jobs"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        app.get(&format!("/api/v1/tenants/{other}/tasks/{t2}"), &other_admin).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn the_openapi_document_is_open_and_describes_every_route() {
    let app = spawn_app().await;
    let a = app.call(Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(a.status, StatusCode::OK);
    let doc = a.body;
    assert!(doc["openapi"].as_str().unwrap_or_default().starts_with("3.1"));
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    assert!(doc["security"].is_array());
    for (m, path) in unseat_console::routes() {
        let op = &doc["paths"][path][m.to_lowercase()];
        assert!(op.is_object(), "{m} {path} is not in the OpenAPI document");
        assert!(op["responses"].is_object(), "{m} {path} has no responses");
        if path == "/api/v1/openapi.json" {
            assert_eq!(op["security"], json!([]), "the document itself is open");
        } else {
            assert!(op["responses"]["401"].is_object(), "{m} {path} does not document 401");
        }
        if m == "POST" || m == "PATCH" {
            let body = &op["requestBody"]["content"]["application/json"]["schema"];
            assert!(body.is_object(), "{m} {path} has no request schema");
        }
    }
    // Every $ref resolves.
    let text = serde_json::to_string(&doc).unwrap();
    for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = part.split('"').next().unwrap();
        assert!(doc["components"]["schemas"][name].is_object(), "dangling $ref {name}");
    }
    // And nothing in it that is not served.
    let served = unseat_console::routes();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for m in ops.as_object().unwrap().keys().filter(|k| *k != "parameters") {
            assert!(
                served.iter().any(|(sm, sp)| sp == path && sm.to_lowercase() == *m),
                "{m} {path} is documented but not served"
            );
        }
    }
    let a = app.call(Method::PUT, "/api/v1/tenants", Some(OPERATOR), None).await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(a.body["error"].is_string());
    // Unknown endpoints are a JSON 404.
    let a = app.get("/api/v1/nothing-here", OPERATOR).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(a.body["error"].is_string());
}

/// PostgreSQL's text cannot hold U+0000: a NUL in a body, a query or a path is the caller's
/// mistake (400 naming it), never a 500; so is text over its documented length (counted as
/// sent, before trimming) and a body that is not a JSON object. Nothing is written.
#[tokio::test]
async fn text_the_api_cannot_keep_and_bodies_that_are_not_objects_are_refused() {
    let app = spawn_app().await;
    let (tenant, _, owner) = app.tenant("Acme").await;
    let base = format!("/api/v1/tenants/{tenant}");
    let mut hub = integration_body("Hub");
    hub["asset_roles"] = json!(["MANAGE", "ANALYZE"]);
    let a = app.post(&format!("{base}/integrations"), &owner, hub).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    let integration = a.body["id"].as_str().unwrap().to_string();
    let assets = format!("{base}/integrations/{integration}/assets");
    let a = app.post(&assets, &owner, json!({"asset_id": "act_1", "kind": "ad_account"})).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    let tables = "select (select count(*) from tenants) + (select count(*) from tokens) \
                  + (select count(*) from integration_assets) + (select count(*) from integrations)";
    let before = app.count(tables).await;

    let bodies = [
        (Method::POST, "/api/v1/tenants".to_string(), OPERATOR, json!({"name": "a\u{0}b"})),
        (Method::POST, format!("{base}/scim-tokens"), owner.as_str(), json!({"label": "\u{0}"})),
        (Method::POST, format!("{base}/admin-tokens"), owner.as_str(), json!({"role": "viewer", "label": "x\u{0}"})),
        (Method::POST, assets.clone(), owner.as_str(), json!({"asset_id": "act\u{0}", "kind": "page"})),
        (Method::PATCH, format!("{assets}/act_1"), owner.as_str(), json!({"name": "n\u{0}"})),
        (Method::POST, format!("{base}/integrations"), owner.as_str(), {
            let mut b = integration_body("Other");
            b["settings"] = json!({"business_id": "4100000002", "reported_roles": "b\u{0}"});
            b
        }),
    ];
    for (method, path, token, body) in bodies {
        let a = app.call(method.clone(), &path, Some(token), Some(body.clone())).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{method} {path} {body}: {}", a.text);
        assert!(a.body["error"].as_str().unwrap_or_default().contains("NUL"), "{}", a.text);
    }
    for path in [
        format!("{base}/users?filter_email=a%00b"),
        format!("{base}/users?after=%00"),
        format!("{base}/jobs?before=1.%00"),
        format!("{base}/integrations/{integration}/activity?before=%00"),
        format!("{assets}/act%00_1"),
        format!("/console/tenants/{tenant}/log?user=a%00"),
    ] {
        let a = app.get(&path, &owner).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{path}: {}", a.text);
        assert!(a.body["error"].as_str().unwrap_or_default().contains("NUL"), "{path}: {}", a.text);
    }
    let a = app.call(Method::DELETE, &format!("{assets}/act_1%00"), Some(&owner), None).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text);

    let padded = format!("  {}", "x".repeat(199));
    for (path, token, body) in [
        ("/api/v1/tenants".to_string(), OPERATOR, json!({"name": padded})),
        (format!("{base}/scim-tokens"), owner.as_str(), json!({"label": padded})),
        (assets.clone(), owner.as_str(), json!({"asset_id": "act_2", "kind": "page", "name": padded})),
    ] {
        let a = app.post(&path, token, body).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{path}: {}", a.text);
        assert!(a.body["error"].as_str().unwrap_or_default().contains("at most 200"), "{}", a.text);
    }
    // Every body is a JSON object; serde alone would fill a struct from an array.
    for body in ["[null, null]", "[]", "true", "null"] {
        let a = app.raw(Method::POST, &format!("{base}/scim-tokens"), &owner, body).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}: {}", a.text);
        assert!(a.body["error"].as_str().unwrap_or_default().contains("JSON object"), "{}", a.text);
    }

    assert_eq!(app.count(tables).await, before, "a refused request wrote something");
    let a = app.get(&assets, &owner).await;
    assert_eq!(a.body["assets"][0]["name"], "", "{}", a.text);
    // The escape itself, as text, is fine.
    let a = app.post(&format!("{base}/scim-tokens"), &owner, json!({"label": "\\u0000"})).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    // null is the same as leaving a field out: a workspace token without a label.
    let a = app.post(&format!("{base}/scim-tokens"), &owner, json!({"label": null, "integration_id": null})).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    assert_eq!((&a.body["label"], &a.body["scope"]), (&json!(""), &json!("workspace")));
}

/// Numbers in an integration's settings come back as they were sent (the largest a JSON
/// parser holds once made the handler panic when it read the stored row back); a rate at the
/// ends of what a parser holds is refused (a call every 10^300 s said nothing true of what a
/// connector does) and creates nothing.
#[tokio::test]
async fn extreme_numbers_in_settings_come_back_as_sent_or_are_refused() {
    let app = spawn_app().await;
    let (tenant, _, owner) = app.tenant("Acme").await;
    let list = format!("/api/v1/tenants/{tenant}/integrations");
    for (n, number) in [json!(0.01), json!(10000), json!(0.1), json!(9999.999999999998), json!(1.0000000000000002)]
        .into_iter()
        .enumerate()
    {
        let mut body = integration_body(&format!("Hub {n}"));
        body["settings"]["rate_limit_per_second"] = number.clone();
        let a = app.post(&list, &owner, body).await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
        assert_eq!(a.body["settings"]["rate_limit_per_second"], number);
        let a = app.get(&format!("{list}/{}", a.body["id"].as_str().unwrap()), &owner).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        assert_eq!(a.body["settings"]["rate_limit_per_second"], number);
    }
    let before = app.get(&list, &owner).await.body["integrations"].as_array().map_or(0, Vec::len);
    for number in
        [json!(1.7976931348623155e308), json!(f64::MAX), json!(5e-324), json!(1e-300), json!(u64::MAX), json!(0.009)]
    {
        let mut body = integration_body("Hub extreme");
        body["settings"]["rate_limit_per_second"] = number.clone();
        let a = app.post(&list, &owner, body).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{number}: {}", a.text);
        assert!(a.text.contains("from 0.01 (a call every 100 s) to 10000"), "{number}: {}", a.text);
    }
    let after = app.get(&list, &owner).await.body["integrations"].as_array().map_or(0, Vec::len);
    assert_eq!(after, before, "nothing created");
}

#[tokio::test]
async fn only_the_operator_gives_a_tenant_a_scim_rate_of_its_own() {
    let app = spawn_app().await;
    let (tenant, _, owner) = app.tenant("Acme").await;
    let path = format!("/api/v1/tenants/{tenant}/scim-rate-limit");
    let put = |token: &str, body: Value| {
        let (path, token) = (path.clone(), token.to_string());
        let app = &app;
        async move { app.call(Method::PUT, &path, Some(&token), Some(body)).await }
    };
    let stored = || async {
        let row = app
            .store
            .client()
            .await
            .unwrap()
            .query_one("select scim_rate_limit, scim_rate_burst from tenants where id = $1", &[&tenant])
            .await
            .unwrap();
        (row.get::<_, Option<i32>>(0), row.get::<_, Option<i32>>(1))
    };
    let a = app.get(&format!("/api/v1/tenants/{tenant}"), &owner).await;
    assert_eq!(a.body["scim_rate_limit"], Value::Null, "the fleet's: {}", a.text);

    // A tenant's own admins may not raise (or lower) their own limit.
    let a = put(&owner, json!({"per_second": 10, "burst": 20})).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.text);
    let a = app.call(Method::DELETE, &path, Some(&owner), None).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.text);
    // Bad input: a clear 400, and nothing changes.
    for body in [
        json!({"per_second": 0, "burst": 20}),
        json!({"per_second": 10, "burst": 0}),
        json!({"per_second": -1, "burst": 20}),
        json!({"per_second": 1_000_001, "burst": 20}),
        json!({"per_second": 10, "burst": 4_294_967_297_i64}),
        json!({"per_second": 1.5, "burst": 20}),
        json!({"per_second": 10}),
        json!({"per_second": null, "burst": 20}),
        json!({"per_second": 10, "burst": 20, "tenant": "other"}),
        json!([10, 20]),
    ] {
        let a = put(OPERATOR, body.clone()).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}: {}", a.text);
        assert!(a.body["error"].is_string(), "{body}: {}", a.text);
    }
    assert_eq!(stored().await, (None, None));
    let a = app
        .call(
            Method::PUT,
            &format!("/api/v1/tenants/{}/scim-rate-limit", Uuid::new_v4()),
            Some(OPERATOR),
            Some(json!({"per_second": 10, "burst": 20})),
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.text);

    let a = put(OPERATOR, json!({"per_second": 10, "burst": 20})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.body, json!({"per_second": 10, "burst": 20}));
    assert_eq!(stored().await, (Some(10), Some(20)));
    let a = app.get(&format!("/api/v1/tenants/{tenant}"), &owner).await;
    assert_eq!(a.body["scim_rate_limit"], json!({"per_second": 10, "burst": 20}), "its admins see it");
    let a = put(OPERATOR, json!({"per_second": 1_000_000, "burst": 1})).await;
    assert_eq!(a.status, StatusCode::OK, "the bounds: {}", a.text);
    assert_eq!(stored().await, (Some(1_000_000), Some(1)));

    let a = app.call(Method::DELETE, &path, Some(OPERATOR), None).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.text);
    assert_eq!(stored().await, (None, None));
    let a = app.get(&format!("/api/v1/tenants/{tenant}"), OPERATOR).await;
    assert_eq!(a.body["scim_rate_limit"], Value::Null);
}

/// What every paged endpoint answers for a `before` it did not hand out.
const NOT_A_CURSOR: &str = "before is not a cursor this API returned (use the `next` of a previous page)";

/// A cursor naming an instant PostgreSQL cannot hold (or one outside the years 1 to 9999, which
/// no stored time is in) is refused on every paged endpoint like any cursor the API did not
/// return: a 400 with the usual message, never a 500 from the database. The first and last
/// instants of those years still page.
#[tokio::test]
async fn a_cursor_outside_the_years_the_log_holds_is_refused_like_any_bad_cursor() {
    let app = spawn_app().await;
    let OneTask { tenant, owner, integration, job, .. } = tenant_with_a_task(&app, "failed").await;
    let id = "0".repeat(32);
    let base = format!("/api/v1/tenants/{tenant}");
    for (path, list) in [
        (format!("{base}/jobs"), "jobs"),
        (format!("{base}/tasks"), "tasks"),
        (format!("{base}/jobs/{job}"), "tasks"),
        (format!("{base}/integrations/{integration}/activity"), "tasks"),
    ] {
        // 4713 BC is PostgreSQL's first year; one microsecond before the year 1; the year 10000.
        for before in ["-300000000000000000", "-62135596800000001", "253402300800000000"] {
            let a = app.get(&format!("{path}?before={before}.{id}"), &owner).await;
            assert_eq!(a.status, StatusCode::BAD_REQUEST, "{path} before {before}: {}", a.text);
            assert_eq!(a.body["error"], NOT_A_CURSOR, "{path} before {before}");
        }
        // Before the first instant of the year 1 lies nothing; before the last of 9999, everything.
        let a = app.get(&format!("{path}?before=-62135596800000000.{id}"), &owner).await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.text);
        assert_eq!(a.body[list], json!([]), "{path}: {}", a.text);
        let a = app.get(&format!("{path}?before=253402300799999999.{id}"), &owner).await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.text);
        assert_eq!(a.body[list].as_array().map(Vec::len), Some(1), "{path}: {}", a.text);
    }
}

/// A path segment that is not UTF-8 text (`%ff`, the overlong `%C0%80`) is a 400 with the API's
/// JSON error body, on every method, like any other bad input.
#[tokio::test]
async fn a_path_that_is_not_utf8_text_is_a_json_400() {
    let app = spawn_app().await;
    let (tenant, _, owner) = app.tenant("Acme").await;
    let integration = app.integration(tenant, &owner, "Hub").await;
    let base = format!("/api/v1/tenants/{tenant}");
    let i = format!("{base}/integrations/{integration}");
    let cases = [
        (Method::GET, "/api/v1/tenants/%ff".to_string(), None),
        (Method::GET, "/api/v1/tenants/%ff/jobs".to_string(), None),
        (Method::PUT, "/api/v1/tenants/%ff/scim-rate-limit".to_string(), Some(json!({"per_second": 1, "burst": 1}))),
        (Method::GET, format!("{base}/integrations/%ff"), None),
        (Method::PATCH, format!("{base}/integrations/%ff"), Some(json!({"roles": ["ADMIN"]}))),
        (Method::PATCH, format!("{i}/assets/%ff"), Some(json!({"name": "x"}))),
        (Method::DELETE, format!("{i}/assets/%C0%80"), None),
        (Method::PATCH, format!("{i}/grants/%ff"), Some(json!({"role": "ADMIN"}))),
        (Method::DELETE, format!("{i}/grants/%ff"), None),
        (Method::DELETE, format!("{base}/tokens/%ff"), None),
        (Method::GET, format!("{base}/users/%ff/access"), None),
        (Method::GET, format!("{base}/jobs/%ff"), None),
        (Method::POST, format!("{base}/tasks/%ff/redrive"), None),
    ];
    for (method, path, body) in cases {
        let token = if path.contains("scim-rate-limit") { OPERATOR } else { owner.as_str() };
        let a = app.call(method.clone(), &path, Some(token), body).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{method} {path}: {}", a.text);
        assert!(a.content_type.starts_with("application/json"), "{method} {path}: {} {}", a.content_type, a.text);
        let error = a.body["error"].as_str().unwrap_or_default();
        assert!(error.contains("UTF-8"), "{method} {path}: {}", a.text);
    }
}

/// A field documented as optional may be `null`, which means the same as leaving it out: lists
/// and maps are then empty and an asset's name blank, exactly as without the field.
#[tokio::test]
async fn an_optional_field_sent_as_null_means_the_same_as_leaving_it_out() {
    let app = spawn_app().await;
    let (tenant, _, owner) = app.tenant("Acme").await;
    let base = format!("/api/v1/tenants/{tenant}");

    let mut seat = integration_body("Seat");
    for field in ["roles", "asset_roles", "assets", "default_role", "credential"] {
        seat[field] = Value::Null;
    }
    let a = app.post(&format!("{base}/integrations"), &owner, seat).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    assert_eq!(a.body["roles"], json!(["EMPLOYEE"]), "a seat-only hub, as with roles left out: {}", a.text);
    assert_eq!((&a.body["asset_roles"], &a.body["assets"]), (&json!([]), &json!([])), "{}", a.text);

    let mut hub = integration_body("Hub");
    hub["asset_roles"] = json!(["MANAGE", "ANALYZE"]);
    hub["assets"] = json!([{"asset_id": "act_1", "kind": "ad_account", "name": null}]);
    let a = app.post(&format!("{base}/integrations"), &owner, hub).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    assert_eq!(a.body["assets"], json!([{"asset_id": "act_1", "kind": "ad_account", "name": ""}]), "{}", a.text);
    let integration = a.body["id"].as_str().unwrap().to_string();

    let assets = format!("{base}/integrations/{integration}/assets");
    let a = app.post(&assets, &owner, json!({"asset_id": "act_2", "kind": "ad_account", "name": null})).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    assert_eq!(a.body["name"], "", "{}", a.text);

    let user = app.add_user(tenant, "alice@example.com").await;
    let grants = format!("{base}/integrations/{integration}/grants");
    let a =
        app.post(&grants, &owner, json!({"user_id": user, "team_id": null, "role": "EMPLOYEE", "assets": null})).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    assert_eq!(a.body["assets"], json!({}), "{}", a.text);
}

/// The OpenAPI document says the same: every property a request body may leave out (at any
/// depth, in every request schema) also admits null.
#[tokio::test]
async fn the_openapi_document_lets_every_optional_request_field_be_null() {
    let doc: Value = serde_json::from_str(unseat_console::OPENAPI).unwrap();
    let resolve = |s: &Value| -> Value {
        match s["$ref"].as_str().and_then(|r| r.strip_prefix("#/components/schemas/")) {
            Some(name) => doc["components"]["schemas"][name].clone(),
            None => s.clone(),
        }
    };
    fn admits_null(s: &Value) -> bool {
        match &s["type"] {
            Value::String(t) => t == "null",
            Value::Array(ts) => ts.iter().any(|t| t == "null"),
            _ => ["oneOf", "anyOf"].iter().any(|k| s[*k].as_array().is_some_and(|v| v.iter().any(admits_null))),
        }
    }
    let mut pending: Vec<(String, Value)> = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            if let Some(schema) = op.pointer("/requestBody/content/application~1json/schema") {
                pending.push((format!("{method} {path}"), schema.clone()));
            }
        }
    }
    let mut checked = 0;
    while let Some((at, schema)) = pending.pop() {
        let schema = resolve(&schema);
        if let Some(properties) = schema["properties"].as_object() {
            let required: Vec<&str> =
                schema["required"].as_array().map_or_else(Vec::new, |r| r.iter().filter_map(Value::as_str).collect());
            for (name, property) in properties {
                let property = resolve(property);
                if !required.contains(&name.as_str()) {
                    assert!(admits_null(&property), "{at}: optional {name} does not admit null");
                    checked += 1;
                }
                pending.push((format!("{at} {name}"), property));
            }
        }
        for key in ["items", "oneOf", "anyOf", "allOf", "if", "then", "else"] {
            match &schema[key] {
                Value::Array(all) => pending.extend(all.iter().map(|s| (format!("{at} {key}"), s.clone()))),
                s @ Value::Object(_) => pending.push((format!("{at} {key}"), s.clone())),
                _ => {}
            }
        }
    }
    assert!(checked >= 20, "only {checked} optional fields found");
}

/// An integration whose credential the operator gave as a reference (a secret of the
/// deployment) cannot be pointed at another business or address by a tenant's admin, who
/// could otherwise have that secret act on a business of theirs; naming it and other settings
/// stay theirs, and so does giving a credential of their own.
#[tokio::test]
async fn a_tenant_admin_cannot_send_the_operators_reference_elsewhere() {
    let app = spawn_app().await;
    let (tenant, _, owner) = app.tenant("Acme").await;
    let list = format!("/api/v1/tenants/{tenant}/integrations");
    let mut body = integration_body("Shared secret hub");
    body["credential"] = json!("env:UNSEAT_APP_CREDENTIAL_META");
    let a = app.post(&list, OPERATOR, body).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    let path = format!("{list}/{}", a.body["id"].as_str().expect("id"));
    let before = app.get(&path, &owner).await.body;
    for change in [
        json!({ "settings": { "business_id": "4100000002" } }),
        json!({ "settings": { "business_id": 4100000002u64, "rate_limit_per_second": 2 } }),
    ] {
        let a = app.call(Method::PATCH, &path, Some(&owner), Some(change.clone())).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{change}: {}", a.text);
        assert!(a.text.contains("only the operator"), "{change}: {}", a.text);
    }
    assert_eq!(app.get(&path, &owner).await.body, before, "refused changes changed nothing");
    for change in [
        json!({ "name": "Renamed hub" }),
        json!({ "settings": { "business_id": "4100000001", "rate_limit_per_second": 2 } }),
        json!({ "settings": { "business_id": "4100000002" }, "credential": "a-secret-of-our-own" }),
    ] {
        let a = app.call(Method::PATCH, &path, Some(&owner), Some(change.clone())).await;
        assert_eq!(a.status, StatusCode::OK, "{change}: {}", a.text);
    }
    let mut body = integration_body("Second shared hub");
    body["credential"] = json!("env:UNSEAT_APP_CREDENTIAL_META");
    let a = app.post(&list, OPERATOR, body).await;
    let path = format!("{list}/{}", a.body["id"].as_str().expect("id"));
    let change = json!({ "settings": { "business_id": "4100000003" } });
    let a = app.call(Method::PATCH, &path, Some(OPERATOR), Some(change)).await;
    assert_eq!(a.status, StatusCode::OK, "the operator may: {}", a.text);
}

/// Every list refuses a query parameter it does not take, naming it, rather than answering
/// the whole list to a client that believes it filtered, and one it takes given twice.
#[tokio::test]
async fn every_list_refuses_a_parameter_it_does_not_take() {
    let app = spawn_app().await;
    let (tenant, _, owner) = app.tenant("Acme").await;
    let integration = app.integration(tenant, &owner, "Meta Business").await;
    let base = format!("/api/v1/tenants/{tenant}");
    for list in [
        format!("{base}/integrations"),
        format!("{base}/integrations/{integration}/grants"),
        format!("{base}/integrations/{integration}/assets"),
        format!("{base}/integrations/{integration}/activity"),
        format!("{base}/tokens"),
        format!("{base}/teams"),
        format!("{base}/users"),
        format!("{base}/jobs"),
        format!("{base}/tasks"),
    ] {
        assert_eq!(app.get(&list, &owner).await.status, StatusCode::OK, "{list}");
        let a = app.get(&format!("{list}?bogus=1"), &owner).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{list}: {}", a.text);
        assert!(a.text.contains(r#"unknown query parameter \"bogus\""#), "{list}: {}", a.text);
        // One it takes, given twice: which value was meant cannot be told.
        if ["activity", "teams", "users", "jobs", "tasks"].iter().any(|l| list.ends_with(l)) {
            assert_eq!(app.get(&format!("{list}?limit=1"), &owner).await.status, StatusCode::OK, "{list}");
            let a = app.get(&format!("{list}?limit=1&limit=500"), &owner).await;
            assert_eq!(a.status, StatusCode::BAD_REQUEST, "{list}: {}", a.text);
            assert!(a.text.contains(r#"query parameter \"limit\" is given more than once"#), "{list}: {}", a.text);
        }
    }
}

/// A token may be given an end: it works until then, the list says when, and past it the token
/// is refused like a revoked one, its console session too. An end that is not a time in the
/// future is refused (400), and nothing is created.
#[tokio::test]
async fn a_token_given_an_end_stops_working_then() {
    let app = spawn_app().await;
    let (tenant, _, owner) = app.tenant("Acme").await;
    let path = format!("/api/v1/tenants/{tenant}/admin-tokens");
    let list = format!("/api/v1/tenants/{tenant}/tokens");
    let before = app.get(&list, &owner).await.body["tokens"].as_array().expect("tokens").len();
    for (bad, says) in [
        ("2001-01-01T00:00:00Z", "expires_at is not in the future"),
        ("2027-01-31", "expires_at must be an RFC 3339 time"),
        ("next week", "expires_at must be an RFC 3339 time"),
    ] {
        let a = app.post(&path, &owner, serde_json::json!({ "role": "viewer", "expires_at": bad })).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}: {}", a.text);
        assert!(a.text.contains(says), "{bad}: {}", a.text);
        let a = app
            .post(&format!("/api/v1/tenants/{tenant}/scim-tokens"), &owner, serde_json::json!({ "expires_at": bad }))
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}: {}", a.text);
    }
    assert_eq!(app.get(&list, &owner).await.body["tokens"].as_array().expect("tokens").len(), before, "none created");

    let ends = "2099-01-31T00:00:00+01:00";
    let a = app
        .post(&path, &owner, serde_json::json!({ "role": "viewer", "label": "contractor", "expires_at": ends }))
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    assert_eq!(a.body["expires_at"], "2099-01-30T23:00:00Z");
    let viewer = a.body["token"].as_str().expect("token").to_string();
    let a = app.post(&format!("/api/v1/tenants/{tenant}/scim-tokens"), &owner, serde_json::json!({})).await;
    assert_eq!(a.body["expires_at"], serde_json::Value::Null, "without one a token lasts until revoked");
    let jobs = format!("/api/v1/tenants/{tenant}/jobs");
    assert_eq!(app.get(&jobs, &viewer).await.status, StatusCode::OK);
    let tokens = app.get(&list, &owner).await.body["tokens"].clone();
    let listed = tokens.as_array().and_then(|t| t.iter().find(|t| t["label"] == "contractor")).expect("listed").clone();
    assert_eq!(listed["expires_at"], "2099-01-30T23:00:00Z");
    assert!(tokens
        .as_array()
        .expect("tokens")
        .iter()
        .filter(|t| t["label"] != "contractor")
        .all(|t| t["expires_at"].is_null()));
    let session = app.session(&viewer).await.expect("signed in");

    // Its end comes.
    let id = listed["id"].as_str().expect("id").parse::<uuid::Uuid>().expect("uuid");
    app.exec("update tokens set expires_at = now() - interval '1 second' where id = $1", &[&id]).await;
    let a = app.get(&jobs, &viewer).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.text);
    let page = app
        .http
        .get(format!("{}/console/tenants/{tenant}/log", app.base))
        .header("cookie", format!("unseat_console={session}"))
        .send()
        .await
        .expect("page");
    assert_eq!(page.url().path(), "/console/sign-in", "its console session ended with it");
}
