//! The charging rule, pure: a payment is approved when the customer's credit
//! covers the whole amount, and then the credit goes down by exactly that much.
//! A payment's status: `APPROVED` or `DECLINED` when charged, and `REFUNDED`
//! once an approved payment is given back after a cancellation.

use serde::Serialize;
use shared_events::{Cents, DeclineReason, Payment};

/// A payment's status: the `status` column of `payments` and the `status`
/// field of `GET /api/payments/{orderId}`. serde, strum and sqlx all spell it
/// SCREAMING_SNAKE_CASE (a test holds serde and strum together).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantArray,
    sqlx::Type,
    utoipa::ToSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
#[sqlx(type_name = "text", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentStatus {
    /// Charged: the amount left the customer's credit.
    Approved,
    /// Not charged: the credit did not cover the amount.
    Declined,
    /// Charged, then given back because the order was cancelled.
    Refunded,
}

impl PaymentStatus {
    /// The status a charge with this outcome is recorded with.
    pub fn charged(outcome: &Payment) -> PaymentStatus {
        match outcome {
            Payment::Approved => PaymentStatus::Approved,
            Payment::Declined { .. } => PaymentStatus::Declined,
        }
    }

    /// The status after a refund, or `None` when there is nothing to give back
    /// (declined, or refunded already).
    pub fn refund(self) -> Option<PaymentStatus> {
        match self {
            PaymentStatus::Approved => Some(PaymentStatus::Refunded),
            PaymentStatus::Declined | PaymentStatus::Refunded => None,
        }
    }
}

/// The outcome of charging `amount` against `credit`, and the credit afterwards.
pub fn charge(credit: Cents, amount: Cents) -> (Payment, Cents) {
    if amount <= credit {
        let left = Cents::parse(credit.get() - amount.get()).expect("amount <= credit");
        (Payment::Approved, left)
    } else {
        (
            Payment::Declined {
                reason: DeclineReason::InsufficientCredit,
            },
            credit,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::VariantArray;

    #[test]
    fn a_charge_is_recorded_with_its_outcome() {
        assert_eq!(
            PaymentStatus::charged(&Payment::Approved),
            PaymentStatus::Approved
        );
        let declined = Payment::Declined {
            reason: DeclineReason::InsufficientCredit,
        };
        assert_eq!(PaymentStatus::charged(&declined), PaymentStatus::Declined);
    }

    #[test]
    fn only_an_approved_payment_is_refunded() {
        assert_eq!(
            PaymentStatus::Approved.refund(),
            Some(PaymentStatus::Refunded)
        );
        assert_eq!(PaymentStatus::Declined.refund(), None);
        assert_eq!(PaymentStatus::Refunded.refund(), None);
    }

    #[test]
    fn serde_and_strum_spell_every_status_alike() {
        for status in PaymentStatus::VARIANTS {
            let json = serde_json::to_value(status).unwrap();
            assert_eq!(json, status.to_string());
            assert_eq!(status.to_string().parse::<PaymentStatus>(), Ok(*status));
        }
        assert_eq!(<&str>::from(PaymentStatus::Refunded), "REFUNDED");
    }

    fn cents(n: i64) -> Cents {
        Cents::parse(n).unwrap()
    }

    #[test]
    fn approves_when_credit_covers_the_amount_exactly() {
        assert_eq!(
            charge(cents(500), cents(500)),
            (Payment::Approved, cents(0))
        );
    }

    #[test]
    fn declines_and_keeps_the_credit_when_short_by_one_cent() {
        assert_eq!(
            charge(cents(499), cents(500)),
            (
                Payment::Declined {
                    reason: DeclineReason::InsufficientCredit
                },
                cents(499)
            )
        );
    }

    #[test]
    fn a_free_order_is_always_approved() {
        assert_eq!(charge(cents(0), cents(0)), (Payment::Approved, cents(0)));
    }
}
