//! Apache Kafka's jars, resolved by Maven from `kafka-infra/runtime/pom.xml`,
//! and the `java` that runs them.
//!
//! The pom is the one place the Kafka version is chosen. Its runtime classpath
//! is copied into `kafka-infra/runtime/target/kafka-<hash of the pom>/`, so a
//! changed pom gets a fresh folder and an unchanged one is never resolved
//! twice; Maven's own cache (`~/.m2`) means only the very first resolution on
//! a machine downloads anything. Resolution writes to a private folder and
//! renames it into place, so two processes resolving at once cannot see a
//! half-copied classpath.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use anyhow::{bail, Context};

/// The Maven project that names Kafka's artifacts, inside this repository.
const POM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../kafka-infra/runtime/pom.xml"
);

/// The same for Kafka 3.9 in ZooKeeper mode, with its ZooKeeper.
const ZOOKEEPER_POM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../kafka-infra/runtime-zookeeper/pom.xml"
);

/// Overrides where the resolved jars live (for a read-only checkout).
const RUNTIME_DIR_ENV: &str = "KAFKA_RUNTIME_DIR";

/// The broker's main jar, whose name carries the version: `kafka_2.13-4.1.2.jar`.
const BROKER_JAR_PREFIX: &str = "kafka_2.13-";

/// Where to get a JDK and Maven, for error messages.
const INSTALL_ADVICE: &str =
    "Apache Kafka needs a JDK 17+ and Maven (Debian: apt-get install openjdk-17-jdk-headless maven)";

static RESOLVING: Mutex<()> = Mutex::new(());

/// A resolved Kafka classpath and the JVM to run it with.
#[derive(Debug, Clone)]
pub struct KafkaRuntime {
    /// The folder holding every runtime jar of the broker and its tools.
    jars: PathBuf,
    /// `$JAVA_HOME/bin/java` when set, else `java` from `PATH`.
    java: PathBuf,
    /// Kafka's version, read off the broker jar's name.
    version: String,
}

impl KafkaRuntime {
    /// Finds `java`, and resolves the classpath with Maven unless an earlier
    /// run already did. The first resolution on a machine downloads about
    /// 100 MB from Maven Central; later ones take no time.
    pub fn resolve() -> anyhow::Result<Self> {
        Self::resolve_pom(POM)
    }

    /// As [`resolve`](Self::resolve), for Kafka 3.9 in ZooKeeper mode
    /// (`kafka-infra/runtime-zookeeper/pom.xml`).
    pub fn resolve_zookeeper_mode() -> anyhow::Result<Self> {
        Self::resolve_pom(ZOOKEEPER_POM)
    }

    fn resolve_pom(pom: &str) -> anyhow::Result<Self> {
        let java = find_java()?;
        let pom = std::path::absolute(pom).with_context(|| format!("locating {pom}"))?;
        let pom_text = std::fs::read(&pom)
            .with_context(|| format!("reading {} (the Kafka runtime's pom)", pom.display()))?;
        let base = match std::env::var_os(RUNTIME_DIR_ENV) {
            Some(dir) => PathBuf::from(dir),
            None => pom
                .parent()
                .context("the pom has no parent folder")?
                .join("target"),
        };
        let jars = base.join(format!("kafka-{:016x}", fnv1a(&pom_text)));
        {
            // One resolution at a time within a process (tests start clusters
            // in parallel); across processes the rename below settles it.
            let _resolving = RESOLVING.lock().unwrap_or_else(|p| p.into_inner());
            if !jars.is_dir() {
                resolve_with_maven(&pom, &base, &jars)?;
            }
        }
        let version = broker_version(&jars)?;
        Ok(Self {
            jars,
            java,
            version,
        })
    }

    /// Kafka's version, e.g. `4.1.2`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The folder of jars, for a classpath of `<folder>/*`.
    pub fn jars(&self) -> &Path {
        &self.jars
    }

    /// A command running `main_class` on Kafka's classpath with `jvm_options`.
    pub fn java(&self, jvm_options: &[OsString], main_class: &str) -> Command {
        let mut classpath = OsString::from(self.jars.as_os_str());
        classpath.push("/*");
        let mut command = Command::new(&self.java);
        command
            .args(jvm_options)
            .arg("-cp")
            .arg(classpath)
            .arg(main_class);
        command
    }
}

fn find_java() -> anyhow::Result<PathBuf> {
    let candidate = match std::env::var_os("JAVA_HOME") {
        Some(home) => PathBuf::from(home).join("bin/java"),
        None => PathBuf::from("java"),
    };
    let answered = Command::new(&candidate)
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match answered {
        Ok(status) if status.success() => Ok(candidate),
        _ => bail!("{} does not run: {INSTALL_ADVICE}", candidate.display()),
    }
}

/// Copies the pom's runtime classpath into `jars` through a private folder.
fn resolve_with_maven(pom: &Path, base: &Path, jars: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(base).with_context(|| format!("creating {}", base.display()))?;
    let staging = base.join(format!("resolving-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    tracing::info!(pom = %pom.display(), "resolving Apache Kafka with Maven");
    eprintln!(
        "Resolving Apache Kafka with Maven from {} (the first run on a machine downloads about 100 MB)",
        pom.display()
    );
    let mut output_dir = OsString::from("-DoutputDirectory=");
    output_dir.push(staging.as_os_str());
    let ran = Command::new("mvn")
        .args(["-q", "-B", "-f"])
        .arg(pom)
        .args([
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            "-Dmdep.useRepositoryLayout=false",
        ])
        .arg(output_dir)
        .stdin(Stdio::null())
        .output();
    let output = match ran {
        Ok(output) => output,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            bail!("mvn is not installed: {INSTALL_ADVICE}")
        }
        Err(error) => return Err(error).context("running mvn"),
    };
    if !output.status.success() {
        let _ = std::fs::remove_dir_all(&staging);
        let said = String::from_utf8_lossy(&output.stdout);
        let first_error = said
            .lines()
            .find(|line| line.contains("ERROR"))
            .unwrap_or("no error line printed");
        bail!(
            "Maven could not resolve Apache Kafka from {}: {first_error}",
            pom.display()
        );
    }
    match std::fs::rename(&staging, jars) {
        Ok(()) => Ok(()),
        // Another process finished first; its copy is as good as ours.
        Err(_) if jars.is_dir() => {
            let _ = std::fs::remove_dir_all(&staging);
            Ok(())
        }
        Err(error) => Err(error).with_context(|| format!("moving jars to {}", jars.display())),
    }
}

fn broker_version(jars: &Path) -> anyhow::Result<String> {
    for entry in std::fs::read_dir(jars).with_context(|| format!("listing {}", jars.display()))? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(version) = name
            .strip_prefix(BROKER_JAR_PREFIX)
            .and_then(|rest| rest.strip_suffix(".jar"))
        {
            return Ok(version.to_owned());
        }
    }
    bail!(
        "{} holds no {BROKER_JAR_PREFIX}*.jar; delete it so it is resolved again",
        jars.display()
    )
}

/// 64-bit FNV-1a: a stable fingerprint of the pom for the folder name (not
/// for security; std's hasher is not stable across releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_changes_with_the_pom() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_ne!(
            fnv1a(b"<version>4.1.2</version>"),
            fnv1a(b"<version>4.1.1</version>")
        );
    }
}
