//! The messages unseat sends over RabbitMQ. Each is JSON with a `v` field and is described by
//! a JSON Schema in `schemas/messages/`. A message is a hint ("look at these users again"):
//! receivers recompute from current state, so duplicates and reordering are harmless.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The version every message of this build carries; receivers reject others.
pub const MESSAGE_VERSION: u32 = 1;

/// A new message id: time-ordered (UUIDv7), so the rows keyed by it (the outbox, the job a
/// directory message becomes, its tasks) are added at the end of their indexes rather than at
/// random places in them.
pub fn new_message_id() -> Uuid {
    Uuid::now_v7()
}

/// The id of the task `message` makes for (integration, user): the same on every delivery of
/// the message, so a redelivery names the same tasks. It starts with the message id's first
/// 48 bits (a time-ordered id's millisecond timestamp), so one job's tasks are written next to
/// each other in the task indexes; the rest is a name-based hash (UUIDv5) of the pair.
pub fn task_id(message_id: Uuid, integration_id: Uuid, user_id: Uuid) -> Uuid {
    let hashed = Uuid::new_v5(&message_id, format!("{integration_id}/{user_id}").as_bytes());
    let mut bytes = *hashed.as_bytes();
    bytes[..6].copy_from_slice(&message_id.as_bytes()[..6]);
    Uuid::new_v8(bytes)
}

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

/// The AMQP `type` of a message carrying several directory changes ([`DirectoryChanges`]). A
/// message without a `type` is one [`DirectoryChanged`].
pub const DIRECTORY_CHANGES_TYPE: &str = "directory-changes.v1";

/// Relay → resolver: directory changes that were waiting in the outbox together, in one AMQP
/// message (`schemas/messages/directory-changes.v1.json`). Each change keeps its own message id
/// (its job, its redelivery check) and is handled as if it had come alone; packing them only
/// spares the broker one persistent message per change. Changes stay raw JSON text here (read
/// once, by whoever handles each), so one that cannot be read does not hide the others.
#[derive(Debug, Deserialize)]
pub struct DirectoryChanges {
    pub v: u32,
    pub changes: Vec<Box<serde_json::value::RawValue>>,
}

/// The body of a [`DirectoryChanges`] message around `changes`, each the JSON text of one
/// [`DirectoryChanged`] as the outbox holds it (not parsed again here).
pub fn pack_directory_changes<'a>(changes: impl IntoIterator<Item = &'a str>) -> String {
    let mut body = format!("{{\"v\":{MESSAGE_VERSION},\"changes\":[");
    for (i, change) in changes.into_iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(change);
    }
    body.push_str("]}");
    body
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_changes_read_back_as_the_changes_they_were() {
        let change = |user: Uuid| DirectoryChanged {
            v: MESSAGE_VERSION,
            message_id: new_message_id(),
            tenant_id: Uuid::new_v4(),
            scope: "workspace".into(),
            trigger: Trigger {
                method: "PATCH".into(),
                path: "/scim/v2/Users/x".into(),
                user_agent: "Okta SCIM Client 1.0.0".into(),
                received_at: Utc::now(),
                summary: "user \"a\" deactivated".into(),
                may_revoke: true,
            },
            users: vec![user],
        };
        let changes = [change(Uuid::new_v4()), change(Uuid::new_v4())];
        let texts: Vec<String> = changes.iter().map(|c| serde_json::to_string(c).unwrap()).collect();
        let packed: DirectoryChanges =
            serde_json::from_str(&pack_directory_changes(texts.iter().map(String::as_str))).unwrap();
        assert_eq!(packed.v, MESSAGE_VERSION);
        let back: Vec<DirectoryChanged> =
            packed.changes.iter().map(|c| serde_json::from_str(c.get()).unwrap()).collect();
        assert_eq!(back, changes);
        let empty: DirectoryChanges = serde_json::from_str(&pack_directory_changes([])).unwrap();
        assert!(empty.changes.is_empty());
    }

    #[test]
    fn a_task_id_is_fixed_by_its_message_and_pair_and_sorts_with_its_message() {
        let (m, i, u) = (new_message_id(), Uuid::new_v4(), Uuid::new_v4());
        let id = task_id(m, i, u);
        assert_eq!(id, task_id(m, i, u), "a redelivery names the same task");
        assert_ne!(id, task_id(m, i, Uuid::new_v4()));
        assert_ne!(id, task_id(m, Uuid::new_v4(), u));
        assert_ne!(id, task_id(new_message_id(), i, u));
        assert_eq!(id.as_bytes()[..6], m.as_bytes()[..6], "the message's timestamp leads");
        assert_eq!(id.get_version_num(), 8);
        let later = new_message_id();
        assert!(m.as_bytes()[..6] <= later.as_bytes()[..6], "message ids are time-ordered");
    }
}
