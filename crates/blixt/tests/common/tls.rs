//! TLS backends and clients for the lab tests (`tls_standalone.rs`, `kubernetes.rs`): rustls
//! servers with certificates of their own in backend namespaces, and clients that tell the
//! backends apart by the certificate that comes back.
#![allow(dead_code)] // each test binary uses its own subset

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use blixt_lab::topology::Lab;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};

/// The backends' TLS port.
pub const PORT: u16 = 8443;

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls server on `[::]:8443` (both families) of a backend namespace, with a certificate
/// of its own; answers each line with `<name>: <line>`.
pub struct TlsBackend {
    pub cert: CertificateDer<'static>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
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
    pub fn start(lab: &Lab, i: usize) -> TlsBackend {
        let name = format!("be{i}");
        let ck = rcgen::generate_simple_self_signed(vec![format!("{name}.backend.test")])
            .expect("rcgen");
        let cert = ck.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(vec![cert.clone()], key)
                .expect("server config"),
        );
        let listener = lab.backends[i]
            .ns
            .run_in(|| TcpListener::bind(("::", PORT)))
            .expect("backend bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((sock, _)) => {
                        let (config, name, stop) = (config.clone(), name.clone(), stop2.clone());
                        std::thread::spawn(move || serve(sock, config, &name, &stop));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => panic!("backend accept: {e}"),
                }
            }
        });
        TlsBackend {
            cert,
            stop,
            thread: Some(thread),
        }
    }
}

fn serve(sock: TcpStream, config: Arc<rustls::ServerConfig>, name: &str, stop: &AtomicBool) {
    let _ = sock.set_nonblocking(false);
    let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
    let conn = rustls::ServerConnection::new(config).expect("server conn");
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

/// Accepts any certificate: the test tells the backends apart by which one came back.
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

pub type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS connection to `vip` with server name `sni` (`None`: no SNI extension), from the
/// calling thread's namespace. Returns the index of the backend whose certificate came back.
pub fn connect(
    vip: SocketAddr,
    sni: Option<&str>,
    certs: &[CertificateDer<'static>],
) -> std::io::Result<(usize, Tls)> {
    let p = provider();
    let mut config = rustls::ClientConfig::builder_with_provider(p.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(p)))
        .with_no_client_auth();
    config.enable_sni = sni.is_some();
    let name =
        ServerName::try_from(sni.unwrap_or("no-sni.invalid").to_string()).expect("server name");
    let sock = TcpStream::connect_timeout(&vip, Duration::from_secs(5))?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client conn");
    let mut tls = rustls::StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    let got = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("a server certificate");
    let i = certs
        .iter()
        .position(|c| c == got)
        .expect("the certificate of one of the backends");
    Ok((i, tls))
}

/// Sends a line, returns the answer (`beN: line`).
pub fn ping(tls: &mut Tls, line: &str) -> std::io::Result<String> {
    tls.write_all(format!("{line}\n").as_bytes())?;
    tls.flush()?;
    let mut answer = String::new();
    BufReader::new(tls).read_line(&mut answer)?;
    Ok(answer.trim_end().to_string())
}
