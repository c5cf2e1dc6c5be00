//! Where Postgres spends its time per order: `pg_stat_statements`' counters
//! over one load run (reset before it, read after it), per statement: how
//! often it ran per order, its mean execution time, and its execution
//! milliseconds per order.
//!
//! The counters need the module loaded when the server starts
//! (`shared_preload_libraries`); devstack's own Postgres loads it when the
//! server ships it. Elsewhere, or without the right to create the extension,
//! the run says why there is no profile and goes on.

use std::fmt::Write as _;

use anyhow::Context;
use serde::Serialize;
use sqlx::{Connection, PgConnection};

/// Statements the table shows; the rest are summed into the total.
const SHOWN: usize = 12;
/// Characters of a statement's text the table shows.
const TEXT_CHARS: usize = 110;

/// One normalised statement's cost over the run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatementCost {
    /// The statement, whitespace collapsed, cut to [`TEXT_CHARS`].
    pub query: String,
    pub calls_per_order: f64,
    pub mean_ms: f64,
    /// Execution time per order: calls per order × mean.
    pub ms_per_order: f64,
}

/// The run's statements, most expensive first.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatementProfile {
    /// Orders placed during the run the counters cover.
    pub orders: usize,
    /// Execution time of every statement of the database, per order.
    pub total_ms_per_order: f64,
    /// Statements executed per order, all of them.
    pub calls_per_order: f64,
    pub top: Vec<StatementCost>,
}

/// Starts counting afresh: creates the extension if needed, then resets it.
pub async fn reset(database_url: &str) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect(database_url)
        .await
        .context("connecting to the stack's database")?;
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(&mut conn)
        .await
        .context("creating the pg_stat_statements extension")?;
    sqlx::query("SELECT pg_stat_statements_reset()")
        .execute(&mut conn)
        .await
        .context("resetting pg_stat_statements (is it in shared_preload_libraries?)")?;
    Ok(())
}

/// Reads what the database's statements cost since [`reset`], over `orders`.
pub async fn read(database_url: &str, orders: usize) -> anyhow::Result<StatementProfile> {
    let mut conn = PgConnection::connect(database_url)
        .await
        .context("connecting to the stack's database")?;
    let rows: Vec<(String, i64, f64)> = sqlx::query_as(
        "SELECT query, calls, total_exec_time FROM pg_stat_statements
          WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND query NOT LIKE '%pg_stat_statements%'
          ORDER BY total_exec_time DESC",
    )
    .fetch_all(&mut conn)
    .await
    .context("reading pg_stat_statements")?;
    Ok(profile(rows, orders))
}

/// The profile of `(query, calls, total_exec_ms)` rows over `orders`.
fn profile(rows: Vec<(String, i64, f64)>, orders: usize) -> StatementProfile {
    let per_order = |value: f64| value / orders.max(1) as f64;
    let total_ms: f64 = rows.iter().map(|(_, _, ms)| ms).sum();
    let calls: i64 = rows.iter().map(|(_, calls, _)| calls).sum();
    let top = rows
        .into_iter()
        .take(SHOWN)
        .map(|(query, calls, total)| StatementCost {
            query: shorten(&query),
            calls_per_order: per_order(calls as f64),
            mean_ms: total / calls.max(1) as f64,
            ms_per_order: per_order(total),
        })
        .collect();
    StatementProfile {
        orders,
        total_ms_per_order: per_order(total_ms),
        calls_per_order: per_order(calls as f64),
        top,
    }
}

/// One line, at most [`TEXT_CHARS`] characters.
fn shorten(query: &str) -> String {
    let line = query.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(TEXT_CHARS) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

impl StatementProfile {
    /// The Markdown table of the most expensive statements.
    pub fn markdown(&self) -> String {
        let mut out = String::from(
            "| statement | calls per order | mean | per order | share |\n|---|---|---|---|---|\n",
        );
        for statement in &self.top {
            let share =
                100.0 * statement.ms_per_order / self.total_ms_per_order.max(f64::MIN_POSITIVE);
            let _ = writeln!(
                out,
                "| `{}` | {:.2} | {:.3} ms | {:.3} ms | {share:.0} % |",
                statement.query.replace('|', "\\|").replace('`', "'"),
                statement.calls_per_order,
                statement.mean_ms,
                statement.ms_per_order,
            );
        }
        let _ = writeln!(
            out,
            "| **all statements** | **{:.1}** | | **{:.3} ms** | 100 % |",
            self.calls_per_order, self.total_ms_per_order
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_are_per_order_and_the_total_counts_every_statement() {
        let rows = vec![
            ("COMMIT".to_owned(), 40, 20.0),
            (
                "INSERT   INTO inbox\n  (event_id) VALUES ($1)".to_owned(),
                30,
                6.0,
            ),
            ("SELECT 1".to_owned(), 10, 4.0),
        ];
        let profile = profile(rows, 10);
        assert_eq!(profile.total_ms_per_order, 3.0);
        assert_eq!(profile.calls_per_order, 8.0);
        let inbox = &profile.top[1];
        assert_eq!(inbox.query, "INSERT INTO inbox (event_id) VALUES ($1)");
        assert_eq!(inbox.calls_per_order, 3.0);
        assert_eq!(inbox.mean_ms, 0.2);
        assert!(profile
            .markdown()
            .contains("| `COMMIT` | 4.00 | 0.500 ms | 2.000 ms | 67 % |"));
    }

    #[test]
    fn long_statements_are_cut_on_a_character_boundary() {
        let long = "é".repeat(TEXT_CHARS + 5);
        let short = shorten(&long);
        assert_eq!(short.chars().count(), TEXT_CHARS + 1);
        assert!(short.ends_with('…'));
    }
}
