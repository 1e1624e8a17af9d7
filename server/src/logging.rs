//! Process-wide logging: `log` macros rendered by env_logger to stderr, stdout or a
//! size-rotated file with lumberjack semantics (the original Cete used zap + lumberjack).
//!
//! Filter: the configured level is the default for every target. If `RUST_LOG` is set in the
//! environment it wins entirely (so `RUST_LOG=cete_server=debug,openraft=info` works for
//! debugging without touching the config).

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use log::LevelFilter;

/// What `init` needs from the configuration (built by `Config::log_settings`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// Level name as accepted by [`parse_level`].
    pub level: String,
    /// `None`, `""` or `/dev/stderr`: stderr; `/dev/stdout`: stdout; else a rotating file.
    pub file: Option<PathBuf>,
    /// Rotate the file once it would grow beyond this many megabytes.
    pub max_size_mb: u64,
    /// Rotated files to keep; 0 keeps all.
    pub max_backups: u32,
    /// Delete rotated files older than this many days; 0 means no age limit.
    pub max_age_days: u32,
    /// Gzip rotated files.
    pub compress: bool,
}

impl LogSettings {
    /// Whether log records go to stderr (the default).
    pub fn logs_to_stderr(&self) -> bool {
        matches!(destination(self.file.as_deref()), Destination::Stderr)
    }

    /// The rotation policy for the file target, with the size converted to bytes.
    pub fn rotation(&self) -> Rotation {
        Rotation {
            max_bytes: self.max_size_mb.saturating_mul(1024 * 1024),
            max_backups: self.max_backups,
            max_age_days: self.max_age_days,
            compress: self.compress,
        }
    }
}

/// Errors from [`init`]; each names the setting the operator has to fix.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("invalid log level {0:?} for --log-level (CETE_LOG_LEVEL, log_level): expected one of error, warn, info, debug, trace, off")]
    InvalidLevel(String),
    #[error("cannot open log file {path:?} for --log-file (CETE_LOG_FILE, log_file): {source}")]
    LogFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("a logger is already installed: {0}")]
    AlreadyInitialized(#[from] log::SetLoggerError),
}

/// Parses a level name case-insensitively. `err`/`error` are Error and `warning` is Warn
/// (the original accepted these spellings, but mapped ERROR to Warn by mistake).
pub fn parse_level(name: &str) -> Option<LevelFilter> {
    match name.trim().to_ascii_lowercase().as_str() {
        "err" | "error" => Some(LevelFilter::Error),
        "warn" | "warning" => Some(LevelFilter::Warn),
        "info" => Some(LevelFilter::Info),
        "debug" => Some(LevelFilter::Debug),
        "trace" => Some(LevelFilter::Trace),
        "off" => Some(LevelFilter::Off),
        _ => None,
    }
}

/// Where log records go, decided from the `log_file` setting.
enum Destination<'a> {
    Stderr,
    Stdout,
    File(&'a Path),
}

fn destination(file: Option<&Path>) -> Destination<'_> {
    match file {
        None => Destination::Stderr,
        Some(p) if p.as_os_str().is_empty() || p == Path::new("/dev/stderr") => Destination::Stderr,
        Some(p) if p == Path::new("/dev/stdout") => Destination::Stdout,
        Some(p) => Destination::File(p),
    }
}

