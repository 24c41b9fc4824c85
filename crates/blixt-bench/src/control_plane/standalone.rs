//! Route change → programmed, standalone: a real `blixt run --config DIR` process (in a
//! network namespace of its own, so nothing it does reaches the host's), the configuration of
//! [`super::manifests`], and this process watching the pinned BPF maps read-only.
//!
//! One change: route `r`'s backendRef is switched to another Service (its own ↔ the next
//! route's) by replacing its routes file, as an editor saves. The clock starts just before the
//! rename and stops when the route's frontend entry in `blixt_frontends` points at a new ring
//! (the flip, the reconciler's last write for that frontend). Then the new ring is checked: its
//! first slot's backend must be an endpoint of the new Service. Each `applied` event of
//! `blixt run` also tells where the time went (detect, load, translate, apply).

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use blixt_bpf::pinned::PinnedDataplane;
use blixt_bpf::shared::{addr_bytes, family_of, FrontendKey, FrontendValue};
use blixt_lab::process::LabProcess;

use super::manifests::{self, Layout};

/// How long the first configuration may take to be applied (10,000 routes: seconds).
const FIRST_APPLY: Duration = Duration::from_secs(600);
/// How long one change may take before the run is abandoned.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between two looks at the maps.
const MAP_POLL: Duration = Duration::from_micros(100);

/// One change and where its time went, in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Change {
    /// Rename of the file → the frontend flipped to its new ring, seen in the pinned map.
    pub total: f64,
    /// Rename → `blixt run` noticed the change.
    pub detect: f64,
    /// Reading and parsing the files.
    pub load: f64,
    /// Translating into a snapshot.
    pub translate: f64,
    /// The reconciler's apply (plan and map writes).
    pub apply: f64,
}

/// Memory of a process from /proc/PID/status, in MiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rss {
    pub rss: f64,
    pub peak: f64,
    pub anon: f64,
}

impl Rss {
    pub fn of(pid: u32) -> Result<Rss> {
        let path = format!("/proc/{pid}/status");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let field = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .map_or(0.0, |kb| kb / 1024.0)
        };
        Ok(Rss {
            rss: field("VmRSS:"),
            peak: field("VmHWM:"),
            anon: field("RssAnon:"),
        })
    }
}

/// What one size measured.
#[derive(Debug, Clone)]
pub struct SizeRun {
    pub routes: usize,
    pub changes: Vec<Change>,
    /// Start of `blixt run` → first configuration applied, seconds.
    pub first_apply_s: f64,
    /// `blixt run` after the changes.
    pub rss: Rss,
}

/// Finds the `blixt` binary: `$BLIXT_BIN`, else built with cargo next to this executable
/// (same target directory and profile), so `make bench` and `cargo test` need no extra step.
pub fn blixt_binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("BLIXT_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let exe = std::env::current_exe().context("locating blixt-bench's executable")?;
    // target/<profile>/blixt-bench or target/<profile>/deps/<test>
    let profile_dir = exe
        .ancestors()
        .skip(1)
        .find(|d| {
            matches!(
                d.file_name().and_then(|n| n.to_str()),
                Some("release" | "debug")
            )
        })
        .with_context(|| {
            format!(
                "{}: not under target/release or target/debug",
                exe.display()
            )
        })?;
    let target = profile_dir.parent().context("target directory")?;
    let release = profile_dir.ends_with("release");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(&workspace)
        .args(["build", "-p", "blixt", "--bin", "blixt"])
        .env("CARGO_TARGET_DIR", target);
    if release {
        cmd.arg("--release");
    }
    let status = cmd
        .status()
        .context("running cargo to build the blixt binary (or set BLIXT_BIN)")?;
    if !status.success() {
        bail!("cargo build -p blixt failed ({status}); set BLIXT_BIN to a built blixt binary");
    }
    Ok(profile_dir.join("blixt"))
}

