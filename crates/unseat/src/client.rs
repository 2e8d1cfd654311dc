//! A small client of unseat's own HTTP APIs (SCIM, admin) and of the app emulator's control
//! endpoints. The demo, the benchmark and the end-to-end tests seed and drive unseat through
//! it, exactly as an IdP and an admin would.

use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

async fn expect(resp: reqwest::Response, what: &str) -> anyhow::Result<Value> {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("{what}: HTTP {status}: {text}");
    }
    if text.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&text).with_context(|| format!("{what}: response is not JSON: {text}"))
}

fn id_of(v: &Value, what: &str) -> anyhow::Result<Uuid> {
    v["id"].as_str().and_then(|s| s.parse().ok()).with_context(|| format!("{what}: no id in {v}"))
}

/// The admin API (`/api/v1`).
#[derive(Clone)]
pub struct AdminClient {
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
}

/// What creating a tenant returns.
#[derive(Debug, Clone)]
pub struct NewTenant {
    pub id: Uuid,
    pub scim_token: String,
    pub admin_token: String,
}

impl AdminClient {
    pub fn new(base: impl Into<String>, token: impl Into<String>) -> Self {
        Self { base: base.into(), token: token.into(), http: reqwest::Client::new() }
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let resp = self.http.get(format!("{}{path}", self.base)).bearer_auth(&self.token).send().await?;
        expect(resp, path).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let resp = self.http.post(format!("{}{path}", self.base)).bearer_auth(&self.token).json(body).send().await?;
        expect(resp, path).await
    }

    pub async fn create_tenant(&self, name: &str) -> anyhow::Result<NewTenant> {
        let v = self.post("/api/v1/tenants", &json!({ "name": name })).await?;
        Ok(NewTenant {
            id: id_of(&v, "tenant")?,
            scim_token: v["scim_token"].as_str().context("no scim_token")?.to_string(),
            admin_token: v["admin_token"].as_str().context("no admin_token")?.to_string(),
        })
    }

    /// A business hub integration pointing at `base_url` (the emulator in demos and tests).
    pub async fn create_business_hub(
        &self,
        tenant: Uuid,
        name: &str,
        base_url: &str,
        business_id: &str,
    ) -> anyhow::Result<Uuid> {
        let v = self
            .post(
                &format!("/api/v1/tenants/{tenant}/integrations"),
                &json!({
                    "name": name,
                    "app_kind": "business_hub",
                    "base_url": base_url,
                    "roles": ["ADMIN", "EMPLOYEE"],
                    "settings": { "business_id": business_id },
                    "credential": "emulator-token",
                }),
            )
            .await?;
        id_of(&v, "integration")
    }

    pub async fn grant_team(&self, tenant: Uuid, integration: Uuid, team: Uuid, role: &str) -> anyhow::Result<Uuid> {
        let v = self
            .post(
                &format!("/api/v1/tenants/{tenant}/integrations/{integration}/grants"),
                &json!({ "team_id": team, "role": role }),
            )
            .await?;
        id_of(&v, "grant")
    }

    pub async fn grant_user(&self, tenant: Uuid, integration: Uuid, user: Uuid, role: &str) -> anyhow::Result<Uuid> {
        let v = self
            .post(
                &format!("/api/v1/tenants/{tenant}/integrations/{integration}/grants"),
                &json!({ "user_id": user, "role": role }),
            )
            .await?;
        id_of(&v, "grant")
    }
}

/// A SCIM client behaving like a plain IdP.
#[derive(Clone)]
pub struct ScimClient {
    /// The SCIM base URL, ending in `/scim/v2`.
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
}

impl ScimClient {
    pub fn new(base: impl Into<String>, token: impl Into<String>) -> Self {
        Self { base: base.into(), token: token.into(), http: reqwest::Client::new() }
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<reqwest::Response> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("User-Agent", "unseat-client");
        if let Some(b) = body {
            req = req.header("Content-Type", "application/scim+json").body(b.to_string());
        }
        Ok(req.send().await?)
    }

