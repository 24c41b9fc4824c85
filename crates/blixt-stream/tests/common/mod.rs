//! Test fixtures: certificates made with rcgen, servers on loopback ports, snapshots.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use blixt_core::snapshot::{
    Backend, BackendAddr, BackendState, Frontend, FrontendKey, Protocol, Snapshot,
};
use blixt_core::tls::{SniRoute, TlsFrontend};
use blixt_proto::pb;
use blixt_proto::pb::snapshot_service_client::SnapshotServiceClient;
use blixt_stream::{
    AccessPolicy, AuthMethod, Authenticator, BearerAuthenticator, Identity, Pem, ServerTls,
    SnapshotServer, StaticTokens,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// A CA that signs a server certificate for localhost / 127.0.0.1 and client certificates.
pub struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// PEM certificate and key.
#[derive(Clone)]
pub struct CertKey {
    pub cert: String,
    pub key: String,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Pki { ca }
    }

    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    fn issue(&self, params: CertificateParams) -> CertKey {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        CertKey {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    pub fn server(&self) -> CertKey {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "blixt-controller");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A client certificate with subject CN `cn` (and optionally O `group`).
    pub fn client(&self, cn: &str) -> CertKey {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "blixt-agents");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params)
    }

    /// Server TLS asking for client certificates from this CA.
    pub fn server_tls(&self, client_ca: Option<&Pki>) -> ServerTls {
        let s = self.server();
        ServerTls {
            cert_chain: Pem::from(s.cert),
            key: Pem::from(s.key),
            client_ca: client_ca.map(|ca| Pem::from(ca.ca_pem())),
        }
    }

    /// tonic client TLS trusting this CA, with an optional client certificate.
    pub fn tonic_client_tls(&self, identity: Option<&CertKey>) -> ClientTlsConfig {
        let mut c = ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(self.ca_pem()))
            .domain_name("localhost");
        if let Some(id) = identity {
            c = c.identity(tonic::transport::Identity::from_pem(&id.cert, &id.key));
        }
        c
    }
}

pub fn token_identity(user: &str, node: Option<&str>) -> Identity {
    Identity {
        username: user.into(),
        groups: vec!["system:serviceaccounts".into()],
        node_name: node.map(Into::into),
        method: AuthMethod::Token,
    }
}

pub const AGENT_SA: &str = "system:serviceaccount:blixt-system:blixt-agent";

/// A bearer authenticator accepting `agent-token` as the agent service account and
/// `other-token` as some other service account.
pub fn token_auth() -> Arc<dyn Authenticator> {
    Arc::new(BearerAuthenticator::new(Arc::new(
        StaticTokens::new()
            .with("agent-token", token_identity(AGENT_SA, None))
            .with("node-a-token", token_identity(AGENT_SA, Some("node-a")))
            .with(
                "other-token",
                token_identity("system:serviceaccount:default:default", None),
            ),
    )))
}

pub fn token_server() -> SnapshotServer {
    SnapshotServer::new(token_auth(), AccessPolicy::users([AGENT_SA]))
}

/// A server running on a loopback port.
pub struct Running {
    pub addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    pub async fn start(server: &SnapshotServer, tls: Option<ServerTls>) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::on(server, tls, listener)
    }

    /// Binds `addr` again (a restarted controller), retrying while the old socket lingers.
    pub async fn restart_on(
        server: &SnapshotServer,
        tls: Option<ServerTls>,
        addr: SocketAddr,
    ) -> Running {
        let listener = retry(Duration::from_secs(5), || async {
            TcpListener::bind(addr).await.ok()
        })
        .await
        .expect("rebinding the server address");
        Self::on(server, tls, listener)
    }

    fn on(server: &SnapshotServer, tls: Option<ServerTls>, listener: TcpListener) -> Running {
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let server = server.clone();
        let s = stop.clone();
        let task = tokio::spawn(async move {
            server
                .serve(listener, tls.as_ref(), s.cancelled_owned())
                .await
                .expect("serve");
        });
        Running { addr, stop, task }
    }

    pub fn http(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn https(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Stops the server and waits until it has returned.
    pub async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server did not shut down")
            .unwrap();
    }
}

