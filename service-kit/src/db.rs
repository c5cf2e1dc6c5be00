//! Database access: one pool per service, pinned to the service's own schema,
//! and migrations run at start-up.
//!
//! Every connection has `search_path` set to the service's schema, so SQL in the
//! services never names a schema and cannot reach another service's tables by
//! accident. Migrations are the service's own plus the plumbing tables (outbox,
//! inbox) from this crate, recorded together in the schema's `_sqlx_migrations`.

use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::future::BoxFuture;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool};

use crate::config::CommonConfig;

/// Plumbing tables every service needs (outbox, inbox).
static PLUMBING: Migrator = sqlx::migrate!("./migrations");

/// First and longest wait between attempts to reach the database at start-up.
const CONNECT_RETRY_INITIAL: Duration = Duration::from_millis(200);
const CONNECT_RETRY_MAX: Duration = Duration::from_secs(2);
/// How long a request waits for a free pooled connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// A pooled connection idle for longer is pinged before it is handed out (a
/// database restarted meanwhile has closed it); one in steady use is not,
/// which saves a round trip per transaction. A connection that broke within
/// this window fails its statement like any other interruption: transient,
/// retried by the consumer, a 503 over HTTP.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// Connects to the database, creates the service's schema if needed and runs
/// the migrations. Retries while the database is unreachable, up to
/// `DATABASE_CONNECT_TIMEOUT_SECS`.
pub async fn connect(
    config: &CommonConfig,
    migrations: &'static Migrator,
) -> anyhow::Result<PgPool> {
    let schema = &config.database_schema;
    if schema.is_empty() || !schema.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
        bail!("DATABASE_SCHEMA must be lower-case letters and '_', got {schema:?}");
    }
    let options = PgConnectOptions::from_str(&config.database_url)
        .context("DATABASE_URL is not a valid Postgres URL")?;

    let deadline = Instant::now() + config.database_connect_timeout;
    let mut delay = CONNECT_RETRY_INITIAL;
    loop {
        match create_schema(&options, schema).await {
            Ok(()) => break,
            Err(err) if Instant::now() < deadline => {
                tracing::warn!(error = %err, "database not reachable yet, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(CONNECT_RETRY_MAX);
            }
            Err(err) => return Err(err.context("database unreachable at start-up")),
        }
    }

    let pool = PgPoolOptions::new()
        .max_connections(config.database_max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .test_before_acquire(false)
        .before_acquire(|connection, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE_FOR {
                    connection.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_with(options.options([("search_path", schema.as_str())]))
        .await
        .context("opening the connection pool")?;

    let combined = Migrator::new(Combined {
        first: &PLUMBING,
        second: migrations,
    })
    .await
    .map_err(|err| anyhow::anyhow!("collecting migrations: {err}"))?;
    combined
        .run(&pool)
        .await
        .with_context(|| format!("running migrations in schema {schema}"))?;
    Ok(pool)
}

async fn create_schema(options: &PgConnectOptions, schema: &str) -> anyhow::Result<()> {
    let mut conn = sqlx::PgConnection::connect_with(options)
        .await
        .context("connecting to the database")?;
    // A deployment may give each service a role that owns its pre-created
    // schema but may not create schemas in the database (see
    // deploy/postgres/init.sql). CREATE SCHEMA IF NOT EXISTS checks that
    // database privilege before it looks for the schema, so look first.
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(schema)
            .fetch_one(&mut conn)
            .await
            .context("looking for the schema")?;
    if exists {
        return Ok(());
    }
    // The schema name was checked to be [a-z_]+ above, so it is safe to splice.
    // Two services starting together may race on CREATE SCHEMA; the loser's
    // unique violation means the schema exists, which is what we want.
    let created = sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
        .execute(&mut conn)
        .await;
    match created {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("23505") => Ok(()),
        Err(err) => Err(err).context("creating the schema"),
    }
}

/// The plumbing migrations followed by the service's own, as one source.
#[derive(Debug)]
struct Combined {
    first: &'static Migrator,
    second: &'static Migrator,
}

impl<'s> MigrationSource<'s> for Combined {
    fn resolve(self) -> BoxFuture<'s, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move {
            let mut all: Vec<Migration> = self
                .first
                .iter()
                .chain(self.second.iter())
                .cloned()
                .collect();
            all.sort_by_key(|m| m.version);
            Ok(all)
        })
    }
}

/// Is the database answering? Used by readiness checks.
pub async fn ping(pool: &PgPool) -> bool {
    sqlx::query("SELECT 1").execute(pool).await.is_ok()
}

/// Errors that say "try again later" rather than "this is wrong": the
/// database unreachable or restarting, the pool exhausted, a serialisation
/// conflict or deadlock, a statement timeout. The one rule for both callers:
/// the consumer retries such an event for as long as it takes
/// ([`crate::HandlerError::Transient`]), and the HTTP API answers 503 with
/// `Retry-After` ([`crate::Problem`]) instead of 500.
pub fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // 08: connection exception; 40: serialization failure or deadlock;
            // 53: insufficient resources; 57: operator intervention (shutdown,
            // statement timeout).
            ["08", "40", "53", "57"]
                .iter()
                .any(|class| code.starts_with(class))
        }
        _ => false,
    }
}

/// Serialises work on each of `keys` (orders) for the rest of the transaction.
///
/// One order's events travel on several topics, so different instances may
/// handle two of them at the same moment; the consumer loop takes this lock
/// for every event it applies, so each service decides from "what have I
/// seen of this order so far" with nobody changing it meanwhile. It is a
/// transaction-scoped advisory lock: no table, released on commit or
/// rollback. Advisory locks belong to the whole database, so the lock id
/// mixes in the connection's schema: services sharing a database (each
/// deciding from its own schema only) do not wait for each other's locks.
///
/// The locks are taken in one order (by lock id, each once) whatever the
/// order of `keys`, so two transactions locking overlapping sets (two
/// batches) wait for each other rather than deadlock. Take them before any
/// other lock in the transaction: a transaction then never waits for one of
/// them while holding something else.
pub async fn lock_keys(tx: &mut sqlx::PgConnection, keys: &[&str]) -> Result<(), sqlx::Error> {
    // A sorted subquery is evaluated before the outer projection calls the
    // lock function on its rows, one after another in that order.
    sqlx::query(
        "SELECT pg_advisory_xact_lock(id) FROM (
             SELECT DISTINCT hashtextextended(key, hashtext(current_schema())) AS id
             FROM unnest($1::text[]) AS key
             ORDER BY id
         ) AS ids",
    )
    .bind(keys)
    .execute(tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_connections_and_a_busy_pool_are_transient() {
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(is_transient(&sqlx::Error::Io(reset)));
        assert!(is_transient(&sqlx::Error::PoolTimedOut));
        assert!(is_transient(&sqlx::Error::PoolClosed));
    }

    #[test]
    fn bugs_and_bad_data_are_not_transient() {
        assert!(!is_transient(&sqlx::Error::RowNotFound));
        assert!(!is_transient(&sqlx::Error::ColumnNotFound("x".into())));
        assert!(!is_transient(&sqlx::Error::Decode("not a status".into())));
    }
}
