//! The envelope every event travels in, and the events themselves.
//!
//! On the wire an event is one JSON object (camelCase):
//!
//! ```json
//! {"eventId":"…","eventType":"OrderCreated","version":1,"occurredAt":"2026-01-01T00:00:00Z",
//!  "orderId":"123","correlationId":"…","causationId":null,"producer":"order-service",
//!  "payload":{"userId":"user1","items":[]}}
//! ```
//!
//! Decoding is strict and says precisely what is wrong ([`DecodeError`]), because
//! a consumer must tell an event it can never process (a poison message) from a
//! fault that will pass.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

use crate::topics::Topics;
use crate::values::{CancelReason, Cents, OrderId, Quantity, Sku, UserId};

/// Kafka header names. The body is authoritative; headers let tools and
/// consumers route or skip an event without parsing it.
pub mod headers {
    pub const EVENT_ID: &str = "eventId";
    pub const EVENT_TYPE: &str = "eventType";
}

/// Most lines one order may have.
pub const MAX_LINES: usize = 100;

/// One event with the metadata that lets it be traced, deduplicated and ordered.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// Unique per event; consumers record it to ignore redeliveries.
    pub event_id: Uuid,
    /// When the producer decided the fact this event reports.
    pub occurred_at: DateTime<Utc>,
    /// The order the event is about; also the Kafka key, so one order's events
    /// stay in one partition and in order.
    pub order_id: OrderId,
    /// Shared by every event of one saga: the eventId of the OrderCreated that started it.
    pub correlation_id: Uuid,
    /// The eventId of the event that caused this one (none for the first).
    pub causation_id: Option<Uuid>,
    /// Name of the service that produced the event.
    pub producer: String,
    /// When the saga must be over. Set by order-service on OrderCreated and
    /// carried by every follow-up, so that a service catching up on old
    /// events does no work for a saga that has already been called off.
    pub deadline: Option<DateTime<Utc>>,
    /// What happened.
    pub event: Event,
}

/// The kinds of event. Each travels on one topic ([`Topics::for_event`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Event {
    OrderCreated(OrderCreated),
    InventoryReserved(InventoryReserved),
    PaymentProcessed(PaymentProcessed),
    PaymentRefunded(PaymentRefunded),
    OrderCancelled(OrderCancelled),
}

/// An event's type name as it appears in `eventType` and the Kafka header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    OrderCreated,
    InventoryReserved,
    PaymentProcessed,
    PaymentRefunded,
    OrderCancelled,
}

impl EventType {
    pub const ALL: [EventType; 5] = [
        EventType::OrderCreated,
        EventType::InventoryReserved,
        EventType::PaymentProcessed,
        EventType::PaymentRefunded,
        EventType::OrderCancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::OrderCreated => "OrderCreated",
            EventType::InventoryReserved => "InventoryReserved",
            EventType::PaymentProcessed => "PaymentProcessed",
            EventType::PaymentRefunded => "PaymentRefunded",
            EventType::OrderCancelled => "OrderCancelled",
        }
    }

    /// The schema version producers write today.
    pub fn current_version(self) -> u16 {
        1
    }

    pub fn parse(name: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

impl Topics {
    /// The topic an event of this type is published to.
    pub fn for_event(&self, event_type: EventType) -> &str {
        match event_type {
            EventType::OrderCreated => &self.order_created,
            EventType::InventoryReserved => &self.inventory_reserved,
            // A refund is payment news: on the same topic, after the charge.
            EventType::PaymentProcessed | EventType::PaymentRefunded => &self.payment_processed,
            EventType::OrderCancelled => &self.order_cancelled,
        }
    }
}

/// A customer placed an order. Published by order-service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderCreated {
    pub user_id: UserId,
    /// May be empty: an order without items is valid and costs nothing.
    pub items: Vec<OrderLine>,
}

/// One line of an order as the customer asked for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderLine {
    pub sku: Sku,
    pub quantity: Quantity,
}

/// The outcome of trying to reserve stock for an order. Published by inventory-service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InventoryReserved {
    /// Carried along so payment-service knows whom to charge without asking order-service.
    pub user_id: UserId,
    #[serde(flatten)]
    pub outcome: Reservation,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(
    tag = "outcome",
    rename_all = "SCREAMING_SNAKE_CASE",
    rename_all_fields = "camelCase"
)]
pub enum Reservation {
    /// Every line is held; `total_cents` is what payment-service charges.
    Reserved {
        lines: Vec<PricedLine>,
        total_cents: Cents,
    },
    /// Nothing is held.
    Rejected {
        reason: RejectionReason,
        /// Human-readable detail, e.g. which SKU was short.
        detail: String,
    },
}

