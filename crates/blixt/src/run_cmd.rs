//! `blixt run --config PATH`: standalone mode. Manifests from files (Gateway API objects,
//! Services, EndpointSlices, a NodeConfig) go through the translator into snapshots that the
//! in-process agent applies; the config path is watched and every change becomes a new
//! snapshot; statuses are served on a unix socket for `blixt status`.
//!
//! TLS passthrough listeners (TLSRoute) are not in the XDP snapshot: the translator puts their
//! SNI tables in `Translation::tls`, and [`TlsService`] serves them with `blixt-tls` (a tokio
//! proxy steered by sk_lookup) on a runtime owned by this process. A generation's SNI tables
//! are applied right after the agent applied its snapshot, before the generation is announced
//! (`{"event":"applied",...}`) and its statuses are published; see docs/tls-passthrough.md.

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Context, Result};
use blixt_agent::metrics::AgentMetrics;
use blixt_agent::runner::{self, AgentOptions, SnapshotSource};
use blixt_agent::NodeConfig;
use blixt_bpf::{AttachMode, DataplaneOptions};
use blixt_core::snapshot::Snapshot;
use blixt_core::tls::TlsFrontend;
use blixt_core::translator::Statuses;
use blixt_standalone::config::{
    config_files, AttachSetting, LoadCache, LoadedConfig, NodeConfigSpec,
};
use blixt_standalone::status::{report, StatusReport};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::agent_cmd::{install_signal_handlers, STOP};
use crate::tls_service::{serve_metrics, TlsGuard, TlsService};
// Where `blixt inspect` finds them (they moved with TLS passthrough to its own module).
pub use crate::tls_service::TlsStatus;
#[cfg(test)]
pub use crate::tls_service::{
    TlsBackendCounters, TlsListenerCounters, TlsRouteCounters, TlsSteerCounters,
};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// A manifest file, or a directory of them (*.yaml, *.yml; multi-document).
    #[arg(long, short = 'c')]
    config: PathBuf,
}

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

/// The "dataplane" section of `blixt status`: kernel, attach mode per interface, fallbacks
/// active and why, every capability probed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DataplaneStatus {
    pub kernel: String,
    /// auto, xdp or tc, as configured.
    pub attach: String,
    /// Interface name and how the load balancer runs there (xdp-native, xdp-generic, tc).
    pub interfaces: Vec<(String, String)>,
    /// `<capability>: <what runs instead> (<why>)`.
    pub fallbacks: Vec<String>,
    /// `<capability> yes|no (<why not>)`.
    pub capabilities: Vec<String>,
}

impl DataplaneStatus {
    pub fn of(dp: &blixt_bpf::Dataplane) -> DataplaneStatus {
        DataplaneStatus {
            kernel: dp.capabilities().kernel_release.clone(),
            attach: dp.plan().requested.to_string(),
            interfaces: dp
                .attached()
                .iter()
                .map(|(name, mode)| (name.clone(), mode.as_str().to_string()))
                .collect(),
            fallbacks: dp.plan().fallback_lines(),
            capabilities: dp.capabilities().report_lines(),
        }
    }

    /// The section as `blixt status` prints it.
    pub fn render(&self) -> String {
        let mut out = format!(
            "dataplane: kernel {}, attach {}\n",
            self.kernel, self.attach
        );
        for (name, mode) in &self.interfaces {
            out.push_str(&format!("  interface {name}: {mode}\n"));
        }
        if self.fallbacks.is_empty() {
            out.push_str("  fallbacks: none\n");
        }
        for f in &self.fallbacks {
            out.push_str(&format!("  fallback {f}\n"));
        }
        out
    }
}

/// What a translation hands on once the agent has applied its snapshot.
#[derive(Debug)]
struct Pending {
    generation: u64,
    report: StatusReport,
    statuses: Statuses,
    tls: Vec<TlsFrontend>,
    timing: Timing,
}

/// Where the time of one reload went, printed with its `applied` event (the benchmark's
/// control-plane suite reads it).
#[derive(Debug, Clone, Copy)]
struct Timing {
    /// When the change was noticed, in µs since the Unix epoch.
    detected_unix_us: u128,
    /// Reading and parsing the files.
    load: Duration,
    /// Translating the objects into a snapshot and statuses.
    translate: Duration,
    /// When the snapshot was handed to the agent (the rest until `applied` is the apply).
    handed: Instant,
}

