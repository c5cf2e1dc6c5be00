//! The order's state machine: which status an order moves to when the saga
//! reports a fact, and when a customer may cancel. Pure, no I/O.
//!
//! ```text
//!             InventoryReserved(RESERVED)          PaymentProcessed(APPROVED)
//!   PENDING ─────────────────────────────▶ RESERVED ─────────────────────────▶ CONFIRMED
//!      │  │                                 │    │                                │
//!      │  │ InventoryReserved(REJECTED)     │    │ PaymentProcessed(DECLINED)     │ OrderCancelled
//!      │  ▼                                 │    ▼                                │ (customer, within the
//!      │ REJECTED                           │  PAYMENT_FAILED                     │  window; or a system
//!      │                                    │                                     │  cancellation)
//!      │ OrderCancelled                     │ OrderCancelled                      ▼
//!      └──────────────────────────────────▶ CANCELLED ◀──────────────────────────┘
//!        (customer, saga deadline: TIMEOUT, reservation expiry)
//! ```
//!
//! The result topics are independent, so order-service may hear of the
//! payment before the reservation. A payment outcome implies the reservation
//! succeeded, so it is accepted from PENDING too, and a reservation arriving
//! after the payment changes nothing. A cancellation wins over any news that
//! arrives after it (the other services undo or refuse that work). The final
//! status is therefore the same whatever the arrival order.

use std::time::Duration;

use serde::Serialize;
use shared_events::{CancelInitiator, Event, Payment, Reservation};
use strum::VariantArray;
use thiserror::Error;

// An order's status. Its names (JSON, SQL, query parameters, metrics labels)
// come from the derives, all SCREAMING_SNAKE_CASE, so they cannot drift apart
// (no `///` here: it would become the OpenAPI schema's description).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    utoipa::ToSchema,
    sqlx::Type,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
#[sqlx(type_name = "text", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Pending,
    Reserved,
    Confirmed,
    Rejected,
    PaymentFailed,
    Cancelled,
}

impl OrderStatus {
    /// The status's name, e.g. `PAYMENT_FAILED`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Parses a status named by a client; the error lists the valid names.
    pub fn parse(raw: &str) -> Result<OrderStatus, String> {
        raw.parse().map_err(|_| {
            let names: Vec<&str> = OrderStatus::VARIANTS
                .iter()
                .map(|status| status.as_str())
                .collect();
            format!("status must be one of {}, got {raw:?}", names.join(", "))
        })
    }

    /// The saga is over: nothing but a cancellation (of a CONFIRMED order)
    /// moves an order out of a terminal status.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            OrderStatus::Confirmed
                | OrderStatus::Rejected
                | OrderStatus::PaymentFailed
                | OrderStatus::Cancelled
        )
    }

    /// The status after `fact`, or why `fact` cannot happen to an order in this status.
    pub fn apply(self, fact: Fact) -> Result<Transition, InvalidTransition> {
        use Fact::*;
        use OrderStatus::*;
        let next = match (self, fact) {
            (Pending, StockReserved) => Reserved,
            (Pending, StockRejected) => Rejected,
            (Pending | Reserved, PaymentApproved) => Confirmed,
            (Pending | Reserved, PaymentDeclined) => PaymentFailed,
            // A cancellation undoes a confirmed order too (refund, restock).
            (Pending | Reserved | Confirmed, SagaCancelled) => Cancelled,
            // Late or repeated news of something already reflected.
            (Reserved | Confirmed | PaymentFailed, StockReserved)
            | (Rejected, StockRejected)
            | (Confirmed, PaymentApproved)
            | (PaymentFailed, PaymentDeclined)
            // A failed saga has nothing left to cancel.
            | (Rejected | PaymentFailed, SagaCancelled)
            // After a cancellation, news of work the other services undo or refuse.
            | (Cancelled, _) => return Ok(Transition::Unchanged),
            (from, fact) => return Err(InvalidTransition { from, fact }),
        };
        Ok(Transition::Moved(next))
    }
}

/// What the saga reports about an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fact {
    StockReserved,
    StockRejected,
    PaymentApproved,
    PaymentDeclined,
    /// The saga was called off (customer, deadline or reservation expiry).
    SagaCancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Moved(OrderStatus),
    /// The fact is already reflected (late or repeated news).
    Unchanged,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("an order in status {from} cannot take {fact:?}")]
pub struct InvalidTransition {
    pub from: OrderStatus,
    pub fact: Fact,
}

/// What a customer's cancellation request does to an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelDecision {
    /// Cancel it now.
    Cancel,
    /// The customer already cancelled it: answer as the first time, do nothing.
    AlreadyCancelled,
}

