//! NetworkPolicies, read: which ports a policy's egress rules open, and to
//! whom; and the port an address names.

use yaml_rust2::Yaml;

use super::number;

/// The port at the end of `host:port` or of a URL's authority, or the
/// scheme's default.
pub fn port_of(address: &str) -> u16 {
    let authority = address
        .split_once("://")
        .map_or(address, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    match authority.rsplit_once(':') {
        Some((_, port)) => port.parse().expect("a port number"),
        None if address.starts_with("https://") => 443,
        None => 80,
    }
}

/// The ports a NetworkPolicy's egress rules open, each with the peers it
/// opens it to (empty: anywhere).
pub fn egress(policy: &Yaml) -> Vec<(u16, Vec<Yaml>)> {
    let rules = policy["spec"]["egress"]
        .as_vec()
        .cloned()
        .unwrap_or_default();
    rules
        .iter()
        .flat_map(|rule| {
            let peers = rule["to"].as_vec().cloned().unwrap_or_default();
            rule["ports"]
                .as_vec()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |port| (number(&port["port"], "port") as u16, peers.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_is_read_from_host_and_port_or_from_a_url_or_its_scheme() {
        assert_eq!(port_of("kafka-0.internal:9093"), 9093);
        assert_eq!(port_of("http://otel:4318"), 4318);
        assert_eq!(port_of("https://id.example.com/.well-known/jwks.json"), 443);
        assert_eq!(port_of("http://id.example.com/jwks"), 80);
    }
}
