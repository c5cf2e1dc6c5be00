//! The notification-service binary refuses a schema name that is not lower-case letters and '_', saying which setting is wrong,
//! before touching any database or broker.

#[test]
fn refuses_an_unsafe_schema_name() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_notification-service"))
        .env("DATABASE_SCHEMA", "Not-A-Schema")
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("DATABASE_SCHEMA"),
        "{stderr}"
    );
}
