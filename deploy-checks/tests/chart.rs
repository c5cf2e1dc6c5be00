//! The Helm chart against the code, without a cluster: what a typo in
//! `deploy/helm/order-system` would break. The chart is rendered with the
//! pinned helm (installed with Go on first use) for its default values and
//! for each optional part (Strimzi, CloudNativePG, KEDA, all of them), and
//! each rendering is read as the kubelet and the operators would read it.
//!
//! Runs as root and as an ordinary user; it needs Go (to build helm) the
//! first time, and nothing else.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use deploy_checks::chart::acls::{from_grants, from_kafka_users, Acl};
use deploy_checks::chart::components::{
    accepted_env, container_env, effective_configs, OPERATOR_SECRET,
};
use deploy_checks::chart::network::{egress, port_of};
use deploy_checks::chart::{
    component_of, first_container, name_of, number, pod_spec, render, rendered, rendered_sets,
    text, texts, EnvSource, CHART_INIT_SQL, CHART_TOPIC_TABLE, VALUE_SETS,
};
use deploy_checks::{
    console_image, read, services, DatabaseUrl, CONSOLE, ENV_READ_OUTSIDE_CONFIG, INIT_SQL,
};
use service_kit::{CommonConfig, LIVENESS_PATH, READINESS_PATH};
use yaml_rust2::{Yaml, YamlLoader};

/// What a service still does after its shutdown timeout: exit.
const EXIT_HEADROOM: Duration = Duration::from_secs(2);

#[test]
fn the_chart_runs_each_service_and_the_console_from_its_own_image() {
    for rendered in rendered_sets() {
        let components: BTreeSet<String> =
            rendered.of_kind("Deployment").map(component_of).collect();
        let expected: BTreeSet<String> = accepted_env()
            .into_iter()
            .map(|(name, _)| name.to_owned())
            .collect();
        assert_eq!(components, expected, "{} values", rendered.set);
        for component in &components {
            let image = text(&first_container(rendered.deployment(component))["image"]).unwrap();
            let repository = image.rsplit_once(':').map(|(repo, _)| repo).unwrap_or("");
            assert!(
                repository.ends_with(&format!("/{component}")),
                "{component} runs {image}, not its own image"
            );
        }
    }
}

#[test]
fn every_variable_the_chart_gives_a_component_is_one_its_configuration_reads() {
    for rendered in rendered_sets() {
        for (component, accepted) in accepted_env() {
            let declared = rendered.declared_env(rendered.deployment(component));
            let mut seen = BTreeSet::new();
            for (name, _) in &declared {
                assert!(
                    seen.insert(name.clone()),
                    "{} values: {component} gets {name} twice (the last one wins, silently)",
                    rendered.set
                );
                assert!(
                    accepted.contains(name) || ENV_READ_OUTSIDE_CONFIG.contains(&name.as_str()),
                    "{} values: {component} does not read {name}; it reads {accepted:?}",
                    rendered.set
                );
            }
        }
        // And every value parses: each configuration loads and validates.
        effective_configs(rendered);
    }
}

#[test]
fn each_component_listens_on_the_port_its_container_and_service_name_and_is_probed_where_it_answers(
) {
    for rendered in rendered_sets() {
        for (component, config) in effective_configs(rendered) {
            let deployment = rendered.deployment(component);
            let container = first_container(deployment);
            let port = &container["ports"][0];
            assert_eq!(
                number(&port["containerPort"], "containerPort"),
                i64::from(config.port),
                "{component}: containerPort vs PORT"
            );
            let port_name = text(&port["name"]).unwrap();
            for (probe, path) in [
                ("startupProbe", LIVENESS_PATH),
                ("livenessProbe", LIVENESS_PATH),
                ("readinessProbe", READINESS_PATH),
            ] {
                let get = &container[probe]["httpGet"];
                assert_eq!(
                    text(&get["path"]).as_deref(),
                    Some(path),
                    "{component}: {probe}"
                );
                assert_eq!(
                    text(&get["port"]),
                    Some(port_name.clone()),
                    "{component}: {probe} asks the HTTP port"
                );
            }
            let service = rendered.get("Service", &name_of(deployment));
            let service_port = &service["spec"]["ports"][0];
            assert_eq!(
                number(&service_port["port"], "Service port"),
                i64::from(config.port)
            );
            assert_eq!(text(&service_port["targetPort"]), Some(port_name));
            assert_eq!(
                service["spec"]["selector"], deployment["spec"]["selector"]["matchLabels"],
                "{component}: the Service selects the Deployment's pods"
            );
        }
    }
}

