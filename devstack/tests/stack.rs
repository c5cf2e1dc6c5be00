//! The README's first command, end to end: devstack brings the whole system
//! up, the seed's order is confirmed (and drawn by the console), each service
//! keeps to its own Postgres role and schema, a killed service is restarted,
//! and SIGTERM stops everything cleanly.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use common::{children_named, wait_until};

mod common;

const DEADLINE: Duration = Duration::from_secs(120);

struct Devstack(Child);

impl Drop for Devstack {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

fn order_status(http: &reqwest::blocking::Client, base: &str, order_id: &str) -> Option<String> {
    let order: Value = http
        .get(format!("{base}/api/orders/{order_id}"))
        .send()
        .ok()?
        .json()
        .ok()?;
    order["status"].as_str().map(str::to_owned)
}

/// SQLSTATE `insufficient_privilege`.
const INSUFFICIENT_PRIVILEGE: &str = "42501";
/// SQLSTATE `invalid_password`.
const INVALID_PASSWORD: &str = "28P01";

/// Connected to devstack's database as each service's role (from
/// `deploy/postgres/init.sql`, as in Compose): the service's tables are its
/// role's, another service's schema answers 42501, and a wrong password is
/// refused (scram-sha-256, not trust).
fn each_service_is_confined_to_its_own_schema(superuser_url: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        use sqlx::Connection;
        let roles = local_infra::service_roles();
        let mut admin = sqlx::PgConnection::connect(superuser_url).await.unwrap();
        for role in &roles {
            let owners: Vec<String> = sqlx::query_scalar(
                "SELECT DISTINCT tableowner::text FROM pg_tables WHERE schemaname = $1",
            )
            .bind(&role.schema)
            .fetch_all(&mut admin)
            .await
            .unwrap();
            assert_eq!(
                owners,
                std::slice::from_ref(&role.role),
                "owners of schema {}",
                role.schema
            );

            let url = role.url(superuser_url).unwrap();
            let mut own = sqlx::PgConnection::connect(&url).await.unwrap();
            let migrations: i64 = sqlx::query_scalar(&format!(
                "SELECT count(*) FROM {}._sqlx_migrations",
                role.schema
            ))
            .fetch_one(&mut own)
            .await
            .unwrap();
            assert!(
                migrations > 0,
                "{} sees no migrations of its own",
                role.role
            );
            for other in roles.iter().filter(|other| other.role != role.role) {
                let read = sqlx::query(&format!(
                    "SELECT count(*) FROM {}._sqlx_migrations",
                    other.schema
                ))
                .execute(&mut own)
                .await;
                let code = read.err().and_then(|e| {
                    e.as_database_error()
                        .and_then(|d| d.code().map(|c| c.into_owned()))
                });
                assert_eq!(
                    code.as_deref(),
                    Some(INSUFFICIENT_PRIVILEGE),
                    "{} reading schema {}",
                    role.role,
                    other.schema
                );
            }

            let wrong = url.replacen(&format!(":{}@", role.password), ":wrong@", 1);
            let refused = sqlx::PgConnection::connect(&wrong).await.err();
            let code = refused.as_ref().and_then(|e| {
                e.as_database_error()
                    .and_then(|d| d.code().map(|c| c.into_owned()))
            });
            assert_eq!(
                code.as_deref(),
                Some(INVALID_PASSWORD),
                "{} with a wrong password",
                role.role
            );
        }
    });
}

