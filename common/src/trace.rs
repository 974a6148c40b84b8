//! Spans: the trace data model the agent's OTLP receiver produces (and the trace store will
//! keep). Attribute values are kept as text: OpenTelemetry's typed values (ints, doubles,
//! bools, arrays, maps) are written the way they print, arrays and maps as JSON.

use serde::{Deserialize, Serialize};

/// A trace id (16 bytes, never all zero).
pub type TraceId = [u8; 16];
/// A span id (8 bytes, never all zero).
pub type SpanId = [u8; 8];

/// What a span stands for (OpenTelemetry's `SpanKind`; the discriminants are OTLP's numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum SpanKind {
    /// Not said.
    #[default]
    Unspecified = 0,
    /// Inside a process.
    Internal = 1,
    /// Serving a remote call.
    Server = 2,
    /// Making a remote call.
    Client = 3,
    /// Sending a message.
    Producer = 4,
    /// Receiving a message.
    Consumer = 5,
}

impl SpanKind {
    /// From OTLP's enum number; unknown numbers are `Unspecified`.
    pub fn from_otlp(n: i32) -> SpanKind {
        match n {
            1 => SpanKind::Internal,
            2 => SpanKind::Server,
            3 => SpanKind::Client,
            4 => SpanKind::Producer,
            5 => SpanKind::Consumer,
            _ => SpanKind::Unspecified,
        }
    }

    /// The enum's name in OTLP (`SPAN_KIND_SERVER`), as span metrics label it.
    pub fn as_str(self) -> &'static str {
        match self {
            SpanKind::Unspecified => "SPAN_KIND_UNSPECIFIED",
            SpanKind::Internal => "SPAN_KIND_INTERNAL",
            SpanKind::Server => "SPAN_KIND_SERVER",
            SpanKind::Client => "SPAN_KIND_CLIENT",
            SpanKind::Producer => "SPAN_KIND_PRODUCER",
            SpanKind::Consumer => "SPAN_KIND_CONSUMER",
        }
    }
}

/// A span's status (OpenTelemetry's `StatusCode`; the discriminants are OTLP's numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum SpanStatus {
    /// Not set.
    #[default]
    Unset = 0,
    /// Explicitly fine.
    Ok = 1,
    /// Failed.
    Error = 2,
}

impl SpanStatus {
    /// From OTLP's enum number; unknown numbers are `Unset`.
    pub fn from_otlp(n: i32) -> SpanStatus {
        match n {
            1 => SpanStatus::Ok,
            2 => SpanStatus::Error,
            _ => SpanStatus::Unset,
        }
    }

    /// The enum's name in OTLP (`STATUS_CODE_ERROR`), as span metrics label it.
    pub fn as_str(self) -> &'static str {
        match self {
            SpanStatus::Unset => "STATUS_CODE_UNSET",
            SpanStatus::Ok => "STATUS_CODE_OK",
            SpanStatus::Error => "STATUS_CODE_ERROR",
        }
    }
}

/// Something that happened during a span (an exception, a retry...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanEvent {
    /// When (ns since the epoch).
    pub t_ns: u64,
    /// Its name.
    pub name: String,
    /// Its attributes.
    pub attributes: Vec<(String, String)>,
}

/// A link to a span of another (or the same) trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanLink {
    /// The linked trace.
    #[serde(with = "id_bytes")]
    pub trace_id: TraceId,
    /// The linked span.
    #[serde(with = "id_bytes")]
    pub span_id: SpanId,
}

/// One span.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Span {
    /// Its trace.
    #[serde(with = "id_bytes")]
    pub trace_id: TraceId,
    /// Its id.
    #[serde(with = "id_bytes")]
    pub span_id: SpanId,
    /// The span it is a child of (`None` for a root).
    #[serde(with = "id_bytes::option")]
    pub parent: Option<SpanId>,
    /// `service.name` of its resource (`unknown_service` when absent, as the SDKs say).
    pub service: String,
    /// The operation.
    pub name: String,
    /// Its kind.
    pub kind: SpanKind,
    /// Start (ns since the epoch).
    pub start_ns: u64,
    /// End (ns since the epoch, not before the start).
    pub end_ns: u64,
    /// Its status.
    pub status: SpanStatus,
    /// The status message (empty when none).
    pub status_message: String,
    /// Its attributes.
    pub attributes: Vec<(String, String)>,
    /// Its resource's attributes but `service.name`.
    pub resource: Vec<(String, String)>,
    /// Its events.
    pub events: Vec<SpanEvent>,
    /// Its links.
    pub links: Vec<SpanLink>,
}

impl Span {
    /// How long it took, in nanoseconds.
    pub fn duration_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }
}

/// Ids as MessagePack binaries (18 bytes for a trace id) instead of serde's default array of
/// numbers (up to 33).
pub mod id_bytes {
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    /// Writes an id as a binary.
    pub fn serialize<S: Serializer, const N: usize>(id: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(id)
    }

    struct Id<const N: usize>;

    impl<'de, const N: usize> Visitor<'de> for Id<N> {
        type Value = [u8; N];

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "an id of {N} bytes")
        }

        fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<[u8; N], E> {
            v.try_into().map_err(|_| E::invalid_length(v.len(), &self))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<[u8; N], A::Error> {
            let mut out = [0u8; N];
            for (i, o) in out.iter_mut().enumerate() {
                *o = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(i, &self))?;
            }
            if seq.next_element::<u8>()?.is_some() {
                return Err(A::Error::invalid_length(N + 1, &self));
            }
            Ok(out)
        }
    }

    /// Reads an id from a binary (or, as written before, an array of numbers).
    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        d.deserialize_bytes(Id::<N>)
    }

    /// The same for optional ids.
    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};

        /// Writes an optional id.
        pub fn serialize<S: Serializer, const N: usize>(
            id: &Option<[u8; N]>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match id {
                Some(id) => s.serialize_bytes(id),
                None => s.serialize_none(),
            }
        }

        /// Reads an optional id.
        pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
            d: D,
        ) -> Result<Option<[u8; N]>, D::Error> {
            #[derive(Deserialize)]
            struct W<const M: usize>(#[serde(with = "super")] [u8; M]);
            Ok(Option::<W<N>>::deserialize(d)?.map(|w| w.0))
        }
    }
}

/// Lower-case hex of an id (how OTLP/JSON, Jaeger and Tempo write ids).
pub fn hex(id: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(id.len() * 2);
    for b in id {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// Parses hex (either case) into exactly `N` bytes.
pub fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let b = s.as_bytes();
    if b.len() != 2 * N {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = nibble(b[2 * i])? << 4 | nibble(b[2 * i + 1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_what_is_not_an_id() {
        let id: TraceId = [
            0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03, 0x81, 0x03, 0xd2, 0x69, 0xb6, 0x33, 0x81, 0x3f,
            0xc6, 0x0c,
        ];
        let s = hex(&id);
        assert_eq!(s, "5b8efff798038103d269b633813fc60c");
        assert_eq!(unhex::<16>(&s), Some(id));
        assert_eq!(unhex::<16>(&s.to_uppercase()), Some(id));
        assert_eq!(unhex::<16>(&s[1..]), None);
        assert_eq!(unhex::<8>(&s), None);
        assert_eq!(unhex::<8>("zz00000000000000"), None);
        assert_eq!(unhex::<8>("é0000000000000"), None);
    }
}
