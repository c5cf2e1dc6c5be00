//! The inventory-service binary refuses a seed flag that is not a boolean, saying which setting is wrong,
//! before touching any database or broker.

#[test]
fn refuses_a_malformed_seed_flag_naming_the_key() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_inventory-service"))
        .env("INVENTORY_SEED_DEMO_CATALOG", "sometimes")
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("inventory_seed_demo_catalog"),
        "{stderr}"
    );
}
