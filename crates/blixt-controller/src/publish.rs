//! Publishing generations to the agents, by the leader only: VIP owners are computed from the
//! agents subscribed to one server, so agents split between replicas would each pick owners of
//! their own. A standby withdraws (its server answers `UNAVAILABLE`) and agents retry until the
//! Service sends them to the leader.

use std::future::Future;
use std::time::Duration;

use blixt_core::generation::Generation;
use blixt_stream::SnapshotServer;
use tracing::{info, warn};

use crate::leader::Leadership;
use crate::Running;

/// Whether this replica serves, and what.
struct Publisher<'a> {
    server: Option<&'a SnapshotServer>,
    leadership: &'a Leadership,
    serving: bool,
}

impl Publisher<'_> {
    /// Publishes `generation` while leader (once), withdraws when leadership was lost.
    fn sync(&mut self, generation: &Generation) {
        let Some(s) = self.server else { return };
        if !self.leadership.is_leader() {
            if self.serving {
                s.withdraw();
                self.serving = false;
                info!("not the leader: snapshot stream withdrawn");
            }
            return;
        }
        if self.serving && s.current_generation() == Some(generation.number()) {
            return;
        }
        match s.publish_generation(generation.clone()) {
            Ok(()) => {
                if !self.serving {
                    info!(
                        generation = generation.number(),
                        "leading: serving snapshots"
                    );
                }
                self.serving = true;
            }
            Err(e) => warn!("publishing generation {}: {e}", generation.number()),
        }
    }
}

/// Serves `running`'s generations on `server` while this replica leads (leadership is checked
/// every second), until `shutdown` completes or the translator stops. `on_new` is called with
/// every new generation (leader or not).
pub async fn publish_while_leader(
    running: &mut Running,
    server: Option<&SnapshotServer>,
    mut on_new: impl FnMut(&Generation),
    shutdown: impl Future<Output = ()>,
) {
    let leadership = running.leadership.clone();
    let mut publisher = Publisher {
        server,
        leadership: &leadership,
        serving: false,
    };
    publisher.sync(&running.snapshots.borrow_and_update().clone());
    let mut leadership_check = tokio::time::interval(Duration::from_secs(1));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            changed = running.snapshots.changed() => {
                if changed.is_err() {
                    break;
                }
                let g = running.snapshots.borrow_and_update().clone();
                publisher.sync(&g);
                on_new(&g);
            }
            _ = leadership_check.tick() => {
                let g = running.snapshots.borrow().clone();
                publisher.sync(&g);
            }
            () = &mut shutdown => break,
        }
    }
}
