//! Checks a backup file without the server: the snapshot format documented in
//! server/src/store/snapshot.rs (magic, meta, records, end tag, record count,
//! CRC-32 trailer). `cete snapshot save` runs it before it keeps a download.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

const MAGIC: &[u8; 8] = b"CETESNP2";
/// Format 1: the header is the bare meta, and the revision its last log index.
const MAGIC_V1: &[u8; 8] = b"CETESNP1";
const TAG_RECORD: u8 = 1;
const TAG_END: u8 = 0;
/// Same bound as the server's reader: larger lengths are corruption.
const MAX_FIELD: u32 = 1 << 30;

/// What a valid backup holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// The revision the backup was taken at (0 if it has none).
    pub revision: u64,
    /// Key-value records.
    pub keys: u64,
}

/// Why a file is not a valid backup.
#[derive(Debug)]
pub enum Invalid {
    Io(std::io::Error),
    Truncated,
    Corrupt(String),
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::Io(e) => write!(f, "cannot read the backup: {e}"),
            Invalid::Truncated => f.write_str("the backup is truncated"),
            Invalid::Corrupt(why) => write!(f, "the backup is corrupt: {why}"),
        }
    }
}

impl std::error::Error for Invalid {}

struct CrcReader<R> {
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

fn exact(r: &mut impl Read, buf: &mut [u8]) -> Result<(), Invalid> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => Invalid::Truncated,
        _ => Invalid::Io(e),
    })
}

fn length(r: &mut impl Read) -> Result<usize, Invalid> {
    let mut buf = [0u8; 4];
    exact(r, &mut buf)?;
    let len = u32::from_be_bytes(buf);
    if len > MAX_FIELD {
        return Err(Invalid::Corrupt(format!(
            "field length {len} is implausible"
        )));
    }
    Ok(len as usize)
}

/// Skips a length-prefixed field without holding it (values can be large).
fn skip_field(r: &mut impl Read) -> Result<(), Invalid> {
    let len = length(r)? as u64;
    let copied = std::io::copy(&mut r.take(len), &mut std::io::sink()).map_err(Invalid::Io)?;
    if copied < len {
        return Err(Invalid::Truncated);
    }
    Ok(())
}

/// Reads the whole file and checks every part of it.
pub fn verify(path: &Path) -> Result<Summary, Invalid> {
    let file = File::open(path).map_err(Invalid::Io)?;
    let mut r = CrcReader {
        inner: BufReader::with_capacity(1 << 20, file),
        crc: crc32fast::Hasher::new(),
    };
    let mut magic = [0u8; 8];
    exact(&mut r, &mut magic)?;
    let pointer = match &magic {
        MAGIC => "/revision",
        MAGIC_V1 => "/last_log_id/index",
        _ => {
            return Err(Invalid::Corrupt(
                "not a Cete backup (bad magic bytes)".into(),
            ))
        }
    };
    let mut meta = vec![0u8; length(&mut r)?];
    exact(&mut r, &mut meta)?;
    let meta: serde_json::Value =
        serde_json::from_slice(&meta).map_err(|e| Invalid::Corrupt(format!("bad meta: {e}")))?;
    let revision = meta
        .pointer(pointer)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    let mut keys = 0u64;
    loop {
        let mut tag = [0u8; 1];
        exact(&mut r, &mut tag)?;
        match tag[0] {
            TAG_RECORD => {
                skip_field(&mut r)?;
                skip_field(&mut r)?;
                keys += 1;
            }
            TAG_END => break,
            other => return Err(Invalid::Corrupt(format!("unknown record tag {other}"))),
        }
    }
    let mut count = [0u8; 8];
    exact(&mut r, &mut count)?;
    let expected = r.crc.clone().finalize();
    let mut crc = [0u8; 4];
    exact(&mut r.inner, &mut crc)?;
    if u32::from_be_bytes(crc) != expected {
        return Err(Invalid::Corrupt("checksum mismatch".into()));
    }
    if u64::from_be_bytes(count) != keys {
        return Err(Invalid::Corrupt("record count mismatch".into()));
    }
    let mut rest = [0u8; 1];
    if r.inner.read(&mut rest).map_err(Invalid::Io)? != 0 {
        return Err(Invalid::Corrupt("trailing bytes after the end".into()));
    }
    Ok(Summary { revision, keys })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backup laid out by hand, as the server writes it.
    fn sample() -> Vec<u8> {
        let meta = br#"{"format":2,"revision":42,"meta":{"last_log_id":{"leader_id":{"term":2,"node_id":0},"index":97},"last_membership":{"log_id":null,"membership":{"configs":[],"nodes":{}}},"snapshot_id":"x"}}"#;
        sample_of(MAGIC, meta)
    }

    fn sample_of(magic: &[u8], meta: &[u8]) -> Vec<u8> {
        let mut out = magic.to_vec();
        out.extend((meta.len() as u32).to_be_bytes());
        out.extend(meta);
        for (k, v) in [(&b"a"[..], &b"1"[..]), (b"b/c", &[0, 255, 7])] {
            out.push(TAG_RECORD);
            out.extend((k.len() as u32).to_be_bytes());
            out.extend(k);
            out.extend((v.len() as u32).to_be_bytes());
            out.extend(v);
        }
        out.push(TAG_END);
        out.extend(2u64.to_be_bytes());
        let crc = crc32fast::hash(&out);
        out.extend(crc.to_be_bytes());
        out
    }

    #[test]
    fn reads_a_valid_backup() {
        let dir = std::env::temp_dir().join(format!("cete-backup-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ok");
        std::fs::write(&path, sample()).unwrap();
        assert_eq!(
            verify(&path).unwrap(),
            Summary {
                revision: 42,
                keys: 2
            }
        );
        let good = sample();
        for cut in 0..good.len() {
            std::fs::write(&path, &good[..cut]).unwrap();
            assert!(verify(&path).is_err(), "truncated at {cut} accepted");
        }
        for i in 0..good.len() {
            let mut flipped = good.clone();
            flipped[i] ^= 0x04;
            std::fs::write(&path, &flipped).unwrap();
            assert!(verify(&path).is_err(), "flip at {i} accepted");
        }
        // Format 1: the revision was the last log index.
        let v1 = br#"{"last_log_id":{"leader_id":{"term":2,"node_id":0},"index":42},"last_membership":{"log_id":null,"membership":{"configs":[],"nodes":{}}},"snapshot_id":"x"}"#;
        std::fs::write(&path, sample_of(MAGIC_V1, v1)).unwrap();
        assert_eq!(verify(&path).unwrap().revision, 42);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
