//! The home page: the brokers and topics at a glance, and the throughput and
//! lag chart drawn from the services' `/metrics` over the last minutes.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use maud::{html, Markup};

use super::layout::page;
use super::AppState;
use crate::metrics_history::Point;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(overview))
        .route("/chart", get(chart_fragment))
        .route("/api/metrics", get(metrics_json))
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 200.0;
const PAD: f64 = 30.0;

fn polyline(points: &[Point], value: impl Fn(&Point) -> f64, max: f64) -> String {
    let n = points.len().max(2) as f64 - 1.0;
    points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let x = PAD + (WIDTH - 2.0 * PAD) * i as f64 / n;
            let y = HEIGHT - PAD - (HEIGHT - 2.0 * PAD) * value(p) / max;
            format!("{x:.1},{y:.1}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn chart(points: &[Point]) -> Markup {
    let max = points
        .iter()
        .flat_map(|p| [p.consumed_per_sec, p.published_per_sec, p.lag])
        .fold(1.0_f64, f64::max);
    html! {
        p.legend { span.consumed { "— consumed/s" } span.published { "— published/s" } span.lag { "- - lag" } }
        @if points.is_empty() { p.muted { "Collecting: the chart starts after two samples of the services' /metrics." } }
        svg.chart xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" aria-label="Events per second and consumer lag" {
            line x1=(PAD) y1=(HEIGHT - PAD) x2=(WIDTH - PAD) y2=(HEIGHT - PAD) stroke="#d9dde5" {}
            text x="4" y=(PAD) { (format!("{max:.0}")) }
            text x="4" y=(HEIGHT - PAD) { "0" }
            polyline.consumed points=(polyline(points, |p| p.consumed_per_sec, max)) {}
            polyline.published points=(polyline(points, |p| p.published_per_sec, max)) {}
            polyline.lag points=(polyline(points, |p| p.lag, max)) {}
        }
    }
}

async fn chart_fragment(State(state): State<AppState>) -> Markup {
    chart(&state.history.points())
}

async fn metrics_json(State(state): State<AppState>) -> Json<Vec<Point>> {
    Json(state.history.points())
}

async fn overview(State(state): State<AppState>) -> Markup {
    let topics = state.kafka.topics().await;
    page(
        "Overview",
        html! {
            h2 { "Throughput and lag" }
            div #chart data-refresh="/chart" data-every="5000" { (chart(&state.history.points())) }
            h2 { "Topics" }
            @match &topics {
                Ok(topics) => div.cards { @for t in topics { div.card {
                    a href={ "/topics/" (t.name) } { (t.name) } div.big { (t.count()) } div.muted { "messages" }
                } } },
                Err(error) => p.problem role="alert" { (error.to_string()) },
            }
        },
    )
}
