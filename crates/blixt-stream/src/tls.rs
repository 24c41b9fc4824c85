//! TLS for the snapshot stream: the server's rustls configuration and accept loop, and the
//! client's certificates.
//!
//! The server asks for a client certificate but lets the handshake finish without one, and
//! accepts any chain at handshake time while still checking the handshake signature (so the
//! client proves it holds the key of the certificate it sent). The chain is verified against
//! the client CA by [`crate::auth::MtlsAuthenticator`] on every RPC. This is what lets a
//! client without a certificate, or with one from another CA, get `UNAUTHENTICATED` with a
//! reason rather than a TLS alert that tonic reports as a transport error.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::auth::client_verifier;

/// A TLS setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error("{what}: {reason}")]
    Pem { what: &'static str, reason: String },
    #[error("reading {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// PEM text, in memory or in a file read each time it is needed (certificates and tokens
/// mounted from Secrets are rotated in place).
#[derive(Clone, PartialEq, Eq)]
pub enum Pem {
    Bytes(Vec<u8>),
    File(PathBuf),
}

impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Could be a private key: never printed.
            Pem::Bytes(b) => write!(f, "Pem::Bytes({} bytes)", b.len()),
            Pem::File(p) => write!(f, "Pem::File({})", p.display()),
        }
    }
}

impl Pem {
    pub fn load(&self) -> Result<Vec<u8>, TlsError> {
        match self {
            Pem::Bytes(b) => Ok(b.clone()),
            Pem::File(p) => std::fs::read(p).map_err(|e| TlsError::Read {
                path: p.clone(),
                reason: e.to_string(),
            }),
        }
    }
}

impl From<Vec<u8>> for Pem {
    fn from(b: Vec<u8>) -> Self {
        Pem::Bytes(b)
    }
}

impl From<String> for Pem {
    fn from(s: String) -> Self {
        Pem::Bytes(s.into_bytes())
    }
}

impl From<&str> for Pem {
    fn from(s: &str) -> Self {
        Pem::Bytes(s.as_bytes().to_vec())
    }
}

/// The server's certificate, and the CA its clients' certificates come from (if any).
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert_chain: Pem,
    pub key: Pem,
    /// When set, clients are asked for a certificate from this CA (verified by
    /// [`crate::auth::MtlsAuthenticator`]); when not, the server does not ask (token mode).
    pub client_ca: Option<Pem>,
}

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl ServerTls {
    /// The rustls configuration: TLS 1.2 and 1.3, ALPN `h2` (gRPC).
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let chain = self.cert_chain.load()?;
        let chain = CertificateDer::pem_slice_iter(&chain)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Pem {
                what: "server certificate",
                reason: e.to_string(),
            })?;
        if chain.is_empty() {
            return Err(TlsError::Pem {
                what: "server certificate",
                reason: "no CERTIFICATE block".into(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(&self.key.load()?).map_err(|e| TlsError::Pem {
            what: "server key",
            reason: e.to_string(),
        })?;
        let builder =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match &self.client_ca {
            Some(ca) => builder.with_client_cert_verifier(Arc::new(DeferredClientVerifier {
                inner: client_verifier(&ca.load()?)?,
            })),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Requests a client certificate and checks the handshake signature with it, but leaves the
/// chain to the authenticator (see the module documentation).
#[derive(Debug)]
struct DeferredClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for DeferredClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Deferred: MtlsAuthenticator verifies the chain on every RPC and answers
        // UNAUTHENTICATED; nothing is served on the strength of the handshake alone.
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Accepts TCP connections and runs their TLS handshakes concurrently (a slow or silent
/// client never holds up the others), handing finished ones to tonic.
pub(crate) fn tls_incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    stop: CancellationToken,
) -> ReceiverStream<io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = mpsc::channel(16);
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = stop.cancelled() => break,
                () = tx.closed() => break,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!("snapshot server: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
                let tls = tokio::select! {
                    h = handshake => h,
                    () = stop.cancelled() => return,
                };
                match tls {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => debug!("snapshot server: TLS handshake with {peer} failed: {e}"),
                    Err(_) => debug!("snapshot server: TLS handshake with {peer} timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// What the agent trusts and presents.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// CA of the controller's serving certificate.
    pub ca: Pem,
    /// Name to check in the server certificate; by default the endpoint's host.
    pub domain_name: Option<String>,
    /// Client certificate and key, for mTLS.
    pub identity: Option<(Pem, Pem)>,
}

impl ClientTls {
    /// tonic's configuration, with the files read now.
    pub(crate) fn tonic_config(&self) -> Result<tonic::transport::ClientTlsConfig, TlsError> {
        let mut c = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(self.ca.load()?));
        if let Some(d) = &self.domain_name {
            c = c.domain_name(d.clone());
        }
        if let Some((cert, key)) = &self.identity {
            c = c.identity(tonic::transport::Identity::from_pem(
                cert.load()?,
                key.load()?,
            ));
        }
        Ok(c)
    }
}
