//! `devstack dlq list|replay --topic T`: look at and replay dead letters on
//! the stack's Kafka (from `stack.json`, as the super user if it takes
//! logins) or on `--kafka-bootstrap`.

use service_kit::kafka::KafkaConnection;

use crate::cli::{Cli, DlqCommand};
use crate::stack_file::StackDescription;

pub async fn run(cli: &Cli, command: &DlqCommand) -> anyhow::Result<()> {
    let connection = match &cli.kafka_bootstrap {
        Some(bootstrap) => KafkaConnection::plaintext(bootstrap),
        None => crate::infra::tool_connection(&StackDescription::read(&cli.dir)?, &cli.dir)?,
    };
    match command {
        DlqCommand::List { topic } => {
            let connection = connection.clone();
            let topic = topic.clone();
            let letters =
                tokio::task::spawn_blocking(move || service_kit::dlq::list(&connection, &topic))
                    .await??;
            for letter in &letters {
                println!(
                    "{}@{} key={} from {}[{}]@{} service={} error={}",
                    letter.partition,
                    letter.offset,
                    letter.key.as_deref().unwrap_or("-"),
                    letter.original_topic.as_deref().unwrap_or("?"),
                    letter.original_partition.as_deref().unwrap_or("?"),
                    letter.original_offset.as_deref().unwrap_or("?"),
                    letter.service.as_deref().unwrap_or("?"),
                    letter.error.as_deref().unwrap_or("?"),
                );
            }
            println!("{} dead letter(s)", letters.len());
        }
        DlqCommand::Replay { topic } => {
            let replayed = service_kit::dlq::replay(&connection, topic).await?;
            println!("replayed {replayed} message(s) onto {topic}");
        }
    }
    Ok(())
}
