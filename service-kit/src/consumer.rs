//! The consumer loop: at-least-once delivery from Kafka, exactly-once effects
//! in Postgres.
//!
//! For each message, in one database transaction: record its eventId in the
//! inbox (a redelivered event stops here), let the service apply it, and write
//! the events it causes to the outbox. Only after that transaction commits is
//! the message's offset stored for commit. A crash anywhere before the commit
//! redelivers the message; a crash after it redelivers at most a duplicate,
//! which the inbox absorbs.
//!
//! When several messages are already waiting, up to `CONSUMER_BATCH_SIZE` of
//! them are applied in one transaction instead (each with its inbox row and
//! caused events), and their offsets stored after that one commit: the same
//! guarantees with one commit instead of many, which is what bounds a consumer
//! that applies events one after another. If anything in a batch fails, the
//! batch is rolled back and its messages are applied one by one, with the
//! usual retries and dead-lettering.
//!
//! A service supplies only an [`EventHandler`]: "what does this event do to my
//! state, and what does it cause". Policies every event needs are the loop's,
//! so no handler can forget them: it takes the per-order lock
//! ([`crate::db::lock_keys`]) before applying an event, so one order's events,
//! which arrive on several topics and may reach several instances at once,
//! apply one at a time (a batch locks all its orders first, in one order, so
//! two batches cannot deadlock on them); and it commits through the
//! [`Outbox`], which wakes the relay when caused events were written.
//!
//! The loop reads from a [`MessageSource`] and writes dead letters through a
//! [`Publisher`] ([`crate::backend`]): Kafka in the services, the in-memory
//! broker in its unit tests and in the benchmark's limit run, which so
//! measure the code that ships.
//!
//! Each event is handled inside an `event` span carrying its `order_id`, and
//! that span continues the trace named by the message's `traceparent` header,
//! so the events it causes (written to the outbox with the span's context)
//! belong to the same trace.

use std::future::Future;
use std::time::Duration;

use shared_events::Envelope;
use sqlx::{PgConnection, PgPool};
use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::backend::kafka::{KafkaPublisher, KafkaSource};
use crate::backend::{MessageSource, Publisher, Received};
use crate::config::CommonConfig;
use crate::kafka::EventProducer;
use crate::outbox::{Outbox, OutboxTx};
use crate::shutdown::Closing;
use crate::{dlq, metrics, trace_context};

/// Why a handler could not apply an event, which decides what happens next.
#[derive(Debug, Error)]
pub enum HandlerError {
    /// The event can never be applied (it contradicts this service's state,
    /// e.g. a result for an order that does not exist). It goes to the
    /// dead-letter topic at once.
    #[error("{0}")]
    Permanent(String),
    /// A dependency is unavailable (database unreachable, statement timeout,
    /// serialisation conflict). Retried with backoff for as long as it takes;
    /// never skipped.
    #[error(transparent)]
    Transient(anyhow::Error),
    /// Anything else. Retried up to `CONSUMER_MAX_ATTEMPTS` times, then
    /// dead-lettered, so one bad event cannot stall its partition forever.
    #[error(transparent)]
    Failed(anyhow::Error),
}

/// Retried for as long as it takes if [`crate::db::is_transient`] says it may
/// pass (the same rule that makes the HTTP API answer 503), else retried a
/// few times and dead-lettered.
impl From<sqlx::Error> for HandlerError {
    fn from(err: sqlx::Error) -> Self {
        if crate::db::is_transient(&err) {
            HandlerError::Transient(err.into())
        } else {
            HandlerError::Failed(err.into())
        }
    }
}

/// What a service does with one event.
pub trait EventHandler: Send + Sync + 'static {
    /// Applies `event` inside `tx` and returns the events it causes; they are
    /// written to the outbox in the same transaction. Events this service does
    /// not care about return an empty list.
    ///
    /// `tx` already holds the lock on the event's order: until it ends, no
    /// other event of that order is applied by any instance of the service.
    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a Envelope,
    ) -> impl Future<Output = Result<Vec<Envelope>, HandlerError>> + Send + 'a;
}

