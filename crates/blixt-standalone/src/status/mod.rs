//! The status view: what the translator concluded about every object Blixt owns, as
//! `kubectl get -o wide` tables or as YAML/JSON.
//!
//! [`report`] joins the objects and the translator's [`Statuses`] into a [`StatusReport`]: the
//! objects Blixt owns, each as Kubernetes would show it (metadata, spec, and the status Blixt
//! would write), plus the objects it ignores and why. The report is what `-o yaml|json`
//! prints and what a status socket can carry; [`render`] turns it into text. Everything is
//! sorted (classes by name, Gateways by namespace/name, routes by kind then namespace/name),
//! so the same input always renders the same bytes.

mod table;

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use blixt_core::translator::{ObjectIndex, ObjectKey, Statuses};
use blixt_gateway_api::{Gateway, GatewayClass, TcpRoute, TlsRoute, UdpRoute};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

pub use self::table::render_table;

/// `apiVersion` of a [`StatusReport`].
pub const REPORT_API_VERSION: &str = "blixt.dev/v1alpha1";
/// `kind` of a [`StatusReport`].
pub const REPORT_KIND: &str = "StatusReport";

/// Blixt's objects with their statuses, and the objects it leaves alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    /// [`REPORT_API_VERSION`]
    pub api_version: String,
    /// [`REPORT_KIND`]
    pub kind: String,
    /// GatewayClasses, Gateways, then TCPRoutes, UDPRoutes, TLSRoutes.
    pub items: Vec<StatusItem>,
    /// Gateway API objects Blixt does not handle, with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored: Vec<Ignored>,
}

/// One object Blixt owns, with the status Blixt writes for it. Serialized as the Kubernetes
/// object (apiVersion, kind, metadata, spec, status).
#[derive(Debug, Clone, PartialEq)]
pub enum StatusItem {
    GatewayClass(Box<GatewayClass>),
    Gateway(Box<Gateway>),
    TcpRoute(Box<TcpRoute>),
    UdpRoute(Box<UdpRoute>),
    TlsRoute(Box<TlsRoute>),
}

impl StatusItem {
    pub fn kind(&self) -> &'static str {
        match self {
            StatusItem::GatewayClass(_) => "GatewayClass",
            StatusItem::Gateway(_) => "Gateway",
            StatusItem::TcpRoute(_) => "TCPRoute",
            StatusItem::UdpRoute(_) => "UDPRoute",
            StatusItem::TlsRoute(_) => "TLSRoute",
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            StatusItem::GatewayClass(o) => &o.metadata,
            StatusItem::Gateway(o) => &o.metadata,
            StatusItem::TcpRoute(o) => &o.metadata,
            StatusItem::UdpRoute(o) => &o.metadata,
            StatusItem::TlsRoute(o) => &o.metadata,
        }
    }
}

impl Serialize for StatusItem {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // The resource types write their own apiVersion and kind.
        match self {
            StatusItem::GatewayClass(o) => o.serialize(s),
            StatusItem::Gateway(o) => o.serialize(s),
            StatusItem::TcpRoute(o) => o.serialize(s),
            StatusItem::UdpRoute(o) => o.serialize(s),
            StatusItem::TlsRoute(o) => o.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for StatusItem {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let v = serde_json::Value::deserialize(d)?;
        let kind = v
            .get("kind")
            .and_then(|k| k.as_str())
            .ok_or_else(|| D::Error::missing_field("kind"))?
            .to_string();
        let item = match kind.as_str() {
            "GatewayClass" => {
                serde_json::from_value(v).map(|o| StatusItem::GatewayClass(Box::new(o)))
            }
            "Gateway" => serde_json::from_value(v).map(|o| StatusItem::Gateway(Box::new(o))),
            "TCPRoute" => serde_json::from_value(v).map(|o| StatusItem::TcpRoute(Box::new(o))),
            "UDPRoute" => serde_json::from_value(v).map(|o| StatusItem::UdpRoute(Box::new(o))),
            "TLSRoute" => serde_json::from_value(v).map(|o| StatusItem::TlsRoute(Box::new(o))),
            other => {
                return Err(D::Error::unknown_variant(
                    other,
                    &[
                        "GatewayClass",
                        "Gateway",
                        "TCPRoute",
                        "UDPRoute",
                        "TLSRoute",
                    ],
                ))
            }
        };
        item.map_err(D::Error::custom)
    }
}

/// A Gateway API object Blixt leaves alone.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ignored {
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    pub reason: String,
}

