//! Proves the `sasl_ssl` mode of the Apache Kafka launcher: a three-node
//! KRaft cluster starts with TLS, SCRAM-SHA-512 logins and ACLs; a client
//! with a service's login lists metadata over TLS, and one with a wrong
//! password is refused.
//!
//! Needs a JDK and Maven, so it runs in the real-broker pass only
//! (`TEST_KAFKA=apache`); elsewhere it says it was skipped.

use std::time::{Duration, Instant};

use local_infra::{ApacheKafka, ApacheKafkaOptions, KafkaSecurity};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

/// How long one metadata request may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a valid login may take to be served (a fresh cluster settles).
const DEADLINE: Duration = Duration::from_secs(60);

fn wanted() -> bool {
    let wanted = std::env::var("TEST_KAFKA").is_ok_and(|mode| mode == "apache");
    if !wanted {
        eprintln!(
            "skipped: set TEST_KAFKA=apache to test the sasl_ssl broker (needs a JDK and Maven)"
        );
    }
    wanted
}

fn client(config: ClientConfig) -> BaseConsumer {
    let mut config = config;
    config.set("log.connection.close", "false");
    config.create().expect("a Kafka client")
}

#[test]
fn a_three_node_sasl_ssl_cluster_serves_valid_logins_and_refuses_a_wrong_password() {
    if !wanted() {
        return;
    }
    let kafka = ApacheKafka::start(ApacheKafkaOptions {
        nodes: 3,
        security: KafkaSecurity::SaslSsl,
        ..ApacheKafkaOptions::default()
    })
    .expect("starting a three-node sasl_ssl cluster");
    assert!(kafka.is_secured());
    kafka
        .create_topic("order-created", 3)
        .expect("the admin creates a topic");
    let inventory = kafka
        .credentials("inventory-service")
        .expect("inventory-service has a login");
    assert_eq!(inventory.ca_location, kafka.ca_location().unwrap());

    let valid = client(inventory.client_config(&kafka.bootstrap_servers()));
    let started = Instant::now();
    let metadata = loop {
        match valid.fetch_metadata(None, METADATA_TIMEOUT) {
            Ok(metadata) if metadata.brokers().len() == 3 => break metadata,
            other => assert!(
                started.elapsed() < DEADLINE,
                "a valid login got no metadata of three brokers: {:?}",
                other.err()
            ),
        }
    };
    assert!(
        metadata
            .topics()
            .iter()
            .any(|topic| topic.name() == "order-created"),
        "inventory-service may describe a topic it consumes"
    );

    let wrong = client(
        inventory
            .with_password("not-the-password")
            .client_config(&kafka.bootstrap_servers()),
    );
    let refused = wrong.fetch_metadata(None, METADATA_TIMEOUT);
    assert!(
        refused.is_err(),
        "a wrong password must get no metadata, got {:?}",
        refused.map(|m| m.brokers().len())
    );

    let plaintext = client({
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", kafka.bootstrap_servers());
        config
    });
    assert!(
        plaintext.fetch_metadata(None, METADATA_TIMEOUT).is_err(),
        "a client without TLS and login must get nothing"
    );
}
