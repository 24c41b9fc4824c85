//! One worker per Pod bound to the node: it builds the pod's sandbox (network namespace and
//! addresses, `resolv.conf`, volumes), runs its containers as processes (environment with the
//! Service variables, capabilities, init containers first, restarts per `restartPolicy`, probes), reports the status a kubelet would, and on deletion stops the
//! processes (SIGTERM, SIGKILL after the grace period), removes the sandbox and finalises the
//! Pod.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::net::IpAddr;
use std::os::fd::AsRawFd as _;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::agent::{AgentContext, PodRecord};
use crate::env::{self, PodFacts, Sources};
use crate::images::Invocation;
use crate::network::PodNetwork;
use crate::node::now;
use crate::probes::{self, Check, ProbeState};
use crate::sys::{self, Isolation};
use crate::volumes::{self, Volumes};

const TICK: Duration = Duration::from_millis(200);
/// Restart back-off: 1 s doubling up to 10 s (the kubelet: 10 s up to 5 min).
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
const RETRY: Duration = Duration::from_secs(1);

/// Why a worker stops.
enum End {
    /// The agent stops (the cluster is dropped): kill at once, leave the API alone.
    Shutdown,
    /// The Pod is being deleted: graceful stop (SIGKILL after `grace` seconds), then finalise.
    Deleted { grace: u64 },
    /// The Pod object is gone (force-deleted): kill at once.
    Gone,
}

/// Runs the pod whose latest version `updates` holds (`None` once it is gone from the API).
pub(crate) async fn run(ctx: Arc<AgentContext>, mut updates: watch::Receiver<Option<Pod>>) {
    let Some(pod) = updates.borrow_and_update().clone() else {
        return;
    };
    let mut worker = Worker::new(ctx, pod);
    let end = worker.live(&mut updates).await;
    worker.stop(end, &mut updates).await;
}

struct Worker {
    ctx: Arc<AgentContext>,
    pod: Pod,
    namespace: String,
    name: String,
    uid: String,
    dir: PathBuf,
    sandbox: Option<Sandbox>,
    /// Why the sandbox or its volumes are not ready yet.
    creating: Option<String>,
    next_attempt: Instant,
    containers: Vec<ContainerRun>,
    started: Time,
    conditions: BTreeMap<&'static str, (bool, Time)>,
    reported: Option<Value>,
}

struct Sandbox {
    /// `None` for hostNetwork pods, which run in the node namespace.
    network: Option<PodNetwork>,
    netns: PathBuf,
    facts: PodFacts,
    probe_ip: IpAddr,
    volumes: Option<Volumes>,
    /// The pod's `resolv.conf`, mounted at `/etc/resolv.conf`; `None`: the host's is used.
    resolv_conf: Option<PathBuf>,
}

struct ContainerRun {
    spec: Container,
    init: bool,
    process: Option<Running>,
    restarts: i32,
    launches: u32,
    waiting: Option<(&'static str, String)>,
    last: Option<Terminated>,
    /// Will not run again (completed, or failed without restart).
    done: bool,
    backoff: Duration,
    next_start: Instant,
    readiness: Option<ProbeState>,
    liveness: Option<ProbeState>,
    startup: Option<ProbeState>,
}

struct Running {
    child: Child,
    started: Time,
}

#[derive(Clone)]
struct Terminated {
    code: i32,
    signal: Option<i32>,
    started: Time,
    finished: Time,
    container_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Startup,
    Liveness,
    Readiness,
}

impl ContainerRun {
    fn probe_mut(&mut self, kind: Kind) -> Option<&mut ProbeState> {
        match kind {
            Kind::Startup => self.startup.as_mut(),
            Kind::Liveness => self.liveness.as_mut(),
            Kind::Readiness => self.readiness.as_mut(),
        }
    }

    fn new(spec: Container, init: bool) -> Self {
        Self {
            spec,
            init,
            process: None,
            restarts: 0,
            launches: 0,
            waiting: Some(("ContainerCreating", String::new())),
            last: None,
            done: false,
            backoff: BACKOFF_START,
            next_start: Instant::now(),
            readiness: None,
            liveness: None,
            startup: None,
        }
    }

    fn started(&self) -> bool {
        self.process.is_some() && self.startup.as_ref().is_none_or(|p| p.passing)
    }

