//! The transactional outbox: events are written in the same transaction as the
//! state change they report ([`Outbox::enqueue`]), and a relay publishes them
//! ([`OutboxRelay`]).
//!
//! This is what makes "stored" and "published" agree: a rolled-back change
//! leaves no event, and a committed change's event is published eventually,
//! even if the service crashes right after the commit. A row is marked sent
//! only after the broker acknowledged it, so a crash between publish and mark
//! re-sends the event; consumers' inboxes make that harmless.
//!
//! Several instances may relay from one schema: rows are claimed with
//! `FOR UPDATE SKIP LOCKED`, so each row is published by one instance at a time.
//!
//! A service holds one [`Outbox`] handle: the topics its events go to, the
//! producer name they carry, and the wake-up of its own relay. Whatever
//! writes events opens its transaction with [`Outbox::begin`] and ends it
//! with [`Outbox::commit`], which commits and then, if the transaction
//! enqueued anything, wakes the relay, so an event leaves as soon as its
//! transaction is durable and no commit site can forget to say so. The
//! relay's poll (`OUTBOX_POLL_INTERVAL_MS`) picks up anything else, such as
//! the rows of an instance that stopped before relaying them. The wake-up is
//! deliberately not a `NOTIFY` from inside the transaction: Postgres
//! serialises the commits of all notifying transactions of a database
//! (docs/BENCHMARKS.md measures what that cost).
//!
//! A row keeps the trace context of the transaction that wrote it
//! (`traceparent`), and the relay publishes it as a Kafka header, so the
//! event's consumers continue the same trace. After each round the relay
//! reports the backlog (`outbox_unsent_events`, `outbox_oldest_unsent_age_seconds`).

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::future::join_all;
use shared_events::events::headers;
use shared_events::{Envelope, Topics};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::backend::kafka::KafkaPublisher;
use crate::backend::{Header, Outgoing, Publisher};
use crate::config::CommonConfig;
use crate::kafka::EventProducer;
use crate::trace_context::{self, TRACEPARENT};

/// A service's outbox: where its events go, whom they name as their
/// producer, and its relay's wake-up. Cheap to clone; every clone is the same
/// outbox, so a commit through any of them wakes the one relay.
#[derive(Clone, Debug)]
pub struct Outbox(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    /// The topic of each event type.
    topics: Topics,
    /// The service's name, written as the `producer` of the events it emits.
    producer: String,
    /// Notified after each commit that enqueued events; the relay waits on it.
    wakeup: Notify,
}

/// A transaction opened by [`Outbox::begin`]: a database transaction
/// (through `Deref`, a `PgConnection` for any query) that remembers whether it
/// enqueued events, so that [`Outbox::commit`] wakes the relay exactly when
/// there is something to publish. Dropped without a commit, it rolls back.
#[derive(Debug)]
pub struct OutboxTx {
    tx: Transaction<'static, Postgres>,
    /// Whether [`Outbox::enqueue`] wrote a row in this transaction.
    enqueued: bool,
}

impl Deref for OutboxTx {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.tx
    }
}

impl DerefMut for OutboxTx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}

impl OutboxTx {
    /// Rolls back: nothing written in the transaction, events included, remains.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

impl Outbox {
    /// The outbox of a service that sends its events to `topics` and signs
    /// them `producer`.
    pub fn new(topics: Topics, producer: impl Into<String>) -> Outbox {
        Outbox(Arc::new(Shared {
            topics,
            producer: producer.into(),
            wakeup: Notify::new(),
        }))
    }

    /// The outbox of the service `config` describes: its topics, its name.
    pub fn of(config: &CommonConfig) -> Outbox {
        Outbox::new(config.topics(), config.service_name.clone())
    }

    /// The name to write as the `producer` of the events this service emits.
    pub fn producer(&self) -> &str {
        &self.0.producer
    }

    /// Opens a transaction that may write events.
    pub async fn begin(&self, pool: &PgPool) -> Result<OutboxTx, sqlx::Error> {
        Ok(OutboxTx {
            tx: pool.begin().await?,
            enqueued: false,
        })
    }

    /// Writes `event` to the outbox as part of `tx`, on its event type's
    /// topic, with the trace context of the current span.
    pub async fn enqueue(&self, tx: &mut OutboxTx, event: &Envelope) -> Result<(), sqlx::Error> {
        let traceparent = trace_context::current_traceparent();
        self.enqueue_all(tx, &[(event, traceparent.as_deref())])
            .await
    }

