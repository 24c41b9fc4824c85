//! `blixt controller` as processes against the real API server: two replicas elect a leader
//! through a Lease; killing the leader hands over within the lease time and statuses keep
//! being written.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use blixt_gateway_api::Gateway;
use blixt_k8s_harness::{apply, eventually, parse_documents, shared};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;

struct Replica(Child);

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn replica(
    kubeconfig: &std::path::Path,
    ns: &str,
    name: &str,
    controller: &str,
    metrics: &str,
) -> Replica {
    let child = Command::new(env!("CARGO_BIN_EXE_blixt"))
        .args(["controller", "--kubeconfig"])
        .arg(kubeconfig)
        .args([
            "--namespace",
            ns,
            "--identity",
            name,
            "--controller-name",
            controller,
        ])
        .args([
            "--address-pool",
            "192.0.2.50",
            "--address-pool",
            "192.0.2.51",
        ])
        // no agents in this test: without a snapshot stream, Programmed needs no agent's ack
        .args(["--grpc-address", "none", "--metrics-address", metrics])
        .stdout(Stdio::null())
        .spawn()
        .expect("starting blixt controller");
    Replica(child)
}

async fn programmed(gws: &Api<Gateway>, name: &str) -> Option<()> {
    let gw = gws.get(name).await.ok()?;
    gw.status?
        .conditions?
        .iter()
        .any(|c| c.type_ == "Programmed" && c.status == "True")
        .then_some(())
}

#[tokio::test]
async fn leader_election_hands_over_when_the_leader_dies() {
    let cluster = shared();
    let client = cluster.client();
    let ns = cluster.temp_namespace().await;
    let n = ns.name().to_string();
    let controller = format!("blixt.dev/test-{n}");
    let port = |_| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let (ma, mb) = (port(0), port(1));
    let kc = cluster.kubeconfig_path();
    let mut a = Some(replica(kc, &n, "replica-a", &controller, &ma.to_string()));
    let b = replica(kc, &n, "replica-b", &controller, &mb.to_string());

    let leases: Api<Lease> = Api::namespaced(client.clone(), &n);
    let holder = |leases: Api<Lease>| async move {
        leases
            .get("blixt-controller")
            .await
            .ok()?
            .spec?
            .holder_identity
    };
    let first = eventually("a leader", Duration::from_secs(30), || {
        holder(leases.clone())
    })
    .await;
    // each replica reports whether it leads
    let leads = |addr: std::net::SocketAddr| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        body.lines()
            .find_map(|l| l.strip_prefix("blixt_controller_leader ").map(|v| v == "1"))
    };
    let expected = (first == "replica-a", first == "replica-b");
    eventually(
        "exactly the Lease holder says it leads",
        Duration::from_secs(30),
        || async { ((leads(ma)?, leads(mb)?) == expected).then_some(()) },
    )
    .await;

    let yaml = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: {n}-c}}\nspec: {{controllerName: {controller}}}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw1, namespace: {n}}}\nspec:\n  gatewayClassName: {n}-c\n  listeners: [{{name: tcp, protocol: TCP, port: 80}}]\n"
    );
    for o in parse_documents(&yaml).unwrap() {
        apply(&client, &o).await.unwrap();
    }
    let gws: Api<Gateway> = Api::namespaced(client.clone(), &n);
    eventually(
        "the leader writes the Gateway's status",
        Duration::from_secs(30),
        || programmed(&gws, "gw1"),
    )
    .await;

    // kill the leader; the other replica takes the Lease after it expires (15 s)
    let (mut leader, other) = if first == "replica-a" {
        (a.take().unwrap(), "replica-b")
    } else {
        (b, "replica-a")
    };
    leader.0.kill().unwrap();
    let _ = leader.0.wait();
    let t = Instant::now();
    eventually(
        "the other replica takes over",
        Duration::from_secs(40),
        || {
            let leases = leases.clone();
            async move { (holder(leases).await? == other).then_some(()) }
        },
    )
    .await;
    eprintln!("handover after {:?}", t.elapsed());

    let gw2 = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw2, namespace: {n}}}\nspec:\n  gatewayClassName: {n}-c\n  listeners: [{{name: tcp, protocol: TCP, port: 81}}]\n"
    );
    for o in parse_documents(&gw2).unwrap() {
        apply(&client, &o).await.unwrap();
    }
    eventually(
        "the new leader writes statuses",
        Duration::from_secs(30),
        || programmed(&gws, "gw2"),
    )
    .await;
    drop(a);
    let classes: Api<blixt_gateway_api::GatewayClass> = Api::all(client);
    gws.delete("gw1", &Default::default()).await.unwrap();
    gws.delete("gw2", &Default::default()).await.unwrap();
    let _ = classes.delete(&format!("{n}-c"), &Default::default()).await;
}
