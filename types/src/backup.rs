//! The snapshot file format, shared by Raft snapshots and backups, and read
//! by the CLI to check a download before it keeps it.
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
//! installed: a file is verified in full, then applied.
//!
//! This module frames the file; the header's typed contents are the server's
//! (`cete-store`'s `snapshot.rs`). [`summary`] reads just what a client needs.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::Path;

use thiserror::Error;

const MAGIC: &[u8; 8] = b"CETESNP2";
const MAGIC_V1: &[u8; 8] = b"CETESNP1";
/// The format [`Writer`] writes; its header's `format` field says it too.
pub const FORMAT: u32 = 2;
const TAG_RECORD: u8 = 1;
const TAG_END: u8 = 0;
/// Keys are at most 4 KiB and values at most a few MiB; anything far beyond is corruption.
const MAX_FIELD: u32 = 1 << 30;

/// Which layout a file has, from its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The header is openraft's bare meta; the revision is its last log index.
    V1,
    /// The header is `{"format": 2, "revision": N, "meta": ...}`.
    V2,
}

#[derive(Debug, Error)]
pub enum FormatError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a Cete snapshot or backup (bad magic bytes)")]
    BadMagic,
    #[error("the file is truncated")]
    Truncated,
    #[error("the file is corrupt: {0}")]
    Corrupt(String),
    #[error("checksum mismatch: the file is corrupt")]
    Checksum,
}

struct Crc<T> {
    inner: T,
    crc: crc32fast::Hasher,
    len: u64,
}

impl<T> Crc<T> {
    fn new(inner: T) -> Crc<T> {
        Crc {
            inner,
            crc: crc32fast::Hasher::new(),
            len: 0,
        }
    }
}

impl<W: Write> Write for Crc<W> {
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

impl<R: Read> Read for Crc<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

/// Writes a file record by record, in the current format.
pub struct Writer<W: Write> {
    out: Crc<W>,
    records: u64,
}

/// What [`Writer::finish`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Key-value records.
    pub records: u64,
    /// Size of the whole file.
    pub bytes: u64,
    /// CRC-32 of the whole file, trailer included.
    pub file_crc32: u32,
}

impl<W: Write> Writer<W> {
    /// Starts a file with `header`, the header JSON.
    pub fn new(inner: W, header: &[u8]) -> std::io::Result<Writer<W>> {
        let mut out = Crc::new(inner);
        out.write_all(MAGIC)?;
        out.write_all(&field_len(header)?.to_be_bytes())?;
        out.write_all(header)?;
        Ok(Writer { out, records: 0 })
    }

    pub fn record(&mut self, key: &[u8], value: &[u8]) -> std::io::Result<()> {
        self.out.write_all(&[TAG_RECORD])?;
        self.out.write_all(&field_len(key)?.to_be_bytes())?;
        self.out.write_all(key)?;
        self.out.write_all(&field_len(value)?.to_be_bytes())?;
        self.out.write_all(value)?;
        self.records += 1;
        Ok(())
    }

    /// Writes the trailer; hands back the writer (to flush and sync) and what was written.
    pub fn finish(mut self) -> std::io::Result<(W, Written)> {
        self.out.write_all(&[TAG_END])?;
        self.out.write_all(&self.records.to_be_bytes())?;
        let crc = self.out.crc.clone().finalize().to_be_bytes();
        let mut whole = self.out.crc;
        whole.update(&crc);
        let mut inner = self.out.inner;
        inner.write_all(&crc)?;
        let written = Written {
            records: self.records,
            bytes: self.out.len + crc.len() as u64,
            file_crc32: whole.finalize(),
        };
        Ok((inner, written))
    }
}

fn field_len(field: &[u8]) -> std::io::Result<u32> {
    u32::try_from(field.len())
        .ok()
        .filter(|len| *len <= MAX_FIELD)
        .ok_or_else(|| std::io::Error::other(format!("a field of {} bytes", field.len())))
}

fn exact(r: &mut impl Read, buf: &mut [u8]) -> Result<(), FormatError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => FormatError::Truncated,
        _ => FormatError::Io(e),
    })
}

fn read_field(r: &mut impl Read) -> Result<Vec<u8>, FormatError> {
    let mut len = [0u8; 4];
    exact(r, &mut len)?;
    let len = u32::from_be_bytes(len);
    if len > MAX_FIELD {
        return Err(FormatError::Corrupt(format!(
            "field length {len} is implausible"
        )));
    }
    let mut buf = vec![0u8; len as usize];
    exact(r, &mut buf)?;
    Ok(buf)
}

/// Reads a whole file: the header through `on_header`, then each record
/// through `on_record`, then checks the trailer. With callbacks that do
/// nothing this is a full verification pass. Returns what `on_header` made
/// and the record count.
pub fn read<H, E: From<FormatError>>(
    reader: impl Read,
    on_header: impl FnOnce(Version, &[u8]) -> Result<H, E>,
    mut on_record: impl FnMut(Vec<u8>, Vec<u8>) -> Result<(), E>,
) -> Result<(H, u64), E> {
    let mut r = Crc::new(reader);
    let mut magic = [0u8; 8];
    exact(&mut r, &mut magic)?;
    let version = match &magic {
        MAGIC => Version::V2,
        MAGIC_V1 => Version::V1,
        _ => return Err(FormatError::BadMagic.into()),
    };
    let header = on_header(version, &read_field(&mut r)?)?;
    let mut records = 0u64;
    loop {
        let mut tag = [0u8; 1];
        exact(&mut r, &mut tag)?;
        match tag[0] {
            TAG_RECORD => {
                let key = read_field(&mut r)?;
                let value = read_field(&mut r)?;
                records += 1;
                on_record(key, value)?;
            }
            TAG_END => break,
            other => return Err(FormatError::Corrupt(format!("unknown record tag {other}")).into()),
        }
    }
    let mut count = [0u8; 8];
    exact(&mut r, &mut count)?;
    let expected_crc = r.crc.clone().finalize();
    let mut crc = [0u8; 4];
    exact(&mut r.inner, &mut crc)?;
    if u32::from_be_bytes(crc) != expected_crc {
        return Err(FormatError::Checksum.into());
    }
    if u64::from_be_bytes(count) != records {
        return Err(FormatError::Corrupt("record count mismatch".into()).into());
    }
    let mut rest = [0u8; 1];
    if r.inner.read(&mut rest).map_err(FormatError::Io)? != 0 {
        return Err(FormatError::Corrupt("trailing bytes after the end".into()).into());
    }
    Ok((header, records))
}

