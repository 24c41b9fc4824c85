//! Cluster DNS, emulated: a small authoritative server for `cluster.local` run by the node
//! agent, answering from a watch of Services and EndpointSlices (no CoreDNS, no forwarding), and
//! the `resolv.conf` a kubelet writes for each pod's `dnsPolicy`.
//!
//! | name | answer |
//! |---|---|
//! | `<svc>.<ns>.svc.cluster.local` | A / AAAA: the Service's ClusterIPs of that family (NODATA when it has none); headless Services: the ready endpoint addresses of its EndpointSlices (all with `publishNotReadyAddresses`); ExternalName: a CNAME |
//! | `<hostname>.<svc>.<ns>.svc.cluster.local` | the addresses of the headless Service's endpoints with that `hostname` (StatefulSet pods) |
//! | `<a-b-c-d>.<ns>.pod.cluster.local` | the address spelled in the name (IPv6 with `-` for `:`) |
//! | `cluster.local`, `svc.cluster.local`, `pod.cluster.local` | NODATA |
//! | anything else under `cluster.local` | NXDOMAIN |
//! | names outside `cluster.local` | REFUSED: nothing is forwarded upstream |
//!
//! Over UDP (answers larger than 512 bytes are truncated with TC set, so resolvers retry over
//! TCP) and TCP. Records carry a 5 s TTL. Not served: SRV and PTR records, and any type other
//! than A, AAAA and CNAME (NODATA for names that exist), EDNS (queries with an OPT record are
//! answered without one, as RFC 6891 allows), DNSSEC, zone transfers.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{PodSpec, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::Client;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;

/// The cluster's DNS domain (the kubelet's `--cluster-domain`).
pub(crate) const CLUSTER_DOMAIN: &str = "cluster.local";
const TTL: u32 = 5;
/// The largest answer sent over UDP (no EDNS).
const UDP_LIMIT: usize = 512;
/// How long a TCP connection may stay silent.
const TCP_IDLE: Duration = Duration::from_secs(10);
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

const TYPE_A: u16 = 1;
const TYPE_CNAME: u16 = 5;
const TYPE_AAAA: u16 = 28;
const TYPE_ANY: u16 = 255;
const CLASS_IN: u16 = 1;
const CLASS_ANY: u16 = 255;

const FLAG_QR: u16 = 0x8000;
const FLAG_AA: u16 = 0x0400;
const FLAG_TC: u16 = 0x0200;
const FLAG_RD: u16 = 0x0100;
const OPCODE_MASK: u16 = 0x7800;

const RCODE_FORMERR: u16 = 1;
const RCODE_NXDOMAIN: u16 = 3;
const RCODE_NOTIMP: u16 = 4;
const RCODE_REFUSED: u16 = 5;

/// What the DNS server looks names up in.
pub(crate) trait Directory {
    fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>>;
    /// The EndpointSlices of Service `namespace/service`.
    fn slices(&self, namespace: &str, service: &str) -> Vec<Arc<EndpointSlice>>;
}

/// Services and EndpointSlices of every namespace, kept by reflectors: what the DNS server
/// answers from and what the Service environment variables are made of.
#[derive(Clone)]
pub(crate) struct ClusterView {
    services: Store<Service>,
    slices: Store<EndpointSlice>,
}

impl std::fmt::Debug for ClusterView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterView")
            .field("services", &self.services.len())
            .field("slices", &self.slices.len())
            .finish()
    }
}

impl ClusterView {
    /// Starts the reflectors on the current Tokio runtime; they stop with `cancel`.
    pub(crate) fn start(client: &Client, cancel: &CancellationToken) -> Self {
        Self {
            services: reflect(Api::all(client.clone()), cancel.clone()),
            slices: reflect(Api::all(client.clone()), cancel.clone()),
        }
    }

    /// Waits until both reflectors have listed once.
    pub(crate) async fn wait_until_ready(&self, timeout: Duration) -> Result<()> {
        tokio::time::timeout(timeout, async {
            self.services.wait_until_ready().await?;
            self.slices.wait_until_ready().await
        })
        .await
        .with_context(|| format!("listing Services and EndpointSlices took over {timeout:?}"))?
        .context("the Service and EndpointSlice reflectors stopped")
    }

