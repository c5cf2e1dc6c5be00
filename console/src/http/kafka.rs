//! Kafka pages, the set Kafdrop has: brokers, topics, a topic's messages
//! (by partition and offset, newest first, or found by key), its live tail,
//! and consumer groups with their lag. Each page has a JSON twin under `/api`.

use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::{Json, Router};
use futures::{Stream, StreamExt};
use maud::{html, Markup};
use serde::Deserialize;
use service_kit::{Problem, QueryParams};

use super::layout::{page, short_id};
use super::{filled, number, until_shutdown, AppState, ConsoleError, PageError};
use crate::decode::{decode, Body, Decoded, Shown};
use crate::kafka::{Broker, GroupInfo, GroupListing, MessageQuery, TopicInfo};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/brokers", get(brokers_page))
        .route("/api/brokers", get(brokers_json))
        .route("/topics", get(topics_page))
        .route("/api/topics", get(topics_json))
        .route("/topics/{topic}", get(messages_page))
        .route("/api/topics/{topic}/messages", get(messages_json))
        .route("/topics/{topic}/tail", get(tail_page))
        .route("/topics/{topic}/tail/stream", get(tail_stream))
        .route("/groups", get(groups_page))
        .route("/api/groups", get(groups_json))
        .route("/groups/{group}", get(group_page))
        .route("/api/groups/{group}", get(group_json))
}

async fn brokers_page(State(state): State<AppState>) -> Result<Markup, PageError> {
    let brokers = state.kafka.brokers().await?;
    Ok(page(
        "Brokers",
        html! {
            p.muted { "Bootstrap: " code { (state.kafka.bootstrap()) } }
            div.scroll { table {
                thead { tr { th.num { "id" } th { "host" } th.num { "port" } th { "" } } }
                tbody { @for b in &brokers { tr {
                    td.num { (b.id) } td { (b.host) } td.num { (b.port) }
                    td { @if b.answered { span.muted { "answered this request" } } }
                } } }
            } }
        },
    ))
}

async fn brokers_json(State(state): State<AppState>) -> Result<Json<Vec<Broker>>, Problem> {
    Ok(Json(state.kafka.brokers().await?))
}

async fn topics_page(State(state): State<AppState>) -> Result<Markup, PageError> {
    let topics = state.kafka.topics().await?;
    Ok(page(
        "Topics",
        html! {
            div.scroll { table #topics {
                thead { tr {
                    th { "topic" } th.num { "partitions" } th.num { "messages" }
                    th { "partition: leader · replicas · in sync · low–high" } th { "" }
                } }
                tbody { @for t in &topics { tr data-topic=(t.name) {
                    td { a href={ "/topics/" (t.name) } { (t.name) } }
                    td.num { (t.partitions.len()) }
                    td.num.count { (t.count()) }
                    td { @for p in &t.partitions {
                        div { code { (p.id) ": " (p.leader) " · " (ids(&p.replicas)) " · " (ids(&p.isr)) " · " (p.low) "–" (p.high) } }
                    } }
                    td { a href={ "/topics/" (t.name) "/tail" } { "live tail" } }
                } } }
            } }
        },
    ))
}