    pub async fn create_user(&self, user_name: &str) -> anyhow::Result<Uuid> {
        let body = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": user_name,
            "active": true,
            "emails": [{ "value": user_name, "type": "work", "primary": true }],
        });
        let v = expect(self.send(reqwest::Method::POST, "/Users", Some(&body)).await?, "create user").await?;
        id_of(&v, "user")
    }

    pub async fn create_group(&self, name: &str, members: &[Uuid]) -> anyhow::Result<Uuid> {
        let members: Vec<Value> = members.iter().map(|m| json!({ "value": m })).collect();
        let body = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": name,
            "members": members,
        });
        let v = expect(self.send(reqwest::Method::POST, "/Groups", Some(&body)).await?, "create group").await?;
        id_of(&v, "group")
    }

    pub async fn patch(&self, path: &str, operations: Value) -> anyhow::Result<reqwest::Response> {
        let body = json!({ "schemas": [PATCH_OP], "Operations": operations });
        self.send(reqwest::Method::PATCH, path, Some(&body)).await
    }

    pub async fn deactivate(&self, user: Uuid) -> anyhow::Result<()> {
        let resp = self
            .patch(&format!("/Users/{user}"), json!([{ "op": "replace", "path": "active", "value": false }]))
            .await?;
        expect(resp, "deactivate").await.map(|_| ())
    }

    pub async fn delete_user(&self, user: Uuid) -> anyhow::Result<()> {
        expect(self.send(reqwest::Method::DELETE, &format!("/Users/{user}"), None).await?, "delete user")
            .await
            .map(|_| ())
    }

    pub async fn remove_member(&self, group: Uuid, user: Uuid) -> anyhow::Result<()> {
        let resp = self
            .patch(
                &format!("/Groups/{group}"),
                json!([{ "op": "remove", "path": format!("members[value eq \"{user}\"]") }]),
            )
            .await?;
        expect(resp, "remove member").await.map(|_| ())
    }

    pub async fn add_member(&self, group: Uuid, user: Uuid) -> anyhow::Result<()> {
        let resp = self
            .patch(
                &format!("/Groups/{group}"),
                json!([{ "op": "add", "path": "members", "value": [{ "value": user }] }]),
            )
            .await?;
        expect(resp, "add member").await.map(|_| ())
    }

    pub async fn delete_group(&self, group: Uuid) -> anyhow::Result<()> {
        expect(self.send(reqwest::Method::DELETE, &format!("/Groups/{group}"), None).await?, "delete group")
            .await
            .map(|_| ())
    }
}

/// The emulator's control plane (`/_emulator/`).
#[derive(Clone)]
pub struct EmulatorClient {
    pub base: String,
    pub http: reqwest::Client,
}

impl EmulatorClient {
    pub fn new(base: impl Into<String>) -> Self {
        Self { base: base.into(), http: reqwest::Client::new() }
    }

    pub async fn seed(&self, business: &str, email: &str, role: &str) -> anyhow::Result<Value> {
        let resp = self
            .http
            .post(format!("{}/_emulator/businesses/{business}/users", self.base))
            .json(&json!({ "email": email, "role": role }))
            .send()
            .await?;
        expect(resp, "seed emulator").await
    }

    /// The business's users as `(email, role)`, sorted by email.
    pub async fn users(&self, business: &str) -> anyhow::Result<Vec<(String, String)>> {
        let resp = self.http.get(format!("{}/_emulator/businesses/{business}/users", self.base)).send().await?;
        let v = expect(resp, "emulator users").await?;
        let mut out: Vec<(String, String)> = v
            .as_array()
            .context("emulator users: not a list")?
            .iter()
            .map(|u| {
                (
                    u["email"].as_str().unwrap_or_default().to_string(),
                    u["role"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Adds an asset (`ad_account` or `page`) to the business; returns its id in the app.
    pub async fn seed_asset(&self, business: &str, kind: &str, name: &str) -> anyhow::Result<String> {
        let resp = self
            .http
            .post(format!("{}/_emulator/businesses/{business}/assets", self.base))
            .json(&json!({ "kind": kind, "name": name }))
            .send()
            .await?;
        let v = expect(resp, "seed emulator asset").await?;
        v["id"].as_str().map(str::to_string).context("seed emulator asset: no id")
    }

    /// The business's assets: asset id → (email of the business user → the Graph tasks they
    /// hold on it).
    pub async fn asset_tasks(
        &self,
        business: &str,
    ) -> anyhow::Result<BTreeMap<String, BTreeMap<String, BTreeSet<String>>>> {
        let resp = self.http.get(format!("{}/_emulator/businesses/{business}/users", self.base)).send().await?;
        let users = expect(resp, "emulator users").await?;
        let email_of: BTreeMap<&str, &str> = users
            .as_array()
            .context("emulator users: not a list")?
            .iter()
            .filter_map(|u| Some((u["id"].as_str()?, u["email"].as_str()?)))
            .collect();
        let resp = self.http.get(format!("{}/_emulator/businesses/{business}/assets", self.base)).send().await?;
        let assets = expect(resp, "emulator assets").await?;
        let mut out = BTreeMap::new();
        for asset in assets.as_array().context("emulator assets: not a list")? {
            let id = asset["id"].as_str().context("emulator asset without id")?;
            let mut holders = BTreeMap::new();
            for (uid, tasks) in asset["assigned"].as_object().into_iter().flatten() {
                let email = email_of.get(uid.as_str()).copied().unwrap_or(uid.as_str()).to_string();
                let tasks = tasks.as_array().into_iter().flatten().filter_map(|t| t.as_str().map(str::to_string));
                holders.insert(email, tasks.collect());
            }
            out.insert(id.to_string(), holders);
        }
        Ok(out)
    }

    pub async fn fault(&self, rule: Value) -> anyhow::Result<()> {
        let resp = self.http.post(format!("{}/_emulator/faults", self.base)).json(&rule).send().await?;
        expect(resp, "emulator fault").await.map(|_| ())
    }

    pub async fn clear_faults(&self) -> anyhow::Result<()> {
        let resp = self.http.delete(format!("{}/_emulator/faults", self.base)).send().await?;
        expect(resp, "clear faults").await.map(|_| ())
    }

    /// Every app request the emulator saw, oldest first.
    pub async fn requests(&self) -> anyhow::Result<Vec<Value>> {
        let resp = self.http.get(format!("{}/_emulator/requests", self.base)).send().await?;
        let v = expect(resp, "emulator requests").await?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }
}
