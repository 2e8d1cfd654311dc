//! The messages unseat sends over RabbitMQ. Each is JSON with a `v` field and is described by
//! a JSON Schema in `schemas/messages/`. A message is a hint ("look at these users again"):
//! receivers recompute from current state, so duplicates and reordering are harmless.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The version every message of this build carries; receivers reject others.
pub const MESSAGE_VERSION: u32 = 1;

/// What the IdP (or an admin) did that caused a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trigger {
    pub method: String,
    pub path: String,
    pub user_agent: String,
    pub received_at: DateTime<Utc>,
    /// One line for the Automation Log ("user alice@example.com deactivated").
    pub summary: String,
    /// True when the change can take access away (a member removed, a user deactivated or
    /// deleted, a group deleted, a grant lowered or revoked). The resolver then also logs the
    /// access it kept, and why; for changes that only add, an unchanged user is not news.
    pub may_revoke: bool,
}

/// Ingest → resolver: the directory changed for these users; recompute their access.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryChanged {
    pub v: u32,
    pub message_id: Uuid,
    pub tenant_id: Uuid,
    /// `workspace`, or the id of the integration whose SCIM endpoint received the change.
    pub scope: String,
    pub trigger: Trigger,
    /// Users to look at again. For a deleted group, the members it had.
    pub users: Vec<Uuid>,
}

/// Resolver → connector (routed by app kind): converge the app for one (integration, user)
/// to the desired state stored with `desired_version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectorTask {
    pub v: u32,
    pub message_id: Uuid,
    pub tenant_id: Uuid,
    pub job_id: Uuid,
    pub task_id: Uuid,
    pub integration_id: Uuid,
    pub user_id: Uuid,
    pub app_kind: String,
    pub desired_version: i64,
}
