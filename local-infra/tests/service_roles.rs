//! `PostgresCluster::apply_service_roles` on a database that existed before
//! the roles, as an older devstack data directory does: the services' schemas
//! and tables were created by the superuser. Applying the roles (twice, as
//! every devstack start does) hands each schema and everything in it to its
//! service's role, which can then use its tables and log in with its
//! password only.

use local_infra::{service_roles, PostgresCluster, ServiceRole};
use sqlx::{Connection, PgConnection};

const DATABASE: &str = "ordersystem";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_made_before_the_roles_is_handed_to_its_role() {
    let cluster = tokio::task::block_in_place(PostgresCluster::start_temporary).unwrap();
    cluster.ensure_database(DATABASE).await.unwrap();
    let mut admin = PgConnection::connect(&cluster.url(DATABASE)).await.unwrap();
    // What a service running as the superuser left behind: its schema, a
    // table with a serial column (and so an owned sequence), a view.
    for statement in [
        "CREATE SCHEMA orders",
        "CREATE TABLE orders.orders (id bigserial PRIMARY KEY, status text)",
        "INSERT INTO orders.orders (status) VALUES ('CONFIRMED')",
        "CREATE VIEW orders.confirmed AS SELECT id FROM orders.orders WHERE status = 'CONFIRMED'",
    ] {
        sqlx::query(statement).execute(&mut admin).await.unwrap();
    }

    cluster.apply_service_roles(DATABASE).await.unwrap();
    cluster.apply_service_roles(DATABASE).await.unwrap();

    let owners: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, pg_get_userbyid(c.relowner)::text
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'orders' AND c.relkind IN ('r', 'S', 'v')
          ORDER BY 1",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    let role = ServiceRole::owning("orders").unwrap();
    assert_eq!(
        owners,
        ["confirmed", "orders", "orders_id_seq"].map(|name| (name.to_owned(), role.role.clone()))
    );
    // Every other service's schema exists, owned by its role.
    for other in service_roles() {
        let owner: String = sqlx::query_scalar(
            "SELECT pg_get_userbyid(nspowner)::text FROM pg_namespace WHERE nspname = $1",
        )
        .bind(&other.schema)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        assert_eq!(owner, other.role, "owner of {}", other.schema);
    }

    // The role uses its old rows and its sequence, with its password.
    let mut own = PgConnection::connect(&cluster.url_for(&role, DATABASE))
        .await
        .unwrap();
    let id: i64 =
        sqlx::query_scalar("INSERT INTO orders.orders (status) VALUES ('PENDING') RETURNING id")
            .fetch_one(&mut own)
            .await
            .unwrap();
    assert_eq!(id, 2);
    let confirmed: i64 = sqlx::query_scalar("SELECT count(*) FROM orders.confirmed")
        .fetch_one(&mut own)
        .await
        .unwrap();
    assert_eq!(confirmed, 1);
}