fn ids(ids: &[i32]) -> String {
    if ids.is_empty() {
        return "-".to_owned();
    }
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

async fn topics_json(State(state): State<AppState>) -> Result<Json<Vec<TopicInfo>>, Problem> {
    Ok(Json(state.kafka.topics().await?))
}

/// The messages page's parameters, all optional and possibly blank.
#[derive(Debug, Default, Deserialize)]
pub struct MessagesParams {
    partition: Option<String>,
    before: Option<String>,
    key: Option<String>,
    limit: Option<String>,
}

impl MessagesParams {
    fn query(&self, topic: String, state: &AppState) -> Result<MessageQuery, ConsoleError> {
        let partition = number::<i32>("partition", &self.partition)?;
        let before = number::<i64>("before", &self.before)?;
        if before.is_some() && partition.is_none() {
            return Err(ConsoleError::bad_input(
                "before",
                "an offset needs a partition: offsets are per partition",
            ));
        }
        let limit = number::<usize>("limit", &self.limit)?.unwrap_or(state.page_size);
        if limit == 0 || limit > state.page_size {
            return Err(ConsoleError::bad_input(
                "limit",
                format!("at most {} messages per page, at least 1", state.page_size),
            ));
        }
        Ok(MessageQuery {
            topic,
            partition,
            before,
            key: filled(&self.key).map(str::to_owned),
            limit,
            search_depth: state.search_depth,
        })
    }
}

async fn messages_json(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    QueryParams(params): QueryParams<MessagesParams>,
) -> Result<Json<serde_json::Value>, Problem> {
    let query = params.query(topic, &state)?;
    let page = state.kafka.messages(query).await?;
    let messages: Vec<Decoded> = page
        .messages
        .iter()
        .map(|m| decode(m, state.max_message_bytes))
        .collect();
    Ok(Json(serde_json::json!({
        "topic": page.topic,
        "messages": messages,
        "older": page.older,
    })))
}

async fn messages_page(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    QueryParams(params): QueryParams<MessagesParams>,
) -> Result<Markup, PageError> {
    let query = params.query(topic.clone(), &state)?;
    let page_data = state.kafka.messages(query.clone()).await?;
    let info = &page_data.topic;
    Ok(page(
        &format!("Topic {topic}"),
        html! {
            p.muted {
                (info.partitions.len()) " partitions, " (info.count()) " messages · "
                a href={ "/topics/" (topic) "/tail" } { "live tail" }
            }
            form.inline method="get" action={ "/topics/" (topic) } {
                label { "Partition"
                    select name="partition" {
                        option value="" { "all" }
                        @for p in &info.partitions {
                            option value=(p.id) selected[query.partition == Some(p.id)] {
                                (p.id) " (" (p.low) "–" (p.high) ")"
                            }
                        }
                    }
                }
                label { "Before offset" input type="number" name="before" min="0" value=[query.before]; }
                label { "Key" input type="search" name="key" value=[query.key.as_deref()]; }
                button type="submit" { "Show" }
            }
            @if let Some(key) = &query.key {
                p.note { "Messages with key " code { (key) } ", searching the newest "
                    (state.search_depth) " of each partition." }
            }
            p.muted { (page_data.messages.len()) " shown, newest first (at most " (query.limit) ")." }
            div.scroll { table #messages {
                thead { (message_head()) }
                tbody { @for m in &page_data.messages {
                    (message_row(&decode(m, state.max_message_bytes)))
                } }
            } }
            @if let (Some(older), Some(partition)) = (page_data.older, query.partition) {
                p { a href={ "/topics/" (topic) "?partition=" (partition) "&before=" (older) } { "Older messages" } }
            }
        },
    ))
}

fn message_head() -> Markup {
    html! { tr {
        th.num { "partition" } th.num { "offset" } th { "time" } th { "key" }
        th { "event" } th { "headers" } th { "value" }
    } }
}

fn shown(value: &Shown) -> Markup {
    match value {
        Shown::Text(text) => html! { code { (text) } },
        Shown::Hex(hex) => html! { code.hex title="not text: shown as hex" { "0x " (hex) } },
    }
}

/// One message as a table row (also sent by the live tail).
pub fn message_row(m: &Decoded) -> Markup {
    html! {
        tr.message data-key=[m.key.as_ref().map(Shown::as_str)] data-offset=(m.offset) {
            td.num { (m.partition) }
            td.num { (m.offset) }
            td { @if let Some(t) = m.timestamp { (t.format("%Y-%m-%d %H:%M:%S%.3f")) } }
            td.key { @if let Some(key) = &m.key { (shown(key)) } @else { span.muted { "none" } } }
            td { @if let Some(e) = &m.envelope {
                dl.envelope {
                    @if let Some(t) = &e.event_type { dt { "type" } dd.event-type { (t) } }
                    @if let Some(o) = &e.order_id { dt { "order" } dd { a href={ "/orders/" (o) } { (o) } } }
                    @if let (Some(c), Some(o)) = (&e.correlation_id, &e.order_id) {
                        dt { "correlation" } dd { a href={ "/orders/" (o) } { (short_id(c)) } }
                    }
                    @if let (Some(c), Some(o)) = (&e.causation_id, &e.order_id) {
                        dt { "caused by" } dd { a href={ "/orders/" (o) "#event-" (c) } { (short_id(c)) } }
                    }
                    @if let Some(p) = &e.producer { dt { "producer" } dd { (p) } }
                }
            } @else { span.muted { "not an event" } } }
            td { @for (name, value) in &m.headers { div { code { (name) } ": " (shown(value)) } } }
            td.value {
                @match &m.body {
                    Body::Empty => span.muted { "empty (tombstone)" },
                    Body::Json { pretty } => pre.json { (pretty) },
                    Body::Raw { shown: value, cut } => {
                        @if *cut { p.note { "Cut: " (m.size) " bytes, showing the first ones." } }
                        @else { p.muted { "Not JSON." } }
                        pre.raw { (value.as_str()) }
                    }
                }
            }
        }
    }
}

