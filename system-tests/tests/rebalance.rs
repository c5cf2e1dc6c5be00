//! Several inventory-service instances in one consumer group, joining,
//! leaving and dying while orders compete for too little stock: no unit is
//! sold twice, none is lost, every order ends.

use reqwest::StatusCode;
use serde_json::json;
use system_tests::processes::{ProcessStack, ServiceProcess};

const STOCK: i64 = 30;
const ORDERS: usize = 60;

async fn place(stack: &ProcessStack, i: usize) {
    let body = json!({"orderId": format!("scarce-{i}"), "userId": format!("buyer-{i}"), "items": [{"sku": "scarce", "quantity": 1}]});
    let (status, answer) = stack.post_order(&body).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_joining_leaving_and_dying_never_oversell() {
    let stack = ProcessStack::start().await;
    stack.put_product("scarce", 100, STOCK).await;
    let env = stack.configs.env("inventory-service");
    let mut second = ServiceProcess::start("inventory-service", &env);
    stack
        .wait_for_health(&second.base_url(), StatusCode::OK)
        .await;

    for i in 0..ORDERS / 4 {
        place(&stack, i).await;
    }
    // A third instance joins: three members share the partitions.
    let mut third = ServiceProcess::start("inventory-service", &env);
    stack
        .wait_for_health(&third.base_url(), StatusCode::OK)
        .await;
    for i in ORDERS / 4..ORDERS / 2 {
        place(&stack, i).await;
    }
    // One dies without a word; the group reassigns its partitions once its
    // session times out.
    second.kill();
    for i in ORDERS / 2..3 * ORDERS / 4 {
        place(&stack, i).await;
    }
    // One leaves politely.
    assert!(third.terminate().success());
    for i in 3 * ORDERS / 4..ORDERS {
        place(&stack, i).await;
    }

    let mut confirmed = 0;
    let mut rejected = 0;
    for i in 0..ORDERS {
        let order = stack.wait_until_terminal(&format!("scarce-{i}")).await;
        match order["status"].as_str().unwrap() {
            "CONFIRMED" => confirmed += 1,
            "REJECTED" => {
                assert_eq!(order["reason"], "OUT_OF_STOCK", "{order}");
                rejected += 1
            }
            other => panic!("unexpected status {other}: {order}"),
        }
    }
    assert_eq!(confirmed, STOCK, "every unit sold, none twice");
    assert_eq!(rejected, ORDERS as i64 - STOCK);

    let scarce = stack.wait_until_settled("scarce").await;
    assert_eq!(
        (scarce["available"].as_i64(), scarce["sold"].as_i64()),
        (Some(0), Some(STOCK))
    );
}
