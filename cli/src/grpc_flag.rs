//! The original CLI's `--grpc-addr`: refused, since this CLI speaks REST, with the
//! `--address` to type instead. The nodes know each other's HTTP addresses, so the CLI asks
//! one (the one `--address` names, by default `:8000`) which member has that gRPC address.

use std::time::Duration;

use serde_json::Value;

use crate::client::{Client, Options};
use crate::urls;

/// How long the look-up may take; the refusal must not hang on a dead node.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// The one-line refusal of `--grpc-addr=<grpc>`, naming the `--address` of that node when a
/// node at `options.address` can tell it.
pub async fn refusal(grpc: &str, mut options: Options) -> String {
    let generic = format!(
        "--grpc-addr {grpc} is not supported: the cete CLI speaks REST, use --address with \
         the node's HTTP address (http://HOST:HTTP_PORT, e.g. --address :8000)"
    );
    options.timeout = options.timeout.min(LOOKUP_TIMEOUT);
    let Ok(client) = Client::new(options) else {
        return generic;
    };
    let Ok(cluster) = client.get_json("/v1/cluster").await else {
        return generic;
    };
    let Some((name, http)) = http_address_of(&cluster, grpc) else {
        return generic;
    };
    let address = match client.base().scheme() {
        "https" => format!("https://{http}"),
        _ => http,
    };
    format!(
        "--grpc-addr {grpc} is not supported: the cete CLI speaks REST; for {name} (gRPC \
         {grpc}) use --address {address}"
    )
}

/// The member whose gRPC address is `grpc`, and its HTTP address.
fn http_address_of(cluster: &Value, grpc: &str) -> Option<(String, String)> {
    let wanted = endpoint(grpc)?;
    let nodes = cluster.get("cluster")?.get("nodes")?.as_object()?;
    nodes.iter().find_map(|(name, node)| {
        let metadata = node.get("metadata")?;
        let theirs = metadata.get("grpc_address")?.as_str()?;
        (endpoint(theirs)? == wanted).then(|| {
            let http = metadata.get("http_address")?.as_str()?;
            Some((name.clone(), http.to_string()))
        })?
    })
}

/// `(host, port)` with every name of this machine as one host: `:9000`, `127.0.0.1:9000`
/// and `localhost:9000` are the same address.
fn endpoint(address: &str) -> Option<(String, u16)> {
    let url = urls::normalize_address(address).ok()?;
    let host = url
        .host_str()?
        .trim_matches(['[', ']'])
        .to_ascii_lowercase();
    let host = match host.as_str() {
        "127.0.0.1" | "localhost" | "::1" | "0.0.0.0" | "::" => "local".to_string(),
        _ => host,
    };
    Some((host, url.port_or_known_default()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_the_member_by_grpc_address_in_any_spelling() {
        let cluster = json!({"cluster": {"nodes": {
            "node1": {"metadata": {"grpc_address": ":9000", "http_address": ":8000"}},
            "node2": {"metadata": {"grpc_address": ":9001", "http_address": ":8001"}},
            "far": {"metadata": {"grpc_address": "10.0.0.5:9001", "http_address": "10.0.0.5:8001"}},
        }}});
        let found = |grpc| http_address_of(&cluster, grpc);
        assert_eq!(found(":9001"), Some(("node2".into(), ":8001".into())));
        assert_eq!(
            found("127.0.0.1:9001"),
            Some(("node2".into(), ":8001".into()))
        );
        assert_eq!(
            found("localhost:9000"),
            Some(("node1".into(), ":8000".into()))
        );
        assert_eq!(
            found("10.0.0.5:9001"),
            Some(("far".into(), "10.0.0.5:8001".into()))
        );
        assert_eq!(found(":9005"), None);
        assert_eq!(found(""), None);
    }
}
