//! The file provider: Gateway API manifests, Services, EndpointSlices, Namespaces and one
//! `NodeConfig`, read from a YAML file or a directory of them, into an [`ObjectIndex`] and the
//! node's settings.
//!
//! `docs/standalone.md` describes the format. In short:
//! - a path is a file, or a directory whose `*.yaml`/`*.yml` files (not hidden, not in
//!   subdirectories) are read in name order; every file may hold several documents;
//! - every document is dispatched by `apiVersion` and `kind`, deserialized into the same
//!   types the Kubernetes provider uses, and refused with its field path when it does not fit
//!   (unknown fields included, as `kubectl apply` does);
//! - what the API server would fill in is filled in: namespace `default`, `generation` 1, and a
//!   `creationTimestamp` from the document's position (see [`CREATION_EPOCH`]); `status` in a
//!   file is ignored;
//! - a load is all-or-nothing and reports every problem it finds ([`ConfigError`]).

mod cache;
mod error;
mod locate;
mod node;
mod path;
mod split;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use blixt_core::translator::{ObjectIndex, Statuses, Translation, TranslatorConfig};
use blixt_gateway_api::{Gateway, GatewayClass, ReferenceGrant, TcpRoute, TlsRoute, UdpRoute};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_yaml::Value;

pub use self::cache::LoadCache;
pub use self::error::{ConfigError, Problem, ProblemKind};
pub use self::node::{
    AddressBlock, AttachSetting, MapSizes, NodeConfigSpec, PortRange, Seconds, Timeouts,
    DEFAULT_METRICS_ADDRESS, DEFAULT_PIN_DIR, DEFAULT_STATUS_SOCKET, MAX_POOL_ENTRY_ADDRESSES,
};
pub use self::path::{FieldPath, Segment};

use self::locate::locate;
use self::split::split_documents;

/// `apiVersion` of the NodeConfig kind.
pub const NODE_CONFIG_API_VERSION: &str = "blixt.dev/v1alpha1";
/// `kind` of Blixt's node settings.
pub const NODE_CONFIG_KIND: &str = "NodeConfig";

/// Objects in files have no API server to stamp them, but Gateway API breaks ties by age
/// (several routes on one listener: the oldest wins; static addresses: the oldest Gateway
/// keeps them). An object without `metadata.creationTimestamp` gets this instant
/// (2000-01-01T00:00:00Z) plus its position among all non-empty documents of the load, in
/// seconds: files in name order, documents in file order, so **an earlier document is
/// older**. A timestamp written in the file is kept.
pub const CREATION_EPOCH: i64 = 946_684_800;

/// A configuration that loaded without a problem.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The objects, with namespace, generation and creationTimestamp filled in and no status.
    pub objects: ObjectIndex,
    /// The NodeConfig's spec; `NodeConfigSpec::default()` when the files hold none.
    pub node: NodeConfigSpec,
    /// Where the NodeConfig came from; `None` when there is none (the caller may then supply
    /// settings of its own, e.g. from command-line flags).
    pub node_origin: Option<Origin>,
    /// The translator's settings derived from `node` (see [`NodeConfigSpec::translator_config`]).
    pub translator: TranslatorConfig,
    /// The files read, in the order read.
    pub files: Vec<PathBuf>,
}

impl LoadedConfig {
    /// Copies the statuses of a previous translation into the objects, as the API server
    /// would hold them, so that what depends on the previous state stays put across reloads:
    /// pool addresses are sticky (a new Gateway never takes another's VIP) and conditions
    /// keep their `lastTransitionTime` while unchanged. Only the objects that get a status
    /// are copied out of the (shared) load cache.
    pub fn carry_over(&mut self, previous: &Statuses) {
        let key = |m: &ObjectMeta| {
            blixt_core::translator::ObjectKey::new(
                m.namespace.clone().unwrap_or_default(),
                m.name.clone().unwrap_or_default(),
            )
        };
        for gc in &mut self.objects.gateway_classes {
            if let Some(o) = previous
                .gateway_classes
                .get(gc.metadata.name.as_deref().unwrap_or_default())
            {
                Arc::make_mut(gc).status = Some(o.status.clone());
            }
        }
        for g in &mut self.objects.gateways {
            if let Some(s) = previous.gateways.get(&key(&g.metadata)) {
                Arc::make_mut(g).status = Some(s.clone());
            }
        }
        for r in &mut self.objects.tcp_routes {
            if let Some(s) = previous.tcp_routes.get(&key(&r.metadata)) {
                Arc::make_mut(r).status = Some(s.clone());
            }
        }
        for r in &mut self.objects.udp_routes {
            if let Some(s) = previous.udp_routes.get(&key(&r.metadata)) {
                Arc::make_mut(r).status = Some(s.clone());
            }
        }
        for r in &mut self.objects.tls_routes {
            if let Some(s) = previous.tls_routes.get(&key(&r.metadata)) {
                Arc::make_mut(r).status = Some(s.clone());
            }
        }
    }

