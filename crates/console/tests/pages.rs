//! The console's pages over real HTTP against a fresh database per test, signed in as a
//! browser is (the session cookie), reading what an admin reads: the status and the page.

mod support;

use reqwest::StatusCode;
use support::*;

/// The session's CSRF token, from the sign-out form every signed-in page carries.
fn csrf(page: &str) -> String {
    let (_, rest) = page.split_once(r#"name="csrf" value=""#).expect("a CSRF field");
    rest.split('"').next().unwrap().to_string()
}

/// A cursor or a time filter outside the years 1 to 9999 (which PostgreSQL cannot compare with,
/// before 4713 BC) is a 400 page saying what is wrong, like any other bad value (a filter given
/// twice, say), on the log, a job's page and an Activity page; the first and last minutes of
/// those years are fine.
#[tokio::test]
async fn a_time_or_cursor_outside_the_years_the_log_holds_is_a_400_page() {
    let app = spawn_app().await;
    let OneTask { tenant, owner, integration, job, .. } = tenant_with_a_task(&app, "failed").await;
    let pages = [
        format!("/console/tenants/{tenant}/log"),
        format!("/console/tenants/{tenant}/jobs/{job}"),
        format!("/console/tenants/{tenant}/integrations/{integration}/activity"),
    ];
    for page in &pages {
        for (query, says) in [
            ("from=-5000-01-01T00:00", "from must be a UTC time like 2026-11-25T14:30, in the years 1 to 9999"),
            ("from=-4713-01-01T00:00", "from must be a UTC time like 2026-11-25T14:30, in the years 1 to 9999"),
            ("to=-5000-01-01T00:00", "to must be a UTC time like 2026-11-25T14:30, in the years 1 to 9999"),
            ("to=0000-12-31T23:59", "to must be a UTC time like 2026-11-25T14:30, in the years 1 to 9999"),
            (
                "before=-300000000000000000.00000000000000000000000000000000",
                "before is not a cursor this API returned (use the `next` of a previous page)",
            ),
        ] {
            let a = app.page(&format!("{page}?{query}"), &owner, None).await;
            assert_eq!(a.status, StatusCode::BAD_REQUEST, "{page}?{query}: {}", a.text);
            assert!(a.content_type.starts_with("text/html"), "{page}?{query}: {}", a.content_type);
            assert!(a.text.contains("That did not work"), "{page}?{query}: {}", a.text);
            assert!(a.text.contains(says), "{page}?{query} does not say {says:?}: {}", a.text);
        }
        // A filter given twice: which one was meant cannot be told.
        let a = app.page(&format!("{page}?status=failed&status=queued"), &owner, None).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{page}: {}", a.text);
        assert!(a.text.contains("query parameter &quot;status&quot; is given more than once"), "{page}: {}", a.text);
        let a = app.page(&format!("{page}?from=0001-01-01T00:00&to=9999-12-31T23:59"), &owner, None).await;
        assert_eq!(a.status, StatusCode::OK, "{page}: {}", a.text);
        assert!(a.text.contains("alice@example.com"), "{page}: the task is in the range: {}", a.text);
    }
}

/// A page path segment that is not UTF-8 text is the page that explains a mistake (400), not
/// axum's plain text.
#[tokio::test]
async fn a_page_path_that_is_not_utf8_text_is_a_400_page() {
    let app = spawn_app().await;
    let (tenant, _, owner) = app.tenant("Acme").await;
    for path in [
        "/console/tenants/%ff/log".to_string(),
        format!("/console/tenants/{tenant}/jobs/%C0%80"),
        format!("/console/tenants/{tenant}/integrations/%ff/activity"),
        format!("/console/tenants/{tenant}/tasks/%ff"),
        "/console/tenants/%ff/live".to_string(),
    ] {
        let a = app.page(&path, &owner, None).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{path}: {}", a.text);
        assert!(a.content_type.starts_with("text/html"), "{path}: {} {}", a.content_type, a.text);
        assert!(a.text.contains("That did not work") && a.text.contains("UTF-8"), "{path}: {}", a.text);
    }
}

/// A viewer reads a failed task but is offered no Re-drive button (and told why); should one
/// post the form anyway, with the session's own CSRF token, the 403 says their role may not
/// do this, not that the tenant is another's, and the task stays failed. An admin of another
/// tenant is still told it is not their tenant.
#[tokio::test]
async fn a_viewer_is_offered_no_redrive_and_a_refused_one_names_the_role() {
    let app = spawn_app().await;
    let OneTask { tenant, owner, task, .. } = tenant_with_a_task(&app, "failed").await;
    let viewer = app.admin_token(tenant, &owner, "viewer").await;
    let (_, _, stranger) = app.tenant("Other").await;
    let page = format!("/console/tenants/{tenant}/tasks/{task}");
    let form = format!(r#"action="{page}/redrive""#);

    let a = app.page(&page, &owner, None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert!(a.text.contains(&form), "the owner may re-drive: {}", a.text);

    let a = app.page(&page, &viewer, None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert!(!a.text.contains(&form), "a viewer is offered the Re-drive button: {}", a.text);
    assert!(a.text.contains("the viewer role may not do this"), "{}", a.text);

    let a = app.page(&format!("{page}/redrive"), &viewer, Some(format!("csrf={}", csrf(&a.text)))).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.text);
    assert!(a.text.contains("Not allowed for your role"), "{}", a.text);
    assert!(a.text.contains("the viewer role may not do this"), "{}", a.text);
    assert!(!a.text.contains("another tenant") && !a.text.contains("Not your tenant"), "{}", a.text);
    let status = format!("select count(*) from tasks where id = '{task}' and status = 'failed'");
    assert_eq!(app.count(&status).await, 1, "the refused re-drive changed the task");

    let a = app.page(&page, &stranger, None).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.text);
    assert!(a.text.contains("Not your tenant") && a.text.contains("another tenant"), "{}", a.text);
}

/// A re-drive's outcome reaches the task page as a code, so a link to the page cannot make it
/// show words of its author's choosing; a refused re-drive says why from the task itself.
#[tokio::test]
async fn a_redrive_notice_says_only_what_the_service_says() {
    let app = spawn_app().await;
    let OneTask { tenant, owner, task, .. } = tenant_with_a_task(&app, "succeeded").await;
    let page = format!("/console/tenants/{tenant}/tasks/{task}");

    let spoof = "Your session expired. Sign in again at https://evil.example";
    let a = app.page(&format!("{page}?redrive={}", spoof.replace(' ', "+")), &owner, None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert!(!a.text.contains("evil.example"), "{}", a.text);
    assert!(a.text.contains("Re-drive refused: the re-drive could not be requested"), "{}", a.text);

    // A re-drive of a task that did not fail, posted as a stale page would.
    let a = app.page(&page, &owner, None).await;
    let csrf = csrf(&a.text);
    let a = app.page(&format!("{page}/redrive"), &owner, Some(format!("csrf={csrf}"))).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.text);
    let location = a.location.expect("a redirect");
    assert_eq!(location, format!("{page}?redrive=conflict"));
    let a = app.page(&location, &owner, None).await;
    assert!(a.text.contains("only failed tasks can be re-driven; this task is succeeded"), "{}", a.text);
}

/// A deleted integration's tasks stay in the log: their pages say the integration was deleted,
/// link to no Activity page that is gone, and offer no re-drive that would be refused.
#[tokio::test]
async fn a_deleted_integrations_task_page_says_so_and_offers_no_redrive() {
    let app = spawn_app().await;
    let OneTask { tenant, owner, integration, job, task } = tenant_with_a_task(&app, "failed").await;
    let a = app
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/tenants/{tenant}/integrations/{integration}"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);

    // The deletion superseded the failed task; one that failed after it (its last attempt was
    // in flight and was refused) stays failed, with nothing to re-drive.
    let page = format!("/console/tenants/{tenant}/tasks/{task}");
    // It says who deleted the integration.
    assert!(app
        .page(&page, &owner, None)
        .await
        .text
        .contains("superseded: integration Hub was deleted by owner token"));
    app.exec("update tasks set status = 'failed', dead_lettered = true where id = $1", &[&task]).await;
    let a = app.page(&page, &owner, None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert!(a.text.contains("its integration was deleted") && a.text.contains("a deleted integration"), "{}", a.text);
    assert!(
        !a.text.contains(&format!("integrations/{integration}/activity")),
        "a link to a page that is gone: {}",
        a.text
    );
    assert!(!a.text.contains("Re-drive this task"), "{}", a.text);
    assert!(a.text.contains("nothing to re-drive"), "{}", a.text);

    let a = app.page(&format!("/console/tenants/{tenant}/jobs/{job}"), &owner, None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert!(a.text.contains(&format!("a deleted integration ({integration})")), "{}", a.text);
    let a = app.page(&format!("/console/tenants/{tenant}/log?integration={integration}"), &owner, None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert!(a.text.contains(&format!(r#"<option value="{integration}" selected>a deleted integration"#)), "{}", a.text);
}

/// A paused integration says so on its Activity page, and in the navigation on every page.
#[tokio::test]
async fn a_paused_integration_says_so() {
    let app = spawn_app().await;
    let OneTask { tenant, owner, integration, .. } = tenant_with_a_task(&app, "queued").await;
    let activity = format!("/console/tenants/{tenant}/integrations/{integration}/activity");
    assert!(!app.page(&activity, &owner, None).await.text.contains("s-queued\">paused"));
    let path = format!("/api/v1/tenants/{tenant}/integrations/{integration}");
    let a = app.call(reqwest::Method::PATCH, &path, Some(&owner), Some(serde_json::json!({"paused": true}))).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let a = app.page(&activity, &owner, None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert!(a.text.contains("s-queued\">paused</span> since"), "{}", a.text);
    assert!(a.text.contains("Hub ⏸"), "{}", a.text);
}

/// Revoking an admin token ends the live stream of a page it signed in: the stream rechecks
/// its session, which went with the token, so it no longer tells the revoked holder when the
/// log changes for the rest of its life (25 s, then the reconnect is sent to sign in).
#[tokio::test]
async fn a_revoked_tokens_live_stream_ends() {
    let app = spawn_app().await;
    let (tenant, _, owner) = app.tenant("Acme").await;
    let viewer = app.admin_token(tenant, &owner, "viewer").await;
    let session = app.session(&viewer).await.expect("signed in");
    let live = format!("{}/console/tenants/{tenant}/live", app.base);
    let mut stream =
        app.http.get(&live).header("cookie", format!("unseat_console={session}")).send().await.expect("stream");
    assert_eq!(stream.status(), StatusCode::OK);
    let first = stream.chunk().await.expect("read").expect("a first event");
    assert!(String::from_utf8_lossy(&first).contains("live"), "{first:?}");

    let id = app.token_id(tenant, &owner, "role", "viewer").await;
    let a =
        app.call(reqwest::Method::DELETE, &format!("/api/v1/tenants/{tenant}/tokens/{id}"), Some(&owner), None).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.text);
    // It ends well before its lifetime (the bound only keeps a broken check from hanging here).
    let ended = tokio::time::timeout(std::time::Duration::from_secs(15), async {
        while stream.chunk().await.expect("read").is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the stream went on after its token was revoked");
    let again = app.http.get(&live).header("cookie", format!("unseat_console={session}")).send().await.expect("again");
    assert_eq!(again.url().path(), "/console/sign-in", "a reconnect is sent to sign in");
}

/// The console's cookie holds a session, not the admin token: it is no bearer token for the
/// API, and it opens no page once its session ended (signed out, or past its 8 hours), while
/// the token itself goes on working.
#[tokio::test]
async fn the_console_cookie_is_a_session_that_ends_not_the_token() {
    let app = spawn_app().await;
    let (tenant, _, owner) = app.tenant("Acme").await;
    let viewer = app.admin_token(tenant, &owner, "viewer").await;
    let session = app.session(&owner).await.expect("signed in");
    assert!(session.starts_with("ses_") && !session.contains(&owner), "{session}");
    let log = format!("{}/console/tenants/{tenant}/log", app.base);
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let open = |cookie: String| {
        let (http, log) = (http.clone(), log.clone());
        async move { http.get(&log).header("cookie", format!("unseat_console={cookie}")).send().await.expect("page") }
    };
    let page = open(session.clone()).await;
    assert_eq!(page.status(), StatusCode::OK);
    let token = csrf(&page.text().await.expect("page"));
    let a = app.get(&format!("/api/v1/tenants/{tenant}/jobs"), &session).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "the cookie is no API token: {}", a.text);

    // Signed out: the session ends in the store, so a copy of the cookie is sent to sign in.
    let out = http
        .post(format!("{}/console/sign-out", app.base))
        .header("cookie", format!("unseat_console={session}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={token}"))
        .send()
        .await
        .expect("sign out");
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let copy = open(session).await;
    assert_eq!(copy.status(), StatusCode::SEE_OTHER);
    assert!(copy.headers()["location"].to_str().unwrap().starts_with("/console/sign-in"));

    // Past its expiry, a session opens nothing either.
    let second = app.session(&viewer).await.expect("signed in");
    assert_eq!(open(second.clone()).await.status(), StatusCode::OK);
    app.exec("update console_sessions set expires_at = now() - interval '1 second'", &[]).await;
    assert_eq!(open(second).await.status(), StatusCode::SEE_OTHER);

    // The tokens themselves still work.
    assert_eq!(app.get(&format!("/api/v1/tenants/{tenant}/jobs"), &owner).await.status, StatusCode::OK);
    assert_eq!(app.get(&format!("/api/v1/tenants/{tenant}/jobs"), &viewer).await.status, StatusCode::OK);
}
