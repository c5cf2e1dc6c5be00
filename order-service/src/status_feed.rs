//! Live order status for this process: one `LISTEN` connection, fanned out to
//! every event stream and long poll waiting on an order.
//!
//! A trigger on `orders` (migration `…_order_status_notify.sql`) announces
//! each committed status change on the channel `order_status_<schema>` with
//! `{"orderId", "status"}`, whichever instance of order-service made it.
//! [`StatusFeed::run`] holds the process's only listening connection and
//! passes each notice to the subscribers of that order through a broadcast
//! channel, so a waiting subscriber holds no database connection: it reads
//! the order when told it changed.
//!
//! Nothing is missed: a subscriber subscribes *before* it first reads the
//! order, so a change after that read is announced to it; and whenever
//! notices may have been lost (the listening connection was (re)established,
//! or a subscriber fell behind) subscribers are told to read the order again
//! ([`Change::Resync`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use thiserror::Error;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::domain::OrderStatus;

/// Notices buffered per order for a subscriber that is busy; one that falls
/// further behind re-reads the order instead.
const CHANNEL_CAPACITY: usize = 16;
/// First and longest wait before re-opening a lost listening connection.
const RECONNECT_INITIAL: Duration = Duration::from_millis(200);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Settings of the live API (`GET /api/orders/{orderId}/events` and
/// `GET /api/orders/{orderId}?waitFor=`). Field names are the lower-cased
/// environment variable names.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LiveConfig {
    /// Seconds between keep-alive comments on an idle event stream, so
    /// proxies and clients do not take it for dead.
    pub order_live_keepalive_secs: u64,
    /// Longest `timeout` a long poll may ask for. Must stay below the HTTP
    /// request timeout (30 s), which would otherwise answer 408 first.
    pub order_live_max_wait_secs: u64,
    /// Most event streams and long polls one process serves at once; more
    /// are answered 503. Each costs memory and a socket, not a database connection.
    pub order_live_max_subscribers: usize,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            order_live_keepalive_secs: 15,
            order_live_max_wait_secs: 25,
            order_live_max_subscribers: 1_000,
        }
    }
}

impl LiveConfig {
    pub fn keepalive(&self) -> Duration {
        Duration::from_secs(self.order_live_keepalive_secs)
    }

    pub fn max_wait(&self) -> Duration {
        Duration::from_secs(self.order_live_max_wait_secs)
    }

    /// Refuses settings that cannot work.
    pub fn validate(&self) -> anyhow::Result<()> {
        let request_timeout = service_kit::http::REQUEST_TIMEOUT;
        if self.order_live_keepalive_secs == 0 {
            anyhow::bail!("order_live_keepalive_secs must be at least 1");
        }
        if self.max_wait() >= request_timeout {
            anyhow::bail!(
                "order_live_max_wait_secs must be below the request timeout ({}s), got {}",
                request_timeout.as_secs(),
                self.order_live_max_wait_secs
            );
        }
        if self.order_live_max_subscribers == 0 {
            anyhow::bail!("order_live_max_subscribers must be at least 1");
        }
        Ok(())
    }
}

/// What a subscriber is told about its order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The order moved to this status (it may have moved on again since).
    Status(OrderStatus),
    /// Notices may have been lost: read the order again.
    Resync,
}

/// Every subscriber slot is taken.
#[derive(Debug, Error)]
#[error("this instance already serves {0} live subscribers; retry later or elsewhere")]
pub struct Busy(pub usize);

/// The process's status fan-out. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct StatusFeed {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    /// `order_status_<schema>`, the channel the trigger notifies.
    channel: String,
    /// One sender per order that has subscribers; removed with the last one.
    orders: Mutex<HashMap<String, broadcast::Sender<Change>>>,
    /// Bounds the subscribers; a slot is held for as long as a subscription lives.
    slots: Arc<Semaphore>,
    max_subscribers: usize,
    /// Cancelled when the service starts shutting down: subscriptions end.
    closing: CancellationToken,
}

impl StatusFeed {
    pub fn new(pool: PgPool, schema: &str, max_subscribers: usize) -> StatusFeed {
        StatusFeed {
            inner: Arc::new(Inner {
                pool,
                channel: format!("order_status_{schema}"),
                orders: Mutex::new(HashMap::new()),
                slots: Arc::new(Semaphore::new(max_subscribers)),
                max_subscribers,
                closing: CancellationToken::new(),
            }),
        }
    }

