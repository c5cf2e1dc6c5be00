//! The Helm chart, rendered: what `tests/chart.rs` holds against the code.
//!
//! [`render`] runs the helm that `scripts/chart-check` pins and installs
//! (`scripts/chart-check helm` builds it on first use and prints its path,
//! so the pin and the way it is installed live in one place) on the chart
//! with a set of values, and parses what comes out into [`Rendered`], whose
//! helpers find objects by kind and name and read a container's
//! environment the way the kubelet would hand it over, Secrets included.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{bail, Context};
use yaml_rust2::{Yaml, YamlLoader};

use crate::{scalar, workspace_root};

pub mod acls;
pub mod components;
pub mod network;

/// The chart, relative to the workspace.
pub const CHART: &str = "deploy/helm/order-system";
/// The init script as the chart carries it (a link to `deploy/postgres/init.sql`), which CloudNativePG runs.
pub const CHART_INIT_SQL: &str = "deploy/helm/order-system/files/init.sql";
/// The chart's copy of the topic table.
pub const CHART_TOPIC_TABLE: &str = "deploy/helm/order-system/files/topic-table.yaml";
/// Installs the pinned tools and renders, lints and validates the chart.
pub const CHART_CHECK: &str = "scripts/chart-check";
/// The release name and namespace the chart is rendered with.
pub const RELEASE: &str = "order-system";

/// The component label every object of a component carries.
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/name";

/// A value set the chart is rendered with: its name and the values file
/// under the chart's `ci/` folder (none for the defaults).
#[derive(Debug, Clone, Copy)]
pub struct ValueSet {
    pub name: &'static str,
    pub file: Option<&'static str>,
}

/// The defaults, then each optional part on, then all of them: the sets
/// `scripts/chart-check` validates.
pub const VALUE_SETS: [ValueSet; 5] = [
    ValueSet {
        name: "default",
        file: None,
    },
    ValueSet {
        name: "strimzi",
        file: Some("ci/strimzi-values.yaml"),
    },
    ValueSet {
        name: "cloudnativepg",
        file: Some("ci/cloudnativepg-values.yaml"),
    },
    ValueSet {
        name: "keda",
        file: Some("ci/keda-values.yaml"),
    },
    ValueSet {
        name: "all",
        file: Some("ci/all-values.yaml"),
    },
];

/// The pinned helm, installed by `scripts/chart-check helm` on first use.
pub fn helm() -> &'static PathBuf {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        let output = Command::new("bash")
            .arg(workspace_root().join(CHART_CHECK))
            .arg("helm")
            .output()
            .expect("running scripts/chart-check helm");
        assert!(
            output.status.success(),
            "{CHART_CHECK} helm failed (it builds helm with Go): {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let path = String::from_utf8(output.stdout).expect("a path");
        PathBuf::from(path.trim())
    })
}

/// The chart rendered with `set` and then `overrides` (`--set` pairs).
pub fn render(set: ValueSet, overrides: &[(&str, &str)]) -> anyhow::Result<Rendered> {
    let chart = workspace_root().join(CHART);
    let mut command = Command::new(helm());
    command
        .args(["template", RELEASE])
        .arg(&chart)
        .args(["--namespace", RELEASE]);
    if let Some(file) = set.file {
        command.arg("-f").arg(chart.join(file));
    }
    for (key, value) in overrides {
        command.arg("--set").arg(format!("{key}={value}"));
    }
    let output = command.output().context("running helm template")?;
    if !output.status.success() {
        bail!(
            "helm template ({} values) failed: {}",
            set.name,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let text = String::from_utf8(output.stdout).context("helm's output is not UTF-8")?;
    let objects = YamlLoader::load_from_str(&text)
        .with_context(|| format!("helm's output ({} values) is not YAML", set.name))?
        .into_iter()
        .filter(|document| !document.is_null() && !document.is_badvalue())
        .collect();
    Ok(Rendered {
        set: set.name,
        objects,
    })
}

/// Every value set rendered once per test binary.
pub fn rendered_sets() -> &'static [Rendered] {
    static RENDERED: OnceLock<Vec<Rendered>> = OnceLock::new();
    RENDERED.get_or_init(|| {
        VALUE_SETS
            .iter()
            .map(|set| render(*set, &[]).unwrap_or_else(|err| panic!("{err:#}")))
            .collect()
    })
}

/// The rendered set named `name`.
pub fn rendered(name: &str) -> &'static Rendered {
    rendered_sets()
        .iter()
        .find(|r| r.set == name)
        .unwrap_or_else(|| panic!("no value set {name}"))
}