fn unix_us() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
}

#[derive(Debug, Default)]
struct Shared {
    current: StatusMessage,
    /// Statuses and SNI tables of a snapshot handed to the agent, published and applied once
    /// the agent has applied it.
    pending: Option<Pending>,
    /// Statuses of the last applied snapshot: carried into the next translation so addresses
    /// and condition transition times stay put.
    applied: Statuses,
}

/// Watches the config path and turns each new version of the files into a snapshot.
struct StandaloneSource {
    path: PathBuf,
    fingerprint: Vec<FileVersion>,
    generation: u64,
    node: NodeConfigSpec,
    shared: Arc<Mutex<Shared>>,
    first: Option<LoadedConfig>,
    /// Keeps every file's objects: a reload parses only the files that changed.
    cache: LoadCache,
    /// Wakes [`SnapshotSource::wait`] on a change; `None` where inotify is unavailable (the
    /// poll interval alone then paces reloads).
    watcher: Option<watch::Watcher>,
}

/// Each config file's path, mtime and length: a change of any, or a file added or removed,
/// is a new version. The directory's own mtime is left out on purpose: an editor's temporary
/// file (`.routes.yaml.tmp`, created, then renamed over `routes.yaml`) changes it twice, and
/// would otherwise start a reload of the unchanged files before the new one is in place.
/// The inode is part of it because file timestamps are coarse (a clock tick): a file renamed
/// over another of the same length within one tick still has a new inode.
fn fingerprint(path: &Path) -> Vec<FileVersion> {
    config_files(path)
        .unwrap_or_default()
        .into_iter()
        .map(|f| {
            let m = std::fs::metadata(&f).ok();
            FileVersion {
                mtime: m.as_ref().and_then(|m| m.modified().ok()),
                len: m.as_ref().map_or(0, |m| m.len()),
                inode: m.map_or(0, |m| std::os::unix::fs::MetadataExt::ino(&m)),
                path: f,
            }
        })
        .collect()
}

/// One config file as [`fingerprint`] sees it.
#[derive(Debug, PartialEq, Eq)]
struct FileVersion {
    path: PathBuf,
    mtime: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl StandaloneSource {
    fn translate(
        &mut self,
        mut loaded: LoadedConfig,
        detected_unix_us: u128,
        load: Duration,
    ) -> Snapshot {
        let started = Instant::now();
        if loaded.node != self.node {
            warn!(
                "the NodeConfig changed; interfaces, addresses, ports, timeouts and map sizes \
                 take effect at the next start of `blixt run` (routes and backends apply now)"
            );
        }
        let mut shared = self.shared.lock().expect("status lock");
        loaded.carry_over(&shared.applied);
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let translation = loaded.translate(&now);
        self.generation += 1;
        let mut snapshot = translation.snapshot;
        snapshot.generation = self.generation;
        let report = report(&loaded.objects, &translation.statuses);
        shared.pending = Some(Pending {
            generation: self.generation,
            report,
            statuses: translation.statuses,
            tls: translation.tls,
            timing: Timing {
                detected_unix_us,
                load,
                translate: started.elapsed(),
                handed: Instant::now(),
            },
        });
        shared.current.refused = None;
        snapshot
    }
}

impl SnapshotSource for StandaloneSource {
    fn poll(&mut self) -> Option<Result<Snapshot>> {
        if let Some(first) = self.first.take() {
            return Some(Ok(self.translate(first, unix_us(), Duration::ZERO)));
        }
        let fp = fingerprint(&self.path);
        if fp == self.fingerprint {
            return None;
        }
        let detected = unix_us();
        let started = Instant::now();
        self.fingerprint = fp;
        match self.cache.load(&self.path) {
            Ok(loaded) => Some(Ok(self.translate(loaded, detected, started.elapsed()))),
            Err(e) => {
                let msg = e.to_string();
                self.shared.lock().expect("status lock").current.refused = Some(msg.clone());
                Some(Err(anyhow!("{}:\n{msg}", self.path.display())))
            }
        }
    }

