//! With several relays on one outbox, one order's events still go out in the
//! order they were written.

use local_infra::PostgresCluster;
use service_kit::outbox::{self, Outbox};
use service_kit::CommonConfig;
use shared_events::Topics;
use sqlx::migrate::Migrator;

mod common;
use common::order_created;

/// The test needs only the plumbing tables.
static NO_SERVICE_MIGRATIONS: Migrator = sqlx::migrate!("tests/fixtures/no_migrations");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_skips_an_order_whose_older_event_another_relay_holds() {
    let cluster = tokio::task::block_in_place(PostgresCluster::start_temporary).unwrap();
    cluster.ensure_database("claim").await.unwrap();
    let mut config = CommonConfig::defaults("claim-test", 0, "claimtest");
    config.database_url = cluster.url("claim");
    let pool = service_kit::db::connect(&config, &NO_SERVICE_MIGRATIONS)
        .await
        .unwrap();

    let writer = Outbox::new(Topics::default(), "test");
    for order in ["a", "b", "a"] {
        let mut tx = writer.begin(&pool).await.unwrap();
        writer
            .enqueue(&mut tx, &order_created(order))
            .await
            .unwrap();
        writer.commit(tx).await.unwrap();
    }

    // Relay 1 holds order a's first event (as while publishing it).
    let mut relay_one = pool.begin().await.unwrap();
    let held = outbox::claim(&mut relay_one, 1).await.unwrap();
    assert_eq!(
        held.iter()
            .map(|r| r.message_key.as_str())
            .collect::<Vec<_>>(),
        ["a"]
    );

    // Relay 2 may publish b, but not a's second event before a's first.
    let mut relay_two = pool.begin().await.unwrap();
    let claimed = outbox::claim(&mut relay_two, 10).await.unwrap();
    assert_eq!(
        claimed
            .iter()
            .map(|r| r.message_key.as_str())
            .collect::<Vec<_>>(),
        ["b"]
    );
    relay_two.rollback().await.unwrap();

    // Once relay 1 has sent it, a's second event is free to go.
    sqlx::query("UPDATE outbox SET sent_at = now() WHERE id = $1")
        .bind(held[0].id)
        .execute(&mut *relay_one)
        .await
        .unwrap();
    relay_one.commit().await.unwrap();
    let mut relay_two = pool.begin().await.unwrap();
    let claimed = outbox::claim(&mut relay_two, 10).await.unwrap();
    assert_eq!(
        claimed
            .iter()
            .map(|r| r.message_key.as_str())
            .collect::<Vec<_>>(),
        ["b", "a"]
    );
}