    pub(crate) fn services(&self) -> Vec<Arc<Service>> {
        self.services.state()
    }
}

impl Directory for ClusterView {
    fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>> {
        self.services.get(&ObjectRef::new(name).within(namespace))
    }

    fn slices(&self, namespace: &str, service: &str) -> Vec<Arc<EndpointSlice>> {
        self.slices.state_filter(|slice| {
            slice.metadata.namespace.as_deref() == Some(namespace)
                && slice
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL))
                    .is_some_and(|s| s == service)
        })
    }
}

fn reflect<K>(api: Api<K>, cancel: CancellationToken) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher::watcher(api, watcher::Config::default()))
        .default_backoff();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                event = stream.next() => match event {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => tracing::warn!("cluster DNS watch: {e}"),
                    None => return,
                },
            }
        }
    });
    reader
}

/// A record of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record {
    Address(IpAddr),
    /// An ExternalName Service's target.
    Cname(String),
}

/// The outcome of a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The name exists; these are its records of the asked type (none: NODATA).
    Records(Vec<Record>),
    NxDomain,
    /// Not a name of the cluster domain: nothing is forwarded.
    Refused,
}

/// Answers a question for `labels` (lower case, without the root) of type `qtype`.
pub(crate) fn resolve(labels: &[String], qtype: u16, directory: &impl Directory) -> Answer {
    let domain: Vec<&str> = CLUSTER_DOMAIN.split('.').collect();
    let names: Vec<&str> = labels.iter().map(String::as_str).collect();
    let Some(inner) = names.strip_suffix(domain.as_slice()) else {
        return Answer::Refused;
    };
    let records = match inner {
        [] | ["svc"] | ["pod"] => Vec::new(),
        [name, namespace, "svc"] => match service_records(directory, namespace, name, None) {
            Some(records) => records,
            None => return Answer::NxDomain,
        },
        [host, name, namespace, "svc"] => {
            match service_records(directory, namespace, name, Some(host)) {
                Some(records) if !records.is_empty() => records,
                _ => return Answer::NxDomain,
            }
        }
        [address, _namespace, "pod"] => match pod_address(address) {
            Some(ip) => vec![Record::Address(ip)],
            None => return Answer::NxDomain,
        },
        _ => return Answer::NxDomain,
    };
    Answer::Records(
        records
            .into_iter()
            .filter(|record| match record {
                Record::Address(IpAddr::V4(_)) => matches!(qtype, TYPE_A | TYPE_ANY),
                Record::Address(IpAddr::V6(_)) => matches!(qtype, TYPE_AAAA | TYPE_ANY),
                Record::Cname(_) => true,
            })
            .collect(),
    )
}

/// Every record of Service `namespace/name` (of its endpoints named `host`, when given);
/// `None` if the Service does not exist.
fn service_records(
    directory: &impl Directory,
    namespace: &str,
    name: &str,
    host: Option<&str>,
) -> Option<Vec<Record>> {
    let service = directory.service(namespace, name)?;
    let spec = service.spec.clone().unwrap_or_default();
    if spec.type_.as_deref() == Some("ExternalName") {
        return Some(match (host, spec.external_name) {
            (None, Some(target)) => vec![Record::Cname(target)],
            _ => Vec::new(),
        });
    }
    let headless = spec.cluster_ip.as_deref() == Some("None");
    if !headless {
        if host.is_some() {
            return Some(Vec::new());
        }
        let ips = spec
            .cluster_ips
            .unwrap_or_else(|| spec.cluster_ip.into_iter().collect());
        return Some(
            ips.iter()
                .filter_map(|ip| ip.parse().ok())
                .map(Record::Address)
                .collect(),
        );
    }
    let not_ready_too = spec.publish_not_ready_addresses == Some(true);
    let mut addresses: BTreeSet<IpAddr> = BTreeSet::new();
    for slice in directory.slices(namespace, name) {
        for endpoint in slice.endpoints.iter().flatten() {
            let ready = endpoint.conditions.as_ref().and_then(|c| c.ready) != Some(false);
            let named = host.is_none_or(|h| endpoint.hostname.as_deref() == Some(h));
            if (ready || not_ready_too) && named {
                addresses.extend(
                    endpoint
                        .addresses
                        .iter()
                        .filter_map(|a| a.parse::<IpAddr>().ok()),
                );
            }
        }
    }
    Some(addresses.into_iter().map(Record::Address).collect())
}