    fn wait(&mut self, timeout: Duration) {
        match &self.watcher {
            Some(w) => {
                w.wait(timeout);
            }
            None => std::thread::sleep(timeout),
        }
    }
}

/// Waking the file source on a change of the config path: inotify on the directory that holds
/// the files (for a single file, its parent: editors and ConfigMap volumes replace files by a
/// rename, which a watch on the file itself would not follow). The fingerprint comparison in
/// [`StandaloneSource::poll`] still decides whether anything changed, and the poll interval
/// stays the fallback for changes inotify does not report (e.g. some network filesystems).
mod watch {
    use std::ffi::CString;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;
    use std::time::Duration;

    /// Events that can mean a config file changed. IN_MODIFY is left out on purpose: a file
    /// being written is not complete until IN_CLOSE_WRITE (or the rename that installs it).
    const MASK: u32 = libc::IN_CLOSE_WRITE
        | libc::IN_MOVED_TO
        | libc::IN_MOVED_FROM
        | libc::IN_CREATE
        | libc::IN_DELETE
        | libc::IN_ATTRIB
        | libc::IN_DELETE_SELF
        | libc::IN_MOVE_SELF;

    #[derive(Debug)]
    pub struct Watcher {
        fd: OwnedFd,
    }

    impl Watcher {
        /// Watches the directory of `path` (`path` itself when it is a directory).
        pub fn new(path: &Path) -> std::io::Result<Watcher> {
            let dir = if path.is_dir() {
                path
            } else {
                path.parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."))
            };
            let name = CString::new(dir.as_os_str().as_bytes())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            // SAFETY: inotify_init1 takes flags only and returns a new fd or -1.
            let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
            if raw < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: `raw` is a freshly created fd that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            // SAFETY: a valid fd and a NUL-terminated path that outlives the call.
            let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), name.as_ptr(), MASK) };
            if wd < 0 {
                let e = std::io::Error::last_os_error();
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("inotify watch on {}: {e}", dir.display()),
                ));
            }
            Ok(Watcher { fd })
        }

        /// Returns after `timeout` (`false`), or as soon as an event arrives (`true`; all
        /// queued events are consumed: one poll of the files follows however many there were).
        pub fn wait(&self, timeout: Duration) -> bool {
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
            // SAFETY: one pollfd that lives across the call.
            let n = unsafe { libc::poll(&mut pfd, 1, ms) };
            if n <= 0 {
                return false;
            }
            let mut buf = [0u8; 4096];
            loop {
                // SAFETY: reads into a buffer we own, at most its length.
                let r =
                    unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if r <= 0 {
                    break;
                }
            }
            true
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_file_renamed_into_the_directory_wakes_the_watcher() {
            let dir = std::env::temp_dir().join(format!("blixt-watch-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let w = Watcher::new(&dir).unwrap();
            assert!(!w.wait(Duration::from_millis(10)), "nothing changed yet");
            std::fs::write(dir.join(".routes.yaml.tmp"), "x").unwrap();
            std::fs::rename(dir.join(".routes.yaml.tmp"), dir.join("routes.yaml")).unwrap();
            assert!(
                w.wait(Duration::from_secs(30)),
                "the rename was not reported"
            );
            // a single file is watched through its directory: replacing it is seen too
            let f = Watcher::new(&dir.join("routes.yaml")).unwrap();
            std::fs::write(dir.join("routes.yaml"), "y").unwrap();
            let seen = f.wait(Duration::from_secs(30));
            let _ = std::fs::remove_dir_all(&dir);
            assert!(seen, "rewriting the watched file was not reported");
        }
    }
}

fn serve_status(path: &Path, shared: Arc<Mutex<Shared>>, tls: Arc<TlsService>) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(path);
    let listener =
        UnixListener::bind(path).with_context(|| format!("status socket {}", path.display()))?;
    info!(socket = %path.display(), "statuses for `blixt status --socket`");
    std::thread::Builder::new()
        .name("status".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut msg = shared.lock().map(|s| s.current.clone()).unwrap_or_default();
                msg.tls = tls.status();
                if let Ok(body) = serde_json::to_vec(&msg) {
                    let _ = conn.write_all(&body);
                }
            }
        })?;
    Ok(())
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
    let rec = Arc::new(Mutex::new(runner::start(&opts)?));
    let metrics = Arc::new(AgentMetrics::default());
    // Local routes of TLS VIPs that a killed `blixt run` left behind; TLS passthrough itself
    // starts with the first TLS listener.
    if let Err(e) = blixt_tls::steer::flush_stale_routes() {
        warn!("removing stale local routes of TLS VIPs: {e:#}");
    }
    // Stops TLS passthrough (steering, local routes, listeners) however `run` ends.
    let tls = TlsGuard(Arc::new(TlsService::default()));
    if let Some(addr) = spec.metrics_address {
        serve_metrics(addr, rec.clone(), metrics.clone(), tls.0.clone())
            .context("serving metrics")?;
    }
    let shared = Arc::new(Mutex::new(Shared {
        current: StatusMessage {
            config: args.config.clone(),
            dataplane: Some(DataplaneStatus::of(
                rec.lock().expect("reconciler").dataplane_ref(),
            )),
            ..StatusMessage::default()
        },
        ..Shared::default()
    }));
    if let Some(sock) = &spec.status_socket {
        serve_status(sock, shared.clone(), tls.0.clone())?;
    }
    let mut source = StandaloneSource {
        fingerprint: fingerprint(&args.config),
        path: args.config.clone(),
        generation: 0,
        node: spec.clone(),
        shared: shared.clone(),
        first: Some(loaded),
        cache,
        watcher: match watch::Watcher::new(&args.config) {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(
                    "not watching the config for changes ({e}); polling every {:?}",
                    opts.poll_interval
                );
                None
            }
        },
    };
    let result = runner::run(&opts, &rec, &metrics, &mut source, &STOP, |snap| {
        let pending = shared.lock().expect("status lock").pending.take();
        let mut timing = String::new();
        if let Some(p) = pending.filter(|p| p.generation == snap.generation) {
            let t = p.timing;
            timing = format!(
                "\"detected_unix_us\":{},\"load_us\":{},\"translate_us\":{},\"apply_us\":{},",
                t.detected_unix_us,
                t.load.as_micros(),
                t.translate.as_micros(),
                t.handed.elapsed().as_micros()
            );
            // The agent applied the XDP part; now the TLS part of the same generation (its
            // VIPs answered by ARP/NDP like the frontends'), then the statuses of both.
            let proxied = p.tls.iter().map(|t| t.vip).collect();
            if let Err(e) = rec.lock().expect("reconciler").set_proxied_vips(proxied) {
                warn!("announcing the VIPs of TLS listeners: {e}");
            }
            tls.0.apply(p.generation, p.tls);
            let mut s = shared.lock().expect("status lock");
            s.current.generation = p.generation;
            s.current.report = Some(p.report);
            s.applied = p.statuses;
        }
        // `generation` stays last: readers match `"generation":N}`.
        println!(
            "{{\"event\":\"applied\",{timing}\"generation\":{}}}",
            snap.generation
        );
    });
    drop(tls);
    if let Some(sock) = &spec.status_socket {
        let _ = std::fs::remove_file(sock);
    }
    result
}

#[cfg(test)]
mod fingerprint_tests {
    use super::*;

    #[test]
    fn an_editors_temporary_file_is_no_new_version_and_its_rename_is_one() {
        let dir = std::env::temp_dir().join(format!("blixt-fp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("routes.yaml"), "weight: 2\n").unwrap();
        let before = fingerprint(&dir);
        std::fs::write(dir.join(".routes.yaml.tmp"), "weight: 0\n").unwrap();
        let with_tmp = fingerprint(&dir);
        // same length, likely within one timestamp tick: only the inode tells them apart
        std::fs::rename(dir.join(".routes.yaml.tmp"), dir.join("routes.yaml")).unwrap();
        let after = fingerprint(&dir);
        std::fs::write(dir.join("notes.txt"), "not a manifest").unwrap();
        let with_other = fingerprint(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(before, with_tmp, "the temporary file is not a config file");
        assert_ne!(with_tmp, after, "the rename installed a new version");
        assert_eq!(after, with_other, "only *.yaml and *.yml count");
    }
}
