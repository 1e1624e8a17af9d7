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
use reqwest::Url;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// A self-signed CA certificate trusted as the server's own: exactly it, within its dates.
#[derive(Debug)]
struct Pin {
    der: CertificateDer<'static>,
    not_before: u64,
    not_after: u64,
}

impl Pin {
    /// The pin for `certs` if they are one self-signed certificate. That it is also a CA
    /// does not matter: only these exact bytes pass, and webpki is asked first.
    fn of(certs: &[CertificateDer<'static>]) -> Option<Pin> {
        let [der] = certs else { return None };
        let cert = der::fields(der)?;
        if cert.subject != cert.issuer {
            return None;
        }
        Some(Pin {
            der: der.clone(),
            not_before: cert.not_before,
            not_after: cert.not_after,
        })
    }

    /// `None` when `presented` is not the pinned certificate, else whether it is valid now.
    fn check(
        &self,
        presented: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Option<Result<ServerCertVerified, rustls::Error>> {
        if presented.as_ref() != self.der.as_ref() || !intermediates.is_empty() {
            return None;
        }
        Some(if now.as_secs() < self.not_before {
            Err(rustls::CertificateError::NotValidYet.into())
        } else if now.as_secs() > self.not_after {
            Err(rustls::CertificateError::Expired.into())
        } else {
            Ok(ServerCertVerified::assertion())
        })
    }
}

/// Verifies like a browser would, but for `name` (if given) instead of the host that was
/// dialled, and accepts the pinned certificate (if any) that webpki refuses.
#[derive(Debug)]
struct PinnedName {
    inner: Arc<WebPkiServerVerifier>,
    name: Option<ServerName<'static>>,
    pin: Option<Pin>,
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
            if let Some(pinned) = self
                .pin
                .as_ref()
                .and_then(|p| p.check(end_entity, intermediates, now))
            {
                return pinned;
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
            pin = Pin::of(&certs);
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

/// The few fields of an X.509 certificate that a pin needs, read from its DER by hand: the
/// crates that parse certificates fully are not in this build (and would bring their own
/// proc-macros, which rebuild RocksDB's build script).
mod der {
    /// Issuer and subject (their DER contents) and validity, in seconds since the epoch.
    pub struct Fields<'a> {
        pub issuer: &'a [u8],
        pub subject: &'a [u8],
        pub not_before: u64,
        pub not_after: u64,
    }

    /// One DER element: its tag, its contents and what follows it.
    fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0, |acc, b| acc << 8 | usize::from(*b));
            (len, &rest[n..])
        };
        (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
    }

    pub fn fields(der: &[u8]) -> Option<Fields<'_>> {
        let (0x30, cert, _) = tlv(der)? else {
            return None;
        };
        let (0x30, tbs, _) = tlv(cert)? else {
            return None;
        };
        let (tag, _, rest) = tlv(tbs)?;
        // [0] version, then the serial number; or the serial number alone (v1).
        let rest = if tag == 0xa0 { tlv(rest)?.2 } else { rest };
        let (_, _, rest) = tlv(rest)?; // the signature algorithm
        let (0x30, issuer, rest) = tlv(rest)? else {
            return None;
        };
        let (0x30, validity, rest) = tlv(rest)? else {
            return None;
        };
        let (0x30, subject, _) = tlv(rest)? else {
            return None;
        };
        let (tag, before, rest) = tlv(validity)?;
        let not_before = time(tag, before)?;
        let (tag, after, _) = tlv(rest)?;
        Some(Fields {
            issuer,
            subject,
            not_before,
            not_after: time(tag, after)?,
        })
    }

    /// UTCTime (YYMMDDHHMMSSZ) or GeneralizedTime (YYYYMMDDHHMMSSZ), as DER writes them.
    fn time(tag: u8, text: &[u8]) -> Option<u64> {
        let digits = text.strip_suffix(b"Z")?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let num = |s: &[u8]| s.iter().fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0'));
        let (year, rest) = match (tag, digits.len()) {
            (0x17, 12) => {
                let yy = num(&digits[..2]);
                (if yy < 50 { 2000 + yy } else { 1900 + yy }, &digits[2..])
            }
            (0x18, 14) => (num(&digits[..4]), &digits[4..]),
            _ => return None,
        };
        let [month, day, hour, minute, second] = [0, 2, 4, 6, 8].map(|i| num(&rest[i..i + 2]));
        // Days from the civil date (H. Hinnant's algorithm).
        let y = if month <= 2 { year - 1 } else { year };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
        let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
        u64::try_from(days * 86_400 + hour * 3600 + minute * 60 + second).ok()
    }
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