/// A reserved line with the unit price inventory-service charged for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PricedLine {
    pub sku: Sku,
    pub quantity: Quantity,
    pub unit_price_cents: Cents,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RejectionReason {
    OutOfStock,
    UnknownSku,
}

impl RejectionReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectionReason::OutOfStock => "OUT_OF_STOCK",
            RejectionReason::UnknownSku => "UNKNOWN_SKU",
        }
    }
}

/// The outcome of charging the customer. Published by payment-service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentProcessed {
    pub user_id: UserId,
    /// The amount charged (APPROVED) or that could not be charged (DECLINED).
    pub amount_cents: Cents,
    #[serde(flatten)]
    pub outcome: Payment,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(
    tag = "outcome",
    rename_all = "SCREAMING_SNAKE_CASE",
    rename_all_fields = "camelCase"
)]
pub enum Payment {
    Approved,
    Declined { reason: DeclineReason },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeclineReason {
    InsufficientCredit,
}

impl DeclineReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeclineReason::InsufficientCredit => "INSUFFICIENT_CREDIT",
        }
    }
}

/// A captured payment was given back because its order was cancelled.
/// Published by payment-service, on the payment topic, after the charge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRefunded {
    pub user_id: UserId,
    /// The amount returned to the customer's credit: the whole charge.
    pub amount_cents: Cents,
}

/// The saga of an order is called off. Every service undoes what it did for
/// the order and refuses to do anything more for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderCancelled {
    pub user_id: UserId,
    /// Who called the saga off.
    pub initiator: CancelInitiator,
    /// The customer's words, or `TIMEOUT` when a deadline ran out.
    pub reason: CancelReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CancelInitiator {
    /// The customer, through order-service's API.
    Customer,
    /// order-service: the order did not reach a final status in time.
    SagaDeadline,
    /// inventory-service: a reservation expired before the saga settled it.
    ReservationExpiry,
}

impl CancelInitiator {
    pub fn as_str(self) -> &'static str {
        match self {
            CancelInitiator::Customer => "CUSTOMER",
            CancelInitiator::SagaDeadline => "SAGA_DEADLINE",
            CancelInitiator::ReservationExpiry => "RESERVATION_EXPIRY",
        }
    }
}

/// Why bytes from a topic are not an event this build can process. Every
/// variant is permanent: delivering the same bytes again cannot succeed.
#[derive(Debug, Error)]
pub enum DecodeError {
    #[error("not a valid event envelope: {0}")]
    Malformed(#[source] serde_json::Error),
    #[error("unknown eventType {0:?}")]
    UnknownEventType(String),
    #[error("unsupported version {version} of {event_type}")]
    UnsupportedVersion { event_type: String, version: u16 },
    #[error("invalid {event_type} payload: {source}")]
    InvalidPayload {
        event_type: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid {event_type}: {reason}")]
    Invalid {
        event_type: &'static str,
        reason: String,
    },
}

impl Event {
    pub fn event_type(&self) -> EventType {
        match self {
            Event::OrderCreated(_) => EventType::OrderCreated,
            Event::InventoryReserved(_) => EventType::InventoryReserved,
            Event::PaymentProcessed(_) => EventType::PaymentProcessed,
            Event::PaymentRefunded(_) => EventType::PaymentRefunded,
            Event::OrderCancelled(_) => EventType::OrderCancelled,
        }
    }

    fn from_parts(
        event_type: &str,
        version: u16,
        payload: serde_json::Value,
    ) -> Result<Event, DecodeError> {
        let kind = EventType::parse(event_type)
            .ok_or_else(|| DecodeError::UnknownEventType(event_type.to_owned()))?;
        if version != kind.current_version() {
            return Err(DecodeError::UnsupportedVersion {
                event_type: event_type.to_owned(),
                version,
            });
        }
        let invalid_payload = |source| DecodeError::InvalidPayload {
            event_type: kind.as_str(),
            source,
        };
        let event = match kind {
            EventType::OrderCreated => {
                Event::OrderCreated(serde_json::from_value(payload).map_err(invalid_payload)?)
            }
            EventType::InventoryReserved => {
                Event::InventoryReserved(serde_json::from_value(payload).map_err(invalid_payload)?)
            }
            EventType::PaymentProcessed => {
                Event::PaymentProcessed(serde_json::from_value(payload).map_err(invalid_payload)?)
            }
            EventType::PaymentRefunded => {
                Event::PaymentRefunded(serde_json::from_value(payload).map_err(invalid_payload)?)
            }
            EventType::OrderCancelled => {
                Event::OrderCancelled(serde_json::from_value(payload).map_err(invalid_payload)?)
            }
        };
        event.validate().map_err(|reason| DecodeError::Invalid {
            event_type: kind.as_str(),
            reason,
        })?;
        Ok(event)
    }

    /// Rules that span fields, which serde alone cannot check.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Event::OrderCreated(created) => validate_lines(created.items.iter().map(|l| &l.sku)),
            Event::InventoryReserved(InventoryReserved {
                outcome: Reservation::Reserved { lines, total_cents },
                ..
            }) => {
                validate_lines(lines.iter().map(|l| &l.sku))?;
                match priced_total(lines) {
                    Some(sum) if sum == *total_cents => Ok(()),
                    _ => Err("totalCents is not the sum of the lines".into()),
                }
            }
            Event::InventoryReserved(_)
            | Event::PaymentProcessed(_)
            | Event::PaymentRefunded(_)
            | Event::OrderCancelled(_) => Ok(()),
        }
    }
}

