//! An order's saga as a picture: one lane per service, its events left to
//! right in time order, an arrow from each event to the one it caused (the
//! envelope's `causationId`). Pure layout, unit-tested; the page draws it as
//! SVG.

use crate::services::{Timeline, TimelineEntry};

/// The lanes always drawn, in saga order; other producers get lanes after them.
pub const LANES: [&str; 4] = [
    "order-service",
    "inventory-service",
    "payment-service",
    "notification-service",
];

/// Geometry, in SVG user units.
pub const LANE_HEIGHT: u32 = 70;
pub const LANE_LABEL_WIDTH: u32 = 170;
pub const STEP_WIDTH: u32 = 190;
pub const NODE_WIDTH: u32 = 170;
pub const NODE_HEIGHT: u32 = 46;

/// One event placed on the picture.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub entry: TimelineEntry,
    /// Position in time order, from 1.
    pub step: usize,
    pub lane: usize,
    pub x: u32,
    pub y: u32,
}

/// An arrow from the cause (index into `nodes`) to its effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrow {
    pub from: usize,
    pub to: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Picture {
    pub lanes: Vec<String>,
    pub nodes: Vec<Node>,
    pub arrows: Vec<Arrow>,
    pub width: u32,
    pub height: u32,
    /// The order's status: where the saga stopped (or stands).
    pub status: String,
}

impl Picture {
    pub fn of(timeline: &Timeline) -> Picture {
        let mut lanes: Vec<String> = LANES.iter().map(|s| (*s).to_owned()).collect();
        for entry in &timeline.events {
            if !lanes.contains(&entry.service) {
                lanes.push(entry.service.clone());
            }
        }
        let mut entries = timeline.events.clone();
        // Stable: order-service's own order breaks ties between equal clocks.
        entries.sort_by_key(|e| e.occurred_at);
        let nodes: Vec<Node> = entries
            .into_iter()
            .enumerate()
            .map(|(i, entry)| {
                let lane = lanes
                    .iter()
                    .position(|l| *l == entry.service)
                    .expect("every producer has a lane");
                Node {
                    step: i + 1,
                    lane,
                    x: LANE_LABEL_WIDTH + 10 + i as u32 * STEP_WIDTH,
                    y: lane as u32 * LANE_HEIGHT + (LANE_HEIGHT - NODE_HEIGHT) / 2,
                    entry,
                }
            })
            .collect();
        let arrows = nodes
            .iter()
            .enumerate()
            .filter_map(|(to, node)| {
                let cause = node.entry.causation_id.as_deref()?;
                let from = nodes.iter().position(|n| n.entry.event_id == cause)?;
                Some(Arrow { from, to })
            })
            .collect();
        let width = LANE_LABEL_WIDTH + 20 + nodes.len().max(1) as u32 * STEP_WIDTH;
        let height = lanes.len() as u32 * LANE_HEIGHT;
        Picture {
            lanes,
            nodes,
            arrows,
            width,
            height,
            status: timeline.status.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;

    fn entry(id: &str, service: &str, cause: Option<&str>, second: u32) -> TimelineEntry {
        TimelineEntry {
            event_id: id.to_owned(),
            event_type: format!("Event{id}"),
            service: service.to_owned(),
            outcome: None,
            detail: None,
            causation_id: cause.map(str::to_owned),
            occurred_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, second).unwrap(),
        }
    }

    #[test]
    fn places_events_in_time_order_on_their_services_lanes_with_causation_arrows() {
        let timeline = Timeline {
            order_id: "o".to_owned(),
            status: "CONFIRMED".to_owned(),
            events: vec![
                entry("c", "payment-service", Some("b"), 3),
                entry("a", "order-service", None, 1),
                entry("b", "inventory-service", Some("a"), 2),
            ],
        };
        let picture = Picture::of(&timeline);
        let order: Vec<&str> = picture
            .nodes
            .iter()
            .map(|n| n.entry.event_id.as_str())
            .collect();
        assert_eq!(order, ["a", "b", "c"]);
        assert_eq!(
            picture.nodes.iter().map(|n| n.lane).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert_eq!(
            picture.arrows,
            [Arrow { from: 0, to: 1 }, Arrow { from: 1, to: 2 }]
        );
        assert!(picture.nodes[0].x < picture.nodes[1].x);
        assert_eq!(picture.lanes.len(), 4);
    }

    #[test]
    fn an_unknown_cause_draws_no_arrow_and_a_new_producer_gets_a_lane() {
        let timeline = Timeline {
            order_id: "o".to_owned(),
            status: "PENDING".to_owned(),
            events: vec![entry("a", "replayer", Some("missing"), 1)],
        };
        let picture = Picture::of(&timeline);
        assert!(picture.arrows.is_empty());
        assert_eq!(picture.lanes.last().map(String::as_str), Some("replayer"));
        assert_eq!(picture.nodes[0].lane, 4);
    }
}
