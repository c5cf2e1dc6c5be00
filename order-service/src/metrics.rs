//! Order metrics, recorded where an order's status changes. Rendered with
//! the event counters at `GET /metrics` (see `service_kit::metrics`).

use chrono::{DateTime, Utc};

use crate::domain::OrderStatus;

/// Records that an order created at `created_at` moved from `from` to `to`:
/// `order_status_transitions_total{from,to}` and, when `to` is terminal, the
/// saga's length in `saga_duration_seconds{status}`.
///
/// Call it wherever a status is written, next to the write; the transaction
/// may still fail to commit, and its retry then counts the change again.
pub fn status_changed(from: OrderStatus, to: OrderStatus, created_at: DateTime<Utc>) {
    metrics::counter!(
        "order_status_transitions_total",
        "from" => from.as_str(),
        "to" => to.as_str()
    )
    .increment(1);
    if to.is_terminal() {
        let took = (Utc::now() - created_at).to_std().unwrap_or_default();
        metrics::histogram!("saga_duration_seconds", "status" => to.as_str())
            .record(took.as_secs_f64());
    }
}
