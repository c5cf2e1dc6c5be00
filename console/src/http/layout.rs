//! The page shell every page shares: navigation, the embedded stylesheet and
//! script, a skip link for keyboard users. No external resources.

use maud::{html, Markup, DOCTYPE};

/// Navigation entries: path and label.
const NAV: [(&str, &str); 8] = [
    ("/", "Overview"),
    ("/orders", "Orders"),
    ("/stock", "Stock"),
    ("/dlq", "Dead letters"),
    ("/topics", "Topics"),
    ("/groups", "Consumer groups"),
    ("/brokers", "Brokers"),
    ("/orders/new", "Place an order"),
];

pub fn page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · order system console" }
                link rel="stylesheet" href="/assets/console.css";
                script src="/assets/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    span.brand { "order system console" }
                    nav aria-label="Main" {
                        ul {
                            @for (href, label) in NAV {
                                li { a href=(href) { (label) } }
                            }
                        }
                    }
                }
                main #main tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// `id` shortened for a table cell; the whole id in its title.
pub fn short_id(id: &str) -> Markup {
    let short: String = id.chars().take(8).collect();
    html! { code title=(id) { (short) @if id.chars().count() > 8 { "…" } } }
}

/// A status as a coloured badge.
pub fn status_badge(status: &str) -> Markup {
    html! { span class={ "status status-" (status.to_ascii_lowercase()) } { (status) } }
}

/// Cents as money, e.g. `49.99`.
pub fn money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", cents.abs() / 100, cents.abs() % 100)
}

#[cfg(test)]
mod tests {
    #[test]
    fn shows_cents_as_money() {
        assert_eq!(super::money(4997), "49.97");
        assert_eq!(super::money(-5), "-0.05");
    }
}
