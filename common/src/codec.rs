//! The frame codec: sans-IO, so the hard cases are tested without sockets.
//!
//! # Byte layout (version 1)
//!
//! ```text
//! offset  size  field
//! 0       4     payload length L, u32 big-endian (the header is not counted)
//! 4       1     frame format version, currently 1
//! 5       4     CRC-32 (IEEE) of the payload, u32 big-endian
//! 9       L     payload: one MessagePack value with named fields (see `wire`)
//! ```
//!
//! The decoder reads the 9-byte header first and refuses a frame whose length exceeds its
//! maximum *before* buffering or allocating the payload; it also refuses an unknown version
//! and a checksum mismatch. Any error is fatal for the stream: after a bad frame the byte
//! boundaries can no longer be trusted, so the driver closes the connection.
//!
//! The same framing (header plus payload) is used for records on disk by the agent's buffer
//! and the aggregator's log, so one decoder and one property test cover them all.

use serde::{Serialize, de::DeserializeOwned};

/// Size of the frame header in bytes.
pub const HEADER_LEN: usize = 9;
/// The frame format version this build writes and reads.
pub const FRAME_VERSION: u8 = 1;
/// Default maximum payload size: 16 MiB.
pub const DEFAULT_MAX_FRAME: u32 = 16 * 1024 * 1024;

/// Errors from framing and decoding.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    /// The header announces a payload larger than the allowed maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Announced payload length.
        len: u32,
        /// Allowed maximum.
        max: u32,
    },
    /// The header carries a frame format version this build does not know.
    #[error("unknown frame version {0} (this build reads version {FRAME_VERSION})")]
    UnknownVersion(u8),
    /// The payload does not match its checksum.
    #[error("frame checksum mismatch: header says {expected:#010x}, payload has {actual:#010x}")]
    Checksum {
        /// Checksum from the header.
        expected: u32,
        /// Checksum of the received payload.
        actual: u32,
    },
    /// The payload is not the expected MessagePack value.
    #[error("malformed frame payload: {0}")]
    Malformed(String),
    /// A message could not be encoded (should not happen for Telltale's own types).
    #[error("cannot encode message: {0}")]
    Encode(String),
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame ({0} bytes left over)")]
    Truncated(usize),
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Payload length in bytes.
    pub len: u32,
    /// Format version.
    pub version: u8,
    /// CRC-32 of the payload.
    pub crc: u32,
}

impl Header {
    /// Parses and checks a header against `max` payload bytes.
    pub fn parse(bytes: &[u8; HEADER_LEN], max: u32) -> Result<Header, CodecError> {
        let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let version = bytes[4];
        let crc = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
        if version != FRAME_VERSION {
            return Err(CodecError::UnknownVersion(version));
        }
        if len > max {
            return Err(CodecError::TooLarge { len, max });
        }
        Ok(Header { len, version, crc })
    }

    /// Checks `payload` against the header's checksum.
    pub fn verify(&self, payload: &[u8]) -> Result<(), CodecError> {
        let actual = crc32fast::hash(payload);
        if actual != self.crc {
            return Err(CodecError::Checksum {
                expected: self.crc,
                actual,
            });
        }
        Ok(())
    }
}

/// Frames `payload` (header plus payload) into `out`.
pub fn frame_into(payload: &[u8], out: &mut Vec<u8>) {
    out.reserve(HEADER_LEN + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.push(FRAME_VERSION);
    out.extend_from_slice(&crc32fast::hash(payload).to_be_bytes());
    out.extend_from_slice(payload);
}

/// Encodes `msg` as MessagePack with named fields.
pub fn encode_payload<T: Serialize>(msg: &T) -> Result<Vec<u8>, CodecError> {
    rmp_serde::to_vec_named(msg).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Encodes `msg` and frames it.
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, CodecError> {
    let payload = encode_payload(msg)?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    frame_into(&payload, &mut out);
    Ok(out)
}

/// Decodes a MessagePack payload.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, CodecError> {
    rmp_serde::from_slice(payload).map_err(|e| CodecError::Malformed(e.to_string()))
}

/// Decodes a MessagePack payload into a type that borrows from it.
pub fn decode_borrowed<'a, T: serde::Deserialize<'a>>(payload: &'a [u8]) -> Result<T, CodecError> {
    rmp_serde::from_slice(payload).map_err(|e| CodecError::Malformed(e.to_string()))
}

/// An incremental frame decoder: push bytes as they arrive, poll complete payloads.
///
/// It never holds more than one maximum-size frame plus the last pushed chunk, and it fails as
/// soon as a header it has seen is invalid.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    max: u32,
    header: Option<Header>,
}

