//! Kubernetes end to end: the real API server (tests/k8s), `blixt controller` (host network
//! namespace, talks to the API server on loopback) and `blixt agent` on the lab's
//! load-balancer node (XDP on its interfaces), joined by a veth between the two namespaces for
//! the snapshot stream. Gateway API objects and Services/EndpointSlices pointing at the lab's
//! backends go in through the API; real TCP and UDP traffic comes out balanced per weights;
//! route edits break no connection; the controller killed and restarted leaves the dataplane
//! serving and statuses converge again. TLS passthrough too: a TLSRoute through the API, a
//! rustls server on a backend, a client connection whose SNI lands on it through the agent.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use blixt_gateway_api::{Gateway, TcpRoute};
use blixt_k8s_harness::{apply, eventually, parse_documents, shared};
use blixt_lab::process::LabProcess;
use blixt_lab::topology::{Lab, LabSpec};
use blixt_lab::traffic::{self, LongLived, UdpOptions};
use blixt_lab::{EchoConfig, EchoServer};
use kube::api::{Api, PostParams};

#[path = "common/tls.rs"]
mod tls_support;
use tls_support::{connect, ping, TlsBackend};

#[path = "common/k8s.rs"]
mod k8s_support;
use k8s_support::{free_port, require_root, Cleanup, Controller, HostLink, BLIXT};

fn within(counts: &std::collections::BTreeMap<String, usize>, weights: &[(&str, f64)], tol: f64) {
    let total: usize = counts.values().sum();
    for (name, share) in weights {
        let got = *counts.get(*name).unwrap_or(&0) as f64 / total as f64;
        assert!(
            (got - share).abs() <= tol,
            "{name}: {got:.3} vs {share:.3} ({counts:?})"
        );
    }
}

async fn programmed_gateway(gws: &Api<Gateway>, name: &str) -> Option<()> {
    let st = gws.get(name).await.ok()?.status?;
    st.conditions?
        .iter()
        .any(|c| c.type_ == "Programmed" && c.status == "True")
        .then_some(())
}

fn manifests(ns: &str, controller: &str, lab: &Lab, weights: [u32; 3]) -> String {
    let mut y = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: {ns}-blixt}}\nspec: {{controllerName: {controller}}}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: {ns}}}\nspec:\n  gatewayClassName: {ns}-blixt\n  listeners:\n  - {{name: tcp, protocol: TCP, port: 80}}\n  - {{name: udp, protocol: UDP, port: 53}}\n"
    );
    for (i, b) in lab.backends.iter().enumerate() {
        y.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: be{i}, namespace: {ns}}}\nspec:\n  ports:\n  - {{name: t, port: 8080, protocol: TCP}}\n  - {{name: u, port: 8080, protocol: UDP}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: be{i}-v4\n  namespace: {ns}\n  labels: {{kubernetes.io/service-name: be{i}}}\naddressType: IPv4\nports:\n- {{name: t, port: 8080, protocol: TCP}}\n- {{name: u, port: 8080, protocol: UDP}}\nendpoints:\n- addresses: [\"{}\"]\n  conditions: {{ready: true}}\n",
            b.v4()
        ));
    }
    y.push_str(&format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: TCPRoute\nmetadata: {{name: tcp, namespace: {ns}}}\nspec:\n  parentRefs: [{{name: gw, sectionName: tcp}}]\n  rules:\n  - backendRefs:\n    - {{name: be0, port: 8080, weight: {}}}\n    - {{name: be1, port: 8080, weight: {}}}\n    - {{name: be2, port: 8080, weight: {}}}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: UDPRoute\nmetadata: {{name: udp, namespace: {ns}}}\nspec:\n  parentRefs: [{{name: gw, sectionName: udp}}]\n  rules:\n  - backendRefs: [{{name: be0, port: 8080}}, {{name: be1, port: 8080}}, {{name: be2, port: 8080}}]\n",
        weights[0], weights[1], weights[2]
    ));
    y
}

