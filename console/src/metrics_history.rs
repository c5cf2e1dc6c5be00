//! The chart's data: every few seconds the console reads each service's
//! `/metrics` and keeps the last samples of events consumed, events
//! published and consumer lag, summed over the services. A service that
//! does not answer counts as absent from that sample (the chart shows a gap
//! in its numbers, never an error page).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::services::{sum_metric, Services};

/// One reading of all the services.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    pub at: DateTime<Utc>,
    /// `events_consumed_total`, summed.
    pub consumed: f64,
    /// `events_published_total`, summed.
    pub published: f64,
    /// `kafka_consumer_lag`, summed over services and partitions.
    pub lag: f64,
    /// How many services answered.
    pub answered: usize,
}

/// A point of the chart: rates between two samples, and the lag.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Point {
    pub at: DateTime<Utc>,
    pub consumed_per_sec: f64,
    pub published_per_sec: f64,
    pub lag: f64,
}

/// The last samples. Cheap to clone.
#[derive(Debug, Clone)]
pub struct MetricsHistory {
    samples: Arc<Mutex<VecDeque<Sample>>>,
    capacity: usize,
}

impl MetricsHistory {
    pub fn new(capacity: usize) -> MetricsHistory {
        MetricsHistory {
            samples: Arc::new(Mutex::new(VecDeque::with_capacity(capacity))),
            capacity,
        }
    }

    pub fn push(&self, sample: Sample) {
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if samples.len() == self.capacity {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// Rates between consecutive samples; a counter that went down (a service
    /// restarted) gives 0 for that step rather than a negative rate.
    pub fn points(&self) -> Vec<Point> {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        samples
            .iter()
            .zip(samples.iter().skip(1))
            .map(|(before, after)| {
                let seconds = (after.at - before.at).num_milliseconds().max(1) as f64 / 1000.0;
                let rate = |a: f64, b: f64| ((b - a) / seconds).max(0.0);
                Point {
                    at: after.at,
                    consumed_per_sec: rate(before.consumed, after.consumed),
                    published_per_sec: rate(before.published, after.published),
                    lag: after.lag,
                }
            })
            .collect()
    }

    /// Samples the services every `interval` until `stop`.
    pub async fn sample_until(
        self,
        services: Services,
        interval: Duration,
        stop: CancellationToken,
    ) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let mut sample = Sample {
                at: Utc::now(),
                consumed: 0.0,
                published: 0.0,
                lag: 0.0,
                answered: 0,
            };
            for endpoint in &services.all {
                if let Ok(text) = services.metrics(endpoint).await {
                    sample.consumed += sum_metric(&text, "events_consumed_total");
                    sample.published += sum_metric(&text, "events_published_total");
                    sample.lag += sum_metric(&text, "kafka_consumer_lag");
                    sample.answered += 1;
                }
            }
            self.push(sample);
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn sample(second: u32, consumed: f64) -> Sample {
        Sample {
            at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, second).unwrap(),
            consumed,
            published: consumed / 2.0,
            lag: 1.0,
            answered: 4,
        }
    }

    #[test]
    fn rates_are_per_second_between_samples_and_never_negative() {
        let history = MetricsHistory::new(3);
        history.push(sample(0, 0.0));
        history.push(sample(2, 10.0));
        history.push(sample(4, 4.0));
        let points = history.points();
        assert_eq!(points.len(), 2);
        assert_eq!(points[0].consumed_per_sec, 5.0);
        assert_eq!(points[0].published_per_sec, 2.5);
        assert_eq!(points[1].consumed_per_sec, 0.0);
    }

    #[test]
    fn keeps_only_the_last_samples() {
        let history = MetricsHistory::new(2);
        for second in 0..5 {
            history.push(sample(second, f64::from(second)));
        }
        assert_eq!(history.points().len(), 1);
    }
}
