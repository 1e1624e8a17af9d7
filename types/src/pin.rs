//! A pinned certificate: exactly one certificate trusted byte for byte, with no
//! chain, within its dates. Server and CLI pin the self-signed CA certificate the
//! original Cete's `openssl req -x509` recipe makes (CA:TRUE, no subjectAltName),
//! which webpki refuses as an end certificate. No other certificate can match, so
//! names do not matter past [`Pinned::new`]; the handshake signature is still
//! verified with the certificate's key (the peer proves it holds the key).

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

#[derive(Debug)]
pub struct Pinned {
    der: CertificateDer<'static>,
    not_before: u64,
    not_after: u64,
    algorithms: WebPkiSupportedAlgorithms,
}

impl Pinned {
    /// The pin for `der` if it is a self-signed certificate, whose common name is
    /// `name` when one is given.
    pub fn new(der: &CertificateDer<'static>, name: Option<&str>) -> Result<Pinned, String> {
        // rustls and webpki show nothing of a certificate's names or dates; x509-parser reads
        // them.
        let (_, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|_| "unreadable certificate")?;
        if cert.subject() != cert.issuer() {
            return Err(
                "the certificate is a CA certificate (basicConstraints CA:TRUE) that \
                        is not self-signed"
                    .into(),
            );
        }
        if let Some(name) = name {
            // The first common name, of any string type that is UTF-8.
            let cn = cert
                .subject()
                .iter_common_name()
                .next()
                .and_then(|cn| std::str::from_utf8(cn.as_slice()).ok());
            if cn != Some(name) {
                return Err(format!(
                    "the certificate is not valid for the common name: its CN is {}",
                    cn.unwrap_or("missing")
                ));
            }
        }
        let secs = |t: x509_parser::time::ASN1Time| {
            u64::try_from(t.timestamp()).map_err(|_| "unreadable certificate")
        };
        Ok(Pinned {
            der: der.clone(),
            not_before: secs(cert.validity().not_before)?,
            not_after: secs(cert.validity().not_after)?,
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        })
    }

    /// The validity window, in seconds since the epoch.
    pub fn validity(&self) -> (u64, u64) {
        (self.not_before, self.not_after)
    }

    /// Whether `presented` (with no chain) is the pinned certificate.
    pub fn matches(
        &self,
        presented: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> bool {
        presented.as_ref() == self.der.as_ref() && intermediates.is_empty()
    }

    /// Whether `presented` is the pinned certificate and valid at `now`.
    pub fn check(
        &self,
        presented: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        if !self.matches(presented, intermediates) {
            return Err(CertificateError::UnknownIssuer.into());
        }
        if now.as_secs() < self.not_before {
            return Err(CertificateError::NotValidYet.into());
        }
        if now.as_secs() > self.not_after {
            return Err(CertificateError::Expired.into());
        }
        Ok(())
    }
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity, intermediates, now)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for Pinned {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity, intermediates, now)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
