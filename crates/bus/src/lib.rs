//! unseat's RabbitMQ plumbing: topology (quorum queues with a delivery limit and dead-letter
//! queues), a publisher that waits for broker confirms, and a consumer loop with manual acks,
//! bounded prefetch, reconnects and graceful shutdown. The message types live in [`messages`].
//!
//! Producers never publish directly from a request: they write the outbox (`unseat-store`),
//! and `unseat-relay` publishes it through [`Publisher`].

pub mod messages;

use futures_util::StreamExt;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use lapin::message::Delivery;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the broker did not confirm the publish (nack)")]
    Nacked,
    #[error("the broker could not route the message to any queue ({0})")]
    Unroutable(String),
}

/// Names of every exchange and queue, under a prefix so that tests (and several deployments
/// on one broker) stay apart.
#[derive(Debug, Clone)]
pub struct Topology {
    pub prefix: String,
    /// App kinds that get a connector queue.
    pub app_kinds: Vec<String>,
    /// Deliveries of one message before the broker dead-letters it (quorum `x-delivery-limit`).
    pub delivery_limit: i64,
}

/// The routing key of directory changes on the directory exchange.
pub const DIRECTORY_ROUTING_KEY: &str = "directory";

/// Ceilings (seconds) of the delay queues each connector queue gets. A parked message waits
/// in the smallest tier that holds its wait, with its own per-message TTL; when it expires the
/// broker dead-letters it back into the work queue. Tiers keep a long wait from holding up a
/// short one behind it (a queue expires messages from its head only).
pub const DELAY_TIERS_SECS: [u64; 5] = [4, 20, 100, 500, 3600];

