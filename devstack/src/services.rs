//! The services devstack runs, their ports, how `--scale` turns them into
//! named instances, and the console that watches them.
//!
//! Ports are fixed rather than random so that URLs in docs, curl examples and
//! bookmarks stay valid between runs.

use std::collections::BTreeMap;
use std::net::TcpListener;

use anyhow::bail;

use crate::cli::Scale;

/// A service binary and the port of its first instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service {
    /// Cargo package and binary name.
    pub name: &'static str,
    /// `PORT` of the first instance.
    pub port: u16,
}

/// The service that takes orders over HTTP: the stack's front door.
pub const ORDER_SERVICE: &str = "order-service";

/// Every service, in saga order.
pub const SERVICES: [Service; 4] = [
    Service {
        name: ORDER_SERVICE,
        port: 8081,
    },
    Service {
        name: "inventory-service",
        port: 8082,
    },
    Service {
        name: "payment-service",
        port: 8083,
    },
    Service {
        name: "notification-service",
        port: 8084,
    },
];

/// The web console (Kafka's topics and groups, every order's saga). Not a
/// saga service: it is never scaled and reads the others over HTTP.
pub const CONSOLE: Service = Service {
    name: "console",
    port: 9000,
};

/// Every program devstack runs: the services, then the console.
pub fn programs() -> impl Iterator<Item = Service> {
    SERVICES.into_iter().chain([CONSOLE])
}

/// The console's settings naming each service's base URL (see the console's
/// config), keyed by service.
const CONSOLE_SERVICE_URL_ENV: [(&str, &str); 4] = [
    (ORDER_SERVICE, "CONSOLE_ORDER_SERVICE_URL"),
    ("inventory-service", "CONSOLE_INVENTORY_SERVICE_URL"),
    ("payment-service", "CONSOLE_PAYMENT_SERVICE_URL"),
    ("notification-service", "CONSOLE_NOTIFICATION_SERVICE_URL"),
];

/// Extra instances (`--scale`) get consecutive ports from here, after the
/// first instances' block.
pub const FIRST_EXTRA_INSTANCE_PORT: u16 = 8085;

/// Instances are numbered from 1; the first keeps the plain service name.
const FIRST_INSTANCE_NUMBER: u16 = 1;

/// Where the port check binds: all interfaces, as the services do, so a port
/// held on any address counts as taken.
const SERVICE_BIND_ADDRESS: &str = "0.0.0.0";

/// Host in the URLs we hand out.
const SERVICE_HOST: &str = "127.0.0.1";

/// One process to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// `inventory-service`, `inventory-service#2`, ...: the log prefix and the
    /// key in stack.json.
    pub name: String,
    /// Which binary to run.
    pub service: &'static str,
    /// Its `PORT`.
    pub port: u16,
    /// Its own environment, on top of what every instance gets.
    pub env: BTreeMap<String, String>,
}

impl Instance {
    /// Base URL, e.g. `http://127.0.0.1:8081`.
    pub fn url(&self) -> String {
        format!("http://{SERVICE_HOST}:{}", self.port)
    }

    /// The health endpoint devstack polls.
    pub fn health_url(&self) -> String {
        format!("{}/health", self.url())
    }
}

/// The service called `name`, if there is one.
pub fn find(name: &str) -> Option<Service> {
    SERVICES
        .iter()
        .copied()
        .find(|service| service.name == name)
}

/// The instances to run: one per service unless `--scale` says otherwise (the
/// last `--scale` for a service wins), with every port moved up by
/// `port_offset` (`--port-offset`, to run beside another stack).
pub fn plan(scale: &[Scale], port_offset: u16) -> anyhow::Result<Vec<Instance>> {
    let mut instances = Vec::new();
    let mut next_extra_port = FIRST_EXTRA_INSTANCE_PORT;
    for service in SERVICES {
        let count = scale
            .iter()
            .rev()
            .find(|entry| entry.service == service.name)
            .map_or(1, |entry| entry.instances);
        for number in FIRST_INSTANCE_NUMBER..FIRST_INSTANCE_NUMBER + count {
            let (name, port) = if number == FIRST_INSTANCE_NUMBER {
                (service.name.to_owned(), service.port)
            } else {
                let port = next_extra_port;
                next_extra_port = match next_extra_port.checked_add(1) {
                    Some(next) => next,
                    None => bail!("too many instances: ran out of ports"),
                };
                (format!("{}#{number}", service.name), port)
            };
            let Some(port) = port.checked_add(port_offset) else {
                bail!("--port-offset {port_offset} moves port {port} beyond 65535");
            };
            instances.push(Instance {
                name,
                service: service.name,
                port,
                env: BTreeMap::new(),
            });
        }
    }
    if instances.is_empty() {
        bail!("nothing to run: every service is scaled to 0");
    }
    Ok(instances)
}

