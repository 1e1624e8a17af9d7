//! Snapshot files, shared by Raft snapshots and backups: the layout is
//! `cete_types::backup` (the CLI reads it too); this module gives the header
//! its types (the revision and openraft's SnapshotMeta).
//!
//! A backup (`GET /v1/snapshot`, `cete snapshot save`, `cete-server --restore`)
//! is exactly this file, built from a RocksDB snapshot of the applied state:
//! the header's `revision` is the backup's revision (every write with a
//! revision up to it is in the file, none after), its membership is the
//! cluster's at that point (a restore replaces it with the restored node
//! alone). Over HTTP it travels with `X-Cete-Revision`, `X-Cete-Keys` and
//! `X-Cete-Checksum: crc32:<8 hex digits>`, the CRC-32 of the whole file
//! (trailer included), so a client can check the transfer before it checks
//! the format.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use cete_types::backup::{self, FormatError, Version, FORMAT};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::command::typ::SnapshotMeta;

pub use cete_types::backup::Written;

#[derive(Debug, Error)]
pub enum SnapshotError {
    /// What the file's framing says is wrong (an I/O error is `Io` instead).
    #[error(transparent)]
    Format(FormatError),
    #[error("snapshot I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("the file is corrupt: {0}")]
    Corrupt(String),
}

impl From<FormatError> for SnapshotError {
    fn from(e: FormatError) -> SnapshotError {
        match e {
            FormatError::Io(io) => SnapshotError::Io(io),
            other => SnapshotError::Format(other),
        }
    }
}

/// What a snapshot file says about itself, before its records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotHeader {
    /// The state machine's revision: the last write in the file has it.
    pub revision: u64,
    pub meta: SnapshotMeta,
}

#[derive(Serialize, Deserialize)]
struct HeaderV2 {
    format: u32,
    revision: u64,
    meta: SnapshotMeta,
}

/// Writes a snapshot file record by record.
pub struct SnapshotWriter {
    out: backup::Writer<BufWriter<File>>,
}

impl SnapshotWriter {
    pub fn create(path: &Path, header: &SnapshotHeader) -> Result<SnapshotWriter, SnapshotError> {
        SnapshotWriter::from_file(File::create(path)?, header)
    }

    /// Writes into `file` (empty, positioned at its start), e.g. an unnamed temporary file.
    pub fn from_file(file: File, header: &SnapshotHeader) -> Result<SnapshotWriter, SnapshotError> {
        let header = serde_json::to_vec(&HeaderV2 {
            format: FORMAT,
            revision: header.revision,
            meta: header.meta.clone(),
        })
        .expect("snapshot header serializes");
        let out = backup::Writer::new(BufWriter::with_capacity(1 << 20, file), &header)?;
        Ok(SnapshotWriter { out })
    }

    pub fn record(&mut self, key: &[u8], value: &[u8]) -> Result<(), SnapshotError> {
        Ok(self.out.record(key, value)?)
    }

    /// Writes the trailer and syncs the file to disk; returns the record count.
    pub fn finish(self) -> Result<u64, SnapshotError> {
        self.finish_written().map(|w| w.records)
    }

    /// Like [`SnapshotWriter::finish`], with the file's size and whole-file checksum.
    pub fn finish_written(self) -> Result<Written, SnapshotError> {
        let (out, written) = self.out.finish()?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(written)
    }
}

fn header(version: Version, raw: &[u8]) -> Result<SnapshotHeader, SnapshotError> {
    let bad = |e: serde_json::Error| SnapshotError::Corrupt(format!("bad header: {e}"));
    Ok(match version {
        Version::V2 => {
            let v2: HeaderV2 = serde_json::from_slice(raw).map_err(bad)?;
            if v2.format != FORMAT {
                return Err(SnapshotError::Corrupt(format!(
                    "header says format {}, the magic bytes say {FORMAT}",
                    v2.format
                )));
            }
            SnapshotHeader {
                revision: v2.revision,
                meta: v2.meta,
            }
        }
        Version::V1 => {
            let meta: SnapshotMeta = serde_json::from_slice(raw).map_err(bad)?;
            SnapshotHeader {
                revision: meta.last_log_id.map_or(0, |l| l.index),
                meta,
            }
        }
    })
}

/// Reads a snapshot file: the header, then each record through `on_record`.
/// With `on_record` doing nothing this is a full verification pass.
pub fn read(
    path: &Path,
    on_record: impl FnMut(Vec<u8>, Vec<u8>) -> Result<(), SnapshotError>,
) -> Result<(SnapshotHeader, u64), SnapshotError> {
    backup::read_file(path, header, on_record)
}

/// Checks a whole snapshot file without applying it.
pub fn verify(path: &Path) -> Result<(SnapshotHeader, u64), SnapshotError> {
    read(path, |_, _| Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: None,
            last_membership: Default::default(),
            snapshot_id: "test".into(),
        }
    }

    fn header() -> SnapshotHeader {
        SnapshotHeader {
            revision: 42,
            meta: meta(),
        }
    }

    fn write_sample(path: &Path) {
        let mut w = SnapshotWriter::create(path, &header()).unwrap();
        w.record(b"a", b"1").unwrap();
        w.record(b"b/c", &[0, 255, 7]).unwrap();
        let written = w.finish_written().unwrap();
        assert_eq!(written.records, 2);
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(written.bytes, bytes.len() as u64);
        assert_eq!(written.file_crc32, crc32fast::hash(&bytes));
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        write_sample(&path);
        let mut seen = Vec::new();
        let (m, n) = read(&path, |k, v| {
            seen.push((k, v));
            Ok(())
        })
        .unwrap();
        assert_eq!(m, header());
        assert_eq!(n, 2);
        assert_eq!(seen[1], (b"b/c".to_vec(), vec![0, 255, 7]));
    }

    /// A backup from before format 2 still restores; its revision was the
    /// last applied log index.
    #[test]
    fn reads_format_1() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1");
        let mut meta = meta();
        meta.last_log_id = Some(crate::command::typ::LogId::new(
            openraft::CommittedLeaderId::new(3, 0),
            17,
        ));
        let json = serde_json::to_vec(&meta).unwrap();
        let body = cete_types::backup::format_1_file(&json, &[(b"k", b"v")]);
        std::fs::write(&path, &body).unwrap();
        let (header, records) = verify(&path).unwrap();
        assert_eq!((header.revision, records), (17, 1));
        assert_eq!(header.meta, meta);
    }

    #[test]
    fn every_truncation_and_bit_flip_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        write_sample(&path);
        let good = std::fs::read(&path).unwrap();
        let bad = dir.path().join("bad");
        for cut in 0..good.len() {
            std::fs::write(&bad, &good[..cut]).unwrap();
            assert!(verify(&bad).is_err(), "truncated at {cut} accepted");
        }
        for i in 0..good.len() {
            let mut flipped = good.clone();
            flipped[i] ^= 0x10;
            std::fs::write(&bad, &flipped).unwrap();
            assert!(verify(&bad).is_err(), "bit flip at {i} accepted");
        }
    }
}