#[test]
fn the_console_calls_each_service_at_its_service_name_and_port() {
    for rendered in rendered_sets() {
        let console = console_image()
            .load(&container_env(rendered, CONSOLE))
            .unwrap();
        let configs: BTreeMap<&str, CommonConfig> =
            effective_configs(rendered).into_iter().collect();
        for (service, url) in deploy_checks::console_service_urls(&console) {
            let name = name_of(rendered.deployment(service));
            assert!(rendered.find("Service", &name).is_some());
            assert_eq!(
                *url,
                format!("http://{name}:{}", configs[service].port),
                "{CONSOLE} → {service}"
            );
        }
    }
}

#[test]
fn every_topic_the_services_use_is_created_by_the_topic_init_job_with_its_partitions() {
    for rendered in rendered_sets()
        .iter()
        .filter(|r| r.of_kind("Kafka").next().is_none())
    {
        let job = rendered
            .of_kind("Job")
            .next()
            .unwrap_or_else(|| panic!("{} values: no topic-init Job", rendered.set));
        let annotations = &job["metadata"]["annotations"];
        let hooks = text(&annotations["helm.sh/hook"]).unwrap_or_default();
        assert!(
            hooks.contains("pre-install") && hooks.contains("pre-upgrade"),
            "the topics exist before the services start or are upgraded"
        );
        let env = rendered.environment(job, OPERATOR_SECRET);
        let created: BTreeSet<&str> = env["TOPICS"].split_whitespace().collect();
        for (name, config) in effective_configs(rendered) {
            for topic in config.topics().all_with_dead_letters() {
                assert!(
                    created.contains(topic.as_str()),
                    "{} values: topic-init does not create {topic}, used by {name}",
                    rendered.set
                );
            }
            assert_eq!(env["PARTITIONS"], config.kafka.topic_partitions.to_string());
            assert_eq!(
                env["REPLICATION_FACTOR"],
                config.kafka.replication_factor.to_string()
            );
            assert_eq!(env["BOOTSTRAP_SERVERS"], config.kafka.bootstrap_servers);
        }
    }
}

#[test]
fn with_strimzi_every_topic_is_a_kafka_topic_replicated_three_times_with_two_in_sync() {
    for rendered in rendered_sets()
        .iter()
        .filter(|r| r.of_kind("Kafka").next().is_some())
    {
        assert!(
            rendered.of_kind("Job").next().is_none(),
            "Strimzi's topic operator creates the topics"
        );
        let kafka = rendered.of_kind("Kafka").next().unwrap();
        let cluster = name_of(kafka);
        let pool = rendered.of_kind("KafkaNodePool").next().unwrap();
        assert_eq!(number(&pool["spec"]["replicas"], "nodes"), 3);
        assert_eq!(
            texts(&pool["spec"]["roles"]),
            ["controller", "broker"],
            "KRaft: every node a controller and a broker"
        );
        let config = &kafka["spec"]["kafka"]["config"];
        assert_eq!(number(&config["min.insync.replicas"], "min ISR"), 2);
        assert_eq!(number(&config["default.replication.factor"], "RF"), 3);
        assert_eq!(
            text(&config["auto.create.topics.enable"]).as_deref(),
            Some("false")
        );

        let topics: BTreeMap<String, &Yaml> = rendered
            .of_kind("KafkaTopic")
            .map(|t| (text(&t["spec"]["topicName"]).unwrap(), t))
            .collect();
        for (name, config) in effective_configs(rendered) {
            for topic in config.topics().all_with_dead_letters() {
                let resource = topics.get(&topic).unwrap_or_else(|| {
                    panic!(
                        "{} values: no KafkaTopic {topic}, used by {name}",
                        rendered.set
                    )
                });
                let spec = &resource["spec"];
                assert_eq!(
                    number(&spec["partitions"], "partitions"),
                    i64::from(config.kafka.topic_partitions)
                );
                assert_eq!(
                    number(&spec["replicas"], "replicas"),
                    i64::from(config.kafka.replication_factor)
                );
                assert_eq!(config.kafka.replication_factor, 3);
                assert_eq!(number(&spec["config"]["min.insync.replicas"], "min ISR"), 2);
                assert_eq!(
                    text(&resource["metadata"]["labels"]["strimzi.io/cluster"]),
                    Some(cluster.clone())
                );
            }
            let port = number(&kafka["spec"]["kafka"]["listeners"][0]["port"], "listener");
            assert_eq!(
                config.kafka.bootstrap_servers,
                format!("{cluster}-kafka-bootstrap:{port}"),
                "{name} uses the cluster's listener"
            );
            assert_eq!(config.kafka.security_protocol.as_str(), "sasl_ssl");
            assert_eq!(config.kafka.sasl_mechanism, "SCRAM-SHA-512");
        }
    }
}