/// Installs the global logger. Call once, early in `main`.
///
/// Records look like `[2026-11-29T12:00:00.123Z INFO  cete_server::raft] message`.
/// `RUST_LOG`, when set, replaces the configured level as the filter.
pub fn init(cfg: &LogSettings) -> Result<(), LoggingError> {
    let level =
        parse_level(&cfg.level).ok_or_else(|| LoggingError::InvalidLevel(cfg.level.clone()))?;
    // openraft narrates every vote and append one level below ours; keep it
    // a level quieter unless tracing everything.
    // tracing's span enter/exit records (target `tracing::span`) are noise.
    let default_filter = match level {
        log::LevelFilter::Info => "info,openraft=warn,tracing::span=off".to_string(),
        log::LevelFilter::Debug => "debug,openraft=info,tracing::span=off".to_string(),
        other => format!(
            "{},tracing::span=off",
            other.to_string().to_ascii_lowercase()
        ),
    };
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_filter));
    builder.format_timestamp_millis();
    match destination(cfg.file.as_deref()) {
        Destination::Stderr => {
            builder.target(env_logger::Target::Stderr);
        }
        Destination::Stdout => {
            builder.target(env_logger::Target::Stdout);
        }
        Destination::File(path) => {
            let file = RotatingFile::open(path, cfg.rotation()).map_err(|source| {
                LoggingError::LogFile {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
            // A file must never receive terminal colour codes.
            builder
                .target(env_logger::Target::Pipe(Box::new(file)))
                .write_style(env_logger::WriteStyle::Never);
        }
    }
    builder.try_init()?;
    Ok(())
}

/// Limits for a [`RotatingFile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate before a write would make the active file larger than this.
    pub max_bytes: u64,
    /// Rotated files to keep, newest first; 0 keeps all.
    pub max_backups: u32,
    /// Rotated files older than this (by the timestamp in their name) are deleted; 0: no limit.
    pub max_age_days: u32,
    /// Gzip rotated files to `<name>.gz` in the background.
    pub compress: bool,
}

/// A log file with lumberjack semantics.
///
/// The active file is always the configured path. When a write would take it past
/// `max_bytes`, it is renamed to `<stem>-<UTC yyyy-mm-ddTHH-MM-SS.mmm><.ext>` beside it and a
/// fresh file is opened. Compression and pruning of old backups run on a background thread so
/// a log call never waits for gzip. One write is never split: a single record larger than
/// `max_bytes` goes whole into a fresh file.
///
/// env_logger's `Target::Pipe` wraps the writer in its own `Mutex`, so this type needs only
/// `Send`.
pub struct RotatingFile {
    path: PathBuf,
    rotation: Rotation,
    file: Option<File>,
    size: u64,
    /// Time in the newest backup name we made, so names keep rotation order even when the
    /// clock stands still or steps back.
    last_backup: Option<SystemTime>,
    maintenance: mpsc::Sender<Job>,
}

/// Work for the background maintenance thread.
enum Job {
    /// Compress and prune backups.
    Run,
    /// Reply once every earlier job is done (lets tests wait for the thread).
    Barrier(mpsc::Sender<()>),
}

impl RotatingFile {
    /// Opens (appending) or creates the file at `path`, creating its parent directory, and
    /// starts its maintenance thread, which first tidies backups left by an earlier run.
    pub fn open(path: impl Into<PathBuf>, rotation: Rotation) -> io::Result<RotatingFile> {
        let path = path.into();
        let names = BackupNames::for_path(&path)?;
        let mut this = RotatingFile {
            path,
            rotation,
            file: None,
            size: 0,
            last_backup: None,
            maintenance: spawn_maintenance(names, rotation)?,
        };
        this.open_active()?;
        // Backups from an earlier run may be over the limits or still uncompressed.
        this.request_maintenance();
        Ok(this)
    }

    /// Blocks until the background thread has finished all compression and pruning asked
    /// for so far. Logging never needs this; tests and shutdown code may.
    pub fn wait_for_maintenance(&self) {
        let (tx, rx) = mpsc::channel();
        if self.maintenance.send(Job::Barrier(tx)).is_ok() {
            let _ = rx.recv();
        }
    }

    fn open_active(&mut self) -> io::Result<()> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = file.metadata()?.len();
        self.file = Some(file);
        Ok(())
    }

    /// Moves the active file aside under a timestamped name and opens a fresh one.
    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        let names = BackupNames::for_path(&self.path)?;
        let now = SystemTime::now();
        let earliest = match self.last_backup {
            Some(last) => now.max(last + Duration::from_millis(1)),
            None => now,
        };
        let backup = names.free_backup_path(earliest);
        self.last_backup = names.parse_path(&backup).map(|(time, _)| time);
        match fs::rename(&self.path, &backup) {
            Ok(()) => {}
            // Someone removed the active file; there is nothing to keep.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.open_active()?;
        self.request_maintenance();
        Ok(())
    }

    fn request_maintenance(&self) {
        // The thread only stops when `self` is dropped, so a send cannot fail meaningfully.
        let _ = self.maintenance.send(Job::Run);
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let len = buf.len() as u64;
        if self.file.is_none() {
            self.open_active()?;
        }
        if self.size > 0 && self.size.saturating_add(len) > self.rotation.max_bytes {
            self.rotate()?;
        }
        let file = self.file.as_mut().expect("active file is open");
        file.write_all(buf)?;
        self.size += len;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

fn spawn_maintenance(names: BackupNames, rotation: Rotation) -> io::Result<mpsc::Sender<Job>> {
    let (tx, rx) = mpsc::channel::<Job>();
    thread::Builder::new()
        .name("cete-log-rotate".into())
        .spawn(move || {
            for job in rx {
                match job {
                    Job::Run => {
                        if let Err(e) = names.maintain(rotation, SystemTime::now()) {
                            // The logger cannot log about itself; stderr is the only place left.
                            eprintln!("cete: log file maintenance failed: {e}");
                        }
                    }
                    Job::Barrier(done) => {
                        let _ = done.send(());
                    }
                }
            }
        })?;
    Ok(tx)
}

/// How backups of one log file are named: `<dir>/<stem>-<timestamp><ext>[.gz]`.
#[derive(Debug, Clone)]
struct BackupNames {
    dir: PathBuf,
    /// File name without its extension, e.g. `cete` for `cete.log`.
    stem: String,
    /// Extension with its dot, e.g. `.log`, or empty.
    ext: String,
}

/// One rotated file found on disk.
#[derive(Debug)]
struct Backup {
    path: PathBuf,
    /// Time of rotation, from the name.
    time: SystemTime,
    compressed: bool,
}

impl BackupNames {
    fn for_path(path: &Path) -> io::Result<BackupNames> {
        let name = path
            .file_name()
            .and_then(OsStr::to_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "log file path must end in a UTF-8 file name",
                )
            })?;
        let (stem, ext) = match path.extension().and_then(OsStr::to_str) {
            Some(ext) => (&name[..name.len() - ext.len() - 1], format!(".{ext}")),
            None => (name, String::new()),
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Ok(BackupNames {
            dir,
            stem: stem.to_string(),
            ext,
        })
    }

    fn backup_path(&self, time: SystemTime) -> PathBuf {
        self.dir.join(format!(
            "{}-{}{}",
            self.stem,
            format_timestamp(time),
            self.ext
        ))
    }

    /// A backup name for `time` that neither an uncompressed nor a compressed backup uses
    /// yet; on a clash the timestamp moves forward a millisecond, which keeps names sortable.
    fn free_backup_path(&self, mut time: SystemTime) -> PathBuf {
        loop {
            let path = self.backup_path(time);
            if !path.exists() && !gz_path(&path).exists() {
                return path;
            }
            time += Duration::from_millis(1);
        }
    }

    fn parse_path(&self, path: &Path) -> Option<(SystemTime, bool)> {
        self.parse(path.file_name()?.to_str()?)
    }

    /// Parses a directory entry's name as one of our backups.
    fn parse(&self, file_name: &str) -> Option<(SystemTime, bool)> {
        let (name, compressed) = match file_name.strip_suffix(".gz") {
            Some(n) => (n, true),
            None => (file_name, false),
        };
        let stamp = name
            .strip_prefix(self.stem.as_str())?
            .strip_prefix('-')?
            .strip_suffix(self.ext.as_str())?;
        Some((parse_timestamp(stamp)?, compressed))
    }

    fn list(&self) -> io::Result<Vec<Backup>> {
        let mut backups = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if let Some((time, compressed)) = self.parse(&name) {
                backups.push(Backup {
                    path: entry.path(),
                    time,
                    compressed,
                });
            }
        }
        // Newest first; the compressed copy sorts beside its original.
        backups.sort_by(|a, b| b.time.cmp(&a.time).then(a.compressed.cmp(&b.compressed)));
        Ok(backups)
    }

    /// Deletes backups beyond the count and age limits, then compresses the survivors.
    fn maintain(&self, rotation: Rotation, now: SystemTime) -> io::Result<()> {
        let max_age = Duration::from_secs(u64::from(rotation.max_age_days) * 24 * 60 * 60);
        // After an interrupted compression a backup exists both plain and as .gz; the two
        // share a timestamp and count as one.
        let mut seen = 0usize;
        let mut current: Option<SystemTime> = None;
        let mut drop_current = false;
        for backup in self.list()? {
            if current != Some(backup.time) {
                current = Some(backup.time);
                seen += 1;
                let too_old = rotation.max_age_days > 0
                    && now.duration_since(backup.time).unwrap_or_default() > max_age;
                let too_many = rotation.max_backups > 0 && seen > rotation.max_backups as usize;
                drop_current = too_old || too_many;
            }
            if drop_current {
                remove_if_present(&backup.path)?;
            } else if rotation.compress && !backup.compressed {
                compress(&backup.path)?;
            }
        }
        Ok(())
    }
}

