//! `blixt controller`: the Kubernetes controller (watch, translate, write statuses as the
//! elected leader, publish snapshots).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use blixt_controller::agents::TokenReviewVerifier;
use blixt_controller::leader::LeaseConfig;
use blixt_controller::ControllerOptions;
use blixt_core::translator::{IpNet, TranslatorConfig, CONTROLLER_NAME};
use blixt_stream::{
    AccessPolicy, Authenticator, BearerAuthenticator, CachingVerifier, FirstPresented, Keepalive,
    MtlsAuthenticator, Pem, ServerTls, SnapshotServer,
};
use tracing::info;

#[derive(Debug, clap::Args)]
pub struct ControllerArgs {
    /// Kubeconfig file; in-cluster configuration (or $KUBECONFIG) when absent.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The controller's own namespace (its leader-election Lease lives there).
    #[arg(long, env = "POD_NAMESPACE", default_value = "blixt-system")]
    namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "blixt-controller")]
    leader_election_id: String,
    /// This replica's identity in the Lease (the pod name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// The controllerName GatewayClasses must name.
    #[arg(long, default_value = CONTROLLER_NAME)]
    controller_name: String,
    /// Addresses for Gateways of classes without an AddressPool (repeat).
    #[arg(long = "address-pool")]
    address_pool: Vec<IpAddr>,
    /// Where static spec.addresses of Gateways of classes without an AddressPool may lie
    /// besides --address-pool (CIDR, repeat); none: in the pool only.
    #[arg(long = "static-address-range")]
    static_address_range: Vec<IpNet>,
    /// Where agents subscribe to snapshots (gRPC); "none" to serve none.
    #[arg(long, default_value = "0.0.0.0:9443")]
    grpc_address: String,
    /// Serving certificate (PEM) of the gRPC endpoint; plaintext without it (tests only).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA (PEM) of the agents' client certificates: agents must then present a certificate
    /// it signed (mutual TLS; needs --tls-cert). The subject CN names the node, and an agent
    /// may only subscribe and ack as that node. Tokens are no longer accepted unless
    /// --accept-tokens is given too.
    #[arg(long, requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// With --client-ca: accept service-account tokens as well (an agent presenting a
    /// certificate is judged by it alone). Needs --agent-group, so that certificates and
    /// tokens are each held to their own allow-list.
    #[arg(long, requires = "client_ca")]
    accept_tokens: bool,
    /// Certificate organisations (subject O) allowed to subscribe, with --client-ca (repeat).
    /// Without any, every certificate the client CA signed is allowed: give the controller a
    /// CA that signs only agent certificates.
    #[arg(long = "agent-group", requires = "client_ca")]
    agent_groups: Vec<String>,
    /// Kubernetes users allowed to subscribe (the agents' service account); tokens are checked
    /// with TokenReview for the audience `blixt-controller`.
    #[arg(
        long = "agent-user",
        default_value = "system:serviceaccount:blixt-system:blixt-agent"
    )]
    agent_users: Vec<String>,
    /// Seconds after which an agent that stopped answering HTTP/2 pings (node down, network
    /// partition) is dropped and the VIPs it announced move to other agents. An agent that
    /// exits or restarts closes its connection and is dropped at once.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..))]
    agent_timeout: u64,
    /// Address for `/metrics` and `/healthz`; "none" to serve neither.
    #[arg(long, default_value = "none")]
    metrics_address: String,
}

/// Serves `/healthz` and a few controller metrics (leadership, snapshot generation, agents).
fn serve_metrics(
    addr: &str,
    running: blixt_controller::Running,
    server: Option<SnapshotServer>,
) -> Result<()> {
    let addr = addr
        .parse()
        .with_context(|| format!("--metrics-address {addr:?}"))?;
    blixt_agent::metrics::serve_with(addr, move || {
        let generation = running.snapshots.borrow().number();
        let leader = u8::from(running.leadership.is_leader());
        let agents = server.as_ref().map_or(0, |s| s.acks().len());
        let mut out = format!(
            "# TYPE blixt_controller_leader gauge\nblixt_controller_leader {leader}\n\
             # TYPE blixt_controller_snapshot_generation gauge\n\
             blixt_controller_snapshot_generation {generation}\n\
             # TYPE blixt_controller_agents gauge\nblixt_controller_agents {agents}\n"
        );
        // Which node answers ARP/NDP for each VIP (absent while no agent is subscribed).
        out.push_str("# TYPE blixt_vip_owner gauge\n");
        for (vip, node) in server
            .as_ref()
            .map(SnapshotServer::vip_owners)
            .unwrap_or_default()
        {
            out.push_str(&format!(
                "blixt_vip_owner{{vip=\"{vip}\",node=\"{node}\"}} 1\n"
            ));
        }
        out.push_str("# EOF\n");
        out
    })
    .with_context(|| format!("--metrics-address {addr}"))?;
    Ok(())
}