#[test]
fn each_kafka_user_is_granted_exactly_what_the_code_derives_from_its_topic_table() {
    for rendered in rendered_sets()
        .iter()
        .filter(|r| r.of_kind("Kafka").next().is_some())
    {
        let configs = effective_configs(rendered);
        let topics = configs[0].1.topics();
        let expected = from_grants(&topics);
        let actual = from_kafka_users(rendered);
        let missing: Vec<&Acl> = expected.difference(&actual).collect();
        let extra: Vec<&Acl> = actual.difference(&expected).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{} values: KafkaUser ACLs differ from grants(): missing {missing:?}, extra {extra:?}",
            rendered.set
        );
        // Each component logs in as its KafkaUser, with the password Strimzi
        // keeps in the user's Secret, and consumes in the group its ACLs name.
        for (component, config) in &configs {
            let user = rendered.get("KafkaUser", component);
            assert_eq!(
                text(&user["spec"]["authentication"]["type"]).as_deref(),
                Some("scram-sha-512")
            );
            assert_eq!(config.kafka.sasl_username, *component);
            let declared = rendered.declared_env(rendered.deployment(component));
            let password = declared
                .iter()
                .find(|(name, _)| name == "KAFKA_SASL_PASSWORD")
                .map(|(_, source)| source.clone());
            assert_eq!(
                password,
                Some(EnvSource::Secret {
                    name: component.to_string(),
                    key: "password".into()
                }),
                "{component}'s password is the one Strimzi made for its user"
            );
            assert_eq!(
                config.kafka.group_id,
                shared_events::access::default_group_id(component)
            );
        }
    }
}

#[test]
fn the_chart_topic_table_is_the_codes() {
    let table = &YamlLoader::load_from_str(&read(CHART_TOPIC_TABLE)).unwrap()[0];
    let rows: Vec<(Vec<String>, Vec<String>)> = table["topics"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|row| (texts(&row["publishers"]), texts(&row["consumers"])))
        .collect();
    let code: Vec<(Vec<String>, Vec<String>)> = shared_events::access::TOPIC_TABLE
        .iter()
        .map(|row| {
            let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
            (names(row.publishers), names(row.consumers))
        })
        .collect();
    assert_eq!(rows, code, "{CHART_TOPIC_TABLE} vs TOPIC_TABLE");
    // Row by row, the variable it names configures that row's topic.
    let order_service = &services()[0];
    for (row, code_row) in table["topics"]
        .as_vec()
        .unwrap()
        .iter()
        .zip(shared_events::access::TOPIC_TABLE)
    {
        let variable = text(&row["variable"]).unwrap();
        let probe = "a-topic-named-by-its-variable";
        let env = HashMap::from([(variable.clone(), probe.to_owned())]);
        let config = (order_service.load)(&env).unwrap();
        assert_eq!(
            code_row.topic.name(&config.topics()),
            probe,
            "{CHART_TOPIC_TABLE}: {variable} names another topic than {:?}",
            code_row.topic
        );
    }
    assert_eq!(
        text(&table["consumerGroupPrefix"]).as_deref(),
        Some(shared_events::access::CONSUMER_GROUP_PREFIX)
    );
    assert_eq!(
        text(&table["deadLetterSuffix"]).as_deref(),
        Some(shared_events::topics::DEAD_LETTER_SUFFIX)
    );
}