/// `10-244-0-5` or `fd00-10-244-0--5` (CoreDNS's "pods insecure" names).
fn pod_address(label: &str) -> Option<IpAddr> {
    label
        .replace('-', ".")
        .parse::<std::net::Ipv4Addr>()
        .map(IpAddr::V4)
        .or_else(|_| label.replace('-', ":").parse().map(IpAddr::V6))
        .ok()
}

/// A parsed question.
#[derive(Debug)]
struct Query<'a> {
    id: u16,
    flags: u16,
    /// The question section as received, echoed in the answer.
    question: &'a [u8],
    labels: Vec<String>,
    qtype: u16,
    qclass: u16,
}

enum Parsed<'a> {
    Query(Query<'a>),
    /// Answered with an error code and no question.
    Error {
        id: u16,
        flags: u16,
        rcode: u16,
    },
    /// Not a query (too short to answer, or a response): dropped.
    Ignore,
}

fn u16_at(msg: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]))
}

fn parse(msg: &[u8]) -> Parsed<'_> {
    let (Some(id), Some(flags)) = (u16_at(msg, 0), u16_at(msg, 2)) else {
        return Parsed::Ignore;
    };
    if msg.len() < 12 || flags & FLAG_QR != 0 {
        return Parsed::Ignore;
    }
    let error = |rcode| Parsed::Error { id, flags, rcode };
    if flags & OPCODE_MASK != 0 {
        return error(RCODE_NOTIMP);
    }
    if u16_at(msg, 4) != Some(1) {
        return error(RCODE_FORMERR);
    }
    let Some((labels, end)) = read_name(msg, 12) else {
        return error(RCODE_FORMERR);
    };
    let (Some(qtype), Some(qclass)) = (u16_at(msg, end), u16_at(msg, end + 2)) else {
        return error(RCODE_FORMERR);
    };
    Parsed::Query(Query {
        id,
        flags,
        question: &msg[12..end + 4],
        labels,
        qtype,
        qclass,
    })
}

/// The lower-cased labels of the name at `start` and the offset just after it (compression
/// pointers are followed, backwards only).
fn read_name(msg: &[u8], start: usize) -> Option<(Vec<String>, usize)> {
    let mut labels = Vec::new();
    let (mut at, mut end, mut length) = (start, None, 0usize);
    loop {
        let len = *msg.get(at)? as usize;
        match len {
            0 => return Some((labels, end.unwrap_or(at + 1))),
            1..=63 => {
                let label = msg.get(at + 1..at + 1 + len)?;
                length += len + 1;
                if length > 255 {
                    return None;
                }
                labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
                at += 1 + len;
            }
            0xc0..=0xff => {
                let target = (u16_at(msg, at)? & 0x3fff) as usize;
                if target >= at {
                    return None;
                }
                end.get_or_insert(at + 2);
                at = target;
            }
            _ => return None,
        }
    }
}

fn push_name(out: &mut Vec<u8>, name: &str) {
    for label in name.split('.').filter(|l| !l.is_empty()) {
        let bytes = &label.as_bytes()[..label.len().min(63)];
        out.push(bytes.len() as u8);
        out.extend_from_slice(bytes);
    }
    out.push(0);
}