    fn ready(&self) -> bool {
        self.started() && self.readiness.as_ref().is_none_or(|p| p.passing)
    }

    fn succeeded(&self) -> bool {
        self.done && self.last.as_ref().is_some_and(|t| t.code == 0)
    }
}

impl Worker {
    fn new(ctx: Arc<AgentContext>, pod: Pod) -> Self {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let dir = ctx.dir.join(format!("{namespace}_{name}_{uid}"));
        let spec = pod.spec.clone().unwrap_or_default();
        let containers = spec
            .init_containers
            .into_iter()
            .flatten()
            .map(|c| ContainerRun::new(c, true))
            .chain(
                spec.containers
                    .into_iter()
                    .map(|c| ContainerRun::new(c, false)),
            )
            .collect();
        Self {
            ctx,
            pod,
            namespace,
            name,
            uid,
            dir,
            sandbox: None,
            creating: None,
            next_attempt: Instant::now(),
            containers,
            started: now(),
            conditions: BTreeMap::new(),
            reported: None,
        }
    }

    fn label(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Runs the pod until it is deleted, gone, or the agent stops.
    async fn live(&mut self, updates: &mut watch::Receiver<Option<Pod>>) -> End {
        loop {
            if self.pod.metadata.deletion_timestamp.is_some() {
                let grace = self
                    .pod
                    .metadata
                    .deletion_grace_period_seconds
                    .or_else(|| {
                        let spec = self.pod.spec.as_ref();
                        spec.and_then(|s| s.termination_grace_period_seconds)
                    })
                    .unwrap_or(30)
                    .max(0) as u64;
                return End::Deleted { grace };
            }
            let terminal = matches!(
                self.pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            );
            // A pod that finished before this worker started (none in a fresh cluster) stays so.
            if !(terminal && self.reported.is_none()) {
                self.tick().await;
            }
            tokio::select! {
                () = self.ctx.cancel.cancelled() => return End::Shutdown,
                changed = updates.changed() => {
                    let latest = if changed.is_ok() { updates.borrow_and_update().clone() } else { None };
                    match latest {
                        Some(pod) => self.pod = pod,
                        None => return End::Gone,
                    }
                }
                () = tokio::time::sleep(TICK) => {}
            }
        }
    }

    async fn tick(&mut self) {
        if self.sandbox.as_ref().is_none_or(|s| s.volumes.is_none())
            && Instant::now() >= self.next_attempt
        {
            if let Err(message) = self.prepare().await {
                tracing::info!(pod = %self.label(), "pod not ready to start: {message}");
                self.creating = Some(message);
                self.next_attempt = Instant::now() + RETRY;
            }
        }
        if self.sandbox.as_ref().is_some_and(|s| s.volumes.is_some()) {
            self.creating = None;
            self.reap(false);
            self.start_containers().await;
            self.probe().await;
        }
        self.report().await;
    }

    /// Builds the sandbox: network first (the pod's IPs are needed by the downward API), then
    /// the volumes, retried until their sources exist.
    async fn prepare(&mut self) -> Result<(), String> {
        if self.sandbox.is_none() {
            std::fs::create_dir_all(self.dir.join("logs"))
                .map_err(|e| format!("creating {}: {e}", self.dir.display()))?;
            let spec = self.pod.spec.clone().unwrap_or_default();
            let (host_v4, host_v6) = self.ctx.node.host_ips;
            let host_ips = vec![host_v4.to_string(), host_v6.to_string()];
            let resolv_conf = match crate::dns::resolv_conf(
                &spec,
                &self.namespace,
                self.ctx.dns,
                &self.ctx.host_resolv_conf,
            ) {
                Some(text) => {
                    let path = self.dir.join("resolv.conf");
                    std::fs::write(&path, text)
                        .map_err(|e| format!("writing {}: {e}", path.display()))?;
                    Some(path)
                }
                None => None,
            };
            let sandbox = if spec.host_network == Some(true) {
                Sandbox {
                    network: None,
                    netns: self.ctx.network.ns().path().to_owned(),
                    facts: PodFacts {
                        pod: self.pod.clone(),
                        pod_ips: host_ips.clone(),
                        host_ips,
                    },
                    probe_ip: host_v4.into(),
                    volumes: None,
                    resolv_conf,
                }
            } else {
                let network = self.ctx.network.clone();
                let pod_network = tokio::task::spawn_blocking(move || network.attach_pod())
                    .await
                    .map_err(|e| format!("creating the pod network: {e}"))?
                    .map_err(|e| format!("creating the pod network: {e:#}"))?;
                let pod_ips = vec![pod_network.ipv4.to_string(), pod_network.ipv6.to_string()];
                Sandbox {
                    netns: pod_network.ns().path().to_owned(),
                    facts: PodFacts {
                        pod: self.pod.clone(),
                        pod_ips,
                        host_ips,
                    },
                    probe_ip: pod_network.ipv4.into(),
                    network: Some(pod_network),
                    volumes: None,
                    resolv_conf,
                }
            };
            self.ctx
                .registry
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(
                    (self.namespace.clone(), self.name.clone()),
                    PodRecord {
                        uid: self.uid.clone(),
                        netns: sandbox.network.as_ref().map(|n| n.ns().name().to_owned()),
                        dir: self.dir.clone(),
                    },
                );
            self.sandbox = Some(sandbox);
        }
        let sandbox = self.sandbox.as_mut().expect("created above");
        sandbox.facts.pod = self.pod.clone();
        let volumes =
            volumes::prepare(&self.ctx.client, &sandbox.facts, &self.dir.join("volumes")).await?;
        sandbox.volumes = Some(volumes);
        Ok(())
    }

    fn restart_policy(&self) -> &str {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
            .unwrap_or("Always")
    }

    /// Collects exited processes and decides about restarts (none when `stopping`).
    fn reap(&mut self, stopping: bool) {
        let policy = if stopping {
            "Never".to_owned()
        } else {
            self.restart_policy().to_owned()
        };
        for c in &mut self.containers {
            let Some(running) = c.process.as_mut() else {
                continue;
            };
            let status = match running.child.try_wait() {
                Ok(Some(status)) => status,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(container = %c.spec.name, "waiting for a container: {e}");
                    continue;
                }
            };
            let running = c.process.take().expect("checked above");
            let terminated = terminated(&running, status);
            let failed = terminated.code != 0;
            c.last = Some(terminated);
            c.readiness = None;
            c.liveness = None;
            c.startup = None;
            let restart = match policy.as_str() {
                "Never" => false,
                "OnFailure" => failed,
                _ => !c.init || failed,
            };
            if restart {
                c.restarts += 1;
                c.next_start = Instant::now() + c.backoff;
                c.waiting = Some((
                    "CrashLoopBackOff",
                    format!("back-off {:?} restarting the container", c.backoff),
                ));
                c.backoff = (c.backoff * 2).min(BACKOFF_MAX);
            } else {
                c.done = true;
            }
        }
    }

