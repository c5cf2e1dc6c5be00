//! Stock per SKU, as inventory-service's API answers it.

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use maud::{html, Markup};

use super::layout::{money, page};
use super::{AppState, PageError};

pub fn routes() -> Router<AppState> {
    Router::new().route("/stock", get(stock_page))
}

async fn stock_page(State(state): State<AppState>) -> Result<Markup, PageError> {
    let stock = state.services.stock().await?;
    Ok(page(
        "Stock",
        html! {
            div.scroll { table #stock {
                thead { tr { th { "sku" } th { "name" } th.num { "price" } th.num { "available" } th.num { "reserved" } th.num { "sold" } } }
                tbody { @for p in &stock { tr data-sku=(p.sku) {
                    td { code { (p.sku) } } td { (p.name) } td.num { (money(p.price_cents)) }
                    td.num { (p.available) } td.num { (p.reserved) } td.num { (p.sold) }
                } } }
            } }
        },
    ))
}