    /// Writes `events` to the outbox as part of `tx`, in their order and in
    /// one statement, each on its event type's topic with the trace context
    /// beside it (the consumer writes a whole batch's caused events at once).
    pub async fn enqueue_all(
        &self,
        tx: &mut OutboxTx,
        events: &[(&Envelope, Option<&str>)],
    ) -> Result<(), sqlx::Error> {
        if events.is_empty() {
            return Ok(());
        }
        let (caused, traceparents): (Vec<&Envelope>, Vec<Option<&str>>) =
            events.iter().copied().unzip();
        let ids: Vec<uuid::Uuid> = caused.iter().map(|event| event.event_id).collect();
        let topics: Vec<&str> = caused
            .iter()
            .map(|event| self.0.topics.for_event(event.event_type()))
            .collect();
        let keys: Vec<&str> = caused.iter().map(|event| event.order_id.as_str()).collect();
        let types: Vec<&str> = caused
            .iter()
            .map(|event| event.event_type().as_str())
            .collect();
        let payloads: Vec<Vec<u8>> = caused.iter().map(|event| event.to_json()).collect();
        // Serial ids follow the rows' order, which the relay publishes in.
        sqlx::query(
            "INSERT INTO outbox (event_id, topic, message_key, event_type, payload, traceparent)
             SELECT event_id, topic, message_key, event_type, payload, traceparent
               FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::text[])
                    WITH ORDINALITY
                    AS caused (event_id, topic, message_key, event_type, payload, traceparent, position)
              ORDER BY position",
        )
        .bind(ids)
        .bind(topics)
        .bind(keys)
        .bind(types)
        .bind(payloads)
        .bind(traceparents)
        .execute(&mut **tx)
        .await?;
        tx.enqueued = true;
        Ok(())
    }

    /// Commits `tx`, then, if it enqueued events, wakes the relay (a relay
    /// busy with a round starts another right after it). After the commit,
    /// never inside the transaction: see the module's documentation.
    pub async fn commit(&self, tx: OutboxTx) -> Result<(), sqlx::Error> {
        let OutboxTx { tx, enqueued } = tx;
        tx.commit().await?;
        if enqueued {
            self.0.wakeup.notify_one();
        }
        Ok(())
    }

    /// Resolves at the next commit that enqueued events, or at once if one
    /// came since the last wait: what the relay waits on between rounds.
    pub async fn wait_for_commit(&self) {
        self.0.wakeup.notified().await;
    }
}

/// Wait before trying again after the relay itself failed (database or broker down).
const FAILURE_BACKOFF: Duration = Duration::from_secs(1);
/// How often sent rows older than the retention period are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Publishes unsent outbox rows, oldest first, through `P` (in the services,
/// a Kafka producer of the relay's own).
pub struct OutboxRelay<P = KafkaPublisher> {
    pool: PgPool,
    publisher: P,
    /// The `service` label of its metrics.
    service: String,
    /// Whose commits wake the relay.
    outbox: Outbox,
    /// Most rows claimed per round trip.
    batch_size: i64,
    /// Fallback for rows no wake-up announced (another instance's, say).
    poll_interval: Duration,
    /// Sent rows older than this are pruned.
    retention: Duration,
}

/// Locks up to `limit` unsent rows, oldest first, skipping rows another relay
/// holds, and returns those that may be published now: a row whose order has
/// an older unsent row held by another relay waits, so one order's events are
/// published in the order they were written even with several relays.
pub async fn claim(tx: &mut PgConnection, limit: i64) -> Result<Vec<Row>, sqlx::Error> {
    sqlx::query_as(
        "WITH claimed AS (
             SELECT id FROM outbox WHERE sent_at IS NULL
             ORDER BY id LIMIT $1
             FOR UPDATE SKIP LOCKED
         )
         SELECT o.id, o.event_id, o.topic, o.message_key, o.event_type, o.payload,
                o.traceparent
         FROM outbox o JOIN claimed c ON c.id = o.id
         WHERE NOT EXISTS (
             SELECT 1 FROM outbox earlier
             WHERE earlier.message_key = o.message_key
               AND earlier.sent_at IS NULL
               AND earlier.id < o.id
               AND earlier.id NOT IN (SELECT id FROM claimed)
         )
         ORDER BY o.id",
    )
    .bind(limit)
    .fetch_all(tx)
    .await
}

/// Marks the rows `ids` (claimed in `tx`) as published.
pub async fn mark_sent(tx: &mut PgConnection, ids: &[i64]) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE outbox SET sent_at = now() WHERE id = ANY($1)")
        .bind(ids)
        .execute(tx)
        .await?;
    Ok(())
}

/// An outbox row as the relay publishes it.
#[derive(Debug, sqlx::FromRow)]
pub struct Row {
    pub id: i64,
    pub event_id: uuid::Uuid,
    pub topic: String,
    pub message_key: String,
    pub event_type: String,
    pub payload: Vec<u8>,
    /// W3C trace context of the transaction that wrote the row.
    pub traceparent: Option<String>,
}

impl OutboxRelay {
    /// A relay for `outbox`, publishing the rows in `pool`'s schema with a
    /// Kafka producer of its own, so that one in a fatal state can be
    /// replaced without touching anyone else's.
    pub fn new(config: &CommonConfig, pool: PgPool, outbox: Outbox) -> anyhow::Result<OutboxRelay> {
        Ok(OutboxRelay::with_publisher(
            config,
            pool,
            outbox,
            KafkaPublisher::own(config)?,
        ))
    }