    async fn start_containers(&mut self) {
        // Init containers one at a time, in order; the app containers once all succeeded.
        let pending_init = self
            .containers
            .iter()
            .position(|c| c.init && !c.succeeded());
        let candidates: Vec<usize> = match pending_init {
            Some(i) if self.containers[i].done => Vec::new(), // failed for good: pod Failed
            Some(i) => vec![i],
            None => (0..self.containers.len())
                .filter(|&i| !self.containers[i].init)
                .collect(),
        };
        for i in candidates {
            let c = &self.containers[i];
            if c.process.is_some() || c.done || Instant::now() < c.next_start {
                continue;
            }
            match self.launch(i).await {
                Ok(()) => {}
                Err((reason, message)) => {
                    let label = self.label();
                    let c = &mut self.containers[i];
                    if c.waiting
                        .as_ref()
                        .is_none_or(|(r, m)| *r != reason || *m != message)
                    {
                        tracing::warn!(pod = %label, container = %c.spec.name, "{reason}: {message}");
                    }
                    c.waiting = Some((reason, message));
                    c.next_start = Instant::now() + RETRY;
                }
            }
        }
    }

    /// The command line, environment and isolation of container `i` (for its process, or for
    /// an exec probe with `command`).
    async fn prepare_launch(
        &self,
        i: usize,
        command: Option<&[String]>,
        scratch: &Path,
    ) -> Result<(Invocation, Vec<(String, String)>, Isolation), (&'static str, String)> {
        let c = &self.containers[i];
        let sandbox = self
            .sandbox
            .as_ref()
            .expect("containers start in a sandbox");
        let image = c.spec.image.clone().unwrap_or_default();
        let program = self.ctx.images.lookup(&image).ok_or_else(|| {
            (
                "ErrImagePull",
                format!(
                    "image {image:?} is not in the node agent's image table ({}): blixt-k8s-harness runs no images, only programs mapped to image names",
                    self.ctx.images.prefixes()
                ),
            )
        })?;
        let spec = self.pod.spec.clone().unwrap_or_default();
        let service_env = env::service_environment(
            &self.ctx.view.services(),
            &self.namespace,
            spec.enable_service_links != Some(false),
        );
        let mut sources = Sources::new(&self.ctx.client, &self.namespace);
        let env = env::environment(
            &mut sources,
            &sandbox.facts,
            &c.spec,
            program.image_env(),
            &service_env,
        )
        .await
        .map_err(|e| ("CreateContainerConfigError", e))?;
        let expand = |v: &Option<Vec<String>>| -> Vec<String> {
            v.iter().flatten().map(|s| env::expand(s, &env)).collect()
        };
        let invocation = match command {
            Some(command) => {
                let command: Vec<String> = command.iter().map(|s| env::expand(s, &env)).collect();
                program.invocation(&command, &[])
            }
            None => program.invocation(&expand(&c.spec.command), &expand(&c.spec.args)),
        }
        .map_err(|e| ("CreateContainerError", format!("image {image:?}: {e}")))?;
        let volumes = sandbox
            .volumes
            .as_ref()
            .expect("containers start with volumes");
        let files: Vec<(PathBuf, PathBuf)> = sandbox
            .resolv_conf
            .iter()
            .map(|path| (path.clone(), PathBuf::from("/etc/resolv.conf")))
            .collect();
        let mounts = volumes::mount_plan(volumes, &c.spec, &files, scratch)
            .map_err(|e| ("CreateContainerConfigError", e))?;
        let privileges = crate::caps::privileges(c.spec.security_context.as_ref())
            .map_err(|e| ("CreateContainerConfigError", e))?;
        let pod_security = spec.security_context.unwrap_or_default();
        let security = c.spec.security_context.clone().unwrap_or_default();
        let uid = security.run_as_user.or(pod_security.run_as_user);
        let gid = security.run_as_group.or(pod_security.run_as_group);
        let hostname = if spec.host_network == Some(true) {
            self.ctx.node.name.clone()
        } else {
            self.name.clone()
        };
        let isolation = Isolation {
            netns: sandbox.netns.clone(),
            hostname,
            mounts,
            working_dir: c
                .spec
                .working_dir
                .clone()
                .map_or_else(|| "/".into(), PathBuf::from),
            user: uid.map(|u| (u as u32, gid.unwrap_or(0) as u32)),
            privileges,
        };
        Ok((invocation, env, isolation))
    }

