//! Topic names and their defaults.
//!
//! Topic names are configuration: a deployment may rename them, so services read
//! them from a [`Topics`] value and never spell a topic name themselves.

use serde::{Deserialize, Serialize};

/// Default name of the topic carrying `OrderCreated`.
pub const ORDER_CREATED: &str = "order-created";
/// Default name of the topic carrying `InventoryReserved`.
pub const INVENTORY_RESERVED: &str = "inventory-reserved";
/// Default name of the topic carrying `PaymentProcessed` and `PaymentRefunded`.
pub const PAYMENT_PROCESSED: &str = "payment-processed";
/// Default name of the topic carrying `OrderCancelled`.
pub const ORDER_CANCELLED: &str = "order-cancelled";

/// Default partition count for every topic. Orders are keyed by orderId, so
/// this is also the most consumer instances a group can keep busy.
pub const DEFAULT_PARTITIONS: i32 = 6;

/// Appended to a topic's name to form its dead-letter topic.
pub const DEAD_LETTER_SUFFIX: &str = ".dlq";

/// Where events of `topic` that can never be processed are parked.
pub fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}{DEAD_LETTER_SUFFIX}")
}

/// The topic names in use, as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topics {
    /// Where order-service announces new orders.
    pub order_created: String,
    /// Where inventory-service reports the outcome of a reservation.
    pub inventory_reserved: String,
    /// Where payment-service reports the outcome of a charge, and refunds.
    pub payment_processed: String,
    /// Where a saga is called off: by the customer, or by a deadline.
    pub order_cancelled: String,
}

impl Default for Topics {
    fn default() -> Self {
        Self {
            order_created: ORDER_CREATED.to_owned(),
            inventory_reserved: INVENTORY_RESERVED.to_owned(),
            payment_processed: PAYMENT_PROCESSED.to_owned(),
            order_cancelled: ORDER_CANCELLED.to_owned(),
        }
    }
}

impl Topics {
    /// Every topic, in saga order.
    pub fn all(&self) -> [&str; 4] {
        [
            &self.order_created,
            &self.inventory_reserved,
            &self.payment_processed,
            &self.order_cancelled,
        ]
    }

    /// The same topics with `prefix.` in front of every name, so several
    /// test stacks can share one broker without seeing each other's events.
    pub fn prefixed(&self, prefix: &str) -> Topics {
        let with_prefix = |name: &str| format!("{prefix}.{name}");
        Topics {
            order_created: with_prefix(&self.order_created),
            inventory_reserved: with_prefix(&self.inventory_reserved),
            payment_processed: with_prefix(&self.payment_processed),
            order_cancelled: with_prefix(&self.order_cancelled),
        }
    }

    /// Every topic followed by the dead-letter topics: what a broker must hold.
    pub fn all_with_dead_letters(&self) -> Vec<String> {
        let topics = self.all();
        let dead_letters = topics.iter().map(|t| dead_letter_topic(t));
        topics
            .iter()
            .map(|t| t.to_string())
            .chain(dead_letters)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_topics_are_named_after_their_origin() {
        assert_eq!(dead_letter_topic("order-created"), "order-created.dlq");
        assert_eq!(Topics::default().all_with_dead_letters().len(), 8);
    }
}
