//! Who publishes and who consumes each topic: the one table the services'
//! subscriptions and the broker's ACLs are both derived from.
//!
//! [`TOPIC_TABLE`] names, per topic, the services that publish to it and the
//! services that consume it. A service subscribes to
//! [`Topics::consumed_by`]; [`grants`] turns the same table into the least
//! privileges each Kafka principal needs (one principal per service, named
//! after it, plus the console), so a broker with `allow.everyone.if.no.acl.found=false`
//! lets every service do exactly its part of the saga and nothing else.

use crate::topics::{dead_letter_topic, Topics};

/// The services of the saga, by the name they log, label metrics and log in
/// to Kafka with.
pub const ORDER_SERVICE: &str = "order-service";
pub const INVENTORY_SERVICE: &str = "inventory-service";
pub const PAYMENT_SERVICE: &str = "payment-service";
pub const NOTIFICATION_SERVICE: &str = "notification-service";
/// The operator's web console: reads every topic, replays dead letters.
pub const CONSOLE: &str = "console";

/// The four services that consume and publish events.
pub const SERVICES: [&str; 4] = [
    ORDER_SERVICE,
    INVENTORY_SERVICE,
    PAYMENT_SERVICE,
    NOTIFICATION_SERVICE,
];

/// Starts every consumer group id this system uses by default
/// (`ordersystem.order-service`, ...), so that on a shared broker the groups
/// say whose they are and another project's consumers stay out of them.
pub const CONSUMER_GROUP_PREFIX: &str = "ordersystem.";

/// The default consumer group of `service_name`.
pub fn default_group_id(service_name: &str) -> String {
    format!("{CONSUMER_GROUP_PREFIX}{service_name}")
}

/// The group whose committed offsets remember how far dead-letter replay got.
pub const DLQ_REPLAY_GROUP: &str = "dlq-replay";
/// Starts the throwaway groups that list dead letters without moving replay.
pub const DLQ_LIST_GROUP_PREFIX: &str = "dlq-list-";

/// One of the four saga topics, independent of its configured name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    OrderCreated,
    InventoryReserved,
    PaymentProcessed,
    OrderCancelled,
}

impl TopicKind {
    /// The configured name of this topic.
    pub fn name(self, topics: &Topics) -> &str {
        match self {
            TopicKind::OrderCreated => &topics.order_created,
            TopicKind::InventoryReserved => &topics.inventory_reserved,
            TopicKind::PaymentProcessed => &topics.payment_processed,
            TopicKind::OrderCancelled => &topics.order_cancelled,
        }
    }
}

/// A row of [`TOPIC_TABLE`].
#[derive(Debug, Clone, Copy)]
pub struct TopicUse {
    pub topic: TopicKind,
    /// Services whose outbox publishes events to the topic.
    pub publishers: &'static [&'static str],
    /// Services that subscribe to the topic (and dead-letter what they cannot apply).
    pub consumers: &'static [&'static str],
}

/// Which service publishes and which consumes each topic, in saga order.
pub const TOPIC_TABLE: [TopicUse; 4] = [
    TopicUse {
        topic: TopicKind::OrderCreated,
        publishers: &[ORDER_SERVICE],
        consumers: &[INVENTORY_SERVICE, NOTIFICATION_SERVICE],
    },
    TopicUse {
        topic: TopicKind::InventoryReserved,
        publishers: &[INVENTORY_SERVICE],
        consumers: &[ORDER_SERVICE, PAYMENT_SERVICE, NOTIFICATION_SERVICE],
    },
    TopicUse {
        topic: TopicKind::PaymentProcessed,
        publishers: &[PAYMENT_SERVICE],
        consumers: &[ORDER_SERVICE, INVENTORY_SERVICE, NOTIFICATION_SERVICE],
    },
    TopicUse {
        // By the customer or the saga deadline (order-service), or by an
        // expired reservation (inventory-service).
        topic: TopicKind::OrderCancelled,
        publishers: &[ORDER_SERVICE, INVENTORY_SERVICE],
        consumers: &[
            ORDER_SERVICE,
            INVENTORY_SERVICE,
            PAYMENT_SERVICE,
            NOTIFICATION_SERVICE,
        ],
    },
];

