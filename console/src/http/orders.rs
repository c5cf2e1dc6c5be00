//! Saga pages: orders (filtered, updated live), the order form, and one
//! order's saga as a picture with its status updated live. What they show
//! comes from order-service's API; live updates are server-sent events that
//! the console feeds by asking order-service again every `CONSOLE_LIVE_POLL_MS`.

use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::Redirect;
use axum::routing::get;
use axum::{Form, Json, Router};
use futures::Stream;
use maud::{html, Markup};
use serde::Deserialize;
use service_kit::{Problem, QueryParams};

use super::layout::{money, page, short_id, status_badge};
use super::{filled, until_shutdown, AppState, ConsoleError, PageError};
use crate::saga::{Picture, NODE_HEIGHT, NODE_WIDTH};
use crate::services::{Order, OrderFilter, Timeline, STATUSES};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/orders", get(orders_page).post(place_order))
        .route("/orders/live", get(orders_live))
        .route("/orders/new", get(order_form))
        .route("/orders/{order_id}", get(order_page))
        .route("/orders/{order_id}/live", get(order_live))
        .route("/api/orders/{order_id}/saga", get(saga_json))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrdersParams {
    status: Option<String>,
    user_id: Option<String>,
    /// The order just placed from the form, highlighted.
    placed: Option<String>,
}

impl OrdersParams {
    fn filter(&self) -> Result<OrderFilter, ConsoleError> {
        let filter = OrderFilter {
            status: self.status.clone(),
            user_id: self.user_id.clone(),
        }
        .normalised();
        if let Some(status) = &filter.status {
            if !STATUSES.contains(&status.as_str()) {
                return Err(ConsoleError::bad_input(
                    "status",
                    format!("{status:?} is not a status; one of {}", STATUSES.join(", ")),
                ));
            }
        }
        Ok(filter)
    }
}

fn order_rows(orders: &[Order], placed: Option<&str>) -> Markup {
    html! {
        @if orders.is_empty() { tr { td colspan="6" { span.muted { "No orders match." } } } }
        @for o in orders {
            // A toggled class: a `class=` beside the `.order` shorthand would be a second
            // class attribute, which browsers ignore.
            tr.order.highlight[Some(o.order_id.as_str()) == placed] data-order=(o.order_id) data-status=(o.status) {
                td { a href={ "/orders/" (o.order_id) } { (o.order_id) } }
                td { (o.user_id) }
                td { (status_badge(&o.status)) @if let Some(r) = &o.reason { " " span.muted { (r) } } }
                td.num { @if let Some(t) = o.total_cents { (money(t)) } }
                td { (o.items.iter().map(|i| format!("{}×{}", i.quantity, i.sku)).collect::<Vec<_>>().join(", ")) }
                td { (o.updated_at.format("%H:%M:%S%.3f")) }
            }
        }
    }
}

fn live_query(filter: &OrderFilter, placed: Option<&str>) -> String {
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    if let Some(s) = &filter.status {
        pairs.push(("status", s));
    }
    if let Some(u) = &filter.user_id {
        pairs.push(("userId", u));
    }
    if let Some(p) = placed {
        pairs.push(("placed", p));
    }
    serde_urlencoded::to_string(pairs).unwrap_or_default()
}

async fn orders_page(
    State(state): State<AppState>,
    QueryParams(params): QueryParams<OrdersParams>,
) -> Result<Markup, PageError> {
    let filter = params.filter()?;
    let placed = filled(&params.placed);
    let orders = state.services.orders(&filter).await?;
    Ok(page(
        "Orders",
        html! {
            @if let Some(id) = placed { p.note role="status" { "Order " a href={ "/orders/" (id) } { (id) } " placed; its status changes below as the saga runs." } }
            form.inline method="get" action="/orders" {
                label { "Status" select name="status" {
                    option value="" { "any" }
                    @for s in STATUSES { option value=(s) selected[filter.status.as_deref() == Some(s)] { (s) } }
                } }
                label { "Customer" input type="search" name="userId" value=[filter.user_id.as_deref()]; }
                button type="submit" { "Filter" }
                a href="/orders/new" { "Place an order" }
            }
            p.muted { "Newest first; updates live." }
            div.scroll { table #orders {
                thead { tr { th { "order" } th { "customer" } th { "status" } th.num { "total" } th { "items" } th { "updated" } } }
                tbody data-live-orders={ "/orders/live?" (live_query(&filter, placed)) } { (order_rows(&orders, placed)) }
            } }
        },
    ))
}