/// Why a customer cannot cancel an order.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum CancelRefused {
    #[error("order is already {0}; there is nothing to cancel")]
    Final(OrderStatus),
    #[error("order was already cancelled ({reason})")]
    CancelledBySystem { reason: String },
    #[error("a confirmed order can only be cancelled within {window_secs} s of its confirmation")]
    WindowClosed { window_secs: f64 },
}

/// The order as far as a cancellation request is concerned.
#[derive(Debug, Clone)]
pub struct CancelTarget {
    pub status: OrderStatus,
    /// Who cancelled it, for a CANCELLED order.
    pub cancelled_by: Option<CancelInitiator>,
    pub reason: Option<String>,
    /// Time since the order reached its terminal status, if it has.
    pub since_completed: Option<Duration>,
}

/// The cancellation rule: an order in progress may always be cancelled, a
/// CONFIRMED one within `window` of confirmation (`None`: always), and
/// failed ones never. Repeating a customer's cancellation changes nothing.
pub fn customer_cancel(
    target: &CancelTarget,
    window: Option<Duration>,
) -> Result<CancelDecision, CancelRefused> {
    match target.status {
        OrderStatus::Pending | OrderStatus::Reserved => Ok(CancelDecision::Cancel),
        OrderStatus::Confirmed => match window {
            Some(window) if target.since_completed.unwrap_or_default() > window => {
                Err(CancelRefused::WindowClosed {
                    window_secs: window.as_secs_f64(),
                })
            }
            _ => Ok(CancelDecision::Cancel),
        },
        OrderStatus::Cancelled if target.cancelled_by == Some(CancelInitiator::Customer) => {
            Ok(CancelDecision::AlreadyCancelled)
        }
        OrderStatus::Cancelled => Err(CancelRefused::CancelledBySystem {
            reason: target.reason.clone().unwrap_or_default(),
        }),
        status @ (OrderStatus::Rejected | OrderStatus::PaymentFailed) => {
            Err(CancelRefused::Final(status))
        }
    }
}

