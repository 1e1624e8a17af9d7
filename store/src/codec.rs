//! The binary encoding of every record Cete persists or sends between
//! peers: Raft log entries, vote and other Raft state, state-machine
//! metadata, watch events and Raft RPC payloads.
//!
//! Each record is one format byte ([`RECORD_FORMAT`]) followed by the value
//! in postcard (a documented, stable, maintained serde format; see
//! <https://postcard.jamesmunns.com/wire-format>). A record of any other
//! format is refused, never misread. The key-value data itself and the
//! snapshot files have layouts of their own (`store::value`,
//! `store::snapshot`).

use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

/// The format byte at the start of every record: postcard 1.x, format 1.
pub const RECORD_FORMAT: u8 = 1;

#[derive(Debug, Error)]
pub enum CodecError {
    #[error("empty record")]
    Empty,
    #[error("record format {0} is not one this build reads (it reads format {RECORD_FORMAT})")]
    UnknownFormat(u8),
    #[error("{0}")]
    Postcard(#[from] postcard::Error),
}

pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let out = vec![RECORD_FORMAT];
    postcard::to_extend(value, out).expect("in-memory encoding of our own types cannot fail")
}

pub fn decode<T: DeserializeOwned>(raw: &[u8]) -> Result<T, CodecError> {
    match raw.split_first() {
        None => Err(CodecError::Empty),
        Some((&RECORD_FORMAT, body)) => Ok(postcard::from_bytes(body)?),
        Some((&other, _)) => Err(CodecError::UnknownFormat(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Precondition, Proposal};

    #[test]
    fn round_trips_and_refuses_other_formats() {
        let proposal = Proposal {
            commands: vec![
                Command::Put {
                    key: b"a".to_vec(),
                    value: vec![0, 255],
                    content_type: "application/octet-stream".into(),
                    precondition: Some(Precondition::RevisionIs(7)),
                },
                Command::Delete {
                    key: b"b".to_vec(),
                    precondition: Some(Precondition::Absent),
                },
            ],
        };
        let raw = encode(&proposal);
        assert_eq!(raw[0], RECORD_FORMAT);
        assert_eq!(decode::<Proposal>(&raw).unwrap(), proposal);
        let mut other = raw.clone();
        other[0] = 0;
        assert!(matches!(
            decode::<Proposal>(&other),
            Err(CodecError::UnknownFormat(0))
        ));
        assert!(matches!(decode::<Proposal>(&[]), Err(CodecError::Empty)));
        assert!(decode::<Proposal>(&raw[..raw.len() - 1]).is_err());
    }
}
