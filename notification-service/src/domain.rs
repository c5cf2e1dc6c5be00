//! Which events a customer hears about, and what they are told. Pure.

use shared_events::{CancelInitiator, CancelReason, Envelope, Event, Payment, Reservation};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    OrderReceived,
    OrderConfirmed,
    OrderRejected,
    PaymentFailed,
    OrderCancelled,
    RefundIssued,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::OrderReceived => "ORDER_RECEIVED",
            Kind::OrderConfirmed => "ORDER_CONFIRMED",
            Kind::OrderRejected => "ORDER_REJECTED",
            Kind::PaymentFailed => "PAYMENT_FAILED",
            Kind::OrderCancelled => "ORDER_CANCELLED",
            Kind::RefundIssued => "REFUND_ISSUED",
        }
    }
}

/// A message for a customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub kind: Kind,
    pub user_id: String,
    pub message: String,
}

/// The notice `event` calls for, if any. A successful reservation is an
/// internal step; the customer hears about the payment outcome instead.
pub fn notice_for(event: &Envelope) -> Option<Notice> {
    let order = &event.order_id;
    let (kind, user_id, message) = match &event.event {
        Event::OrderCreated(created) => (
            Kind::OrderReceived,
            &created.user_id,
            format!("We received your order {order}."),
        ),
        Event::InventoryReserved(reserved) => match &reserved.outcome {
            Reservation::Reserved { .. } => return None,
            Reservation::Rejected { detail, .. } => (
                Kind::OrderRejected,
                &reserved.user_id,
                format!("Sorry, we could not fulfil your order {order}: {detail}."),
            ),
        },
        Event::PaymentProcessed(payment) => match &payment.outcome {
            Payment::Approved => (
                Kind::OrderConfirmed,
                &payment.user_id,
                format!(
                    "Your order {order} is confirmed; {} was charged.",
                    payment.amount_cents
                ),
            ),
            Payment::Declined { .. } => (
                Kind::PaymentFailed,
                &payment.user_id,
                format!(
                    "Payment of {} for your order {order} was declined: insufficient credit.",
                    payment.amount_cents
                ),
            ),
        },
        Event::PaymentRefunded(refund) => (
            Kind::RefundIssued,
            &refund.user_id,
            format!(
                "{} for your cancelled order {order} was refunded to your credit.",
                refund.amount_cents
            ),
        ),
        Event::OrderCancelled(cancelled) => (
            Kind::OrderCancelled,
            &cancelled.user_id,
            match cancelled.initiator {
                CancelInitiator::Customer
                    if cancelled.reason.as_str() != CancelReason::CUSTOMER_REQUEST =>
                {
                    format!(
                        "Your order {order} is cancelled as you asked: {}.",
                        cancelled.reason
                    )
                }
                CancelInitiator::Customer => {
                    format!("Your order {order} is cancelled as you asked.")
                }
                CancelInitiator::SagaDeadline | CancelInitiator::ReservationExpiry => format!(
                    "Your order {order} is cancelled: it could not be completed in time. \
                     Nothing is charged and no stock is held for it."
                ),
            },
        ),
    };
    Some(Notice {
        kind,
        user_id: user_id.to_string(),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_events::{
        Cents, InventoryReserved, OrderCreated, OrderId, PaymentProcessed, RejectionReason, UserId,
    };

    fn created() -> Envelope {
        Envelope::new(
            OrderId::parse("o1").unwrap(),
            Event::OrderCreated(OrderCreated {
                user_id: UserId::parse("ann").unwrap(),
                items: vec![],
            }),
            "order-service",
        )
    }

    #[test]
    fn customers_hear_of_received_confirmed_rejected_and_failed_orders() {
        let received = notice_for(&created()).unwrap();
        assert_eq!(
            (received.kind, received.user_id.as_str()),
            (Kind::OrderReceived, "ann")
        );

        let confirmed = created().follow_up(
            Event::PaymentProcessed(PaymentProcessed {
                user_id: UserId::parse("ann").unwrap(),
                amount_cents: Cents::parse(1999).unwrap(),
                outcome: Payment::Approved,
            }),
            "payment-service",
        );
        let notice = notice_for(&confirmed).unwrap();
        assert_eq!(notice.kind, Kind::OrderConfirmed);
        assert!(notice.message.contains("19.99"), "{}", notice.message);

        let rejected = created().follow_up(
            Event::InventoryReserved(InventoryReserved {
                user_id: UserId::parse("ann").unwrap(),
                outcome: Reservation::Rejected {
                    reason: RejectionReason::OutOfStock,
                    detail: "not enough stock: widget".into(),
                },
            }),
            "inventory-service",
        );
        assert_eq!(notice_for(&rejected).unwrap().kind, Kind::OrderRejected);
    }

    #[test]
    fn customers_hear_of_cancellations_and_refunds() {
        let cancel = |initiator, reason: &str| {
            created().follow_up(
                Event::OrderCancelled(shared_events::OrderCancelled {
                    user_id: UserId::parse("ann").unwrap(),
                    initiator,
                    reason: CancelReason::parse(reason).unwrap(),
                }),
                "order-service",
            )
        };
        let asked = notice_for(&cancel(CancelInitiator::Customer, "found it cheaper")).unwrap();
        assert_eq!(asked.kind, Kind::OrderCancelled);
        assert!(
            asked.message.contains("found it cheaper"),
            "{}",
            asked.message
        );
        let timed_out = notice_for(&cancel(CancelInitiator::SagaDeadline, "TIMEOUT")).unwrap();
        assert!(
            timed_out.message.contains("in time"),
            "{}",
            timed_out.message
        );

        let refund = created().follow_up(
            Event::PaymentRefunded(shared_events::PaymentRefunded {
                user_id: UserId::parse("ann").unwrap(),
                amount_cents: Cents::parse(1999).unwrap(),
            }),
            "payment-service",
        );
        let notice = notice_for(&refund).unwrap();
        assert_eq!(notice.kind, Kind::RefundIssued);
        assert!(notice.message.contains("19.99"), "{}", notice.message);
    }

    #[test]
    fn a_successful_reservation_is_not_announced() {
        let reserved = created().follow_up(
            Event::InventoryReserved(InventoryReserved {
                user_id: UserId::parse("ann").unwrap(),
                outcome: Reservation::Reserved {
                    lines: vec![],
                    total_cents: Cents::ZERO,
                },
            }),
            "inventory-service",
        );
        assert_eq!(notice_for(&reserved), None);
    }
}