    /// Cancel this when shutdown begins: every subscription ends, so open
    /// event streams close and the HTTP server can drain.
    pub fn closing(&self) -> CancellationToken {
        self.inner.closing.clone()
    }

    /// Starts listening for changes of `order_id`. Read the order *after*
    /// this, so that no change falls between the read and the subscription.
    pub fn subscribe(&self, order_id: &str) -> Result<Subscription, Busy> {
        let slot = Arc::clone(&self.inner.slots)
            .try_acquire_owned()
            .map_err(|_| Busy(self.inner.max_subscribers))?;
        let receiver = self
            .inner
            .lock_orders()
            .entry(order_id.to_owned())
            .or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0)
            .subscribe();
        Ok(Subscription {
            order_id: order_id.to_owned(),
            receiver: Some(receiver),
            inner: Arc::clone(&self.inner),
            _slot: slot,
        })
    }

    /// How many orders have subscribers now.
    pub fn watched_orders(&self) -> usize {
        self.inner.lock_orders().len()
    }

    /// Listens until `stop` is cancelled, reconnecting (and telling every
    /// subscriber to re-read) whenever the connection is lost.
    pub async fn run(self, stop: CancellationToken) -> anyhow::Result<()> {
        let mut delay = RECONNECT_INITIAL;
        while !stop.is_cancelled() {
            let mut listener = match self.listen().await {
                Ok(listener) => {
                    delay = RECONNECT_INITIAL;
                    listener
                }
                Err(err) => {
                    tracing::warn!(error = %err, channel = self.inner.channel, "cannot LISTEN for order status changes; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(RECONNECT_MAX);
                    continue;
                }
            };
            // Changes made while nobody listened were not announced.
            self.inner.resync_all();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    received = listener.try_recv() => match received {
                        Ok(Some(notice)) => self.inner.dispatch(notice.payload()),
                        Ok(None) => {
                            tracing::warn!("lost the order status LISTEN connection; reconnecting");
                            break;
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, "order status LISTEN failed; reconnecting");
                            break;
                        }
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(RECONNECT_INITIAL) => {}
            }
        }
        Ok(())
    }

    async fn listen(&self) -> Result<PgListener, sqlx::Error> {
        // A connection of its own, outside the pool: LISTEN state lives on it.
        let mut listener = PgListener::connect_with(&self.inner.pool).await?;
        listener.listen(&self.inner.channel).await?;
        Ok(listener)
    }
}

/// The trigger's payload.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Notice {
    order_id: String,
    status: String,
}

impl Inner {
    fn lock_orders(&self) -> std::sync::MutexGuard<'_, HashMap<String, broadcast::Sender<Change>>> {
        // The map stays consistent even if a holder panicked: every operation
        // on it is a single insert, lookup or removal.
        self.orders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn dispatch(&self, payload: &str) {
        let notice: Notice = match serde_json::from_str(payload) {
            Ok(notice) => notice,
            Err(err) => {
                tracing::warn!(error = %err, payload, "unreadable order status notice; everyone re-reads");
                self.resync_all();
                return;
            }
        };
        // A status this build does not know (a newer instance wrote it):
        // subscribers read the order and see for themselves.
        let change = notice
            .status
            .parse()
            .map(Change::Status)
            .unwrap_or(Change::Resync);
        if let Some(sender) = self.lock_orders().get(&notice.order_id) {
            let _no_receiver_left = sender.send(change);
        }
    }

    fn resync_all(&self) {
        for sender in self.lock_orders().values() {
            let _no_receiver_left = sender.send(Change::Resync);
        }
    }
}

/// One subscriber's view of one order's changes. Dropping it frees its slot.
pub struct Subscription {
    order_id: String,
    /// `None` only while being dropped.
    receiver: Option<broadcast::Receiver<Change>>,
    inner: Arc<Inner>,
    _slot: OwnedSemaphorePermit,
}

impl Subscription {
    pub fn order_id(&self) -> &str {
        &self.order_id
    }