impl Topics {
    /// The topics `service` subscribes to, in saga order.
    pub fn consumed_by(&self, service: &str) -> Vec<&str> {
        TOPIC_TABLE
            .iter()
            .filter(|row| row.consumers.contains(&service))
            .map(|row| row.topic.name(self))
            .collect()
    }

    /// The topics `service` publishes to, in saga order.
    pub fn published_by(&self, service: &str) -> Vec<&str> {
        TOPIC_TABLE
            .iter()
            .filter(|row| row.publishers.contains(&service))
            .map(|row| row.topic.name(self))
            .collect()
    }
}

/// What a grant applies to, in Kafka's resource terms.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Resource {
    /// One topic, by its exact name.
    Topic(String),
    /// One consumer group, by its exact name.
    Group(String),
    /// Every consumer group whose name starts with this.
    GroupPrefix(String),
    /// The cluster itself (for idempotent producers).
    Cluster,
}

/// A Kafka ACL operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    Read,
    Write,
    Describe,
    IdempotentWrite,
}

impl Operation {
    /// The name Kafka's `AclOperation` enum gives it.
    pub fn kafka_name(self) -> &'static str {
        match self {
            Operation::Read => "READ",
            Operation::Write => "WRITE",
            Operation::Describe => "DESCRIBE",
            Operation::IdempotentWrite => "IDEMPOTENT_WRITE",
        }
    }
}

/// Allow `principal` (a user name, as it logs in) `operation` on `resource`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    pub principal: String,
    pub resource: Resource,
    pub operation: Operation,
}

