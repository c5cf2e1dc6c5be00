//! The payment-service binary refuses bad configuration with a message naming the key.

use std::process::Command;

#[test]
fn refuses_a_malformed_port_naming_the_key() {
    let output = Command::new(env!("CARGO_BIN_EXE_payment-service"))
        .env("PORT", "eighty")
        .output()
        .expect("the binary runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("port"), "{stderr}");
}
