//! The TLS load generator: `concurrency` tasks, each looping over connect, a full TLS handshake
//! with SNI (rustls, no session resumption), reading the backend's short answer to EOF, close.
//!
//! Every connection is checked: the server certificate must be the one of the backend its
//! server name routes to, and the answer must name that backend. Handshake latency is the time
//! from the start of the TCP connect to the completed TLS handshake (what a client waits
//! before it can send its first request); every sample of the measurement window is kept, so
//! the percentiles are exact.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::servers::{provider, Backend};

/// A connection that takes longer than this in all counts as an error.
const CONN_TIMEOUT: Duration = Duration::from_secs(5);

/// Error messages kept per run (the first ones).
const KEPT_ERRORS: usize = 5;

/// What to run.
#[derive(Debug, Clone, Copy)]
pub struct LoadSpec {
    pub concurrency: usize,
    /// Connections in this first stretch are made but not counted.
    pub warmup: Duration,
    /// The measurement window after the warm-up.
    pub duration: Duration,
}

/// What one run measured (window only).
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    /// Connections that started and completed inside the window, verified.
    pub completed: u64,
    pub window_s: f64,
    /// Handshake latency of each completed connection, microseconds, sorted.
    pub handshake_us: Vec<u32>,
    /// Failed connections (connect, handshake, read, timeout) over the whole run.
    pub errors: u64,
    /// Connections that reached a backend other than the one their server name routes to.
    pub wrong_backend: u64,
    /// Verified connections per backend over the whole run (warm-up included).
    pub per_backend: Vec<u64>,
    pub error_samples: Vec<String>,
}

impl LoadResult {
    pub fn conn_per_s(&self) -> f64 {
        self.completed as f64 / self.window_s
    }

    /// The `p`-th percentile (0..=100) of the handshake latency in milliseconds (nearest rank).
    pub fn handshake_ms(&self, p: f64) -> f64 {
        if self.handshake_us.is_empty() {
            return f64::NAN;
        }
        let n = self.handshake_us.len();
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        self.handshake_us[rank.clamp(1, n) - 1] as f64 / 1000.0
    }
}

/// Accepts exactly the lab's backend certificates (pinned, compared byte for byte) and checks
/// the handshake signatures for real, as any client does.
#[derive(Debug)]
struct Pinned {
    certs: Vec<CertificateDer<'static>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.certs.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The client configuration: default protocol versions (TLS 1.3 negotiated), SNI on, no
/// resumption (every connection is a full handshake), the backends' certificates pinned.
pub fn client_config(backends: &[Backend]) -> Result<Arc<rustls::ClientConfig>> {
    let p = provider();
    let mut c = rustls::ClientConfig::builder_with_provider(p.clone())
        .with_safe_default_protocol_versions()
        .context("rustls protocol versions")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned {
            certs: backends.iter().map(|b| b.cert.clone()).collect(),
            provider: p,
        }))
        .with_no_client_auth();
    c.resumption = rustls::client::Resumption::disabled();
    c.enable_sni = true;
    Ok(Arc::new(c))
}

struct Shared {
    /// Where to connect for the server name of each backend.
    targets: Vec<SocketAddr>,
    connector: TlsConnector,
    backends: Vec<Backend>,
    names: Vec<ServerName<'static>>,
    window_start: Instant,
    window_end: Instant,
    next: AtomicU64,
    errors: AtomicU64,
    wrong: AtomicU64,
}

/// One connection: the backend index it reached (by certificate and answer) and its
/// handshake latency.
async fn one(sh: &Shared, which: usize) -> Result<(usize, Duration)> {
    let t0 = Instant::now();
    let target = sh.targets[which];
    let tcp = TcpStream::connect(target)
        .await
        .with_context(|| format!("connecting to {target}"))?;
    tcp.set_nodelay(true).context("TCP_NODELAY")?;
    let mut tls = sh
        .connector
        .connect(sh.names[which].clone(), tcp)
        .await
        .context("TLS handshake")?;
    let handshake = t0.elapsed();
    let got = {
        let (_, conn) = tls.get_ref();
        let cert = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .context("no server certificate")?;
        sh.backends
            .iter()
            .position(|b| b.cert.as_ref() == cert.as_ref())
            .context("a certificate of no backend")?
    };
    let mut answer = Vec::with_capacity(64);
    tls.read_to_end(&mut answer)
        .await
        .context("reading the answer")?;
    anyhow::ensure!(
        answer == sh.backends[got].answer(),
        "answer {:?} does not come from {}, whose certificate was sent",
        String::from_utf8_lossy(&answer),
        sh.backends[got].name
    );
    Ok((got, handshake))
}

