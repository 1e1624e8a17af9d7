//! The listeners a node binds and serves: addresses to bind and to
//! advertise, the gRPC servers (with TLS) and the open-file limit they need.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::net;
use crate::tls;

/// The address to advertise for a listener: as configured, with the real
/// port if the configured one was 0, and the advertise host if the host part is empty.
pub fn advertised(configured: &str, bound: SocketAddr, advertise_host: Option<&str>) -> String {
    let (host, port) = configured.rsplit_once(':').unwrap_or(("", configured));
    let port = if port == "0" {
        bound.port().to_string()
    } else {
        port.to_string()
    };
    let host = if host.is_empty() {
        advertise_host.unwrap_or("")
    } else {
        host
    };
    format!("{host}:{port}")
}

pub async fn bind(setting: &str, address: &str) -> anyhow::Result<TcpListener> {
    let addr =
        net::listen_addr(address).map_err(|e| anyhow::anyhow!("{setting} {address}: {e}"))?;
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {setting} {address}"))
}

/// Raises the soft limit on open files to the hard limit: every client
/// connection is a file descriptor, and the usual soft limit (1024) is far
/// below what a busy node needs.
pub fn raise_open_file_limit() {
    let soft = rlimit::Resource::NOFILE.get_soft().unwrap_or(0);
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(raised) if raised > soft => log::info!("open-file limit raised from {soft} to {raised}"),
        Ok(limit) => log::info!("open-file limit: {limit}"),
        Err(e) => log::warn!("cannot raise the open-file limit from {soft}: {e}"),
    }
}

/// Accepted peer connections with Nagle's algorithm off. tonic's own
/// `tcp_nodelay` setting does not reach connections from a listener we bind
/// ourselves, and with Nagle on, a reply split over two writes waits for the
/// peer's delayed ACK: ~40 ms on every other Raft round trip.
fn peer_incoming(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Serves `router` on `listener`, with TLS (peers must present a trusted certificate) if
/// configured. The TLS is ours, not tonic's, whose settings take no custom verifier.
pub fn serve_grpc(
    router: tonic::transport::server::Router,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> futures::future::BoxFuture<'static, Result<(), tonic::transport::Error>> {
    let incoming = peer_incoming(listener);
    match tls {
        Some(tls) => {
            Box::pin(router.serve_with_incoming_shutdown(tls::accept(incoming, tls), shutdown))
        }
        None => Box::pin(router.serve_with_incoming_shutdown(incoming, shutdown)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_addresses() {
        let bound: SocketAddr = "0.0.0.0:7123".parse().unwrap();
        assert_eq!(advertised(":7000", bound, None), ":7000");
        assert_eq!(advertised(":0", bound, None), ":7123");
        assert_eq!(
            advertised(":7000", bound, Some("node1.cete")),
            "node1.cete:7000"
        );
        assert_eq!(
            advertised("10.0.0.1:7000", bound, Some("x")),
            "10.0.0.1:7000"
        );
        assert_eq!(advertised("127.0.0.1:0", bound, None), "127.0.0.1:7123");
    }
}