impl FrameDecoder {
    /// A decoder that accepts payloads up to `max` bytes.
    pub fn new(max: u32) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            max,
            header: None,
        }
    }

    /// Appends received bytes; fails at once if a now-complete header is invalid.
    pub fn push(&mut self, data: &[u8]) -> Result<(), CodecError> {
        self.buf.extend_from_slice(data);
        self.parse_header()
    }

    fn parse_header(&mut self) -> Result<(), CodecError> {
        if self.header.is_none() && self.buf.len() >= HEADER_LEN {
            let mut h = [0u8; HEADER_LEN];
            h.copy_from_slice(&self.buf[..HEADER_LEN]);
            self.header = Some(Header::parse(&h, self.max)?);
        }
        Ok(())
    }

    /// Returns the next complete, checksum-verified payload, if one is buffered.
    pub fn poll_frame(&mut self) -> Result<Option<Vec<u8>>, CodecError> {
        self.parse_header()?;
        let Some(h) = self.header else {
            return Ok(None);
        };
        let end = HEADER_LEN + h.len as usize;
        if self.buf.len() < end {
            return Ok(None);
        }
        let payload = self.buf[HEADER_LEN..end].to_vec();
        self.buf.drain(..end);
        self.header = None;
        h.verify(&payload)?;
        self.parse_header()?;
        Ok(Some(payload))
    }

    /// Call at end of stream: fails if a partial frame is left.
    pub fn finish(&self) -> Result<(), CodecError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(CodecError::Truncated(self.buf.len()))
        }
    }

    /// Bytes buffered but not yet returned.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Labels, STALE_NAN_BITS, Sample, SeriesSamples};
    use crate::wire::{Batch, ClientMessage, Hello, ServerMessage};
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(f64::from_bits(STALE_NAN_BITS)),
            Just(f64::MAX),
            Just(f64::MIN_POSITIVE),
            Just(-0.0),
        ]
    }

    fn batch() -> impl Strategy<Value = Batch> {
        let series = (
            proptest::collection::vec(("[a-z_]{1,8}", "\\PC{0,12}"), 0..5),
            proptest::collection::vec((any::<i64>(), value()), 0..20),
        )
            .prop_map(|(l, s)| SeriesSamples {
                labels: Labels::from_pairs(l),
                samples: s.into_iter().map(|(t, v)| Sample(t, v)).collect(),
            });
        let event =
            (any::<i64>(), "[a-z_]{1,10}", "\\PC{0,20}").prop_map(|(t_ms, kind, message)| {
                crate::wire::Event {
                    t_ms,
                    labels: vec![("check".into(), kind.clone())],
                    kind,
                    message,
                }
            });
        (
            any::<u64>(),
            any::<i64>(),
            proptest::collection::vec(series, 0..6),
            proptest::collection::vec(event, 0..3),
        )
            .prop_map(|(sequence, created_ms, series, events)| Batch {
                sequence,
                created_ms,
                series,
                events,
                spans: Vec::new(),
                exemplars: Vec::new(),
                logs: Vec::new(),
            })
    }

    fn same_bits(a: &Batch, b: &Batch) -> bool {
        a.sequence == b.sequence
            && a.created_ms == b.created_ms
            && a.events == b.events
            && a.series.len() == b.series.len()
            && a.series.iter().zip(&b.series).all(|(x, y)| {
                x.labels == y.labels
                    && x.samples.len() == y.samples.len()
                    && x.samples
                        .iter()
                        .zip(&y.samples)
                        .all(|(p, q)| p.0 == q.0 && p.1.to_bits() == q.1.to_bits())
            })
    }

    proptest! {
        #[test]
        fn batches_round_trip_bit_exactly(b in batch(), split in 1usize..64) {
            let bytes = encode_frame(&ClientMessage::Batch(b.clone())).unwrap();
            let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
            let mut got = Vec::new();
            for chunk in bytes.chunks(split) {
                d.push(chunk).unwrap();
                while let Some(p) = d.poll_frame().unwrap() {
                    got.push(p);
                }
            }
            d.finish().unwrap();
            prop_assert_eq!(got.len(), 1);
            match decode_payload::<ClientMessage>(&got[0]).unwrap() {
                ClientMessage::Batch(back) => prop_assert!(same_bits(&b, &back)),
                other => prop_assert!(false, "decoded {:?}", other),
            }
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut d = FrameDecoder::new(1024);
            if d.push(&bytes).is_ok() {
                while let Ok(Some(p)) = d.poll_frame() {
                    let _ = decode_payload::<ClientMessage>(&p);
                }
            }
        }

        #[test]
        fn any_flipped_payload_bit_is_detected(b in batch(), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut bytes = encode_frame(&ClientMessage::Batch(b)).unwrap();
            let i = HEADER_LEN + pos.index(bytes.len() - HEADER_LEN);
            bytes[i] ^= 1 << bit;
            let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
            d.push(&bytes).unwrap();
            let checksum_failed = matches!(d.poll_frame(), Err(CodecError::Checksum { .. }));
            prop_assert!(checksum_failed);
        }
    }

    #[test]
    fn borrowed_and_head_decoding_agree_with_owned() {
        use crate::wire::{ClientMessageHead, ClientMessageRef};
        let b = Batch {
            sequence: 42,
            created_ms: 7,
            series: vec![SeriesSamples {
                labels: Labels::from_pairs([("__name__", "m"), ("a", "x\u{e9}")]),
                samples: vec![Sample(1, 2.5)],
            }],
            events: vec![crate::wire::Event {
                t_ms: 3,
                kind: "check_state".into(),
                labels: vec![("check".into(), "web".into())],
                message: "web is CRITICAL".into(),
            }],
            spans: Vec::new(),
            exemplars: Vec::new(),
            logs: Vec::new(),
        };
        let p = encode_payload(&ClientMessage::Batch(b)).unwrap();
        match decode_borrowed::<ClientMessageRef>(&p).unwrap() {
            ClientMessageRef::Batch(r) => {
                assert_eq!(r.sequence, 42);
                assert_eq!(
                    r.series[0].labels,
                    vec![("__name__", "m"), ("a", "x\u{e9}")]
                );
                assert_eq!(r.series[0].samples, vec![Sample(1, 2.5)]);
                assert_eq!(r.events[0].message, "web is CRITICAL");
            }
            other => panic!("{other:?}"),
        }
        match decode_payload::<ClientMessageHead>(&p).unwrap() {
            ClientMessageHead::Batch(h) => assert_eq!(h.sequence, 42),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn oversized_header_is_refused_before_the_payload_arrives() {
        let mut d = FrameDecoder::new(100);
        let mut header = Vec::new();
        header.extend_from_slice(&1_000_000u32.to_be_bytes());
        header.push(FRAME_VERSION);
        header.extend_from_slice(&0u32.to_be_bytes());
        assert_eq!(
            d.push(&header),
            Err(CodecError::TooLarge {
                len: 1_000_000,
                max: 100
            })
        );
    }

    #[test]
    fn unknown_version_is_refused() {
        let mut bytes = encode_frame(&ServerMessage::Ack { sequence: 1 }).unwrap();
        bytes[4] = 9;
        let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
        assert_eq!(d.push(&bytes), Err(CodecError::UnknownVersion(9)));
    }

    #[test]
    fn truncated_stream_is_reported() {
        let bytes = encode_frame(&ServerMessage::Ack { sequence: 1 }).unwrap();
        let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
        d.push(&bytes[..bytes.len() - 1]).unwrap();
        assert_eq!(d.poll_frame(), Ok(None));
        assert!(matches!(d.finish(), Err(CodecError::Truncated(_))));
    }

    #[test]
    fn added_fields_are_ignored_by_older_readers() {
        #[derive(serde::Serialize)]
        struct NewerHello {
            protocol_version: u16,
            agent_version: String,
            shiny_new_field: Vec<u32>,
        }
        #[derive(serde::Serialize)]
        enum NewerMessage {
            Hello(NewerHello),
        }
        let payload = encode_payload(&NewerMessage::Hello(NewerHello {
            protocol_version: 2,
            agent_version: "9.9".into(),
            shiny_new_field: vec![1, 2],
        }))
        .unwrap();
        let got: ClientMessage = decode_payload(&payload).unwrap();
        assert_eq!(
            got,
            ClientMessage::Hello(Hello {
                protocol_version: 2,
                agent_version: "9.9".into(),
                epoch: 0,
                capabilities: Vec::new(),
                actions: Vec::new(),
                sources: Vec::new(),
            })
        );
    }
}