/// The orders table's rows, sent again whenever they change.
async fn orders_live(
    State(state): State<AppState>,
    QueryParams(params): QueryParams<OrdersParams>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    let filter = params.filter()?;
    let placed = filled(&params.placed).map(str::to_owned);
    let services = state.services.clone();
    let poll = state.live_poll;
    let events = futures::stream::unfold(None::<String>, move |last| {
        let services = services.clone();
        let filter = filter.clone();
        let placed = placed.clone();
        async move {
            loop {
                let rows = match services.orders(&filter).await {
                    Ok(orders) => order_rows(&orders, placed.as_deref()).into_string(),
                    Err(error) => {
                        html! { tr { td colspan="6" { span.problem { (error.to_string()) } } } }
                            .into_string()
                    }
                };
                if last.as_deref() != Some(rows.as_str()) {
                    let event = Event::default().event("orders").data(rows.clone());
                    return Some((Ok(event), Some(rows)));
                }
                tokio::time::sleep(poll).await;
            }
        }
    });
    Ok(Sse::new(until_shutdown(events, &state)).keep_alive(KeepAlive::default()))
}

/// SKUs offered in the form; any SKU may be typed.
const FORM_LINES: usize = 3;

async fn order_form(State(state): State<AppState>) -> Markup {
    let skus: Vec<String> = state
        .services
        .stock()
        .await
        .map(|stock| stock.into_iter().map(|p| p.sku).collect())
        .unwrap_or_default();
    page(
        "Place an order",
        html! {
            form #order-form method="post" action="/orders" {
                p { label { "Order id (empty: a new one)" input type="text" name="orderId" maxlength="64"; } }
                p { label { "Customer" input type="text" name="userId" required value="alice" maxlength="64"; } }
                datalist #skus { @for s in &skus { option value=(s) {} } }
                @for line in 0..FORM_LINES {
                    p.line {
                        label { "SKU " (line + 1) input type="text" name="sku" list="skus" value=[(line == 0).then_some("widget")]; }
                        label { "Quantity" input type="number" name="quantity" min="1" value=[(line == 0).then_some("1")]; }
                    }
                }
                button type="submit" { "Place order" }
            }
        },
    )
}

