//! TLS: the node's certificate, key and trust root, read and checked once at start, then
//! turned into the three shapes that need them: a rustls server config for the HTTP API, one
//! for the gRPC listeners (mutual TLS: peers must present a certificate from the trust root)
//! and a client config for calls to peers. The gRPC sides do their TLS here rather than
//! through tonic's TLS settings, which take no custom verifier (see [`Pinned`]).
//!
//! Every peer is verified against the same name, `--common-name`, as in the original Cete:
//! nodes dial each other by address, and one name for the cluster keeps the certificates simple.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use cete_types::pin::Pinned;
use futures::{Stream, StreamExt};
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::{CertificateError, RootCertStore};
use tokio::net::TcpStream;

/// Where the TLS material is, as configured; the files are read and checked at start
/// (see [`TlsConfig::load`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM certificate chain of this node (`--certificate-file`), leaf first.
    pub certificate_file: PathBuf,
    /// PEM private key of that certificate (`--key-file`).
    pub key_file: PathBuf,
    /// PEM CA certificates that peers' certificates must chain to (`--ca-file`);
    /// `None` trusts the certificate file itself (one self-signed certificate for all nodes).
    pub ca_file: Option<PathBuf>,
    /// Name peers' certificates must carry (`--common-name`); `None` takes the first DNS name
    /// of this node's certificate.
    pub common_name: Option<String>,
}

/// A TLS handshake that takes longer than this is dropped (slow or stuck clients).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the TLS material cannot be used; each message names the setting to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {flag} {}", path.display())]
    Read {
        flag: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{flag} {}: {problem}", path.display())]
    Invalid {
        flag: &'static str,
        path: PathBuf,
        problem: String,
    },
    #[error(
        "--common-name is required: --certificate-file {} has no DNS name in its \
         subjectAltName to default to",
        .0.display()
    )]
    NoCommonName(PathBuf),
    #[error("TLS configuration: {0}")]
    Rustls(rustls::Error),
}

impl From<rustls::Error> for TlsError {
    fn from(e: rustls::Error) -> TlsError {
        TlsError::Rustls(e)
    }
}

/// The checked TLS material of this node.
#[derive(Clone)]
pub struct TlsConfig {
    certs: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
    /// How peers' client certificates are checked on the gRPC listeners.
    client_verifier: Arc<dyn ClientCertVerifier>,
    /// The client side of calls to peers: the gRPC channels and [`ClientTls::diagnose`].
    client: Arc<rustls::ClientConfig>,
    /// The name every node's certificate is checked against.
    pub server_name: String,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// The one crypto provider of this crate. Explicit, so that no other crate in a build that
/// enables another provider can change which one this crate uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        flag,
        path: path.to_path_buf(),
        source,
    })
}

fn invalid(flag: &'static str, path: &Path, problem: impl Into<String>) -> TlsError {
    TlsError::Invalid {
        flag,
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

fn parse_certs(
    flag: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(flag, path, format!("unreadable PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(
            flag,
            path,
            "holds no PEM certificate (BEGIN CERTIFICATE)",
        ));
    }
    Ok(certs)
}

/// A certificate problem in words an operator acts on.
fn describe(err: &rustls::Error) -> String {
    match err {
        rustls::Error::InvalidCertificate(e) => match e {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                format!("the certificate has expired ({e})")
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                format!("the certificate is not valid yet ({e})")
            }
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                format!("the certificate is not signed by a CA in the trust root ({e})")
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("the certificate is not valid for the common name ({e})")
            }
            CertificateError::Other(other)
                if matches!(
                    other.0.downcast_ref::<webpki::Error>(),
                    Some(webpki::Error::CaUsedAsEndEntity)
                ) =>
            {
                "the certificate is a CA certificate (basicConstraints CA:TRUE), which cannot \
                 be a node's own certificate; sign a node certificate with it, or make a \
                 self-signed one with basicConstraints=CA:FALSE and the name in its \
                 subjectAltName (openssl req -x509 ... -addext \
                 'basicConstraints=critical,CA:FALSE' -addext 'subjectAltName=DNS:NAME')"
                    .to_string()
            }
            other => format!("the certificate is not usable: {other}"),
        },
        other => other.to_string(),
    }
}

