//! The IdPs' most frequent write, a user's `active` flipped, written by group commit:
//! concurrent (de)activations go to the database together, in one statement that updates
//! every user and writes every outbox row (`unseat-store` `set_active_announced`).

use crate::coalesce::Coalescer;
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use unseat_scim::ScimError;
use unseat_store::directory::{self as dir, ActiveChange, Dir, UserRecord};
use unseat_store::Store;
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

type Write = Box<dyn Fn(Vec<Activation>) -> Pin<Box<dyn Future<Output = Vec<Written>> + Send>> + Send + Sync>;

/// Writers working at once, each on its own share of the users (a user always goes to the
/// same one, so two changes of one user are never written out of order by two writers): the
/// database commits one batch while the next is being built.
const WRITERS: usize = 2;

#[derive(Clone)]
pub(crate) struct Activations(Arc<[Arc<Coalescer<Activation, Written, Write>>]>);

impl Activations {
    pub fn new(store: Store, exchange: String) -> Self {
        let writers = (0..WRITERS)
            .map(|_| {
                let (store, exchange) = (store.clone(), exchange.clone());
                let write: Write = Box::new(move |batch| {
                    let (store, exchange) = (store.clone(), exchange.clone());
                    Box::pin(async move { write(&store, &exchange, &batch).await })
                });
                Coalescer::new(MAX_BATCH, write)
            })
            .collect();
        Self(writers)
    }

    pub async fn submit(&self, a: Activation) -> Written {
        let writer = &self.0[(a.id.as_u128() % self.0.len() as u128) as usize];
        writer.submit(a).await.unwrap_or_else(|| Err(ScimError::internal("internal error")))
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
        Err(e) => {
            let err = crate::ApiError::Store(e);
            let scim = err.to_scim();
            if scim.status >= 500 {
                tracing::error!(error = %err, changes = batch.len(), "writing (de)activations failed");
            }
            batch.iter().map(|_| Err(scim.clone())).collect()
        }
    }
}
