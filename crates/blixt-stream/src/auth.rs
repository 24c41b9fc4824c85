//! Who is calling, and may they?
//!
//! Every RPC of the snapshot service first runs the server's [`Authenticator`] on the request
//! (metadata and TLS peer certificates) and then its [`AccessPolicy`] on the resulting
//! [`Identity`] and the node the request speaks for. Failures map to precise codes:
//! `UNAUTHENTICATED` when credentials are missing or do not check out, `PERMISSION_DENIED` when
//! a valid identity is not allowed (or speaks for another node), `UNAVAILABLE` when a verifier
//! could not reach what it needs (a TokenReview the API server did not answer). Nothing is
//! streamed before both checks pass.
//!
//! Two kinds of credentials:
//! - **Client certificates** ([`MtlsAuthenticator`]): the chain must lead to the configured
//!   client CA; the subject CN (or the first DNS SAN) names the node. The TLS layer only
//!   *requests* the certificate and checks the handshake signature (the client holds the key);
//!   the chain is verified here, so a missing certificate and one from another CA are answered
//!   with `UNAUTHENTICATED` and a reason instead of a bare handshake failure.
//! - **Bearer tokens** ([`BearerAuthenticator`]): `authorization: Bearer <token>`, checked by
//!   a [`TokenVerifier`]. [`StaticTokens`] serves tests and small setups; the controller plugs
//!   in a Kubernetes TokenReview verifier, wrapped in [`CachingVerifier`] so acks do not cost
//!   one review each.
//!
//! [`FirstPresented`] accepts several kinds: the first kind whose credential the request
//! carries decides (a bad certificate is not excused by a good token).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use tonic::metadata::MetadataMap;
use tonic::Status;

use crate::tls::TlsError;

/// How an identity was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AuthMethod {
    Certificate,
    Token,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Certificate CN (or first DNS SAN), or the token's username
    /// (`system:serviceaccount:NAMESPACE:NAME` for Kubernetes service accounts).
    pub username: String,
    /// Certificate O values, or the token's groups.
    pub groups: Vec<String>,
    /// The node this identity is bound to, when the credential says so: a certificate always
    /// does; a Kubernetes service-account token does when it is bound to a pod (TokenReview
    /// `extra["authentication.kubernetes.io/node-name"]`). A bound identity may only
    /// subscribe and ack as that node.
    pub node_name: Option<String>,
    pub method: AuthMethod,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = match self.method {
            AuthMethod::Certificate => "certificate",
            AuthMethod::Token => "token",
        };
        write!(f, "{how} identity {:?}", self.username)?;
        if !self.groups.is_empty() {
            write!(f, " (groups {})", self.groups.join(","))?;
        }
        Ok(())
    }
}

/// The parts of a request credentials come from.
#[derive(Debug, Clone, Copy)]
pub struct AuthRequest<'a> {
    pub metadata: &'a MetadataMap,
    /// The TLS client's certificate chain (end entity first), if the connection is TLS and the
    /// client sent one.
    pub peer_certs: Option<&'a [CertificateDer<'static>]>,
    pub remote_addr: Option<SocketAddr>,
}