fn gz_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".gz");
    PathBuf::from(name)
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Gzips `path` to `path.gz` through a temporary name, so a crash never leaves a truncated
/// `.gz` that looks complete, then removes the original.
fn compress(path: &Path) -> io::Result<()> {
    let target = gz_path(path);
    let mut tmp_name = target.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let result = (|| {
        let mut input = File::open(path)?;
        let output = File::create(&tmp)?;
        let mut encoder = flate2::write::GzEncoder::new(output, flate2::Compression::default());
        io::copy(&mut input, &mut encoder)?;
        encoder.finish()?.sync_all()?;
        fs::rename(&tmp, &target)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    remove_if_present(path)
}

const MILLIS_PER_DAY: u64 = 24 * 60 * 60 * 1000;

/// Formats `time` as UTC `yyyy-mm-ddTHH-MM-SS.mmm` (lumberjack's backup format; no colons,
/// so the name is valid everywhere).
fn format_timestamp(time: SystemTime) -> String {
    let millis = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let (days, ms_of_day) = (millis / MILLIS_PER_DAY, millis % MILLIS_PER_DAY);
    let (y, m, d) = civil_from_days(days as i64);
    let secs = ms_of_day / 1000;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}-{:02}-{:02}.{:03}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        ms_of_day % 1000
    )
}