/// What became of one message.
enum Outcome {
    /// Applied now, or earlier (a duplicate), or stored as a dead letter:
    /// either way its offset may be stored.
    Done,
    /// Shutdown arrived while retrying: leave the offset, the message comes back.
    Interrupted,
}

/// Runs one consumer group member for a service: messages from `S` (Kafka in
/// the services), dead letters through `P`.
pub struct EventConsumer<H, S = KafkaSource, P = KafkaPublisher> {
    source: S,
    pool: PgPool,
    handler: H,
    /// Where caused events are written; committing through it wakes the relay.
    outbox: Outbox,
    /// Writes dead letters.
    dead_letters: P,
    /// Named in dead letters and logs.
    service: String,
    /// Delay before the first retry of a failing event.
    retry_initial: Duration,
    /// Cap of the doubling retry delay.
    retry_max: Duration,
    /// Attempts before an event that keeps failing (not transiently) is dead-lettered.
    max_attempts: u32,
    /// Most waiting messages applied in one transaction.
    batch_size: usize,
    /// Where the final commit and close run when the loop ends, so that
    /// shutdown can wait for them with a deadline.
    closing: Closing,
}

impl<H: EventHandler> EventConsumer<H> {
    /// Subscribes to `subscriptions` as a member of the service's consumer
    /// group, writing dead letters with `producer`.
    pub fn new(
        config: &CommonConfig,
        pool: PgPool,
        producer: EventProducer,
        outbox: Outbox,
        closing: Closing,
        subscriptions: &[&str],
        handler: H,
    ) -> anyhow::Result<Self> {
        let source = KafkaSource::subscribe(config, subscriptions)?;
        let dead_letters = KafkaPublisher::shared(producer);
        Ok(EventConsumer::with_backend(
            config,
            pool,
            outbox,
            closing,
            handler,
            source,
            dead_letters,
        ))
    }
}

impl<H: EventHandler, S: MessageSource, P: Publisher> EventConsumer<H, S, P> {
    /// Consumes `source`, writing dead letters through `dead_letters`, with
    /// `config`'s retry and batch settings.
    pub fn with_backend(
        config: &CommonConfig,
        pool: PgPool,
        outbox: Outbox,
        closing: Closing,
        handler: H,
        source: S,
        dead_letters: P,
    ) -> Self {
        EventConsumer {
            source,
            pool,
            handler,
            outbox,
            dead_letters,
            service: config.service_name.clone(),
            retry_initial: config.consumer.retry_initial,
            retry_max: config.consumer.retry_max,
            max_attempts: config.consumer.max_attempts,
            batch_size: config.consumer.batch_size,
            closing,
        }
    }