/// Turns a request's credentials into an [`Identity`].
#[async_trait]
pub trait Authenticator: Send + Sync + fmt::Debug + 'static {
    /// What this authenticator accepts, for "no credentials" messages
    /// (e.g. "a client certificate").
    fn accepts(&self) -> String;

    /// Whether the request carries this kind of credential at all (valid or not).
    fn presented(&self, req: &AuthRequest<'_>) -> bool;

    /// The caller's identity; `UNAUTHENTICATED` when the credential is missing or invalid,
    /// `UNAVAILABLE` when it could not be checked right now.
    async fn authenticate(&self, req: &AuthRequest<'_>) -> Result<Identity, Status>;
}

/// Several authenticators: the first whose kind of credential the request carries decides.
#[derive(Debug, Clone)]
pub struct FirstPresented(pub Vec<Arc<dyn Authenticator>>);

#[async_trait]
impl Authenticator for FirstPresented {
    fn accepts(&self) -> String {
        self.0
            .iter()
            .map(|a| a.accepts())
            .collect::<Vec<_>>()
            .join(" or ")
    }

    fn presented(&self, req: &AuthRequest<'_>) -> bool {
        self.0.iter().any(|a| a.presented(req))
    }

    async fn authenticate(&self, req: &AuthRequest<'_>) -> Result<Identity, Status> {
        match self.0.iter().find(|a| a.presented(req)) {
            Some(a) => a.authenticate(req).await,
            None => Err(Status::unauthenticated(format!(
                "no credentials: present {}",
                self.accepts()
            ))),
        }
    }
}

/// Client certificates issued by a given CA; the certificate names the node.
///
/// Identity: username = subject CN, or the first DNS SAN when there is no CN; groups = the
/// subject O values (as Kubernetes' x509 authenticator reads them); node = the username with a
/// `system:node:` prefix removed (so kubelet-style certificates work unchanged).
pub struct MtlsAuthenticator {
    verifier: Arc<dyn ClientCertVerifier>,
}

impl fmt::Debug for MtlsAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MtlsAuthenticator").finish_non_exhaustive()
    }
}

impl MtlsAuthenticator {
    /// Trusts the CA certificates in `ca_pem` (one or more PEM blocks).
    pub fn from_ca_pem(ca_pem: &[u8]) -> Result<Self, TlsError> {
        Ok(MtlsAuthenticator {
            verifier: client_verifier(ca_pem)?,
        })
    }
}

/// A webpki verifier of client certificates chaining to the CAs in `ca_pem`.
pub(crate) fn client_verifier(ca_pem: &[u8]) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    let mut n = 0;
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| TlsError::Pem {
            what: "client CA",
            reason: e.to_string(),
        })?;
        roots.add(cert).map_err(|e| TlsError::Pem {
            what: "client CA",
            reason: e.to_string(),
        })?;
        n += 1;
    }
    if n == 0 {
        return Err(TlsError::Pem {
            what: "client CA",
            reason: "no CERTIFICATE block".into(),
        });
    }
    WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .map_err(|e| TlsError::Config(e.to_string()))
}

/// Username, groups and node of a DER certificate.
fn certificate_identity(der: &CertificateDer<'_>) -> Result<Identity, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("unreadable client certificate: {e}"))?;
    let subject = cert.subject();
    let cn = subject
        .iter_common_name()
        .next()
        .map(|a| a.as_str().map(str::to_owned))
        .transpose()
        .map_err(|e| format!("client certificate CN: {e}"))?;
    let san = || -> Option<String> {
        let ext = cert.subject_alternative_name().ok()??;
        ext.value.general_names.iter().find_map(|g| match g {
            x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
            _ => None,
        })
    };
    let username = cn
        .filter(|c| !c.is_empty())
        .or_else(san)
        .ok_or("client certificate has neither a subject CN nor a DNS SAN")?;
    let groups = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok().map(str::to_owned))
        .collect();
    let node = username
        .strip_prefix("system:node:")
        .unwrap_or(&username)
        .to_owned();
    Ok(Identity {
        username,
        groups,
        node_name: Some(node),
        method: AuthMethod::Certificate,
    })
}

#[async_trait]
impl Authenticator for MtlsAuthenticator {
    fn accepts(&self) -> String {
        "a client certificate".into()
    }

    fn presented(&self, req: &AuthRequest<'_>) -> bool {
        req.peer_certs.is_some()
    }