/// The sum of `unit price × quantity` over `lines`, or `None` on overflow.
pub fn priced_total(lines: &[PricedLine]) -> Option<Cents> {
    lines.iter().try_fold(Cents::ZERO, |sum, line| {
        sum.plus(line.unit_price_cents.times(line.quantity)?)
    })
}

fn validate_lines<'a>(skus: impl ExactSizeIterator<Item = &'a Sku>) -> Result<(), String> {
    if skus.len() > MAX_LINES {
        return Err(format!("more than {MAX_LINES} lines"));
    }
    let mut seen = BTreeSet::new();
    for sku in skus {
        if !seen.insert(sku) {
            return Err(format!("sku {sku} appears on more than one line"));
        }
    }
    Ok(())
}

/// The JSON shape of an envelope; `payload` is decoded once `eventType` and
/// `version` are known. Its schema, with a concrete payload, is the published
/// schema of each event ([`crate::schema`]).
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Wire<P> {
    /// Unique per event; consumers record it to ignore redeliveries.
    pub(crate) event_id: Uuid,
    /// The event's type; decides the payload's shape.
    pub(crate) event_type: String,
    /// Version of the payload's shape.
    pub(crate) version: u16,
    /// When the producer decided the fact this event reports.
    pub(crate) occurred_at: DateTime<Utc>,
    /// The order the event is about; also the Kafka message key.
    pub(crate) order_id: OrderId,
    /// The eventId of the OrderCreated that started the saga; shared by all its events.
    pub(crate) correlation_id: Uuid,
    /// The eventId of the event that caused this one; null for the first.
    pub(crate) causation_id: Option<Uuid>,
    /// Name of the service that produced the event.
    pub(crate) producer: String,
    /// When the saga must be over (set on OrderCreated, copied to every follow-up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) deadline: Option<DateTime<Utc>>,
    /// What happened.
    pub(crate) payload: P,
}

impl Envelope {
    /// The first event of a saga: it correlates with itself.
    pub fn new(order_id: OrderId, event: Event, producer: &str) -> Envelope {
        let event_id = Uuid::now_v7();
        Envelope {
            event_id,
            occurred_at: Utc::now(),
            order_id,
            correlation_id: event_id,
            causation_id: None,
            producer: producer.to_owned(),
            deadline: None,
            event,
        }
    }

    /// An event of an existing saga (`correlation_id`: the eventId of its
    /// OrderCreated) caused by something other than an event, e.g. a customer's
    /// request or a deadline.
    pub fn in_saga(
        order_id: OrderId,
        correlation_id: Uuid,
        event: Event,
        producer: &str,
    ) -> Envelope {
        Envelope {
            event_id: Uuid::now_v7(),
            occurred_at: Utc::now(),
            order_id,
            correlation_id,
            causation_id: None,
            producer: producer.to_owned(),
            deadline: None,
            event,
        }
    }

    /// An event caused by `self`, in the same saga and about the same order.
    pub fn follow_up(&self, event: Event, producer: &str) -> Envelope {
        Envelope {
            event_id: Uuid::now_v7(),
            occurred_at: Utc::now(),
            order_id: self.order_id.clone(),
            correlation_id: self.correlation_id,
            causation_id: Some(self.event_id),
            producer: producer.to_owned(),
            deadline: self.deadline,
            event,
        }
    }

    /// The same event with the saga's deadline set.
    pub fn with_deadline(mut self, deadline: DateTime<Utc>) -> Envelope {
        self.deadline = Some(deadline);
        self
    }

