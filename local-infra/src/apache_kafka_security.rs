//! The `sasl_ssl` security mode of [`crate::ApacheKafka`]: TLS with a CA and
//! broker certificate made for this run, SCRAM-SHA-512 logins, and ACLs that
//! give each service exactly what the topic table
//! ([`shared_events::access::TOPIC_TABLE`]) says it does.
//!
//! For a new cluster, [`SaslSsl::load_or_generate`] makes:
//! - a CA and a broker certificate for `127.0.0.1`/`localhost` (`rcgen`),
//!   written as PEM; the brokers read them with `ssl.keystore.type=PEM` and
//!   `ssl.truststore.type=PEM`, clients get the CA file;
//! - a random password for an admin super user (the test harness creates
//!   topics with it, and the brokers use it among themselves) and for each
//!   service and the console. The users are created by Kafka's own storage
//!   tool (`format --add-scram`), before any broker runs.
//!
//! All of it is kept in the cluster's `security/` directory (the key and the
//! passwords readable by their owner only), so a persistent cluster started
//! again finds the same CA and logins its metadata log already holds.
//!
//! Once the cluster serves, [`SaslSsl::create_acls`] turns
//! [`shared_events::access::grants`] into ACLs through Kafka's Admin API
//! (`Admin.createAcls`, a small Java program run on the broker's classpath).
//! With `allow.everyone.if.no.acl.found=false`, anything not granted is refused.
//!
//! Listeners: clients and the brokers' replication use `CLIENT` (SASL_SSL,
//! the brokers log in as the admin). The KRaft controller listener stays
//! PLAINTEXT on loopback: SCRAM cannot authenticate it (the credentials live
//! in the metadata log the controllers serve), so its principal is
//! `User:ANONYMOUS`, which must be a super user for the brokers to register.
//! No client is ever given that port; a deployment on a network would put the
//! controllers on SASL PLAIN or mutual TLS instead.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, Context};
use rdkafka::ClientConfig;
use shared_events::access::{self, Grant, Operation, Resource};
use shared_events::Topics;

use crate::identity::write_private;
use crate::kafka_runtime::KafkaRuntime;

/// The SCRAM mechanism of every login.
pub const SCRAM_MECHANISM: &str = "SCRAM-SHA-512";

/// The super user: creates topics and ACLs, and is who the brokers are to
/// each other.
pub const ADMIN_USER: &str = "admin";

/// Random bytes in a generated password (written as hex).
const PASSWORD_BYTES: usize = 24;

/// The listener clients and brokers use.
const CLIENT_LISTENER: &str = "CLIENT";

/// The file keeping every user's password: one `name password` per line.
const LOGINS_FILE: &str = "logins";
/// The CA certificate's file.
const CA_FILE: &str = "ca.pem";
/// The broker's key and certificate's file.
const KEYSTORE_FILE: &str = "broker.pem";

/// The ACL program, compiled and run by `java` from source.
const CREATE_ACLS_JAVA: &str = include_str!("CreateAcls.java");

/// Who may log in, and with what.
#[derive(Clone)]
pub struct KafkaCredentials {
    /// The user name (a service's name, `console` or [`ADMIN_USER`]).
    pub username: String,
    /// Its password, generated for this run.
    pub password: String,
    /// The CA file the brokers' certificate is signed by.
    pub ca_location: PathBuf,
}

impl std::fmt::Debug for KafkaCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaCredentials")
            .field("username", &self.username)
            .field("password", &"***")
            .field("ca_location", &self.ca_location)
            .finish()
    }
}

impl KafkaCredentials {
    /// A librdkafka client configuration logging in as this user.
    pub fn client_config(&self, bootstrap_servers: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        self.apply(&mut config);
        config.set("bootstrap.servers", bootstrap_servers);
        config
    }

    /// Sets the security settings (not the address) on `config`.
    pub fn apply(&self, config: &mut ClientConfig) {
        config
            .set("security.protocol", "sasl_ssl")
            .set("sasl.mechanism", SCRAM_MECHANISM)
            .set("sasl.username", &self.username)
            .set("sasl.password", &self.password)
            .set("ssl.ca.location", self.ca_location.display().to_string());
    }

    /// The same user with another password, for tests of a refused login.
    pub fn with_password(&self, password: &str) -> KafkaCredentials {
        KafkaCredentials {
            password: password.to_owned(),
            ..self.clone()
        }
    }
}

