//! The Docker deployment against the code, without Docker: what a typo in
//! `docker-compose.yml`, `kafka-infra/docker-compose.yml`, the `Dockerfile`,
//! `deploy/postgres/init.sql` or `docs/infra.dot` would break.
//!
//! Runs as root and as an ordinary user; the database test starts a
//! temporary Postgres and an embedded broker.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use deploy_checks::{
    console_image, postgres_as_compose_initialises_it, read, services, workspace_root, Compose,
    DatabaseUrl, CONSOLE, ENV_READ_OUTSIDE_CONFIG, POSTGRES,
};
use local_infra::EmbeddedKafka;
use service_kit::{CommonConfig, HEALTHCHECK_ARG};
use sqlx::{Connection, PgConnection};

const COMPOSE: &str = "docker-compose.yml";
const KAFKA_INFRA: &str = "kafka-infra/docker-compose.yml";
const DOCKERFILE: &str = "Dockerfile";
const CI: &str = ".ci/run";
const DIAGRAM_SOURCE: &str = "docs/infra.dot";
const DIAGRAM: &str = "docs/infra.svg";

/// The one-shot step that creates the topics, and the Kafka and Postgres services.
const TOPIC_INIT: &str = "topic-init";
const KAFKA: &str = "kafka";
/// The services kafka-infra/docker-compose.yml runs on its own.
const BROKER_SERVICES: [&str; 3] = ["zookeeper", "kafka", "kafdrop"];

/// Where the Dockerfile puts the service binary; its HEALTHCHECK runs it.
const BINARY_IN_IMAGE: &str = "/usr/local/bin/service";
/// The build command the Dockerfile and CI share, followed by the package.
const RELEASE_BUILD: &str = "cargo build --release --locked -p";

/// The compose environment of `service`, as the map a configuration loader takes.
fn compose_env(compose: &Compose, service: &str) -> HashMap<String, String> {
    compose.environment(service).into_iter().collect()
}

/// Each service's configuration inside the compose deployment.
fn effective_configs(compose: &Compose) -> Vec<(&'static str, CommonConfig)> {
    services()
        .into_iter()
        .map(|service| {
            let config =
                (service.load)(&compose_env(compose, service.name)).unwrap_or_else(|err| {
                    panic!(
                        "{COMPOSE}: {} refuses its environment: {err:#}",
                        service.name
                    )
                });
            (service.name, config)
        })
        .collect()
}

/// The same for every image compose builds: the services and the console.
fn image_configs(compose: &Compose) -> Vec<(&'static str, CommonConfig)> {
    let mut configs = effective_configs(compose);
    let console = console_image()
        .load(&compose_env(compose, CONSOLE))
        .unwrap_or_else(|err| panic!("{COMPOSE}: the console refuses its environment: {err:#}"));
    configs.push((CONSOLE, console.common));
    configs
}