    /// The configuration of `objects` and a NodeConfig (the default one when the files hold
    /// none): the translator's settings and the node's reserved addresses come from it.
    fn assemble(
        mut objects: ObjectIndex,
        node: Option<(NodeConfigSpec, Origin)>,
        files: Vec<PathBuf>,
    ) -> Self {
        let (node, node_origin) = match node {
            Some((spec, origin)) => (spec, Some(origin)),
            None => (NodeConfigSpec::default(), None),
        };
        objects.reserved_addresses = node.reserved_addresses();
        LoadedConfig {
            objects,
            translator: node.translator_config(),
            node,
            node_origin,
            files,
        }
    }

    /// Runs the translator on this configuration.
    pub fn translate(&self, now: &Time) -> Translation {
        blixt_core::translator::translate(&self.objects, &self.translator, now)
    }
}

impl NodeConfigSpec {
    /// The translator's settings: Blixt's controller name and features, the expanded address
    /// pool, the static address ranges, and `maps.maxFrontends` as the frontend limit.
    pub fn translator_config(&self) -> TranslatorConfig {
        TranslatorConfig {
            address_pool: self.pool_addresses(),
            static_address_ranges: self.static_address_ranges.clone(),
            max_frontends: Some(self.maps.max_frontends as usize),
            ..TranslatorConfig::default()
        }
    }

    /// The addresses no Gateway may take ([`ObjectIndex::reserved_addresses`]): the node's
    /// (`snatV4`, `snatV6`) and `reservedAddresses`, each with what it is.
    pub fn reserved_addresses(&self) -> BTreeMap<IpAddr, String> {
        let mut out = BTreeMap::new();
        for (field, ip) in [("snatV4", self.snat_v4), ("snatV6", self.snat_v6)] {
            if let Some(ip) = ip {
                out.insert(ip, format!("the node's address ({field})"));
            }
        }
        for &ip in &self.reserved_addresses {
            out.entry(ip)
                .or_insert_with(|| "reserved by the NodeConfig (reservedAddresses)".to_string());
        }
        out
    }
}

/// Where a document is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    /// 1-based, among the file's non-empty documents.
    pub document: usize,
    /// The line its content starts on.
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{} (document {})",
            self.file.display(),
            self.line,
            self.document
        )
    }
}

/// The text of one configuration file.
#[derive(Debug, Clone)]
pub struct Source {
    /// As named in messages.
    pub path: PathBuf,
    pub text: String,
}