#[test]
fn cloudnativepg_is_bootstrapped_with_the_init_script_itself() {
    assert_eq!(
        read(CHART_INIT_SQL).as_bytes(),
        read(INIT_SQL).as_bytes(),
        "{CHART_INIT_SQL} must be {INIT_SQL} (a symbolic link to it)"
    );
    for rendered in rendered_sets()
        .iter()
        .filter(|r| r.of_kind("Cluster").next().is_some())
    {
        let cluster = rendered.of_kind("Cluster").next().unwrap();
        let spec = &cluster["spec"];
        assert_eq!(number(&spec["instances"], "instances"), 3);
        // A lost service pod's locks are freed as fast as in the multi-host
        // rehearsal that found the need.
        for (name, value) in local_infra::DEAD_CLIENT_SETTINGS {
            assert_eq!(
                text(&spec["postgresql"]["parameters"][name]).as_deref(),
                Some(value),
                "the Postgres cluster sets {name}"
            );
        }
        let reference =
            &spec["bootstrap"]["initdb"]["postInitApplicationSQLRefs"]["configMapRefs"][0];
        let config_map = rendered.get("ConfigMap", &text(&reference["name"]).unwrap());
        let key = text(&reference["key"]).unwrap();
        assert_eq!(
            text(&config_map["data"][key.as_str()]).as_deref(),
            Some(read(INIT_SQL).as_str()),
            "the ConfigMap holds the script as it is"
        );
        let database = text(&spec["bootstrap"]["initdb"]["database"]).unwrap();
        let managed: BTreeMap<String, String> = spec["managed"]["roles"]
            .as_vec()
            .unwrap()
            .iter()
            .map(|role| {
                (
                    text(&role["name"]).unwrap(),
                    text(&role["passwordSecret"]["name"]).unwrap(),
                )
            })
            .collect();
        let init_sql = read(INIT_SQL);
        for (name, config) in effective_configs(rendered)
            .into_iter()
            .filter(|(name, _)| *name != CONSOLE)
        {
            let url = DatabaseUrl::parse(&config.database_url).unwrap();
            assert_eq!(url.host, format!("{}-rw", name_of(cluster)), "{name}");
            assert_eq!(url.database, database, "{name}: one database for all");
            assert!(
                init_sql.contains(&format!(
                    "CREATE SCHEMA {} AUTHORIZATION {};",
                    config.database_schema, url.user
                )),
                "{name}: {INIT_SQL} gives its role {} the schema {}",
                url.user,
                config.database_schema
            );
            // CloudNativePG sets the role's password from the Secret that
            // also holds the service's DATABASE_URL.
            let secret = &managed[&url.user];
            assert_eq!(
                rendered.secret_value(secret, "username").as_deref(),
                Some(url.user.as_str())
            );
            assert_eq!(
                rendered.secret_value(secret, "password"),
                Some(url.password.clone())
            );
            assert_eq!(
                rendered.secret_value(secret, "DATABASE_URL"),
                Some(config.database_url.clone())
            );
        }
    }
}

#[test]
fn pods_get_longer_to_stop_than_the_services_shutdown_may_take() {
    for rendered in rendered_sets() {
        for (component, config) in effective_configs(rendered) {
            let spec = pod_spec(rendered.deployment(component));
            let grace = number(&spec["terminationGracePeriodSeconds"], "grace period");
            let grace = Duration::from_secs(grace.try_into().unwrap());
            assert!(
                config.shutdown_timeout + EXIT_HEADROOM <= grace,
                "{component}: SIGKILL after {grace:?} would cut short a shutdown allowed {:?}",
                config.shutdown_timeout
            );
        }
    }
}