/// Reads the file at `path` with [`read`], buffered.
pub fn read_file<H, E: From<FormatError>>(
    path: &Path,
    on_header: impl FnOnce(Version, &[u8]) -> Result<H, E>,
    on_record: impl FnMut(Vec<u8>, Vec<u8>) -> Result<(), E>,
) -> Result<(H, u64), E> {
    let file = File::open(path).map_err(FormatError::Io)?;
    read(
        BufReader::with_capacity(1 << 20, file),
        on_header,
        on_record,
    )
}

/// What a valid file holds, as a client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// The revision the backup was taken at (0 if it has none).
    pub revision: u64,
    /// Key-value records.
    pub keys: u64,
}

/// Checks every part of the file at `path` and says what it holds.
pub fn summary(path: &Path) -> Result<Summary, FormatError> {
    let (revision, keys) = read_file(
        path,
        |version, header| {
            let header: serde_json::Value = serde_json::from_slice(header)
                .map_err(|e| FormatError::Corrupt(format!("bad header: {e}")))?;
            let pointer = match version {
                Version::V2 => "/revision",
                Version::V1 => "/last_log_id/index",
            };
            Ok::<_, FormatError>(
                header
                    .pointer(pointer)
                    .and_then(|r| r.as_u64())
                    .unwrap_or(0),
            )
        },
        |_, _| Ok(()),
    )?;
    Ok(Summary { revision, keys })
}

/// A file in format 1, as builds before format 2 wrote it: for the tests of
/// readers, here and in the server.
#[doc(hidden)]
pub fn format_1_file(meta_json: &[u8], records: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut body = MAGIC_V1.to_vec();
    let field = |body: &mut Vec<u8>, f: &[u8]| {
        body.extend_from_slice(&(f.len() as u32).to_be_bytes());
        body.extend_from_slice(f);
    };
    field(&mut body, meta_json);
    for (key, value) in records {
        body.push(TAG_RECORD);
        field(&mut body, key);
        field(&mut body, value);
    }
    body.push(TAG_END);
    body.extend_from_slice(&(records.len() as u64).to_be_bytes());
    let crc = crc32fast::hash(&body);
    body.extend_from_slice(&crc.to_be_bytes());
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &[u8] = br#"{"format":2,"revision":42,"meta":{"last_log_id":{"leader_id":{"term":2,"node_id":0},"index":97},"last_membership":{"log_id":null,"membership":{"configs":[],"nodes":{}}},"snapshot_id":"x"}}"#;

    fn sample() -> (Vec<u8>, Written) {
        let mut w = Writer::new(Vec::new(), HEADER).unwrap();
        w.record(b"a", b"1").unwrap();
        w.record(b"b/c", &[0, 255, 7]).unwrap();
        let (bytes, written) = w.finish().unwrap();
        (bytes, written)
    }

    #[test]
    fn what_is_written_reads_back() {
        let (bytes, written) = sample();
        assert_eq!(written.records, 2);
        assert_eq!(written.bytes, bytes.len() as u64);
        assert_eq!(written.file_crc32, crc32fast::hash(&bytes));
        let mut seen = Vec::new();
        let (header, n) = read(
            &bytes[..],
            |v, h| Ok::<_, FormatError>((v, h.to_vec())),
            |k, v| {
                seen.push((k, v));
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(header, (Version::V2, HEADER.to_vec()));
        assert_eq!(n, 2);
        assert_eq!(seen[1], (b"b/c".to_vec(), vec![0, 255, 7]));
    }

    #[test]
    fn every_truncation_and_bit_flip_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let (good, _) = sample();
        std::fs::write(&path, &good).unwrap();
        assert_eq!(
            summary(&path).unwrap(),
            Summary {
                revision: 42,
                keys: 2
            }
        );
        for cut in 0..good.len() {
            std::fs::write(&path, &good[..cut]).unwrap();
            assert!(summary(&path).is_err(), "truncated at {cut} accepted");
        }
        for i in 0..good.len() {
            let mut flipped = good.clone();
            flipped[i] ^= 0x10;
            std::fs::write(&path, &flipped).unwrap();
            assert!(summary(&path).is_err(), "bit flip at {i} accepted");
        }
    }

    /// Format 1 files: the revision is the meta's last log index.
    #[test]
    fn reads_format_1() {
        let meta = br#"{"last_log_id":{"leader_id":{"term":2,"node_id":0},"index":17},"last_membership":{"log_id":null,"membership":{"configs":[],"nodes":{}}},"snapshot_id":"x"}"#;
        let body = format_1_file(meta, &[(b"k", b"v")]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1");
        std::fs::write(&path, &body).unwrap();
        assert_eq!(
            summary(&path).unwrap(),
            Summary {
                revision: 17,
                keys: 1
            }
        );
    }
}