    async fn launch(&mut self, i: usize) -> Result<(), (&'static str, String)> {
        let launches = self.containers[i].launches;
        let name = self.containers[i].spec.name.clone();
        let scratch = self.dir.join("overlay").join(format!("{name}-{launches}"));
        let (invocation, env, isolation) = self.prepare_launch(i, None, &scratch).await?;
        let log_path = self.dir.join("logs").join(format!("{name}.log"));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| {
                (
                    "RunContainerError",
                    format!("opening {}: {e}", log_path.display()),
                )
            })?;
        let err = log
            .try_clone()
            .map_err(|e| ("RunContainerError", format!("duplicating the log: {e}")))?;
        let program = invocation.program.display().to_string();
        let child = tokio::task::spawn_blocking(move || {
            spawn(
                &invocation,
                &env,
                isolation,
                Stdio::from(log),
                Stdio::from(err),
            )
        })
        .await
        .map_err(|e| ("RunContainerError", e.to_string()))?
        .map_err(|e| {
            let tail = crate::process::log_tail(&log_path, 3);
            (
                "RunContainerError",
                format!("starting {program}: {e:#}; end of the container log: {tail}"),
            )
        })?;
        tracing::debug!(pod = %self.label(), container = %name, pid = child.id(), %program, "container started");
        let ip = self
            .sandbox
            .as_ref()
            .expect("launched in a sandbox")
            .probe_ip;
        let c = &mut self.containers[i];
        c.launches += 1;
        c.waiting = None;
        c.process = Some(Running {
            child,
            started: now(),
        });
        c.readiness = c
            .spec
            .readiness_probe
            .as_ref()
            .map(|p| ProbeState::new("readiness", p, &c.spec, ip));
        c.liveness = c
            .spec
            .liveness_probe
            .as_ref()
            .map(|p| ProbeState::new("liveness", p, &c.spec, ip));
        c.startup = c
            .spec
            .startup_probe
            .as_ref()
            .map(|p| ProbeState::new("startup", p, &c.spec, ip));
        Ok(())
    }

