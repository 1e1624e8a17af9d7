//! Transport security settings for the gRPC clients between peers.
//! Plain text until TLS is configured (the security issue adds the TLS modes).

use tonic::transport::Endpoint;

#[derive(Clone, Debug, Default)]
pub enum ClientTls {
    #[default]
    Plain,
}

impl ClientTls {
    pub fn scheme(&self) -> &'static str {
        match self {
            ClientTls::Plain => "http",
        }
    }

    pub fn configure(&self, endpoint: Endpoint) -> Result<Endpoint, tonic::transport::Error> {
        match self {
            ClientTls::Plain => Ok(endpoint),
        }
    }
}
