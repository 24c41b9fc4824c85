//! The status socket of `blixt run`: one JSON [`StatusMessage`] per connection, read by
//! `blixt status --socket` and `blixt inspect --socket`. It joins what the standalone source
//! knows (statuses of the generation served, a refused reload) with what the node knows (TLS
//! passthrough, the dataplane's attach modes and fallbacks).

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use blixt_agent::tls::TlsStatus;
use blixt_agent::{DataplaneStatus, Node};
use blixt_standalone::status::StatusReport;
use blixt_standalone::SourceStatus;
use serde::{Deserialize, Serialize};
use tracing::info;

/// What `blixt status --socket` receives.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatusMessage {
    /// Generation of the snapshot the statuses belong to (the one the dataplane serves).
    pub generation: u64,
    /// The config path being served.
    pub config: PathBuf,
    /// Why the newest version of the files was refused, if it was (the previous one serves).
    pub refused: Option<String>,
    pub report: Option<StatusReport>,
    /// TLS passthrough: the SNI tables served and the proxy's counters, read when the socket
    /// is asked (`None`: no TLS listener was ever configured). For `blixt inspect --socket`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsStatus>,
    /// What the kernel offers and what the dataplane made of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataplane: Option<DataplaneStatus>,
}

/// Serves the status socket at `path` from a background thread.
pub fn serve(
    path: &Path,
    config: PathBuf,
    source: Arc<Mutex<SourceStatus>>,
    node: Arc<Node>,
) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(path);
    let listener =
        UnixListener::bind(path).with_context(|| format!("status socket {}", path.display()))?;
    info!(socket = %path.display(), "statuses for `blixt status --socket`");
    let dataplane = node.dataplane_status();
    std::thread::Builder::new()
        .name("status".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let s = source.lock().map(|s| s.clone()).unwrap_or_default();
                let msg = StatusMessage {
                    generation: s.generation,
                    config: config.clone(),
                    refused: s.refused,
                    report: s.report,
                    tls: node.tls_status(),
                    dataplane: Some(dataplane.clone()),
                };
                if let Ok(body) = serde_json::to_vec(&msg) {
                    let _ = conn.write_all(&body);
                }
            }
        })?;
    Ok(())
}
