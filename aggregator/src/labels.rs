//! Label matching, shared by every signal's queries and by alert routing, silences,
//! inhibitions and runbooks: a matcher such as `job="node"` or `path=~"/api/.*"`.

use telltale_common::goregex::{self, Flavor, GoRegexError};
use telltale_common::model::Labels;

/// The largest compiled program a Go regex may become here. Go's own limit is higher
/// (`\pL{1000}` compiles there, and past `regex`'s default 10 MiB here); this one still bounds
/// what one query or matcher can cost.
const REGEX_SIZE_LIMIT: usize = 64 << 20;

/// A regex as Prometheus 2.42, Alertmanager and Loki compile a matcher's: Go's syntax and
/// meaning (`telltale_common::goregex`), anchored at both ends (`^(?:pattern)$`).
pub fn anchored_regex(pattern: &str) -> Result<regex::Regex, GoRegexError> {
    compile(goregex::anchored(pattern, Flavor::Regex)?)
}

/// A Go regex searched anywhere in the text (templates' `reReplaceAll`, LogQL line filters).
pub fn go_regex(pattern: &str) -> Result<regex::Regex, GoRegexError> {
    compile(goregex::translate(pattern, Flavor::Regex)?)
}

/// Compiles a pattern `goregex` wrote, within the size limit.
pub fn compile(rust: String) -> Result<regex::Regex, GoRegexError> {
    regex::RegexBuilder::new(&rust)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| {
            let text = e.to_string();
            // Go's codes where Go has a limit too; Rust's text says which.
            let code = if text.contains("size limit") {
                "expression too large"
            } else if text.contains("nest") {
                "expression nests too deeply"
            } else {
                "not supported by Rust's regex engine"
            };
            GoRegexError { code, expr: text }
        })
}

/// How a label matcher compares.
#[derive(Debug, Clone)]
pub enum MatchOp {
    /// `=`
    Equal(String),
    /// `!=`
    NotEqual(String),
    /// `=~` (the regex is anchored at both ends)
    Regex(regex::Regex),
    /// `!~` (anchored)
    NotRegex(regex::Regex),
}

/// A label matcher such as `job="node"`. A missing label matches as the empty string.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// The label name.
    pub name: String,
    /// The comparison.
    pub op: MatchOp,
}

impl Matcher {
    /// An equality matcher.
    pub fn equal(name: &str, value: &str) -> Self {
        Matcher {
            name: name.to_string(),
            op: MatchOp::Equal(value.to_string()),
        }
    }

    /// Whether label value `v` (empty when absent) satisfies the matcher.
    pub fn matches(&self, v: &str) -> bool {
        match &self.op {
            MatchOp::Equal(x) => v == x,
            MatchOp::NotEqual(x) => v != x,
            MatchOp::Regex(r) => r.is_match(v),
            MatchOp::NotRegex(r) => !r.is_match(v),
        }
    }

    /// Whether the series' labels satisfy the matcher.
    pub fn matches_labels(&self, labels: &Labels) -> bool {
        self.matches(labels.get(&self.name).unwrap_or(""))
    }
}

/// Sorted distinct label names of label sets.
pub fn label_names_of(series: &[Labels]) -> Vec<String> {
    let mut names: Vec<String> = series
        .iter()
        .flat_map(|l| l.iter().map(|(k, _)| k.to_string()).collect::<Vec<_>>())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Sorted distinct values of a label among label sets.
pub fn label_values_of(series: &[Labels], name: &str) -> Vec<String> {
    let mut values: Vec<String> = series
        .iter()
        .filter_map(|l| l.get(name).map(str::to_string))
        .collect();
    values.sort();
    values.dedup();
    values
}