/// How agents authenticate, and who among them may subscribe: service-account tokens
/// (TokenReview) by default; client certificates of `--client-ca` when given; both with
/// `--accept-tokens`.
fn agent_auth(
    args: &ControllerArgs,
    client: &kube::Client,
) -> Result<(Arc<dyn Authenticator>, AccessPolicy)> {
    let tokens = || -> Arc<dyn Authenticator> {
        let verifier = Arc::new(CachingVerifier::new(
            TokenReviewVerifier::new(client.clone()),
            Duration::from_secs(60),
            10_000,
        ));
        Arc::new(BearerAuthenticator::new(verifier))
    };
    let Some(ca) = &args.client_ca else {
        let policy = AccessPolicy::users(args.agent_users.clone()).require_node_binding(false);
        return Ok((tokens(), policy));
    };
    let pem = std::fs::read(ca).with_context(|| format!("--client-ca {}", ca.display()))?;
    let certificates: Arc<dyn Authenticator> = Arc::new(
        MtlsAuthenticator::from_ca_pem(&pem)
            .with_context(|| format!("--client-ca {}", ca.display()))?,
    );
    if args.accept_tokens {
        if args.agent_groups.is_empty() {
            bail!(
                "--accept-tokens with --client-ca needs --agent-group (the subject O of the \
                 agents' certificates): otherwise no certificate would be allowed"
            );
        }
        let policy =
            AccessPolicy::users(args.agent_users.clone()).or_groups(args.agent_groups.clone());
        // A presented certificate decides; a token is looked at only without one.
        let either = FirstPresented(vec![certificates, tokens()]);
        return Ok((Arc::new(either), policy));
    }
    let policy = if args.agent_groups.is_empty() {
        AccessPolicy::any_authenticated()
    } else {
        AccessPolicy::users(Vec::<String>::new()).or_groups(args.agent_groups.clone())
    };
    Ok((certificates, policy))
}

async fn client(kubeconfig: Option<&PathBuf>) -> Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
        }
        None => kube::Config::infer()
            .await
            .context("no kubeconfig and not in a cluster")?,
    };
    Ok(kube::Client::try_from(config)?)
}

pub fn run(args: ControllerArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let client = client(args.kubeconfig.as_ref()).await?;
        let auth = agent_auth(&args, &client)?;
        let identity = args.identity.unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| format!("blixt-{}", std::process::id()))
        });
        let opts = ControllerOptions {
            translator: TranslatorConfig {
                controller_name: args.controller_name,
                address_pool: args.address_pool,
                static_address_ranges: args.static_address_range,
                ..TranslatorConfig::default()
            },
            lease: LeaseConfig {
                namespace: args.namespace,
                name: args.leader_election_id,
                identity,
                lease_duration: Duration::from_secs(15),
                renew_every: Duration::from_secs(2),
            },
            debounce: Duration::from_millis(100),
            resync: Duration::from_secs(300),
            programmed_gate: None,
        };
        let server = if args.grpc_address != "none" {
            let (authenticator, policy) = auth;
            let server = SnapshotServer::new(authenticator, policy);
            let half = Duration::from_secs(args.agent_timeout) / 2;
            server.set_keepalive(Keepalive {
                interval: half,
                timeout: half,
            });
            let listener = tokio::net::TcpListener::bind(&args.grpc_address)
                .await
                .with_context(|| format!("--grpc-address {}", args.grpc_address))?;
            info!(address = %listener.local_addr()?, "snapshot stream for agents");
            let tls = match (args.tls_cert, args.tls_key) {
                (Some(cert), Some(key)) => Some(ServerTls {
                    cert_chain: Pem::File(cert),
                    key: Pem::File(key),
                    client_ca: args.client_ca.clone().map(Pem::File),
                }),
                _ => None,
            };
            let serving = server.clone();
            tokio::spawn(async move {
                if let Err(e) = serving
                    .serve(listener, tls.as_ref(), std::future::pending())
                    .await
                {
                    tracing::error!("snapshot stream: {e}");
                }
            });
            Some(server)
        } else {
            None
        };
        let opts = ControllerOptions {
            programmed_gate: server.clone(),
            ..opts
        };
        let mut running = blixt_controller::start(client.clone(), opts).await?;
        info!("controller running");
        if args.metrics_address != "none" {
            serve_metrics(&args.metrics_address, running.clone(), server.clone())?;
        }
        blixt_controller::publish::publish_while_leader(
            &mut running,
            server.as_ref(),
            |g| println!("{{\"event\":\"snapshot\",\"generation\":{}}}", g.number()),
            async {
                let _ = tokio::signal::ctrl_c().await;
            },
        )
        .await;
        Ok(())
    })
}