/// The form's fields, in order (SKU and quantity repeat).
async fn place_order(
    State(state): State<AppState>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Redirect, PageError> {
    let value = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let user_id =
        value("userId").ok_or_else(|| ConsoleError::bad_input("userId", "a customer is needed"))?;
    let order_id = value("orderId").unwrap_or_else(|| format!("console-{}", uuid::Uuid::new_v4()));
    let skus = fields
        .iter()
        .filter(|(k, _)| k == "sku")
        .map(|(_, v)| v.trim());
    let quantities = fields
        .iter()
        .filter(|(k, _)| k == "quantity")
        .map(|(_, v)| v.trim());
    let mut items = Vec::new();
    for (sku, quantity) in skus.zip(quantities) {
        if sku.is_empty() {
            continue;
        }
        let quantity: u32 = quantity.parse().map_err(|_| {
            ConsoleError::bad_input(
                "quantity",
                format!("{quantity:?} is not a quantity for {sku}"),
            )
        })?;
        items.push(serde_json::json!({ "sku": sku, "quantity": quantity }));
    }
    let body = serde_json::json!({ "orderId": order_id, "userId": user_id, "items": items });
    let order = state.services.place_order(&body).await?;
    let query =
        serde_urlencoded::to_string([("userId", &order.user_id), ("placed", &order.order_id)])
            .unwrap_or_default();
    Ok(Redirect::to(&format!("/orders?{query}")))
}

/// The saga section of an order's page: status, picture, steps.
fn saga_section(order: &Order, timeline: &Timeline) -> Markup {
    let picture = Picture::of(timeline);
    html! {
        div.cards {
            div.card { div.muted { "status" } div.big #order-status data-status=(order.status) { (status_badge(&order.status)) } }
            div.card { div.muted { "customer" } div.big { (order.user_id) } }
            div.card { div.muted { "total" } div.big { @if let Some(t) = order.total_cents { (money(t)) } @else { "-" } } }
        }
        h2 { "Saga" }
        div.scroll { (saga_svg(&picture)) }
        h2 { "Steps" }
        div.scroll { table #steps {
            thead { tr { th.num { "#" } th { "event" } th { "service" } th { "outcome" } th { "caused by" } th { "at" } } }
            tbody { @for n in &picture.nodes { tr.step id={ "event-" (n.entry.event_id) } data-event-type=(n.entry.event_type) {
                td.num { (n.step) }
                td { (n.entry.event_type) " " (short_id(&n.entry.event_id)) }
                td { (n.entry.service) }
                td { (n.entry.outcome.as_deref().unwrap_or("")) @if let Some(d) = &n.entry.detail { " " span.muted { (d) } } }
                td { @if let Some(c) = &n.entry.causation_id { a href={ "#event-" (c) } { (short_id(c)) } } }
                td { (n.entry.occurred_at.format("%H:%M:%S%.3f")) }
            } } }
        } }
        @if order.is_final() { p.muted #stopped { "The saga stopped at " (order.status) "." } }
        @else { p.muted { "In progress: this page follows it." } }
    }
}

/// Whether an outcome reads as a failure (drawn in red).
fn is_bad(outcome: Option<&str>) -> bool {
    matches!(
        outcome,
        Some("REJECTED" | "DECLINED" | "CANCELLED" | "OUT_OF_STOCK" | "INSUFFICIENT_CREDIT")
    )
}

fn saga_svg(picture: &Picture) -> Markup {
    let half = NODE_HEIGHT / 2;
    html! {
        svg.saga xmlns="http://www.w3.org/2000/svg" role="img" width=(picture.width) height=(picture.height)
            viewBox={ "0 0 " (picture.width) " " (picture.height) }
            aria-label={ "Saga: " (picture.nodes.len()) " events; status " (picture.status) } {
            defs { marker #arrowhead viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse" {
                path d="M 0 0 L 10 5 L 0 10 z" fill="#7a869a" {}
            } }
            @for (i, lane) in picture.lanes.iter().enumerate() {
                rect class=(if i % 2 == 1 { "lane alt" } else { "lane" }) x="0" y=(i as u32 * crate::saga::LANE_HEIGHT)
                    width=(picture.width) height=(crate::saga::LANE_HEIGHT) {}
                text.lane-label x="8" y=(i as u32 * crate::saga::LANE_HEIGHT + crate::saga::LANE_HEIGHT / 2 + 4) { (lane) }
            }
            @for a in &picture.arrows {
                @let from = &picture.nodes[a.from];
                @let to = &picture.nodes[a.to];
                path.arrow marker-end="url(#arrowhead)" d={
                    "M " (from.x + NODE_WIDTH) " " (from.y + half)
                    " C " (from.x + NODE_WIDTH + 12) " " (from.y + half) ", "
                    (to.x - 12) " " (to.y + half) ", " (to.x - 2) " " (to.y + half)
                } {}
            }
            @for n in &picture.nodes {
                g.node data-event-id=(n.entry.event_id) {
                    title { (n.entry.event_type) " by " (n.entry.service) " at " (n.entry.occurred_at.to_rfc3339()) }
                    rect class=(if is_bad(n.entry.outcome.as_deref()) { "node bad" } else { "node" })
                        x=(n.x) y=(n.y) width=(NODE_WIDTH) height=(NODE_HEIGHT) rx="6" {}
                    text.type x=(n.x + 8) y=(n.y + 18) { (n.step) ". " (n.entry.event_type) }
                    text.outcome x=(n.x + 8) y=(n.y + 35) { (n.entry.outcome.as_deref().unwrap_or("")) }
                }
            }
        }
    }
}

async fn order_page(
    State(state): State<AppState>,
    Path(order_id): Path<String>,
) -> Result<Markup, PageError> {
    let (order, timeline) = tokio::try_join!(
        state.services.order(&order_id),
        state.services.timeline(&order_id)
    )?;
    Ok(page(
        &format!("Order {order_id}"),
        html! {
            section #saga data-live-saga=[(!order.is_final()).then(|| format!("/orders/{}/live", urlencode(&order_id)))] {
                (saga_section(&order, &timeline))
            }
            p { a href={ "/topics/" (state.topics.order_created) "?key=" (urlencode(&order_id)) } { "Its messages on " (state.topics.order_created) } }
        },
    ))
}