/// The files a configuration path stands for: the path itself when it is a file; for a
/// directory, its `*.yaml` and `*.yml` regular files (symlinks followed), not hidden (names
/// starting with `.`, such as editors' lock files or Kubernetes' `..data` links), not
/// recursive, sorted by name. This is also the set a watcher should watch.
pub fn config_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !std::fs::metadata(path)?.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let lower = name.to_ascii_lowercase();
        if name.starts_with('.') || !(lower.ends_with(".yaml") || lower.ends_with(".yml")) {
            continue;
        }
        // A dangling symlink or a directory named *.yaml is not a config file.
        if std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file()) {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

fn io_problem(file: &Path, message: String) -> Problem {
    Problem {
        file: file.to_path_buf(),
        document: None,
        document_line: None,
        position: None,
        object: None,
        field: None,
        kind: ProblemKind::Io,
        message,
    }
}

/// Loads the configuration at `path` (a file or a directory, see [`config_files`]).
pub fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
    let files = config_files(path).map_err(|e| ConfigError {
        problems: vec![io_problem(path, e.to_string())],
    })?;
    let mut problems = Vec::new();
    let mut sources = Vec::new();
    for file in files {
        match std::fs::read(&file) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => sources.push(Source { path: file, text }),
                Err(e) => problems.push(io_problem(
                    &file,
                    format!(
                        "not UTF-8 text (invalid byte at offset {})",
                        e.utf8_error().valid_up_to()
                    ),
                )),
            },
            Err(e) => problems.push(io_problem(&file, e.to_string())),
        }
    }
    match load_sources(&sources) {
        Ok(loaded) if problems.is_empty() => Ok(loaded),
        Ok(_) => Err(ConfigError { problems }),
        Err(e) => {
            problems.extend(e.problems);
            problems.sort_by(|a, b| a.file.cmp(&b.file));
            Err(ConfigError { problems })
        }
    }
}

/// Loads a configuration from texts already read (in the order given, which decides
/// creation timestamps).
pub fn load_sources(sources: &[Source]) -> Result<LoadedConfig, ConfigError> {
    let mut loader = Loader::default();
    for source in sources {
        loader.file(source);
    }
    loader.finish(sources.iter().map(|s| s.path.clone()).collect())
}

/// Kinds read from files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    GatewayClass,
    Gateway,
    TcpRoute,
    UdpRoute,
    TlsRoute,
    ReferenceGrant,
    Service,
    EndpointSlice,
    Namespace,
    NodeConfig,
}

const GATEWAY_V1: &str = "gateway.networking.k8s.io/v1";

/// (kind, name in files, apiVersions read, namespaced)
const KINDS: &[(Kind, &str, &[&str], bool)] = &[
    (Kind::GatewayClass, "GatewayClass", &[GATEWAY_V1], false),
    (Kind::Gateway, "Gateway", &[GATEWAY_V1], true),
    (Kind::TcpRoute, "TCPRoute", &[GATEWAY_V1], true),
    (Kind::UdpRoute, "UDPRoute", &[GATEWAY_V1], true),
    (Kind::TlsRoute, "TLSRoute", &[GATEWAY_V1], true),
    // v1 is served since Gateway API v1.5; v1beta1 is still the storage version and what most
    // manifests in the wild say. Same schema.
    (
        Kind::ReferenceGrant,
        "ReferenceGrant",
        &[GATEWAY_V1, "gateway.networking.k8s.io/v1beta1"],
        true,
    ),
    (Kind::Service, "Service", &["v1"], true),
    (
        Kind::EndpointSlice,
        "EndpointSlice",
        &["discovery.k8s.io/v1"],
        true,
    ),
    (Kind::Namespace, "Namespace", &["v1"], false),
    (
        Kind::NodeConfig,
        NODE_CONFIG_KIND,
        &[NODE_CONFIG_API_VERSION],
        false,
    ),
];

