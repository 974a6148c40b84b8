//! Primitives for strict configuration files: errors that name the file and the key, and
//! humantime durations (`10s`, `5m`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

/// A configuration problem, printed as one line naming the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not valid TOML or a key is wrong.
    #[error("{path}: {key}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The dotted key at fault (or `(document)` when the syntax is broken).
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// A value that does not parse or validate — a duration, a size, a matcher, a rule, a
/// route, a request body — with the reason as one sentence. Leaf parsers return it; loaders
/// wrap it with the file and the key ([`ConfigError::Invalid`]), the HTTP layer answers it
/// with 400. It is its own type so a caller can tell bad input from a failed read or write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl Invalid {
    /// The same error with `context` in front (`context: reason`).
    pub fn context(self, context: impl std::fmt::Display) -> Invalid {
        Invalid(format!("{context}: {}", self.0))
    }
}

impl From<String> for Invalid {
    fn from(s: String) -> Self {
        Invalid(s)
    }
}

impl From<&str> for Invalid {
    fn from(s: &str) -> Self {
        Invalid(s.to_string())
    }
}

impl From<Invalid> for String {
    fn from(e: Invalid) -> Self {
        e.0
    }
}

impl ConfigError {
    /// An error about `key` in `path`.
    pub fn invalid(path: &Path, key: &str, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            message: message.into(),
        }
    }
}

/// Parses TOML text into `T`, naming the key at fault in the error.
pub fn parse_toml<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    let de = toml::Deserializer::parse(text).map_err(|e| {
        ConfigError::invalid(path, "(document)", located(text, e.span(), e.message()))
    })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." || key.is_empty() {
            "(document)".to_string()
        } else {
            key
        };
        ConfigError::invalid(
            path,
            &key,
            located(text, e.inner().span(), e.inner().message()),
        )
    })
}

/// `message` on one line, prefixed with the line and column where `span` starts.
fn located(text: &str, span: Option<std::ops::Range<usize>>, message: &str) -> String {
    match span {
        Some(r) if r.start <= text.len() => {
            let before = text.get(..r.start).unwrap_or("");
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
            format!("line {line}, column {column}: {}", one_line(message))
        }
        _ => one_line(message),
    }
}

/// Reads and parses a TOML file.
pub fn load_toml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_toml(path, &text)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Deserializes a humantime duration (`"10s"`, `"1m 30s"`).
pub fn humantime_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s)
        .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}")))
}

/// Deserializes an optional humantime duration.
pub fn humantime_duration_opt<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    s.map(|s| {
        humantime::parse_duration(&s)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}")))
    })
    .transpose()
}

/// Parses a byte size such as `512MiB`, `64 KiB`, `1GB` or a plain number of bytes.
pub fn parse_bytes(s: &str) -> Result<u64, Invalid> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: expected a number and a unit such as 512MiB"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(Invalid(format!(
                "invalid size {s:?}: unknown unit {other:?}"
            )));
        }
    };
    Ok((n * mult as f64) as u64)
}

/// Deserializes a byte size (see [`parse_bytes`]); integers are taken as bytes.
pub fn byte_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        N(u64),
        S(String),
    }
    match Raw::deserialize(d)? {
        Raw::N(n) => Ok(n),
        Raw::S(s) => parse_bytes(&s).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        #[serde(deserialize_with = "humantime_duration")]
        interval: Duration,
        inner: Option<Inner>,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        #[serde(deserialize_with = "byte_size")]
        size: u64,
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let p = Path::new("x.toml");
        let e = parse_toml::<Sample>(p, "interval = \"ten\"")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("x.toml: interval: line 1, column 12: invalid duration"),
            "{e}"
        );
        let e = parse_toml::<Sample>(p, "interval = \"1s\"\n[inner]\nsize = \"12 parsecs\"")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("x.toml: inner.size: "), "{e}");
        let e = parse_toml::<Sample>(p, "interval = \"1s\"\nbogus = 1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bogus"), "{e}");
        assert!(!e.contains('\n'));
        let e = parse_toml::<Sample>(p, "interval = [")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("x.toml: (document): line 1, column "), "{e}");
        // The line of a syntax error further down, and of a bad value.
        let e = parse_toml::<Sample>(p, "# c\ninterval = \"1s\"\n\n[inner\nsize = 1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 4, column "), "{e}");
        let e = parse_toml::<Sample>(p, "\n\ninterval = \"ten\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("interval: line 3, column 12"), "{e}");
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("100"), Ok(100));
        assert!(parse_bytes("1 XB").is_err());
    }
}