    /// The next change of the order, or `None` once the service is shutting down.
    pub async fn next(&mut self) -> Option<Change> {
        let receiver = self.receiver.as_mut()?;
        tokio::select! {
            _ = self.inner.closing.cancelled() => None,
            received = receiver.recv() => match received {
                Ok(change) => Some(change),
                Err(RecvError::Lagged(_)) => Some(Change::Resync),
                Err(RecvError::Closed) => None,
            },
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        drop(self.receiver.take());
        let mut orders = self.inner.lock_orders();
        // Subscribing happens under the same lock, so nobody can be joining
        // this order between the count and the removal.
        if orders
            .get(&self.order_id)
            .is_some_and(|sender| sender.receiver_count() == 0)
        {
            orders.remove(&self.order_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(max: usize) -> StatusFeed {
        let pool = PgPool::connect_lazy("postgres://nobody@127.0.0.1:1/none").expect("a lazy pool");
        StatusFeed::new(pool, "orders", max)
    }

    #[tokio::test]
    async fn a_notice_reaches_only_the_subscribers_of_its_order() {
        let feed = feed(10);
        let mut watching = feed.subscribe("o-1").unwrap();
        let mut also_watching = feed.subscribe("o-1").unwrap();
        let mut other = feed.subscribe("o-2").unwrap();

        feed.inner
            .dispatch(r#"{"orderId":"o-1","status":"CONFIRMED"}"#);

        assert_eq!(
            watching.next().await,
            Some(Change::Status(OrderStatus::Confirmed))
        );
        assert_eq!(
            also_watching.next().await,
            Some(Change::Status(OrderStatus::Confirmed))
        );
        feed.inner.resync_all();
        assert_eq!(other.next().await, Some(Change::Resync));
    }

    #[tokio::test]
    async fn an_unknown_status_or_payload_means_read_again() {
        let feed = feed(10);
        let mut watching = feed.subscribe("o-1").unwrap();
        feed.inner
            .dispatch(r#"{"orderId":"o-1","status":"SHIPPED"}"#);
        assert_eq!(watching.next().await, Some(Change::Resync));
        feed.inner.dispatch("not json");
        assert_eq!(watching.next().await, Some(Change::Resync));
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told_to_read_again() {
        let feed = feed(10);
        let mut slow = feed.subscribe("o-1").unwrap();
        for _ in 0..CHANNEL_CAPACITY + 1 {
            feed.inner
                .dispatch(r#"{"orderId":"o-1","status":"RESERVED"}"#);
        }
        assert_eq!(slow.next().await, Some(Change::Resync));
    }

    #[tokio::test]
    async fn subscriptions_are_bounded_and_forgotten_when_dropped() {
        let feed = feed(2);
        let first = feed.subscribe("o-1").unwrap();
        let second = feed.subscribe("o-2").unwrap();
        assert!(feed.subscribe("o-3").is_err());
        assert_eq!(feed.watched_orders(), 2);
        drop(first);
        drop(second);
        assert_eq!(feed.watched_orders(), 0);
        assert!(feed.subscribe("o-3").is_ok());
    }

    #[tokio::test]
    async fn closing_ends_every_subscription() {
        let feed = feed(2);
        let mut watching = feed.subscribe("o-1").unwrap();
        feed.closing().cancel();
        assert_eq!(watching.next().await, None);
    }

    #[test]
    fn live_settings_come_from_the_environment() {
        use service_kit::ServiceConfig;
        let env = [
            ("ORDER_LIVE_KEEPALIVE_SECS", "3"),
            ("ORDER_LIVE_MAX_WAIT_SECS", "10"),
            ("ORDER_LIVE_MAX_SUBSCRIBERS", "7"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let config: crate::Config =
            service_kit::config::load_from(&crate::Config::defaults(), None, Some(env)).unwrap();
        assert_eq!(config.live.keepalive(), Duration::from_secs(3));
        assert_eq!(config.live.max_wait(), Duration::from_secs(10));
        assert_eq!(config.live.order_live_max_subscribers, 7);
    }

    #[test]
    fn refuses_a_wait_cap_at_or_above_the_request_timeout() {
        let mut config = LiveConfig::default();
        assert!(config.validate().is_ok());
        config.order_live_max_wait_secs = service_kit::http::REQUEST_TIMEOUT.as_secs();
        assert!(config.validate().is_err());
    }
}