/// A second Gateway with a TLS passthrough listener on `vip`:443 (a static address) and a
/// TLSRoute for a.example.com to port 8443 of the first backend.
fn tls_manifests(ns: &str, lab: &Lab, vip: std::net::Ipv4Addr) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw-tls, namespace: {ns}}}\nspec:\n  gatewayClassName: {ns}-blixt\n  addresses: [{{type: IPAddress, value: \"{vip}\"}}]\n  listeners:\n  - {{name: tls, protocol: TLS, port: 443, tls: {{mode: Passthrough}}}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: tls0, namespace: {ns}}}\nspec:\n  ports:\n  - {{name: tls, port: 8443, protocol: TCP}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: tls0-v4\n  namespace: {ns}\n  labels: {{kubernetes.io/service-name: tls0}}\naddressType: IPv4\nports:\n- {{name: tls, port: 8443, protocol: TCP}}\nendpoints:\n- addresses: [\"{}\"]\n  conditions: {{ready: true}}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: TLSRoute\nmetadata: {{name: tls-a, namespace: {ns}}}\nspec:\n  parentRefs: [{{name: gw-tls, sectionName: tls}}]\n  hostnames: [a.example.com]\n  rules:\n  - backendRefs: [{{name: tls0, port: 8443}}]\n",
        lab.backends[0].v4()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api_objects_to_balanced_traffic_through_controller_and_agent() {
    require_root();
    let cluster = shared();
    let client = cluster.client();
    let ns = cluster.temp_namespace().await;
    let n = ns.name().to_string();
    let controller_name = format!("blixt.dev/test-{n}");

    let lab = Lab::build(LabSpec::with_backends(3)).expect("lab");
    lab.attach_peer_xdp(&blixt_bpf::loader::peer_pass_object().unwrap())
        .unwrap();
    let _servers: Vec<EchoServer> = lab
        .backends
        .iter()
        .map(|b| EchoServer::start_in(&b.ns, EchoConfig::new(b.name.clone(), 8080)).unwrap())
        .collect();

    // host <-> lb link for the snapshot stream
    let id = std::process::id() % 10000;
    let (host_if, lb_if) = (format!("bk{id}h"), format!("bk{id}l"));
    let ok = Command::new("ip")
        .args([
            "link",
            "add",
            &host_if,
            "type",
            "veth",
            "peer",
            "name",
            &lb_if,
            "netns",
            lab.lb.name(),
        ])
        .status()
        .unwrap();
    assert!(ok.success(), "creating the host link");
    let _link = HostLink(host_if.clone());
    let octet = 1 + (id % 250);
    let (host_ip, lb_ip) = (format!("10.98.{octet}.1"), format!("10.98.{octet}.2"));
    for args in [
        vec!["addr", "add", &format!("{host_ip}/30"), "dev", &host_if],
        vec!["link", "set", &host_if, "up"],
    ] {
        assert!(
            Command::new("ip").args(&args).status().unwrap().success(),
            "{args:?}"
        );
    }
    lab.lb
        .ip(&["addr", "add", &format!("{lb_ip}/30"), "dev", &lb_if])
        .unwrap();
    lab.lb.ip(&["link", "set", &lb_if, "up"]).unwrap();

    // the agent's identity: a service-account token for the audience blixt-controller
    let token = k8s_support::agent_token(cluster, &n).await;
    let tmp = std::env::temp_dir().join(format!("blixt-k8s-e2e-{id}"));
    std::fs::create_dir_all(&tmp).unwrap();
    let _tmp = Cleanup(tmp.clone());
    let token_file = tmp.join("token");
    std::fs::write(&token_file, token).unwrap();
    let pins = PathBuf::from(format!("/sys/fs/bpf/blixt-k8s-{id}"));
    let _pins = Cleanup(pins.clone());

    let port = free_port();
    let grpc = format!("{host_ip}:{port}");
    let start_controller = |identity: &str| {
        Controller(
            k8s_support::controller_command(cluster, &n, identity, &controller_name)
                .args(["--address-pool", "10.99.100.1", "--grpc-address", &grpc])
                // the TLS Gateway's static address (tls_manifests)
                .args(["--static-address-range", "10.99.100.2/32"])
                .spawn()
                .expect("blixt controller"),
        )
    };
    let mut controller = Some(start_controller("c1"));

    for o in parse_documents(&manifests(&n, &controller_name, &lab, [2, 1, 1])).unwrap() {
        apply(&client, &o).await.unwrap();
    }

    // no agent has acknowledged anything yet: the Gateway is not programmed
    let gws: Api<Gateway> = Api::namespaced(client.clone(), &n);
    eventually(
        "Programmed=False/Pending before any agent",
        Duration::from_secs(60),
        || async {
            let st = gws.get("gw").await.ok()?.status?;
            st.conditions?
                .iter()
                .any(|c| c.type_ == "Programmed" && c.status == "False" && c.reason == "Pending")
                .then_some(())
        },
    )
    .await;

    let mut cmd = Command::new(BLIXT);
    cmd.args([
        "agent",
        "--controller",
        &format!("http://{grpc}"),
        "--node-name",
        "lab-node",
        "--token-file",
    ])
    .arg(&token_file)
    .args([
        "--snat-v4",
        &lab.client.link.lb_v4.to_string(),
        "--snat-v6",
        &lab.client.link.lb_v6.to_string(),
    ])
    .arg("--pin-dir")
    .arg(&pins)
    .args([
        "--metrics-address",
        "127.0.0.1:9464",
        "--max-frontends",
        "16",
    ]);
    for (name, _) in lab.lb_interfaces() {
        cmd.args(["-i", &name]);
    }
    let mut agent: LabProcess = lab
        .lb
        .spawn_netns_only("blixt agent", cmd)
        .expect("blixt agent");

    // statuses through the API server, and the agent applying what the controller publishes
    eventually(
        "Gateway programmed at 10.99.100.1",
        Duration::from_secs(60),
        || async {
            let st = gws.get("gw").await.ok()?.status?;
            let programmed = st
                .conditions?
                .iter()
                .any(|c| c.type_ == "Programmed" && c.status == "True");
            (programmed && st.addresses?.iter().any(|a| a.value == "10.99.100.1")).then_some(())
        },
    )
    .await;
    let vip = lab.vip4(1);
    assert_eq!(vip.to_string(), "10.99.100.1");
    let (tcp, udp) = (
        SocketAddr::new(vip.into(), 80),
        SocketAddr::new(vip.into(), 53),
    );
    // wait until the agent serves the route (the first snapshots may precede the objects)
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let probe = lab
            .client
            .ns
            .run_in(|| traffic::tcp_burst(tcp, 3, 3, Duration::from_millis(500)).unwrap());
        if probe.ok == 3 && probe.backends.len() > 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the agent never served the route: {}",
            probe.summary()
        );
        let _ = agent.next_line(Duration::from_millis(500));
    }

    let (t, u) = lab.client.ns.run_in(|| {
        (
            traffic::tcp_burst(tcp, 600, 16, Duration::from_secs(5)).unwrap(),
            traffic::udp_flows(udp, 600, &UdpOptions::default()).unwrap(),
        )
    });
    assert_eq!((t.ok, t.wrong_source), (600, 0), "{}", t.summary());
    assert_eq!((u.ok, u.wrong_source), (600, 0), "{}", u.summary());
    within(
        &t.backends,
        &[("be0", 0.5), ("be1", 0.25), ("be2", 0.25)],
        0.07,
    );
    within(
        &u.backends,
        &[("be0", 1.0 / 3.0), ("be1", 1.0 / 3.0), ("be2", 1.0 / 3.0)],
        0.07,
    );

    // TLS passthrough: a TLSRoute through the API, served by the agent's TLS proxy
    let tls_backend = TlsBackend::start(&lab, 0);
    let tls_vip = SocketAddr::new(lab.vip4(2).into(), 443);
    for o in parse_documents(&tls_manifests(&n, &lab, lab.vip4(2))).unwrap() {
        apply(&client, &o).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let certs = [tls_backend.cert.clone()];
        let got = lab.client.ns.run_in(|| {
            let (i, mut tls) = connect(tls_vip, Some("a.example.com"), &certs)?;
            Ok::<_, std::io::Error>((i, ping(&mut tls, "a.example.com")?))
        });
        match got {
            Ok((i, answer)) => {
                assert_eq!(i, 0, "a.example.com: be0's certificate");
                assert_eq!(answer, "be0: a.example.com");
                break;
            }
            Err(e) => assert!(
                Instant::now() < deadline,
                "the agent never served the TLSRoute: {e}"
            ),
        }
        let _ = agent.next_line(Duration::from_millis(500));
    }
    drop(tls_backend);
    // the agent's metrics carry the TLS proxy's counters too
    let metrics = lab.lb.run_in(|| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect("127.0.0.1:9464").expect("agent metrics");
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body
    });
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("blixt_tls_") && !l.ends_with(" 0")),
        "TLS counters on the agent's /metrics:\n{metrics}"
    );
    assert_eq!(metrics.matches("# EOF").count(), 1, "one exposition");

    // a route edit through the API while 100 connections stay open: none breaks; the other
    // Gateway's status is not touched (its part of the snapshot did not change, so its
    // Programmed condition must not flap while the agent applies the new generation)
    let tls_programmed = || async {
        let gw = gws.get("gw-tls").await.ok()?;
        let programmed = gw
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .any(|c| c.type_ == "Programmed" && c.status == "True");
        programmed.then(|| gw.metadata.resource_version.clone())
    };
    let tls_version =
        eventually("gw-tls programmed", Duration::from_secs(30), tls_programmed).await;
    let long = lab.client.ns.run_in(|| {
        LongLived::start(tcp, 100, Duration::from_millis(30), Duration::from_secs(3)).unwrap()
    });
    long.wait_rounds(3, Duration::from_secs(10)).unwrap();
    for o in parse_documents(&manifests(&n, &controller_name, &lab, [0, 1, 1])).unwrap() {
        apply(&client, &o).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let b = lab
            .client
            .ns
            .run_in(|| traffic::tcp_burst(tcp, 50, 8, Duration::from_secs(3)).unwrap());
        if b.ok == 50 && !b.backends.contains_key("be0") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "weight 0 for be0 never took effect: {}",
            b.summary()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    long.wait_rounds(3, Duration::from_secs(10)).unwrap();
    eventually("gw programmed again", Duration::from_secs(30), || {
        programmed_gateway(&gws, "gw")
    })
    .await;
    assert_eq!(
        tls_programmed().await,
        Some(tls_version),
        "gw-tls's status was rewritten by an edit of another Gateway's route"
    );

    // the controller dies: the dataplane keeps serving; a new one converges the statuses
    drop(controller.take());
    let down = lab
        .client
        .ns
        .run_in(|| traffic::tcp_burst(tcp, 100, 8, Duration::from_secs(3)).unwrap());
    assert_eq!(
        down.ok,
        100,
        "serving with no controller: {}",
        down.summary()
    );
    let routes: Api<TcpRoute> = Api::namespaced(client.clone(), &n);
    // change something while it is down, so convergence is observable
    let mut r = routes.get("tcp").await.unwrap();
    r.metadata.labels = Some([("edited".to_string(), "yes".to_string())].into());
    routes
        .replace("tcp", &PostParams::default(), &r)
        .await
        .unwrap();
    let edited_generation = routes.get("tcp").await.unwrap().metadata.generation;
    controller = Some(start_controller("c2"));
    eventually(
        "statuses converge after the restart",
        Duration::from_secs(60),
        || async {
            let r = routes.get("tcp").await.ok()?;
            let p = r.status?.parents.into_iter().next()?;
            p.conditions
                .iter()
                .all(|c| c.observed_generation == edited_generation)
                .then_some(())
        },
    )
    .await;
    let r = long.stop();
    assert_eq!(r.broken, 0, "{}", r.summary());
    let after = lab
        .client
        .ns
        .run_in(|| traffic::tcp_burst(tcp, 100, 8, Duration::from_secs(3)).unwrap());
    assert_eq!(after.ok, 100, "{}", after.summary());
    drop(agent);
    drop(controller);
    let _ = Api::<blixt_gateway_api::GatewayClass>::all(client)
        .delete(&format!("{n}-blixt"), &Default::default())
        .await;
}