    /// Has the saga's deadline passed at `now`? The saga is then being (or has
    /// been) cancelled, and no new work should be done for it.
    pub fn past_deadline(&self, now: DateTime<Utc>) -> bool {
        self.deadline.is_some_and(|deadline| now > deadline)
    }

    pub fn event_type(&self) -> EventType {
        self.event.event_type()
    }

    pub fn to_json(&self) -> Vec<u8> {
        let kind = self.event_type();
        let wire = Wire {
            event_id: self.event_id,
            event_type: kind.as_str().to_owned(),
            version: kind.current_version(),
            occurred_at: self.occurred_at,
            order_id: self.order_id.clone(),
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            producer: self.producer.clone(),
            deadline: self.deadline,
            payload: &self.event,
        };
        serde_json::to_vec(&wire).expect("events always serialise: no maps with non-string keys")
    }

    pub fn from_json(bytes: &[u8]) -> Result<Envelope, DecodeError> {
        let wire: Wire<serde_json::Value> =
            serde_json::from_slice(bytes).map_err(DecodeError::Malformed)?;
        let event = Event::from_parts(&wire.event_type, wire.version, wire.payload)?;
        Ok(Envelope {
            event_id: wire.event_id,
            occurred_at: wire.occurred_at,
            order_id: wire.order_id,
            correlation_id: wire.correlation_id,
            causation_id: wire.causation_id,
            producer: wire.producer,
            deadline: wire.deadline,
            event,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sku(s: &str) -> Sku {
        Sku::parse(s).unwrap()
    }
    fn qty(n: i64) -> Quantity {
        Quantity::parse(n).unwrap()
    }
    fn cents(n: i64) -> Cents {
        Cents::parse(n).unwrap()
    }
    fn order_created() -> Envelope {
        Envelope::new(
            OrderId::parse("123").unwrap(),
            Event::OrderCreated(OrderCreated {
                user_id: UserId::parse("user1").unwrap(),
                items: vec![OrderLine {
                    sku: sku("widget"),
                    quantity: qty(2),
                }],
            }),
            "order-service",
        )
    }

    #[test]
    fn cancellation_has_a_documented_wire_shape() {
        let cancelled = order_created().follow_up(
            Event::OrderCancelled(OrderCancelled {
                user_id: UserId::parse("user1").unwrap(),
                initiator: CancelInitiator::SagaDeadline,
                reason: CancelReason::timeout(),
            }),
            "order-service",
        );
        let wire: serde_json::Value = serde_json::from_slice(&cancelled.to_json()).unwrap();
        assert_eq!(wire["eventType"], "OrderCancelled");
        assert_eq!(
            wire["payload"],
            json!({"userId": "user1", "initiator": "SAGA_DEADLINE", "reason": "TIMEOUT"})
        );
        assert_eq!(
            Topics::default().for_event(EventType::OrderCancelled),
            "order-cancelled"
        );
        assert_eq!(
            Topics::default().for_event(EventType::PaymentRefunded),
            "payment-processed",
            "a refund follows its charge on the same topic"
        );
    }

    #[test]
    fn the_deadline_travels_with_the_saga() {
        let deadline = Utc::now() + chrono::Duration::seconds(30);
        let created = order_created().with_deadline(deadline);
        let reserved = created.follow_up(
            Event::InventoryReserved(InventoryReserved {
                user_id: UserId::parse("user1").unwrap(),
                outcome: Reservation::Rejected {
                    reason: RejectionReason::UnknownSku,
                    detail: "no such sku".into(),
                },
            }),
            "inventory-service",
        );
        let decoded = Envelope::from_json(&reserved.to_json()).unwrap();
        assert_eq!(decoded.deadline, Some(deadline));
        assert!(!decoded.past_deadline(deadline));
        assert!(decoded.past_deadline(deadline + chrono::Duration::milliseconds(1)));
        assert!(
            !order_created().past_deadline(Utc::now()),
            "no deadline, never past"
        );
    }

    #[test]
    fn every_event_round_trips_through_json() {
        let created = order_created();
        let reserved = created.follow_up(
            Event::InventoryReserved(InventoryReserved {
                user_id: UserId::parse("user1").unwrap(),
                outcome: Reservation::Reserved {
                    lines: vec![PricedLine {
                        sku: sku("widget"),
                        quantity: qty(2),
                        unit_price_cents: cents(1999),
                    }],
                    total_cents: cents(3998),
                },
            }),
            "inventory-service",
        );
        let rejected = created.follow_up(
            Event::InventoryReserved(InventoryReserved {
                user_id: UserId::parse("user1").unwrap(),
                outcome: Reservation::Rejected {
                    reason: RejectionReason::OutOfStock,
                    detail: "widget: 2 asked, 1 available".into(),
                },
            }),
            "inventory-service",
        );
        let approved = reserved.follow_up(
            Event::PaymentProcessed(PaymentProcessed {
                user_id: UserId::parse("user1").unwrap(),
                amount_cents: cents(3998),
                outcome: Payment::Approved,
            }),
            "payment-service",
        );
        let declined = reserved.follow_up(
            Event::PaymentProcessed(PaymentProcessed {
                user_id: UserId::parse("user1").unwrap(),
                amount_cents: cents(3998),
                outcome: Payment::Declined {
                    reason: DeclineReason::InsufficientCredit,
                },
            }),
            "payment-service",
        );
        let refunded = approved.follow_up(
            Event::PaymentRefunded(PaymentRefunded {
                user_id: UserId::parse("user1").unwrap(),
                amount_cents: cents(3998),
            }),
            "payment-service",
        );
        let cancelled = created.follow_up(
            Event::OrderCancelled(OrderCancelled {
                user_id: UserId::parse("user1").unwrap(),
                initiator: CancelInitiator::Customer,
                reason: CancelReason::parse("changed my mind").unwrap(),
            }),
            "order-service",
        );
        for envelope in [
            created, reserved, rejected, approved, declined, refunded, cancelled,
        ] {
            let decoded = Envelope::from_json(&envelope.to_json()).unwrap();
            assert_eq!(decoded, envelope);
        }
    }

    #[test]
    fn wire_format_is_camel_case_with_flat_outcomes() {
        let created = order_created();
        let reserved = created.follow_up(
            Event::InventoryReserved(InventoryReserved {
                user_id: UserId::parse("user1").unwrap(),
                outcome: Reservation::Rejected {
                    reason: RejectionReason::UnknownSku,
                    detail: "nope".into(),
                },
            }),
            "inventory-service",
        );
        let value: serde_json::Value = serde_json::from_slice(&reserved.to_json()).unwrap();
        assert_eq!(value["eventType"], "InventoryReserved");
        assert_eq!(value["version"], 1);
        assert_eq!(value["orderId"], "123");
        assert_eq!(value["correlationId"], json!(created.event_id));
        assert_eq!(value["causationId"], json!(created.event_id));
        assert_eq!(
            value["payload"],
            json!({"userId": "user1", "outcome": "REJECTED", "reason": "UNKNOWN_SKU", "detail": "nope"})
        );
    }

    fn with(mut value: serde_json::Value, pointer: &str, new: serde_json::Value) -> Vec<u8> {
        *value.pointer_mut(pointer).unwrap() = new;
        serde_json::to_vec(&value).unwrap()
    }

    #[test]
    fn decoding_names_what_is_wrong() {
        let good: serde_json::Value = serde_json::from_slice(&order_created().to_json()).unwrap();

        assert!(matches!(
            Envelope::from_json(b"{not json"),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            Envelope::from_json(&with(good.clone(), "/eventType", json!("OrderShipped"))),
            Err(DecodeError::UnknownEventType(t)) if t == "OrderShipped"
        ));
        assert!(matches!(
            Envelope::from_json(&with(good.clone(), "/version", json!(2))),
            Err(DecodeError::UnsupportedVersion { version: 2, .. })
        ));
        assert!(matches!(
            Envelope::from_json(&with(good.clone(), "/payload/items/0/quantity", json!(0))),
            Err(DecodeError::InvalidPayload { .. })
        ));
        let twice = json!([{"sku": "a", "quantity": 1}, {"sku": "a", "quantity": 2}]);
        assert!(matches!(
            Envelope::from_json(&with(good, "/payload/items", twice)),
            Err(DecodeError::Invalid { .. })
        ));
    }

    #[test]
    fn a_reservation_whose_total_does_not_add_up_is_refused() {
        let created = order_created();
        let reserved = created.follow_up(
            Event::InventoryReserved(InventoryReserved {
                user_id: UserId::parse("user1").unwrap(),
                outcome: Reservation::Reserved {
                    lines: vec![PricedLine {
                        sku: sku("widget"),
                        quantity: qty(2),
                        unit_price_cents: cents(100),
                    }],
                    total_cents: cents(150),
                },
            }),
            "inventory-service",
        );
        assert!(matches!(
            Envelope::from_json(&reserved.to_json()),
            Err(DecodeError::Invalid { .. })
        ));
    }
}
