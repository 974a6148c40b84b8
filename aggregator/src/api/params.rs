//! Request parameters as Prometheus reads them: from the URL query and, for POST, from a
//! form-encoded body; repeated keys (`match[]`) are kept.

use telltale_common::config::Invalid;

use super::ApiError;

/// All parameters of a request, in order.
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Parses the URL query and (if form-encoded) the body.
    pub fn parse(query: Option<&str>, body: &[u8]) -> Params {
        let mut v: Vec<(String, String)> = Vec::new();
        if let Some(q) = query {
            v.extend(form_urlencoded::parse(q.as_bytes()).into_owned());
        }
        v.extend(form_urlencoded::parse(body).into_owned());
        Params(v)
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A required parameter.
    pub fn required(&self, key: &str) -> Result<&str, ApiError> {
        self.get(key)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ApiError::bad_data(format!("invalid parameter \"{key}\": missing")))
    }

    /// A time parameter (RFC 3339 or Unix seconds), or `default` when absent.
    pub fn time_or(&self, key: &str, default: i64) -> Result<i64, ApiError> {
        match self.get(key).filter(|v| !v.is_empty()) {
            None => Ok(default),
            Some(v) => parse_time(v)
                .map_err(|e| ApiError::bad_data(format!("invalid parameter \"{key}\": {e}"))),
        }
    }
}

/// Parses a Prometheus time: Unix seconds with optional fraction, or RFC 3339.
pub fn parse_time(s: &str) -> Result<i64, Invalid> {
    if let Ok(f) = s.parse::<f64>() {
        if !f.is_finite() {
            return Err(format!("cannot parse {s:?} to a valid timestamp").into());
        }
        // Clamped, so that differences of two times cannot overflow.
        return Ok(crate::metrics::promql::clamp_time(
            (f * 1000.0).round() as i128
        ));
    }
    humantime::parse_rfc3339_weak(s)
        .or_else(|_| humantime::parse_rfc3339(s))
        .map(|t| match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => crate::metrics::promql::clamp_time(d.as_millis() as i128),
            Err(e) => crate::metrics::promql::clamp_time(-(e.duration().as_millis() as i128)),
        })
        .map_err(|_| Invalid(format!("cannot parse {s:?} to a valid timestamp")))
}

/// Parses a Prometheus duration parameter: seconds with optional fraction, or `5m`, `1h30m`.
pub fn parse_step(s: &str) -> Result<i64, Invalid> {
    if let Ok(f) = s.parse::<f64>() {
        if !f.is_finite() {
            return Err(format!("cannot parse {s:?} to a valid duration").into());
        }
        return Ok((f * 1000.0).round() as i64);
    }
    promql_parser::util::parse_duration(s)
        .map(|d| d.as_millis() as i64)
        .map_err(|_| Invalid(format!("cannot parse {s:?} to a valid duration")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_steps_parse_like_prometheus() {
        assert_eq!(parse_time("1435781451.781"), Ok(1_435_781_451_781));
        assert_eq!(
            parse_time("2015-07-01T20:10:51.781Z"),
            Ok(1_435_781_451_781)
        );
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("NaN").is_err());
        assert_eq!(parse_step("15"), Ok(15_000));
        assert_eq!(parse_step("1m30s"), Ok(90_000));
        assert!(parse_step("soon").is_err());
    }

    #[test]
    fn repeated_keys_are_kept() {
        let p = Params::parse(Some("match[]=a&match[]=b"), b"start=1");
        assert_eq!(p.all("match[]"), vec!["a", "b"]);
        assert_eq!(p.get("start"), Some("1"));
    }
}