impl Topology {
    pub fn new(prefix: impl Into<String>, app_kinds: Vec<String>) -> Self {
        Self { prefix: prefix.into(), app_kinds, delivery_limit: 5 }
    }
    pub fn directory_exchange(&self) -> String {
        format!("{}.directory", self.prefix)
    }
    pub fn connector_exchange(&self) -> String {
        format!("{}.connector", self.prefix)
    }
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.prefix)
    }
    pub fn resolver_queue(&self) -> String {
        format!("{}.resolver", self.prefix)
    }
    pub fn connector_queue(&self, app_kind: &str) -> String {
        format!("{}.connector.{app_kind}", self.prefix)
    }
    pub fn dead_letter_queue(queue: &str) -> String {
        format!("{queue}.dlq")
    }

    /// The longest a message can be parked in one go.
    pub fn max_delay() -> Duration {
        Duration::from_secs(DELAY_TIERS_SECS[DELAY_TIERS_SECS.len() - 1])
    }

    /// The delay queue of `app_kind`'s connector queue that holds a wait of `wait` (waits
    /// longer than [`Topology::max_delay`] go to the last tier and are cut to it).
    pub fn delay_queue(&self, app_kind: &str, wait: Duration) -> String {
        format!("{}.delay.{}s", self.connector_queue(app_kind), Self::delay_tier(wait).as_secs())
    }

    /// The ceiling of the tier a wait of `wait` is parked in: the longest it can stay there
    /// (a queue expires from its head, and the tier's own TTL bounds every message in it).
    pub fn delay_tier(wait: Duration) -> Duration {
        let secs = wait.as_secs_f64().ceil() as u64;
        let tier = DELAY_TIERS_SECS
            .iter()
            .copied()
            .find(|t| *t >= secs)
            .unwrap_or(DELAY_TIERS_SECS[DELAY_TIERS_SECS.len() - 1]);
        Duration::from_secs(tier)
    }

    /// Declares every exchange, queue and binding. Idempotent: every role calls it at start.
    pub async fn declare(&self, ch: &Channel) -> Result<(), BusError> {
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        for ex in [self.directory_exchange(), self.connector_exchange(), self.dead_letter_exchange()] {
            ch.exchange_declare(ex.into(), ExchangeKind::Direct, durable, FieldTable::default()).await?;
        }
        let mut work = vec![(self.resolver_queue(), self.directory_exchange(), DIRECTORY_ROUTING_KEY.to_string())];
        for kind in &self.app_kinds {
            work.push((self.connector_queue(kind), self.connector_exchange(), kind.clone()));
        }
        for (queue, exchange, key) in work {
            let dlq = Self::dead_letter_queue(&queue);
            ch.queue_declare(dlq.as_str().into(), durable_queue(), quorum_args(None, None)).await?;
            ch.queue_bind(
                dlq.as_str().into(),
                self.dead_letter_exchange().into(),
                dlq.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
            let args = quorum_args(Some(self.delivery_limit), Some((&self.dead_letter_exchange(), &dlq)));
            ch.queue_declare(queue.as_str().into(), durable_queue(), args).await?;
            ch.queue_bind(
                queue.as_str().into(),
                exchange.into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }
        // Delay queues: durable classic queues (cheap, and only ever read by the broker's own
        // expiry) that dead-letter expired messages back to the connector exchange under the
        // app kind, i.e. into the work queue. Published to through the default exchange.
        for kind in &self.app_kinds {
            for tier in DELAY_TIERS_SECS {
                let queue = self.delay_queue(kind, Duration::from_secs(tier));
                let mut args = FieldTable::default();
                args.insert("x-message-ttl".into(), AMQPValue::LongLongInt((tier * 1000) as i64));
                args.insert(
                    "x-dead-letter-exchange".into(),
                    AMQPValue::LongString(LongString::from(self.connector_exchange())),
                );
                args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(LongString::from(kind.as_str())));
                ch.queue_declare(queue.as_str().into(), durable_queue(), args).await?;
            }
        }
        Ok(())
    }

    /// Every queue [`Topology::declare`] creates.
    pub fn queues(&self) -> Vec<String> {
        let mut work = vec![self.resolver_queue()];
        work.extend(self.app_kinds.iter().map(|k| self.connector_queue(k)));
        let mut all: Vec<String> = work.iter().flat_map(|q| [q.clone(), Self::dead_letter_queue(q)]).collect();
        for kind in &self.app_kinds {
            all.extend(DELAY_TIERS_SECS.iter().map(|t| self.delay_queue(kind, Duration::from_secs(*t))));
        }
        all
    }

    /// Deletes every queue and exchange of the topology, messages included: for tearing down a
    /// deployment (and every test's own topology, so quorum queues do not pile up on a broker).
    pub async fn delete(&self, ch: &Channel) -> Result<(), BusError> {
        for queue in self.queues() {
            ch.queue_delete(queue.as_str().into(), lapin::options::QueueDeleteOptions::default()).await?;
        }
        for ex in [self.directory_exchange(), self.connector_exchange(), self.dead_letter_exchange()] {
            ch.exchange_delete(ex.into(), lapin::options::ExchangeDeleteOptions::default()).await?;
        }
        Ok(())
    }

    /// [`Topology::delete`] over a connection of its own to `url` (named `unseat-{name}`),
    /// closed afterwards: for whoever tears a topology down without a connection at hand (a
    /// finished benchmark, a test's cleanup).
    pub async fn delete_at(&self, url: &str, name: &str) -> Result<(), BusError> {
        let conn = connect(url, name).await?;
        let deleted = match conn.create_channel().await {
            Ok(ch) => {
                let deleted = self.delete(&ch).await;
                let _ = ch.close(200, "bye".into()).await;
                deleted
            }
            Err(e) => Err(e.into()),
        };
        let _ = conn.close(200, "bye".into()).await;
        deleted
    }
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions { durable: true, ..Default::default() }
}

fn quorum_args(delivery_limit: Option<i64>, dead_letter: Option<(&str, &str)>) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from("quorum")));
    if let Some(limit) = delivery_limit {
        args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(limit));
    }
    if let Some((exchange, key)) = dead_letter {
        args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(LongString::from(exchange)));
        args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(LongString::from(key)));
    }
    args
}

/// Opens a connection named after the role, so operators can tell them apart in RabbitMQ.
pub async fn connect(url: &str, name: &str) -> Result<Connection, BusError> {
    let props = ConnectionProperties::default().with_connection_name(LongString::from(format!("unseat-{name}")));
    Ok(Connection::connect(url, props).await?)
}

/// A channel in confirm mode. Every publish waits for the broker's ack; a nack or an
/// unroutable message is an error, so callers never mark a message sent that the broker
/// did not take.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
}