/// The topics topic-init creates.
fn created_topics(compose: &Compose) -> BTreeSet<String> {
    compose.environment(TOPIC_INIT)["TOPICS"]
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Kafka's advertised address for `listener` (`INTERNAL`, `EXTERNAL`).
fn advertised(compose: &Compose, listener: &str) -> String {
    let listeners = &compose.environment(KAFKA)["KAFKA_ADVERTISED_LISTENERS"];
    listeners
        .split(',')
        .find_map(|l| l.strip_prefix(&format!("{listener}://")))
        .unwrap_or_else(|| panic!("Kafka advertises no {listener} listener: {listeners}"))
        .to_owned()
}

#[test]
fn compose_builds_the_four_services_and_the_console_each_with_its_own_binary() {
    let compose = Compose::load(COMPOSE);
    let built: BTreeSet<String> = compose.built_services().into_iter().collect();
    let mut known: BTreeSet<String> = services().iter().map(|s| s.name.to_owned()).collect();
    known.insert(CONSOLE.to_owned());
    assert_eq!(built, known);
    for name in &built {
        assert_eq!(
            compose.build_args(name).get("SERVICE"),
            Some(name),
            "{name} must be built from its own package"
        );
    }
}

#[test]
fn every_variable_given_to_a_service_is_one_its_configuration_reads() {
    let compose = Compose::load(COMPOSE);
    let images = services()
        .into_iter()
        .map(|service| (service.name, service.accepted_env))
        .chain([(CONSOLE, console_image().accepted_env)]);
    for (name, accepted_env) in images {
        let unknown: Vec<String> = compose
            .environment(name)
            .into_keys()
            .filter(|key| {
                !accepted_env.contains(key) && !ENV_READ_OUTSIDE_CONFIG.contains(&key.as_str())
            })
            .collect();
        assert!(
            unknown.is_empty(),
            "{COMPOSE}: {name} does not read {unknown:?}; it reads {accepted_env:?}"
        );
    }
    // And every value parses: the configuration loads.
    image_configs(&compose);
}

#[test]
fn each_service_listens_on_the_port_it_publishes_exposes_and_health_checks() {
    let compose = Compose::load(COMPOSE);
    for (name, config) in image_configs(&compose) {
        let ports = compose.ports(name);
        assert_eq!(ports.len(), 1, "{name} publishes its HTTP port once");
        assert_eq!(
            ports[0].container, config.port,
            "{name}: published container port vs PORT"
        );
        assert_eq!(
            ports[0].host.0, config.port,
            "{name}: the (first) host port is the service's usual port"
        );
        assert_eq!(
            compose.build_args(name).get("PORT"),
            Some(&config.port.to_string()),
            "{name}: the image's PORT (EXPOSE, health check) vs the compose PORT"
        );
        assert!(
            compose.service(name)["healthcheck"].is_badvalue(),
            "{name}: the image's HEALTHCHECK (which reads PORT) applies"
        );
    }

    // The image: the server, EXPOSE and the health check all read the one PORT.
    let dockerfile = read(DOCKERFILE);
    for line in ["ENV PORT=${PORT}", "EXPOSE ${PORT}"] {
        assert!(
            dockerfile.lines().any(|l| l.trim() == line),
            "{DOCKERFILE} lacks {line:?}"
        );
    }
    let healthcheck = format!(r#"CMD ["{BINARY_IN_IMAGE}", "{HEALTHCHECK_ARG}"]"#);
    assert!(
        dockerfile.contains("HEALTHCHECK ") && dockerfile.contains(&healthcheck),
        "{DOCKERFILE}: HEALTHCHECK must run {healthcheck}"
    );
    assert!(
        dockerfile.contains(&format!("/target/release/${{SERVICE}} {BINARY_IN_IMAGE}")),
        "{DOCKERFILE}: the service binary goes to {BINARY_IN_IMAGE}"
    );
}

#[test]
fn every_topic_a_service_uses_is_created_by_topic_init_with_its_partitions() {
    let compose = Compose::load(COMPOSE);
    let created = created_topics(&compose);
    let init = compose.environment(TOPIC_INIT);
    for (name, config) in effective_configs(&compose) {
        for topic in config.topics().all_with_dead_letters() {
            assert!(
                created.contains(&topic),
                "{TOPIC_INIT} does not create {topic}, used by {name}"
            );
        }
        assert_eq!(
            init["PARTITIONS"],
            config.kafka.topic_partitions.to_string(),
            "{name}"
        );
        assert_eq!(
            init["REPLICATION_FACTOR"],
            config.kafka.replication_factor.to_string(),
            "{name}"
        );
        assert_eq!(
            config.kafka.bootstrap_servers,
            advertised(&compose, "INTERNAL"),
            "{name} uses Kafka's container listener"
        );
    }
    assert_eq!(init["BOOTSTRAP_SERVERS"], advertised(&compose, "INTERNAL"));
    assert!(
        created.contains("order-cancelled") && created.contains("order-cancelled.dlq"),
        "the cancellation topic is created ahead of the code that uses it"
    );
    let depends = compose.depends_on(TOPIC_INIT);
    assert_eq!(
        depends.get(KAFKA).map(String::as_str),
        Some("service_healthy")
    );
}

#[test]
fn kafka_listens_on_9092_for_the_host_and_kafdrop_uses_the_container_listener() {
    let compose = Compose::load(COMPOSE);
    assert_eq!(advertised(&compose, "EXTERNAL"), "localhost:9092");
    assert!(compose
        .ports(KAFKA)
        .iter()
        .any(|p| p.host == (9092, 9092) && p.container == 9092));
    assert_eq!(
        compose.environment("kafdrop")["KAFKA_BROKERCONNECT"],
        advertised(&compose, "INTERNAL")
    );
    assert!(compose
        .ports("kafdrop")
        .iter()
        .any(|p| p.host == (9000, 9000)));
    assert!(compose
        .ports("zookeeper")
        .iter()
        .any(|p| p.host == (2181, 2181)));
}

#[test]
fn services_wait_for_healthy_dependencies_and_restart_unless_stopped() {
    let compose = Compose::load(COMPOSE);
    for name in compose.built_services() {
        let depends = compose.depends_on(&name);
        let mut needed = vec![
            (KAFKA, "service_healthy"),
            (TOPIC_INIT, "service_completed_successfully"),
        ];
        // The console has no database; the services each have a schema.
        if name != CONSOLE {
            needed.push((POSTGRES, "service_healthy"));
        }
        for (dependency, condition) in needed {
            assert_eq!(
                depends.get(dependency).map(String::as_str),
                Some(condition),
                "{name} must wait for {dependency}"
            );
        }
        assert_eq!(
            compose.setting(&name, "restart").as_deref(),
            Some("unless-stopped"),
            "{name}"
        );
    }
    for dependency in [POSTGRES, KAFKA, "zookeeper"] {
        assert!(
            !compose.service(dependency)["healthcheck"].is_badvalue(),
            "services wait for {dependency} to be healthy, so it needs a health check"
        );
    }
}

/// What a service still does after its shutdown timeout: exit.
const EXIT_HEADROOM: Duration = Duration::from_secs(2);

#[test]
fn docker_gives_every_service_longer_to_stop_than_its_shutdown_may_take() {
    let compose = Compose::load(COMPOSE);
    for (name, config) in image_configs(&compose) {
        let grace = compose
            .setting(name, "stop_grace_period")
            .unwrap_or_else(|| panic!("{name}: no stop_grace_period (Docker's default is 10 s)"));
        let grace = compose_duration(&grace)
            .unwrap_or_else(|| panic!("{name}: stop_grace_period {grace:?} is not a duration"));
        assert!(
            config.shutdown_timeout + EXIT_HEADROOM <= grace,
            "{name}: SIGKILL after {grace:?} would cut short a shutdown allowed {:?}",
            config.shutdown_timeout
        );
    }
}

/// A Compose duration such as `20s`, `1m30s` or `500ms`.
fn compose_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let value: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        total += match &rest[..unit] {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value * 60),
            "h" => Duration::from_secs(value * 3600),
            _ => return None,
        };
        rest = &rest[unit..];
    }
    Some(total)
}

