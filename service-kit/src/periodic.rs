//! Background jobs on a timer: order-service's saga deadline and
//! inventory-service's reservation expiry.
//!
//! A job is one pass over whatever is due ("cancel every order past its
//! deadline"). It must be safe to run on several instances at once (claim rows
//! with `FOR UPDATE SKIP LOCKED`) and safe to repeat after a failure, because a
//! failed pass is simply tried again at the next tick: a database outage delays
//! the job, it never stops the service. Each batch is one [`OutboxTx`]
//! committed through the service's [`Outbox`], so the events a pass writes
//! wake the relay without the job having to remember it.

use std::future::Future;
use std::time::Duration;

use sqlx::PgPool;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::outbox::{Outbox, OutboxTx};

/// Runs `job` every `interval` until `stop` is cancelled. `job` returns how
/// many items it handled, for the log.
pub async fn run_every<F, Fut>(
    name: &'static str,
    interval: Duration,
    stop: CancellationToken,
    mut job: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<u64>>,
{
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            // A stop wins over a tick that is due at the same moment, so no
            // pass starts after the stop was asked for.
            biased;
            _ = stop.cancelled() => return Ok(()),
            _ = ticker.tick() => {}
        }
        match job().await {
            Ok(0) => {}
            Ok(handled) => tracing::info!(job = name, handled, "periodic job done"),
            Err(err) => tracing::warn!(
                job = name,
                error = format!("{err:#}"),
                "periodic job failed; trying again at the next tick"
            ),
        }
    }
}

/// A periodic job that works through what is due in batches, one transaction
/// per batch.
pub trait BatchJob: Send + Sync + 'static {
    /// Handles at most `batch` due items inside `tx` and returns how many it
    /// handled; fewer than `batch` means nothing more is due. Events go into
    /// `tx` with [`Outbox::enqueue`].
    fn pass(
        &self,
        tx: &mut OutboxTx,
        batch: i64,
    ) -> impl Future<Output = anyhow::Result<usize>> + Send;
}

/// Runs `job` one batch per transaction until a pass handles fewer than
/// `batch`. Each batch commits on its own, so a failure loses at most the batch
/// in hand, which the next run picks up again. A batch that wrote events wakes
/// the outbox relay after its commit. Returns how many were handled.
pub async fn in_batches<J: BatchJob>(
    pool: &PgPool,
    outbox: &Outbox,
    batch: i64,
    job: &J,
) -> anyhow::Result<u64> {
    let mut handled = 0;
    loop {
        let mut tx = outbox.begin(pool).await?;
        let done = job.pass(&mut tx, batch).await?;
        outbox.commit(tx).await?;
        handled += done as u64;
        if (done as i64) < batch {
            return Ok(handled);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn a_failing_pass_is_retried_at_the_next_tick() {
        let stop = CancellationToken::new();
        let passes = Arc::new(AtomicU32::new(0));
        let counted = passes.clone();
        let stopper = stop.clone();
        run_every("test", Duration::from_millis(1), stop, move || {
            let pass = counted.fetch_add(1, Ordering::SeqCst) + 1;
            if pass == 3 {
                stopper.cancel();
            }
            async move {
                match pass {
                    1 => anyhow::bail!("database down"),
                    _ => Ok(1),
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(
            passes.load(Ordering::SeqCst),
            3,
            "the failure did not end the job"
        );
    }
}
