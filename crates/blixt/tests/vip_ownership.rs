//! VIP ownership end to end: the real API server, `blixt controller` and two `blixt agent`
//! processes on two "nodes" (network namespaces) that share one L2 segment (a bridge) with a
//! client. Every VIP is answered (ARP) by exactly one node, the one the controller picked;
//! when that node's agent is killed, the other node takes the VIP over and its gratuitous
//! ARP moves the client's neighbour entry without the client asking; when it comes back the
//! VIP returns; when a node falls silent (its link down, no FIN), the VIP moves after the
//! controller's agent timeout.
//!
//! ```text
//!   host (API server, controller) ── veth ─┐
//!   client  eth0 ──────────────────────────┤ br0 (namespace "switch")
//!   node-a  eth0 (XDP, blixt agent) ───────┤
//!   node-b  eth0 (XDP, blixt agent) ───────┘
//! ```

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use blixt_k8s_harness::{apply, parse_documents, shared};
use blixt_lab::{LabProcess, NetNs, Veth};

#[path = "common/k8s.rs"]
mod k8s_support;
use k8s_support::{free_port, require_root, Cleanup, Controller, HostLink, BLIXT};

fn ip(ns: &NetNs, args: &[&str]) {
    ns.ip(args)
        .unwrap_or_else(|e| panic!("ip {args:?} in {}: {e:#}", ns.name()));
}

type Mac = [u8; 6];

fn mac_of(ns: &NetNs, iface: &str) -> Mac {
    let out = ns.ip(&["-o", "link", "show", "dev", iface]).unwrap();
    let text = out
        .split("link/ether ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no MAC in {out:?}"));
    parse_mac(text).unwrap_or_else(|| panic!("bad MAC {text:?}"))
}

fn parse_mac(s: &str) -> Option<Mac> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    Some(mac)
}

/// The MACs that answer an ARP request for `vip` sent from `ns`'s `iface` (as `src`/`src_mac`),
/// collected for 500 ms: exactly one when one node announces the VIP.
fn who_has(ns: &NetNs, iface: &str, src: Ipv4Addr, src_mac: Mac, vip: Ipv4Addr) -> BTreeSet<Mac> {
    let iface = iface.to_string();
    ns.run_in(move || {
        const ETH_P_ARP: u16 = 0x0806;
        // SAFETY: plain syscalls on a socket this closure owns; buffers outlive the calls.
        unsafe {
            let fd = libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW,
                i32::from(ETH_P_ARP.to_be()),
            );
            assert!(
                fd >= 0,
                "AF_PACKET socket: {}",
                std::io::Error::last_os_error()
            );
            let name = std::ffi::CString::new(iface.clone()).unwrap();
            let ifindex = libc::if_nametoindex(name.as_ptr()) as i32;
            assert!(ifindex > 0, "no interface {iface}");
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_protocol = ETH_P_ARP.to_be();
            addr.sll_ifindex = ifindex;
            let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            assert_eq!(libc::bind(fd, std::ptr::from_ref(&addr).cast(), len), 0);
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 50_000,
            };
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                std::ptr::from_ref(&tv).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
            let mut req = Vec::with_capacity(60);
            req.extend_from_slice(&[0xff; 6]);
            req.extend_from_slice(&src_mac);
            req.extend_from_slice(&ETH_P_ARP.to_be_bytes());
            req.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
            req.extend_from_slice(&src_mac);
            req.extend_from_slice(&src.octets());
            req.extend_from_slice(&[0; 6]);
            req.extend_from_slice(&vip.octets());
            req.resize(60, 0);
            addr.sll_halen = 6;
            addr.sll_addr[..6].copy_from_slice(&[0xff; 6]);
            let sent = libc::sendto(
                fd,
                req.as_ptr().cast(),
                req.len(),
                0,
                std::ptr::from_ref(&addr).cast(),
                len,
            );
            assert_eq!(
                sent,
                req.len() as isize,
                "{}",
                std::io::Error::last_os_error()
            );
            let mut answers = BTreeSet::new();
            let deadline = Instant::now() + Duration::from_millis(500);
            let mut buf = [0u8; 256];
            while Instant::now() < deadline {
                let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
                if n < 42 {
                    continue;
                }
                let f = &buf[..n as usize];
                // a reply (op 2) whose sender protocol address is the VIP, to us
                if f[20..22] == [0, 2] && f[28..32] == vip.octets() && f[38..42] == src.octets() {
                    answers.insert(<Mac>::try_from(&f[22..28]).unwrap());
                }
            }
            libc::close(fd);
            answers
        }
    })
}

/// The link-layer address `ns`'s neighbour table holds for `addr`, if any.
fn neighbour(ns: &NetNs, iface: &str, addr: Ipv4Addr) -> Option<Mac> {
    let out = ns
        .ip(&["neigh", "show", &addr.to_string(), "dev", iface])
        .unwrap();
    parse_mac(out.split("lladdr ").nth(1)?.split_whitespace().next()?)
}

