//! Reservation rules, pure: given what an order asks for and what the catalog
//! holds, either every line is reserved at the catalog price or none is.

use std::collections::HashMap;

use shared_events::{
    events::priced_total, Cents, OrderLine, PricedLine, RejectionReason, Reservation, Sku,
};

/// Most a unit may cost, so that no order total can overflow:
/// 100 lines × 10 000 units × 10^10 cents < 2^63.
pub const MAX_PRICE_CENTS: i64 = 10_000_000_000;

/// What the catalog says about one SKU, as locked for the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stock {
    pub price: Cents,
    pub available: u32,
}

/// Decides the outcome of reserving `lines` against `stock` (the catalog rows
/// for those SKUs; SKUs absent from it are unknown).
pub fn reserve(lines: &[OrderLine], stock: &HashMap<Sku, Stock>) -> Reservation {
    let unknown: Vec<&str> = lines
        .iter()
        .filter(|line| !stock.contains_key(&line.sku))
        .map(|line| line.sku.as_str())
        .collect();
    if !unknown.is_empty() {
        return Reservation::Rejected {
            reason: RejectionReason::UnknownSku,
            detail: format!("unknown sku: {}", unknown.join(", ")),
        };
    }
    let short: Vec<String> = lines
        .iter()
        .filter_map(|line| {
            let have = stock[&line.sku].available;
            (have < line.quantity.get()).then(|| {
                format!(
                    "{} ({} requested, {} available)",
                    line.sku,
                    line.quantity.get(),
                    have
                )
            })
        })
        .collect();
    if !short.is_empty() {
        return Reservation::Rejected {
            reason: RejectionReason::OutOfStock,
            detail: format!("not enough stock: {}", short.join(", ")),
        };
    }
    let lines: Vec<PricedLine> = lines
        .iter()
        .map(|line| PricedLine {
            sku: line.sku.clone(),
            quantity: line.quantity,
            unit_price_cents: stock[&line.sku].price,
        })
        .collect();
    let total_cents = priced_total(&lines).expect("prices are capped so totals cannot overflow");
    Reservation::Reserved { lines, total_cents }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_events::Quantity;

    fn line(sku: &str, quantity: i64) -> OrderLine {
        OrderLine {
            sku: Sku::parse(sku).unwrap(),
            quantity: Quantity::parse(quantity).unwrap(),
        }
    }

    fn catalog(entries: &[(&str, i64, u32)]) -> HashMap<Sku, Stock> {
        entries
            .iter()
            .map(|(sku, price, available)| {
                (
                    Sku::parse(sku).unwrap(),
                    Stock {
                        price: Cents::parse(*price).unwrap(),
                        available: *available,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn reserves_every_line_at_catalog_prices() {
        let outcome = reserve(
            &[line("a", 2), line("b", 1)],
            &catalog(&[("a", 150, 5), ("b", 1000, 1)]),
        );
        match outcome {
            Reservation::Reserved { lines, total_cents } => {
                assert_eq!(total_cents.get(), 1300);
                assert_eq!(lines[0].unit_price_cents.get(), 150);
                assert_eq!(lines[1].quantity.get(), 1);
            }
            other => panic!("expected a reservation, got {other:?}"),
        }
    }

    #[test]
    fn rejects_the_whole_order_when_one_line_is_short() {
        let outcome = reserve(
            &[line("a", 2), line("b", 2)],
            &catalog(&[("a", 150, 5), ("b", 1000, 1)]),
        );
        assert!(matches!(
            outcome,
            Reservation::Rejected { reason: RejectionReason::OutOfStock, ref detail } if detail.contains("b (2 requested, 1 available)")
        ));
    }

    #[test]
    fn rejects_unknown_skus_before_checking_stock() {
        let outcome = reserve(
            &[line("a", 99), line("nope", 1)],
            &catalog(&[("a", 150, 5)]),
        );
        assert!(matches!(
            outcome,
            Reservation::Rejected { reason: RejectionReason::UnknownSku, ref detail } if detail.contains("nope")
        ));
    }

    #[test]
    fn an_order_without_items_is_reserved_for_nothing() {
        assert_eq!(
            reserve(&[], &HashMap::new()),
            Reservation::Reserved {
                lines: vec![],
                total_cents: Cents::ZERO
            }
        );
    }

    #[test]
    fn the_largest_possible_order_does_not_overflow() {
        let lines: Vec<OrderLine> = (0..shared_events::events::MAX_LINES)
            .map(|i| {
                line(
                    &format!("s{i}"),
                    i64::from(shared_events::values::MAX_QUANTITY),
                )
            })
            .collect();
        let stock: HashMap<Sku, Stock> = lines
            .iter()
            .map(|l| {
                (
                    l.sku.clone(),
                    Stock {
                        price: Cents::parse(MAX_PRICE_CENTS).unwrap(),
                        available: u32::MAX,
                    },
                )
            })
            .collect();
        assert!(matches!(
            reserve(&lines, &stock),
            Reservation::Reserved { .. }
        ));
    }
}