impl Publisher {
    pub async fn new(conn: &Connection) -> Result<Self, BusError> {
        let channel = conn.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Self { channel })
    }

    /// Starts a persistent, mandatory publish and returns once the broker has it in its
    /// buffer; await the returned future for the confirm. Splitting the two lets a caller keep
    /// many publishes in flight. `kind`, when given, is the message's AMQP `type` (say, that it
    /// carries several messages: [`messages::DIRECTORY_CHANGES_TYPE`]).
    pub async fn start(
        &self,
        exchange: &str,
        routing_key: &str,
        message_id: &str,
        kind: Option<&str>,
        payload: &[u8],
    ) -> Result<impl Future<Output = Result<(), BusError>> + use<>, BusError> {
        let mut props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(ShortString::from("application/json"))
            .with_message_id(ShortString::from(message_id));
        if let Some(kind) = kind {
            props = props.with_type(ShortString::from(kind));
        }
        let confirm = self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                payload,
                props,
            )
            .await?;
        let target = format!("{exchange}/{routing_key}");
        Ok(async move {
            let confirmation = confirm.await?;
            if confirmation.is_nack() {
                return Err(BusError::Nacked);
            }
            if confirmation.take_message().is_some() {
                return Err(BusError::Unroutable(target));
            }
            Ok(())
        })
    }

    /// Parks a persistent message in `delay_queue` (see [`Topology::delay_queue`]) for
    /// `delay`, after which the broker moves it back to its work queue; waits for the confirm.
    pub async fn publish_delayed(
        &self,
        delay_queue: &str,
        message_id: &str,
        payload: &[u8],
        delay: Duration,
    ) -> Result<(), BusError> {
        let millis = delay.min(Topology::max_delay()).as_millis().max(1);
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(ShortString::from("application/json"))
            .with_message_id(ShortString::from(message_id))
            .with_expiration(ShortString::from(millis.to_string()));
        let confirm = self
            .channel
            .basic_publish(
                "".into(),
                delay_queue.into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                payload,
                props,
            )
            .await?;
        let confirmation = confirm.await?;
        if confirmation.is_nack() {
            return Err(BusError::Nacked);
        }
        if confirmation.take_message().is_some() {
            return Err(BusError::Unroutable(delay_queue.to_string()));
        }
        Ok(())
    }

    /// Publishes one message and waits for the broker's confirm.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        message_id: &str,
        payload: &[u8],
    ) -> Result<(), BusError> {
        self.start(exchange, routing_key, message_id, None, payload).await?.await
    }
}

/// Settings of one consumer loop.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    pub url: String,
    pub topology: Topology,
    pub queue: String,
    /// Unacknowledged deliveries this consumer may hold: bounds memory and work in flight.
    pub prefetch: u16,
    /// How long in-flight work may take to finish after the stop signal.
    pub grace: Duration,
    pub name: String,
}

/// Consumes `queue` until `shutdown` fires, running `handler` for each delivery concurrently
/// (at most `prefetch` at a time). The handler must ack or nack the delivery itself, after
/// its effect is durable. Reconnects with a growing pause when the broker goes away; deliveries
/// that were in flight then are redelivered by the broker.
///
/// On shutdown: cancels the consumer (no new deliveries), waits up to `grace` for in-flight
/// handlers, then closes the connection; anything unacked is requeued by the broker.
pub async fn consume<H, Fut>(settings: ConsumerSettings, shutdown: CancellationToken, handler: H)
where
    H: Fn(Delivery) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut pause = Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        match consume_once(&settings, &shutdown, handler.clone()).await {
            Ok(()) => break,
            Err(error) => {
                tracing::warn!(queue = %settings.queue, error = %error, pause_ms = pause.as_millis() as u64, "consumer lost its broker connection; reconnecting");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(Duration::from_secs(10));
            }
        }
    }
}

async fn consume_once<H, Fut>(s: &ConsumerSettings, shutdown: &CancellationToken, handler: H) -> Result<(), BusError>
where
    H: Fn(Delivery) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let conn = connect(&s.url, &s.name).await?;
    let ch = conn.create_channel().await?;
    s.topology.declare(&ch).await?;
    ch.basic_qos(s.prefetch, BasicQosOptions::default()).await?;
    let tag = format!("{}-{}", s.name, uuid::Uuid::new_v4());
    let mut consumer = ch
        .basic_consume(
            s.queue.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tracing::info!(queue = %s.queue, prefetch = s.prefetch, "consuming");
    let tracker = TaskTracker::new();
    let result = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    let h = handler.clone();
                    tracker.spawn(async move { h(delivery).await });
                }
                Some(Err(e)) => break Err(BusError::from(e)),
                None => break Err(BusError::Unroutable("consumer stream ended".into())),
            }
        }
    };
    let _ = ch.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
    tracker.close();
    if tokio::time::timeout(s.grace, tracker.wait()).await.is_err() {
        tracing::warn!(queue = %s.queue, grace_s = s.grace.as_secs(), "grace period ran out; unfinished deliveries return to the queue");
    }
    let _ = conn.close(200, "bye".into()).await;
    result
}

/// A message looked at by [`sweep_queue`].
#[derive(Debug, Clone)]
pub struct Held {
    pub data: Vec<u8>,
    /// When the broker last dead-lettered it (the newest `x-death` entry's `time`, seconds
    /// since the epoch), if it was.
    pub dead_lettered_at: Option<u64>,
}

