//! Proves the `sasl_ssl` mode of the Apache Kafka launcher: a three-node
//! KRaft cluster starts with TLS, SCRAM-SHA-512 logins and ACLs; a client
//! with a service's login lists metadata over TLS, and one with a wrong
//! password is refused. A persistent one keeps its CA and logins across a
//! restart, and storage formatted without logins is not started with them.
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

/// Waits until `login` is served metadata listing `brokers` brokers.
fn wait_for_metadata(login: &BaseConsumer, brokers: usize) {
    let started = Instant::now();
    loop {
        match login.fetch_metadata(None, METADATA_TIMEOUT) {
            Ok(metadata) if metadata.brokers().len() == brokers => return,
            other => assert!(
                started.elapsed() < DEADLINE,
                "a valid login got no metadata of {brokers} broker(s): {:?}",
                other.err()
            ),
        }
    }
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
    wait_for_metadata(&valid, 3);
    let metadata = valid.fetch_metadata(None, METADATA_TIMEOUT).unwrap();
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

#[test]
fn a_persistent_sasl_ssl_cluster_started_again_lets_the_same_logins_in() {
    if !wanted() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let options = ApacheKafkaOptions {
        data_dir: Some(dir.path().join("kafka")),
        security: KafkaSecurity::SaslSsl,
        ..ApacheKafkaOptions::default()
    };
    let first = ApacheKafka::start(options.clone()).expect("starting a persistent sasl_ssl node");
    let payment = first.credentials("payment-service").unwrap();
    assert_eq!(
        ApacheKafka::kept_credentials(&dir.path().join("kafka"), "payment-service")
            .unwrap()
            .map(|kept| kept.password),
        Some(payment.password.clone()),
        "tools read the running cluster's logins from its directory"
    );
    drop(first);

    let again = ApacheKafka::start(options).expect("starting the same node again");
    assert_eq!(
        again.credentials("payment-service").unwrap().password,
        payment.password
    );
    wait_for_metadata(
        &client(payment.client_config(&again.bootstrap_servers())),
        1,
    );
    again
        .create_topic("payment-processed", 1)
        .expect("the admin's kept login still creates topics");
}

#[test]
fn storage_formatted_without_logins_is_not_started_in_sasl_ssl_mode() {
    if !wanted() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let plaintext = ApacheKafka::start(ApacheKafkaOptions {
        data_dir: Some(dir.path().to_path_buf()),
        ..ApacheKafkaOptions::default()
    })
    .expect("starting a persistent plaintext node");
    drop(plaintext);
    let refused = ApacheKafka::start(ApacheKafkaOptions {
        data_dir: Some(dir.path().to_path_buf()),
        security: KafkaSecurity::SaslSsl,
        ..ApacheKafkaOptions::default()
    });
    let Err(error) = refused else {
        panic!("storage without logins was started in sasl_ssl mode");
    };
    let error = format!("{error:#}");
    assert!(error.contains("formatted without logins"), "{error}");
}