/// Encodes a response: the question echoed (when there is one), answers pointing at its name.
fn encode(
    id: u16,
    request_flags: u16,
    rcode: u16,
    authoritative: bool,
    question: &[u8],
    records: &[Record],
) -> Vec<u8> {
    let mut flags = FLAG_QR | (request_flags & (OPCODE_MASK | FLAG_RD)) | rcode;
    if authoritative {
        flags |= FLAG_AA;
    }
    let mut out = Vec::with_capacity(64 + records.len() * 28);
    for value in [
        id,
        flags,
        u16::from(!question.is_empty()),
        records.len() as u16,
        0,
        0,
    ] {
        out.extend_from_slice(&value.to_be_bytes());
    }
    out.extend_from_slice(question);
    for record in records {
        out.extend_from_slice(&0xc00cu16.to_be_bytes()); // the question's name, at offset 12
        let (rtype, data) = match record {
            Record::Address(IpAddr::V4(ip)) => (TYPE_A, ip.octets().to_vec()),
            Record::Address(IpAddr::V6(ip)) => (TYPE_AAAA, ip.octets().to_vec()),
            Record::Cname(target) => {
                let mut data = Vec::new();
                push_name(&mut data, target);
                (TYPE_CNAME, data)
            }
        };
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&TTL.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(&data);
    }
    out
}

/// The response to `msg` (`None`: send nothing), at most `limit` bytes: a larger one is sent
/// without answers and with TC set.
fn respond(msg: &[u8], directory: &impl Directory, limit: usize) -> Option<Vec<u8>> {
    let query = match parse(msg) {
        Parsed::Ignore => return None,
        Parsed::Error { id, flags, rcode } => {
            return Some(encode(id, flags, rcode, false, &[], &[]))
        }
        Parsed::Query(query) => query,
    };
    let answer = if matches!(query.qclass, CLASS_IN | CLASS_ANY) {
        resolve(&query.labels, query.qtype, directory)
    } else {
        Answer::Refused
    };
    let (rcode, authoritative, records) = match answer {
        Answer::Records(records) => (0, true, records),
        Answer::NxDomain => (RCODE_NXDOMAIN, true, Vec::new()),
        Answer::Refused => (RCODE_REFUSED, false, Vec::new()),
    };
    let reply = encode(
        query.id,
        query.flags,
        rcode,
        authoritative,
        query.question,
        &records,
    );
    if reply.len() <= limit {
        return Some(reply);
    }
    let flags = query.flags;
    let mut truncated = encode(query.id, flags, rcode, authoritative, query.question, &[]);
    let header_flags = u16_at(&truncated, 2).unwrap_or_default() | FLAG_TC;
    truncated[2..4].copy_from_slice(&header_flags.to_be_bytes());
    Some(truncated)
}

/// The server's sockets, bound before its runtime starts so a busy port fails the start.
#[derive(Debug)]
pub(crate) struct DnsServer {
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
    address: SocketAddr,
}

impl DnsServer {
    /// Binds UDP and TCP port 53 of `ip`.
    pub(crate) fn bind(ip: IpAddr) -> Result<Self> {
        let address = SocketAddr::new(ip, 53);
        let udp = std::net::UdpSocket::bind(address)
            .with_context(|| format!("binding the cluster DNS server to UDP {address}"))?;
        let tcp = std::net::TcpListener::bind(address)
            .with_context(|| format!("binding the cluster DNS server to TCP {address}"))?;
        udp.set_nonblocking(true)
            .and_then(|()| tcp.set_nonblocking(true))
            .context("making the DNS sockets non-blocking")?;
        Ok(Self { udp, tcp, address })
    }

    pub(crate) fn address(&self) -> SocketAddr {
        self.address
    }

