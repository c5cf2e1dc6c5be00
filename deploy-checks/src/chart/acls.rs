//! Kafka ACLs in one shape for both sides: what
//! `shared_events::access::grants` derives and what the chart's KafkaUsers
//! grant.

use std::collections::BTreeSet;

use shared_events::access::{grants, Operation, Resource};

use super::{name_of, text, texts, Rendered};

/// A grant in the terms both `grants()` and a KafkaUser's ACL can be put in:
/// (principal, resource type, resource name, pattern, operation).
pub type Acl = (String, String, String, String, String);

pub fn from_grants(topics: &shared_events::topics::Topics) -> BTreeSet<Acl> {
    grants(topics)
        .into_iter()
        .map(|grant| {
            let (kind, name, pattern) = match grant.resource {
                Resource::Topic(name) => ("topic", name, "literal"),
                Resource::Group(name) => ("group", name, "literal"),
                Resource::GroupPrefix(name) => ("group", name, "prefix"),
                Resource::Cluster => ("cluster", String::new(), "literal"),
            };
            (
                grant.principal,
                kind.to_owned(),
                name,
                pattern.to_owned(),
                operation_name(grant.operation).to_owned(),
            )
        })
        .collect()
}

/// Strimzi's name of an operation (`Read`, `IdempotentWrite`, ...).
pub fn operation_name(operation: Operation) -> &'static str {
    match operation {
        Operation::Read => "Read",
        Operation::Write => "Write",
        Operation::Describe => "Describe",
        Operation::IdempotentWrite => "IdempotentWrite",
    }
}

pub fn from_kafka_users(rendered: &Rendered) -> BTreeSet<Acl> {
    let mut acls = BTreeSet::new();
    for user in rendered.of_kind("KafkaUser") {
        let principal = name_of(user);
        let authorization = &user["spec"]["authorization"];
        assert_eq!(text(&authorization["type"]).as_deref(), Some("simple"));
        for acl in authorization["acls"].as_vec().unwrap() {
            let resource = &acl["resource"];
            assert!(
                text(&acl["type"]).is_none_or(|t| t == "allow"),
                "{principal}: only allow rules"
            );
            let kind = text(&resource["type"]).unwrap();
            let name = text(&resource["name"]).unwrap_or_default();
            let pattern = text(&resource["patternType"]).unwrap_or_else(|| "literal".into());
            for operation in texts(&acl["operations"]) {
                acls.insert((
                    principal.clone(),
                    kind.clone(),
                    name.clone(),
                    pattern.clone(),
                    operation,
                ));
            }
        }
    }
    acls
}