    async fn authenticate(&self, req: &AuthRequest<'_>) -> Result<Identity, Status> {
        let Some([end_entity, intermediates @ ..]) = req.peer_certs else {
            return Err(Status::unauthenticated(
                "no client certificate (connect with TLS and a certificate from the agent CA)",
            ));
        };
        self.verifier
            .verify_client_cert(end_entity, intermediates, UnixTime::now())
            .map_err(|e| Status::unauthenticated(format!("client certificate refused: {e}")))?;
        certificate_identity(end_entity).map_err(Status::unauthenticated)
    }
}

/// Why a bearer token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The token is not valid (unknown, expired, wrong audience): `UNAUTHENTICATED`.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The token could not be checked now (the API server did not answer): `UNAVAILABLE`,
    /// so the client retries rather than concluding it is not allowed.
    #[error("token could not be verified: {0}")]
    Unavailable(String),
}

impl From<TokenError> for Status {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Invalid(_) => Status::unauthenticated(e.to_string()),
            TokenError::Unavailable(_) => Status::unavailable(e.to_string()),
        }
    }
}

/// Checks a bearer token and says whose it is. A Kubernetes TokenReview verifier maps
/// `status.authenticated == false` to [`TokenError::Invalid`] (with `status.error`), transport
/// failures to [`TokenError::Unavailable`], and `status.user` to the [`Identity`] (username,
/// groups, and `extra["authentication.kubernetes.io/node-name"]` as the node).
#[async_trait]
pub trait TokenVerifier: Send + Sync + fmt::Debug + 'static {
    async fn verify(&self, token: &str) -> Result<Identity, TokenError>;
}

/// Fixed tokens, each with its identity.
#[derive(Clone, Default)]
pub struct StaticTokens {
    tokens: HashMap<String, Identity>,
}

impl fmt::Debug for StaticTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the tokens themselves.
        f.debug_struct("StaticTokens")
            .field(
                "identities",
                &self
                    .tokens
                    .values()
                    .map(|i| &i.username)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl StaticTokens {
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts `token` as `identity` (its method is set to [`AuthMethod::Token`]).
    pub fn with(mut self, token: impl Into<String>, mut identity: Identity) -> Self {
        identity.method = AuthMethod::Token;
        self.tokens.insert(token.into(), identity);
        self
    }
}

#[async_trait]
impl TokenVerifier for StaticTokens {
    async fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        // A map lookup is not constant-time; fine for tests and small setups, where the tokens
        // are long random strings. Production uses TokenReview.
        self.tokens
            .get(token)
            .cloned()
            .ok_or_else(|| TokenError::Invalid("unknown token".into()))
    }
}

/// Remembers successful verifications for a while, so that every ack of every agent does not
/// cost a TokenReview. Failures are not cached (a fixed token works at once).
#[derive(Debug)]
pub struct CachingVerifier<V> {
    inner: V,
    ttl: Duration,
    max_entries: usize,
    cache: Mutex<HashMap<String, (Identity, Instant)>>,
}

