//! The stack the way `docker-compose.yml` configures it, minus the
//! containers: ZooKeeper and a Kafka broker in ZooKeeper mode configured from
//! the compose file's `KAFKA_*` variables, the compose file's `topic-init`
//! script run with Kafka's own `kafka-topics` tool, Postgres set up by
//! `deploy/postgres/init.sql`, and each service started with exactly the
//! environment the compose file gives it (host names mapped to loopback,
//! ports to free ones). Every service turns ready and the seed's order ends
//! CONFIRMED; the console, started from its compose environment too, draws
//! that order's saga and lists the compose topics.
//!
//! Needs a JDK and Maven, so it runs in the real-broker pass only
//! (`TEST_KAFKA=apache`); elsewhere it says it was skipped.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use deploy_checks::{
    console_image, postgres_as_compose_initialises_it, services, Compose, DatabaseUrl, CONSOLE,
    POSTGRES,
};
use local_infra::{TestKafkaMode, ZooKeeperKafka, ZooKeeperKafkaOptions};

const COMPOSE: &str = "docker-compose.yml";
const KAFKA: &str = "kafka";
const TOPIC_INIT: &str = "topic-init";
/// Broker settings the launcher owns: where it listens and its ZooKeeper.
const LAUNCHER_SETTINGS: [&str; 5] = [
    "KAFKA_ZOOKEEPER_CONNECT",
    "KAFKA_LISTENERS",
    "KAFKA_ADVERTISED_LISTENERS",
    "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
    "KAFKA_INTER_BROKER_LISTENER_NAME",
];
const DEADLINE: Duration = Duration::from_secs(90);
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// The seed's request body, unchanged.
const SEED_ORDER: &str = r#"{"orderId":"123","userId":"user1","status":"PENDING"}"#;

/// A Confluent image's `KAFKA_FOO_BAR` is the broker's `foo.bar`.
fn broker_property(variable: &str) -> Option<String> {
    variable
        .strip_prefix("KAFKA_")
        .map(|rest| rest.to_ascii_lowercase().replace('_', "."))
}

/// Replaces every compose address (`kafka:29092`, `localhost:9092`, ...) in
/// `value` by where it really is.
fn map_addresses(value: &str, addresses: &[(String, String)]) -> String {
    addresses
        .iter()
        .fold(value.to_owned(), |value, (compose, real)| {
            value.replace(compose, real)
        })
}

