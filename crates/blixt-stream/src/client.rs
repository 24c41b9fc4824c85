//! The agent's side: subscribe, apply, ack, and reconnect for as long as the agent runs.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use blixt_core::generation::Generation;
use blixt_proto::pb;
use blixt_proto::pb::snapshot_service_client::SnapshotServiceClient;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};
use tracing::{debug, info, warn};

use crate::server::check_node_name;
use crate::tls::ClientTls;

/// A bearer token, read again for every RPC when it comes from a file (projected
/// service-account tokens are rotated in place by the kubelet).
#[derive(Clone, PartialEq, Eq)]
pub enum Token {
    Static(String),
    File(PathBuf),
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Static(_) => f.write_str("Token::Static(..)"),
            Token::File(p) => write!(f, "Token::File({})", p.display()),
        }
    }
}

impl Token {
    fn load(&self) -> Result<String, String> {
        match self {
            Token::Static(t) => Ok(t.clone()),
            Token::File(p) => std::fs::read_to_string(p)
                .map(|t| t.trim().to_owned())
                .map_err(|e| format!("reading token {}: {e}", p.display())),
        }
    }
}

/// Reconnection delays: doubling from `initial` up to `max`, each drawn uniformly from its
/// upper half so that agents restarted together do not reconnect in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(30),
        }
    }
}

/// Where and how the agent connects.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `https://blixt-controller.blixt-system.svc:9443` (TLS) or `http://…` (plaintext).
    pub endpoint: String,
    pub node_name: String,
    pub agent_version: String,
    /// Required for `https` endpoints.
    pub tls: Option<ClientTls>,
    pub token: Option<Token>,
    /// Generation the agent already serves (re-adopted from pinned maps), sent on subscribe.
    pub last_generation: u64,
    pub backoff: Backoff,
    pub connect_timeout: Duration,
    /// HTTP/2 pings: a controller that stops answering for this long (twice) is given up on.
    pub keepalive: Duration,
    /// Longest wait for an ack to be accepted.
    pub ack_timeout: Duration,
}

impl ClientConfig {
    pub fn new(endpoint: impl Into<String>, node_name: impl Into<String>) -> Self {
        ClientConfig {
            endpoint: endpoint.into(),
            node_name: node_name.into(),
            agent_version: env!("CARGO_PKG_VERSION").into(),
            tls: None,
            token: None,
            last_generation: 0,
            backoff: Backoff::default(),
            connect_timeout: Duration::from_secs(5),
            keepalive: Duration::from_secs(15),
            ack_timeout: Duration::from_secs(10),
        }
    }
}

/// A configuration the client cannot start with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("node name: {0}")]
    NodeName(String),
}

/// What the agent's health endpoint and metrics show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientStatus {
    /// Subscribed and receiving.
    pub connected: bool,
    /// Generation applied last (kept while disconnected: the dataplane keeps serving it).
    pub applied: Option<u64>,
    /// Why the last session ended or the last snapshot was refused.
    pub last_error: Option<String>,
    /// Successful subscriptions so far.
    pub subscriptions: u64,
}

/// The agent's snapshot subscriber.
#[derive(Debug)]
pub struct SnapshotClient {
    config: ClientConfig,
    endpoint: Endpoint,
    status: watch::Sender<ClientStatus>,
}

#[derive(Clone)]
struct TokenInterceptor(Option<Token>);

impl Interceptor for TokenInterceptor {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(token) = &self.0 {
            let token = token.load().map_err(Status::unauthenticated)?;
            let value = MetadataValue::try_from(format!("Bearer {token}"))
                .map_err(|_| Status::unauthenticated("token is not printable ASCII"))?;
            req.metadata_mut().insert("authorization", value);
        }
        Ok(req)
    }
}

type Client = SnapshotServiceClient<
    tonic::service::interceptor::InterceptedService<Channel, TokenInterceptor>,
>;

/// The last update applied, to skip re-applying it when a reconnection brings it again.
type Applied = Option<Generation>;