    /// The producer in use now (a fatally failed one is replaced).
    pub fn producer(&self) -> &EventProducer {
        self.publisher.producer()
    }
}

impl<P: Publisher> OutboxRelay<P> {
    /// A relay for `outbox` that publishes through `publisher`, with
    /// `config`'s batch size, poll interval and retention.
    pub fn with_publisher(
        config: &CommonConfig,
        pool: PgPool,
        outbox: Outbox,
        publisher: P,
    ) -> OutboxRelay<P> {
        OutboxRelay {
            pool,
            publisher,
            service: config.service_name.clone(),
            outbox,
            batch_size: config.outbox.batch_size,
            poll_interval: config.outbox.poll_interval,
            retention: config.outbox.retention,
        }
    }

    /// Relays until `shutdown` is cancelled. Never gives up: failures are
    /// logged and retried, unsent rows stay unsent until published.
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut last_prune = tokio::time::Instant::now();
        while !shutdown.is_cancelled() {
            let published = self.publish_batch().await;
            if let Err(err) = self.report_backlog().await {
                tracing::debug!(error = %err, "measuring the outbox backlog failed");
            }
            let wait = match published {
                Ok(published) if published as i64 >= self.batch_size => continue,
                Ok(_) => self.poll_interval,
                Err(err) => {
                    tracing::warn!(error = format!("{err:#}"), "outbox relay failed; retrying");
                    self.publisher.recover();
                    FAILURE_BACKOFF
                }
            };
            if last_prune.elapsed() >= PRUNE_EVERY {
                last_prune = tokio::time::Instant::now();
                if let Err(err) = self.prune().await {
                    tracing::warn!(error = %err, "pruning the outbox failed");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait) => {},
                _ = self.outbox.wait_for_commit() => {},
            }
        }
        Ok(())
    }

    /// Claims a batch of unsent rows, publishes them and marks the acknowledged
    /// ones sent. Returns how many were published.
    async fn publish_batch(&self) -> anyhow::Result<usize> {
        let mut tx = self
            .pool
            .begin()
            .await
            .context("starting the outbox transaction")?;
        let rows = claim(&mut tx, self.batch_size)
            .await
            .context("claiming outbox rows")?;
        if rows.is_empty() {
            return Ok(0);
        }

        // Start every send of the batch before awaiting any acknowledgement
        // so it travels in as few produce requests as possible; the
        // idempotent producer keeps per-partition order.
        let event_ids: Vec<String> = rows.iter().map(|row| row.event_id.to_string()).collect();
        let message_headers: Vec<Vec<Header<'_>>> = rows
            .iter()
            .zip(&event_ids)
            .map(|(row, event_id)| {
                let mut message_headers = vec![
                    (headers::EVENT_ID, Some(event_id.as_bytes())),
                    (headers::EVENT_TYPE, Some(row.event_type.as_bytes())),
                ];
                if let Some(traceparent) = &row.traceparent {
                    message_headers.push((TRACEPARENT, Some(traceparent.as_bytes())));
                }
                message_headers
            })
            .collect();
        let deliveries = rows.iter().zip(&message_headers).map(|(row, headers)| {
            self.publisher.send(Outgoing {
                topic: &row.topic,
                key: Some(row.message_key.as_bytes()),
                payload: Some(&row.payload),
                headers,
            })
        });
        let results = join_all(deliveries).await;

        let mut sent = Vec::with_capacity(rows.len());
        let mut first_error = None;
        for (row, result) in rows.iter().zip(results) {
            match result {
                Ok(_) => {
                    sent.push(row.id);
                    crate::metrics::events_published(&self.service, &row.topic, 1);
                }
                Err(err) => {
                    tracing::warn!(event_id = %row.event_id, topic = row.topic, error = format!("{err:#}"), "publish failed; will retry");
                    first_error.get_or_insert(err);
                }
            }
        }
        mark_sent(&mut tx, &sent)
            .await
            .context("marking outbox rows sent")?;
        tx.commit().await.context("committing the outbox batch")?;
        match first_error {
            None => Ok(sent.len()),
            Some(err) => Err(err.context("publishing outbox rows")),
        }
    }

    /// Updates the backlog gauges: unsent rows and the age of the oldest.
    async fn report_backlog(&self) -> Result<(), sqlx::Error> {
        let (unsent, oldest_age_secs): (i64, f64) = sqlx::query_as(
            "SELECT count(*),
                    COALESCE(EXTRACT(EPOCH FROM now() - min(created_at))::float8, 0)
             FROM outbox WHERE sent_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        crate::metrics::outbox_backlog(
            &self.service,
            unsent,
            Duration::from_secs_f64(oldest_age_secs.max(0.0)),
        );
        Ok(())
    }

    async fn prune(&self) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM outbox WHERE sent_at < now() - make_interval(secs => $1)")
            .bind(self.retention.as_secs_f64())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