    /// Answers queries until `cancel`. Needs a Tokio runtime.
    pub(crate) async fn serve(self, view: ClusterView, cancel: CancellationToken) -> Result<()> {
        let udp =
            tokio::net::UdpSocket::from_std(self.udp).context("registering the DNS UDP socket")?;
        let tcp = tokio::net::TcpListener::from_std(self.tcp)
            .context("registering the DNS TCP listener")?;
        let mut buf = vec![0u8; 4096];
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                received = udp.recv_from(&mut buf) => match received {
                    Ok((len, peer)) => {
                        if let Some(reply) = respond(&buf[..len], &view, UDP_LIMIT) {
                            if let Err(e) = udp.send_to(&reply, peer).await {
                                tracing::debug!(%peer, "cluster DNS: sending an answer: {e}");
                            }
                        }
                    }
                    Err(e) => tracing::debug!("cluster DNS: receiving over UDP: {e}"),
                },
                accepted = tcp.accept() => match accepted {
                    Ok((stream, _)) => {
                        let (view, cancel) = (view.clone(), cancel.clone());
                        tokio::spawn(async move {
                            tokio::select! {
                                () = cancel.cancelled() => {}
                                () = serve_tcp(stream, &view) => {}
                            }
                        });
                    }
                    Err(e) => tracing::debug!("cluster DNS: accepting over TCP: {e}"),
                },
            }
        }
    }
}

/// Length-prefixed queries on one connection until it closes or idles.
async fn serve_tcp(mut stream: tokio::net::TcpStream, view: &ClusterView) {
    loop {
        let mut len = [0u8; 2];
        if !matches!(
            tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
        if !matches!(
            tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut msg)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        let Some(reply) = respond(&msg, view, usize::from(u16::MAX)) else {
            return;
        };
        let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&reply);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}

/// A resolver configuration: `nameserver`, `search` and `options` lines.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct ResolvConf {
    nameservers: Vec<String>,
    searches: Vec<String>,
    options: Vec<String>,
}

impl ResolvConf {
    fn parse(text: &str) -> Self {
        let mut conf = Self::default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => conf.nameservers.extend(words.next().map(str::to_owned)),
                // The last search or domain line wins.
                Some("search" | "domain") => conf.searches = words.map(str::to_owned).collect(),
                Some("options") => conf.options.extend(words.map(str::to_owned)),
                _ => {}
            }
        }
        conf
    }

    fn render(&self) -> String {
        let mut text = String::new();
        for server in &self.nameservers {
            text.push_str(&format!("nameserver {server}\n"));
        }
        for (key, values) in [("search", &self.searches), ("options", &self.options)] {
            if !values.is_empty() {
                text.push_str(&format!("{key} {}\n", values.join(" ")));
            }
        }
        text
    }

    /// The pod's `dnsConfig` on top, as the kubelet merges it: nameservers and searches
    /// appended without duplicates, options replaced by name.
    fn merge(&mut self, config: &k8s_openapi::api::core::v1::PodDNSConfig) {
        for server in config.nameservers.iter().flatten() {
            if !self.nameservers.contains(server) {
                self.nameservers.push(server.clone());
            }
        }
        for search in config.searches.iter().flatten() {
            if !self.searches.contains(search) {
                self.searches.push(search.clone());
            }
        }
        for option in config.options.iter().flatten() {
            let name = option.name.clone().unwrap_or_default();
            let rendered = match &option.value {
                Some(value) => format!("{name}:{value}"),
                None => name.clone(),
            };
            match self
                .options
                .iter_mut()
                .find(|o| o.split(':').next() == Some(name.as_str()))
            {
                Some(existing) => *existing = rendered,
                None => self.options.push(rendered),
            }
        }
    }
}

