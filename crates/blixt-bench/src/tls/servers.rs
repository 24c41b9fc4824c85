//! The lab's TLS backends: one rustls server per backend namespace, each with its own
//! self-signed certificate for its own server name (`a.example.com` on be0, `b.example.com` on
//! be1, ...). After the handshake a server writes one short line naming itself, then closes
//! (TLS close_notify, then FIN): the server closes first, so TIME_WAIT stays on the servers'
//! side and a long run never runs out of client ports.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use blixt_lab::NetNs;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Port of the TLS servers in the backend namespaces.
pub const BACKEND_PORT: u16 = 8443;

/// The crypto provider of every client and server in the suite (ring, rustls' default set).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// One backend as the clients know it.
#[derive(Debug, Clone)]
pub struct Backend {
    /// `be0`, `be1`, ...
    pub name: String,
    /// The server name routed to it.
    pub sni: String,
    /// Where it listens (inside its namespace).
    pub addr: SocketAddr,
    /// Its certificate (ECDSA P-256, self-signed for `sni`).
    pub cert: CertificateDer<'static>,
}

impl Backend {
    /// What it writes after the handshake.
    pub fn answer(&self) -> Vec<u8> {
        format!("{}\n", self.name).into_bytes()
    }
}

/// The server name of backend `i`: `a.example.com`, `b.example.com`, ...
pub fn sni(i: usize) -> String {
    format!("{}.example.com", (b'a' + (i % 26) as u8) as char)
}

/// The running servers; dropping this stops them.
#[derive(Debug)]
pub struct Servers {
    pub backends: Vec<Backend>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Servers {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Starts a TLS server in each of `namespaces` (backend `i` at `addrs[i]`:[`BACKEND_PORT`]),
/// all served by one two-thread runtime of this process.
pub fn start(namespaces: &[(&NetNs, std::net::IpAddr)]) -> Result<Servers> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("tls-backend")
        .enable_all()
        .build()
        .context("starting the backends' runtime")?;
    let mut backends = Vec::new();
    for (i, (ns, ip)) in namespaces.iter().enumerate() {
        let b_name = format!("be{i}");
        let sni = sni(i);
        let ck = rcgen::generate_simple_self_signed(vec![sni.clone()])
            .with_context(|| format!("certificate for {sni}"))?;
        let cert = ck.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("rustls protocol versions")?
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .with_context(|| format!("server configuration of {b_name}"))?;
        // full handshakes only: no tickets, no session cache
        config.send_tls13_tickets = 0;
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let addr = SocketAddr::new(*ip, BACKEND_PORT);
        let std_listener = ns
            .run_in(|| -> std::io::Result<std::net::TcpListener> {
                let l = std::net::TcpListener::bind(addr)?;
                l.set_nonblocking(true)?;
                Ok(l)
            })
            .with_context(|| format!("binding {addr} in {}", ns.name()))?;
        let listener = {
            let _in_rt = runtime.enter();
            TcpListener::from_std(std_listener).context("registering a backend listener")?
        };
        let answer = format!("{b_name}\n").into_bytes();
        runtime.spawn(serve(listener, acceptor, answer));
        backends.push(Backend {
            name: b_name,
            sni,
            addr,
            cert,
        });
    }
    Ok(Servers {
        backends,
        runtime: Some(runtime),
    })
}

async fn serve(listener: TcpListener, acceptor: TlsAcceptor, answer: Vec<u8>) {
    let answer: Arc<[u8]> = answer.into();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            // EMFILE and the like: back off, the backlog waits
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        let acceptor = acceptor.clone();
        let answer = answer.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                return;
            };
            if tls.write_all(&answer).await.is_ok() {
                // close_notify, then FIN
                let _ = tls.shutdown().await;
            }
        });
    }
}