async fn tail_page(
    State(state): State<AppState>,
    Path(topic): Path<String>,
) -> Result<Markup, PageError> {
    let info = state.kafka.topic(&topic).await?;
    Ok(page(
        &format!("Live tail of {topic}"),
        html! {
            p.muted { "New messages on " (info.name) " appear here as they arrive (newest first, the last "
                (state.page_size) " kept). " a href={ "/topics/" (topic) } { "Older messages" } }
            div.scroll { table {
                thead { (message_head()) }
                tbody data-tail={ "/topics/" (topic) "/tail/stream" } data-keep=(state.page_size) {}
            } }
        },
    ))
}

async fn tail_stream(
    State(state): State<AppState>,
    Path(topic): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    let receiver = state.kafka.tail(&topic).await?;
    let max_bytes = state.max_message_bytes;
    let events = futures::stream::unfold(receiver, |mut receiver| async move {
        let message = receiver.recv().await?;
        Some((message, receiver))
    })
    .map(move |message| {
        let row = message_row(&decode(&message, max_bytes)).into_string();
        Ok(Event::default().data(row))
    });
    Ok(Sse::new(until_shutdown(events, &state)).keep_alive(KeepAlive::default()))
}

fn groups_table(groups: &[GroupInfo]) -> Markup {
    html! {
        div.scroll { table #groups {
            thead { tr { th { "group" } th { "state" } th.num { "members" } th.num { "partitions" } th.num { "lag" } } }
            tbody { @for g in groups { tr data-group=(g.name) {
                td { a href={ "/groups/" (g.name) } { (g.name) } }
                td { (g.state.as_deref().unwrap_or("-")) }
                td.num { @match &g.members { Some(m) => (m.len()), None => "-" } }
                td.num { (g.lag.len()) }
                td.num.lag { (g.total_lag()) }
            } } }
        } }
    }
}

async fn groups_page(State(state): State<AppState>) -> Result<Markup, PageError> {
    let (groups, listing) = state.kafka.groups().await?;
    Ok(page(
        "Consumer groups",
        html! {
            @if let GroupListing::ConfiguredOnly(why) = &listing {
                p.note { "This broker does not list or describe groups (" (why)
                    "), so the configured groups are shown, without members (CONSOLE_GROUPS)." }
            }
            (groups_table(&groups))
        },
    ))
}

async fn groups_json(State(state): State<AppState>) -> Result<Json<serde_json::Value>, Problem> {
    let (groups, listing) = state.kafka.groups().await?;
    Ok(Json(serde_json::json!({
        "listed": listing == GroupListing::Listed,
        "groups": groups,
    })))
}

async fn group_page(
    State(state): State<AppState>,
    Path(group): Path<String>,
) -> Result<Markup, PageError> {
    let info = state.kafka.group(&group).await?;
    Ok(page(
        &format!("Group {group}"),
        html! {
            div.cards {
                div.card { div.muted { "total lag" } div.big #lag-total { (info.total_lag()) } }
                div.card { div.muted { "state" } div.big { (info.state.as_deref().unwrap_or("-")) } }
            }
            h2 { "Members" }
            @match &info.members {
                None => p.muted { "The broker does not describe groups; members unknown." },
                Some(members) if members.is_empty() => p.muted { "No members: nobody consumes now." },
                Some(members) => div.scroll { table {
                    thead { tr { th { "client" } th { "host" } th { "member" } th { "assigned" } } }
                    tbody { @for m in members { tr {
                        td { (m.client_id) } td { (m.host) } td { code { (m.id) } }
                        td { @for (t, p) in &m.assignment { code { (t) "[" (p) "] " } } }
                    } } }
                } },
            }
            h2 { "Lag per partition" }
            @if info.lag.is_empty() { p.muted { "No committed offsets." } }
            @else {
                div.scroll { table #lag {
                    thead { tr { th { "topic" } th.num { "partition" } th.num { "committed" } th.num { "end" } th.num { "lag" } } }
                    tbody { @for p in &info.lag { tr {
                        td { a href={ "/topics/" (p.topic) "?partition=" (p.partition) } { (p.topic) } }
                        td.num { (p.partition) } td.num { (p.committed) } td.num { (p.high) } td.num { (p.lag) }
                    } } }
                } }
            }
        },
    ))
}

async fn group_json(
    State(state): State<AppState>,
    Path(group): Path<String>,
) -> Result<Json<serde_json::Value>, Problem> {
    let info = state.kafka.group(&group).await?;
    let total = info.total_lag();
    Ok(Json(
        serde_json::json!({ "group": info, "totalLag": total }),
    ))
}