/// Inverse of [`format_timestamp`]; `None` for anything that is not exactly that shape.
fn parse_timestamp(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    let shape_ok = b.len() == 23
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 | 13 | 16 => *c == b'-',
            10 => *c == b'T',
            19 => *c == b'.',
            _ => c.is_ascii_digit(),
        });
    if !shape_ok {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s[r].parse::<u64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec, ms) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..23)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let days = u64::try_from(days_from_civil(y as i64, mo as u32, d as u32)).ok()?;
    let millis = days * MILLIS_PER_DAY + ((h * 60 + mi) * 60 + sec) * 1000 + ms;
    Some(UNIX_EPOCH + Duration::from_millis(millis))
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// (year, month, day) to days since 1970-01-01; inverse of [`civil_from_days`].
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn rotation(max_bytes: u64, max_backups: u32, compress: bool) -> Rotation {
        Rotation {
            max_bytes,
            max_backups,
            max_age_days: 0,
            compress,
        }
    }

    /// Names of the files in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    fn backups(dir: &Path) -> Vec<String> {
        names(dir)
            .into_iter()
            .filter(|n| n.starts_with("cete-"))
            .collect()
    }

    #[test]
    fn timestamps_round_trip_and_match_known_dates() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_953_600_123); // 2026-11-29T12:00:00.123Z
        assert_eq!(format_timestamp(t), "2026-11-29T12-00-00.123");
        assert_eq!(parse_timestamp("2026-11-29T12-00-00.123"), Some(t));
        assert_eq!(format_timestamp(UNIX_EPOCH), "1970-01-01T00-00-00.000");
        let leap = parse_timestamp("2024-02-29T23-59-59.999").unwrap();
        assert_eq!(format_timestamp(leap), "2024-02-29T23-59-59.999");
        for bad in [
            "2026-11-29T12:00:00.123",
            "2026-13-01T00-00-00.000",
            "x",
            "",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn parse_level_accepts_spellings_case_insensitively() {
        assert_eq!(parse_level("ERR"), Some(LevelFilter::Error));
        assert_eq!(parse_level("Error"), Some(LevelFilter::Error));
        assert_eq!(parse_level("WARNING"), Some(LevelFilter::Warn));
        assert_eq!(parse_level(" info "), Some(LevelFilter::Info));
        assert_eq!(parse_level("off"), Some(LevelFilter::Off));
        assert_eq!(parse_level("verbose"), None);
    }

    #[test]
    fn destination_follows_original_special_names() {
        assert!(matches!(destination(None), Destination::Stderr));
        assert!(matches!(
            destination(Some(Path::new(""))),
            Destination::Stderr
        ));
        assert!(matches!(
            destination(Some(Path::new("/dev/stderr"))),
            Destination::Stderr
        ));
        assert!(matches!(
            destination(Some(Path::new("/dev/stdout"))),
            Destination::Stdout
        ));
        assert!(matches!(
            destination(Some(Path::new("/var/log/cete.log"))),
            Destination::File(_)
        ));
    }

    #[test]
    fn rotates_when_a_write_would_exceed_max_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/cete.log"); // parent is created
        let mut f = RotatingFile::open(&path, rotation(30, 0, false)).unwrap();
        f.write_all(b"line 1 ..........\n").unwrap(); // 18 bytes
        f.write_all(b"line 2 ..........\n").unwrap(); // would be 36 > 30: rotate first
        f.wait_for_maintenance();
        assert_eq!(fs::read_to_string(&path).unwrap(), "line 2 ..........\n");
        let b = backups(&dir.path().join("logs"));
        assert_eq!(b.len(), 1, "{b:?}");
        assert!(b[0].ends_with(".log"), "{b:?}");
        let old = fs::read_to_string(dir.path().join("logs").join(&b[0])).unwrap();
        assert_eq!(old, "line 1 ..........\n");
    }

    #[test]
    fn oversized_single_write_is_kept_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cete.log");
        let mut f = RotatingFile::open(&path, rotation(4, 0, false)).unwrap();
        f.write_all(b"0123456789\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "0123456789\n");
    }

    #[test]
    fn reopening_appends_and_counts_existing_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cete.log");
        fs::write(&path, "0123456789\n").unwrap();
        let mut f = RotatingFile::open(&path, rotation(15, 0, false)).unwrap();
        f.write_all(b"abcdefghij\n").unwrap();
        f.wait_for_maintenance();
        assert_eq!(fs::read_to_string(&path).unwrap(), "abcdefghij\n");
        assert_eq!(backups(dir.path()).len(), 1);
    }

    #[test]
    fn backups_are_capped_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cete.log");
        let mut f = RotatingFile::open(&path, rotation(10, 2, false)).unwrap();
        for i in 0..6 {
            f.write_all(format!("line {i} ..\n").as_bytes()).unwrap(); // 10 bytes each
        }
        f.wait_for_maintenance();
        let b = backups(dir.path());
        assert_eq!(b.len(), 2, "{b:?}");
        // Names sort by time, so these are the two newest: lines 3 and 4.
        let contents: Vec<String> = b
            .iter()
            .map(|n| fs::read_to_string(dir.path().join(n)).unwrap())
            .collect();
        assert_eq!(contents, ["line 3 ..\n", "line 4 ..\n"]);
        assert_eq!(fs::read_to_string(&path).unwrap(), "line 5 ..\n");
    }

    #[test]
    fn compressed_backups_are_valid_gzip_with_the_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cete.log");
        let mut f = RotatingFile::open(&path, rotation(20, 0, true)).unwrap();
        f.write_all(b"first line\n").unwrap();
        f.write_all(b"second line\n").unwrap(); // 11 + 12 > 20: rotate
        f.wait_for_maintenance();
        let b = backups(dir.path());
        assert_eq!(b.len(), 1, "{b:?}");
        assert!(b[0].ends_with(".log.gz"), "{b:?}");
        let mut text = String::new();
        flate2::read::GzDecoder::new(File::open(dir.path().join(&b[0])).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "first line\n");
        assert_eq!(
            names(dir.path()).len(),
            2,
            "no leftover uncompressed or tmp file"
        );
    }

    #[test]
    fn backups_older_than_max_age_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cete.log");
        let old = dir.path().join("cete-2000-01-01T00-00-00.000.log");
        let old_gz = dir.path().join("cete-2000-01-02T00-00-00.000.log.gz");
        let unrelated = dir.path().join("other-2000-01-01T00-00-00.000.log");
        for p in [&old, &old_gz, &unrelated] {
            fs::write(p, "old\n").unwrap();
        }
        let policy = Rotation {
            max_bytes: 10,
            max_backups: 0,
            max_age_days: 1,
            compress: false,
        };
        let mut f = RotatingFile::open(&path, policy).unwrap();
        f.write_all(b"line 1 ..\n").unwrap();
        f.write_all(b"line 2 ..\n").unwrap(); // rotates: the fresh backup is kept
        f.wait_for_maintenance();
        assert!(!old.exists());
        assert!(!old_gz.exists());
        assert!(unrelated.exists(), "files of other logs are left alone");
        assert_eq!(backups(dir.path()).len(), 1);
    }

    #[test]
    fn name_clashes_move_the_timestamp_forward() {
        let dir = tempfile::tempdir().unwrap();
        let names = BackupNames::for_path(&dir.path().join("cete.log")).unwrap();
        let t = UNIX_EPOCH + Duration::from_millis(1_795_953_600_123);
        fs::write(names.backup_path(t), "").unwrap();
        fs::write(
            gz_path(&names.backup_path(t + Duration::from_millis(1))),
            "",
        )
        .unwrap();
        let free = names.free_backup_path(t);
        assert_eq!(
            free.file_name().unwrap(),
            "cete-2026-11-29T12-00-00.125.log"
        );
    }

    #[test]
    fn names_without_extension_work() {
        let names = BackupNames::for_path(Path::new("/var/log/cete")).unwrap();
        assert_eq!(names.stem, "cete");
        assert_eq!(names.ext, "");
        let p = names.backup_path(UNIX_EPOCH);
        assert_eq!(p, Path::new("/var/log/cete-1970-01-01T00-00-00.000"));
        assert!(names.parse("cete-1970-01-01T00-00-00.000.gz").is_some());
    }

    #[test]
    fn unwritable_path_is_an_error_naming_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        fs::write(&blocker, "").unwrap();
        let settings = LogSettings {
            level: "info".into(),
            file: Some(blocker.join("cete.log")), // parent is a regular file
            max_size_mb: 1,
            max_backups: 0,
            max_age_days: 0,
            compress: false,
        };
        let err = init(&settings).unwrap_err();
        assert!(matches!(err, LoggingError::LogFile { .. }), "{err}");
        assert!(err
            .to_string()
            .contains("--log-file (CETE_LOG_FILE, log_file)"));
    }

    #[test]
    fn invalid_level_is_an_error_naming_the_setting() {
        let settings = LogSettings {
            level: "loud".into(),
            file: None,
            max_size_mb: 1,
            max_backups: 0,
            max_age_days: 0,
            compress: false,
        };
        let err = init(&settings).unwrap_err().to_string();
        assert!(
            err.contains("\"loud\"") && err.contains("--log-level"),
            "{err}"
        );
    }
}
