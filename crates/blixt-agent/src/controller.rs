//! The controller's snapshot stream as a source of generations: the stream client
//! ([`blixt_stream::SnapshotClient`]) pushes each generation to [`Node::apply`] as it arrives,
//! so that its ack says whether the apply worked, while the [`runner`] loop only sweeps.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use blixt_core::generation::Generation;
use blixt_stream::{ClientConfig, SnapshotClient};

use crate::node::Node;
use crate::runner::{self, AgentOptions, GenerationSource};

/// Produces nothing: the stream applies its generations itself; the loop only sweeps.
struct Pushed;

impl GenerationSource for Pushed {
    fn poll(&mut self) -> Option<Result<Generation>> {
        None
    }
}

/// Applies the controller's generations until `stop` is set. The node announces no VIP before
/// the controller gave it its share (VIPs re-adopted from pinned maps may have moved to another
/// node while this agent was away), nor after the stream ended (the controller hands this
/// node's VIPs to other agents as the stream closes; a pinned dataplane that stays behind must
/// not answer for them too).
pub fn follow(
    opts: &AgentOptions,
    node: &Arc<Node>,
    mut config: ClientConfig,
    stop: &'static AtomicBool,
) -> Result<()> {
    config.last_generation = node.generation().unwrap_or(0);
    node.withdraw_announcements()
        .context("clearing announcements of re-adopted VIPs")?;
    let client = SnapshotClient::new(config).context("snapshot client")?;
    let applier = node.clone();
    let stream = std::thread::Builder::new()
        .name("snapshots".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(client.run(
                |generation: Generation| match applier.apply(&generation) {
                    Ok(_) => {
                        runner::print_applied(generation.number(), "");
                        Ok(())
                    }
                    Err(e) => Err(e.to_string()),
                },
                async {
                    while !stop.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
            ));
            anyhow::Ok(())
        })?;
    let result = runner::run(opts, node, &mut Pushed, stop);
    if result.is_err() {
        // Let the snapshot thread end too.
        stop.store(true, Ordering::Relaxed);
    }
    let joined = stream
        .join()
        .map_err(|_| anyhow::anyhow!("snapshot thread panicked"));
    if let Err(e) = node.withdraw_announcements() {
        tracing::warn!("withdrawing VIP announcements at exit: {e}");
    }
    result?;
    joined??;
    Ok(())
}