    /// Consumes until `shutdown` is cancelled, then hands the final commit of
    /// the stored offsets and the leaving of the group to [`Closing`]: with
    /// Kafka both block while the broker is unreachable, and shutdown waits
    /// for them only until its deadline.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        loop {
            let first = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                message = self.source.recv() => message,
            };
            // Whatever else has already arrived joins the batch; nothing waits
            // for more, so a lone message is applied at once.
            let mut batch = vec![first];
            while batch.len() < self.batch_size {
                match self.source.try_recv() {
                    Some(message) => batch.push(message),
                    None => break,
                }
            }
            let (done, outcome) = self.process_batch(&batch, &shutdown).await;
            for message in &batch[..done] {
                self.source.store(message);
            }
            if let Outcome::Interrupted = outcome {
                break;
            }
        }
        let owner = format!("consumer close of {}", self.service);
        self.source.close(&self.closing, owner);
        Ok(())
    }

    /// Applies `batch` in one transaction if it can, else message by message.
    /// Returns how many messages (from the start) are done, and whether
    /// shutdown interrupted the rest.
    async fn process_batch(
        &self,
        batch: &[Received],
        shutdown: &CancellationToken,
    ) -> (usize, Outcome) {
        if batch.len() > 1 {
            let events: Option<Vec<Envelope>> = batch
                .iter()
                .map(|m| Envelope::from_json(m.payload()).ok())
                .collect();
            if let Some(events) = events {
                match self.apply_together(batch, &events).await {
                    Ok(fresh) => {
                        for ((message, event), fresh) in batch.iter().zip(&events).zip(fresh) {
                            let outcome = if fresh { "applied" } else { "duplicate" };
                            tracing::info!(
                                order_id = %event.order_id,
                                event_type = event.event_type().as_str(),
                                event_id = %event.event_id,
                                batch = batch.len(),
                                "{outcome}"
                            );
                            metrics::event_consumed(&self.service, &message.topic, outcome);
                        }
                        return (batch.len(), Outcome::Done);
                    }
                    Err(err) => tracing::debug!(
                        error = %err,
                        "batch not applied together; applying its events one by one"
                    ),
                }
            }
        }
        for (done, message) in batch.iter().enumerate() {
            if let Outcome::Interrupted = self.process(message, shutdown).await {
                return (done, Outcome::Interrupted);
            }
        }
        (batch.len(), Outcome::Done)
    }

    /// One transaction for the whole batch; which events were fresh.
    async fn apply_together(
        &self,
        batch: &[Received],
        events: &[Envelope],
    ) -> Result<Vec<bool>, HandlerError> {
        let sourced: Vec<(Source<'_>, &Envelope)> = batch
            .iter()
            .zip(events)
            .map(|(message, event)| (Source::of(message), event))
            .collect();
        let applied = apply_batch(&self.pool, &self.handler, &self.outbox, &sourced).await?;
        Ok(applied.iter().map(Option::is_some).collect())
    }

    async fn process(&self, message: &Received, shutdown: &CancellationToken) -> Outcome {
        let event = match Envelope::from_json(message.payload()) {
            Ok(event) => event,
            Err(err) => {
                return self
                    .dead_letter(message, 1, &err.to_string(), shutdown)
                    .await
            }
        };
        let span = event_span(&event, message.header(trace_context::TRACEPARENT));
        self.apply_with_retries(message, &event, shutdown)
            .instrument(span)
            .await
    }

    async fn apply_with_retries(
        &self,
        message: &Received,
        event: &Envelope,
        shutdown: &CancellationToken,
    ) -> Outcome {
        let mut delay = self.retry_initial;
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.apply(message, event).await {
                Ok(true) => {
                    tracing::info!("applied");
                    metrics::event_consumed(&self.service, &message.topic, "applied");
                    return Outcome::Done;
                }
                Ok(false) => {
                    tracing::info!("duplicate delivery ignored");
                    metrics::event_consumed(&self.service, &message.topic, "duplicate");
                    return Outcome::Done;
                }
                Err(HandlerError::Permanent(reason)) => {
                    return self.dead_letter(message, attempts, &reason, shutdown).await;
                }
                Err(HandlerError::Failed(err)) if attempts >= self.max_attempts => {
                    return self
                        .dead_letter(message, attempts, &format!("{err:#}"), shutdown)
                        .await;
                }
                Err(HandlerError::Failed(err)) => {
                    metrics::event_retried(&self.service, &message.topic, "failed");
                    tracing::warn!(
                        error = format!("{err:#}"),
                        attempts,
                        retry_in_ms = delay.as_millis() as u64,
                        "applying event failed; will retry"
                    );
                }
                Err(HandlerError::Transient(err)) => {
                    metrics::event_retried(&self.service, &message.topic, "transient");
                    tracing::warn!(
                        error = format!("{err:#}"),
                        retry_in_ms = delay.as_millis() as u64,
                        "dependency unavailable; will retry"
                    );
                }
            }
            if !self.pause(delay, shutdown).await {
                return Outcome::Interrupted;
            }
            delay = (delay * 2).min(self.retry_max);
        }
    }

    /// Parks `message` on its dead-letter topic. Retries while the broker is
    /// unreachable: the offset moves on only once the dead letter is stored.
    async fn dead_letter(
        &self,
        message: &Received,
        attempts: u32,
        error: &str,
        shutdown: &CancellationToken,
    ) -> Outcome {
        tracing::error!(
            topic = message.topic,
            partition = message.partition,
            offset = message.offset,
            attempts,
            error,
            "event cannot be processed; moving it to the dead-letter topic"
        );
        let mut delay = self.retry_initial;
        loop {
            match dlq::send(&self.dead_letters, message, &self.service, attempts, error).await {
                Ok(()) => {
                    metrics::event_dead_lettered(&self.service, &message.topic);
                    metrics::event_consumed(&self.service, &message.topic, "dead_lettered");
                    return Outcome::Done;
                }
                Err(err) => tracing::warn!(
                    error = format!("{err:#}"),
                    "writing the dead letter failed; will retry"
                ),
            }
            if !self.pause(delay, shutdown).await {
                return Outcome::Interrupted;
            }
            delay = (delay * 2).min(self.retry_max);
        }
    }

    /// Waits `delay`; `false` if shutdown came first.
    async fn pause(&self, delay: Duration, shutdown: &CancellationToken) -> bool {
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }

    /// One transaction: inbox row, effect, caused events. `Ok(false)` for a
    /// duplicate.
    async fn apply(&self, message: &Received, event: &Envelope) -> Result<bool, HandlerError> {
        let source = Source::of(message);
        let applied = apply(&self.pool, &self.handler, &self.outbox, &source, event).await?;
        Ok(applied.is_some())
    }
}

