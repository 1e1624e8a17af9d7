//! Test-only settings for the robustness suite (`tests/it/robustness.rs`).
//! This is the one place they are documented; nothing else reads them.
//!
//! - `CETE_TEST_DIAL_MAP="real=proxy,..."`: when this node dials a peer at
//!   `real` (a Raft or gRPC address from the membership), it connects to
//!   `proxy` instead, so the suite can drop, delay or cut each link.
//! - `CETE_TEST_UNSAFE=local-reads`: a deliberately broken build. Linearizable
//!   reads are served from local state without a read index, so a deposed or
//!   cut-off node answers stale data. The suite must notice.
//! - `CETE_TEST_UNSAFE=early-ack`: a deliberately broken build. The proposer
//!   answers each write as soon as it hands it to Raft, before it commits,
//!   so a cut-off leader acknowledges writes that are then lost. The suite
//!   must notice.
//!
//! Both are read once, at first use, and announced loudly at start-up
//! ([`announce`]). Production deployments never set them.

use std::collections::HashMap;
use std::sync::OnceLock;

/// The parsed settings.
#[derive(Debug, Default)]
pub struct TestSettings {
    dial_map: HashMap<String, String>,
    /// `CETE_TEST_UNSAFE=local-reads`.
    pub local_reads: bool,
    /// `CETE_TEST_UNSAFE=early-ack`.
    pub early_ack: bool,
}

fn parse(dial_map: Option<&str>, unsafe_flags: Option<&str>) -> Result<TestSettings, String> {
    let mut settings = TestSettings::default();
    for pair in dial_map
        .unwrap_or("")
        .split(',')
        .filter(|p| !p.trim().is_empty())
    {
        let (real, proxy) = pair
            .split_once('=')
            .ok_or_else(|| format!("CETE_TEST_DIAL_MAP entry {pair:?} is not real=proxy"))?;
        settings
            .dial_map
            .insert(real.trim().to_string(), proxy.trim().to_string());
    }
    for flag in unsafe_flags.unwrap_or("").split(',').map(str::trim) {
        match flag {
            "" => {}
            "local-reads" => settings.local_reads = true,
            "early-ack" => settings.early_ack = true,
            other => return Err(format!("CETE_TEST_UNSAFE: unknown setting {other:?}")),
        }
    }
    Ok(settings)
}

/// The settings from the environment, read once.
pub fn settings() -> &'static TestSettings {
    static SETTINGS: OnceLock<TestSettings> = OnceLock::new();
    SETTINGS.get_or_init(|| {
        let map = std::env::var("CETE_TEST_DIAL_MAP").ok();
        let flags = std::env::var("CETE_TEST_UNSAFE").ok();
        // A typo here must not quietly run a different test than intended.
        parse(map.as_deref(), flags.as_deref()).unwrap_or_else(|e| {
            eprintln!("cete-server: {e}");
            std::process::exit(2)
        })
    })
}

/// Where to dial for a peer at `address`: its proxy if the test map names one.
pub fn dial_target(address: &str) -> &str {
    settings()
        .dial_map
        .get(address)
        .map_or(address, String::as_str)
}

/// Logs every test-only setting in force, as warnings.
pub fn announce() {
    let s = settings();
    if !s.dial_map.is_empty() {
        let mut pairs: Vec<_> = s.dial_map.iter().collect();
        pairs.sort();
        log::warn!("TEST ONLY: CETE_TEST_DIAL_MAP reroutes peer connections: {pairs:?}");
    }
    if s.local_reads {
        log::warn!(
            "TEST ONLY, UNSAFE: CETE_TEST_UNSAFE=local-reads serves linearizable reads \
             without a read index; this node is deliberately broken"
        );
    }
    if s.early_ack {
        log::warn!(
            "TEST ONLY, UNSAFE: CETE_TEST_UNSAFE=early-ack acknowledges writes \
             before they commit; this node is deliberately broken"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse() {
        let s = parse(Some("a:1=b:2, c:3=d:4"), Some("local-reads,early-ack")).unwrap();
        assert!(s.early_ack);
        assert_eq!(s.dial_map["a:1"], "b:2");
        assert_eq!(s.dial_map["c:3"], "d:4");
        assert!(s.local_reads);
        let s = parse(None, None).unwrap();
        assert!(s.dial_map.is_empty() && !s.local_reads);
        assert!(parse(Some("nonsense"), None).is_err());
        assert!(parse(None, Some("fast-and-loose")).is_err());
    }
}
