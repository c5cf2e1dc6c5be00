//! Admission control: `POST /api/orders` refuses a new order while the saga
//! backlog is larger or older than the system can finish in time, instead of
//! accepting work and letting it queue unseen.
//!
//! The backlog is the PENDING and RESERVED orders in the database, so every
//! order-service instance sharing it sees the same one. A sampler reads it
//! every `ORDER_ADMISSION_SAMPLE_MS` over the `orders_in_progress` partial
//! index, never per request, in one statement: how many there are, and how
//! long the median one has waited. Two bounds apply:
//!
//! - **count** (`ORDER_MAX_IN_FLIGHT`): a request reads the last count plus
//!   the orders this instance admitted since, so a burst between two samples
//!   cannot overshoot by more than the other instances admit meanwhile;
//! - **age** (`ORDER_MAX_IN_PROGRESS_AGE_MS`, off by default): the median
//!   order in progress has waited longer than that. It adapts to the machine: whatever the
//!   throughput, an accepted order waits about twice the bound. The median,
//!   not the oldest, and only once [`AGE_BOUND_MIN_IN_PROGRESS`] orders are
//!   in progress, so a few stuck orders (waiting for their deadline) do not
//!   close admission.
//!
//! A refused order is a 503 `/problems/overloaded` with `Retry-After`,
//! stores nothing, and counts in `orders_refused_total{reason}` (`in_flight`
//! or `in_progress_age`); `orders_in_flight` and
//! `orders_in_progress_median_age_seconds` show the last sample.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use service_kit::Problem;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// How long a refused client should wait before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Below this many orders in progress the age bound does not apply: so few
/// cannot be an overload, whatever their age, and a handful stuck behind a
/// failing dependency must not refuse the orders that could go through.
pub const AGE_BOUND_MIN_IN_PROGRESS: u64 = 10;

/// The backlog: how many orders are in progress, and the age in
/// milliseconds of the median one (by `created_at`; 0 when there is none).
/// Written out, not bound, so the partial index `orders_in_progress` serves
/// both scans (see `db::OVERDUE`); a test holds the statuses to
/// `OrderStatus`.
pub(crate) const BACKLOG: &str = "WITH backlog AS (
         SELECT count(*) AS orders FROM orders WHERE status IN ('PENDING', 'RESERVED')
     )
     SELECT orders,
            coalesce((SELECT (extract(epoch FROM now() - created_at) * 1000)::bigint
                        FROM orders WHERE status IN ('PENDING', 'RESERVED')
                       ORDER BY created_at
                      OFFSET (SELECT orders / 2 FROM backlog) LIMIT 1), 0)
       FROM backlog";

/// One reading of the backlog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Orders in progress.
    pub in_flight: u64,
    /// How long the median order in progress has waited.
    pub median_age: Duration,
}

/// The bounds and the last sample of the backlog; cheap to clone.
#[derive(Debug, Clone)]
pub struct Admission {
    /// Most orders in progress before new ones are refused; 0: no bound.
    max_in_flight: u64,
    /// Longest the median order in progress may have waited; zero: no bound.
    max_age: Duration,
    in_flight: Arc<AtomicU64>,
    /// The last sample's median age, in milliseconds.
    median_age_ms: Arc<AtomicU64>,
    /// Orders this instance admitted since the last sample.
    admitted_since: Arc<AtomicU64>,
}

impl Admission {
    /// `max_in_flight` 0 and `max_age` zero turn their bound off.
    pub fn new(max_in_flight: u64, max_age: Duration) -> Admission {
        Admission {
            max_in_flight,
            max_age,
            in_flight: Arc::default(),
            median_age_ms: Arc::default(),
            admitted_since: Arc::default(),
        }
    }

    fn is_bounded(&self) -> bool {
        self.max_in_flight > 0 || !self.max_age.is_zero()
    }

    /// Whether a new order may be placed now.
    pub fn check(&self) -> Result<(), Problem> {
        if !self.is_bounded() {
            return Ok(());
        }
        let in_flight = self
            .in_flight
            .load(Ordering::Relaxed)
            .saturating_add(self.admitted_since.load(Ordering::Relaxed));
        let median_age = Duration::from_millis(self.median_age_ms.load(Ordering::Relaxed));
        let (reason, detail) = if self.max_in_flight > 0 && in_flight >= self.max_in_flight {
            (
                "in_flight",
                format!(
                    "{in_flight} orders are in progress, the most this system takes on at \
                     once is {}",
                    self.max_in_flight
                ),
            )
        } else if !self.max_age.is_zero()
            && in_flight >= AGE_BOUND_MIN_IN_PROGRESS
            && median_age > self.max_age
        {
            (
                "in_progress_age",
                format!(
                    "the median of the {in_flight} orders in progress has waited {} ms, \
                     longer than the {} ms this system lets orders wait",
                    median_age.as_millis(),
                    self.max_age.as_millis()
                ),
            )
        } else {
            self.admitted_since.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        metrics::counter!("orders_refused_total", "reason" => reason).increment(1);
        Err(Problem {
            retry_after: Some(RETRY_AFTER),
            ..Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "/problems/overloaded",
                "Overloaded",
                format!("{detail}; the order was not stored, retry later"),
            )
        })
    }

