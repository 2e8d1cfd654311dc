//! `unseat demo`: every role and the app emulator in one process, with a seeded demo tenant,
//! so an operator sees a deactivation reach the app within a minute of cloning.

use std::net::SocketAddr;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::client::{AdminClient, EmulatorClient, ScimClient};
use crate::{Roles, Settings};

/// The demo business in the emulator.
pub const DEMO_BUSINESS: &str = "1001";

/// A seeded demo tenant.
pub struct Seeded {
    pub tenant: Uuid,
    pub scim_token: String,
    pub admin_token: String,
    pub integration: Uuid,
    /// userName → SCIM id.
    pub users: Vec<(String, Uuid)>,
    /// team name → SCIM id.
    pub teams: Vec<(String, Uuid)>,
}

/// Seeds a tenant through the admin and SCIM APIs and matching accounts in the emulator:
/// Admins grant ADMIN, Staff EMPLOYEE, Marketing ADMIN.
pub async fn seed(base: &str, operator_token: &str, emulator_url: &str, business: &str) -> anyhow::Result<Seeded> {
    let admin = AdminClient::new(base, operator_token);
    let tenant = admin.create_tenant("Demo Co").await?;
    let admin = AdminClient::new(base, &tenant.admin_token);
    let scim = ScimClient::new(format!("{base}/scim/v2"), &tenant.scim_token);
    let emulator = EmulatorClient::new(emulator_url);
    // Someone must stay ADMIN of the business: the app refuses to remove its last admin.
    emulator.seed(business, "owner@demo.example", "ADMIN").await?;
    let people = [
        ("alice@demo.example", "ADMIN"),
        ("bob@demo.example", "ADMIN"),
        ("carol@demo.example", "EMPLOYEE"),
        ("dave@demo.example", "ADMIN"),
    ];
    let mut users = Vec::new();
    for (name, role) in people {
        users.push((name.to_string(), scim.create_user(name).await?));
        emulator.seed(business, name, role).await?;
    }
    let id = |n: &str| users.iter().find(|(u, _)| u.starts_with(n)).map(|(_, id)| *id).context("seed user");
    let (alice, bob, carol, dave) = (id("alice")?, id("bob")?, id("carol")?, id("dave")?);
    let teams = vec![
        ("Admins".to_string(), scim.create_group("Admins", &[alice, bob, dave]).await?),
        ("Staff".to_string(), scim.create_group("Staff", &[bob, carol]).await?),
        ("Marketing".to_string(), scim.create_group("Marketing", &[dave]).await?),
    ];
    let integration = admin.create_business_hub(tenant.id, "Meta Business", emulator_url, business).await?;
    for ((_, team), role) in teams.iter().zip(["ADMIN", "EMPLOYEE", "ADMIN"]) {
        admin.grant_team(tenant.id, integration, *team, role).await?;
    }
    Ok(Seeded {
        tenant: tenant.id,
        scim_token: tenant.scim_token,
        admin_token: tenant.admin_token,
        integration,
        users,
        teams,
    })
}

pub async fn run(mut settings: Settings, port_base: u16, shutdown: CancellationToken) -> anyhow::Result<()> {
    let operator_token = settings.admin_token.clone().unwrap_or_else(|| unseat_store::tokens::generate("op"));
    settings.admin_token = Some(operator_token.clone());
    let emulator_port = port_base.checked_add(1).context("--port-base too high")?;
    let running = crate::start(settings, Roles::ALL, shutdown.clone()).await?;
    let (emulator_addr, _) =
        crate::start_emulator(SocketAddr::from(([127, 0, 0, 1], emulator_port)), &running.tasks, shutdown.clone())
            .await?;
    let base = format!("http://{}", running.addr);
    let emulator_url = format!("http://{emulator_addr}");
    let seeded = seed(&base, &operator_token, &emulator_url, DEMO_BUSINESS).await?;
    let alice = seeded.users[0].1;
    let bob = seeded.users[1].1;
    let admins = seeded.teams[0].1;
    println!("SCIM_URL={base}/scim/v2");
    println!("SCIM_TOKEN={}", seeded.scim_token);
    println!("TENANT_ID={}", seeded.tenant);
    println!("CONSOLE_URL={base}");
    println!("ADMIN_TOKEN={}", seeded.admin_token);
    println!("EMULATOR_URL={emulator_url}");
    println!("OPERATOR_TOKEN={operator_token}");
    println!();
    println!("# Deactivate alice (ADMIN through team Admins): she is removed from the business hub.");
    println!(
        "curl -s -X PATCH {base}/scim/v2/Users/{alice} -H 'Authorization: Bearer {}' -H 'Content-Type: application/scim+json' \
         -d '{{\"schemas\":[\"urn:ietf:params:scim:api:messages:2.0:PatchOp\"],\"Operations\":[{{\"op\":\"replace\",\"path\":\"active\",\"value\":false}}]}}'",
        seeded.scim_token
    );
    println!("# Take bob out of Admins: team Staff still grants EMPLOYEE, so his role is lowered.");
    println!(
        "curl -s -X PATCH {base}/scim/v2/Groups/{admins} -H 'Authorization: Bearer {}' -H 'Content-Type: application/scim+json' \
         -d '{{\"schemas\":[\"urn:ietf:params:scim:api:messages:2.0:PatchOp\"],\"Operations\":[{{\"op\":\"remove\",\"path\":\"members[value eq \\\"{bob}\\\"]\"}}]}}'",
        seeded.scim_token
    );
    println!("# Watch the Automation Log, and the app's state:");
    println!("curl -s {base}/api/v1/tenants/{}/jobs -H 'Authorization: Bearer {}'", seeded.tenant, seeded.admin_token);
    println!("curl -s {emulator_url}/_emulator/businesses/{DEMO_BUSINESS}/users");
    println!("# Ctrl-C stops the demo.");
    running.wait().await;
    Ok(())
}