fn supported_kinds() -> String {
    let mut by_version: Vec<(&str, Vec<&str>)> = Vec::new();
    for (_, name, versions, _) in KINDS {
        let v = versions[0];
        match by_version.iter_mut().find(|(x, _)| *x == v) {
            Some((_, names)) => names.push(name),
            None => by_version.push((v, vec![name])),
        }
    }
    by_version
        .iter()
        .map(|(v, names)| format!("{v} {}", names.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// What the loader needs of every object type.
trait FileObject: DeserializeOwned {
    fn meta(&mut self) -> &mut ObjectMeta;
    /// Status is the controller's to write; in a file it is ignored (the API server ignores
    /// it on create as well).
    fn clear_status(&mut self);
}

macro_rules! file_object {
    ($($t:ty),* ; $($no_status:ty),*) => {
        $(impl FileObject for $t {
            fn meta(&mut self) -> &mut ObjectMeta { &mut self.metadata }
            fn clear_status(&mut self) { self.status = None; }
        })*
        $(impl FileObject for $no_status {
            fn meta(&mut self) -> &mut ObjectMeta { &mut self.metadata }
            fn clear_status(&mut self) {}
        })*
    };
}

file_object!(GatewayClass, Gateway, TcpRoute, UdpRoute, TlsRoute, Service, Namespace; ReferenceGrant, EndpointSlice);

/// A NodeConfig document.
#[derive(Debug, Deserialize)]
struct NodeConfigObject {
    metadata: ObjectMeta,
    #[serde(default)]
    spec: NodeConfigSpec,
}

impl FileObject for NodeConfigObject {
    fn meta(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
    fn clear_status(&mut self) {}
}

/// Deserializes `value` into `T`, recording the path of a failure and every field `T` does
/// not know.
fn typed<T: DeserializeOwned>(value: Value) -> (Option<T>, Vec<(FieldPath, ProblemKind, String)>) {
    let mut unknown = Vec::new();
    let mut note = |p: serde_ignored::Path<'_>| unknown.push(FieldPath::from_ignored(&p));
    let result: Result<T, _> =
        serde_path_to_error::deserialize(serde_ignored::Deserializer::new(value, &mut note));
    let mut problems = Vec::new();
    for path in unknown {
        // Custom resource types do not read apiVersion and kind; they were checked already.
        let root_type_field = path.0.len() == 1
            && matches!(&path.0[0], Segment::Key(k) if k == "apiVersion" || k == "kind");
        if !root_type_field {
            problems.push((path, ProblemKind::UnknownField, "unknown field".to_string()));
        }
    }
    // Listed after the unknown fields: a misspelt field is often why a required one is
    // missing. Deserialization stops at its first error, so there is at most one.
    let object = match result {
        Ok(t) => Some(t),
        Err(e) => {
            problems.push((
                FieldPath::from_tracked(e.path()),
                ProblemKind::InvalidField,
                e.inner().to_string(),
            ));
            None
        }
    };
    (object, problems)
}

/// One document being read: where it is, for problems.
struct Doc<'a> {
    file: &'a Path,
    number: usize,
    line: usize,
    text: &'a str,
    object: Option<String>,
}

impl Doc<'_> {
    fn problem(&self, field: Option<&FieldPath>, kind: ProblemKind, message: String) -> Problem {
        let mut p = self.at(field, kind, message);
        p.field = field.filter(|f| !f.is_root()).map(|f| f.to_string());
        p
    }

    /// A problem of the whole document, shown at `place` (when the message says it all).
    fn at(&self, place: Option<&FieldPath>, kind: ProblemKind, message: String) -> Problem {
        Problem {
            file: self.file.to_path_buf(),
            document: Some(self.number),
            document_line: Some(self.line),
            position: place.and_then(|f| locate(self.text, f)),
            object: self.object.clone(),
            field: None,
            kind,
            message,
        }
    }

    fn origin(&self) -> Origin {
        Origin {
            file: self.file.to_path_buf(),
            document: self.number,
            line: self.line,
        }
    }
}

#[derive(Default)]
struct Loader {
    objects: ObjectIndex,
    node: Option<(NodeConfigSpec, Origin)>,
    /// Where the first NodeConfig is, valid or not.
    node_document: Option<Origin>,
    /// (kind, namespace, name) → where first defined.
    seen: HashMap<(Kind, String, String), Origin>,
    problems: Vec<Problem>,
    /// Non-empty documents so far, across files: the creation order.
    position: i64,
}

impl Loader {
    fn file(&mut self, source: &Source) {
        let mut number = 0;
        for raw in split_documents(&source.text) {
            let Some(line) = raw.first_line else { continue };
            let parsed = serde_yaml::from_str::<Value>(&raw.text);
            if matches!(parsed, Ok(Value::Null)) {
                // Only comments after all: not a document to count.
                continue;
            }
            number += 1;
            self.position += 1;
            let mut doc = Doc {
                file: &source.path,
                number,
                line,
                text: &raw.text,
                object: None,
            };
            match parsed {
                Ok(value) => self.document(&mut doc, value),
                Err(e) => {
                    let position = e.location().map(|l| (l.line(), l.column()));
                    let mut message = e.to_string();
                    if let Some((line, column)) = position {
                        let suffix = format!(" at line {line} column {column}");
                        if let Some(m) = message.strip_suffix(&suffix) {
                            message = m.to_string();
                        }
                    }
                    let mut p = doc.problem(None, ProblemKind::Syntax, message);
                    p.position = position;
                    self.problems.push(p);
                }
            }
        }
    }

    fn document(&mut self, doc: &mut Doc<'_>, mut value: Value) {
        if let Err(e) = value.apply_merge() {
            self.problems
                .push(doc.problem(None, ProblemKind::InvalidField, e.to_string()));
            return;
        }
        let Value::Mapping(map) = &value else {
            self.problems.push(doc.problem(
                None,
                ProblemKind::NotAnObject,
                "not a Kubernetes object (a mapping with apiVersion, kind and metadata)".into(),
            ));
            return;
        };
        let field = |name: &str| match map.get(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err((FieldPath::keys(&[name]), format!("{name} is not a string"))),
            None => Err((FieldPath::root(), format!("missing field `{name}`"))),
        };
        let (api_version, kind) = match (field("apiVersion"), field("kind")) {
            (Ok(a), Ok(k)) => (a, k),
            (a, k) => {
                for (path, msg) in [a.err(), k.err()].into_iter().flatten() {
                    self.problems
                        .push(doc.problem(Some(&path), ProblemKind::NotAnObject, msg));
                }
                return;
            }
        };
        let Some(&(kind_id, kind_name, versions, namespaced)) =
            KINDS.iter().find(|(_, name, _, _)| *name == kind)
        else {
            self.problems.push(doc.at(
                Some(&FieldPath::keys(&["kind"])),
                ProblemKind::UnknownKind,
                format!(
                    "unsupported kind {kind:?} ({api_version}); Blixt reads {}",
                    supported_kinds()
                ),
            ));
            return;
        };
        if !versions.contains(&api_version.as_str()) {
            self.problems.push(doc.at(
                Some(&FieldPath::keys(&["apiVersion"])),
                ProblemKind::UnknownKind,
                format!(
                    "unsupported apiVersion {api_version:?} for {kind}; use {}",
                    versions.join(" or ")
                ),
            ));
            return;
        }
        doc.object = Some(object_label(kind_name, map, namespaced));

        match kind_id {
            Kind::GatewayClass => self.object(doc, value, kind_id, namespaced, |o, g| {
                o.gateway_classes.push(Arc::new(g))
            }),
            Kind::Gateway => self.object(doc, value, kind_id, namespaced, |o, g| {
                o.gateways.push(Arc::new(g))
            }),
            Kind::TcpRoute => self.object(doc, value, kind_id, namespaced, |o, r| {
                o.tcp_routes.push(Arc::new(r))
            }),
            Kind::UdpRoute => self.object(doc, value, kind_id, namespaced, |o, r| {
                o.udp_routes.push(Arc::new(r))
            }),
            Kind::TlsRoute => self.object(doc, value, kind_id, namespaced, |o, r| {
                o.tls_routes.push(Arc::new(r))
            }),
            Kind::ReferenceGrant => self.object(doc, value, kind_id, namespaced, |o, g| {
                o.reference_grants.push(Arc::new(g))
            }),
            Kind::Service => self.object(doc, value, kind_id, namespaced, |o, s| {
                o.services.push(Arc::new(s))
            }),
            Kind::EndpointSlice => self.object(doc, value, kind_id, namespaced, |o, s| {
                o.endpoint_slices.push(Arc::new(s))
            }),
            Kind::Namespace => self.object(doc, value, kind_id, namespaced, |o, n| {
                o.namespaces.push(Arc::new(n))
            }),
            Kind::NodeConfig => {
                let mut node = None;
                self.object(doc, value, kind_id, namespaced, |_, n: NodeConfigObject| {
                    node = Some(n.spec)
                });
                if let Some(spec) = node {
                    self.node_config(doc, spec);
                }
            }
        }
    }

    /// Deserializes, checks and fills in one object, then hands it to `push`.
    fn object<T: FileObject>(
        &mut self,
        doc: &Doc<'_>,
        value: Value,
        kind: Kind,
        namespaced: bool,
        push: impl FnOnce(&mut ObjectIndex, T),
    ) {
        let claimed = self.claim(doc, &value, kind, namespaced);
        let (object, problems) = typed::<T>(value);
        for (path, pk, message) in problems {
            self.problems.push(doc.problem(Some(&path), pk, message));
        }
        let (Some(mut object), true) = (object, claimed) else {
            return;
        };

        let meta = object.meta();
        if namespaced {
            if meta.namespace.as_deref().is_none_or(str::is_empty) {
                meta.namespace = Some("default".to_string());
            }
        } else {
            // As the API server does for cluster-scoped kinds.
            meta.namespace = None;
        }
        meta.generation.get_or_insert(1);
        if meta.creation_timestamp.is_none() {
            let t = Timestamp::from_second(CREATION_EPOCH + self.position)
                .expect("a few billion documents fit in jiff's range");
            meta.creation_timestamp = Some(Time(t));
        }
        object.clear_status();
        push(&mut self.objects, object);
    }

    /// Checks the document's identity (a name; no other object of the kind, namespace and
    /// name; a single NodeConfig) on the raw document, so that an object that does not
    /// deserialize still takes its name and a second definition is still reported.
    fn claim(&mut self, doc: &Doc<'_>, value: &Value, kind: Kind, namespaced: bool) -> bool {
        let meta = value.get("metadata");
        let get = |k: &str| meta.and_then(|m| m.get(k));
        let name = match get("name") {
            Some(Value::String(n)) if !n.is_empty() => n.clone(),
            // Not a string: deserialization reports it.
            Some(v) if !v.is_null() && !v.is_string() => return false,
            _ => {
                let hint = if get("generateName").is_some() {
                    " (generateName needs an API server; name the object)"
                } else {
                    ""
                };
                self.problems.push(doc.problem(
                    Some(&FieldPath::keys(&["metadata", "name"])),
                    ProblemKind::MissingName,
                    format!("missing; every object needs a name{hint}"),
                ));
                return false;
            }
        };
        if kind == Kind::NodeConfig {
            if let Some(first) = &self.node_document {
                self.problems.push(doc.at(
                    Some(&FieldPath::keys(&["kind"])),
                    ProblemKind::Duplicate,
                    format!(
                        "a second NodeConfig; there must be at most one (the first is at {first})"
                    ),
                ));
                return false;
            }
            self.node_document = Some(doc.origin());
            return true;
        }
        let namespace = match get("namespace").and_then(Value::as_str) {
            Some(ns) if namespaced && !ns.is_empty() => ns.to_string(),
            _ if namespaced => "default".to_string(),
            _ => String::new(),
        };
        let key = (kind, namespace, name);
        if let Some(first) = self.seen.get(&key) {
            self.problems.push(doc.problem(
                Some(&FieldPath::keys(&["metadata", "name"])),
                ProblemKind::Duplicate,
                format!("defined twice; the first is at {first}"),
            ));
            return false;
        }
        self.seen.insert(key, doc.origin());
        true
    }

    fn node_config(&mut self, doc: &Doc<'_>, spec: NodeConfigSpec) {
        let problems = spec.check();
        if problems.is_empty() {
            self.node = Some((spec, doc.origin()));
            return;
        }
        for (path, message) in problems {
            self.problems
                .push(doc.problem(Some(&path), ProblemKind::InvalidValue, message));
        }
    }

    fn finish(self, files: Vec<PathBuf>) -> Result<LoadedConfig, ConfigError> {
        if !self.problems.is_empty() {
            return Err(ConfigError {
                problems: self.problems,
            });
        }
        Ok(LoadedConfig::assemble(self.objects, self.node, files))
    }
}

/// `TCPRoute default/app` from the raw document, before it deserializes (so that problems of
/// a document that does not deserialize still name it).
fn object_label(kind: &str, map: &serde_yaml::Mapping, namespaced: bool) -> String {
    let meta = map.get("metadata");
    let get = |k: &str| {
        meta.and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let name = get("name").unwrap_or("(unnamed)");
    if namespaced {
        format!("{kind} {}/{name}", get("namespace").unwrap_or("default"))
    } else {
        format!("{kind} {name}")
    }
}
