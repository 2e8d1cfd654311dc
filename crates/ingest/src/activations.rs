//! The IdPs' most frequent write, a user's `active` flipped, written by group commit:
//! concurrent (de)activations go to the database together, in one statement that updates
//! every user and writes every outbox row (`unseat-store` `set_active_announced`).

use crate::coalesce::{failed_batch, Writers};
use serde_json::Value;
use unseat_scim::ScimError;
use unseat_store::directory::{self as dir, ActiveChange, Dir, UserRecord};
use unseat_store::Store;
use unseat_telemetry::{KindLabels, Metrics};
use uuid::Uuid;

/// Most (de)activations one statement writes.
const MAX_BATCH: usize = 256;

/// One (de)activation with the message announcing it.
pub(crate) struct Activation {
    pub dir: Dir,
    pub id: Uuid,
    pub active: bool,
    pub message_id: Uuid,
    pub payload: Value,
    pub verb: &'static str,
}

/// The stored user, `None` when this statement wrote nothing for it (no such user, already
/// that value, or the same user earlier in the batch), or why the batch failed.
pub(crate) type Written = Result<Option<UserRecord>, ScimError>;

/// Most writes in flight at once; a second starts only while [`SPILL`] changes wait (see
/// `coalesce`). Two writes never hold changes of one user, so those are written in order.
pub(crate) const WRITES: usize = 2;
/// Waiting changes that start a second write beside the one in flight.
const SPILL: usize = 16;

#[derive(Clone)]
pub(crate) struct Activations(Writers<Activation, Written>);

impl Activations {
    pub fn new(store: Store, exchange: String, metrics: &Metrics) -> Self {
        let sizes = metrics.scim_group_commit_changes.get_or_create(&KindLabels { kind: "activations".into() }).clone();
        Self(Writers::new(WRITES, SPILL, MAX_BATCH, sizes, move |batch: Vec<Activation>| {
            let (store, exchange) = (store.clone(), exchange.clone());
            async move { write(&store, &exchange, &batch).await }
        }))
    }

    pub async fn submit(&self, a: Activation) -> Written {
        self.0.submit(a.id, a).await
    }
}

async fn write(store: &Store, exchange: &str, batch: &[Activation]) -> Vec<Written> {
    let changes: Vec<ActiveChange<'_>> = batch
        .iter()
        .map(|a| ActiveChange {
            dir: a.dir,
            id: a.id,
            active: a.active,
            message_id: a.message_id,
            payload: &a.payload,
            verb: a.verb,
        })
        .collect();
    let written = async {
        let client = store.client().await?;
        dir::set_active_announced(&client, exchange, unseat_bus::DIRECTORY_ROUTING_KEY, &changes).await
    };
    match written.await {
        Ok(users) => users.into_iter().map(Ok).collect(),
        Err(e) => failed_batch(e.into(), batch.len(), "(de)activations"),
    }
}
