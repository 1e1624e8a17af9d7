//! The snapshot file format, shared by Raft snapshots and backups.
//!
//! ```text
//! "CETESNP2"                      magic, 8 bytes (format 2)
//! u32 BE length | header JSON     {"format": 2, "revision": N, "meta": openraft's
//!                                 SnapshotMeta (last log id, membership, id)}
//! repeated: 0x01 | u32 BE key length | key | u32 BE value length | encoded value
//! 0x00 | u64 BE record count | u32 BE CRC-32 of every byte before the CRC
//! ```
//! Format 1 (`CETESNP1`, before revisions were the state machine's own) is
//! still read, so that its backups restore: its header is the bare meta JSON,
//! and its revision was the last applied log index.
//! The trailer makes truncation and corruption detectable before anything is
//! installed: a snapshot is verified in full, then applied.
//!
//! A backup (`GET /v1/snapshot`, `cete snapshot save`, `cete-server --restore`)
//! is exactly this file, built from a RocksDB snapshot of the applied state:
//! the header's `revision` is the backup's revision (every write with a
//! revision up to it is in the file, none after), its membership is the
//! cluster's at that point (a restore replaces it with the restored node
//! alone). Over HTTP it travels with `X-Cete-Revision`, `X-Cete-Keys` and
//! `X-Cete-Checksum: crc32:<8 hex digits>`, the CRC-32 of the whole file
//! (trailer included), so a client can check the transfer before it checks
//! the format. The CLI's reader (cli/src/backup_file.rs) follows this layout.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::raft::typ::SnapshotMeta;

const MAGIC: &[u8; 8] = b"CETESNP2";
const MAGIC_V1: &[u8; 8] = b"CETESNP1";
const FORMAT: u32 = 2;
const TAG_RECORD: u8 = 1;
const TAG_END: u8 = 0;
/// Keys are at most 4 KiB and values at most a few MiB; anything far beyond is corruption.
const MAX_FIELD: u32 = 1 << 30;

#[derive(Debug, Error)]
pub enum SnapshotError {
    #[error("snapshot I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a Cete snapshot (bad magic bytes)")]
    BadMagic,
    #[error("snapshot is truncated")]
    Truncated,
    #[error("snapshot is corrupt: {0}")]
    Corrupt(String),
    #[error("snapshot checksum mismatch: the file is corrupt")]
    Checksum,
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

struct CrcWriter<W: Write> {
    inner: W,
    crc: crc32fast::Hasher,
    len: u64,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes a snapshot file record by record.
pub struct SnapshotWriter {
    out: CrcWriter<BufWriter<File>>,
    records: u64,
}

/// What [`SnapshotWriter::finish_written`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Key-value records.
    pub records: u64,
    /// Size of the whole file.
    pub bytes: u64,
    /// CRC-32 of the whole file, trailer included.
    pub file_crc32: u32,
}

impl SnapshotWriter {
    pub fn create(path: &Path, header: &SnapshotHeader) -> Result<SnapshotWriter, SnapshotError> {
        SnapshotWriter::from_file(File::create(path)?, header)
    }

    /// Writes into `file` (empty, positioned at its start), e.g. an unnamed temporary file.
    pub fn from_file(file: File, header: &SnapshotHeader) -> Result<SnapshotWriter, SnapshotError> {
        let mut out = CrcWriter {
            inner: BufWriter::with_capacity(1 << 20, file),
            crc: crc32fast::Hasher::new(),
            len: 0,
        };
        out.write_all(MAGIC)?;
        let meta = serde_json::to_vec(&HeaderV2 {
            format: FORMAT,
            revision: header.revision,
            meta: header.meta.clone(),
        })
        .expect("snapshot header serializes");
        out.write_all(&(meta.len() as u32).to_be_bytes())?;
        out.write_all(&meta)?;
        Ok(SnapshotWriter { out, records: 0 })
    }

    pub fn record(&mut self, key: &[u8], value: &[u8]) -> Result<(), SnapshotError> {
        self.out.write_all(&[TAG_RECORD])?;
        self.out.write_all(&(key.len() as u32).to_be_bytes())?;
        self.out.write_all(key)?;
        self.out.write_all(&(value.len() as u32).to_be_bytes())?;
        self.out.write_all(value)?;
        self.records += 1;
        Ok(())
    }

    /// Writes the trailer and syncs the file to disk; returns the record count.
    pub fn finish(self) -> Result<u64, SnapshotError> {
        self.finish_written().map(|w| w.records)
    }

