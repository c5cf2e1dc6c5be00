//! The order's state machine: which status an order moves to when the saga
//! reports a fact. Pure, no I/O.
//!
//! ```text
//!             InventoryReserved(RESERVED)          PaymentProcessed(APPROVED)
//!   PENDING ─────────────────────────────▶ RESERVED ─────────────────────────▶ CONFIRMED
//!      │                                       │
//!      │ InventoryReserved(REJECTED)           │ PaymentProcessed(DECLINED)
//!      ▼                                       ▼
//!   REJECTED                              PAYMENT_FAILED
//! ```
//!
//! The two result topics are independent, so order-service may hear of the
//! payment before the reservation. A payment outcome implies the reservation
//! succeeded, so it is accepted from PENDING too, and a reservation arriving
//! after the payment changes nothing. The final status is therefore the same
//! whatever the arrival order.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Pending,
    Reserved,
    Confirmed,
    Rejected,
    PaymentFailed,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 5] = [
        OrderStatus::Pending,
        OrderStatus::Reserved,
        OrderStatus::Confirmed,
        OrderStatus::Rejected,
        OrderStatus::PaymentFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "PENDING",
            OrderStatus::Reserved => "RESERVED",
            OrderStatus::Confirmed => "CONFIRMED",
            OrderStatus::Rejected => "REJECTED",
            OrderStatus::PaymentFailed => "PAYMENT_FAILED",
        }
    }

    /// No event can move an order out of a terminal status.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            OrderStatus::Confirmed | OrderStatus::Rejected | OrderStatus::PaymentFailed
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
            // Late or repeated news of something already reflected.
            (Reserved | Confirmed | PaymentFailed, StockReserved)
            | (Rejected, StockRejected)
            | (Confirmed, PaymentApproved)
            | (PaymentFailed, PaymentDeclined) => return Ok(Transition::Unchanged),
            (from, fact) => return Err(InvalidTransition { from, fact }),
        };
        Ok(Transition::Moved(next))
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OrderStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OrderStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| {
                format!("status must be one of PENDING, RESERVED, CONFIRMED, REJECTED, PAYMENT_FAILED, got {s:?}")
            })
    }
}

/// What the saga reports about an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fact {
    StockReserved,
    StockRejected,
    PaymentApproved,
    PaymentDeclined,
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
        for status in OrderStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
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
    fn status_names_round_trip() {
        for status in OrderStatus::ALL {
            assert_eq!(status.as_str().parse::<OrderStatus>(), Ok(status));
        }
        assert!("SHIPPED".parse::<OrderStatus>().is_err());
    }
}
