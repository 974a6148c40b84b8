//! A collection of series stamped with one timestamp, as sources build it and the pipeline
//! reports its own series in it.

use telltale_common::model::{Labels, Sample, SeriesSamples};

/// Collected series with one timestamp, and the errors of collectors that failed.
pub struct Out {
    t: i64,
    /// The series collected so far.
    pub series: Vec<SeriesSamples>,
    /// `(collector, error)` for every collector that failed.
    pub errors: Vec<(&'static str, String)>,
}

impl Out {
    /// An empty collection stamped at `t_ms`.
    pub fn new(t_ms: i64) -> Out {
        Out {
            t: t_ms,
            series: Vec::with_capacity(512),
            errors: Vec::new(),
        }
    }

    /// Adds one sample of metric `name` with `labels`.
    pub fn add(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        let mut l = Labels::from_pairs(labels.iter().copied());
        l.set("__name__", name);
        self.series.push(SeriesSamples {
            labels: l,
            samples: vec![Sample(self.t, v)],
        });
    }

    /// The timestamp of this collection.
    pub fn t_ms(&self) -> i64 {
        self.t
    }
}