fn eventually<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not true after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `GET /metrics` of the controller.
fn metrics(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("controller metrics");
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn manifests(ns: &str, controller: &str, vips: &[Ipv4Addr], backend: Ipv4Addr) -> String {
    let mut y = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: {ns}-blixt}}\nspec: {{controllerName: {controller}}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: be, namespace: {ns}}}\nspec:\n  ports:\n  - {{name: t, port: 8080, protocol: TCP}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: be-v4\n  namespace: {ns}\n  labels: {{kubernetes.io/service-name: be}}\naddressType: IPv4\nports:\n- {{name: t, port: 8080, protocol: TCP}}\nendpoints:\n- addresses: [\"{backend}\"]\n  conditions: {{ready: true}}\n"
    );
    for (i, vip) in vips.iter().enumerate() {
        y.push_str(&format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw{i}, namespace: {ns}}}\nspec:\n  gatewayClassName: {ns}-blixt\n  addresses: [{{type: IPAddress, value: \"{vip}\"}}]\n  listeners:\n  - {{name: tcp, protocol: TCP, port: 80}}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: TCPRoute\nmetadata: {{name: r{i}, namespace: {ns}}}\nspec:\n  parentRefs: [{{name: gw{i}}}]\n  rules:\n  - backendRefs: [{{name: be, port: 8080}}]\n"
        ));
    }
    y
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_answers_for_each_vip_and_the_other_takes_over_when_it_goes() {
    require_root();
    let cluster = shared();
    let client = cluster.client();
    let k8s_ns = cluster.temp_namespace().await;
    let n = k8s_ns.name().to_string();
    let controller_name = format!("blixt.dev/test-{n}");

    // the segment: a bridge in its own namespace, the client and two nodes on it
    let switch = NetNs::new("bvosw").unwrap();
    let cl = NetNs::new("bvocl").unwrap();
    let node_a = NetNs::new("bvoa").unwrap();
    let node_b = NetNs::new("bvob").unwrap();
    ip(&switch, &["link", "add", "br0", "type", "bridge"]);
    ip(&switch, &["link", "set", "br0", "up"]);
    let _veths: Vec<Veth> = [(&cl, "c0"), (&node_a, "a0"), (&node_b, "b0")]
        .into_iter()
        .map(|(ns, port)| {
            let v = Veth::create(ns, "eth0", &switch, port).unwrap();
            ip(&switch, &["link", "set", port, "master", "br0", "up"]);
            ip(ns, &["link", "set", "eth0", "up"]);
            v
        })
        .collect();
    // Native XDP on a node's veth sends ARP answers with XDP_TX, which its peer only
    // receives with an XDP program of its own.
    let pass = blixt_bpf::loader::peer_pass_object().unwrap();
    for port in ["a0", "b0"] {
        ip(
            &switch,
            &[
                "link",
                "set",
                "dev",
                port,
                "xdpdrv",
                "obj",
                pass.to_str().unwrap(),
                "sec",
                "xdp",
            ],
        );
    }
    let id = std::process::id() % 10000;
    let octet = 1 + (id % 250);
    let net = |host: u8| Ipv4Addr::new(10, 96, octet as u8, host);
    let (client_ip, a_ip, b_ip, host_ip) = (net(10), net(1), net(2), net(254));
    for (ns, addr) in [(&cl, client_ip), (&node_a, a_ip), (&node_b, b_ip)] {
        ip(ns, &["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
    }
    let host_if = format!("bvo{id}h");
    let _link = HostLink::create(&host_if, "h0", switch.name(), &format!("{host_ip}/24"));
    ip(&switch, &["link", "set", "h0", "master", "br0", "up"]);
    let (mac_a, mac_b, client_mac) = (
        mac_of(&node_a, "eth0"),
        mac_of(&node_b, "eth0"),
        mac_of(&cl, "eth0"),
    );

    // Two VIPs, one owned by each node when both are there (the controller's rendezvous
    // hash, computed here with the same function to pick them).
    let both: BTreeSet<String> = ["node-a".to_string(), "node-b".to_string()].into();
    let owner = |vip: Ipv4Addr| {
        blixt_stream::owners::owner(IpAddr::V4(vip), both.iter().map(String::as_str))
            .unwrap()
            .to_string()
    };
    let candidates: Vec<Ipv4Addr> = (100..200).map(net).collect();
    let vip_a = *candidates.iter().find(|v| owner(**v) == "node-a").unwrap();
    let vip_b = *candidates.iter().find(|v| owner(**v) == "node-b").unwrap();

    // the agents' identity
    let token = k8s_support::agent_token(cluster, &n).await;
    let tmp = std::env::temp_dir().join(format!("blixt-vip-owner-{id}"));
    std::fs::create_dir_all(&tmp).unwrap();
    let _tmp = Cleanup(tmp.clone());
    let token_file = tmp.join("token");
    std::fs::write(&token_file, token).unwrap();

    let grpc = format!("{host_ip}:{}", free_port());
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let _controller = Controller(
        k8s_support::controller_command(cluster, &n, "c1", &controller_name)
            .args(["--grpc-address", &grpc, "--metrics-address", &metrics_addr])
            .args(["--agent-timeout", "4"])
            // static addresses: only these two (the default is the pool, empty here)
            .args(["--static-address-range", &format!("{vip_a}/32")])
            .args(["--static-address-range", &format!("{vip_b}/32")])
            .spawn()
            .expect("blixt controller"),
    );
    for o in parse_documents(&manifests(&n, &controller_name, &[vip_a, vip_b], client_ip)).unwrap()
    {
        apply(&client, &o).await.unwrap();
    }

    // `--pin-dir none`: nothing outlives the agent, as when its node goes away.
    let start_agent = |ns: &NetNs, node: &str, snat: Ipv4Addr| -> LabProcess {
        let mut cmd = Command::new(BLIXT);
        cmd.args([
            "agent",
            "--controller",
            &format!("http://{grpc}"),
            "--node-name",
            node,
        ])
        .arg("--token-file")
        .arg(&token_file)
        .args(["--snat-v4", &snat.to_string(), "--pin-dir", "none"])
        .args([
            "--metrics-address",
            "none",
            "--max-frontends",
            "16",
            "-i",
            "eth0",
        ]);
        ns.spawn_netns_only(&format!("blixt agent {node}"), cmd)
            .expect("blixt agent")
    };
    let mut agent_a = start_agent(&node_a, "node-a", a_ip);
    let _agent_b = start_agent(&node_b, "node-b", b_ip);

    let probe = |vip| who_has(&cl, "eth0", client_ip, client_mac, vip);
    let answered_by = |what: &str, vip: Ipv4Addr, mac: Mac| {
        eventually(what, Duration::from_secs(90), || {
            (probe(vip) == BTreeSet::from([mac])).then_some(())
        });
    };
    answered_by("node-a alone answers for its VIP", vip_a, mac_a);
    answered_by("node-b alone answers for its VIP", vip_b, mac_b);
    // and keeps doing so (a second answer would show up in any of these)
    for _ in 0..3 {
        assert_eq!(probe(vip_a), BTreeSet::from([mac_a]), "{vip_a}");
        assert_eq!(probe(vip_b), BTreeSet::from([mac_b]), "{vip_b}");
    }
    let m = metrics(&metrics_addr);
    assert!(
        m.contains(&format!(
            "blixt_vip_owner{{vip=\"{vip_a}\",node=\"node-a\"}} 1"
        )),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "blixt_vip_owner{{vip=\"{vip_b}\",node=\"node-b\"}} 1"
        )),
        "{m}"
    );

    // The client resolves vip_a through its kernel (node-a's MAC), then stays quiet.
    cl.run_in(|| {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        s.send_to(b"resolve", (vip_a, 9)).unwrap();
    });
    eventually(
        "the client resolved vip_a to node-a",
        Duration::from_secs(5),
        || (neighbour(&cl, "eth0", vip_a) == Some(mac_a)).then_some(()),
    );

    // node-a's agent is killed: its connection closes, the controller gives vip_a to node-b,
    // whose gratuitous ARP rewrites the client's entry with no traffic from the client.
    agent_a.kill().unwrap();
    eventually(
        "the client's neighbour entry for vip_a moved to node-b",
        Duration::from_secs(30),
        || (neighbour(&cl, "eth0", vip_a) == Some(mac_b)).then_some(()),
    );
    assert_eq!(probe(vip_a), BTreeSet::from([mac_b]));
    assert_eq!(probe(vip_b), BTreeSet::from([mac_b]));

    // node-a comes back: vip_a returns to it (node-b stops answering for it) and moves the
    // client's entry back.
    let mut agent_a = start_agent(&node_a, "node-a", a_ip);
    eventually("vip_a back on node-a", Duration::from_secs(30), || {
        (neighbour(&cl, "eth0", vip_a) == Some(mac_a) && probe(vip_a) == BTreeSet::from([mac_a]))
            .then_some(())
    });
    assert_eq!(probe(vip_b), BTreeSet::from([mac_b]));

    // node-a falls silent without closing anything (its link goes down): the controller
    // drops it after --agent-timeout and node-b announces vip_a again.
    ip(&node_a, &["link", "set", "eth0", "down"]);
    eventually(
        "vip_a on node-b after node-a fell silent",
        Duration::from_secs(30),
        || {
            (neighbour(&cl, "eth0", vip_a) == Some(mac_b)
                && probe(vip_a) == BTreeSet::from([mac_b]))
            .then_some(())
        },
    );
    let m = metrics(&metrics_addr);
    assert!(
        m.contains(&format!(
            "blixt_vip_owner{{vip=\"{vip_a}\",node=\"node-b\"}} 1"
        )),
        "{m}"
    );
    agent_a.kill().unwrap();
    let _ = std::fs::remove_file(pass);
}
