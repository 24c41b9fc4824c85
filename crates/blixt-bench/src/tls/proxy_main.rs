//! `blixt-bench-tls-proxy FRONTENDS_JSON`: Blixt's TLS passthrough served the way `blixt run`
//! serves a TLSRoute (crates/blixt-agent/src/tls.rs): a multi-threaded tokio runtime with
//! the default worker count, [`ProxyConfig::default`], and sk_lookup steering with managed local
//! routes, so no VIP is configured by hand. Suite 6 starts it in the lab's lb namespace, one
//! process per measurement round, so that its CPU time and its `perf` profile are the proxy's
//! alone.
//!
//! FRONTENDS_JSON is a JSON array of [`TlsFrontend`] (what the translator hands `blixt run`).
//! Prints `ready` once every frontend is steered, then serves until SIGTERM or SIGINT, and
//! on the way out prints the proxy's counters (`stats ...` lines, `stats end` last) and removes
//! the steering and its local routes.
#![forbid(unsafe_code)]

use std::io::Write;

use anyhow::{Context, Result};
use blixt_core::tls::TlsFrontend;
use blixt_tls::{ProxyConfig, Steering, TlsPassthrough};
use tokio::signal::unix::{signal, SignalKind};

fn main() -> Result<()> {
    let arg = std::env::args()
        .nth(1)
        .context("usage: blixt-bench-tls-proxy FRONTENDS_JSON")?;
    let frontends: Vec<TlsFrontend> =
        serde_json::from_str(&arg).context("parsing FRONTENDS_JSON (an array of TlsFrontend)")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("blixt-tls")
        .enable_all()
        .build()
        .context("starting the TLS runtime")?;
    runtime.block_on(async {
        let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
        let mut service = TlsPassthrough::new(
            ProxyConfig::default(),
            Steering::SkLookup {
                manage_local_routes: true,
            },
        )
        .context("loading the sk_lookup steering (needs CAP_BPF, CAP_NET_ADMIN)")?;
        service
            .apply(&frontends)
            .context("opening and steering the TLS frontends")?;
        println!("ready");
        std::io::stdout().flush().context("stdout")?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        let stats = service.stats();
        for l in &stats.listeners {
            let rejects: u64 = l.rejects.values().sum();
            println!(
                "stats listener {} accepted={} forwarded={} rejects={rejects}",
                l.addr, l.accepted, l.forwarded
            );
        }
        for b in &stats.backends {
            println!(
                "stats backend {} connections={} connect_errors={}",
                b.backend, b.connections, b.connect_errors
            );
        }
        println!("stats end");
        std::io::stdout().flush().context("stdout")?;
        drop(service);
        anyhow::Ok(())
    })?;
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    Ok(())
}
