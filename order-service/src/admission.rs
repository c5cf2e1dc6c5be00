//! Admission control: `POST /api/orders` refuses a new order while too many
//! sagas are in progress, instead of accepting work the system cannot finish
//! in time and letting it queue unseen.
//!
//! "In progress" is the number of PENDING and RESERVED orders in the
//! database, so every order-service instance sharing it sees the same
//! backlog. It is counted by a sampler every `ORDER_ADMISSION_SAMPLE_MS`
//! (an index-only count over the `orders_in_progress` partial index), never
//! per request; a request reads the last sample plus the orders this
//! instance admitted since, so a burst between two samples cannot overshoot
//! the bound by more than the other instances admit meanwhile. A refused order is a 503
//! `/problems/overloaded` with `Retry-After`, stores nothing, and counts in
//! `orders_refused_total{reason="in_flight"}`; `orders_in_flight` shows the
//! sample.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use service_kit::Problem;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// How long a refused client should wait before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Orders in progress. Written out, not bound, so the partial index
/// `orders_in_progress` serves it (see `db::OVERDUE`); a test holds the
/// statuses to `OrderStatus`.
pub(crate) const IN_PROGRESS: &str =
    "SELECT count(*) FROM orders WHERE status IN ('PENDING', 'RESERVED')";

/// The bound and the last sample of the backlog; cheap to clone.
#[derive(Debug, Clone)]
pub struct Admission {
    /// Most orders in progress before new ones are refused; 0: no bound.
    limit: u64,
    in_flight: Arc<AtomicU64>,
    /// Orders this instance admitted since the last sample.
    admitted_since: Arc<AtomicU64>,
}

impl Admission {
    /// `limit` 0 admits everything.
    pub fn new(limit: u64) -> Admission {
        Admission {
            limit,
            in_flight: Arc::default(),
            admitted_since: Arc::default(),
        }
    }

    /// Whether a new order may be placed now.
    pub fn check(&self) -> Result<(), Problem> {
        if self.limit == 0 {
            return Ok(());
        }
        let in_flight = self
            .in_flight
            .load(Ordering::Relaxed)
            .saturating_add(self.admitted_since.load(Ordering::Relaxed));
        if in_flight < self.limit {
            self.admitted_since.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        metrics::counter!("orders_refused_total", "reason" => "in_flight").increment(1);
        Err(Problem {
            retry_after: Some(RETRY_AFTER),
            ..Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "/problems/overloaded",
                "Overloaded",
                format!(
                    "{in_flight} orders are in progress, the most this system takes on at once \
                     is {}; the order was not stored, retry later",
                    self.limit
                ),
            )
        })
    }

    /// Counts the orders in progress once and keeps the figure.
    pub async fn refresh(&self, pool: &PgPool) -> Result<u64, sqlx::Error> {
        let count: i64 = sqlx::query_scalar(IN_PROGRESS).fetch_one(pool).await?;
        let count = u64::try_from(count).unwrap_or_default();
        self.sampled(count);
        metrics::gauge!("orders_in_flight").set(count as f64);
        Ok(count)
    }

    /// Keeps a new count, which includes what this instance admitted before
    /// it was taken (an order admitted while it ran is left out until the
    /// next one).
    fn sampled(&self, count: u64) {
        self.in_flight.store(count, Ordering::Relaxed);
        self.admitted_since.store(0, Ordering::Relaxed);
    }

    /// Samples every `every` until `stop`. A failed count keeps the last
    /// figure (the database being down is for `/health` to say) and is
    /// logged once per outage.
    pub async fn run(
        self,
        pool: PgPool,
        every: Duration,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        if self.limit == 0 {
            // Nothing to count; but a worker that ends by itself would stop
            // the service, so this one waits for shutdown like the others.
            stop.cancelled().await;
            return Ok(());
        }
        let mut failing = false;
        loop {
            match self.refresh(&pool).await {
                Ok(_) => failing = false,
                Err(err) if !failing => {
                    failing = true;
                    tracing::warn!(error = %err, "cannot count the orders in progress; admission keeps its last count");
                }
                Err(_) => {}
            }
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep(every) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::OrderStatus;

    #[test]
    fn the_count_names_the_in_progress_statuses() {
        let statuses = format!("('{}', '{}')", OrderStatus::Pending, OrderStatus::Reserved);
        assert!(IN_PROGRESS.contains(&statuses), "{IN_PROGRESS}");
    }

    #[test]
    fn refuses_at_the_bound_and_admits_below_it() {
        let admission = Admission::new(2);
        admission.sampled(1);
        assert!(admission.check().is_ok());
        admission.sampled(2);
        let refused = admission.check().unwrap_err();
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.kind, "/problems/overloaded");
        assert_eq!(refused.retry_after, Some(RETRY_AFTER));
        admission.sampled(1);
        assert!(admission.check().is_ok());
    }

    #[test]
    fn orders_admitted_since_the_last_sample_count_towards_the_bound() {
        let admission = Admission::new(3);
        admission.sampled(1);
        assert!(admission.check().is_ok());
        assert!(admission.check().is_ok());
        assert!(
            admission.check().is_err(),
            "1 counted and 2 admitted since: the bound is reached before the next sample"
        );
        admission.sampled(1);
        assert!(admission.check().is_ok(), "a new count starts again");
    }

    #[test]
    fn no_bound_admits_everything() {
        let admission = Admission::new(0);
        admission.sampled(u64::MAX);
        assert!(admission.check().is_ok());
    }
}