/// Every permission the services and the console need on `topics`, derived
/// from [`TOPIC_TABLE`] and nothing else:
///
/// - a service may WRITE (and DESCRIBE) the topics it publishes to;
/// - it may READ (and DESCRIBE) the topics it consumes, and WRITE (and
///   DESCRIBE) their dead-letter topics, where it parks what it cannot apply;
/// - it may READ its own consumer group ([`default_group_id`]) only;
/// - every producer is idempotent (`enable.idempotence=true`), hence
///   IDEMPOTENT_WRITE on the cluster;
/// - the console may READ (and DESCRIBE) every topic and dead-letter topic,
///   WRITE only to the topics dead letters are replayed onto (those that have
///   consumers, so dead letters), DESCRIBE the services' groups (their lag),
///   READ its own groups (`ordersystem.console…`, the dead-letter listing
///   and replay groups).
pub fn grants(topics: &Topics) -> Vec<Grant> {
    let mut grants = Vec::new();
    let mut allow = |principal: &str, resource: Resource, operations: &[Operation]| {
        for &operation in operations {
            grants.push(Grant {
                principal: principal.to_owned(),
                resource: resource.clone(),
                operation,
            });
        }
    };
    use Operation::{Describe, IdempotentWrite, Read, Write};
    for service in SERVICES {
        for topic in topics.published_by(service) {
            allow(
                service,
                Resource::Topic(topic.to_owned()),
                &[Write, Describe],
            );
        }
        for topic in topics.consumed_by(service) {
            allow(
                service,
                Resource::Topic(topic.to_owned()),
                &[Read, Describe],
            );
            allow(
                service,
                Resource::Topic(dead_letter_topic(topic)),
                &[Write, Describe],
            );
        }
        allow(service, Resource::Group(default_group_id(service)), &[Read]);
        allow(service, Resource::Cluster, &[IdempotentWrite]);
    }
    for row in TOPIC_TABLE {
        let topic = row.topic.name(topics);
        allow(
            CONSOLE,
            Resource::Topic(topic.to_owned()),
            &[Read, Describe],
        );
        allow(
            CONSOLE,
            Resource::Topic(dead_letter_topic(topic)),
            &[Read, Describe],
        );
        if !row.consumers.is_empty() {
            allow(CONSOLE, Resource::Topic(topic.to_owned()), &[Write]);
        }
    }
    for service in SERVICES {
        allow(
            CONSOLE,
            Resource::Group(default_group_id(service)),
            &[Describe],
        );
    }
    allow(
        CONSOLE,
        Resource::GroupPrefix(default_group_id(CONSOLE)),
        &[Read, Describe],
    );
    allow(
        CONSOLE,
        Resource::Group(DLQ_REPLAY_GROUP.to_owned()),
        &[Read, Describe],
    );
    allow(
        CONSOLE,
        Resource::GroupPrefix(DLQ_LIST_GROUP_PREFIX.to_owned()),
        &[Read, Describe],
    );
    allow(CONSOLE, Resource::Cluster, &[IdempotentWrite]);
    grants.sort();
    grants.dedup();
    grants
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(
        grants: &[Grant],
        principal: &str,
        resource: Resource,
        operation: Operation,
    ) -> bool {
        grants.iter().any(|grant| {
            grant.principal == principal
                && grant.resource == resource
                && grant.operation == operation
        })
    }

    fn topic(name: &str) -> Resource {
        Resource::Topic(name.to_owned())
    }

    #[test]
    fn inventory_may_write_its_own_topics_and_not_order_created() {
        let grants = grants(&Topics::default());
        let inventory = INVENTORY_SERVICE;
        assert!(allowed(
            &grants,
            inventory,
            topic("inventory-reserved"),
            Operation::Write
        ));
        assert!(allowed(
            &grants,
            inventory,
            topic("order-cancelled"),
            Operation::Write
        ));
        assert!(allowed(
            &grants,
            inventory,
            topic("order-created"),
            Operation::Read
        ));
        assert!(!allowed(
            &grants,
            inventory,
            topic("order-created"),
            Operation::Write
        ));
        assert!(!allowed(
            &grants,
            inventory,
            topic("payment-processed"),
            Operation::Write
        ));
    }

    #[test]
    fn a_service_reads_only_what_it_consumes_and_only_its_own_group() {
        let grants = grants(&Topics::default());
        assert!(!allowed(
            &grants,
            PAYMENT_SERVICE,
            topic("order-created"),
            Operation::Read
        ));
        assert!(allowed(
            &grants,
            PAYMENT_SERVICE,
            topic("inventory-reserved"),
            Operation::Read
        ));
        let groups: Vec<&Resource> = grants
            .iter()
            .filter(|grant| grant.principal == PAYMENT_SERVICE)
            .map(|grant| &grant.resource)
            .filter(|resource| matches!(resource, Resource::Group(_) | Resource::GroupPrefix(_)))
            .collect();
        assert_eq!(
            groups,
            [&Resource::Group("ordersystem.payment-service".into())]
        );
    }

    #[test]
    fn notification_service_publishes_nothing_but_dead_letters() {
        let grants = grants(&Topics::default());
        let written: Vec<&Resource> = grants
            .iter()
            .filter(|g| g.principal == NOTIFICATION_SERVICE && g.operation == Operation::Write)
            .map(|g| &g.resource)
            .collect();
        assert_eq!(written.len(), 4);
        assert!(written
            .iter()
            .all(|r| matches!(r, Resource::Topic(name) if name.ends_with(".dlq"))));
    }

    #[test]
    fn the_console_reads_everything_and_writes_only_replay_targets() {
        let topics = Topics::default();
        let grants = grants(&topics);
        for name in topics.all_with_dead_letters() {
            assert!(
                allowed(&grants, CONSOLE, topic(&name), Operation::Read),
                "{name}"
            );
            assert_eq!(
                allowed(&grants, CONSOLE, topic(&name), Operation::Write),
                !name.ends_with(".dlq"),
                "{name}"
            );
        }
    }

    #[test]
    fn every_topic_has_a_publisher_and_the_services_subscribe_as_the_table_says() {
        assert!(TOPIC_TABLE.iter().all(|row| !row.publishers.is_empty()));
        let topics = Topics::default();
        assert_eq!(
            topics.consumed_by(PAYMENT_SERVICE),
            ["inventory-reserved", "order-cancelled"]
        );
        assert_eq!(topics.consumed_by(NOTIFICATION_SERVICE), topics.all());
        assert!(topics.published_by(NOTIFICATION_SERVICE).is_empty());
    }
}
