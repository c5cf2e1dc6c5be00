//! Each component as the chart deploys it: the variables its configuration
//! accepts, and its configuration loaded from the environment the chart
//! gives its container, Secrets and mounted files included.

use std::collections::{BTreeSet, HashMap};

use service_kit::CommonConfig;
use yaml_rust2::Yaml;

use super::{first_container, name_of, pod_spec, text, Rendered};
use crate::{console_image, services, CONSOLE};

/// What a Secret that an operator writes (Strimzi's user passwords) stands
/// for when the configuration is loaded from a rendering.
pub const OPERATOR_SECRET: &str = "written-by-the-operator";

/// Each component's variables (names only) as accepted by its configuration.
pub fn accepted_env() -> Vec<(&'static str, BTreeSet<String>)> {
    services()
        .into_iter()
        .map(|service| (service.name, service.accepted_env))
        .chain([(CONSOLE, console_image().accepted_env)])
        .collect()
}

/// Each component's configuration, loaded from the environment the chart
/// gives its container in `rendered`.
pub fn effective_configs(rendered: &Rendered) -> Vec<(&'static str, CommonConfig)> {
    let mut configs: Vec<(&'static str, CommonConfig)> = services()
        .into_iter()
        .map(|service| {
            let env = container_env(rendered, service.name);
            let config = (service.load)(&env).unwrap_or_else(|err| {
                panic!(
                    "{} values: {} refuses its environment: {err:#}",
                    rendered.set, service.name
                )
            });
            (service.name, config)
        })
        .collect();
    let console = console_image()
        .load(&container_env(rendered, CONSOLE))
        .unwrap_or_else(|err| {
            panic!(
                "{} values: the console refuses its environment: {err:#}",
                rendered.set
            )
        });
    configs.push((CONSOLE, console.common));
    configs
}

/// The variable naming a file the configuration checks exists.
pub const CA_LOCATION: &str = "KAFKA_SSL_CA_LOCATION";

/// The environment of `component`'s container, ready to load here: a
/// KAFKA_SSL_CA_LOCATION must be a file one of the pod's Secret volumes
/// puts there, and is then pointed at a stand-in file on this machine.
pub fn container_env(rendered: &Rendered, component: &str) -> HashMap<String, String> {
    let deployment = rendered.deployment(component);
    let mut env: HashMap<String, String> = rendered
        .environment(deployment, OPERATOR_SECRET)
        .into_iter()
        .collect();
    if let Some(location) = env.get_mut(CA_LOCATION) {
        let mounted = secret_files(deployment);
        assert!(
            mounted.contains(location.as_str()),
            "{} values: {component}'s {CA_LOCATION}={location} is no file its pod mounts \
             (it mounts {mounted:?})",
            rendered.set
        );
        *location = stand_in_ca().display().to_string();
    }
    env
}

/// The files a Deployment's Secret volumes put into its container.
pub fn secret_files(deployment: &Yaml) -> BTreeSet<String> {
    let spec = pod_spec(deployment);
    let volumes = spec["volumes"].as_vec().cloned().unwrap_or_default();
    let mounts = first_container(deployment)["volumeMounts"]
        .as_vec()
        .cloned()
        .unwrap_or_default();
    let mut files = BTreeSet::new();
    for mount in &mounts {
        let Some(volume) = volumes.iter().find(|v| v["name"] == mount["name"]) else {
            panic!("{}: mount of an undeclared volume", name_of(deployment));
        };
        let dir = text(&mount["mountPath"]).unwrap();
        for item in volume["secret"]["items"]
            .as_vec()
            .cloned()
            .unwrap_or_default()
        {
            files.insert(format!("{dir}/{}", text(&item["path"]).unwrap()));
        }
    }
    files
}

/// A file standing for a mounted CA certificate while a configuration
/// loads (which checks only that it is a file): this crate's manifest.
pub fn stand_in_ca() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")
}
