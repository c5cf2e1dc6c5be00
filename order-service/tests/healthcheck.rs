//! `order-service healthcheck`, the container health check: it asks the
//! instance configured like itself (HOST, PORT) for /health/ready and exits 0
//! on 200, 1 otherwise, as Docker's HEALTHCHECK expects. The mode lives in
//! service-kit, so every service binary has it.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Command, Output};

/// Answers one request with `status_line`, on a free loopback port; returns the port.
fn instance_answering(status_line: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut request_line = String::new();
        BufReader::new(&stream)
            .read_line(&mut request_line)
            .unwrap();
        assert_eq!(request_line.trim_end(), "GET /health/ready HTTP/1.1");
        let mut stream = stream;
        let _ = write!(
            stream,
            "{status_line}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    });
    port
}

fn healthcheck(port: u16) -> Output {
    Command::new(env!("CARGO_BIN_EXE_order-service"))
        .arg("healthcheck")
        .env("HOST", "0.0.0.0")
        .env("PORT", port.to_string())
        .output()
        .expect("the binary runs")
}

#[test]
fn exits_0_when_the_instance_is_ready() {
    let output = healthcheck(instance_answering("HTTP/1.1 200 OK"));
    assert_eq!(output.status.code(), Some(0), "{output:?}");
}

#[test]
fn exits_1_when_the_instance_is_not_ready() {
    let output = healthcheck(instance_answering("HTTP/1.1 503 Service Unavailable"));
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("503"));
}

#[test]
fn exits_1_when_nothing_listens() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let output = healthcheck(port);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
}

#[test]
fn refuses_an_unknown_argument() {
    let output = Command::new(env!("CARGO_BIN_EXE_order-service"))
        .arg("helthcheck")
        .output()
        .expect("the binary runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("helthcheck"));
}
