//! The end-to-end lab: blixt-lab's topology (client, lb node, N backends on veths) with the
//! same servers on every backend, whatever the lb node runs.
//!
//! Every backend runs an [`HttpBackend`] (HTTP on [`HTTP_PORT`], byte sink on [`SINK_PORT`])
//! and a blixt-lab UDP [`EchoServer`] on [`UDP_PORT`]. The client and backend ends of the
//! veths carry blixt-lab's pass-through XDP program (veth only delivers frames that XDP
//! redirects into it when the receiving end has NAPI; see blixt_lab::topology) — present for
//! every system, so the topology never changes between them. The lb's `lo` is up (HAProxy
//! binds the VIP there).
//!
//! [`E2eLab::services`] are the load-balanced services every system is given: HTTP on
//! `VIP:80`, the sink on `VIP:9000` and UDP echo on `VIP:53`, each to all backends.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use anyhow::{Context, Result};
use blixt_core::snapshot::Protocol;
use blixt_lab::{EchoConfig, EchoServer, Lab, LabSpec};

use super::backend_http::{BackendOptions, HttpBackend, HttpStats};
use super::peers::Service;

/// Namespace-name prefix of this lab.
pub const NETNS_PREFIX: &str = "blxe";
/// Backend ports.
pub const HTTP_PORT: u16 = 8080;
pub const SINK_PORT: u16 = 9000;
pub const UDP_PORT: u16 = 5353;
/// Service ports on the VIP.
pub const VIP_HTTP_PORT: u16 = 80;
pub const VIP_SINK_PORT: u16 = 9000;
pub const VIP_UDP_PORT: u16 = 53;

/// The lab and its servers. Fields drop in order: servers, then the namespaces.
#[derive(Debug)]
pub struct E2eLab {
    pub http: Vec<HttpBackend>,
    pub udp: Vec<EchoServer>,
    pub lab: Lab,
}

impl E2eLab {
    /// Builds the lab with `backends` backends (namespace prefix `prefix`, 1-6 lowercase
    /// letters) and starts their servers.
    pub fn build_with_prefix(backends: usize, prefix: &str) -> Result<E2eLab> {
        let lab = Lab::build(LabSpec {
            prefix: prefix.into(),
            ..LabSpec::with_backends(backends)
        })
        .context("building the end-to-end lab")?;
        let peer_obj = blixt_bpf::loader::peer_pass_object()
            .context("writing the peers' pass-through XDP object")?;
        lab.attach_peer_xdp(&peer_obj)
            .context("XDP pass-through on the client and backend ends")?;
        lab.lb.ip(&["link", "set", "lo", "up"])?;
        let mut http = Vec::new();
        let mut udp = Vec::new();
        for b in &lab.backends {
            http.push(HttpBackend::start_in(
                &b.ns,
                BackendOptions {
                    sink_port: Some(SINK_PORT),
                    ..BackendOptions::new(b.name.clone(), HTTP_PORT)
                },
            )?);
            udp.push(EchoServer::start_in(
                &b.ns,
                EchoConfig {
                    name: b.name.clone(),
                    tcp_port: None,
                    udp_port: Some(UDP_PORT),
                },
            )?);
        }
        Ok(E2eLab { http, udp, lab })
    }

    /// [`E2eLab::build_with_prefix`] with [`NETNS_PREFIX`].
    pub fn build(backends: usize) -> Result<E2eLab> {
        Self::build_with_prefix(backends, NETNS_PREFIX)
    }

    /// The VIP every service is on (`10.99.100.1`).
    pub fn vip(&self) -> Ipv4Addr {
        self.lab.vip4(1)
    }

    pub fn http_target(&self) -> SocketAddr {
        (self.vip(), VIP_HTTP_PORT).into()
    }

    pub fn sink_target(&self) -> SocketAddr {
        (self.vip(), VIP_SINK_PORT).into()
    }

    pub fn udp_target(&self) -> SocketAddr {
        (self.vip(), VIP_UDP_PORT).into()
    }

    /// The client's own address (what a backend would see without NAT).
    pub fn client_addr(&self) -> Ipv4Addr {
        self.lab.client.v4()
    }

    /// HTTP, sink and UDP echo, each on the VIP to every backend.
    pub fn services(&self) -> Vec<Service> {
        let to = |port: u16| -> Vec<SocketAddrV4> {
            self.lab
                .backends
                .iter()
                .map(|b| SocketAddrV4::new(b.v4(), port))
                .collect()
        };
        vec![
            Service {
                name: "http".into(),
                vip: self.vip(),
                port: VIP_HTTP_PORT,
                proto: Protocol::Tcp,
                backends: to(HTTP_PORT),
            },
            Service {
                name: "bulk".into(),
                vip: self.vip(),
                port: VIP_SINK_PORT,
                proto: Protocol::Tcp,
                backends: to(SINK_PORT),
            },
            Service {
                name: "echo".into(),
                vip: self.vip(),
                port: VIP_UDP_PORT,
                proto: Protocol::Udp,
                backends: to(UDP_PORT),
            },
        ]
    }

    /// `ip:port` of every backend's HTTP server, as the systems' counters name them.
    pub fn http_backends(&self) -> Vec<String> {
        self.lab
            .backends
            .iter()
            .map(|b| SocketAddrV4::new(b.v4(), HTTP_PORT).to_string())
            .collect()
    }

    /// Counters of every backend's HTTP server and sink, `be0` first.
    pub fn http_stats(&self) -> Vec<HttpStats> {
        self.http.iter().map(HttpBackend::stats).collect()
    }

    /// UDP datagrams answered by every backend, `be0` first.
    pub fn udp_answered(&self) -> Vec<u64> {
        self.udp.iter().map(|s| s.stats().udp_datagrams).collect()
    }
}
