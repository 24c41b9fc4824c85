//! The standalone source of generations: watches the config path and turns each new version
//! of the files into a [`Generation`] (snapshot, TLS SNI tables, every VIP announced), keeping
//! the statuses of each translation until the node applied its generation; then they are
//! what `blixt status --socket` serves, and what the next translation carries over (addresses
//! and condition transition times stay put).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use blixt_core::generation::Generation;
use blixt_core::translator::Statuses;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};

use crate::config::{config_files, LoadCache, LoadedConfig, NodeConfigSpec};
use crate::status::{report, StatusReport};

/// The newest version of the files could not be loaded (the previous generation serves).
#[derive(Debug, thiserror::Error)]
#[error("{}:\n{message}", .path.display())]
pub struct Refused {
    pub path: PathBuf,
    pub message: String,
}

/// What the source tells about the generation served, for `blixt status --socket`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SourceStatus {
    /// Generation of the snapshot the statuses belong to (the one the dataplane serves).
    pub generation: u64,
    /// Why the newest version of the files was refused, if it was (the previous one serves).
    pub refused: Option<String>,
    pub report: Option<StatusReport>,
}

/// What a translation hands on once the node has applied its generation.
#[derive(Debug)]
struct Pending {
    generation: u64,
    report: StatusReport,
    statuses: Statuses,
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
    /// When the generation was handed to the node (the rest until `applied` is the apply).
    handed: Instant,
}

fn unix_us() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
}

/// Watches the config path and turns each new version of the files into a generation.
#[derive(Debug)]
pub struct StandaloneSource {
    path: PathBuf,
    fingerprint: Vec<FileVersion>,
    generation: u64,
    node: NodeConfigSpec,
    first: Option<LoadedConfig>,
    /// Keeps every file's objects: a reload parses only the files that changed.
    cache: LoadCache,
    /// Wakes [`StandaloneSource::wait`] on a change; `None` where inotify is unavailable (the
    /// poll interval alone then paces reloads).
    watcher: Option<watch::Watcher>,
    /// Statuses and timing of the generation handed to the node, until it applied it.
    pending: Option<Pending>,
    /// Statuses of the last applied generation: carried into the next translation.
    applied: Statuses,
    status: Arc<Mutex<SourceStatus>>,
}

impl StandaloneSource {
    /// Serves `loaded` (the first load of `path`, with `cache` that read it) first, then every
    /// new version of the files. Without inotify, changes are noticed at each poll only (the
    /// error says why).
    pub fn new(
        path: &Path,
        loaded: LoadedConfig,
        cache: LoadCache,
    ) -> (StandaloneSource, Option<std::io::Error>) {
        let (watcher, error) = match watch::Watcher::new(path) {
            Ok(w) => (Some(w), None),
            Err(e) => (None, Some(e)),
        };
        let source = StandaloneSource {
            fingerprint: fingerprint(path),
            path: path.to_path_buf(),
            generation: 0,
            node: loaded.node.clone(),
            first: Some(loaded),
            cache,
            watcher,
            pending: None,
            applied: Statuses::default(),
            status: Arc::default(),
        };
        (source, error)
    }

    /// What `blixt status --socket` shows of this source, kept current.
    pub fn status(&self) -> Arc<Mutex<SourceStatus>> {
        self.status.clone()
    }

    fn lock_status(&self) -> std::sync::MutexGuard<'_, SourceStatus> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn translate(
        &mut self,
        mut loaded: LoadedConfig,
        detected_unix_us: u128,
        load: Duration,
    ) -> Generation {
        let started = Instant::now();
        if loaded.node != self.node {
            tracing::warn!(
                "the NodeConfig changed; interfaces, addresses, ports, timeouts and map sizes \
                 take effect at the next start of `blixt run` (routes and backends apply now)"
            );
        }
        loaded.carry_over(&self.applied);
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let translation = loaded.translate(&now);
        self.generation += 1;
        let mut snapshot = translation.snapshot;
        snapshot.generation = self.generation;
        self.pending = Some(Pending {
            generation: self.generation,
            report: report(&loaded.objects, &translation.statuses),
            statuses: translation.statuses,
            timing: Timing {
                detected_unix_us,
                load,
                translate: started.elapsed(),
                handed: Instant::now(),
            },
        });
        self.lock_status().refused = None;
        Generation {
            snapshot,
            tls: translation.tls,
            announce: None,
        }
    }

    /// A new generation when the files changed (or the first one), `Err` when the new version
    /// cannot be loaded, `None` when nothing changed.
    pub fn poll(&mut self) -> Option<Result<Generation, Refused>> {
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
                let message = e.to_string();
                self.lock_status().refused = Some(message.clone());
                Some(Err(Refused {
                    path: self.path.clone(),
                    message,
                }))
            }
        }
    }

    /// Waits up to `timeout`, or until the config path changed.
    pub fn wait(&mut self, timeout: Duration) {
        match &self.watcher {
            Some(w) => {
                w.wait(timeout);
            }
            None => std::thread::sleep(timeout),
        }
    }

    /// The node applied `generation`: its statuses become the ones shown and carried over.
    /// Returns the timing fields of its `applied` line (`"key":value,` pairs; empty for a
    /// generation this source did not hand out).
    pub fn applied(&mut self, generation: &Generation) -> String {
        let Some(p) = self
            .pending
            .take()
            .filter(|p| p.generation == generation.number())
        else {
            return String::new();
        };
        let t = p.timing;
        let timing = format!(
            "\"detected_unix_us\":{},\"load_us\":{},\"translate_us\":{},\"apply_us\":{},",
            t.detected_unix_us,
            t.load.as_micros(),
            t.translate.as_micros(),
            t.handed.elapsed().as_micros()
        );
        let mut s = self.lock_status();
        s.generation = p.generation;
        s.report = Some(p.report);
        drop(s);
        self.applied = p.statuses;
        timing
    }
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

/// Waking the file source on a change of the config path: inotify on the directory that holds
/// the files (for a single file, its parent: editors and ConfigMap volumes replace files by a
/// rename, which a watch on the file itself would not follow). The fingerprint comparison in
/// [`StandaloneSource::poll`](super::StandaloneSource::poll) still decides whether anything changed, and the poll interval
/// stays the fallback for changes inotify does not report (e.g. some network filesystems).
#[allow(unsafe_code)] // inotify and poll through libc: the crate's one exception
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
