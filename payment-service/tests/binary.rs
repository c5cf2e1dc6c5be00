//! The payment-service binary refuses a negative default credit, saying which setting is wrong,
//! before touching any database or broker.

#[test]
fn refuses_a_negative_default_credit() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_payment-service"))
        .env("PAYMENT_DEFAULT_CREDIT_CENTS", "-5")
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("PAYMENT_DEFAULT_CREDIT_CENTS"),
        "{stderr}"
    );
}
