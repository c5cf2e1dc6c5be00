//! What the Docker deployment is checked against, without Docker.
//!
//! The deployment is text — `docker-compose.yml`, `kafka-infra/docker-compose.yml`,
//! the `Dockerfile`, `deploy/postgres/init.sql`, `docs/infra.dot` — and a typo
//! in it breaks nothing until someone runs it. The tests in `tests/` read
//! those files with the helpers here and hold them against the code: each
//! service's configuration ([`Service`], built from the service crates
//! themselves, so the checks follow the code as it grows), its topics, its
//! schema, and the command CI builds it with; the console's configuration
//! ([`console_image`]) the same way. The Helm chart is rendered and read by
//! [`chart`] and held against the same descriptions.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use futures::future::LocalBoxFuture;
use local_infra::PostgresCluster;
use service_kit::{CommonConfig, ServiceConfig, ServiceHost};
use sqlx::{Connection, PgConnection};
use yaml_rust2::{Yaml, YamlLoader};

pub mod chart;

/// Variables the services read outside their configuration: the log filter
/// (read by the logging set-up) and the configuration file's path.
pub const ENV_READ_OUTSIDE_CONFIG: [&str; 2] = ["RUST_LOG", service_kit::config::CONFIG_FILE_VAR];

/// The workspace's top directory, where the deployment files live.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("deploy-checks lives inside the workspace")
        .to_path_buf()
}

/// A file of the workspace, as text.
pub fn read(relative: &str) -> String {
    let path = workspace_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("reading {}: {err}", path.display()))
}

/// The init script the compose file's `postgres` service runs on first start.
pub const INIT_SQL: &str = "deploy/postgres/init.sql";

/// The compose file's Postgres service.
pub const POSTGRES: &str = "postgres";

/// A temporary Postgres initialised as the compose file's `postgres` service
/// initialises it: the database its `POSTGRES_DB` names, then [`INIT_SQL`]
/// run by the superuser. Returns the cluster and the database's name. Needs
/// a multi-threaded runtime (the cluster's start blocks).
pub async fn postgres_as_compose_initialises_it(compose: &Compose) -> (PostgresCluster, String) {
    let database = compose.environment(POSTGRES)["POSTGRES_DB"].clone();
    let cluster = tokio::task::block_in_place(PostgresCluster::start_temporary).unwrap();
    cluster.ensure_database(&database).await.unwrap();
    let mut superuser = PgConnection::connect(&cluster.url(&database))
        .await
        .unwrap();
    sqlx::raw_sql(&read(INIT_SQL))
        .execute(&mut superuser)
        .await
        .unwrap_or_else(|err| panic!("{INIT_SQL} fails: {err}"));
    (cluster, database)
}

/// One service binary, described by its own crate.
pub struct Service {
    /// Package, binary, compose service and default `SERVICE_NAME`.
    pub name: &'static str,
    /// Every environment variable its configuration reads: the keys of its
    /// defaults, upper-cased.
    pub accepted_env: BTreeSet<String>,
    /// Its configuration as the binary would load it from `env` alone.
    pub load: fn(&HashMap<String, String>) -> anyhow::Result<CommonConfig>,
    /// Loads the configuration from `env` and builds the service, as its
    /// `main` does: database and migrations, Kafka clients, bound port.
    pub build: fn(HashMap<String, String>) -> LocalBoxFuture<'static, anyhow::Result<ServiceHost>>,
}

/// The four services.
pub fn services() -> Vec<Service> {
    vec![
        describe::<order_service::Config>("order-service", |env| {
            Box::pin(async move { order_service::Application::build(load(&env)?).await })
        }),
        describe::<inventory_service::Config>("inventory-service", |env| {
            Box::pin(async move { inventory_service::Application::build(load(&env)?).await })
        }),
        describe::<payment_service::Config>("payment-service", |env| {
            Box::pin(async move { payment_service::Application::build(load(&env)?).await })
        }),
        describe::<notification_service::Config>("notification-service", |env| {
            Box::pin(async move { notification_service::Application::build(load(&env)?).await })
        }),
    ]
}

fn describe<C: ServiceConfig>(
    name: &'static str,
    build: fn(HashMap<String, String>) -> LocalBoxFuture<'static, anyhow::Result<ServiceHost>>,
) -> Service {
    Service {
        name,
        accepted_env: accepted_env::<C>(),
        load: |env| load::<C>(env).map(|config| config.common().clone()),
        build,
    }
}

/// The compose service and package of the web console.
pub const CONSOLE: &str = "console";

/// The console's image: configured like a service, but it has no database
/// and is not a [`ServiceHost`].
pub struct ConsoleImage {
    /// Every environment variable its configuration reads.
    pub accepted_env: BTreeSet<String>,
}