/// Removes the config directory and the pins, and stops `blixt run`, however the run ends.
struct Guard {
    run: Option<LabProcess>,
    dir: PathBuf,
    pins: PathBuf,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut r) = self.run.take() {
            let _ = r.terminate(Duration::from_secs(5));
        }
        let _ = std::fs::remove_dir_all(&self.pins);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Fields of an `applied` event: `(generation, detected_unix_us, load_us, translate_us,
/// apply_us)`.
fn parse_applied(line: &str) -> Option<(u64, Option<[u128; 4]>)> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v.get("event")?.as_str()? != "applied" {
        return None;
    }
    let generation = v.get("generation")?.as_u64()?;
    let num = |k: &str| v.get(k).and_then(|x| x.as_u64()).map(u128::from);
    let timing = (|| {
        Some([
            num("detected_unix_us")?,
            num("load_us")?,
            num("translate_us")?,
            num("apply_us")?,
        ])
    })();
    Some((generation, timing))
}

fn unix_us() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
}

fn bpf_key(vip: Ipv4Addr, port: u16) -> FrontendKey {
    FrontendKey {
        addr: addr_bytes(IpAddr::V4(vip)),
        port: port.to_be(),
        proto: 6,
        family: family_of(IpAddr::V4(vip)),
    }
}

/// The pinned maps of a running dataplane, read the way a change is judged: a route's frontend
/// entry flipping to a new ring, and that ring serving the route's new Service.
pub(super) struct Watch {
    pd: PinnedDataplane,
    ring_size: u32,
}

impl Watch {
    pub(super) fn open(pins: &Path) -> Result<Watch> {
        let pd = PinnedDataplane::open(pins)
            .with_context(|| format!("opening the pinned maps in {}", pins.display()))?;
        let ring_size = pd.node_config().context("reading blixt_config")?.ring_size;
        Ok(Watch { pd, ring_size })
    }

    /// Route `r`'s frontend entry (`None` while the dataplane has none).
    pub(super) fn frontend(&self, layout: &Layout, r: usize) -> Result<Option<FrontendValue>> {
        let (vip, port) = layout.frontend(r);
        match self.pd.frontends.get(&bpf_key(vip, port), 0) {
            Ok(v) => Ok(Some(v)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e).context("reading a route's frontend in blixt_frontends"),
        }
    }

    /// Waits until route `r`'s frontend points at a ring other than `before`, from `t0`;
    /// returns how long that took since `t0`.
    pub(super) fn await_flip(
        &self,
        layout: &Layout,
        r: usize,
        before: u32,
        t0: Instant,
    ) -> Result<Duration> {
        loop {
            if self.frontend(layout, r)?.is_some_and(|v| v.ring != before) {
                return Ok(t0.elapsed());
            }
            if t0.elapsed() > CHANGE_TIMEOUT {
                let (vip, port) = layout.frontend(r);
                bail!(
                    "{} routes: route r{r}'s frontend {vip}:{port} still points at ring \
                     {before} after {CHANGE_TIMEOUT:?}",
                    layout.routes
                );
            }
            std::thread::sleep(MAP_POLL);
        }
    }

    /// Checks that route `r`'s ring serves Service `target`: its first slot's backend is one
    /// of that Service's endpoints.
    pub(super) fn check_serves(&self, layout: &Layout, r: usize, target: usize) -> Result<()> {
        let ring = self
            .frontend(layout, r)?
            .with_context(|| format!("route r{r} has no frontend"))?
            .ring;
        let be_id = self.ring_slot(ring, 0)?;
        let be = self
            .pd
            .backends
            .get(&be_id, 0)
            .with_context(|| format!("reading backend {be_id} in blixt_backends"))?;
        let be_addr = Ipv4Addr::from(<[u8; 4]>::try_from(&be.addr[..4]).expect("4 bytes"));
        if !layout.is_endpoint_of(be_addr, target) {
            bail!(
                "{} routes: route r{r} now sends to svc{target}, but its new ring's first slot \
                 is backend {be_id} = {be_addr}",
                layout.routes
            );
        }
        Ok(())
    }

    /// Slot `slot` of ring `ring` (two 32-bit slots per element of `blixt_rings`).
    fn ring_slot(&self, ring: u32, slot: u32) -> Result<u32> {
        let index = u64::from(ring) * u64::from(self.ring_size) + u64::from(slot);
        let pair = self
            .pd
            .rings
            .get(&((index / 2) as u32), 0)
            .context("reading blixt_rings")?;
        let bytes = pair.to_ne_bytes();
        let half = if index % 2 == 0 {
            &bytes[..4]
        } else {
            &bytes[4..]
        };
        Ok(u32::from_ne_bytes(half.try_into().expect("4 bytes")))
    }
}