impl<V: TokenVerifier> CachingVerifier<V> {
    /// Caches at most `max_entries` tokens for `ttl` each. Keep `ttl` short (a minute): a
    /// revoked token stays accepted that long.
    pub fn new(inner: V, ttl: Duration, max_entries: usize) -> Self {
        CachingVerifier {
            inner,
            ttl,
            max_entries,
            cache: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl<V: TokenVerifier> TokenVerifier for CachingVerifier<V> {
    async fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        let now = Instant::now();
        if let Some((id, at)) = self.cache.lock().expect("token cache").get(token) {
            if now.duration_since(*at) < self.ttl {
                return Ok(id.clone());
            }
        }
        let id = self.inner.verify(token).await?;
        let mut cache = self.cache.lock().expect("token cache");
        if cache.len() >= self.max_entries {
            cache.retain(|_, (_, at)| now.duration_since(*at) < self.ttl);
            if cache.len() >= self.max_entries {
                cache.clear();
            }
        }
        cache.insert(token.to_owned(), (id.clone(), now));
        Ok(id)
    }
}

/// `authorization: Bearer <token>` checked by a [`TokenVerifier`].
#[derive(Debug, Clone)]
pub struct BearerAuthenticator {
    verifier: Arc<dyn TokenVerifier>,
}

impl BearerAuthenticator {
    pub fn new(verifier: Arc<dyn TokenVerifier>) -> Self {
        BearerAuthenticator { verifier }
    }
}

#[async_trait]
impl Authenticator for BearerAuthenticator {
    fn accepts(&self) -> String {
        "an authorization: Bearer token".into()
    }

    fn presented(&self, req: &AuthRequest<'_>) -> bool {
        req.metadata.get("authorization").is_some()
    }

    async fn authenticate(&self, req: &AuthRequest<'_>) -> Result<Identity, Status> {
        let Some(value) = req.metadata.get("authorization") else {
            return Err(Status::unauthenticated(
                "no authorization metadata (expected \"Bearer <token>\")",
            ));
        };
        let value = value
            .to_str()
            .map_err(|_| Status::unauthenticated("authorization metadata is not ASCII"))?;
        let token = value
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Status::unauthenticated("authorization metadata is not \"Bearer <token>\"")
            })?;
        let mut id = self.verifier.verify(token).await?;
        id.method = AuthMethod::Token;
        Ok(id)
    }
}

/// Which identities may receive snapshots and send acks, and for which nodes.
///
/// An identity bound to a node ([`Identity::node_name`]) may only act for that node. Unbound
/// identities (a token not bound to a pod) may act for any node unless
/// [`AccessPolicy::require_node_binding`] is set.
#[derive(Debug, Clone, Default)]
pub struct AccessPolicy {
    any: bool,
    users: BTreeSet<String>,
    groups: BTreeSet<String>,
    require_node_binding: bool,
}

impl AccessPolicy {
    /// Every authenticated identity is allowed: right for mTLS with a CA that signs only agent
    /// certificates.
    pub fn any_authenticated() -> Self {
        AccessPolicy {
            any: true,
            ..Self::default()
        }
    }