/// What one `helm template` printed, as objects.
pub struct Rendered {
    /// The value set's name, for messages.
    pub set: &'static str,
    pub objects: Vec<Yaml>,
}

/// Where a container variable's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvSource {
    Value(String),
    Secret { name: String, key: String },
}

impl Rendered {
    /// Objects of `kind`, in render order.
    pub fn of_kind(&self, kind: &str) -> impl Iterator<Item = &Yaml> + '_ {
        let kind = kind.to_owned();
        self.objects
            .iter()
            .filter(move |o| scalar(&o["kind"]).as_deref() == Some(kind.as_str()))
    }

    /// The object of `kind` named `name`, if rendered.
    pub fn find(&self, kind: &str, name: &str) -> Option<&Yaml> {
        self.of_kind(kind).find(|o| name_of(o) == name)
    }

    /// The object of `kind` named `name`.
    pub fn get(&self, kind: &str, name: &str) -> &Yaml {
        self.find(kind, name)
            .unwrap_or_else(|| panic!("{} values: no {kind} {name}", self.set))
    }

    /// The Deployment of `component` (by its component label).
    pub fn deployment(&self, component: &str) -> &Yaml {
        self.of_kind("Deployment")
            .find(|d| component_of(d) == component)
            .unwrap_or_else(|| panic!("{} values: no Deployment of {component}", self.set))
    }

    /// A Secret's value, from `stringData` (the chart writes no `data`).
    pub fn secret_value(&self, name: &str, key: &str) -> Option<String> {
        self.find("Secret", name)
            .and_then(|secret| scalar(&secret["stringData"][key]))
    }

    /// The first container's variables as declared, in order.
    pub fn declared_env(&self, deployment: &Yaml) -> Vec<(String, EnvSource)> {
        let env = &first_container(deployment)["env"];
        env.as_vec()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|var| {
                let name = scalar(&var["name"]).expect("a variable has a name");
                let source = match scalar(&var["value"]) {
                    Some(value) => EnvSource::Value(value),
                    None => {
                        let reference = &var["valueFrom"]["secretKeyRef"];
                        EnvSource::Secret {
                            name: scalar(&reference["name"])
                                .unwrap_or_else(|| panic!("{name}: neither value nor Secret")),
                            key: scalar(&reference["key"]).expect("a secretKeyRef has a key"),
                        }
                    }
                };
                (name, source)
            })
            .collect()
    }

    /// The environment the container starts with: literal values, and each
    /// Secret's value where the chart renders that Secret, else
    /// `unrendered` (Secrets an operator writes, such as Strimzi's).
    pub fn environment(&self, deployment: &Yaml, unrendered: &str) -> BTreeMap<String, String> {
        self.declared_env(deployment)
            .into_iter()
            .map(|(name, source)| {
                let value = match source {
                    EnvSource::Value(value) => value,
                    EnvSource::Secret { name, key } => self
                        .secret_value(&name, &key)
                        .unwrap_or_else(|| unrendered.to_owned()),
                };
                (name, value)
            })
            .collect()
    }
}

/// `metadata.name`.
pub fn name_of(object: &Yaml) -> String {
    scalar(&object["metadata"]["name"]).unwrap_or_default()
}

/// The component label of an object.
pub fn component_of(object: &Yaml) -> String {
    scalar(&object["metadata"]["labels"][COMPONENT_LABEL]).unwrap_or_default()
}

/// A Deployment's pod spec.
pub fn pod_spec(deployment: &Yaml) -> &Yaml {
    &deployment["spec"]["template"]["spec"]
}

/// A Deployment's first (and only) container.
pub fn first_container(deployment: &Yaml) -> &Yaml {
    &pod_spec(deployment)["containers"][0]
}

/// A scalar at `value`, as text (numbers and booleans as YAML writes them).
pub fn text(value: &Yaml) -> Option<String> {
    scalar(value)
}

/// A list of scalars.
pub fn texts(value: &Yaml) -> Vec<String> {
    value
        .as_vec()
        .map(|items| items.iter().filter_map(scalar).collect())
        .unwrap_or_default()
}

/// A number at `value` (`what` names it in the panic if it is none).
pub fn number(value: &Yaml, what: &str) -> i64 {
    text(value)
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{what} is not a number: {value:?}"))
}
