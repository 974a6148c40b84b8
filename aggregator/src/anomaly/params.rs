//! Method parameters as text: `key=value,...` (the command line's `--params`, and a detector
//! file's `params:` map joined the same way), with errors that name the key.

/// A parameter string that does not parse: which key, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamsError(pub String);

impl std::fmt::Display for ParamsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParamsError {}

/// One `key=value`.
#[derive(Debug, Clone, Copy)]
pub struct Kv<'a> {
    /// The key.
    pub key: &'a str,
    /// The value, as written.
    pub value: &'a str,
}

impl Kv<'_> {
    /// The value as a count.
    pub fn int(&self) -> Result<usize, ParamsError> {
        self.value
            .parse()
            .map_err(|e| ParamsError(format!("parameter {}: {e}", self.key)))
    }

    /// The value as a finite number.
    pub fn float(&self) -> Result<f64, ParamsError> {
        match self.value.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            Ok(_) => Err(ParamsError(format!(
                "parameter {}: must be finite",
                self.key
            ))),
            Err(e) => Err(ParamsError(format!("parameter {}: {e}", self.key))),
        }
    }

    /// The value as a duration in milliseconds (`1d`, `1h30m`).
    pub fn millis(&self) -> Result<i64, ParamsError> {
        humantime::parse_duration(self.value)
            .map_err(|e| ParamsError(format!("parameter {}: {e}", self.key)))
            .and_then(|d| {
                i64::try_from(d.as_millis())
                    .ok()
                    .filter(|ms| *ms > 0)
                    .ok_or_else(|| ParamsError(format!("parameter {}: out of range", self.key)))
            })
    }

    /// The error for a key no one takes.
    pub fn unknown(&self, method: &str) -> ParamsError {
        ParamsError(format!(
            "unknown parameter {:?} for method {method}",
            self.key
        ))
    }
}

/// Splits `key=value,...` (blanks around items ignored).
pub fn split(text: &str) -> Result<Vec<Kv<'_>>, ParamsError> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (key, value) = kv
                .split_once('=')
                .ok_or_else(|| ParamsError(format!("parameter {kv:?}: expected key=value")))?;
            Ok(Kv {
                key: key.trim(),
                value: value.trim(),
            })
        })
        .collect()
}