/// The route a change number `i` edits: a stride coprime to 10, 1,000 and 10,000 spreads the
/// changes over the routes (and files).
pub(super) fn changed_route(i: usize, routes: usize) -> usize {
    (i * 7919 + 13) % routes
}

/// Route `r`'s next Service: its own ↔ the next route's.
pub(super) fn switch_target(targets: &mut [usize], r: usize) {
    let routes = targets.len();
    targets[r] = if targets[r] == r { (r + 1) % routes } else { r };
}

/// Measures `changes` route changes with `routes` routes of `endpoints` endpoints each.
pub fn run(blixt: &Path, routes: usize, endpoints: usize, changes: usize) -> Result<SizeRun> {
    let id = format!("{}-{routes}", std::process::id());
    let dir = std::env::temp_dir().join(format!("blixt-bench-cp-{id}"));
    let pins = PathBuf::from(format!("/sys/fs/bpf/blixt-bench-cp-{id}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut guard = Guard {
        run: None,
        dir: dir.clone(),
        pins: pins.clone(),
    };
    let layout = Layout {
        routes,
        endpoints,
        pin_dir: pins.clone(),
    };
    let mut targets: Vec<usize> = (0..routes).collect();
    layout.write_all(&dir, &targets)?;

    // A network namespace of its own: no interface is attached, and what `blixt run` does to
    // routes (TLS steering's stale-route flush) stays inside it.
    let mut cmd = Command::new("unshare");
    cmd.arg("--net")
        .arg("--")
        .arg(blixt)
        .arg("run")
        .arg("--config")
        .arg(&dir)
        .env("RUST_LOG", "error");
    let started = Instant::now();
    let run = guard
        .run
        .insert(LabProcess::spawn("blixt run (control-plane suite)", cmd)?);
    run.wait_for_line(FIRST_APPLY, |l| {
        parse_applied(l).is_some_and(|(g, _)| g == 1)
    })
    .with_context(|| format!("{routes} routes: the first configuration was not applied"))?;
    let first_apply_s = started.elapsed().as_secs_f64();
    let pid = run.id();

    let watch = Watch::open(&pins)?;

    let mut out = Vec::with_capacity(changes);
    let mut generation = 1u64;
    for i in 0..changes {
        let r = changed_route(i, routes);
        switch_target(&mut targets, r);
        let before = watch
            .frontend(&layout, r)?
            .with_context(|| format!("route r{r} has no frontend before the change"))?
            .ring;
        let file = layout.routes_file(r);
        let text = layout.routes_yaml(r / manifests::PER_FILE, &targets);

        let t0_unix = unix_us();
        let t0 = Instant::now();
        manifests::replace(&dir, &file, &text)?;
        let now = watch
            .await_flip(&layout, r, before, t0)
            .with_context(|| format!("change {i}"))?;
        watch
            .check_serves(&layout, r, targets[r])
            .with_context(|| format!("change {i}"))?;

        generation += 1;
        let line = run
            .wait_for_line(CHANGE_TIMEOUT, |l| {
                parse_applied(l).is_some_and(|(g, _)| g >= generation)
            })
            .with_context(|| format!("{routes} routes: generation {generation} not announced"))?;
        let (g, timing) = parse_applied(&line).expect("matched above");
        if g != generation {
            bail!("{routes} routes, change {i}: one file replace made generations up to {g}, expected {generation}");
        }
        let ms = |us: u128| us as f64 / 1000.0;
        let mut c = Change {
            total: now.as_secs_f64() * 1000.0,
            ..Change::default()
        };
        if let Some([detected, load, translate, apply]) = timing {
            c.detect = ms(detected.saturating_sub(t0_unix));
            c.load = ms(load);
            c.translate = ms(translate);
            c.apply = ms(apply);
        }
        out.push(c);
    }
    let rss = Rss::of(pid)?;
    if let Some(mut r) = guard.run.take() {
        r.terminate(Duration::from_secs(10))
            .context("stopping blixt run")?;
    }
    Ok(SizeRun {
        routes,
        changes: out,
        first_apply_s,
        rss,
    })
}