/// The console's instance, watching `services` (the first instance of each;
/// a service scaled to 0 is left at the console's default URL, where the
/// console reports it unavailable).
pub fn console(services: &[Instance], port_offset: u16) -> anyhow::Result<Instance> {
    let Some(port) = CONSOLE.port.checked_add(port_offset) else {
        bail!(
            "--port-offset {port_offset} moves port {} beyond 65535",
            CONSOLE.port
        );
    };
    let env = CONSOLE_SERVICE_URL_ENV
        .iter()
        .filter_map(|(service, variable)| {
            let first = services.iter().find(|i| i.service == *service)?;
            Some(((*variable).to_owned(), first.url()))
        })
        .collect();
    Ok(Instance {
        name: CONSOLE.name.to_owned(),
        service: CONSOLE.name,
        port,
        env,
    })
}

/// Whether some service runs more than one instance (whose consumers then
/// share a consumer group).
pub fn is_scaled_out(instances: &[Instance]) -> bool {
    SERVICES.iter().any(|service| {
        instances
            .iter()
            .filter(|instance| instance.service == service.name)
            .count()
            > 1
    })
}

/// Fails with one line naming the first port that is already taken, before
/// anything is started.
pub fn ensure_ports_free(instances: &[Instance]) -> anyhow::Result<()> {
    for instance in instances {
        if TcpListener::bind((SERVICE_BIND_ADDRESS, instance.port)).is_err() {
            bail!(
                "port {} (for {}) is already in use; stop whatever holds it (another devstack, \
                 or a service started by hand) and try again",
                instance.port,
                instance.name
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_instance_of_each_service_by_default() {
        let instances = plan(&[], 0).unwrap();
        let names: Vec<_> = instances
            .iter()
            .map(|i| (i.name.as_str(), i.port))
            .collect();
        assert_eq!(
            names,
            [
                ("order-service", 8081),
                ("inventory-service", 8082),
                ("payment-service", 8083),
                ("notification-service", 8084)
            ]
        );
    }

    #[test]
    fn extra_instances_are_numbered_and_get_ports_from_8085() {
        let scale = [Scale {
            service: "inventory-service",
            instances: 3,
        }];
        let instances = plan(&scale, 0).unwrap();
        let inventory: Vec<_> = instances
            .iter()
            .filter(|i| i.service == "inventory-service")
            .map(|i| (i.name.as_str(), i.port))
            .collect();
        assert_eq!(
            inventory,
            [
                ("inventory-service", 8082),
                ("inventory-service#2", 8085),
                ("inventory-service#3", 8086)
            ]
        );
        assert_eq!(instances.len(), 6);
        assert!(is_scaled_out(&instances));
        assert!(!is_scaled_out(&plan(&[], 0).unwrap()));
    }

    #[test]
    fn the_console_is_on_9000_moved_by_the_offset_and_watches_the_first_instances() {
        let scale = [Scale {
            service: "inventory-service",
            instances: 2,
        }];
        let services = plan(&scale, 100).unwrap();
        let console = console(&services, 100).unwrap();
        assert_eq!((console.name.as_str(), console.port), ("console", 9100));
        assert_eq!(console.url(), "http://127.0.0.1:9100");
        assert_eq!(
            console.env["CONSOLE_INVENTORY_SERVICE_URL"],
            "http://127.0.0.1:8182"
        );
        assert_eq!(
            console.env["CONSOLE_ORDER_SERVICE_URL"],
            "http://127.0.0.1:8181"
        );
        assert_eq!(console.env.len(), 4);
        assert!(!is_scaled_out(&[console]));
    }

    #[test]
    fn a_service_scaled_to_zero_is_left_out() {
        let scale = [Scale {
            service: "notification-service",
            instances: 0,
        }];
        assert!(plan(&scale, 0)
            .unwrap()
            .iter()
            .all(|i| i.service != "notification-service"));
    }
}
