//! `blixt run --config PATH`: standalone mode. Manifests from files (Gateway API objects,
//! Services, EndpointSlices, a NodeConfig) become generations in the standalone source
//! ([`StandaloneSource`]: the config path is watched, every change is translated), which the
//! in-process [`Node`] applies: XDP snapshot, TLS passthrough SNI tables (see
//! docs/tls-passthrough.md), VIP announcement. Statuses are served on a unix socket for
//! `blixt status`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use blixt_agent::runner::{self, AgentOptions, GenerationSource};
use blixt_agent::{Node, NodeConfig, NodeServices};
use blixt_bpf::{AttachMode, DataplaneOptions};
use blixt_core::generation::Generation;
use blixt_standalone::config::{AttachSetting, LoadCache, NodeConfigSpec};
use blixt_standalone::StandaloneSource;
use tracing::warn;

use crate::agent_cmd::{install_signal_handlers, STOP};
use crate::status_socket;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// A manifest file, or a directory of them (*.yaml, *.yml; multi-document).
    #[arg(long, short = 'c')]
    config: PathBuf,
}

/// The agent's settings from a NodeConfig (and `BLIXT_FORCE_FALLBACK`).
pub fn agent_options(spec: &NodeConfigSpec) -> Result<AgentOptions> {
    Ok(AgentOptions {
        dataplane: DataplaneOptions {
            max_frontends: spec.maps.max_frontends,
            max_backends: spec.maps.max_backends,
            ring_size: spec.maps.maglev_table_size,
            conntrack_entries: spec.maps.conntrack_entries,
            pin_dir: spec.pin_dir.clone(),
            attach: match spec.attach {
                AttachSetting::Auto => AttachMode::Auto,
                AttachSetting::Xdp => AttachMode::Xdp,
                AttachSetting::Tc => AttachMode::Tc,
            },
            force_off: Vec::new(),
        }
        .force_off_from_env()?,
        interfaces: spec.interfaces.clone(),
        node: NodeConfig {
            snat_v4: spec.snat_v4,
            snat_v6: spec.snat_v6,
            port_min: spec.port_range.min,
            port_max: spec.port_range.max,
            tcp_syn_timeout_s: spec.timeouts.tcp_syn.0,
            tcp_established_timeout_s: spec.timeouts.tcp_established.0,
            tcp_closing_timeout_s: spec.timeouts.tcp_closing.0,
            udp_timeout_s: spec.timeouts.udp.0,
        },
        poll_interval: Duration::from_millis(100),
        sweep_interval: Duration::from_secs(10),
        remove_on_exit: false,
        announce: spec.announce,
    })
}

/// The standalone source as the runner polls it; its `applied` line carries the reload's timing.
struct Standalone(StandaloneSource);

impl GenerationSource for Standalone {
    fn poll(&mut self) -> Option<Result<Generation>> {
        self.0.poll().map(|r| r.map_err(anyhow::Error::from))
    }

    fn wait(&mut self, timeout: Duration) {
        self.0.wait(timeout);
    }

    fn applied(&mut self, generation: &Generation) {
        let timing = self.0.applied(generation);
        runner::print_applied(generation.number(), &timing);
    }
}

pub fn run(args: RunArgs) -> Result<()> {
    let mut cache = LoadCache::default();
    let loaded = cache
        .load(&args.config)
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("loading {}", args.config.display()))?;
    let spec = loaded.node.clone();
    if spec.interfaces.is_empty() {
        warn!("the NodeConfig names no interfaces: nothing will be load-balanced");
    }
    let opts = agent_options(&spec)?;
    install_signal_handlers();
    let services = NodeServices {
        tls_passthrough: true,
        gratuitous_arp: false,
    };
    let node = Arc::new(Node::start(&opts, services)?);
    let (source, unwatched) = StandaloneSource::new(&args.config, loaded, cache);
    if let Some(e) = unwatched {
        warn!(
            "not watching the config for changes ({e}); polling every {:?}",
            opts.poll_interval
        );
    }
    let result = (|| {
        if let Some(addr) = spec.metrics_address {
            node.serve_metrics(addr).context("serving metrics")?;
        }
        if let Some(sock) = &spec.status_socket {
            status_socket::serve(sock, args.config.clone(), source.status(), node.clone())?;
        }
        runner::run(&opts, &node, &mut Standalone(source), &STOP)
    })();
    // Stops TLS passthrough (steering, local routes, listeners) however `run` ends.
    node.shutdown();
    if let Some(sock) = &spec.status_socket {
        let _ = std::fs::remove_file(sock);
    }
    result
}