    /// Reads the backlog once and keeps the figures.
    pub async fn refresh(&self, pool: &PgPool) -> Result<Backlog, sqlx::Error> {
        let (orders, median_age_ms): (i64, i64) = sqlx::query_as(BACKLOG).fetch_one(pool).await?;
        let backlog = Backlog {
            in_flight: u64::try_from(orders).unwrap_or_default(),
            // A clock step backwards can make the newest orders "younger than now".
            median_age: Duration::from_millis(u64::try_from(median_age_ms).unwrap_or_default()),
        };
        self.sampled(backlog);
        metrics::gauge!("orders_in_flight").set(backlog.in_flight as f64);
        metrics::gauge!("orders_in_progress_median_age_seconds")
            .set(backlog.median_age.as_secs_f64());
        Ok(backlog)
    }

    /// Keeps a new sample, whose count includes what this instance admitted
    /// before it was taken (an order admitted while it ran is left out until
    /// the next one).
    fn sampled(&self, backlog: Backlog) {
        self.in_flight.store(backlog.in_flight, Ordering::Relaxed);
        let age_ms = u64::try_from(backlog.median_age.as_millis()).unwrap_or(u64::MAX);
        self.median_age_ms.store(age_ms, Ordering::Relaxed);
        self.admitted_since.store(0, Ordering::Relaxed);
    }

    /// Samples every `every` until `stop`. A failed reading keeps the last
    /// figures (the database being down is for `/health` to say) and is
    /// logged once per outage.
    pub async fn run(
        self,
        pool: PgPool,
        every: Duration,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        if !self.is_bounded() {
            // Nothing to read; but a worker that ends by itself would stop
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
                    tracing::warn!(error = %err, "cannot read the orders in progress; admission keeps its last sample");
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

    const NO_AGE_BOUND: Duration = Duration::ZERO;

    fn backlog(in_flight: u64, median_age_ms: u64) -> Backlog {
        Backlog {
            in_flight,
            median_age: Duration::from_millis(median_age_ms),
        }
    }

    #[test]
    fn the_reading_names_the_in_progress_statuses() {
        let statuses = format!("('{}', '{}')", OrderStatus::Pending, OrderStatus::Reserved);
        assert_eq!(BACKLOG.matches(&statuses).count(), 2, "{BACKLOG}");
    }

    #[test]
    fn refuses_at_the_count_bound_and_admits_below_it() {
        let admission = Admission::new(2, NO_AGE_BOUND);
        admission.sampled(backlog(1, 0));
        assert!(admission.check().is_ok());
        admission.sampled(backlog(2, 0));
        let refused = admission.check().unwrap_err();
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.kind, "/problems/overloaded");
        assert_eq!(refused.retry_after, Some(RETRY_AFTER));
        admission.sampled(backlog(1, 0));
        assert!(admission.check().is_ok());
    }

    #[test]
    fn orders_admitted_since_the_last_sample_count_towards_the_bound() {
        let admission = Admission::new(3, NO_AGE_BOUND);
        admission.sampled(backlog(1, 0));
        assert!(admission.check().is_ok());
        assert!(admission.check().is_ok());
        assert!(
            admission.check().is_err(),
            "1 counted and 2 admitted since: the bound is reached before the next sample"
        );
        admission.sampled(backlog(1, 0));
        assert!(admission.check().is_ok(), "a new count starts again");
    }

    #[test]
    fn refuses_while_the_median_order_in_progress_is_older_than_the_age_bound() {
        let admission = Admission::new(0, Duration::from_millis(300));
        admission.sampled(backlog(50, 300));
        assert!(admission.check().is_ok(), "at the bound is not past it");
        admission.sampled(backlog(50, 301));
        let refused = admission.check().unwrap_err();
        assert_eq!(refused.kind, "/problems/overloaded");
        assert!(refused.detail.contains("301 ms"), "{}", refused.detail);
        admission.sampled(backlog(50, 120));
        assert!(admission.check().is_ok(), "a younger backlog admits again");
    }

    #[test]
    fn a_few_stuck_orders_do_not_close_admission_however_old() {
        let admission = Admission::new(0, Duration::from_millis(300));
        admission.sampled(backlog(AGE_BOUND_MIN_IN_PROGRESS - 1, 60_000));
        assert!(admission.check().is_ok());
        assert!(
            admission.check().is_err(),
            "with the one just admitted, the backlog reaches the size the age bound needs"
        );
    }

    #[test]
    fn no_bound_admits_everything() {
        let admission = Admission::new(0, NO_AGE_BOUND);
        admission.sampled(backlog(u64::MAX, u64::MAX));
        assert!(admission.check().is_ok());
    }
}
