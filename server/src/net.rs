//! Configured addresses (`host:port` or `:port`): checking them, the socket address to bind,
//! and the address other nodes dial.

use std::net::{SocketAddr, ToSocketAddrs};

/// Splits `host:port` or `:port` (IPv6 hosts in brackets); the host may be empty.
pub fn split_host_port(addr: &str) -> Result<(&str, u16), String> {
    let expected = || "expected host:port or :port with a port from 0 to 65535".to_string();
    let (host, port) = addr.rsplit_once(':').ok_or_else(expected)?;
    let port: u16 = port.parse().map_err(|_| expected())?;
    let host = match host.strip_prefix('[') {
        Some(rest) => rest.strip_suffix(']').ok_or_else(expected)?,
        None if host.contains(':') => return Err(expected()),
        None => host,
    };
    if host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(expected());
    }
    Ok((host, port))
}

/// The socket address to bind for a configured address: `:7000` listens on all IPv4
/// interfaces; a name is resolved, preferring IPv4 (peers dial `127.0.0.1` for `:port`).
pub fn listen_addr(addr: &str) -> Result<SocketAddr, String> {
    let (host, port) = split_host_port(addr).map_err(|e| format!("{addr:?}: {e}"))?;
    if host.is_empty() {
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    let resolved: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {addr:?}: {e}"))?
        .collect();
    resolved
        .iter()
        .find(|a| a.is_ipv4())
        .or(resolved.first())
        .copied()
        .ok_or_else(|| format!("{addr:?} resolves to no address"))
}

/// The address other nodes should dial for a configured address. A missing or wildcard host
/// (`:7000`, `0.0.0.0:7000`, `[::]:7000`) is replaced by `advertise_host`, or `127.0.0.1` when
/// that is not set; anything else is returned unchanged.
pub fn dial_addr(addr: &str, advertise_host: Option<&str>) -> String {
    let Ok((host, port)) = split_host_port(addr) else {
        return addr.to_string();
    };
    if !(host.is_empty() || host == "0.0.0.0" || host == "::") {
        return addr.to_string();
    }
    let host = advertise_host.unwrap_or("127.0.0.1");
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_and_dial_addresses() {
        assert_eq!(
            listen_addr(":7000").unwrap(),
            "0.0.0.0:7000".parse().unwrap()
        );
        assert_eq!(
            listen_addr("127.0.0.1:7000").unwrap(),
            "127.0.0.1:7000".parse().unwrap()
        );
        assert_eq!(
            listen_addr("[::1]:7000").unwrap(),
            "[::1]:7000".parse().unwrap()
        );
        let local = listen_addr("localhost:7000").unwrap();
        assert!(local.ip().is_loopback() && local.port() == 7000);
        assert!(listen_addr("7000").is_err());

        assert_eq!(dial_addr(":7000", None), "127.0.0.1:7000");
        assert_eq!(dial_addr(":7000", Some("node-a.svc")), "node-a.svc:7000");
        assert_eq!(dial_addr("0.0.0.0:7000", Some("10.0.0.5")), "10.0.0.5:7000");
        assert_eq!(dial_addr(":7000", Some("fd00::1")), "[fd00::1]:7000");
        assert_eq!(dial_addr("10.1.1.1:7000", Some("x")), "10.1.1.1:7000");
        assert_eq!(dial_addr("localhost:7000", None), "localhost:7000");
    }
}
