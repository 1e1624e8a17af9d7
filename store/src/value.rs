//! The on-disk encoding of one stored key's value.
//!
//! Layout: `create_revision u64 BE | mod_revision u64 BE | flags and content-type
//! length u16 BE | [deadline u64 BE] | content-type bytes | value bytes`. The top bit
//! of the u16 says a deadline (Unix milliseconds) follows; the other 15 bits are the
//! content type's length. Values written before expiry existed never set the bit (no
//! content type is 32 KiB long), so they read the same. The fixed header lets listings
//! read a key's metadata without decoding (or copying) its value.

use thiserror::Error;

const HEADER: usize = 8 + 8 + 2;
const HAS_DEADLINE: u16 = 0x8000;
const MAX_CONTENT_TYPE: usize = 0x7fff;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueMeta {
    pub create_revision: u64,
    pub mod_revision: u64,
    pub content_type: String,
    pub size: u64,
    /// Unix milliseconds after which the key no longer exists.
    pub expires_at_ms: Option<u64>,
}

impl ValueMeta {
    /// Past its deadline at `now_ms` (0: the clock is unknown, nothing is).
    pub fn expired_at(&self, now_ms: u64) -> bool {
        now_ms > 0
            && self
                .expires_at_ms
                .is_some_and(|deadline| deadline <= now_ms)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredValue {
    pub meta: ValueMeta,
    pub value: Vec<u8>,
}

#[derive(Debug, Error)]
#[error("corrupt stored value: {0}")]
pub struct CorruptValue(&'static str);

pub fn encode(
    create_revision: u64,
    mod_revision: u64,
    content_type: &str,
    expires_at_ms: Option<u64>,
    value: &[u8],
) -> Vec<u8> {
    let ct = content_type.as_bytes();
    let ct_len = ct.len().min(MAX_CONTENT_TYPE);
    let mut out = Vec::with_capacity(HEADER + 8 + ct_len + value.len());
    out.extend_from_slice(&create_revision.to_be_bytes());
    out.extend_from_slice(&mod_revision.to_be_bytes());
    let flags = if expires_at_ms.is_some() {
        HAS_DEADLINE
    } else {
        0
    };
    out.extend_from_slice(&(flags | ct_len as u16).to_be_bytes());
    if let Some(deadline) = expires_at_ms {
        out.extend_from_slice(&deadline.to_be_bytes());
    }
    out.extend_from_slice(&ct[..ct_len]);
    out.extend_from_slice(value);
    out
}

/// Decodes the header; returns the metadata and the offset where the value starts.
pub fn decode_meta(raw: &[u8]) -> Result<(ValueMeta, usize), CorruptValue> {
    if raw.len() < HEADER {
        return Err(CorruptValue("shorter than its header"));
    }
    let create_revision = u64::from_be_bytes(raw[0..8].try_into().expect("8 bytes"));
    let mod_revision = u64::from_be_bytes(raw[8..16].try_into().expect("8 bytes"));
    let word = u16::from_be_bytes(raw[16..18].try_into().expect("2 bytes"));
    let ct_len = (word & !HAS_DEADLINE) as usize;
    let mut ct_start = HEADER;
    let mut expires_at_ms = None;
    if word & HAS_DEADLINE != 0 {
        let deadline = raw
            .get(HEADER..HEADER + 8)
            .ok_or(CorruptValue("deadline runs past the end"))?;
        expires_at_ms = Some(u64::from_be_bytes(deadline.try_into().expect("8 bytes")));
        ct_start += 8;
    }
    let start = ct_start + ct_len;
    if raw.len() < start {
        return Err(CorruptValue("content type runs past the end"));
    }
    let content_type = String::from_utf8(raw[ct_start..start].to_vec())
        .map_err(|_| CorruptValue("content type is not UTF-8"))?;
    Ok((
        ValueMeta {
            create_revision,
            mod_revision,
            content_type,
            size: (raw.len() - start) as u64,
            expires_at_ms,
        },
        start,
    ))
}

pub fn decode(raw: &[u8]) -> Result<StoredValue, CorruptValue> {
    let (meta, start) = decode_meta(raw)?;
    Ok(StoredValue {
        meta,
        value: raw[start..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_binary_values() {
        let value: Vec<u8> = (0..=255u8).collect();
        let raw = encode(3, 9, "image/png", None, &value);
        let decoded = decode(&raw).unwrap();
        assert_eq!(decoded.value, value);
        assert_eq!(
            decoded.meta,
            ValueMeta {
                create_revision: 3,
                mod_revision: 9,
                content_type: "image/png".into(),
                size: 256,
                expires_at_ms: None,
            }
        );
    }

    #[test]
    fn empty_value_and_content_type() {
        let decoded = decode(&encode(1, 1, "", None, b"")).unwrap();
        assert_eq!(decoded.value, b"");
        assert_eq!(decoded.meta.content_type, "");
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let raw = encode(1, 2, "text/plain", Some(7), b"x");
        for cut in 0..30 {
            let _ = decode(&raw[..cut.min(raw.len())]);
        }
        assert!(decode(&raw[..10]).is_err());
        assert!(decode(&raw[..20]).is_err(), "cut inside the deadline");
    }

    #[test]
    fn deadlines_round_trip_and_older_values_read_the_same() {
        let raw = encode(1, 2, "text/plain", Some(1_700_000_000_123), b"v");
        let decoded = decode(&raw).unwrap();
        assert_eq!(decoded.meta.expires_at_ms, Some(1_700_000_000_123));
        assert_eq!(decoded.meta.content_type, "text/plain");
        assert_eq!(decoded.value, b"v");
        assert!(decoded.meta.expired_at(1_700_000_000_123));
        assert!(!decoded.meta.expired_at(1_700_000_000_122));
        assert!(!decoded.meta.expired_at(0), "no clock, no expiry");
        // The layout of values written before deadlines existed, byte by byte.
        let mut old = Vec::new();
        old.extend_from_slice(&1u64.to_be_bytes());
        old.extend_from_slice(&2u64.to_be_bytes());
        old.extend_from_slice(&3u16.to_be_bytes());
        old.extend_from_slice(b"a/bv");
        let decoded = decode(&old).unwrap();
        assert_eq!(decoded.meta.expires_at_ms, None);
        assert_eq!(decoded.meta.content_type, "a/b");
        assert_eq!(decoded.value, b"v");
        assert_eq!(encode(1, 2, "a/b", None, b"v"), old);
    }
}