fn is_ca_used_as_end_entity(err: &rustls::Error) -> bool {
    matches!(
        err,
        rustls::Error::InvalidCertificate(CertificateError::Other(other))
            if matches!(
                other.0.downcast_ref::<webpki::Error>(),
                Some(webpki::Error::CaUsedAsEndEntity)
            )
    )
}

impl TlsConfig {
    /// Reads and checks the files: PEM that parses, a key that matches the certificate, a
    /// certificate that chains to the trust root, is valid now, is valid for the common name
    /// and may be used both as a server and as a client certificate (peers use it both ways).
    /// A self-signed CA certificate that is its own trust root is pinned instead ([`Pinned`]).
    /// Blocking file I/O: call it from a blocking context.
    pub fn load(settings: &TlsSettings) -> Result<TlsConfig, TlsError> {
        // tonic builds its rustls configs with the process default provider, which rustls
        // cannot pick by itself once a build enables more than one; ring is ours.
        // Installing fails harmlessly if one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        const CERT: &str = "--certificate-file";
        const KEY: &str = "--key-file";
        const CA: &str = "--ca-file";
        let cert_path = &settings.certificate_file;
        let cert_pem = read(CERT, cert_path)?;
        let certs = parse_certs(CERT, cert_path, &cert_pem)?;
        let key_path = &settings.key_file;
        let key_pem = read(KEY, key_path)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            invalid(
                KEY,
                key_path,
                format!("holds no usable PEM private key ({e})"),
            )
        })?;
        let provider = provider();
        let signing_key = provider
            .key_provider
            .load_private_key(key.clone_key())
            .map_err(|e| invalid(KEY, key_path, format!("unsupported private key: {e}")))?;
        rustls::sign::CertifiedKey::new(certs.clone(), signing_key)
            .keys_match()
            .map_err(|_| {
                invalid(
                    KEY,
                    key_path,
                    format!(
                        "does not match the certificate in {CERT} {}",
                        cert_path.display()
                    ),
                )
            })?;

        let (ca_flag, ca_path, ca_pem) = match &settings.ca_file {
            Some(path) => (CA, path.as_path(), read(CA, path)?),
            None => (CERT, cert_path.as_path(), cert_pem.clone()),
        };
        let mut roots = RootCertStore::empty();
        let cas = parse_certs(ca_flag, ca_path, &ca_pem)?;
        let own_root = certs.len() == 1 && cas == certs;
        for ca in cas {
            roots.add(ca).map_err(|e| {
                invalid(
                    ca_flag,
                    ca_path,
                    format!("not a usable CA certificate: {e}"),
                )
            })?;
        }
        let roots = Arc::new(roots);

        let leaf = webpki::EndEntityCert::try_from(&certs[0])
            .map_err(|e| invalid(CERT, cert_path, format!("unreadable certificate: {e}")))?;
        let server_name = match &settings.common_name {
            Some(name) => name.clone(),
            None => leaf
                .valid_dns_names()
                .find(|n| !n.starts_with('*'))
                .map(str::to_string)
                .ok_or_else(|| TlsError::NoCommonName(cert_path.clone()))?,
        };
        let name = ServerName::try_from(server_name.clone())
            .map_err(|_| invalid(CERT, cert_path, "the common name is not a DNS name or IP"))?;

        let now = UnixTime::now();
        let trust = if settings.ca_file.is_some() {
            format!(", trust root {CA} {}", ca_path.display())
        } else {
            String::new()
        };
        let webpki_server = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .build()
        .map_err(|e| invalid(ca_flag, ca_path, e.to_string()))?;
        let checked = |e: &rustls::Error| {
            invalid(
                CERT,
                cert_path,
                format!(
                    "{} (checked for --common-name {server_name}{trust})",
                    describe(e)
                ),
            )
        };
        let (server_verifier, client_verifier): (
            Arc<dyn ServerCertVerifier>,
            Arc<dyn ClientCertVerifier>,
        ) = match webpki_server.verify_server_cert(&certs[0], &certs[1..], &name, &[], now) {
            Ok(_) => {
                let webpki_client = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    roots.clone(),
                    provider.clone(),
                )
                .build()
                .map_err(|e| invalid(ca_flag, ca_path, e.to_string()))?;
                webpki_client
                    .verify_client_cert(&certs[0], &certs[1..], now)
                    .map_err(|e| {
                        invalid(
                            CERT,
                            cert_path,
                            format!(
                                "cannot serve as a client certificate between peers (mutual \
                                 TLS): {}",
                                describe(&e)
                            ),
                        )
                    })?;
                (webpki_server, webpki_client)
            }
            // webpki refuses a CA as an end certificate; one that is its own root is pinned.
            Err(e) if own_root && is_ca_used_as_end_entity(&e) => {
                let pin = Pinned::new(&certs[0], Some(&server_name))
                    .map_err(|problem| invalid(CERT, cert_path, problem))?;
                pin.check(&certs[0], &[], now).map_err(|e| checked(&e))?;
                let pin = Arc::new(pin);
                (pin.clone(), pin)
            }
            Err(e) => return Err(checked(&e)),
        };
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous() // webpki's verifier or a pin, both verify the handshake
            .with_custom_certificate_verifier(server_verifier)
            .with_client_auth_cert(certs.clone(), key.clone_key())?;
        client.alpn_protocols = vec![b"h2".to_vec()];
        Ok(TlsConfig {
            client: Arc::new(client),
            client_verifier,
            certs,
            key: Arc::new(key),
            server_name,
        })
    }

    /// The rustls config of the HTTPS API: server authentication only (clients are curl and
    /// the CLI), HTTP/2 or HTTP/1.1 by ALPN.
    pub fn http_server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(self.certs.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// TLS for the Raft and peer gRPC listeners: peers must present a certificate that
    /// chains to the trust root (or the pinned one), HTTP/2 only.
    pub fn grpc_server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(self.client_verifier.clone())
            .with_single_cert(self.certs.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

/// TLS connections accepted from `incoming`, for tonic's `serve_with_incoming`. Each
/// handshake runs on its own task with a deadline, so a slow client holds up no other; failed
/// ones are dropped (the client sees why). Stops accepting once the server drops the stream.
pub fn accept<S>(
    incoming: S,
    config: Arc<rustls::ServerConfig>,
) -> impl Stream<Item = std::io::Result<tokio_rustls::server::TlsStream<TcpStream>>>
where
    S: Stream<Item = std::io::Result<TcpStream>> + Send + Unpin + 'static,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let mut incoming = incoming;
        loop {
            let tcp = tokio::select! {
                _ = tx.closed() => return,
                next = incoming.next() => match next {
                    Some(Ok(tcp)) => tcp,
                    Some(Err(e)) => {
                        log::debug!("accepting a peer connection: {e}");
                        continue;
                    }
                    None => return,
                },
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => log::debug!("TLS handshake with a peer failed: {e}"),
                    Err(_) => log::debug!("TLS handshake with a peer timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Dials peers for tonic (`Endpoint::connect_with_connector`): TCP without Nagle, then TLS
/// with the node's client config, checked against the common name.
#[derive(Clone)]
pub struct PeerConnector {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

impl tower_service::Service<http::Uri> for PeerConnector {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        let name = self.name.clone();
        Box::pin(async move {
            let address = uri.authority().map(|a| a.as_str().to_string());
            let address = address.ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "no peer address")
            })?;
            let tcp = TcpStream::connect(address).await?;
            tcp.set_nodelay(true)?;
            let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, tcp))
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
                })??;
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}

/// Transport security of the gRPC clients between peers.
#[derive(Clone, Debug, Default)]
pub enum ClientTls {
    /// Plain text (no TLS configured).
    #[default]
    Plain,
    /// TLS with the node's trust root (or pin) and client certificate.
    Tls {
        config: Arc<rustls::ClientConfig>,
        server_name: String,
    },
}

impl ClientTls {
    /// The client side of `config`, or plain text without one.
    pub fn new(config: Option<&TlsConfig>) -> ClientTls {
        config.map_or(ClientTls::Plain, |c| ClientTls::Tls {
            config: c.client.clone(),
            server_name: c.server_name.clone(),
        })
    }

    /// The connector that does TLS for the gRPC channels, `None` when plain. The endpoint's
    /// URL stays `http://` then: tonic refuses `https://` without its own TLS settings.
    pub fn connector(&self) -> Option<PeerConnector> {
        let ClientTls::Tls {
            config,
            server_name,
        } = self
        else {
            return None;
        };
        // load() checked that the name parses.
        let name = ServerName::try_from(server_name.clone()).ok()?;
        Some(PeerConnector {
            config: config.clone(),
            name,
        })
    }

    /// Why TLS with the peer at `address` fails, if it does. gRPC reports a refused
    /// certificate only as a dropped connection, so a failed call is explained by one
    /// handshake made by hand. `None` when plain, unreachable or when TLS works.
    pub async fn diagnose(&self, address: &str) -> Option<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio::time::timeout;
        let ClientTls::Tls {
            config: probe,
            server_name,
        } = self
        else {
            return None;
        };
        let name = ServerName::try_from(server_name.clone()).ok()?;
        let target = crate::net::dial_addr(address, None);
        let step = Duration::from_secs(3);
        let tcp = timeout(step, tokio::net::TcpStream::connect(&target))
            .await
            .ok()?
            .ok()?;
        let connector = tokio_rustls::TlsConnector::from(probe.clone());
        let mut tls = match timeout(step, connector.connect(name, tcp)).await {
            Err(_) => return Some("TLS handshake timed out".into()),
            Ok(Err(e)) => return Some(format!("TLS handshake failed: {e}")),
            Ok(Ok(tls)) => tls,
        };
        // With TLS 1.3 the server judges our certificate after the handshake; its verdict
        // arrives as an alert on the first read. A healthy peer answers the HTTP/2 preface.
        tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .ok()?;
        let mut buf = [0u8; 64];
        match timeout(step, tls.read(&mut buf)).await {
            Ok(Err(e)) => Some(format!("the peer refused this node's certificate: {e}")),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Files {
            Files {
                dir: tempfile::tempdir().unwrap(),
            }
        }
        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        }
    }

    fn ca() -> (Issuer<'static, KeyPair>, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "test CA");
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (Issuer::new(params, key), cert.pem())
    }

    fn leaf(issuer: &Issuer<'static, KeyPair>, names: &[&str], expired: bool) -> (String, String) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn settings(cert: &Path, key: &Path, ca: Option<&Path>, cn: Option<&str>) -> TlsSettings {
        TlsSettings {
            certificate_file: cert.into(),
            key_file: key.into(),
            ca_file: ca.map(Into::into),
            common_name: cn.map(Into::into),
        }
    }

    #[test]
    fn good_material_loads_and_the_common_name_defaults_to_the_first_dns_name() {
        let f = Files::new();
        let (issuer, ca_pem) = ca();
        let (cert, key) = leaf(&issuer, &["cete.test", "localhost", "127.0.0.1"], false);
        let (cert, key, ca) = (
            f.write("c.pem", &cert),
            f.write("k.pem", &key),
            f.write("ca.pem", &ca_pem),
        );
        let config = TlsConfig::load(&settings(&cert, &key, Some(&ca), None)).unwrap();
        assert_eq!(config.server_name, "cete.test");
        config.http_server_config().unwrap();
        let config = TlsConfig::load(&settings(&cert, &key, Some(&ca), Some("127.0.0.1"))).unwrap();
        assert_eq!(config.server_name, "127.0.0.1");
    }

    #[test]
    fn each_problem_names_its_setting() {
        let f = Files::new();
        let (issuer, ca_pem) = ca();
        let (cert_pem, key_pem) = leaf(&issuer, &["cete.test"], false);
        let (_, other_key) = leaf(&issuer, &["cete.test"], false);
        let (expired_cert, expired_key) = leaf(&issuer, &["cete.test"], true);
        let (rogue, rogue_ca) = ca();
        let (rogue_cert, rogue_key) = leaf(&rogue, &["cete.test"], false);
        drop(rogue_ca);
        let cert = f.write("c.pem", &cert_pem);
        let key = f.write("k.pem", &key_pem);
        let ca = f.write("ca.pem", &ca_pem);
        let missing = f.dir.path().join("missing.pem");
        let garbage = f.write("garbage.pem", "not a pem file\n");
        let err = |s: TlsSettings| TlsConfig::load(&s).unwrap_err().to_string();

        let e = err(settings(&missing, &key, Some(&ca), None));
        assert!(
            e.starts_with("cannot read --certificate-file") && e.contains("missing.pem"),
            "{e}"
        );
        let e = err(settings(&cert, &missing, Some(&ca), None));
        assert!(e.starts_with("cannot read --key-file"), "{e}");
        let e = err(settings(&cert, &key, Some(&missing), None));
        assert!(e.starts_with("cannot read --ca-file"), "{e}");
        let e = err(settings(&garbage, &key, Some(&ca), None));
        assert!(
            e.starts_with("--certificate-file") && e.contains("no PEM certificate"),
            "{e}"
        );
        let e = err(settings(&cert, &garbage, Some(&ca), None));
        assert!(
            e.starts_with("--key-file") && e.contains("private key"),
            "{e}"
        );
        let wrong_key = f.write("other.pem", &other_key);
        let e = err(settings(&cert, &wrong_key, Some(&ca), None));
        assert!(
            e.starts_with("--key-file") && e.contains("does not match"),
            "{e}"
        );
        let (ec, ek) = (
            f.write("ec.pem", &expired_cert),
            f.write("ek.pem", &expired_key),
        );
        let e = err(settings(&ec, &ek, Some(&ca), None));
        assert!(
            e.starts_with("--certificate-file") && e.contains("expired"),
            "{e}"
        );
        let (rc, rk) = (
            f.write("rc.pem", &rogue_cert),
            f.write("rk.pem", &rogue_key),
        );
        let e = err(settings(&rc, &rk, Some(&ca), None));
        assert!(
            e.contains("not signed by a CA in the trust root") && e.contains("--ca-file"),
            "{e}"
        );
        let e = err(settings(&cert, &key, Some(&ca), Some("other.test")));
        assert!(e.contains("not valid for the common name"), "{e}");
        let (ip_only, ip_key) = leaf(&issuer, &["127.0.0.1"], false);
        let (ic, ik) = (f.write("ic.pem", &ip_only), f.write("ik.pem", &ip_key));
        let e = err(settings(&ic, &ik, Some(&ca), None));
        assert!(e.starts_with("--common-name is required"), "{e}");
    }

    /// Like the original Cete's openssl recipe: self-signed, CA:TRUE, CN only.
    fn self_signed_ca(cn: &str) -> (String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_self_signed_ca_that_is_its_own_root_is_pinned_and_nothing_else_passes() {
        let f = Files::new();
        let (cert_pem, key_pem) = self_signed_ca("localhost");
        let (other_pem, _) = self_signed_ca("localhost");
        let (cert, key) = (f.write("c.pem", &cert_pem), f.write("k.pem", &key_pem));
        let config = TlsConfig::load(&settings(&cert, &key, None, Some("localhost"))).unwrap();
        let same = TlsConfig::load(&settings(&cert, &key, Some(&cert), Some("localhost")));
        assert!(same.is_ok());
        let own = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        let other = CertificateDer::from_pem_slice(other_pem.as_bytes()).unwrap();
        let now = UnixTime::now();
        let pin = Pinned::new(&own, Some("localhost")).unwrap();
        // rcgen's defaults: 1975-01-01 to 4096-01-01.
        assert_eq!(pin.validity(), (157_766_400, 67_090_118_400));
        let verifier = &config.client_verifier;
        assert!(verifier.verify_client_cert(&own, &[], now).is_ok());
        assert!(verifier.verify_client_cert(&other, &[], now).is_err());
        assert!(verifier
            .verify_client_cert(&own, std::slice::from_ref(&own), now)
            .is_err());
        // rcgen's certificates run to the year 4096.
        let later = UnixTime::since_unix_epoch(Duration::from_secs(u64::from(u32::MAX) * 100));
        assert!(verifier.verify_client_cert(&own, &[], later).is_err());

        let err = |s: TlsSettings| TlsConfig::load(&s).unwrap_err().to_string();
        let e = err(settings(&cert, &key, None, Some("other.test")));
        assert!(e.contains("not valid for the common name"), "{e}");
        // With another trust root it is no pin: today's refusal and its advice stand.
        let other_file = f.write("o.pem", &other_pem);
        let e = err(settings(&cert, &key, Some(&other_file), Some("localhost")));
        assert!(e.contains("CA:TRUE") || e.contains("not signed"), "{e}");
    }
}
