//! The order-service binary refuses a malformed port, saying which setting is wrong,
//! before touching any database or broker.

#[test]
fn refuses_a_malformed_port_naming_the_key() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_order-service"))
        .env("PORT", "eighty")
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("port"),
        "{stderr}"
    );
}