async fn wait_for_http(
    http: &reqwest::Client,
    url: &str,
    wanted: impl Fn(&serde_json::Value) -> bool,
) {
    let started = Instant::now();
    loop {
        if let Ok(response) = http.get(url).send().await {
            if response.status().is_success() {
                if let Ok(body) = response.json::<serde_json::Value>().await {
                    if wanted(&body) {
                        return;
                    }
                }
            }
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{url} never answered as wanted"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_topology_on_zookeeper_confirms_the_seed_order() {
    if TestKafkaMode::from_env().ok() != Some(TestKafkaMode::Apache) {
        eprintln!("skipped: the ZooKeeper topology needs TEST_KAFKA=apache (a JDK and Maven)");
        return;
    }
    let compose = Compose::load(COMPOSE);

    // The broker, configured from the compose file.
    let broker_env = compose.environment(KAFKA);
    let protocol_map = &broker_env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"];
    let listeners: Vec<String> = protocol_map
        .split(',')
        .map(|entry| entry.split(':').next().unwrap_or_default().to_owned())
        .collect();
    let properties: Vec<(String, String)> = broker_env
        .iter()
        .filter(|(key, _)| !LAUNCHER_SETTINGS.contains(&key.as_str()))
        .filter_map(|(key, value)| broker_property(key).map(|key| (key, value.clone())))
        .collect();
    let kafka = tokio::task::block_in_place(|| {
        ZooKeeperKafka::start(ZooKeeperKafkaOptions {
            listeners: listeners.clone(),
            inter_broker_listener: broker_env["KAFKA_INTER_BROKER_LISTENER_NAME"].clone(),
            properties,
        })
    })
    .expect("ZooKeeper and Kafka start as compose configures them");
    // Compose's advertised addresses, by listener, mapped to the real ones.
    let mut addresses: Vec<(String, String)> = broker_env["KAFKA_ADVERTISED_LISTENERS"]
        .split(',')
        .filter_map(|entry| entry.split_once("://"))
        .map(|(name, address)| {
            let real = kafka.address(name).expect("a listener of ours");
            (address.to_owned(), real.to_owned())
        })
        .collect();

    // Postgres as the compose file's postgres service initialises it.
    let (cluster, _) = postgres_as_compose_initialises_it(&compose).await;
    let postgres_port = compose
        .ports(POSTGRES)
        .first()
        .map(|port| port.container)
        .expect("postgres publishes its port");
    addresses.push((
        format!("@{POSTGRES}:{postgres_port}/"),
        format!("@127.0.0.1:{}/", cluster.port()),
    ));

    // topic-init's own script, with Kafka's kafka-topics on PATH.
    let tools = tempfile::tempdir().unwrap();
    let shim = tools.path().join("kafka-topics");
    std::fs::write(
        &shim,
        format!(
            "#!/bin/sh\nexec java -cp '{}/*' org.apache.kafka.tools.TopicCommand \"$@\"\n",
            kafka.runtime().jars().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let script = compose.service(TOPIC_INIT)["command"][0]
        .as_str()
        .expect("topic-init's command is a script")
        // Compose's escape for a literal `$`.
        .replace("$$", "$");
    let path = format!(
        "{}:{}",
        tools.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let topic_init_env: HashMap<String, String> = compose
        .environment(TOPIC_INIT)
        .into_iter()
        .map(|(key, value)| (key, map_addresses(&value, &addresses)))
        .collect();
    let ran = tokio::task::block_in_place(|| {
        Command::new("bash")
            .arg("-c")
            .arg(&script)
            .envs(&topic_init_env)
            .env("PATH", path)
            .output()
    })
    .expect("running topic-init's script");
    let listed = String::from_utf8_lossy(&ran.stdout);
    assert!(
        ran.status.success(),
        "topic-init failed: {listed}{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    for topic in topic_init_env["TOPICS"].split_whitespace() {
        assert!(
            listed.lines().any(|line| line == topic),
            "{topic} not listed: {listed}"
        );
    }

    // Each service with exactly its compose environment, addresses mapped.
    let mut stops = Vec::new();
    let mut running = Vec::new();
    let mut urls = HashMap::new();
    for service in services() {
        let mut env: HashMap<String, String> = compose
            .environment(service.name)
            .into_iter()
            .map(|(key, value)| (key, map_addresses(&value, &addresses)))
            .collect();
        let config = (service.load)(&env).unwrap();
        assert!(
            DatabaseUrl::parse(&config.database_url).unwrap().host == "127.0.0.1",
            "{}: DATABASE_URL mapped",
            service.name
        );
        env.insert("HOST".into(), "127.0.0.1".into());
        env.insert("PORT".into(), "0".into());
        let host = (service.build)(env)
            .await
            .unwrap_or_else(|err| panic!("{} does not start: {err:#}", service.name));
        urls.insert(service.name, format!("http://127.0.0.1:{}", host.port()));
        let service_port = &compose.environment(service.name)["PORT"];
        addresses.push((
            format!("http://{}:{service_port}", service.name),
            format!("http://127.0.0.1:{}", host.port()),
        ));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        stops.push(stop);
        running.push(tokio::spawn(host.run_until_stopped(async {
            let _ = stopped.await;
        })));
    }

    let http = reqwest::Client::new();
    for url in urls.values() {
        wait_for_http(&http, &format!("{url}/health/ready"), |body| {
            body["status"] == "UP"
        })
        .await;
    }
    let order_url = &urls["order-service"];
    let response = http
        .post(format!("{order_url}/api/orders"))
        .header("Content-Type", "application/json")
        .body(SEED_ORDER)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::CREATED);
    wait_for_http(&http, &format!("{order_url}/api/orders/123"), |order| {
        order["status"] == "CONFIRMED"
    })
    .await;

    // The console, from its compose environment: it reaches the services by
    // their compose names and Kafka on the internal listener.
    let mut env: HashMap<String, String> = compose
        .environment(CONSOLE)
        .into_iter()
        .map(|(key, value)| (key, map_addresses(&value, &addresses)))
        .collect();
    env.insert("HOST".into(), "127.0.0.1".into());
    env.insert("PORT".into(), "0".into());
    let config = console_image().load(&env).unwrap();
    let console = console::Application::build(config)
        .await
        .expect("the console starts from its compose environment");
    let console_url = format!("http://127.0.0.1:{}", console.port());
    let (stop_console, console_stopped) = tokio::sync::oneshot::channel::<()>();
    let console = tokio::spawn(console.run_until_stopped(async {
        let _ = console_stopped.await;
    }));
    wait_for_http(
        &http,
        &format!("{console_url}/api/orders/123/saga"),
        |saga| saga["status"] == "CONFIRMED" && saga["steps"].as_array().map(Vec::len) == Some(3),
    )
    .await;
    wait_for_http(&http, &format!("{console_url}/api/topics"), |topics| {
        let listed: Vec<&str> = topics
            .as_array()
            .map(|topics| topics.iter().filter_map(|t| t["name"].as_str()).collect())
            .unwrap_or_default();
        topic_init_env["TOPICS"]
            .split_whitespace()
            .all(|topic| listed.contains(&topic))
    })
    .await;
    let _ = stop_console.send(());
    console.await.unwrap().unwrap();

    eprintln!(
        "compose topology: ZooKeeper at {}, Kafka {} in ZooKeeper mode, seed order CONFIRMED",
        kafka.zookeeper_address(),
        kafka.version()
    );

    for stop in stops {
        let _ = stop.send(());
    }
    for service in running {
        service.await.unwrap().unwrap();
    }
}
