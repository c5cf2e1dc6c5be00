//! The charging rule, pure: a payment is approved when the customer's credit
//! covers the whole amount, and then the credit goes down by exactly that much.

use shared_events::{Cents, DeclineReason, Payment};

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