/// How an event reads in an order's timeline: its outcome (e.g. `RESERVED`,
/// `DECLINED`, `REFUNDED`) and a detail for people.
pub fn summarise(event: &Event) -> (Option<String>, Option<String>) {
    match event {
        Event::OrderCreated(created) => (
            Some("PLACED".into()),
            Some(format!(
                "{} line(s) for {}",
                created.items.len(),
                created.user_id
            )),
        ),
        Event::InventoryReserved(reserved) => match &reserved.outcome {
            Reservation::Reserved { total_cents, .. } => (
                Some("RESERVED".into()),
                Some(format!("total {total_cents}")),
            ),
            Reservation::Rejected { reason, detail } => (
                Some(format!("REJECTED: {}", reason.as_str())),
                Some(detail.clone()),
            ),
        },
        Event::PaymentProcessed(payment) => match &payment.outcome {
            Payment::Approved => (
                Some("APPROVED".into()),
                Some(format!("charged {}", payment.amount_cents)),
            ),
            Payment::Declined { reason } => (
                Some(format!("DECLINED: {}", reason.as_str())),
                Some(format!("could not charge {}", payment.amount_cents)),
            ),
        },
        Event::PaymentRefunded(refund) => (
            Some("REFUNDED".into()),
            Some(format!("refunded {}", refund.amount_cents)),
        ),
        Event::OrderCancelled(cancelled) => (
            Some(format!("CANCELLED: {}", cancelled.initiator.as_str())),
            Some(cancelled.reason.to_string()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::Fact::*;
    use super::OrderStatus::*;
    use super::*;

    fn final_status(facts: &[Fact]) -> OrderStatus {
        facts
            .iter()
            .fold(Pending, |status, fact| match status.apply(*fact).unwrap() {
                Transition::Moved(next) => next,
                Transition::Unchanged => status,
            })
    }

    #[test]
    fn happy_path_reaches_confirmed() {
        assert_eq!(final_status(&[StockReserved, PaymentApproved]), Confirmed);
    }

    #[test]
    fn payment_news_before_reservation_news_ends_the_same() {
        assert_eq!(final_status(&[PaymentApproved, StockReserved]), Confirmed);
        assert_eq!(
            final_status(&[PaymentDeclined, StockReserved]),
            PaymentFailed
        );
        assert_eq!(
            final_status(&[StockReserved, PaymentDeclined]),
            PaymentFailed
        );
    }

    #[test]
    fn rejection_is_final() {
        assert_eq!(final_status(&[StockRejected]), Rejected);
        assert!(Rejected.apply(PaymentApproved).is_err());
        assert!(Rejected.apply(StockReserved).is_err());
    }

    #[test]
    fn terminal_statuses_cannot_flip() {
        assert!(Confirmed.apply(PaymentDeclined).is_err());
        assert!(PaymentFailed.apply(PaymentApproved).is_err());
        assert!(Reserved.apply(StockRejected).is_err());
        for status in OrderStatus::VARIANTS
            .iter()
            .copied()
            .filter(|s| s.is_terminal())
        {
            for fact in [
                StockReserved,
                StockRejected,
                PaymentApproved,
                PaymentDeclined,
            ] {
                assert_ne!(status.apply(fact).ok(), Some(Transition::Moved(Pending)),);
                if let Ok(Transition::Moved(next)) = status.apply(fact) {
                    panic!("{status} moved to {next} on {fact:?}");
                }
            }
        }
    }

    #[test]
    fn repeated_news_changes_nothing() {
        assert_eq!(Reserved.apply(StockReserved), Ok(Transition::Unchanged));
        assert_eq!(Confirmed.apply(PaymentApproved), Ok(Transition::Unchanged));
    }

    #[test]
    fn a_cancellation_wins_whenever_it_arrives() {
        for before in [
            &[][..],
            &[StockReserved],
            &[StockReserved, PaymentApproved],
            &[PaymentApproved],
        ] {
            let mut facts = before.to_vec();
            facts.push(SagaCancelled);
            facts.extend([
                StockReserved,
                PaymentApproved,
                PaymentDeclined,
                SagaCancelled,
            ]);
            assert_eq!(final_status(&facts), Cancelled, "{facts:?}");
        }
    }

    #[test]
    fn a_failed_saga_stays_failed_when_cancelled() {
        assert_eq!(final_status(&[StockRejected, SagaCancelled]), Rejected);
        assert_eq!(
            final_status(&[PaymentDeclined, SagaCancelled]),
            PaymentFailed
        );
    }

    fn target(status: OrderStatus) -> CancelTarget {
        CancelTarget {
            status,
            cancelled_by: None,
            reason: None,
            since_completed: None,
        }
    }

    #[test]
    fn customers_cancel_orders_in_progress_and_confirmed_ones_within_the_window() {
        assert_eq!(
            customer_cancel(&target(Pending), Some(Duration::from_secs(0))),
            Ok(CancelDecision::Cancel)
        );
        assert_eq!(
            customer_cancel(&target(Reserved), Some(Duration::from_secs(0))),
            Ok(CancelDecision::Cancel)
        );
        let confirmed = CancelTarget {
            since_completed: Some(Duration::from_secs(61)),
            ..target(Confirmed)
        };
        assert_eq!(
            customer_cancel(&confirmed, None),
            Ok(CancelDecision::Cancel)
        );
        assert_eq!(
            customer_cancel(&confirmed, Some(Duration::from_secs(61))),
            Ok(CancelDecision::Cancel)
        );
        assert_eq!(
            customer_cancel(&confirmed, Some(Duration::from_secs(60))),
            Err(CancelRefused::WindowClosed { window_secs: 60.0 })
        );
    }

    #[test]
    fn failed_orders_cannot_be_cancelled_and_a_repeated_cancel_is_harmless() {
        assert_eq!(
            customer_cancel(&target(Rejected), None),
            Err(CancelRefused::Final(Rejected))
        );
        assert_eq!(
            customer_cancel(&target(PaymentFailed), None),
            Err(CancelRefused::Final(PaymentFailed))
        );
        let by_customer = CancelTarget {
            cancelled_by: Some(CancelInitiator::Customer),
            ..target(Cancelled)
        };
        assert_eq!(
            customer_cancel(&by_customer, None),
            Ok(CancelDecision::AlreadyCancelled)
        );
        let timed_out = CancelTarget {
            cancelled_by: Some(CancelInitiator::SagaDeadline),
            reason: Some("TIMEOUT".into()),
            ..target(Cancelled)
        };
        assert!(matches!(
            customer_cancel(&timed_out, None),
            Err(CancelRefused::CancelledBySystem { .. })
        ));
    }

    #[test]
    fn status_names_round_trip() {
        for &status in OrderStatus::VARIANTS {
            assert_eq!(OrderStatus::parse(status.as_str()), Ok(status));
            assert_eq!(status.to_string(), status.as_str());
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::Value::from(status.as_str())
            );
        }
        assert_eq!(OrderStatus::PaymentFailed.as_str(), "PAYMENT_FAILED");
        assert_eq!(
            OrderStatus::parse("SHIPPED"),
            Err("status must be one of PENDING, RESERVED, CONFIRMED, REJECTED, PAYMENT_FAILED, CANCELLED, got \"SHIPPED\"".to_owned())
        );
    }
}
