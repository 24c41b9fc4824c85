//! TLS on both ends of the lab, for the TLS passthrough tests (feature `tls-testing`):
//! [`TlsBackend`], a rustls server with a self-signed certificate of its own in a backend
//! namespace, and [`connect`], a rustls client that tells the backends apart by the
//! certificate that comes back.
//!
//! ```no_run
//! use blixt_lab::tls::{connect, ping, TlsBackend};
//! use blixt_lab::{Lab, LabSpec};
//!
//! let lab = Lab::build(LabSpec::with_backends(2))?;
//! let backends = [TlsBackend::start(&lab, 0)?, TlsBackend::start(&lab, 1)?];
//! let certs: Vec<_> = backends.iter().map(|b| b.cert.clone()).collect();
//! let target = (lab.backend(1).v4(), blixt_lab::tls::BACKEND_PORT).into();
//! let (i, mut tls) = lab.client.ns.run_in(|| connect(target, Some("b.example.com"), &certs))?;
//! assert_eq!((i, ping(&mut tls, "hi")?), (1, "be1: hi".to_string()));
//! # anyhow::Ok(())
//! ```

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};

use crate::topology::Lab;

/// A backend's certificate, as [`TlsBackend::cert`] holds it and [`connect`] takes them.
pub use rustls::pki_types::CertificateDer;

/// The port [`TlsBackend`] listens on in its namespace.
pub const BACKEND_PORT: u16 = 8443;

/// The crypto provider of the servers and clients here (ring, as the workspace's rustls).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls server on `[::]:8443` (both families) of backend `i`'s namespace, named `be<i>`,
/// with a self-signed certificate of its own (for `be<i>.backend.test`). It answers each
/// line with `be<i>: <line>`. Stops accepting when dropped.
pub struct TlsBackend {
    /// The server's certificate: [`connect`] finds the backend by it.
    pub cert: CertificateDer<'static>,
    name: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for TlsBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsBackend")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl TlsBackend {
    /// Starts the server of backend `i` of `lab`.
    ///
    /// # Errors
    /// When the certificate or the server configuration cannot be made, or the port cannot
    /// be bound in the backend's namespace.
    pub fn start(lab: &Lab, i: usize) -> anyhow::Result<TlsBackend> {
        let name = format!("be{i}");
        let ck = rcgen::generate_simple_self_signed(vec![format!("{name}.backend.test")])
            .with_context(|| format!("self-signed certificate of {name}"))?;
        let cert = ck.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .context("TLS protocol versions")?
                .with_no_client_auth()
                .with_single_cert(vec![cert.clone()], key)
                .with_context(|| format!("server configuration of {name}"))?,
        );
        let listener = lab
            .backend(i)
            .ns
            .run_in(|| TcpListener::bind(("::", BACKEND_PORT)))
            .with_context(|| format!("binding [::]:{BACKEND_PORT} in the namespace of {name}"))?;
        listener
            .set_nonblocking(true)
            .context("non-blocking listener")?;
        let stop = Arc::new(AtomicBool::new(false));
        let (stop2, name2) = (stop.clone(), name.clone());
        let thread = std::thread::spawn(move || accept_loop(&listener, &config, &name2, &stop2));
        Ok(TlsBackend {
            cert,
            name,
            stop,
            thread: Some(thread),
        })
    }
}

/// Accepts until `stop`, each connection served on a thread of its own.
fn accept_loop(
    listener: &TcpListener,
    config: &Arc<rustls::ServerConfig>,
    name: &str,
    stop: &Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((sock, _)) => {
                let (config, name, stop) = (config.clone(), name.to_string(), stop.clone());
                std::thread::spawn(move || serve(sock, config, &name, &stop));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => {
                eprintln!("TLS backend {name}: accept: {e}");
                return;
            }
        }
    }
}

/// Answers lines on one connection until the client closes it, an error, or `stop`.
fn serve(sock: TcpStream, config: Arc<rustls::ServerConfig>, name: &str, stop: &AtomicBool) {
    // the read timeout lets the loop notice `stop`
    if sock.set_nonblocking(false).is_err()
        || sock
            .set_read_timeout(Some(Duration::from_millis(200)))
            .is_err()
    {
        return;
    }
    let Ok(conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let mut line = String::new();
    while !stop.load(Ordering::Relaxed) {
        let mut reader = BufReader::new(&mut tls);
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {
                let answer = format!("{name}: {line}");
                line.clear();
                drop(reader);
                if tls.write_all(answer.as_bytes()).is_err() || tls.flush().is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// Accepts any server certificate: the caller tells the backends apart by which one came
/// back. Signatures are still checked, so the server holds the certificate's key.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A client's TLS connection.
pub type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS connection to `vip` with server name `sni` (`None`: no SNI extension), from the
/// calling thread's namespace (use `lab.client.ns.run_in`). Returns the index in `certs` of
/// the certificate that came back, that is which backend answered.
///
/// # Errors
/// The connection's or the handshake's error (a reset, a refusal, a timeout).
///
/// # Panics
/// When the server sent no certificate or one that is not in `certs`: the connection
/// reached something other than the test's backends.
pub fn connect(
    vip: SocketAddr,
    sni: Option<&str>,
    certs: &[CertificateDer<'static>],
) -> std::io::Result<(usize, Tls)> {
    let p = provider();
    let mut config = rustls::ClientConfig::builder_with_provider(p.clone())
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(p)))
        .with_no_client_auth();
    config.enable_sni = sni.is_some();
    let name = ServerName::try_from(sni.unwrap_or("no-sni.invalid").to_string())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let sock = TcpStream::connect_timeout(&vip, Duration::from_secs(5))?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    let conn =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    let got = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .unwrap_or_else(|| panic!("{vip}: no server certificate"));
    let i = certs
        .iter()
        .position(|c| c == got)
        .unwrap_or_else(|| panic!("{vip}: the certificate is none of the backends'"));
    Ok((i, tls))
}

/// Sends a line, returns the answer (`beN: line`).
///
/// # Errors
/// The connection's error.
pub fn ping(tls: &mut Tls, line: &str) -> std::io::Result<String> {
    tls.write_all(format!("{line}\n").as_bytes())?;
    tls.flush()?;
    let mut answer = String::new();
    BufReader::new(tls).read_line(&mut answer)?;
    Ok(answer.trim_end().to_string())
}

/// Asserts that a [`connect`] was reset (connection reset or end of stream in the
/// handshake), as the proxy does with a name no route matches; `what` names the attempt.
///
/// # Panics
/// When the connection succeeded or failed otherwise.
pub fn expect_reset(r: std::io::Result<(usize, Tls)>, what: &str) {
    match r {
        Ok((i, _)) => panic!("{what}: expected a reset, landed on be{i}"),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
            ),
            "{what}: expected a reset, got {e}"
        ),
    }
}