impl ConsoleImage {
    /// Its configuration as the binary would load it from `env` alone.
    pub fn load(&self, env: &HashMap<String, String>) -> anyhow::Result<console::Config> {
        let config: console::Config = load(env)?;
        config.validate()?;
        Ok(config)
    }
}

/// The console, described by its own crate.
pub fn console_image() -> ConsoleImage {
    ConsoleImage {
        accepted_env: accepted_env::<console::Config>(),
    }
}

/// Where the console calls each service: service name and URL.
pub fn console_service_urls(console: &console::Config) -> [(&'static str, &String); 4] {
    [
        ("order-service", &console.console_order_service_url),
        ("inventory-service", &console.console_inventory_service_url),
        ("payment-service", &console.console_payment_service_url),
        (
            "notification-service",
            &console.console_notification_service_url,
        ),
    ]
}

/// The keys of `C`'s defaults, upper-cased: the variables it reads.
fn accepted_env<C: ServiceConfig>() -> BTreeSet<String> {
    let defaults = serde_json::to_value(C::defaults()).expect("configuration serialises");
    defaults
        .as_object()
        .expect("a configuration is a map of settings")
        .keys()
        .map(|key| key.to_uppercase())
        .collect()
}

/// Defaults, then `env` (and nothing from this process's environment).
fn load<C: ServiceConfig>(env: &HashMap<String, String>) -> anyhow::Result<C> {
    service_kit::config::load_from(&C::defaults(), None, Some(env.clone()))
}

/// A compose file, parsed. Anchors and aliases are resolved.
pub struct Compose {
    /// Relative to the workspace, for messages.
    pub file: String,
    root: Yaml,
}

impl Compose {
    pub fn load(relative: &str) -> Compose {
        let text = read(relative);
        let mut documents = YamlLoader::load_from_str(&text)
            .unwrap_or_else(|err| panic!("{relative} is not valid YAML: {err}"));
        assert_eq!(documents.len(), 1, "{relative} holds one YAML document");
        Compose {
            file: relative.to_owned(),
            root: documents.remove(0),
        }
    }

    /// Service names, in file order.
    pub fn service_names(&self) -> Vec<String> {
        self.root["services"]
            .as_hash()
            .unwrap_or_else(|| panic!("{}: no services", self.file))
            .keys()
            .map(|key| scalar(key).expect("service names are strings"))
            .collect()
    }

    /// Services built from this workspace (they have a `build` section).
    pub fn built_services(&self) -> Vec<String> {
        self.service_names()
            .into_iter()
            .filter(|name| !self.service(name)["build"].is_badvalue())
            .collect()
    }

    pub fn service(&self, name: &str) -> &Yaml {
        let service = &self.root["services"][name];
        assert!(!service.is_badvalue(), "{}: no service {name}", self.file);
        service
    }

    /// A service's `environment`, in either of compose's two forms.
    pub fn environment(&self, name: &str) -> BTreeMap<String, String> {
        string_map(&self.service(name)["environment"], "KEY=VALUE")
            .unwrap_or_else(|err| panic!("{}: {name}.environment: {err:#}", self.file))
    }

    /// A service's `build.args`.
    pub fn build_args(&self, name: &str) -> BTreeMap<String, String> {
        string_map(&self.service(name)["build"]["args"], "KEY=VALUE")
            .unwrap_or_else(|err| panic!("{}: {name}.build.args: {err:#}", self.file))
    }

    /// A service's `ports`, short syntax.
    pub fn ports(&self, name: &str) -> Vec<PortMapping> {
        let ports = &self.service(name)["ports"];
        if ports.is_badvalue() {
            return vec![];
        }
        ports
            .as_vec()
            .unwrap_or_else(|| panic!("{}: {name}.ports is not a list", self.file))
            .iter()
            .map(|entry| {
                let text = scalar(entry).unwrap_or_default();
                PortMapping::parse(&text)
                    .unwrap_or_else(|err| panic!("{}: {name}.ports: {err:#}", self.file))
            })
            .collect()
    }

    /// The services `name` waits for, with their conditions.
    pub fn depends_on(&self, name: &str) -> BTreeMap<String, String> {
        match &self.service(name)["depends_on"] {
            Yaml::BadValue => BTreeMap::new(),
            Yaml::Array(names) => names
                .iter()
                .map(|n| (scalar(n).unwrap_or_default(), "service_started".to_owned()))
                .collect(),
            Yaml::Hash(entries) => entries
                .iter()
                .map(|(service, how)| {
                    let condition = scalar(&how["condition"]).unwrap_or_default();
                    (scalar(service).unwrap_or_default(), condition)
                })
                .collect(),
            other => panic!("{}: {name}.depends_on: unexpected {other:?}", self.file),
        }
    }

    /// A scalar setting of a service (`image`, `container_name`, `restart`...).
    pub fn setting(&self, name: &str, key: &str) -> Option<String> {
        scalar(&self.service(name)[key])
    }
}

/// A port mapping, `HOST:CONTAINER` where HOST may be a range `A-B`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    /// First and last host port (equal unless a range is published).
    pub host: (u16, u16),
    pub container: u16,
}