impl SnapshotClient {
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        check_node_name("node_name", &config.node_name)
            .map_err(|s| ClientError::NodeName(s.message().to_owned()))?;
        let bad = |reason: String| ClientError::Endpoint {
            endpoint: config.endpoint.clone(),
            reason,
        };
        let endpoint = Endpoint::from_shared(config.endpoint.clone())
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(config.connect_timeout)
            .http2_keep_alive_interval(config.keepalive)
            .keep_alive_timeout(config.keepalive)
            .keep_alive_while_idle(true)
            .tcp_nodelay(true);
        match endpoint.uri().scheme_str() {
            Some("https") if config.tls.is_none() => {
                return Err(bad("https needs a TLS configuration".into()))
            }
            Some("http") if config.tls.is_some() => {
                return Err(bad("TLS is configured but the endpoint is http".into()))
            }
            Some("http" | "https") => {}
            _ => return Err(bad("scheme must be http or https".into())),
        }
        Ok(SnapshotClient {
            config,
            endpoint,
            status: watch::Sender::new(ClientStatus::default()),
        })
    }

    pub fn status(&self) -> watch::Receiver<ClientStatus> {
        self.status.subscribe()
    }

    /// Subscribes, applies every snapshot with `on_snapshot`, acks the outcome, and reconnects
    /// with backoff whenever the stream breaks, until `shutdown` completes. Returns the last
    /// applied generation.
    ///
    /// `on_snapshot(update)` gets well-formed updates with [validated] snapshots only (others
    /// are acked as failed without calling it); its `Err` is acked as the reason. It is not
    /// called again for an update identical to the one it applied last; it is called again
    /// with the same generation when only the VIPs this node announces changed. Nothing is
    /// ever "un-applied": while disconnected the caller keeps serving what it has. Shutdown
    /// never interrupts a call of `on_snapshot`.
    ///
    /// [validated]: Snapshot::validate
    pub async fn run<F>(
        &self,
        mut on_snapshot: F,
        shutdown: impl Future<Output = ()>,
    ) -> Option<u64>
    where
        F: FnMut(Generation) -> Result<(), String>,
    {
        tokio::pin!(shutdown);
        let mut applied: Applied = None;
        let mut delay = self.config.backoff.initial;
        loop {
            let mut received = false;
            let ended = tokio::select! {
                () = &mut shutdown => break,
                e = self.session(&mut applied, &mut on_snapshot, &mut received) => e,
            };
            if received {
                delay = self.config.backoff.initial;
            }
            warn!(node = %self.config.node_name, "snapshot stream: {ended}; reconnecting");
            self.status.send_modify(|s| {
                s.connected = false;
                s.last_error = Some(ended);
            });
            let sleep = delay.mul_f64(rand::random_range(0.5..=1.0));
            delay = (delay * 2).min(self.config.backoff.max);
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(sleep) => {}
            }
        }
        self.status.send_modify(|s| s.connected = false);
        applied.map(|u| u.number())
    }

    /// One connection: returns why it ended.
    async fn session<F>(
        &self,
        applied: &mut Applied,
        on_snapshot: &mut F,
        received: &mut bool,
    ) -> String
    where
        F: FnMut(Generation) -> Result<(), String>,
    {
        let mut endpoint = self.endpoint.clone();
        if let Some(tls) = &self.config.tls {
            // Read the files for every connection: certificates are rotated in place.
            let config = match tls.tonic_config() {
                Ok(c) => c,
                Err(e) => return e.to_string(),
            };
            endpoint = match endpoint.tls_config(config) {
                Ok(e) => e,
                Err(e) => return format!("TLS configuration: {e}"),
            };
        }
        let channel = match endpoint.connect().await {
            Ok(c) => c,
            Err(e) => {
                return format!(
                    "connecting to {}: {}",
                    self.config.endpoint,
                    error_chain(&e)
                )
            }
        };
        let mut client: Client = SnapshotServiceClient::with_interceptor(
            channel,
            TokenInterceptor(self.config.token.clone()),
        )
        .max_decoding_message_size(256 << 20);
        let last_generation = applied
            .as_ref()
            .map_or(self.config.last_generation, Generation::number);
        let stream = match client
            .subscribe(pb::SubscribeRequest {
                node_name: self.config.node_name.clone(),
                agent_version: self.config.agent_version.clone(),
                last_generation,
            })
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) => return describe(&s, "subscribe"),
        };
        let latest = Latest::read(stream);
        loop {
            let (update, ended) = latest.next().await;
            let Some(update) = update else {
                return ended.unwrap_or_else(|| "the stream reader stopped".into());
            };
            if !*received {
                *received = true;
                info!(node = %self.config.node_name, endpoint = %self.config.endpoint,
                      "subscribed to snapshots");
                self.status.send_modify(|s| {
                    s.connected = true;
                    s.subscriptions += 1;
                });
            }
            let generation = update.generation;
            let outcome = self.apply(update, applied, on_snapshot);
            let ack = pb::AckRequest {
                node_name: self.config.node_name.clone(),
                generation,
                ok: outcome.is_ok(),
                error: outcome.clone().err().unwrap_or_default(),
            };
            self.status.send_modify(|s| match &outcome {
                Ok(()) => s.applied = Some(generation),
                Err(e) => s.last_error = Some(format!("generation {generation}: {e}")),
            });
            match tokio::time::timeout(self.config.ack_timeout, client.ack(ack)).await {
                Ok(Ok(_)) => {}
                Ok(Err(s)) => return describe(&s, "ack"),
                Err(_) => return format!("ack of generation {generation} timed out"),
            }
            if let Some(ended) = ended {
                return ended;
            }
        }
    }

    /// Decodes, validates and applies one update; the error is what the ack says.
    fn apply<F>(
        &self,
        update: pb::SnapshotUpdate,
        applied: &mut Applied,
        on_snapshot: &mut F,
    ) -> Result<(), String>
    where
        F: FnMut(Generation) -> Result<(), String>,
    {
        let generation = update.generation;
        let update = Generation::try_from(update).map_err(|e| {
            warn!(generation, "malformed snapshot: {e}");
            format!("malformed snapshot: {e}")
        })?;
        update.snapshot.validate().map_err(|e| {
            warn!(generation, "invalid snapshot: {e}");
            format!("invalid snapshot: {e}")
        })?;
        if applied.as_ref() == Some(&update) {
            debug!(generation, "snapshot already applied");
            return Ok(());
        }
        match on_snapshot(update.clone()) {
            Ok(()) => {
                debug!(generation, "snapshot applied");
                *applied = Some(update);
                Ok(())
            }
            Err(e) => {
                warn!(generation, "snapshot not applied: {e}");
                Err(e)
            }
        }
    }
}