    /// Runs the due probes of the running containers: the startup probe until it passes, then
    /// liveness (a failure kills the container; the restart policy applies) and readiness.
    async fn probe(&mut self) {
        for i in 0..self.containers.len() {
            if self.containers[i].process.is_none() {
                continue;
            }
            let starting = self.containers[i]
                .startup
                .as_ref()
                .is_some_and(|p| !p.passing);
            let kinds: &[Kind] = if starting {
                &[Kind::Startup]
            } else {
                &[Kind::Liveness, Kind::Readiness]
            };
            for &kind in kinds {
                let Some(state) = self.containers[i].probe_mut(kind) else {
                    continue;
                };
                if !state.due(Instant::now()) {
                    continue;
                }
                let (check, timeout) = (state.check.clone(), state.timeout);
                let ok = match &check {
                    Check::Exec(command) => self.exec_probe(i, command, timeout).await,
                    _ => probes::run_network(&check, timeout).await,
                };
                let label = self.label();
                let c = &mut self.containers[i];
                let Some(state) = c.probe_mut(kind) else {
                    continue;
                };
                state.record(ok, Instant::now());
                if kind == Kind::Liveness && !state.passing {
                    tracing::info!(pod = %label, container = %c.spec.name, "liveness probe failed: killing the container");
                    if let Some(running) = &c.process {
                        let _ = sys::signal_group(running.child.id(), libc::SIGKILL);
                    }
                }
            }
        }
    }

    async fn exec_probe(&self, i: usize, command: &[String], timeout: Duration) -> bool {
        let scratch = self
            .dir
            .join("overlay")
            .join(format!("probe-{}", self.containers[i].spec.name));
        let Ok((invocation, env, isolation)) =
            self.prepare_launch(i, Some(command), &scratch).await
        else {
            return false;
        };
        let spawned = tokio::task::spawn_blocking(move || {
            spawn(&invocation, &env, isolation, Stdio::null(), Stdio::null())
        })
        .await;
        let ok = match spawned {
            Ok(Ok(mut child)) => {
                let deadline = Instant::now() + timeout;
                loop {
                    match child.try_wait() {
                        Ok(Some(status)) => break status.success(),
                        Ok(None) if Instant::now() < deadline => {
                            tokio::time::sleep(Duration::from_millis(20)).await
                        }
                        _ => {
                            let _ = sys::signal_group(child.id(), libc::SIGKILL);
                            let _ = tokio::task::spawn_blocking(move || child.wait()).await;
                            break false;
                        }
                    }
                }
            }
            _ => false,
        };
        let _ = std::fs::remove_dir_all(&scratch);
        ok
    }

    fn condition(&mut self, kind: &'static str, status: bool) -> Value {
        let entry = self
            .conditions
            .entry(kind)
            .or_insert_with(|| (status, now()));
        if entry.0 != status {
            *entry = (status, now());
        }
        json!({
            "type": kind,
            "status": if status { "True" } else { "False" },
            "lastTransitionTime": entry.1,
        })
    }

