//! The saga deadline: a periodic job that cancels orders still PENDING or
//! RESERVED `ORDER_SAGA_DEADLINE_SECS` after they were placed, through the
//! same command as a customer's cancellation ([`commands::cancel`]), so every
//! service undoes its part. Rows are claimed with `FOR UPDATE SKIP LOCKED`,
//! so several instances share the work.

use service_kit::outbox::{Outbox, OutboxTx};
use service_kit::periodic::BatchJob;
use shared_events::{CancelInitiator, CancelReason};

use crate::{commands, db};

/// Most overdue orders cancelled in one transaction.
pub const DEADLINE_BATCH: i64 = 100;

/// Cancels orders that did not finish in time.
pub struct SagaDeadline {
    /// Where the cancellations are announced.
    pub outbox: Outbox,
    /// How long after it was placed an unfinished order is cancelled.
    pub deadline: std::time::Duration,
}

impl BatchJob for SagaDeadline {
    async fn pass(&self, tx: &mut OutboxTx, batch: i64) -> anyhow::Result<usize> {
        let reason = CancelReason::timeout();
        let overdue = db::lock_overdue(tx, self.deadline, batch).await?;
        for (order_id, candidate) in &overdue {
            commands::cancel(
                tx,
                &self.outbox,
                order_id,
                candidate,
                CancelInitiator::SagaDeadline,
                &reason,
            )
            .await?;
            tracing::warn!(
                order_id = %order_id,
                from = %candidate.target.status,
                deadline_secs = self.deadline.as_secs(),
                "order timed out; cancelling it"
            );
        }
        Ok(overdue.len())
    }
}