impl fmt::Display for Ignored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}: {}", self.kind, self.name, self.reason),
            None => write!(f, "{} {}: {}", self.kind, self.name, self.reason),
        }
    }
}

fn key(meta: &ObjectMeta) -> ObjectKey {
    ObjectKey::new(
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or_default(),
    )
}

/// The first object per namespace/name (the translator's rule for duplicates), sorted.
fn unique<T>(objects: &[Arc<T>], meta: impl Fn(&T) -> &ObjectMeta) -> Vec<&T> {
    let mut seen = BTreeSet::new();
    let mut out: Vec<&T> = objects
        .iter()
        .map(|o| &**o)
        .filter(|o| seen.insert(key(meta(o))))
        .collect();
    out.sort_by_key(|o| key(meta(o)));
    out
}

/// Joins objects and the translator's statuses.
pub fn report(objects: &ObjectIndex, statuses: &Statuses) -> StatusReport {
    let mut items = Vec::new();
    let mut ignored = Vec::new();
    let ignore = |kind: &str, meta: &ObjectMeta, namespaced: bool, reason: String| Ignored {
        kind: kind.to_string(),
        namespace: namespaced.then(|| key(meta).namespace),
        name: meta.name.clone().unwrap_or_default(),
        reason,
    };

    let mut classes = unique(&objects.gateway_classes, |o| &o.metadata);
    classes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for gc in classes {
        let name = gc.metadata.name.as_deref().unwrap_or_default();
        match statuses.gateway_classes.get(name) {
            Some(outcome) => {
                let mut gc = gc.clone();
                gc.status = Some(outcome.status.clone());
                items.push(StatusItem::GatewayClass(Box::new(gc)));
            }
            None => ignored.push(ignore(
                "GatewayClass",
                &gc.metadata,
                false,
                format!(
                    "controllerName {:?} is not Blixt's",
                    gc.spec.controller_name
                ),
            )),
        }
    }

    for g in unique(&objects.gateways, |o| &o.metadata) {
        match statuses.gateways.get(&key(&g.metadata)) {
            Some(s) => {
                let mut g = g.clone();
                g.status = Some(s.clone());
                items.push(StatusItem::Gateway(Box::new(g)));
            }
            None => ignored.push(ignore(
                "Gateway",
                &g.metadata,
                true,
                format!(
                    "gatewayClassName {:?} is not a GatewayClass of Blixt's",
                    g.spec.gateway_class_name
                ),
            )),
        }
    }

    macro_rules! routes {
        ($list:expr, $statuses:expr, $variant:ident, $kind:literal) => {
            for r in unique(&$list, |o| &o.metadata) {
                match $statuses.get(&key(&r.metadata)) {
                    Some(s) => {
                        let mut r = r.clone();
                        r.status = Some(s.clone());
                        items.push(StatusItem::$variant(Box::new(r)));
                    }
                    None => ignored.push(ignore(
                        $kind,
                        &r.metadata,
                        true,
                        "no parentRef names a Gateway of Blixt's".to_string(),
                    )),
                }
            }
        };
    }
    routes!(
        objects.tcp_routes,
        statuses.tcp_routes,
        TcpRoute,
        "TCPRoute"
    );
    routes!(
        objects.udp_routes,
        statuses.udp_routes,
        UdpRoute,
        "UDPRoute"
    );
    routes!(
        objects.tls_routes,
        statuses.tls_routes,
        TlsRoute,
        "TLSRoute"
    );

    StatusReport {
        api_version: REPORT_API_VERSION.to_string(),
        kind: REPORT_KIND.to_string(),
        items,
        ignored,
    }
}

/// How to print a report, as `kubectl get -o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// Tables.
    #[default]
    Table,
    /// Tables with more columns: messages, hostnames, backends, generations.
    Wide,
    Yaml,
    Json,
}

impl FromStr for OutputFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "" | "table" => Ok(OutputFormat::Table),
            "wide" => Ok(OutputFormat::Wide),
            "yaml" => Ok(OutputFormat::Yaml),
            "json" => Ok(OutputFormat::Json),
            other => Err(format!(
                "unknown output format {other:?}: expected wide, yaml or json"
            )),
        }
    }
}

/// The report as text in `format`; ends with a newline.
pub fn render(report: &StatusReport, format: OutputFormat) -> String {
    match format {
        OutputFormat::Table => render_table(report, false),
        OutputFormat::Wide => render_table(report, true),
        OutputFormat::Yaml => serde_yaml::to_string(report).expect("a report serializes"),
        OutputFormat::Json => {
            serde_json::to_string_pretty(report).expect("a report serializes") + "\n"
        }
    }
}