#[test]
fn compose_durations_are_read_like_compose_does() {
    assert_eq!(compose_duration("20s"), Some(Duration::from_secs(20)));
    assert_eq!(compose_duration("1m30s"), Some(Duration::from_secs(90)));
    assert_eq!(compose_duration("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(compose_duration("soon"), None);
}

#[test]
fn services_can_be_scaled_without_port_or_name_clashes() {
    let compose = Compose::load(COMPOSE);
    let names = compose.service_names();
    for name in compose.built_services() {
        assert_eq!(
            compose.setting(&name, "container_name"),
            None,
            "{name} could not be scaled"
        );
    }
    let inventory = compose.ports("inventory-service");
    assert!(
        inventory[0].is_range(),
        "extra inventory-service replicas need host ports"
    );
    // A replica takes the first free port of its range: any fixed host port
    // of another service inside the range must be taken first.
    for name in compose.built_services() {
        for range in compose.ports(&name).into_iter().filter(|p| p.is_range()) {
            for other in names.iter().filter(|other| **other != name) {
                for fixed in compose.ports(other).into_iter().filter(|p| !p.is_range()) {
                    if range.host_ports().contains(&fixed.host.0) {
                        assert!(
                            compose.depends_on(&name).contains_key(other),
                            "{name}'s host ports {:?} include {other}'s {}: {name} must start after it",
                            range.host,
                            fixed.host.0
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn kafka_infra_runs_the_same_broker_as_the_full_stack() {
    let full = Compose::load(COMPOSE);
    let alone = Compose::load(KAFKA_INFRA);
    assert_eq!(
        alone.service_names(),
        BROKER_SERVICES.map(String::from).to_vec()
    );
    for name in BROKER_SERVICES {
        assert_eq!(
            alone.setting(name, "image"),
            full.setting(name, "image"),
            "{name}"
        );
        assert_eq!(alone.environment(name), full.environment(name), "{name}");
        assert_eq!(alone.ports(name), full.ports(name), "{name}");
        assert_eq!(alone.depends_on(name), full.depends_on(name), "{name}");
    }
}

#[test]
fn every_image_is_pinned_to_a_version() {
    for file in [COMPOSE, KAFKA_INFRA] {
        let compose = Compose::load(file);
        for name in compose.service_names() {
            if let Some(image) = compose.setting(&name, "image") {
                assert_pinned(&image, &format!("{file}: {name}"));
            }
        }
    }
    let dockerfile = read(DOCKERFILE);
    let images: Vec<&str> = dockerfile
        .lines()
        .filter_map(|line| line.strip_prefix("ARG "))
        .filter_map(|arg| arg.split_once("_IMAGE=").map(|(_, image)| image))
        .collect();
    assert_eq!(images.len(), 2, "{DOCKERFILE}: a build and a runtime image");
    for image in images {
        assert_pinned(image, DOCKERFILE);
    }
    for from in dockerfile.lines().filter_map(|l| l.strip_prefix("FROM ")) {
        let image = from.split_whitespace().next().unwrap_or_default();
        assert!(
            image.starts_with("${") || image == "chef",
            "{DOCKERFILE}: FROM {image}: images are named once, in the pinned ARGs"
        );
    }
}

fn assert_pinned(image: &str, place: &str) {
    let tag = image.rsplit_once(':').map(|(_, tag)| tag).unwrap_or("");
    assert!(
        tag.chars().next().is_some_and(|c| c.is_ascii_digit()) && tag != "latest",
        "{place}: image {image} must name an explicit version"
    );
}

#[test]
fn the_image_builds_with_the_command_ci_runs_for_every_service() {
    let dockerfile = read(DOCKERFILE);
    assert!(
        dockerfile.contains(&format!("RUN {RELEASE_BUILD} ${{SERVICE}}")),
        "{DOCKERFILE} must build with `{RELEASE_BUILD} <service>`"
    );
    let ci = read(CI);
    let build_line = ci
        .lines()
        .find(|line| line.contains(RELEASE_BUILD))
        .unwrap_or_else(|| panic!("{CI} must run `{RELEASE_BUILD} <service>`"));
    for name in services().iter().map(|s| s.name).chain([CONSOLE]) {
        assert!(
            ci.contains(&format!(" {name}")) && build_line.contains("$service"),
            "{CI} must release-build {name}"
        );
    }
}

#[test]
fn the_console_beside_kafdrop_reads_kafka_and_the_services_apis_and_no_database() {
    let compose = Compose::load(COMPOSE);
    let ports = |name: &str| -> Vec<u16> { compose.ports(name).iter().map(|p| p.host.0).collect() };
    assert_eq!(ports("kafdrop"), [9000], "Kafdrop keeps 9000");
    assert_eq!(ports(CONSOLE), [9001], "the console sits beside it");

    let env = compose.environment(CONSOLE);
    assert!(
        !env.contains_key("DATABASE_URL"),
        "the console has no database access of its own"
    );
    assert!(!compose.depends_on(CONSOLE).contains_key(POSTGRES));
    let console = console_image()
        .load(&compose_env(&compose, CONSOLE))
        .unwrap();
    assert_eq!(
        console.common.kafka.bootstrap_servers,
        advertised(&compose, "INTERNAL")
    );
    // Each service's URL is its compose name and the port it listens on.
    for (service, url) in deploy_checks::console_service_urls(&console) {
        let port = &compose.environment(service)["PORT"];
        assert_eq!(
            *url,
            format!("http://{service}:{port}"),
            "{CONSOLE} → {service}"
        );
    }
    // It shows the groups the services consume in.
    let groups = console.known_groups();
    for (name, config) in effective_configs(&compose) {
        assert!(
            groups.contains(&config.kafka.group_id),
            "the console does not show {name}'s group {}",
            config.kafka.group_id
        );
    }
}

#[test]
fn the_build_toolchain_is_new_enough_for_every_locked_dependency() {
    let dockerfile = read(DOCKERFILE);
    let toolchain = dockerfile
        .lines()
        .find_map(|line| line.strip_prefix("ARG RUST_IMAGE=rust:"))
        .and_then(|tag| parse_version(tag.split('-').next().unwrap_or_default()))
        .unwrap_or_else(|| panic!("{DOCKERFILE}: ARG RUST_IMAGE=rust:<version>-..."));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = std::process::Command::new(cargo)
        .current_dir(workspace_root())
        .args(["metadata", "--locked", "--format-version", "1"])
        .args(["--filter-platform", "x86_64-unknown-linux-gnu"])
        .args(["--filter-platform", "aarch64-unknown-linux-gnu"])
        .output()
        .expect("running cargo metadata");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    for package in metadata["packages"].as_array().unwrap() {
        if let Some(required) = package["rust_version"].as_str().and_then(parse_version) {
            assert!(
                required <= toolchain,
                "{DOCKERFILE}: rust {toolchain:?} is older than {} needs ({required:?})",
                package["name"]
            );
        }
    }
}

fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let mut parts = text.split('.').map(|p| p.parse::<u32>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

#[test]
fn the_build_context_leaves_out_build_output_and_local_state() {
    let ignored = read(".dockerignore");
    for entry in ["target", ".devstack"] {
        assert!(
            ignored.lines().any(|l| l.trim() == entry),
            ".dockerignore lacks {entry}"
        );
    }
}

#[test]
fn the_diagram_shows_every_container_port_topic_and_schema() {
    let compose = Compose::load(COMPOSE);
    let mut names: BTreeSet<String> = compose.service_names().into_iter().collect();
    names.extend(created_topics(&compose));
    for (_, config) in effective_configs(&compose) {
        names.insert(config.database_schema.clone());
        names.insert(DatabaseUrl::parse(&config.database_url).unwrap().user);
    }
    for name in compose.service_names() {
        for port in compose.ports(&name) {
            names.insert(port.host.0.to_string());
        }
    }
    for file in [DIAGRAM_SOURCE, DIAGRAM] {
        let text = decode_xml_character_references(&read(file));
        let missing: Vec<&String> = names
            .iter()
            .filter(|n| !text.contains(n.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "{file} does not show {missing:?} (edit {DIAGRAM_SOURCE}, then regenerate: \
             dot -Tsvg {DIAGRAM_SOURCE} -o {DIAGRAM})"
        );
    }
}

/// Graphviz writes some characters of SVG text as `&#NN;` (`-` as `&#45;`).
fn decode_xml_character_references(text: &str) -> String {
    let mut decoded = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("&#") {
        decoded.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let character = after.split_once(';').and_then(|(code, _)| {
            let code = match code.strip_prefix('x') {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => code.parse().ok()?,
            };
            Some((char::from_u32(code)?, after.find(';')? + 1))
        });
        match character {
            Some((c, length)) => {
                decoded.push(c);
                rest = &after[length..];
            }
            None => {
                decoded.push_str("&#");
                rest = after;
            }
        }
    }
    decoded.push_str(rest);
    decoded
}

/// The strongest check of the database set-up: the init script on a real
/// Postgres, each service started as its role exactly as compose configures
/// it, then every role kept out of every other service's schema.
#[tokio::test(flavor = "multi_thread")]
async fn each_service_starts_as_its_own_role_and_cannot_read_another_services_schema() {
    let compose = Compose::load(COMPOSE);
    let (cluster, database) = postgres_as_compose_initialises_it(&compose).await;

    let kafka = EmbeddedKafka::start(1).unwrap();
    let partitions: i32 = compose.environment(TOPIC_INIT)["PARTITIONS"]
        .parse()
        .unwrap();
    for topic in created_topics(&compose) {
        kafka.create_topic(&topic, partitions).unwrap();
    }

    // (service, schema, the role's URL on the test cluster)
    let mut roles = Vec::new();
    for service in services() {
        let mut env = compose_env(&compose, service.name);
        let config = (service.load)(&env).unwrap();
        let url = DatabaseUrl::parse(&config.database_url).unwrap();
        assert_eq!(
            url.host, POSTGRES,
            "{}: DATABASE_URL names the postgres service",
            service.name
        );
        assert_eq!(
            url.database, database,
            "{}: one database for all",
            service.name
        );
        assert!(
            compose
                .ports(POSTGRES)
                .iter()
                .any(|p| p.container == url.port),
            "{}: Postgres listens on {}",
            service.name,
            url.port
        );
        let role_url = url.on("127.0.0.1", cluster.port());
        env.insert("DATABASE_URL".into(), role_url.clone());
        env.insert("KAFKA_BOOTSTRAP_SERVERS".into(), kafka.bootstrap_servers());
        env.insert("HOST".into(), "127.0.0.1".into());
        env.insert("PORT".into(), "0".into());
        let host = (service.build)(env).await.unwrap_or_else(|err| {
            panic!(
                "{} does not start as role {}: {err:#}",
                service.name, url.user
            )
        });
        drop(host);

        let mut as_role = PgConnection::connect(&role_url).await.unwrap();
        let (user, superuser_role, may_create_schemas): (String, bool, bool) = sqlx::query_as(
            "SELECT current_user::text, rolsuper, has_database_privilege(current_database(), 'CREATE') \
             FROM pg_roles WHERE rolname = current_user",
        )
        .fetch_one(&mut as_role)
        .await
        .unwrap();
        assert_eq!(user, url.user);
        assert!(
            !superuser_role && !may_create_schemas,
            "{user} has more rights than its schema"
        );
        let owners: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT tableowner::text FROM pg_tables WHERE schemaname = $1",
        )
        .bind(&config.database_schema)
        .fetch_all(&mut as_role)
        .await
        .unwrap();
        assert_eq!(
            owners,
            std::slice::from_ref(&url.user),
            "{}'s tables belong to its role",
            service.name
        );
        roles.push((service.name, config.database_schema.clone(), role_url));
    }

    for (name, _, url) in &roles {
        let mut as_role = PgConnection::connect(url).await.unwrap();
        for (other, schema, _) in roles.iter().filter(|(other, ..)| other != name) {
            let read = sqlx::query(&format!("SELECT * FROM {schema}._sqlx_migrations LIMIT 1"))
                .fetch_optional(&mut as_role)
                .await;
            match read {
                Err(sqlx::Error::Database(err)) if err.code().as_deref() == Some("42501") => {}
                other_result => {
                    panic!("{name} reading {other}'s schema {schema}: {other_result:?}")
                }
            }
        }
    }
}