/// Runs the load: connections with server name `backends[i].sni` go to `targets[i]` (a
/// VIP:port routing that name to backend `i`, or the backend itself). Must run on a thread in
/// the client's network namespace: the runtime it builds creates its sockets there.
pub fn run(targets: &[SocketAddr], backends: &[Backend], spec: LoadSpec) -> Result<LoadResult> {
    anyhow::ensure!(
        targets.len() == backends.len(),
        "{} targets for {} backends",
        targets.len(),
        backends.len()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("tls-load")
        .enable_all()
        .build()
        .context("starting the load generator's runtime")?;
    let names = backends
        .iter()
        .map(|b| ServerName::try_from(b.sni.clone()).context("server name"))
        .collect::<Result<Vec<_>>>()?;
    let start = Instant::now();
    let sh = Arc::new(Shared {
        targets: targets.to_vec(),
        connector: TlsConnector::from(client_config(backends)?),
        backends: backends.to_vec(),
        names,
        window_start: start + spec.warmup,
        window_end: start + spec.warmup + spec.duration,
        next: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        wrong: AtomicU64::new(0),
    });
    let tasks: Vec<_> = (0..spec.concurrency)
        .map(|_| {
            let sh = sh.clone();
            runtime.spawn(async move { worker(&sh).await })
        })
        .collect();
    let mut out = LoadResult {
        window_s: spec.duration.as_secs_f64(),
        per_backend: vec![0; backends.len()],
        ..LoadResult::default()
    };
    runtime.block_on(async {
        for t in tasks {
            let w = t.await.context("a load task panicked")?;
            out.handshake_us.extend(w.samples);
            for (i, n) in w.per_backend.into_iter().enumerate() {
                out.per_backend[i] += n;
            }
            for e in w.errors {
                if out.error_samples.len() < KEPT_ERRORS {
                    out.error_samples.push(e);
                }
            }
        }
        anyhow::Ok(())
    })?;
    runtime.shutdown_background();
    out.handshake_us.sort_unstable();
    out.completed = out.handshake_us.len() as u64;
    out.errors = sh.errors.load(Relaxed);
    out.wrong_backend = sh.wrong.load(Relaxed);
    Ok(out)
}

#[derive(Default)]
struct WorkerOut {
    samples: Vec<u32>,
    per_backend: Vec<u64>,
    errors: Vec<String>,
}

async fn worker(sh: &Shared) -> WorkerOut {
    let mut out = WorkerOut {
        per_backend: vec![0; sh.backends.len()],
        ..WorkerOut::default()
    };
    loop {
        let started = Instant::now();
        if started >= sh.window_end {
            return out;
        }
        // server names in turn over all connections, so every backend gets its share
        let which = (sh.next.fetch_add(1, Relaxed) % sh.names.len() as u64) as usize;
        match tokio::time::timeout(CONN_TIMEOUT, one(sh, which)).await {
            Ok(Ok((got, handshake))) => {
                out.per_backend[got] += 1;
                if got != which {
                    sh.wrong.fetch_add(1, Relaxed);
                } else if started >= sh.window_start && Instant::now() <= sh.window_end {
                    out.samples
                        .push(handshake.as_micros().min(u32::MAX as u128) as u32);
                }
            }
            Ok(Err(e)) => {
                sh.errors.fetch_add(1, Relaxed);
                if out.errors.len() < KEPT_ERRORS {
                    out.errors.push(format!("{e:#}"));
                }
            }
            Err(_) => {
                sh.errors.fetch_add(1, Relaxed);
                if out.errors.len() < KEPT_ERRORS {
                    out.errors
                        .push(format!("connection not done within {CONN_TIMEOUT:?}"));
                }
            }
        }
    }
}
