//! What several of service-kit's integration tests need alike.

use shared_events::{Envelope, Event, OrderCreated, OrderId, UserId};

/// An `OrderCreated` for `order` (customer `u`, no lines), the event the
/// plumbing tests write, publish and consume.
pub fn order_created(order: &str) -> Envelope {
    Envelope::new(
        OrderId::parse(order).unwrap(),
        Event::OrderCreated(OrderCreated {
            user_id: UserId::parse("u").unwrap(),
            items: vec![],
        }),
        "test",
    )
}
