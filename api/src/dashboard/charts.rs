//! Throughput charts drawn on the server as SVG (no script needed to read them): one stacked
//! bar per bucket, jobs completed below and failed attempts (retried or discarded) above, from
//! the buckets the engine maintains (`zoark_jobs::counts::throughput`).

use serde::Serialize;
use zoark_jobs::counts::{Bucket, Width};

/// The drawing area, in SVG user units (the SVG scales to its container).
const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 120.0;
/// Room above the bars for the scale's label.
const TOP: f64 = 16.0;

#[derive(Debug, Serialize)]
pub struct Chart {
    pub caption: &'static str,
    pub width: f64,
    pub height: f64,
    pub completed: i64,
    pub failed: i64,
    /// The largest bar, written at the top left as the scale.
    pub max: i64,
    pub bars: Vec<Bar>,
    /// Labels under the first and the last bar.
    pub first: String,
    pub last: String,
}

#[derive(Debug, Serialize)]
pub struct Bar {
    pub x: f64,
    pub w: f64,
    pub completed_y: f64,
    pub completed_h: f64,
    pub failed_y: f64,
    pub failed_h: f64,
    /// What a pointer over the bar shows (an SVG `<title>`).
    pub label: String,
}

impl Chart {
    pub fn new(caption: &'static str, width: Width, buckets: &[Bucket]) -> Self {
        let failed = |b: &Bucket| b.retryable + b.discarded;
        let max = buckets
            .iter()
            .map(|b| b.completed + failed(b))
            .max()
            .unwrap_or(0);
        let slot = WIDTH / buckets.len().max(1) as f64;
        let scale = if max > 0 {
            (HEIGHT - TOP) / max as f64
        } else {
            0.0
        };
        let at = |b: &Bucket| match width {
            Width::Minute => b.start.format("%H:%M").to_string(),
            Width::Hour => b.start.format("%d %b %H:00").to_string(),
        };
        let bars = buckets
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let completed_h = b.completed as f64 * scale;
                let failed_h = failed(b) as f64 * scale;
                Bar {
                    x: round(i as f64 * slot + slot * 0.1),
                    w: round(slot * 0.8),
                    completed_y: round(HEIGHT - completed_h),
                    completed_h: round(completed_h),
                    failed_y: round(HEIGHT - completed_h - failed_h),
                    failed_h: round(failed_h),
                    label: format!(
                        "{} UTC: {} completed, {} failed",
                        at(b),
                        b.completed,
                        failed(b)
                    ),
                }
            })
            .collect();
        Self {
            caption,
            width: WIDTH,
            height: HEIGHT,
            completed: buckets.iter().map(|b| b.completed).sum(),
            failed: buckets.iter().map(failed).sum(),
            max,
            bars,
            first: buckets.first().map(at).unwrap_or_default(),
            last: buckets.last().map(at).unwrap_or_default(),
        }
    }
}

fn round(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;

    #[test]
    fn bars_stack_failures_on_completions_scaled_to_the_largest_bucket() {
        let start = Utc.with_ymd_and_hms(2026, 12, 4, 10, 0, 0).unwrap();
        let buckets = [
            Bucket {
                start,
                completed: 30,
                retryable: 5,
                discarded: 5,
                cancelled: 7,
            },
            Bucket {
                start: start + chrono::TimeDelta::minutes(1),
                ..Bucket::default()
            },
        ];
        let chart = Chart::new("Last hour", Width::Minute, &buckets);
        assert_eq!((chart.completed, chart.failed, chart.max), (30, 10, 40));
        let full = &chart.bars[0];
        assert_eq!(full.failed_y, TOP);
        assert_eq!(full.completed_y + full.completed_h, HEIGHT);
        assert_eq!(full.failed_y + full.failed_h, full.completed_y);
        assert_eq!(full.label, "10:00 UTC: 30 completed, 10 failed");
        assert_eq!(chart.bars[1].completed_h + chart.bars[1].failed_h, 0.0);
        assert_eq!(
            (chart.first.as_str(), chart.last.as_str()),
            ("10:00", "10:01")
        );
    }
}
