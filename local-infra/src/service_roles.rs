//! The services' own Postgres login roles, taken from
//! `deploy/postgres/init.sql`: the script the Compose deployment runs is the
//! one source of truth, and devstack and the end-to-end tests apply the same
//! script to their private clusters, so every service connects as its own
//! role (with a scram-sha-256 password, see `pg_hba` in
//! [`PostgresCluster`](crate::PostgresCluster)) everywhere, never as the
//! superuser.
//!
//! The script is written for one database created once. Here roles are
//! cluster-wide but schemas belong to a database, and clusters outlive runs, so
//! [`PostgresCluster::apply_service_roles`] runs it statement by statement and
//! takes "already exists" as done. A schema found owned by someone else (a
//! data directory from before the roles, when services ran as the superuser)
//! is handed over to its role together with everything in it.

use anyhow::{bail, Context};
use sqlx::{Connection, PgConnection};

use crate::PostgresCluster;

/// The script Compose's Postgres runs on first start.
pub const INIT_SQL: &str = include_str!("../../deploy/postgres/init.sql");

/// SQLSTATE `duplicate_object`: the role exists (made for another database).
const DUPLICATE_OBJECT: &str = "42710";
/// SQLSTATE `duplicate_schema`: this database has the schema already.
const DUPLICATE_SCHEMA: &str = "42P06";
/// SQLSTATE `unique_violation`: another database's set-up created the same
/// role at the same moment (roles are cluster-wide; the loser waits for the
/// winner's commit, so the role exists once this is seen).
const UNIQUE_VIOLATION: &str = "23505";

/// One service's login role, as the script creates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRole {
    /// The role name, e.g. `order_service`: the service's name with `_` for `-`.
    pub role: String,
    /// Its password, as the script sets it (a local default; the README says
    /// to change it for anything beyond a local deployment).
    pub password: String,
    /// The schema it owns, e.g. `orders`: the service's `DATABASE_SCHEMA`.
    pub schema: String,
}

impl ServiceRole {
    /// The role of the service called `service` (`order-service`), if the
    /// script makes one.
    pub fn of_service(service: &str) -> Option<ServiceRole> {
        let role = service.replace('-', "_");
        service_roles().into_iter().find(|r| r.role == role)
    }

    /// The role that owns `schema`, if any.
    pub fn owning(schema: &str) -> Option<ServiceRole> {
        service_roles().into_iter().find(|r| r.schema == schema)
    }

    /// `url` (a `postgres://` URL naming any user) with this role's user and
    /// password instead.
    pub fn url(&self, url: &str) -> anyhow::Result<String> {
        let (scheme, rest) = url
            .split_once("://")
            .with_context(|| "a database URL must start with postgres://")?;
        // Credentials end at the last '@' before the host.
        let authority_end = rest.find('/').unwrap_or(rest.len());
        let host_and_rest = match rest[..authority_end].rfind('@') {
            Some(at) => &rest[at + 1..],
            None => rest,
        };
        Ok(format!(
            "{scheme}://{}:{}@{host_and_rest}",
            self.role, self.password
        ))
    }
}

/// Every role the script creates, with its password and schema, in script
/// order.
pub fn service_roles() -> Vec<ServiceRole> {
    parse_roles(INIT_SQL).expect("deploy/postgres/init.sql names each role's password and schema")
}

/// Reads `CREATE ROLE r LOGIN PASSWORD 'p';` and `CREATE SCHEMA s
/// AUTHORIZATION r;` pairs.
fn parse_roles(script: &str) -> anyhow::Result<Vec<ServiceRole>> {
    let mut roles: Vec<ServiceRole> = Vec::new();
    for statement in statements(script) {
        let words: Vec<&str> = statement.split_whitespace().collect();
        match words.as_slice() {
            ["CREATE", "ROLE", role, "LOGIN", "PASSWORD", password] => {
                let password = password
                    .strip_prefix('\'')
                    .and_then(|p| p.strip_suffix('\''))
                    .with_context(|| format!("the password of {role} is not quoted"))?;
                roles.push(ServiceRole {
                    role: (*role).to_owned(),
                    password: password.to_owned(),
                    schema: String::new(),
                });
            }
            ["CREATE", "SCHEMA", schema, "AUTHORIZATION", owner] => {
                let Some(role) = roles.iter_mut().find(|r| r.role == *owner) else {
                    bail!("schema {schema} is authorised to {owner}, which is not created first");
                };
                role.schema = (*schema).to_owned();
            }
            _ => {}
        }
    }
    if let Some(role) = roles.iter().find(|r| r.schema.is_empty()) {
        bail!("role {} owns no schema", role.role);
    }
    Ok(roles)
}

/// The script's statements, comments removed. It has no functions or quoted
/// semicolons, so a `;` always ends a statement.
fn statements(script: &str) -> Vec<String> {
    let without_comments: Vec<&str> = script
        .lines()
        .map(|line| line.split("--").next().unwrap_or_default())
        .collect();
    without_comments
        .join("\n")
        .split(';')
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|s| !s.is_empty())
        .collect()
}