    /// Like [`SnapshotWriter::finish`], with the file's size and whole-file checksum.
    pub fn finish_written(mut self) -> Result<Written, SnapshotError> {
        self.out.write_all(&[TAG_END])?;
        self.out.write_all(&self.records.to_be_bytes())?;
        let crc = self.out.crc.clone().finalize().to_be_bytes();
        let mut whole = self.out.crc;
        whole.update(&crc);
        let mut file = self.out.inner.into_inner().map_err(|e| e.into_error())?;
        file.write_all(&crc)?;
        file.sync_all()?;
        Ok(Written {
            records: self.records,
            bytes: self.out.len + crc.len() as u64,
            file_crc32: whole.finalize(),
        })
    }
}

struct CrcReader<R: Read> {
    inner: R,
    crc: crc32fast::Hasher,
}

impl<R: Read> Read for CrcReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
}

fn read_exact(r: &mut impl Read, buf: &mut [u8]) -> Result<(), SnapshotError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => SnapshotError::Truncated,
        _ => SnapshotError::Io(e),
    })
}

fn read_u32(r: &mut impl Read) -> Result<u32, SnapshotError> {
    let mut buf = [0u8; 4];
    read_exact(r, &mut buf)?;
    Ok(u32::from_be_bytes(buf))
}

fn read_field(r: &mut impl Read) -> Result<Vec<u8>, SnapshotError> {
    let len = read_u32(r)?;
    if len > MAX_FIELD {
        return Err(SnapshotError::Corrupt(format!(
            "field length {len} is implausible"
        )));
    }
    let mut buf = vec![0u8; len as usize];
    read_exact(r, &mut buf)?;
    Ok(buf)
}

/// Reads a snapshot file: the meta, then each record through `on_record`.
/// With `on_record` doing nothing this is a full verification pass.
pub fn read(
    path: &Path,
    mut on_record: impl FnMut(Vec<u8>, Vec<u8>) -> Result<(), SnapshotError>,
) -> Result<(SnapshotHeader, u64), SnapshotError> {
    let file = File::open(path)?;
    let mut r = CrcReader {
        inner: BufReader::with_capacity(1 << 20, file),
        crc: crc32fast::Hasher::new(),
    };
    let mut magic = [0u8; 8];
    read_exact(&mut r, &mut magic)?;
    let meta_raw = read_field_after_magic(&mut r, &magic)?;
    let bad = |e: serde_json::Error| SnapshotError::Corrupt(format!("bad header: {e}"));
    let header = if &magic == MAGIC {
        let v2: HeaderV2 = serde_json::from_slice(&meta_raw).map_err(bad)?;
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
    } else {
        let meta: SnapshotMeta = serde_json::from_slice(&meta_raw).map_err(bad)?;
        SnapshotHeader {
            revision: meta.last_log_id.map_or(0, |l| l.index),
            meta,
        }
    };
    let mut records = 0u64;
    loop {
        let mut tag = [0u8; 1];
        read_exact(&mut r, &mut tag)?;
        match tag[0] {
            TAG_RECORD => {
                let key = read_field(&mut r)?;
                let value = read_field(&mut r)?;
                records += 1;
                on_record(key, value)?;
            }
            TAG_END => break,
            other => {
                return Err(SnapshotError::Corrupt(format!(
                    "unknown record tag {other}"
                )))
            }
        }
    }
    let mut count = [0u8; 8];
    read_exact(&mut r, &mut count)?;
    let expected_crc = r.crc.clone().finalize();
    let mut crc = [0u8; 4];
    read_exact(&mut r.inner, &mut crc)?;
    if u32::from_be_bytes(crc) != expected_crc {
        return Err(SnapshotError::Checksum);
    }
    if u64::from_be_bytes(count) != records {
        return Err(SnapshotError::Corrupt("record count mismatch".into()));
    }
    let mut rest = [0u8; 1];
    if r.inner.read(&mut rest)? != 0 {
        return Err(SnapshotError::Corrupt(
            "trailing bytes after the end".into(),
        ));
    }
    Ok((header, records))
}

/// The header field, once the magic bytes name a format this build reads.
fn read_field_after_magic(r: &mut impl Read, magic: &[u8; 8]) -> Result<Vec<u8>, SnapshotError> {
    if magic != MAGIC && magic != MAGIC_V1 {
        return Err(SnapshotError::BadMagic);
    }
    read_field(r)
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
        meta.last_log_id = Some(crate::raft::typ::LogId::new(
            openraft::CommittedLeaderId::new(3, 0),
            17,
        ));
        let mut body = MAGIC_V1.to_vec();
        let json = serde_json::to_vec(&meta).unwrap();
        body.extend_from_slice(&(json.len() as u32).to_be_bytes());
        body.extend_from_slice(&json);
        body.push(TAG_RECORD);
        for field in [&b"k"[..], &b"v"[..]] {
            body.extend_from_slice(&(field.len() as u32).to_be_bytes());
            body.extend_from_slice(field);
        }
        body.push(TAG_END);
        body.extend_from_slice(&1u64.to_be_bytes());
        let crc = crc32fast::hash(&body);
        body.extend_from_slice(&crc.to_be_bytes());
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