#[test]
fn no_component_has_more_replicas_than_a_topic_has_partitions() {
    for rendered in rendered_sets() {
        for (component, config) in effective_configs(rendered) {
            let deployment = rendered.deployment(component);
            if let Some(replicas) = text(&deployment["spec"]["replicas"]) {
                let replicas: i32 = replicas.parse().unwrap();
                assert!(
                    replicas <= config.kafka.topic_partitions,
                    "{component}: {replicas} replicas, {} partitions",
                    config.kafka.topic_partitions
                );
            }
            assert!(
                rendered
                    .find("PodDisruptionBudget", &name_of(deployment))
                    .is_some(),
                "{component} has a PodDisruptionBudget"
            );
        }
    }
    let too_many = render(
        VALUE_SETS[0],
        &[("services.inventory-service.replicas", "7")],
    );
    let err = too_many
        .err()
        .expect("7 replicas on 6 partitions must not render");
    assert!(
        format!("{err:#}").contains("exceeds KAFKA_TOPIC_PARTITIONS"),
        "{err:#}"
    );
}

#[test]
fn keda_scales_inventory_service_on_its_group_lag_up_to_the_partition_count() {
    for rendered in rendered_sets()
        .iter()
        .filter(|r| r.of_kind("ScaledObject").next().is_some())
    {
        let configs: BTreeMap<&str, CommonConfig> =
            effective_configs(rendered).into_iter().collect();
        let inventory = &configs["inventory-service"];
        let deployment = rendered.deployment("inventory-service");
        assert!(
            deployment["spec"]["replicas"].is_badvalue(),
            "KEDA owns inventory-service's replica count"
        );
        let scaled = rendered.of_kind("ScaledObject").next().unwrap();
        let spec = &scaled["spec"];
        assert_eq!(
            text(&spec["scaleTargetRef"]["name"]),
            Some(name_of(deployment))
        );
        assert_eq!(
            number(&spec["maxReplicaCount"], "maxReplicaCount"),
            i64::from(inventory.kafka.topic_partitions)
        );
        let trigger = &spec["triggers"][0];
        assert_eq!(text(&trigger["type"]).as_deref(), Some("kafka"));
        let metadata = &trigger["metadata"];
        assert_eq!(
            text(&metadata["consumerGroup"]),
            Some(inventory.kafka.group_id.clone())
        );
        assert_eq!(
            text(&metadata["bootstrapServers"]),
            Some(inventory.kafka.bootstrap_servers.clone())
        );
        if inventory.kafka.security_protocol.uses_sasl() {
            let auth = rendered.get(
                "TriggerAuthentication",
                &text(&trigger["authenticationRef"]["name"]).unwrap(),
            );
            let parameters: BTreeSet<String> = auth["spec"]["secretTargetRef"]
                .as_vec()
                .unwrap()
                .iter()
                .filter_map(|p| text(&p["parameter"]))
                .collect();
            for needed in ["sasl", "username", "password", "tls"] {
                assert!(parameters.contains(needed), "KEDA's login lacks {needed}");
            }
        }
    }
}

#[test]
fn every_container_runs_unprivileged_on_a_read_only_root() {
    for rendered in rendered_sets() {
        for workload in rendered
            .of_kind("Deployment")
            .chain(rendered.of_kind("Job"))
        {
            let spec = pod_spec(workload);
            let name = name_of(workload);
            assert_eq!(
                spec["securityContext"]["runAsNonRoot"].as_bool(),
                Some(true),
                "{name}"
            );
            assert_eq!(spec["automountServiceAccountToken"].as_bool(), Some(false));
            for container in spec["containers"].as_vec().unwrap() {
                let context = &container["securityContext"];
                assert_eq!(context["allowPrivilegeEscalation"].as_bool(), Some(false));
                assert_eq!(context["readOnlyRootFilesystem"].as_bool(), Some(true));
                assert_eq!(texts(&context["capabilities"]["drop"]), ["ALL"], "{name}");
                assert!(!container["resources"]["limits"]["memory"].is_badvalue());
            }
        }
    }
}

