//! Reservation rules, pure: given what an order asks for and what the catalog
//! holds, either every line is reserved at the catalog price or none is; and
//! the reservation's lifecycle ([`ReservationStatus::settlement`]):
//!
//! ```text
//!   HELD ──PaymentApproved──▶ SOLD ──OrderCancelled──▶ RETURNED
//!     └──PaymentDeclined / OrderCancelled / Expired──▶ RELEASED
//!   (none) ──OrderCancelled──▶ CANCELLED (a marker: nothing will be reserved)
//! ```

use std::collections::HashMap;

use shared_events::{
    events::priced_total, Cents, OrderLine, PricedLine, RejectionReason, Reservation, Sku,
};

/// Where a reservation is in its lifecycle: the `status` column of `reservations`.
/// The string forms (strum, sqlx) are the column's values.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantArray,
    sqlx::Type,
)]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
#[sqlx(type_name = "text", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReservationStatus {
    /// Units moved from available to reserved; waiting for the payment outcome.
    Held,
    /// Paid: the units are sold.
    Sold,
    /// Payment declined, order cancelled or reservation expired while held:
    /// the units went back to available.
    Released,
    /// Order cancelled after the sale: the units went from sold back to available.
    Returned,
    /// The order was cancelled before anything was reserved: a marker so that
    /// a late `OrderCreated` reserves nothing.
    Cancelled,
}

/// What ends a reservation; recorded in the `ended_by` column.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum Fact {
    PaymentApproved,
    PaymentDeclined,
    OrderCancelled,
    /// No payment outcome within the reservation's time to live.
    Expired,
}

/// How a reservation ends, as far as stock is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Paid: reserved units become sold.
    Sell,
    /// Not paid, cancelled or expired while held: reserved units go back to
    /// available (compensation).
    Release,
    /// Cancelled after the sale: sold units go back to available.
    Return,
}

impl Settlement {
    /// The status a reservation has once settled this way.
    pub fn outcome(self) -> ReservationStatus {
        match self {
            Settlement::Sell => ReservationStatus::Sold,
            Settlement::Release => ReservationStatus::Released,
            Settlement::Return => ReservationStatus::Returned,
        }
    }
}

impl ReservationStatus {
    /// How `fact` settles a reservation in this status, or `None` when it
    /// changes nothing: the reservation is already settled, or the order was
    /// cancelled before anything was reserved (late or repeated news).
    pub fn settlement(self, fact: Fact) -> Option<Settlement> {
        use Fact::*;
        use ReservationStatus::*;
        match (self, fact) {
            (Held, PaymentApproved) => Some(Settlement::Sell),
            (Held, PaymentDeclined | OrderCancelled | Expired) => Some(Settlement::Release),
            (Sold, OrderCancelled) => Some(Settlement::Return),
            // Late or repeated news: the reservation has ended already.
            (Sold, PaymentApproved | PaymentDeclined | Expired)
            | (Released | Returned | Cancelled, _) => None,
        }
    }
}

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
    use strum::VariantArray;

    #[test]
    fn a_held_reservation_is_sold_when_paid_and_released_otherwise() {
        let held = ReservationStatus::Held;
        assert_eq!(
            held.settlement(Fact::PaymentApproved),
            Some(Settlement::Sell)
        );
        for fact in [Fact::PaymentDeclined, Fact::OrderCancelled, Fact::Expired] {
            assert_eq!(held.settlement(fact), Some(Settlement::Release), "{fact}");
        }
    }

    #[test]
    fn a_sold_reservation_is_returned_only_on_cancellation() {
        let sold = ReservationStatus::Sold;
        assert_eq!(
            sold.settlement(Fact::OrderCancelled),
            Some(Settlement::Return)
        );
        for fact in [Fact::PaymentApproved, Fact::PaymentDeclined, Fact::Expired] {
            assert_eq!(sold.settlement(fact), None, "{fact}");
        }
    }

    #[test]
    fn ended_reservations_ignore_every_later_fact() {
        use ReservationStatus::*;
        for status in [Released, Returned, Cancelled] {
            for fact in Fact::VARIANTS {
                assert_eq!(status.settlement(*fact), None, "{status} + {fact}");
            }
        }
    }

    #[test]
    fn each_settlement_ends_in_the_status_it_names() {
        for status in ReservationStatus::VARIANTS {
            for fact in Fact::VARIANTS {
                if let Some(how) = status.settlement(*fact) {
                    let next = how.outcome();
                    assert_ne!(next, *status);
                    // A settled reservation is never settled again by the same fact.
                    assert_eq!(next.settlement(*fact), None, "{status} + {fact}");
                }
            }
        }
    }

    #[test]
    fn status_strings_are_the_column_values() {
        let strings: Vec<&str> = ReservationStatus::VARIANTS
            .iter()
            .map(|s| s.into())
            .collect();
        assert_eq!(
            strings,
            ["HELD", "SOLD", "RELEASED", "RETURNED", "CANCELLED"]
        );
        for status in ReservationStatus::VARIANTS {
            assert_eq!(status.to_string().parse::<ReservationStatus>(), Ok(*status));
        }
        assert_eq!(<&str>::from(Fact::OrderCancelled), "ORDER_CANCELLED");
        assert_eq!(Fact::Expired.to_string(), "EXPIRED");
    }

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
