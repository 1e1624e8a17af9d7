//! TLS on the client side: checking a server certificate against a fixed name
//! (`--common-name`) and turning TLS failures into messages that say what to do.
//!
//! Cete nodes share one certificate name (as in the original), while the CLI reaches them by
//! address, first the one given and then wherever a redirect points. So with `--common-name`
//! the name in the URL is not the one checked; a verifier that substitutes the configured name
//! does that for every host alike, where a DNS override would cover one host only.
//!
//! A `--cacert` that is one self-signed CA certificate (as the original Cete's openssl recipe
//! makes) is also pinned: webpki will not take a CA as the server's own certificate, so that
//! exact certificate is accepted as well, byte for byte, the handshake still proving the key.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use cete_types::pin::Pinned;
use reqwest::Url;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Verifies like a browser would, but for `name` (if given) instead of the host that was
/// dialled, and accepts the pinned certificate (if any) that webpki refuses.
#[derive(Debug)]
struct PinnedName {
    inner: Arc<WebPkiServerVerifier>,
    name: Option<ServerName<'static>>,
    pin: Option<Pinned>,
}

impl ServerCertVerifier for PinnedName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        dialled: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = self.name.as_ref().unwrap_or(dialled);
        let verdict =
            self.inner
                .verify_server_cert(end_entity, intermediates, name, ocsp_response, now);
        if verdict.is_err() {
            // The pin, for exactly its certificate: a self-signed one that webpki refuses.
            if let Some(pin) = self.pin.as_ref() {
                if pin.matches(end_entity, intermediates) {
                    return pin.verify_server_cert(
                        end_entity,
                        intermediates,
                        name,
                        ocsp_response,
                        now,
                    );
                }
            }
        }
        verdict
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Makes ring the process's rustls provider. reqwest is built without a provider of its own
/// (the workspace's `rustls-no-provider`) and panics when it builds a client without one, even
/// for plain http. Call before building any client; calling again does nothing.
pub fn install_provider() {
    // Err only means that a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The rustls client config for https: trusts `ca_cert` (or the system's roots) and checks
/// every server certificate against `common_name`, or else against the host dialled.
pub fn client_config(
    ca_cert: Option<&Path>,
    common_name: Option<&str>,
) -> Result<rustls::ClientConfig> {
    let mut roots = RootCertStore::empty();
    let mut pin = None;
    match ca_cert {
        Some(path) => {
            let pem =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let certs = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("{} is not a PEM certificate bundle", path.display()))?;
            anyhow::ensure!(!certs.is_empty(), "{} holds no certificate", path.display());
            // One self-signed certificate (a CA, as the original recipe makes) is pinned too.
            pin = match certs.as_slice() {
                [one] => Pinned::new(one, None).ok(),
                _ => None,
            };
            for cert in certs {
                roots
                    .add(cert)
                    .with_context(|| format!("{} holds an unusable CA", path.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    if common_name.is_none() && pin.is_none() {
        return Ok(builder.with_root_certificates(roots).with_no_client_auth());
    }
    let name = common_name
        .map(|name| {
            ServerName::try_from(name.to_string()).map_err(|_| {
                anyhow::anyhow!("--common-name {name:?} is not a DNS name or IP address")
            })
        })
        .transpose()?;
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .context("cannot build the certificate verifier")?;
    Ok(builder
        .dangerous() // a custom verifier, which still verifies everything
        .with_custom_certificate_verifier(Arc::new(PinnedName { inner, name, pin }))
        .with_no_client_auth())
}

/// Adds what to do to a low-level TLS failure on `url`.
pub fn explain(url: &Url, detail: String) -> String {
    if url.scheme() != "https" {
        return detail;
    }
    if detail.contains("InvalidContentType") || detail.contains("corrupt message") {
        return format!(
            "{detail}: the server does not speak TLS on this port; use an http:// address"
        );
    }
    if let Some(why) = detail.strip_prefix("invalid peer certificate: ") {
        // rustls prints the verifier's error as a Rust value; say it in words.
        let why = if why.starts_with("UnknownIssuer") || why.contains("Signature") {
            "it is not signed by a CA this client trusts".to_string()
        } else if why.starts_with("NotValidForName") {
            "it is not issued for the host in the address".to_string()
        } else if why.starts_with("Expired") {
            "it has expired".to_string()
        } else {
            why.to_string()
        };
        return format!(
            "the server's certificate is refused: {why} (trust the server's CA with \
             --cacert FILE; use --common-name NAME when the certificate is not issued for the \
             host in the address)"
        );
    }
    detail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explains_plain_text_and_certificate_failures_on_https_only() {
        let https = Url::parse("https://127.0.0.1:8000/").unwrap();
        let http = Url::parse("http://127.0.0.1:8000/").unwrap();
        let corrupt = "received corrupt message of type InvalidContentType".to_string();
        assert!(explain(&https, corrupt.clone()).contains("does not speak TLS"));
        assert_eq!(explain(&http, corrupt.clone()), corrupt);
        let untrusted = "invalid peer certificate: UnknownIssuer".to_string();
        let said = explain(&https, untrusted);
        assert!(
            said.contains("not signed by a CA") && said.contains("--cacert"),
            "{said}"
        );
        let wrong_name = "invalid peer certificate: NotValidForNameContext { .. }".to_string();
        assert!(explain(&https, wrong_name).contains("not issued for the host"));
        assert_eq!(explain(&https, "refused".into()), "refused");
    }

    #[test]
    fn rejects_bad_names_and_missing_files() {
        assert!(client_config(None, Some("a b")).is_err());
        let err = client_config(Some(Path::new("/nonexistent.pem")), Some("localhost"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent.pem"), "{err}");
    }
}