    /// Only the listed usernames are allowed, e.g.
    /// `system:serviceaccount:blixt-system:blixt-agent`.
    pub fn users<I: IntoIterator<Item = S>, S: Into<String>>(users: I) -> Self {
        AccessPolicy {
            users: users.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// Also allows members of these groups.
    pub fn or_groups<I: IntoIterator<Item = S>, S: Into<String>>(mut self, groups: I) -> Self {
        self.groups.extend(groups.into_iter().map(Into::into));
        self
    }

    /// Refuses identities that are not bound to a node.
    pub fn require_node_binding(mut self, yes: bool) -> Self {
        self.require_node_binding = yes;
        self
    }

    /// `PERMISSION_DENIED` unless `identity` may act for `node_name`.
    pub fn check(&self, identity: &Identity, node_name: &str) -> Result<(), Status> {
        let allowed = self.any
            || self.users.contains(&identity.username)
            || identity.groups.iter().any(|g| self.groups.contains(g));
        if !allowed {
            return Err(Status::permission_denied(format!(
                "{identity} is not allowed to receive snapshots"
            )));
        }
        match &identity.node_name {
            Some(bound) if bound != node_name => Err(Status::permission_denied(format!(
                "{identity} is bound to node {bound:?} and cannot act for node {node_name:?}"
            ))),
            None if self.require_node_binding => Err(Status::permission_denied(format!(
                "{identity} is not bound to a node; this server requires node-bound credentials"
            ))),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(user: &str, groups: &[&str], node: Option<&str>) -> Identity {
        Identity {
            username: user.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            node_name: node.map(Into::into),
            method: AuthMethod::Token,
        }
    }

    #[test]
    fn policy_codes() {
        let p = AccessPolicy::users(["agent"]).or_groups(["agents"]);
        assert!(p.check(&id("agent", &[], None), "n1").is_ok());
        assert!(p.check(&id("x", &["agents"], Some("n1")), "n1").is_ok());
        let denied = p.check(&id("x", &["other"], None), "n1").unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        let wrong_node = p.check(&id("agent", &[], Some("n2")), "n1").unwrap_err();
        assert_eq!(wrong_node.code(), tonic::Code::PermissionDenied);
        assert!(
            wrong_node.message().contains("\"n2\""),
            "{}",
            wrong_node.message()
        );
        let unbound = p
            .clone()
            .require_node_binding(true)
            .check(&id("agent", &[], None), "n1")
            .unwrap_err();
        assert_eq!(unbound.code(), tonic::Code::PermissionDenied);
    }

    #[tokio::test]
    async fn bearer_parsing() {
        let auth = BearerAuthenticator::new(Arc::new(
            StaticTokens::new().with("s3cret", id("agent", &[], None)),
        ));
        let check = |v: Option<&'static str>| {
            let mut md = MetadataMap::new();
            if let Some(v) = v {
                md.insert("authorization", v.parse().unwrap());
            }
            let auth = auth.clone();
            async move {
                auth.authenticate(&AuthRequest {
                    metadata: &md,
                    peer_certs: None,
                    remote_addr: None,
                })
                .await
            }
        };
        assert_eq!(
            check(Some("Bearer s3cret")).await.unwrap().username,
            "agent"
        );
        assert_eq!(
            check(Some("bearer  s3cret ")).await.unwrap().username,
            "agent"
        );
        for bad in [
            None,
            Some("Bearer"),
            Some("Basic s3cret"),
            Some("Bearer nope"),
        ] {
            let err = check(bad).await.unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated, "{bad:?}");
        }
    }

    #[derive(Debug, Default)]
    struct Counting(std::sync::atomic::AtomicUsize);

    #[async_trait]
    impl TokenVerifier for Counting {
        async fn verify(&self, token: &str) -> Result<Identity, TokenError> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            match token {
                "good" => Ok(id("agent", &[], None)),
                "down" => Err(TokenError::Unavailable("api server".into())),
                _ => Err(TokenError::Invalid("no".into())),
            }
        }
    }

    #[tokio::test]
    async fn cache_keeps_successes_only() {
        let c = CachingVerifier::new(Counting::default(), Duration::from_secs(60), 2);
        c.verify("good").await.unwrap();
        c.verify("good").await.unwrap();
        assert_eq!(c.inner.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(c.verify("bad").await.is_err());
        assert!(c.verify("bad").await.is_err());
        assert_eq!(c.inner.0.load(std::sync::atomic::Ordering::SeqCst), 3);
        let s = Status::from(c.verify("down").await.unwrap_err());
        assert_eq!(s.code(), tonic::Code::Unavailable);
    }

    fn cert(cn: Option<&str>, sans: &[&str], orgs: &[&str]) -> CertificateDer<'static> {
        let mut p =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        }
        for o in orgs {
            p.distinguished_name
                .push(rcgen::DnType::OrganizationName, *o);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn certificate_names_the_node() {
        let id =
            certificate_identity(&cert(Some("node-a"), &["ignored.example"], &["agents"])).unwrap();
        assert_eq!(id.username, "node-a");
        assert_eq!(id.node_name.as_deref(), Some("node-a"));
        assert_eq!(id.groups, ["agents"]);
        assert_eq!(id.method, AuthMethod::Certificate);

        let id = certificate_identity(&cert(Some("system:node:worker-1"), &[], &[])).unwrap();
        assert_eq!(id.username, "system:node:worker-1");
        assert_eq!(id.node_name.as_deref(), Some("worker-1"));

        let id = certificate_identity(&cert(None, &["worker-2.nodes.example"], &[])).unwrap();
        assert_eq!(id.node_name.as_deref(), Some("worker-2.nodes.example"));

        let err = certificate_identity(&cert(None, &["192.0.2.1"], &[])).unwrap_err();
        assert!(err.contains("neither"), "{err}");
    }
}