/// Goes once through `queue` (at most `max` messages), taking each without acknowledging
/// it, asks `remove` which of them to delete (true = delete; in queue order), acknowledges
/// those and returns every other one to the queue. A failure part-way (or a crash) returns
/// everything not yet acknowledged: nothing is lost, at worst something stays. Returns
/// (messages looked at, messages removed).
pub async fn sweep_queue<F, Fut>(
    conn: &Connection,
    queue: &str,
    max: usize,
    remove: F,
) -> Result<(usize, usize), BusError>
where
    F: FnOnce(Vec<Held>) -> Fut,
    Fut: Future<Output = Vec<bool>>,
{
    use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions};
    let ch = conn.create_channel().await?;
    let mut tags = Vec::new();
    let mut held = Vec::new();
    while held.len() < max {
        let Some(message) = ch.basic_get(queue.into(), BasicGetOptions { no_ack: false }).await? else {
            break;
        };
        let delivery = message.delivery;
        tags.push(delivery.delivery_tag);
        held.push(Held { dead_lettered_at: dead_lettered_at(&delivery.properties), data: delivery.data });
    }
    let seen = held.len();
    let verdicts = remove(held).await;
    let mut removed = 0;
    for (i, tag) in tags.iter().enumerate() {
        if verdicts.get(i).copied().unwrap_or(false) {
            ch.basic_ack(*tag, BasicAckOptions::default()).await?;
            removed += 1;
        } else {
            ch.basic_nack(*tag, BasicNackOptions { multiple: false, requeue: true }).await?;
        }
    }
    let _ = ch.close(200, "swept".into()).await;
    Ok((seen, removed))
}

/// When the broker last dead-lettered a message (the `time` of its newest `x-death` entry,
/// seconds since the epoch): set on a message back from a delay queue or a dead-letter queue.
pub fn dead_lettered_at(properties: &BasicProperties) -> Option<u64> {
    let headers = properties.headers().as_ref()?;
    let AMQPValue::FieldArray(deaths) = headers.inner().get("x-death")? else {
        return None;
    };
    let AMQPValue::FieldTable(newest) = deaths.as_slice().first()? else {
        return None;
    };
    match newest.inner().get("time")? {
        AMQPValue::Timestamp(t) => Some(*t),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real broker the test suite runs against.
    fn amqp_url() -> String {
        std::env::var("UNSEAT_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
    }

    /// Whether `queue` exists on the broker (a passive declare fails, and closes its channel,
    /// when it does not).
    async fn exists(conn: &Connection, queue: &str) -> bool {
        let ch = conn.create_channel().await.unwrap();
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        ch.queue_declare(queue.into(), passive, FieldTable::default()).await.is_ok()
    }

    #[tokio::test]
    async fn delete_at_removes_every_queue_of_the_topology_and_nothing_else() {
        let url = amqp_url();
        let conn = connect(&url, "bus-test").await.unwrap();
        let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
        let (gone, kept) =
            (Topology::new(prefix.clone(), vec!["scim".into()]), Topology::new(format!("{prefix}-other"), vec![]));
        let ch = conn.create_channel().await.unwrap();
        gone.declare(&ch).await.unwrap();
        kept.declare(&ch).await.unwrap();
        assert!(gone.queues().iter().any(|q| q.contains(".delay.")), "{:?}", gone.queues());
        for q in gone.queues() {
            assert!(exists(&conn, &q).await, "{q} declared");
        }

        gone.delete_at(&url, "bus-test-cleanup").await.unwrap();
        for q in gone.queues() {
            assert!(!exists(&conn, &q).await, "{q} still there");
        }
        for q in kept.queues() {
            assert!(exists(&conn, &q).await, "{q} of another topology deleted");
        }
        kept.delete(&conn.create_channel().await.unwrap()).await.unwrap();
    }

    #[test]
    fn a_wait_goes_to_the_smallest_tier_that_holds_it() {
        let t = Topology::new("p", vec!["scim".into()]);
        let q = |secs: f64| t.delay_queue("scim", Duration::from_secs_f64(secs));
        assert_eq!(q(0.5), "p.connector.scim.delay.4s");
        assert_eq!(q(4.0), "p.connector.scim.delay.4s");
        assert_eq!(q(4.2), "p.connector.scim.delay.20s");
        assert_eq!(q(300.0), "p.connector.scim.delay.500s");
        assert_eq!(q(86_400.0), "p.connector.scim.delay.3600s");
        assert_eq!(Topology::max_delay(), Duration::from_secs(3600));
    }
}
