//! Integration tests: one binary driving the real `cete-server` and `cete`
//! binaries (build them first with `cargo build --workspace --bins`).

mod backup;
mod bad_input;
mod batching;
mod cluster;
mod disk;
mod expiry;
mod faultproxy;
mod harness;
mod linearizability;
mod metrics;
mod original_readme;
mod rejoin;
mod robustness;
mod single_node;
mod tls;
mod txn;
mod watch;

/// reqwest panics when it builds a client before a rustls provider is installed (see
/// `harness::http`), and tests run in parallel: a client built elsewhere would fail or not
/// depending on which test ran first. So every client comes from the harness.
#[test]
fn clients_come_from_the_harness() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("it");
    let banned = [
        "reqwest::Client::builder(",
        "reqwest::Client::new(",
        "reqwest::get(",
    ];
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .is_some_and(|n| n == "harness.rs" || n == "main.rs")
        {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (i, line) in text.lines().enumerate() {
            if banned.iter().any(|b| line.contains(b)) {
                found.push(format!("{}:{}: {}", path.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "build reqwest clients with harness::http() instead:\n{}",
        found.join("\n")
    );
}