fn urlencode(value: &str) -> String {
    serde_urlencoded::to_string([("", value)])
        .map(|s| s.trim_start_matches('=').to_owned())
        .unwrap_or_default()
}

/// The saga section, sent again whenever the order or its timeline changes;
/// an `end` event after a final status.
async fn order_live(
    State(state): State<AppState>,
    Path(order_id): Path<String>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let services = state.services.clone();
    let poll = state.live_poll;
    #[derive(Clone)]
    enum Step {
        Watching(Option<String>),
        Ended,
    }
    let events = futures::stream::unfold(Step::Watching(None), move |step| {
        let services = services.clone();
        let order_id = order_id.clone();
        async move {
            let Step::Watching(last) = step else {
                return None;
            };
            loop {
                let read =
                    tokio::try_join!(services.order(&order_id), services.timeline(&order_id));
                let (html, done) = match read {
                    Ok((order, timeline)) => {
                        // Final once order-service has recorded the step that ended it.
                        let done = order.is_final() && timeline.status == order.status;
                        (saga_section(&order, &timeline).into_string(), done)
                    }
                    Err(error) => (
                        html! { p.problem { (error.to_string()) } }.into_string(),
                        false,
                    ),
                };
                if done {
                    let event = Event::default().event("saga").data(html);
                    return Some((Ok(event), Step::Ended));
                }
                if last.as_deref() != Some(html.as_str()) {
                    let event = Event::default().event("saga").data(html.clone());
                    return Some((Ok(event), Step::Watching(Some(html))));
                }
                tokio::time::sleep(poll).await;
            }
        }
    });
    let ending = futures::stream::once(async { Ok(Event::default().event("end").data("")) });
    use futures::StreamExt;
    Sse::new(until_shutdown(events.chain(ending), &state)).keep_alive(KeepAlive::default())
}

async fn saga_json(
    State(state): State<AppState>,
    Path(order_id): Path<String>,
) -> Result<Json<serde_json::Value>, Problem> {
    let timeline = state.services.timeline(&order_id).await?;
    let picture = Picture::of(&timeline);
    let steps: Vec<_> = picture
        .nodes
        .iter()
        .map(|n| {
            serde_json::json!({
                "step": n.step, "lane": picture.lanes[n.lane], "eventId": n.entry.event_id,
                "eventType": n.entry.event_type, "outcome": n.entry.outcome,
                "causationId": n.entry.causation_id,
            })
        })
        .collect();
    let arrows: Vec<_> = picture
        .arrows
        .iter()
        .map(|a| serde_json::json!({ "from": picture.nodes[a.from].entry.event_id, "to": picture.nodes[a.to].entry.event_id }))
        .collect();
    Ok(Json(serde_json::json!({
        "orderId": timeline.order_id, "status": timeline.status,
        "lanes": picture.lanes, "steps": steps, "arrows": arrows,
    })))
}
