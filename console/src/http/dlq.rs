//! Dead letters per topic, with their error headers, and replay: the same
//! code as `devstack dlq list|replay` (`service_kit::dlq`).

use axum::extract::{Path, State};
use axum::response::Redirect;
use axum::routing::{get, post};
use axum::{Json, Router};
use maud::{html, Markup};
use serde::Deserialize;
use service_kit::{Problem, QueryParams};
use shared_events::topics::dead_letter_topic;

use super::layout::page;
use super::{AppState, ConsoleError, PageError};
use crate::kafka::KafkaReadError;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/dlq", get(dlq_index))
        .route("/dlq/{topic}", get(dlq_page))
        .route("/dlq/{topic}/replay", post(replay_form))
        .route("/api/dlq/{topic}", get(dlq_json))
        .route("/api/dlq/{topic}/replay", post(replay_json))
}

#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Letter {
    partition: i32,
    offset: i64,
    key: Option<String>,
    original_topic: Option<String>,
    original_partition: Option<String>,
    original_offset: Option<String>,
    service: Option<String>,
    error: Option<String>,
}

/// The newest dead letters of `topic`, newest first, at most a page of them
/// (however many have piled up, only that many are read), and how many the
/// topic holds in all. An unknown dead-letter topic is a 404.
async fn letters(state: &AppState, topic: &str) -> Result<(Vec<Letter>, i64), ConsoleError> {
    let total = state.kafka.topic(&dead_letter_topic(topic)).await?.count();
    let connection = state.kafka.connection().clone();
    let topic = topic.to_owned();
    let page_size = state.page_size;
    let mut listed = tokio::task::spawn_blocking(move || {
        service_kit::dlq::list_newest(&connection, &topic, page_size)
    })
    .await
    .map_err(|e| ConsoleError::Replay(e.to_string()))?
    .map_err(|e| KafkaReadError::Unavailable(format!("{e:#}")))?;
    // Newest first over all partitions; a page's worth.
    listed.sort_by_key(|l| std::cmp::Reverse((l.timestamp_ms, l.offset)));
    listed.truncate(page_size);
    let letters = listed
        .into_iter()
        .map(|l| Letter {
            partition: l.partition,
            offset: l.offset,
            key: l.key,
            original_topic: l.original_topic,
            original_partition: l.original_partition,
            original_offset: l.original_offset,
            service: l.service,
            error: l.error,
        })
        .collect();
    Ok((letters, total))
}

async fn replay(state: &AppState, topic: &str) -> Result<u64, ConsoleError> {
    state.kafka.topic(&dead_letter_topic(topic)).await?;
    service_kit::dlq::replay(state.kafka.connection(), topic)
        .await
        .map_err(|e| ConsoleError::Replay(format!("{e:#}")))
}

async fn dlq_index(State(state): State<AppState>) -> Result<Markup, PageError> {
    let topics = state.kafka.topics().await?;
    let dead: Vec<_> = topics
        .iter()
        .filter_map(|t| {
            t.name
                .strip_suffix(shared_events::topics::DEAD_LETTER_SUFFIX)
                .map(|original| (original.to_owned(), t.count()))
        })
        .collect();
    Ok(page(
        "Dead letters",
        html! {
            div.scroll { table #dlq {
                thead { tr { th { "topic" } th.num { "dead letters (ever)" } } }
                tbody { @for (t, n) in &dead { tr data-topic=(t) {
                    td { a href={ "/dlq/" (t) } { (t) } } td.num { (n) }
                } } }
            } }
        },
    ))
}

#[derive(Debug, Default, Deserialize)]
pub struct DlqParams {
    replayed: Option<String>,
}

async fn dlq_page(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    QueryParams(params): QueryParams<DlqParams>,
) -> Result<Markup, PageError> {
    let (letters, total) = letters(&state, &topic).await?;
    Ok(page(
        &format!("Dead letters of {topic}"),
        html! {
            @if let Some(n) = &params.replayed { p.note role="status" #replayed { "Replayed " (n) " message(s) onto " (topic) "." } }
            p.muted { (total) " dead letter(s), newest first (at most " (state.page_size) " shown). Replay publishes those not replayed yet back onto " (topic) ", as `devstack dlq replay` does." }
            form method="post" action={ "/dlq/" (topic) "/replay" } { button.danger type="submit" #replay { "Replay onto " (topic) } }
            div.scroll { table #letters {
                thead { tr { th.num { "partition" } th.num { "offset" } th { "key" } th { "from" } th { "service" } th { "error" } } }
                tbody { @for l in &letters { tr.letter {
                    td.num { (l.partition) } td.num { (l.offset) }
                    td { code { (l.key.as_deref().unwrap_or("-")) } }
                    td { (l.original_topic.as_deref().unwrap_or("?")) "[" (l.original_partition.as_deref().unwrap_or("?")) "]@" (l.original_offset.as_deref().unwrap_or("?")) }
                    td { (l.service.as_deref().unwrap_or("?")) }
                    td.error { (l.error.as_deref().unwrap_or("?")) }
                } } }
            } }
            p { a href={ "/topics/" (dead_letter_topic(&topic)) } { "Their messages" } }
        },
    ))
}

async fn replay_form(
    State(state): State<AppState>,
    Path(topic): Path<String>,
) -> Result<Redirect, PageError> {
    let replayed = replay(&state, &topic).await?;
    Ok(Redirect::to(&format!("/dlq/{topic}?replayed={replayed}")))
}

async fn dlq_json(
    State(state): State<AppState>,
    Path(topic): Path<String>,
) -> Result<Json<serde_json::Value>, Problem> {
    let (letters, total) = letters(&state, &topic).await?;
    Ok(Json(
        serde_json::json!({ "topic": topic, "total": total, "letters": letters }),
    ))
}

async fn replay_json(
    State(state): State<AppState>,
    Path(topic): Path<String>,
) -> Result<Json<serde_json::Value>, Problem> {
    let replayed = replay(&state, &topic).await?;
    Ok(Json(
        serde_json::json!({ "topic": topic, "replayed": replayed }),
    ))
}