/// The newest update received and not yet taken, filled by a task that keeps reading the
/// stream while the agent applies: updates superseded in the meantime are dropped unapplied,
/// whatever the transport had buffered.
struct Latest {
    slot: Arc<(Mutex<Slot>, Notify)>,
    reader: JoinHandle<()>,
}

#[derive(Default)]
struct Slot {
    update: Option<pb::SnapshotUpdate>,
    /// Why the stream ended, once it has.
    ended: Option<String>,
}

impl Latest {
    fn read(mut stream: tonic::Streaming<pb::SnapshotUpdate>) -> Latest {
        let slot = Arc::new((Mutex::new(Slot::default()), Notify::new()));
        let reader = {
            let slot = slot.clone();
            tokio::spawn(async move {
                loop {
                    let msg = stream.message().await;
                    let mut s = slot.0.lock().expect("update slot");
                    match msg {
                        Ok(Some(u)) => {
                            if let Some(old) = s.update.replace(u) {
                                debug!(generation = old.generation, "superseded before applying");
                            }
                        }
                        Ok(None) => s.ended = Some("the server ended the stream".into()),
                        Err(status) => s.ended = Some(describe(&status, "stream")),
                    }
                    let done = s.ended.is_some();
                    drop(s);
                    slot.1.notify_one();
                    if done {
                        break;
                    }
                }
            })
        };
        Latest { slot, reader }
    }

    /// Waits for the newest update, or the end of the stream (both when the last update came
    /// just before the end).
    async fn next(&self) -> (Option<pb::SnapshotUpdate>, Option<String>) {
        loop {
            {
                let mut s = self.slot.0.lock().expect("update slot");
                if s.update.is_some() || s.ended.is_some() {
                    return (s.update.take(), s.ended.take());
                }
            }
            self.slot.1.notified().await;
        }
    }
}

impl Drop for Latest {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn describe(s: &Status, during: &str) -> String {
    format!("{during}: {:?}: {}", s.code(), s.message())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}