impl PostgresCluster {
    /// [`apply_service_roles`] to `database` of this cluster.
    pub async fn apply_service_roles(&self, database: &str) -> anyhow::Result<()> {
        apply_service_roles(&self.url(database)).await
    }

    /// The URL of `database` for `role`, with its password.
    pub fn url_for(&self, role: &ServiceRole, database: &str) -> String {
        role.url(&self.url(database))
            .expect("our own URLs start with postgres://")
    }
}

/// Applies `deploy/postgres/init.sql` to the database of `superuser_url`:
/// creates the roles unless they exist, creates each schema owned by its
/// role, and hands a schema some other role owns, with its tables, sequences
/// and views, over to its role. Safe to repeat.
pub async fn apply_service_roles(superuser_url: &str) -> anyhow::Result<()> {
    let mut connection = PgConnection::connect(superuser_url)
        .await
        .context("connecting as the superuser to create the services' roles")?;
    for statement in statements(INIT_SQL) {
        match sqlx::query(&statement).execute(&mut connection).await {
            Ok(_) => {}
            Err(sqlx::Error::Database(error))
                if matches!(
                    error.code().as_deref(),
                    Some(DUPLICATE_OBJECT | DUPLICATE_SCHEMA | UNIQUE_VIOLATION)
                ) => {}
            Err(error) => {
                return Err(error).with_context(|| format!("running {statement:?}"));
            }
        }
    }
    for role in service_roles() {
        hand_over(&mut connection, &role)
            .await
            .with_context(|| format!("giving schema {} to {}", role.schema, role.role))?;
    }
    connection.close().await.ok();
    Ok(())
}

/// Makes `role` the owner of its schema and of every relation in it.
async fn hand_over(connection: &mut PgConnection, role: &ServiceRole) -> anyhow::Result<()> {
    // Names come from our own script and the catalog; format('%I') quotes them.
    let statements: Vec<String> = sqlx::query_scalar(
        "SELECT format('ALTER SCHEMA %I OWNER TO %I', n.nspname, $2::text)
           FROM pg_namespace n
          WHERE n.nspname = $1 AND pg_get_userbyid(n.nspowner) <> $2
         UNION ALL
         SELECT format('ALTER %s %I.%I OWNER TO %I',
                       CASE c.relkind WHEN 'S' THEN 'SEQUENCE'
                                      WHEN 'v' THEN 'VIEW'
                                      WHEN 'm' THEN 'MATERIALIZED VIEW'
                                      ELSE 'TABLE' END,
                       n.nspname, c.relname, $2::text)
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'S', 'v', 'm')
            AND pg_get_userbyid(c.relowner) <> $2
            -- A sequence owned by a column moves with its table.
            AND NOT (c.relkind = 'S' AND EXISTS (
                SELECT 1 FROM pg_depend d
                 WHERE d.objid = c.oid AND d.deptype IN ('a', 'i')))",
    )
    .bind(&role.schema)
    .bind(&role.role)
    .fetch_all(&mut *connection)
    .await?;
    if !statements.is_empty() {
        tracing::info!(
            schema = %role.schema,
            role = %role.role,
            "handing the schema over to its service's role"
        );
    }
    for statement in statements {
        sqlx::query(&statement)
            .execute(&mut *connection)
            .await
            .with_context(|| format!("running {statement:?}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_service_has_a_role_owning_its_schema() {
        let owners: Vec<(String, String)> = [
            "order-service",
            "inventory-service",
            "payment-service",
            "notification-service",
        ]
        .iter()
        .map(|service| {
            let role = ServiceRole::of_service(service).unwrap();
            (role.role, role.schema)
        })
        .collect();
        assert_eq!(
            owners,
            [
                ("order_service", "orders"),
                ("inventory_service", "inventory"),
                ("payment_service", "payments"),
                ("notification_service", "notifications"),
            ]
            .map(|(r, s)| (r.to_owned(), s.to_owned()))
        );
        assert_eq!(ServiceRole::of_service("console"), None);
        assert_eq!(
            ServiceRole::owning("payments").unwrap().role,
            "payment_service"
        );
    }

    #[test]
    fn a_role_url_replaces_the_credentials_only() {
        let role = ServiceRole::of_service("order-service").unwrap();
        assert_eq!(
            role.url("postgres://postgres@127.0.0.1:5432/db?sslmode=disable")
                .unwrap(),
            "postgres://order_service:order_service@127.0.0.1:5432/db?sslmode=disable"
        );
        assert_eq!(
            role.url("postgresql://admin:s3cr@t@db:5432/db").unwrap(),
            "postgresql://order_service:order_service@db:5432/db"
        );
        assert_eq!(
            role.url("postgres://127.0.0.1/db").unwrap(),
            "postgres://order_service:order_service@127.0.0.1/db"
        );
        assert!(role.url("127.0.0.1:5432/db").is_err());
    }

    #[test]
    fn a_schema_without_a_created_role_is_refused() {
        let script = "CREATE SCHEMA orders AUTHORIZATION order_service;";
        assert!(parse_roles(script).is_err());
        let script = "CREATE ROLE a LOGIN PASSWORD 'a'; -- no schema";
        assert!(parse_roles(script).is_err());
    }
}