/// The security material of one `sasl_ssl` cluster.
pub(crate) struct SaslSsl {
    /// Where the certificates and client property files are.
    dir: PathBuf,
    /// The CA certificate (PEM): the brokers' truststore, the clients' CA.
    ca_file: PathBuf,
    /// The broker's private key followed by its certificate (PEM).
    keystore_file: PathBuf,
    /// The super user.
    admin: KafkaCredentials,
    /// One user per service and the console.
    users: Vec<KafkaCredentials>,
}

impl SaslSsl {
    /// The material kept in `dir` by an earlier run, or, if `dir` keeps
    /// none, a new CA, broker certificate and passwords written there.
    pub(crate) fn load_or_generate(dir: &Path) -> anyhow::Result<SaslSsl> {
        if Self::is_kept_in(dir) {
            return Self::load(dir);
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let (ca_pem, keystore_pem) = certificates()?;
        std::fs::write(dir.join(CA_FILE), ca_pem).context("writing the Kafka CA")?;
        write_private(&dir.join(KEYSTORE_FILE), keystore_pem.as_bytes())
            .context("writing the broker's key")?;
        let mut logins = String::new();
        for name in std::iter::once(ADMIN_USER)
            .chain(access::SERVICES)
            .chain([access::CONSOLE])
        {
            writeln!(logins, "{name} {}", random_password()?).expect("writing to a String");
        }
        write_private(&dir.join(LOGINS_FILE), logins.as_bytes())
            .context("writing the Kafka logins")?;
        Self::load(dir)
    }

    /// Whether `dir` keeps the material of an earlier run.
    pub(crate) fn is_kept_in(dir: &Path) -> bool {
        [LOGINS_FILE, CA_FILE, KEYSTORE_FILE]
            .iter()
            .all(|file| dir.join(file).is_file())
    }

    /// Reads what [`SaslSsl::load_or_generate`] wrote in `dir`.
    pub(crate) fn load(dir: &Path) -> anyhow::Result<SaslSsl> {
        let ca_file = dir.join(CA_FILE);
        let logins_file = dir.join(LOGINS_FILE);
        let logins = std::fs::read_to_string(&logins_file)
            .with_context(|| format!("reading {}", logins_file.display()))?;
        let mut users = Vec::new();
        for line in logins.lines().filter(|line| !line.trim().is_empty()) {
            let (username, password) = line.split_once(' ').with_context(|| {
                format!(
                    "{} holds a line that is not `name password`",
                    logins_file.display()
                )
            })?;
            users.push(KafkaCredentials {
                username: username.to_owned(),
                password: password.trim().to_owned(),
                ca_location: ca_file.clone(),
            });
        }
        let admin_at = users
            .iter()
            .position(|user| user.username == ADMIN_USER)
            .with_context(|| format!("{} has no {ADMIN_USER} login", logins_file.display()))?;
        let admin = users.remove(admin_at);
        for name in access::SERVICES.iter().chain([&access::CONSOLE]) {
            if !users.iter().any(|user| user.username == *name) {
                bail!("{} has no login for {name}", logins_file.display());
            }
        }
        Ok(SaslSsl {
            dir: dir.to_path_buf(),
            keystore_file: dir.join(KEYSTORE_FILE),
            ca_file,
            admin,
            users,
        })
    }

    pub(crate) fn admin(&self) -> &KafkaCredentials {
        &self.admin
    }

    /// The credentials of `username` (a service, `console` or the admin).
    pub(crate) fn credentials(&self, username: &str) -> Option<&KafkaCredentials> {
        std::iter::once(&self.admin)
            .chain(&self.users)
            .find(|user| user.username == username)
    }

    pub(crate) fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// `server.properties` entries for a node listening on `port` for
    /// clients and `controller_port` for the quorum.
    pub(crate) fn broker_properties(
        &self,
        port: u16,
        controller_port: u16,
    ) -> Vec<(String, String)> {
        let jaas = jaas_config(&self.admin);
        [
            (
                "listeners",
                format!(
                    "{CLIENT_LISTENER}://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}"
                ),
            ),
            (
                "advertised.listeners",
                format!("{CLIENT_LISTENER}://127.0.0.1:{port}"),
            ),
            (
                "listener.security.protocol.map",
                format!("{CLIENT_LISTENER}:SASL_SSL,CONTROLLER:PLAINTEXT"),
            ),
            ("inter.broker.listener.name", CLIENT_LISTENER.to_owned()),
            ("sasl.enabled.mechanisms", SCRAM_MECHANISM.to_owned()),
            (
                "sasl.mechanism.inter.broker.protocol",
                SCRAM_MECHANISM.to_owned(),
            ),
            ("listener.name.client.scram-sha-512.sasl.jaas.config", jaas),
            ("ssl.keystore.type", "PEM".to_owned()),
            (
                "ssl.keystore.location",
                self.keystore_file.display().to_string(),
            ),
            ("ssl.truststore.type", "PEM".to_owned()),
            (
                "ssl.truststore.location",
                self.ca_file.display().to_string(),
            ),
            (
                "authorizer.class.name",
                "org.apache.kafka.metadata.authorizer.StandardAuthorizer".to_owned(),
            ),
            ("allow.everyone.if.no.acl.found", "false".to_owned()),
            // ANONYMOUS: the PLAINTEXT controller listener (see the module docs).
            ("super.users", format!("User:{ADMIN_USER};User:ANONYMOUS")),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect()
    }

    /// The storage tool's `--add-scram` arguments: every user's SCRAM credentials.
    pub(crate) fn format_arguments(&self) -> Vec<String> {
        std::iter::once(&self.admin)
            .chain(&self.users)
            .flat_map(|user| {
                [
                    "--add-scram".to_owned(),
                    format!(
                        "{SCRAM_MECHANISM}=[name={},password={}]",
                        user.username, user.password
                    ),
                ]
            })
            .collect()
    }

    /// Creates the ACLs [`access::grants`] derives for the default topic
    /// names, through Kafka's Admin API as the admin.
    pub(crate) fn create_acls(
        &self,
        runtime: &KafkaRuntime,
        bootstrap_servers: &str,
    ) -> anyhow::Result<usize> {
        let grants = access::grants(&Topics::default());
        let program = self.dir.join("CreateAcls.java");
        std::fs::write(&program, CREATE_ACLS_JAVA).context("writing the ACL program")?;
        let properties = self.dir.join("admin.properties");
        std::fs::write(&properties, self.admin_properties(bootstrap_servers))
            .context("writing the admin's client properties")?;
        let mut child = runtime
            .java(&[], &program.display().to_string())
            .arg(&properties)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running the ACL program (java)")?;
        child
            .stdin
            .take()
            .context("the ACL program's stdin")?
            .write_all(acl_lines(&grants).as_bytes())
            .context("handing the ACLs to the ACL program")?;
        let output = child.wait_with_output()?;
        if !output.status.success() {
            bail!(
                "creating Kafka ACLs failed: {}{}",
                String::from_utf8_lossy(&output.stdout).trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(grants.len())
    }

    /// A Java client's properties logging in as the admin.
    fn admin_properties(&self, bootstrap_servers: &str) -> String {
        let mut text = String::new();
        for (key, value) in [
            ("bootstrap.servers", bootstrap_servers.to_owned()),
            ("security.protocol", "SASL_SSL".to_owned()),
            ("sasl.mechanism", SCRAM_MECHANISM.to_owned()),
            ("sasl.jaas.config", jaas_config(&self.admin)),
            ("ssl.truststore.type", "PEM".to_owned()),
            (
                "ssl.truststore.location",
                self.ca_file.display().to_string(),
            ),
        ] {
            writeln!(text, "{key}={value}").expect("writing to a String");
        }
        text
    }
}

/// The JAAS line a Java client or broker logs in with.
fn jaas_config(user: &KafkaCredentials) -> String {
    format!(
        "org.apache.kafka.common.security.scram.ScramLoginModule required username=\"{}\" password=\"{}\";",
        user.username, user.password
    )
}

/// One line per grant, tab-separated, as the ACL program reads them:
/// principal, resource type, pattern type, resource name, operation.
fn acl_lines(grants: &[Grant]) -> String {
    let mut lines = String::new();
    for grant in grants {
        let (kind, pattern, name) = match &grant.resource {
            Resource::Topic(name) => ("TOPIC", "LITERAL", name.as_str()),
            Resource::Group(name) => ("GROUP", "LITERAL", name.as_str()),
            Resource::GroupPrefix(prefix) => ("GROUP", "PREFIXED", prefix.as_str()),
            Resource::Cluster => ("CLUSTER", "LITERAL", "kafka-cluster"),
        };
        let operation: Operation = grant.operation;
        writeln!(
            lines,
            "{}\t{kind}\t{pattern}\t{name}\t{}",
            grant.principal,
            operation.kafka_name()
        )
        .expect("writing to a String");
    }
    lines
}

/// A CA certificate (PEM) and the broker's key and certificate (PEM, key first).
fn certificates() -> anyhow::Result<(String, String)> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "local-infra Kafka test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().context("generating the CA's key")?;
    let ca = ca_params
        .self_signed(&ca_key)
        .context("signing the CA certificate")?;

    let mut broker_params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
    broker_params
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    broker_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    broker_params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let broker_key = KeyPair::generate().context("generating the broker's key")?;
    let broker = broker_params
        .signed_by(&broker_key, &ca, &ca_key)
        .context("signing the broker certificate")?;
    let keystore = format!("{}{}", broker_key.serialize_pem(), broker.pem());
    Ok((ca.pem(), keystore))
}

/// Hex of [`PASSWORD_BYTES`] random bytes: nothing a properties file, a JAAS
/// line or the storage tool's `name=...,password=...` could misread.
fn random_password() -> anyhow::Result<String> {
    let mut bytes = [0u8; PASSWORD_BYTES];
    getrandom::fill(&mut bytes).context("reading random bytes")?;
    Ok(bytes.iter().fold(String::new(), |mut hex, byte| {
        let _ = write!(hex, "{byte:02x}");
        hex
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_service_and_the_console_get_a_user_and_the_admin_is_super() {
        let dir = tempfile::tempdir().unwrap();
        let security = SaslSsl::load_or_generate(dir.path()).unwrap();
        for name in access::SERVICES.iter().chain([&access::CONSOLE]) {
            let user = security.credentials(name).unwrap();
            assert_eq!(user.password.len(), PASSWORD_BYTES * 2);
            assert_ne!(user.password, security.admin().password);
        }
        let properties = security.broker_properties(9092, 9093);
        let super_users = &properties
            .iter()
            .find(|(key, _)| key == "super.users")
            .unwrap()
            .1;
        assert!(super_users.contains("User:admin"));
        assert!(!super_users.contains("order-service"));
        assert_eq!(security.format_arguments().len(), 2 * 6);
    }

    #[test]
    fn a_second_start_finds_the_same_logins_and_ca_and_only_the_owner_reads_them() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let first = SaslSsl::load_or_generate(dir.path()).unwrap();
        let ca = std::fs::read_to_string(first.ca_file()).unwrap();
        let again = SaslSsl::load_or_generate(dir.path()).unwrap();
        assert_eq!(again.admin().password, first.admin().password);
        for name in access::SERVICES.iter().chain([&access::CONSOLE]) {
            assert_eq!(
                again.credentials(name).unwrap().password,
                first.credentials(name).unwrap().password
            );
        }
        assert_eq!(std::fs::read_to_string(again.ca_file()).unwrap(), ca);
        for file in [LOGINS_FILE, KEYSTORE_FILE] {
            let mode = std::fs::metadata(dir.path().join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{file} is readable by others: {mode:o}");
        }
    }

    #[test]
    fn a_logins_file_missing_a_service_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        SaslSsl::load_or_generate(dir.path()).unwrap();
        let logins = dir.path().join(LOGINS_FILE);
        let text = std::fs::read_to_string(&logins).unwrap();
        let without_payment: String = text
            .lines()
            .filter(|line| !line.starts_with("payment-service "))
            .map(|line| format!("{line}\n"))
            .collect();
        std::fs::write(&logins, without_payment).unwrap();
        let error = SaslSsl::load(dir.path()).err().unwrap();
        assert!(
            format!("{error:#}").contains("payment-service"),
            "{error:#}"
        );
    }

    #[test]
    fn the_certificates_are_pem_with_the_key_before_the_certificate() {
        let (ca, keystore) = certificates().unwrap();
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(keystore.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(keystore.contains("-----BEGIN CERTIFICATE-----"));
    }

    #[test]
    fn acl_lines_name_the_resource_the_way_kafka_does() {
        let lines = acl_lines(&access::grants(&Topics::default()));
        assert!(lines.contains("inventory-service\tTOPIC\tLITERAL\tinventory-reserved\tWRITE\n"));
        assert!(
            lines.contains("order-service\tCLUSTER\tLITERAL\tkafka-cluster\tIDEMPOTENT_WRITE\n")
        );
        assert!(lines.contains("console\tGROUP\tPREFIXED\tdlq-list-\tREAD\n"));
        assert!(!lines.contains("inventory-service\tTOPIC\tLITERAL\torder-created\tWRITE"));
    }
}