/// A bare generated client, for checking status codes without the agent client's retries.
pub async fn raw_client(
    url: String,
    tls: Option<ClientTlsConfig>,
) -> SnapshotServiceClient<Channel> {
    let mut ep = Endpoint::from_shared(url).unwrap();
    if let Some(tls) = tls {
        ep = ep.tls_config(tls).unwrap();
    }
    SnapshotServiceClient::new(ep.connect().await.expect("connect"))
        .max_decoding_message_size(256 << 20)
}

pub fn subscribe_req(node: &str, token: Option<&str>) -> tonic::Request<pb::SubscribeRequest> {
    let mut r = tonic::Request::new(pb::SubscribeRequest {
        node_name: node.into(),
        agent_version: "test".into(),
        last_generation: 0,
    });
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

pub fn ack_req(node: &str, generation: u64, token: Option<&str>) -> tonic::Request<pb::AckRequest> {
    let mut r = tonic::Request::new(pb::AckRequest {
        node_name: node.into(),
        generation,
        ok: true,
        error: String::new(),
    });
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

/// Subscribes and returns the first update, or the status the server answered.
pub async fn first_update(
    client: &mut SnapshotServiceClient<Channel>,
    req: tonic::Request<pb::SubscribeRequest>,
) -> Result<pb::SnapshotUpdate, tonic::Status> {
    let mut stream = client.subscribe(req).await?.into_inner();
    let msg = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("no update within 5 s")?;
    Ok(msg.expect("stream ended without an update"))
}

/// A snapshot with `n` TCP frontends of four backends each, distinct per generation.
pub fn snapshot(generation: u64, n: usize) -> Snapshot {
    let frontends = (0..n)
        .map(|i| Frontend {
            name: format!("default/gw-{generation}/listener-{i}"),
            key: FrontendKey {
                vip: format!("192.0.2.{}", i % 250 + 1).parse().unwrap(),
                port: 1000 + i as u16,
                protocol: if i % 2 == 0 {
                    Protocol::Tcp
                } else {
                    Protocol::Udp
                },
            },
            backends: (0..4)
                .map(|b| Backend {
                    addr: BackendAddr {
                        addr: format!("10.0.{}.{}", i % 250, b + 1).parse().unwrap(),
                        port: 8080,
                    },
                    weight: (generation % 1000) as u32 + b,
                    state: if b == 3 {
                        BackendState::Terminating
                    } else {
                        BackendState::Active
                    },
                })
                .collect(),
            reject_weight: 0,
        })
        .collect();
    Snapshot {
        generation,
        frontends,
    }
}

pub fn tls_frontends(generation: u64) -> Vec<TlsFrontend> {
    vec![TlsFrontend {
        name: "default/gw/tls".into(),
        vip: "2001:db8::1".parse().unwrap(),
        port: 443,
        routes: vec![SniRoute {
            hostname: format!("g{generation}.example.com"),
            listener: "tls".into(),
            route: Some("default/r".into()),
            backends: vec![],
            reject_weight: 1,
        }],
    }]
}

/// Polls `f` until it returns `Some`, or gives up after `limit`.
pub async fn retry<T, F, Fut>(limit: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `cond` holds on the server, re-checking whenever it reports a change.
pub async fn wait_for(server: &SnapshotServer, what: &str, cond: impl Fn(&SnapshotServer) -> bool) {
    let mut changes = server.changes();
    let done = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            changes.borrow_and_update();
            if cond(server) {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), changes.changed()).await;
        }
    })
    .await;
    assert!(
        done.is_ok(),
        "timed out waiting for {what}; nodes: {:#?}",
        server.nodes()
    );
}
