//! Reading a selector's series from storage, once per query.

use std::sync::Arc;

use promql_parser::parser::VectorSelector;

use super::{Evaluator, QueryError, SeriesData, matchers, offset_ms};

impl Evaluator<'_> {
    /// The series of `vs` with their samples over the query's whole window (its range, the
    /// lookback and the expression's reach), read once per selector text and shared.
    pub(in crate::metrics::promql) fn data(
        &mut self,
        vs: &VectorSelector,
    ) -> Result<Arc<Vec<SeriesData>>, QueryError> {
        let key = vs as *const VectorSelector as usize;
        if let Some(d) = self.cache.get(&key) {
            return Ok(d.clone());
        }
        // The window below depends only on the text (its `@` and offset) and on the query's
        // range and reach, which one evaluator never changes.
        let text = vs.to_string();
        if let Some(d) = self.by_text.get(&text) {
            let d = d.clone();
            self.cache.insert(key, d.clone());
            return Ok(d);
        }
        let off = offset_ms(&vs.offset);
        let (lo, hi) = match self.at_time(&vs.at) {
            Some(at) => (at - off - self.extra, at - off),
            None => (self.start - off - self.extra, self.end - off),
        };
        let budget = self.max_samples.saturating_sub(self.loaded);
        let mut d = self.storage.select(&matchers(vs)?, lo, hi, budget)?;
        self.loaded += d.iter().map(|s| s.samples.len()).sum::<usize>();
        // In label order, as Prometheus hands series to its engine: the order decides which
        // of equal values `topk` keeps and in what order sums add up.
        d.sort_by(|a, b| a.labels.cmp(&b.labels));
        let d = Arc::new(d);
        self.cache.insert(key, d.clone());
        self.by_text.insert(text, d.clone());
        Ok(d)
    }
}