/// Where a consumed event came from, as the inbox records it, and the trace
/// it belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// The message's W3C `traceparent` header, if any.
    pub traceparent: Option<&'a str>,
}

impl<'a> Source<'a> {
    fn of(message: &'a Received) -> Source<'a> {
        Source {
            topic: &message.topic,
            partition: message.partition,
            offset: message.offset,
            traceparent: message.header(trace_context::TRACEPARENT),
        }
    }
}

/// The span an event is applied in: it names the order (so every log line
/// about it carries the orderId) and continues the trace the event came with,
/// so the events it causes carry the same trace id.
fn event_span(event: &Envelope, traceparent: Option<&str>) -> tracing::Span {
    let span = tracing::info_span!(
        "event",
        order_id = %event.order_id,
        event_type = event.event_type().as_str(),
        event_id = %event.event_id,
        trace_id = tracing::field::Empty,
    );
    trace_context::continue_trace(&span, traceparent);
    span
}

/// The unit of work the consumer loop commits for one event, in one
/// transaction under the order's lock: the inbox row, the handler's effect,
/// and the caused events in the outbox. Returns the caused events, or `None`
/// for a duplicate (nothing was written). Runs in the caller's event span.
async fn apply<H: EventHandler>(
    pool: &PgPool,
    handler: &H,
    outbox: &Outbox,
    source: &Source<'_>,
    event: &Envelope,
) -> Result<Option<Vec<Envelope>>, HandlerError> {
    let mut applied =
        apply_in_one_transaction(pool, handler, outbox, &[(*source, event)], |_, _| {
            tracing::Span::current()
        })
        .await?;
    Ok(applied.pop().flatten())
}

/// What the consumer loop commits for several waiting messages, in one
/// transaction: the locks of all their orders first (in one order, so that
/// concurrent batches cannot deadlock on them), then for each event its inbox
/// row, the handler's effect and the caused events in the outbox (`None` for
/// a duplicate). All or nothing.
///
/// Public so that tools can run exactly what a service commits without a
/// broker (the benchmark's database-bound limit does).
pub async fn apply_batch<H: EventHandler>(
    pool: &PgPool,
    handler: &H,
    outbox: &Outbox,
    events: &[(Source<'_>, &Envelope)],
) -> Result<Vec<Option<Vec<Envelope>>>, HandlerError> {
    apply_in_one_transaction(pool, handler, outbox, events, |source, event| {
        event_span(event, source.traceparent)
    })
    .await
}

/// [`apply`] and [`apply_batch`]: the orders' locks, then every event's
/// inbox row in one statement, then each new event's effect in `span_of` it,
/// then all the caused events in the outbox in one statement, and the
/// commit. The round trips a batch costs are therefore its handlers' own
/// plus five (with BEGIN), however many events it holds.
async fn apply_in_one_transaction<H: EventHandler>(
    pool: &PgPool,
    handler: &H,
    outbox: &Outbox,
    events: &[(Source<'_>, &Envelope)],
    span_of: impl Fn(&Source<'_>, &Envelope) -> tracing::Span,
) -> Result<Vec<Option<Vec<Envelope>>>, HandlerError> {
    let mut tx = outbox.begin(pool).await?;
    let orders: Vec<&str> = events.iter().map(|(_, e)| e.order_id.as_str()).collect();
    crate::db::lock_keys(&mut tx, &orders).await?;
    let fresh = record_in_inbox(&mut tx, events).await?;
    // Per event: what it caused and the trace context that goes with it.
    let mut applied: Vec<Option<(Vec<Envelope>, Option<String>)>> =
        Vec::with_capacity(events.len());
    for ((source, event), fresh) in events.iter().zip(fresh) {
        if !fresh {
            applied.push(None);
            continue;
        }
        let span = span_of(source, event);
        let caused = handler
            .handle(&mut tx, event)
            .instrument(span.clone())
            .await?;
        let traceparent = span.in_scope(trace_context::current_traceparent);
        applied.push(Some((caused, traceparent)));
    }
    let outgoing: Vec<(&Envelope, Option<&str>)> = applied
        .iter()
        .flatten()
        .flat_map(|(caused, traceparent)| {
            caused
                .iter()
                .map(move |event| (event, traceparent.as_deref()))
        })
        .collect();
    outbox.enqueue_all(&mut tx, &outgoing).await?;
    outbox.commit(tx).await?;
    Ok(applied
        .into_iter()
        .map(|applied| applied.map(|(caused, _)| caused))
        .collect())
}

/// Records `events` in the inbox in one statement; for each, whether it is
/// new. One seen before, or a second time in `events`, is not.
async fn record_in_inbox(
    tx: &mut OutboxTx,
    events: &[(Source<'_>, &Envelope)],
) -> Result<Vec<bool>, sqlx::Error> {
    let ids: Vec<uuid::Uuid> = events.iter().map(|(_, event)| event.event_id).collect();
    let types: Vec<&str> = events
        .iter()
        .map(|(_, event)| event.event_type().as_str())
        .collect();
    let orders: Vec<&str> = events
        .iter()
        .map(|(_, event)| event.order_id.as_str())
        .collect();
    let topics: Vec<&str> = events.iter().map(|(source, _)| source.topic).collect();
    let partitions: Vec<i32> = events.iter().map(|(source, _)| source.partition).collect();
    let offsets: Vec<i64> = events.iter().map(|(source, _)| source.offset).collect();
    let recorded: Vec<uuid::Uuid> = sqlx::query_scalar(
        "INSERT INTO inbox (event_id, event_type, order_id, topic, kafka_partition, kafka_offset)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int[], $6::bigint[])
         ON CONFLICT (event_id) DO NOTHING
         RETURNING event_id",
    )
    .bind(&ids)
    .bind(types)
    .bind(orders)
    .bind(topics)
    .bind(partitions)
    .bind(offsets)
    .fetch_all(&mut **tx)
    .await?;
    let mut recorded: std::collections::HashSet<uuid::Uuid> = recorded.into_iter().collect();
    Ok(ids.iter().map(|id| recorded.remove(id)).collect())
}

#[cfg(test)]
mod tests;
