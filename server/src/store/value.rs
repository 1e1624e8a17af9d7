//! The on-disk encoding of one stored key's value.
//!
//! Layout: `create_revision u64 BE | mod_revision u64 BE | content-type length u16 BE |
//! content-type bytes | value bytes`. The fixed header lets listings read a
//! key's metadata without decoding (or copying) its value.

use thiserror::Error;

const HEADER: usize = 8 + 8 + 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueMeta {
    pub create_revision: u64,
    pub mod_revision: u64,
    pub content_type: String,
    pub size: u64,
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
    value: &[u8],
) -> Vec<u8> {
    let ct = content_type.as_bytes();
    let ct_len = ct.len().min(u16::MAX as usize);
    let mut out = Vec::with_capacity(HEADER + ct_len + value.len());
    out.extend_from_slice(&create_revision.to_be_bytes());
    out.extend_from_slice(&mod_revision.to_be_bytes());
    out.extend_from_slice(&(ct_len as u16).to_be_bytes());
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
    let ct_len = u16::from_be_bytes(raw[16..18].try_into().expect("2 bytes")) as usize;
    let start = HEADER + ct_len;
    if raw.len() < start {
        return Err(CorruptValue("content type runs past the end"));
    }
    let content_type = String::from_utf8(raw[HEADER..start].to_vec())
        .map_err(|_| CorruptValue("content type is not UTF-8"))?;
    Ok((
        ValueMeta {
            create_revision,
            mod_revision,
            content_type,
            size: (raw.len() - start) as u64,
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
        let raw = encode(3, 9, "image/png", &value);
        let decoded = decode(&raw).unwrap();
        assert_eq!(decoded.value, value);
        assert_eq!(
            decoded.meta,
            ValueMeta {
                create_revision: 3,
                mod_revision: 9,
                content_type: "image/png".into(),
                size: 256
            }
        );
    }

    #[test]
    fn empty_value_and_content_type() {
        let decoded = decode(&encode(1, 1, "", b"")).unwrap();
        assert_eq!(decoded.value, b"");
        assert_eq!(decoded.meta.content_type, "");
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let raw = encode(1, 2, "text/plain", b"x");
        for cut in 0..20 {
            let _ = decode(&raw[..cut.min(raw.len())]);
        }
        assert!(decode(&raw[..10]).is_err());
    }
}