    fn phase(&self) -> &'static str {
        let apps = || self.containers.iter().filter(|c| !c.init);
        if self
            .containers
            .iter()
            .any(|c| c.init && c.done && !c.succeeded())
        {
            "Failed"
        } else if apps().all(|c| c.done) {
            if apps().all(|c| c.succeeded()) {
                "Succeeded"
            } else {
                "Failed"
            }
        } else if apps().any(|c| c.process.is_some() || c.last.is_some()) {
            "Running"
        } else {
            "Pending"
        }
    }

    fn status(&mut self) -> Value {
        let apps = || self.containers.iter().filter(|c| !c.init);
        let containers_ready = apps().all(ContainerRun::ready);
        let gates_ok = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.readiness_gates.as_ref())
            .into_iter()
            .flatten()
            .all(|gate| {
                self.pod
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .into_iter()
                    .flatten()
                    .any(|c| c.type_ == gate.condition_type && c.status == "True")
            });
        let initialized = self
            .containers
            .iter()
            .filter(|c| c.init)
            .all(ContainerRun::succeeded);
        let sandbox_ready = self.sandbox.is_some();
        let not_ready: Vec<String> = apps()
            .filter(|c| !c.ready())
            .map(|c| c.spec.name.clone())
            .collect();
        // Probes the agent cannot run keep their container unready: say why.
        let unsupported: Vec<String> = apps()
            .flat_map(|c| {
                [&c.startup, &c.readiness]
                    .into_iter()
                    .flatten()
                    .map(move |p| (c, p))
            })
            .filter_map(|(c, p)| match &p.check {
                Check::Unsupported(why) => Some(format!("{}: {why}", c.spec.name)),
                _ => None,
            })
            .collect();
        let mut conditions = vec![
            self.condition("PodReadyToStartContainers", sandbox_ready),
            self.condition("Initialized", initialized),
            self.condition("ContainersReady", containers_ready),
            self.condition("Ready", containers_ready && gates_ok),
        ];
        if !not_ready.is_empty() {
            for condition in &mut conditions[2..] {
                condition["reason"] = "ContainersNotReady".into();
                let mut message =
                    format!("containers with unready status: [{}]", not_ready.join(" "));
                for why in &unsupported {
                    message.push_str("; ");
                    message.push_str(why);
                }
                condition["message"] = message.into();
            }
        }
        let creating = self.creating.clone();
        let statuses = |init: bool| -> Vec<Value> {
            self.containers
                .iter()
                .filter(|c| c.init == init)
                .map(|c| container_status(c, creating.as_deref()))
                .collect()
        };
        let mut status = json!({
            "phase": self.phase(),
            "conditions": conditions,
            "startTime": self.started,
            "containerStatuses": statuses(false),
        });
        if self.containers.iter().any(|c| c.init) {
            status["initContainerStatuses"] = statuses(true).into();
        }
        if let Some(sandbox) = &self.sandbox {
            let facts = &sandbox.facts;
            status["podIP"] = facts.pod_ips[0].clone().into();
            status["podIPs"] = facts.pod_ips.iter().map(|ip| json!({ "ip": ip })).collect();
            status["hostIP"] = facts.host_ips[0].clone().into();
            status["hostIPs"] = facts
                .host_ips
                .iter()
                .map(|ip| json!({ "ip": ip }))
                .collect();
        }
        status
    }

    /// Writes the status subresource when it changed.
    async fn report(&mut self) {
        let status = self.status();
        if self.reported.as_ref() == Some(&status) {
            return;
        }
        let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let patch = json!({ "status": status });
        match pods
            .patch_status(
                &self.name,
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            )
            .await
        {
            Ok(_) => self.reported = Some(status),
            Err(e) => tracing::warn!(pod = %self.label(), "writing the pod status: {e}"),
        }
    }

    /// Stops the processes (gracefully when the pod is deleted), removes the sandbox and, for a
    /// deleted pod, reports the final status and deletes the object.
    async fn stop(mut self, end: End, updates: &mut watch::Receiver<Option<Pod>>) {
        let grace = match end {
            End::Deleted { grace } => grace,
            End::Shutdown | End::Gone => 0,
        };
        let mut deleted = matches!(end, End::Deleted { .. });
        for c in &self.containers {
            if let Some(running) = &c.process {
                let signal = if grace == 0 {
                    libc::SIGKILL
                } else {
                    libc::SIGTERM
                };
                let _ = sys::signal_group(running.child.id(), signal);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(grace);
        loop {
            self.reap(true);
            if self.containers.iter().all(|c| c.process.is_none()) {
                break;
            }
            let kill_now = Instant::now() >= deadline
                || self.ctx.cancel.is_cancelled()
                || (updates.has_changed().is_err() || updates.borrow().is_none());
            if kill_now {
                for c in &self.containers {
                    if let Some(running) = &c.process {
                        let _ = sys::signal_group(running.child.id(), libc::SIGKILL);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if self.ctx.cancel.is_cancelled() {
            deleted = false;
        }
        if deleted && self.reported.is_some() {
            for c in &mut self.containers {
                c.done = true;
            }
            self.report().await;
        }
        self.ctx
            .registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, record| record.uid != self.uid);
        if let Some(sandbox) = self.sandbox.take() {
            let _ = tokio::task::spawn_blocking(move || drop(sandbox)).await;
        }
        if !crate::keep_requested() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        if deleted {
            let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(self.uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match pods.delete(&self.name, &params).await {
                Ok(_) => tracing::debug!(pod = %self.label(), "pod finalised"),
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => tracing::warn!(pod = %self.label(), "finalising the pod: {e}"),
            }
        }
    }
}

fn terminated(running: &Running, status: ExitStatus) -> Terminated {
    Terminated {
        code: status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
        signal: status.signal(),
        started: running.started.clone(),
        finished: now(),
        container_id: container_id(running.child.id()),
    }
}

fn container_id(pid: u32) -> String {
    format!("blixt-k8s-harness://{pid}")
}

fn terminated_json(t: &Terminated) -> Value {
    let mut value = json!({
        "exitCode": t.code,
        "reason": if t.code == 0 { "Completed" } else { "Error" },
        "startedAt": t.started,
        "finishedAt": t.finished,
        "containerID": t.container_id,
    });
    if let Some(signal) = t.signal {
        value["signal"] = signal.into();
    }
    value
}

fn container_status(c: &ContainerRun, creating: Option<&str>) -> Value {
    let state = if let Some(running) = &c.process {
        json!({ "running": { "startedAt": running.started } })
    } else if let (true, Some(last)) = (c.done, &c.last) {
        json!({ "terminated": terminated_json(last) })
    } else if let Some(message) = creating {
        json!({ "waiting": { "reason": "ContainerCreating", "message": message } })
    } else {
        let (reason, message) = c
            .waiting
            .clone()
            .unwrap_or(("ContainerCreating", String::new()));
        let mut waiting = json!({ "reason": reason });
        if !message.is_empty() {
            waiting["message"] = message.into();
        }
        json!({ "waiting": waiting })
    };
    let mut status = json!({
        "name": c.spec.name,
        "image": c.spec.image.clone().unwrap_or_default(),
        "imageID": "",
        "ready": c.ready(),
        "started": c.started(),
        "restartCount": c.restarts,
        "state": state,
    });
    if let Some(running) = &c.process {
        status["containerID"] = container_id(running.child.id()).into();
    } else if let Some(last) = &c.last {
        status["containerID"] = last.container_id.clone().into();
    }
    if let (false, Some(last)) = (c.done, &c.last) {
        status["lastState"] = json!({ "terminated": terminated_json(last) });
    }
    status
}

/// Starts a container process: a process group of its own, the pod's namespaces and mounts,
/// a clean environment; tied to the test process (it dies with it).
///
/// The program is opened here, before the pod's mounts exist, and executed through
/// `/proc/self/fd/<n>`: a volume mounted over the directory that holds it (an emptyDir at
/// `/tmp` over a binary built under `/tmp`) must not hide it, just as a container's volumes
/// never hide its image's entrypoint. The descriptor is close-on-exec; an ELF program is opened
/// by `execve` before descriptors close (an interpreted script would not be).
fn spawn(
    invocation: &Invocation,
    env: &[(String, String)],
    isolation: Isolation,
    stdout: Stdio,
    stderr: Stdio,
) -> anyhow::Result<Child> {
    let program = File::open(&invocation.program).map_err(|e| {
        anyhow::anyhow!("opening the program {}: {e}", invocation.program.display())
    })?;
    let mut command = Command::new(format!("/proc/self/fd/{}", program.as_raw_fd()));
    command
        .arg0(&invocation.arg0)
        .args(&invocation.args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0);
    sys::isolate(&mut command, isolation)?;
    let child = crate::process::spawn_tied_to_process(command)?;
    drop(program);
    Ok(child)
}

/// Reads a container's log (stdout and stderr of every run).
pub(crate) fn read_log(dir: &Path, container: &str) -> Option<String> {
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut File::open(dir.join("logs").join(format!("{container}.log"))).ok()?,
        &mut text,
    )
    .ok()?;
    Some(text)
}