/// The `resolv.conf` the kubelet writes for a pod of `namespace` with `spec`, given the
/// cluster's `nameserver` and the host's `/etc/resolv.conf`; `None` when the pod sees the
/// host's file unchanged (`dnsPolicy: Default`, or `ClusterFirst` with `hostNetwork`, without
/// `dnsConfig`).
pub(crate) fn resolv_conf(
    spec: &PodSpec,
    namespace: &str,
    nameserver: IpAddr,
    host: &str,
) -> Option<String> {
    let host_network = spec.host_network == Some(true);
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let cluster_first = match policy {
        "ClusterFirstWithHostNet" => true,
        "ClusterFirst" => !host_network,
        _ => false,
    };
    let host_conf = ResolvConf::parse(host);
    let mut conf = if cluster_first {
        ResolvConf {
            nameservers: vec![nameserver.to_string()],
            searches: [
                format!("{namespace}.svc.{CLUSTER_DOMAIN}"),
                format!("svc.{CLUSTER_DOMAIN}"),
                CLUSTER_DOMAIN.to_owned(),
            ]
            .into_iter()
            .chain(host_conf.searches)
            .collect(),
            options: vec!["ndots:5".to_owned()],
        }
    } else if policy == "None" {
        ResolvConf::default()
    } else {
        // Default, and ClusterFirst on the host network: the host's.
        host_conf
    };
    match &spec.dns_config {
        Some(config) => conf.merge(config),
        None if !cluster_first && policy != "None" => return None,
        None => {}
    }
    Some(conf.render())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;

    use super::*;

    #[derive(Default)]
    struct Fake {
        services: BTreeMap<(String, String), Arc<Service>>,
        slices: Vec<Arc<EndpointSlice>>,
    }

    impl Fake {
        fn service(mut self, json: serde_json::Value) -> Self {
            let service: Service = serde_json::from_value(json).unwrap();
            let key = (
                service.metadata.namespace.clone().unwrap(),
                service.metadata.name.clone().unwrap(),
            );
            self.services.insert(key, Arc::new(service));
            self
        }

        fn slice(mut self, json: serde_json::Value) -> Self {
            self.slices
                .push(Arc::new(serde_json::from_value(json).unwrap()));
            self
        }
    }

    impl Directory for Fake {
        fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>> {
            self.services
                .get(&(namespace.to_owned(), name.to_owned()))
                .cloned()
        }

        fn slices(&self, namespace: &str, service: &str) -> Vec<Arc<EndpointSlice>> {
            self.slices
                .iter()
                .filter(|s| {
                    s.metadata.namespace.as_deref() == Some(namespace)
                        && s.metadata.labels.as_ref().unwrap()[SERVICE_NAME_LABEL] == service
                })
                .cloned()
                .collect()
        }
    }

    fn directory() -> Fake {
        Fake::default()
            .service(serde_json::json!({
                "metadata": { "name": "web", "namespace": "shop" },
                "spec": { "clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20", "fd00:10:96::20"] },
            }))
            .service(serde_json::json!({
                "metadata": { "name": "v4only", "namespace": "shop" },
                "spec": { "clusterIP": "10.96.0.21", "clusterIPs": ["10.96.0.21"] },
            }))
            .service(serde_json::json!({
                "metadata": { "name": "db", "namespace": "shop" },
                "spec": { "clusterIP": "None" },
            }))
            .service(serde_json::json!({
                "metadata": { "name": "ext", "namespace": "shop" },
                "spec": { "type": "ExternalName", "externalName": "example.org." },
            }))
            .slice(serde_json::json!({
                "metadata": { "name": "db-1", "namespace": "shop", "labels": { SERVICE_NAME_LABEL: "db" } },
                "addressType": "IPv4",
                "endpoints": [
                    { "addresses": ["10.244.0.7"], "hostname": "db-0", "conditions": { "ready": true } },
                    { "addresses": ["10.244.0.8"], "hostname": "db-1", "conditions": { "ready": false } },
                    { "addresses": ["10.244.0.9"] },
                ],
            }))
    }

    fn labels(name: &str) -> Vec<String> {
        name.split('.').map(str::to_owned).collect()
    }

    fn lookup(name: &str, qtype: u16) -> Answer {
        resolve(&labels(name), qtype, &directory())
    }

    fn addresses(list: &[&str]) -> Answer {
        Answer::Records(
            list.iter()
                .map(|a| Record::Address(a.parse().unwrap()))
                .collect(),
        )
    }

    #[test]
    fn services_resolve_by_family() {
        assert_eq!(
            lookup("web.shop.svc.cluster.local", TYPE_A),
            addresses(&["10.96.0.20"])
        );
        assert_eq!(
            lookup("web.shop.svc.cluster.local", TYPE_AAAA),
            addresses(&["fd00:10:96::20"])
        );
        assert_eq!(
            lookup("web.shop.svc.cluster.local", TYPE_ANY),
            addresses(&["10.96.0.20", "fd00:10:96::20"])
        );
        // NODATA: the name exists, the family does not.
        assert_eq!(
            lookup("v4only.shop.svc.cluster.local", TYPE_AAAA),
            addresses(&[])
        );
        assert_eq!(
            lookup("web.shop.svc.cluster.local", 16 /* TXT */),
            addresses(&[])
        );
    }

    #[test]
    fn headless_services_resolve_to_ready_endpoints() {
        assert_eq!(
            lookup("db.shop.svc.cluster.local", TYPE_A),
            addresses(&["10.244.0.7", "10.244.0.9"])
        );
        assert_eq!(
            lookup("db-0.db.shop.svc.cluster.local", TYPE_A),
            addresses(&["10.244.0.7"])
        );
        assert_eq!(
            lookup("db-1.db.shop.svc.cluster.local", TYPE_A),
            Answer::NxDomain,
            "not ready"
        );
    }

    #[test]
    fn other_names() {
        assert_eq!(
            lookup("ext.shop.svc.cluster.local", TYPE_A),
            Answer::Records(vec![Record::Cname("example.org.".into())])
        );
        assert_eq!(
            lookup("missing.shop.svc.cluster.local", TYPE_A),
            Answer::NxDomain
        );
        assert_eq!(
            lookup("web.shop.svc.cluster.local.shop.svc.cluster.local", TYPE_A),
            Answer::NxDomain
        );
        assert_eq!(lookup("svc.cluster.local", TYPE_A), addresses(&[]));
        assert_eq!(lookup("example.org", TYPE_A), Answer::Refused);
        assert_eq!(lookup("cluster.local.example.org", TYPE_A), Answer::Refused);
        assert_eq!(
            lookup("10-244-0-5.shop.pod.cluster.local", TYPE_A),
            addresses(&["10.244.0.5"])
        );
        assert_eq!(
            lookup("fd00-10-244-0--5.shop.pod.cluster.local", TYPE_AAAA),
            addresses(&["fd00:10:244:0::5"])
        );
    }

    fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut msg = Vec::new();
        for value in [id, FLAG_RD, 1, 0, 0, 0] {
            msg.extend_from_slice(&value.to_be_bytes());
        }
        push_name(&mut msg, name);
        msg.extend_from_slice(&qtype.to_be_bytes());
        msg.extend_from_slice(&CLASS_IN.to_be_bytes());
        msg
    }

    #[test]
    fn wire_format() {
        let fake = directory();
        let msg = query(0x1234, "WEB.shop.svc.cluster.local.", TYPE_A);
        let reply = respond(&msg, &fake, UDP_LIMIT).expect("answered");
        assert_eq!(&reply[..2], &[0x12, 0x34]);
        let flags = u16_at(&reply, 2).unwrap();
        assert_eq!(
            flags,
            FLAG_QR | FLAG_AA | FLAG_RD,
            "a response, authoritative, NOERROR"
        );
        assert_eq!(u16_at(&reply, 4), Some(1));
        assert_eq!(u16_at(&reply, 6), Some(1), "one answer");
        assert_eq!(&reply[12..msg.len()], &msg[12..], "the question echoed");
        let answer = &reply[msg.len()..];
        assert_eq!(
            answer,
            [
                &[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4][..],
                &[10, 96, 0, 20]
            ]
            .concat()
        );
        let (parsed, end) = read_name(&reply, 12).unwrap();
        assert_eq!(parsed, labels("web.shop.svc.cluster.local"));
        assert_eq!(end, msg.len() - 4);

        let nx = respond(
            &query(1, "nope.shop.svc.cluster.local", TYPE_A),
            &fake,
            UDP_LIMIT,
        )
        .unwrap();
        assert_eq!(u16_at(&nx, 2).unwrap() & 0xf, RCODE_NXDOMAIN);
        let refused = respond(&query(1, "example.org", TYPE_A), &fake, UDP_LIMIT).unwrap();
        assert_eq!(u16_at(&refused, 2).unwrap() & 0xf, RCODE_REFUSED);
        assert!(
            respond(&refused, &fake, UDP_LIMIT).is_none(),
            "responses are not answered"
        );
        assert!(respond(&[1, 2, 3], &fake, UDP_LIMIT).is_none());
        let mut two = query(1, "web.shop.svc.cluster.local", TYPE_A);
        two[5] = 2;
        assert_eq!(
            u16_at(&respond(&two, &fake, UDP_LIMIT).unwrap(), 2).unwrap() & 0xf,
            RCODE_FORMERR
        );
        // A name cut short.
        let short = &msg[..msg.len() - 6];
        assert_eq!(
            u16_at(&respond(short, &fake, UDP_LIMIT).unwrap(), 2).unwrap() & 0xf,
            RCODE_FORMERR
        );
    }

    #[test]
    fn large_answers_are_truncated_over_udp() {
        let mut fake = Fake::default().service(serde_json::json!({
            "metadata": { "name": "big", "namespace": "ns" },
            "spec": { "clusterIP": "None" },
        }));
        let endpoints: Vec<_> = (1..=60u8)
            .map(|i| serde_json::json!({ "addresses": [Ipv4Addr::new(10, 244, 0, i).to_string()] }))
            .collect();
        fake = fake.slice(serde_json::json!({
            "metadata": { "name": "big-1", "namespace": "ns", "labels": { SERVICE_NAME_LABEL: "big" } },
            "addressType": "IPv4",
            "endpoints": endpoints,
        }));
        let msg = query(7, "big.ns.svc.cluster.local", TYPE_A);
        let udp = respond(&msg, &fake, UDP_LIMIT).unwrap();
        assert!(udp.len() <= UDP_LIMIT);
        assert_ne!(u16_at(&udp, 2).unwrap() & FLAG_TC, 0);
        assert_eq!(u16_at(&udp, 6), Some(0));
        let tcp = respond(&msg, &fake, usize::from(u16::MAX)).unwrap();
        assert_eq!(u16_at(&tcp, 2).unwrap() & FLAG_TC, 0);
        assert_eq!(u16_at(&tcp, 6), Some(60));
    }

    fn spec(json: serde_json::Value) -> PodSpec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn resolv_conf_follows_the_dns_policy() {
        let dns: IpAddr = Ipv4Addr::new(10, 243, 0, 1).into();
        let host = "nameserver 192.0.2.53\nsearch corp.example\noptions rotate\n";
        let cluster = "nameserver 10.243.0.1\n\
             search ns.svc.cluster.local svc.cluster.local cluster.local corp.example\n\
             options ndots:5\n";
        let plain = spec(serde_json::json!({ "containers": [] }));
        assert_eq!(
            resolv_conf(&plain, "ns", dns, host).as_deref(),
            Some(cluster)
        );
        let host_net = spec(serde_json::json!({ "containers": [], "hostNetwork": true }));
        assert_eq!(resolv_conf(&host_net, "ns", dns, host), None);
        let with_host_net = spec(serde_json::json!({
            "containers": [], "hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet",
        }));
        assert_eq!(
            resolv_conf(&with_host_net, "ns", dns, host).as_deref(),
            Some(cluster)
        );
        let default = spec(serde_json::json!({ "containers": [], "dnsPolicy": "Default" }));
        assert_eq!(resolv_conf(&default, "ns", dns, host), None);
        let none = spec(serde_json::json!({
            "containers": [],
            "dnsPolicy": "None",
            "dnsConfig": {
                "nameservers": ["192.0.2.1"],
                "searches": ["a.example"],
                "options": [{ "name": "ndots", "value": "2" }, { "name": "edns0" }],
            },
        }));
        assert_eq!(
            resolv_conf(&none, "ns", dns, host).as_deref(),
            Some("nameserver 192.0.2.1\nsearch a.example\noptions ndots:2 edns0\n")
        );
        let merged = spec(serde_json::json!({
            "containers": [],
            "dnsConfig": { "options": [{ "name": "ndots", "value": "1" }] },
        }));
        assert!(resolv_conf(&merged, "ns", dns, host)
            .unwrap()
            .ends_with("options ndots:1\n"));
    }
}