#[test]
fn only_order_and_inventory_service_are_reachable_from_the_ingress_and_only_the_console_reads_the_others(
) {
    let rendered = rendered("default");
    let console_selector = &rendered.deployment(CONSOLE)["spec"]["selector"]["matchLabels"];
    for (component, _) in accepted_env() {
        let deployment = rendered.deployment(component);
        let policy = rendered.get("NetworkPolicy", &name_of(deployment));
        assert_eq!(
            policy["spec"]["podSelector"]["matchLabels"],
            deployment["spec"]["selector"]["matchLabels"]
        );
        assert_eq!(texts(&policy["spec"]["policyTypes"]), ["Ingress", "Egress"]);
        let peers: Vec<Yaml> = policy["spec"]["ingress"]
            .as_vec()
            .unwrap()
            .iter()
            .flat_map(|rule| rule["from"].as_vec().cloned().unwrap_or_default())
            .collect();
        let from_ingress = peers.iter().any(|p| !p["namespaceSelector"].is_badvalue());
        let from_console = peers
            .iter()
            .any(|p| p["podSelector"]["matchLabels"] == *console_selector);
        let expected_from_ingress = ["order-service", "inventory-service"].contains(&component);
        assert_eq!(
            from_ingress, expected_from_ingress,
            "{component} from the ingress"
        );
        assert_eq!(
            from_console,
            component != CONSOLE,
            "{component} from the console"
        );
        assert_eq!(
            peers.len(),
            usize::from(from_ingress) + usize::from(from_console),
            "{component}: nobody else"
        );
    }
}

#[test]
fn every_component_may_reach_what_its_configuration_names_and_the_console_each_service() {
    for rendered in rendered_sets() {
        let configs: BTreeMap<&str, CommonConfig> =
            effective_configs(rendered).into_iter().collect();
        for (component, config) in &configs {
            let deployment = rendered.deployment(component);
            let open = egress(rendered.get("NetworkPolicy", &name_of(deployment)));
            let allows = |port: u16| open.iter().any(|(p, _)| *p == port);
            let mut needed = vec![("DNS", 53)];
            for server in config.kafka.bootstrap_servers.split(',') {
                needed.push(("Kafka", port_of(server)));
            }
            if *component != CONSOLE {
                needed.push((
                    "Postgres",
                    DatabaseUrl::parse(&config.database_url).unwrap().port,
                ));
            }
            if !config.auth_jwks_url.is_empty() {
                needed.push(("the JWKS", port_of(&config.auth_jwks_url)));
            }
            for (what, port) in needed {
                assert!(
                    allows(port),
                    "{} values: {component} may not reach {what} on port {port}",
                    rendered.set
                );
            }
        }
        let console = rendered.deployment(CONSOLE);
        let open = egress(rendered.get("NetworkPolicy", &name_of(console)));
        for (service, config) in configs.iter().filter(|(name, _)| **name != CONSOLE) {
            let pods = &rendered.deployment(service)["spec"]["selector"]["matchLabels"];
            assert!(
                open.iter().any(|(port, peers)| *port == config.port
                    && peers
                        .iter()
                        .any(|peer| peer["podSelector"]["matchLabels"] == *pods)),
                "{} values: the console may not reach {service} on {}",
                rendered.set,
                config.port
            );
        }
    }
}

#[test]
fn no_network_policy_rule_admits_everyone_even_without_the_console() {
    let without_console = render(VALUE_SETS[0], &[("console.enabled", "false")]).unwrap();
    for rendered in rendered_sets().iter().chain([&without_console]) {
        for policy in rendered.of_kind("NetworkPolicy") {
            for rule in policy["spec"]["ingress"].as_vec().unwrap() {
                assert!(
                    rule["from"].as_vec().is_some_and(|peers| !peers.is_empty()),
                    "{} values: {} admits everyone on {:?}",
                    rendered.set,
                    name_of(policy),
                    rule["ports"]
                );
            }
        }
    }
}