#[test]
fn devstack_runs_the_saga_restarts_a_killed_service_and_stops_cleanly() {
    let exe = Path::new(env!("CARGO_BIN_EXE_devstack"));
    let bin_dir = exe.parent().unwrap();
    for service in [
        "order-service",
        "inventory-service",
        "payment-service",
        "notification-service",
        "console",
    ] {
        assert!(
            bin_dir.join(service).exists(),
            "{service} is not built next to devstack; run `cargo test --workspace`"
        );
    }
    let dir = common::state_dir();
    let state = dir.path().join("state");
    // Ports away from a developer's own devstack on 8081-8084, and below the
    // kernel's ephemeral range (32768 up), where a client connection of
    // another process could hold one: Kafka ends at 9093 + 22990.
    let offset = 20_000 + (std::process::id() % 300) as u16 * 10;

    // The README's test commands run this on both brokers.
    let kafka = match std::env::var("TEST_KAFKA").as_deref() {
        Ok("apache") => "apache",
        _ => "embedded",
    };
    let child = Command::new(exe)
        .args(["--dir", state.to_str().unwrap()])
        .args(["--kafka", kafka])
        .args(["--port-offset", &offset.to_string()])
        .args(["--pg-port", &local_infra::free_port().unwrap().to_string()])
        // Use the binaries cargo built for this test run; no nested build.
        .env_remove("CARGO")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let devstack = Devstack(child);

    let stack_file = state.join("stack.json");
    let stack: Value = wait_until("stack.json", DEADLINE, || {
        serde_json::from_str(&std::fs::read_to_string(&stack_file).ok()?).ok()
    });
    assert!(stack["kafkaBootstrap"].as_str().unwrap().contains(':'));
    assert_eq!(stack["kafkaMode"], kafka);
    assert_eq!(stack["kafkaBrokers"].as_array().map(Vec::len), Some(1));
    assert!(stack["databaseUrl"]
        .as_str()
        .unwrap()
        .starts_with("postgres://"));
    let order_base = stack["services"]["order-service"]
        .as_str()
        .unwrap()
        .to_owned();
    let payment_base = stack["services"]["payment-service"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        order_base.ends_with(&format!(":{}", 8081 + offset)),
        "{order_base}"
    );

    let http = reqwest::blocking::Client::new();
    let created = http
        .post(format!("{order_base}/api/orders"))
        .json(&json!({"orderId": "123", "userId": "user1", "status": "PENDING"}))
        .send()
        .unwrap();
    assert_eq!(created.status(), 201);
    wait_until("order 123 confirmed", DEADLINE, || {
        (order_status(&http, &order_base, "123")? == "CONFIRMED").then_some(())
    });

    // Every service ran as its own role, and no role reaches another's schema.
    each_service_is_confined_to_its_own_schema(stack["databaseUrl"].as_str().unwrap());

    // The console runs beside the services and draws the seed order's saga:
    // three steps, each caused by the one before.
    let console_base = stack["services"]["console"].as_str().unwrap();
    assert!(
        console_base.ends_with(&format!(":{}", 9000 + offset)),
        "{console_base}"
    );
    let saga: Value = http
        .get(format!("{console_base}/api/orders/123/saga"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(saga["status"], "CONFIRMED", "{saga}");
    let steps: Vec<&str> = saga["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| step["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        ["OrderCreated", "InventoryReserved", "PaymentProcessed"]
    );
    assert_eq!(saga["arrows"].as_array().map(Vec::len), Some(2), "{saga}");

    // A service dies without warning: devstack starts it again.
    let devstack_pid = devstack.0.id();
    let killed = wait_until("payment-service's pid", DEADLINE, || {
        children_named(devstack_pid, "payment-service")
            .first()
            .map(|process| process.pid)
    });
    // SAFETY: signalling a process we found as our child's child.
    unsafe {
        libc::kill(killed as libc::pid_t, libc::SIGKILL);
    }
    wait_until("payment-service restarted", DEADLINE, || {
        let pids = children_named(devstack_pid, "payment-service");
        let restarted = pids.iter().any(|process| process.pid != killed);
        let healthy = http
            .get(format!("{payment_base}/health"))
            .send()
            .map(|r| r.status() == 200)
            .unwrap_or(false);
        (restarted && healthy).then_some(())
    });
    http.post(format!("{order_base}/api/orders"))
        .json(&json!({"orderId": "after-restart", "userId": "user2", "items": [{"sku": "widget", "quantity": 1}]}))
        .send()
        .unwrap();
    wait_until("the next order confirmed", DEADLINE, || {
        (order_status(&http, &order_base, "after-restart")? == "CONFIRMED").then_some(())
    });

    // A poison message is dead-lettered by both consumers of its topic; the
    // dlq commands list and replay them.
    let bootstrap = stack["kafkaBootstrap"].as_str().unwrap().to_owned();
    let producer: rdkafka::producer::BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    producer
        .send(
            rdkafka::producer::BaseRecord::to("order-created")
                .key("poison")
                .payload("{not json"),
        )
        .map_err(|(err, _)| err)
        .unwrap();
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(10)).unwrap();
    let dlq = |action: &str| {
        let output = Command::new(exe)
            .args([
                "--dir",
                state.to_str().unwrap(),
                "dlq",
                action,
                "--topic",
                "order-created",
            ])
            .env_remove("CARGO")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let listed = wait_until("two dead letters", DEADLINE, || {
        let listed = dlq("list");
        listed.contains("2 dead letter(s)").then_some(listed)
    });
    assert!(
        listed.contains("key=poison") && listed.contains("not a valid event envelope"),
        "{listed}"
    );
    // One message refused by both consumers goes back once.
    let replayed = dlq("replay");
    assert!(
        replayed.contains("replayed 1 message(s) onto order-created"),
        "{replayed}"
    );

    // SIGTERM: everything stops, exit 0, stack.json gone.
    let mut devstack = devstack;
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(devstack_pid as libc::pid_t, libc::SIGTERM);
    }
    let status = devstack.0.wait().unwrap();
    assert!(status.success(), "devstack exited with {status}");
    assert!(!stack_file.exists());
    std::mem::forget(devstack);
}