impl PortMapping {
    fn parse(text: &str) -> anyhow::Result<PortMapping> {
        let (host, container) = text
            .rsplit_once(':')
            .with_context(|| format!("{text:?} does not publish a host port"))?;
        let port = |s: &str| {
            s.parse::<u16>()
                .with_context(|| format!("bad port in {text:?}"))
        };
        let host = match host.split_once('-') {
            Some((first, last)) => (port(first)?, port(last)?),
            None => (port(host)?, port(host)?),
        };
        if host.0 > host.1 {
            bail!("empty host port range in {text:?}");
        }
        Ok(PortMapping {
            host,
            container: port(container)?,
        })
    }

    pub fn is_range(&self) -> bool {
        self.host.0 != self.host.1
    }

    pub fn host_ports(&self) -> std::ops::RangeInclusive<u16> {
        self.host.0..=self.host.1
    }
}

/// A scalar as compose reads it: strings, numbers and booleans alike.
pub(crate) fn scalar(value: &Yaml) -> Option<String> {
    match value {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A mapping of names to scalars, or a list of `KEY=VALUE` strings.
fn string_map(value: &Yaml, list_form: &str) -> anyhow::Result<BTreeMap<String, String>> {
    match value {
        Yaml::BadValue => Ok(BTreeMap::new()),
        Yaml::Hash(entries) => entries
            .iter()
            .map(|(key, value)| {
                let key = scalar(key).context("a key is not a string")?;
                let value = scalar(value).with_context(|| format!("{key} is not a scalar"))?;
                Ok((key, value))
            })
            .collect(),
        Yaml::Array(items) => items
            .iter()
            .map(|item| {
                let item = scalar(item).context("an entry is not a string")?;
                let (key, value) = item
                    .split_once('=')
                    .with_context(|| format!("{item:?} is not {list_form}"))?;
                Ok((key.to_owned(), value.to_owned()))
            })
            .collect(),
        other => bail!("unexpected {other:?}"),
    }
}

/// A `postgres://user:password@host:port/database` URL, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    pub user: String,
    pub password: String,
    pub host: String,
    pub port: u16,
    pub database: String,
}

impl DatabaseUrl {
    pub fn parse(url: &str) -> anyhow::Result<DatabaseUrl> {
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .with_context(|| format!("{url:?} is not a postgres:// URL"))?;
        let (credentials, rest) = rest
            .split_once('@')
            .with_context(|| format!("{url:?} names no role"))?;
        let (user, password) = credentials.split_once(':').unwrap_or((credentials, ""));
        let (address, database) = rest
            .split_once('/')
            .with_context(|| format!("{url:?} names no database"))?;
        let (host, port) = address.split_once(':').unwrap_or((address, "5432"));
        Ok(DatabaseUrl {
            user: user.to_owned(),
            password: password.to_owned(),
            host: host.to_owned(),
            port: port
                .parse()
                .with_context(|| format!("bad port in {url:?}"))?,
            database: database.to_owned(),
        })
    }

    /// The same role, password and database on another server.
    pub fn on(&self, host: &str, port: u16) -> String {
        format!(
            "postgres://{}:{}@{host}:{port}/{}",
            self.user, self.password, self.database
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_mappings_parse_single_ports_and_ranges() {
        let single = PortMapping::parse("8081:8081").unwrap();
        assert_eq!(single.host, (8081, 8081));
        assert!(!single.is_range());
        let range = PortMapping::parse("8082-8089:8082").unwrap();
        assert_eq!((range.host, range.container), ((8082, 8089), 8082));
        assert!(PortMapping::parse("8082").is_err(), "no host port");
    }

    #[test]
    fn database_urls_come_apart() {
        let url =
            DatabaseUrl::parse("postgres://order_service:pw@postgres:5432/ordersystem").unwrap();
        assert_eq!(url.user, "order_service");
        assert_eq!(url.host, "postgres");
        assert_eq!(
            url.on("127.0.0.1", 5555),
            "postgres://order_service:pw@127.0.0.1:5555/ordersystem"
        );
    }
}
