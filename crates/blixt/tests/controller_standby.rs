//! Two `blixt controller` replicas against the real API server, each with its snapshot stream:
//! only the Lease holder serves snapshots (VIP owners are computed from the agents subscribed
//! to one server, so agents split between replicas must not both be served); the standby
//! answers UNAVAILABLE. When the leader dies, the other replica takes the Lease and serves.

use std::time::Duration;

use blixt_k8s_harness::shared;
use blixt_stream::{ClientConfig, Token};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;

#[path = "common/k8s.rs"]
mod k8s_support;
use k8s_support::{client_until, free_port, refused_with, Controller};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_serves_snapshots_and_the_standby_takes_over() {
    let cluster = shared();
    let client = cluster.client();
    let ns = cluster.temp_namespace().await;
    let n = ns.name().to_string();
    let token = k8s_support::agent_token(cluster, &n).await;

    let replica = |identity: &str, grpc: &str| {
        Controller(
            k8s_support::controller_command(cluster, &n, identity, &format!("blixt.dev/test-{n}"))
                .args(["--grpc-address", grpc])
                .spawn()
                .expect("blixt controller"),
        )
    };
    let (ga, gb) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let mut a = Some(replica("replica-a", &ga));
    let mut b = Some(replica("replica-b", &gb));

    let leases: Api<Lease> = Api::namespaced(client.clone(), &n);
    let holder = || async {
        leases
            .get_opt("blixt-controller")
            .await
            .ok()??
            .spec?
            .holder_identity
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let first = loop {
        if let Some(h) = holder().await {
            break h;
        }
        assert!(std::time::Instant::now() < deadline, "no leader after 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (leader_grpc, standby_grpc) = if first == "replica-a" {
        (&ga, &gb)
    } else {
        (&gb, &ga)
    };
    let config = |grpc: &str| {
        let mut c = ClientConfig::new(format!("http://{grpc}"), "node-a");
        c.token = Some(Token::Static(token.clone()));
        c.backoff.initial = Duration::from_millis(100);
        c.backoff.max = Duration::from_millis(500);
        c
    };

    let (status, got) = client_until(config(leader_grpc), "the leader serves", |s| {
        s.applied.is_some()
    })
    .await;
    assert!(got, "{status:?}");
    let (status, got) = client_until(
        config(standby_grpc),
        "the standby refuses",
        refused_with("Unavailable"),
    )
    .await;
    assert!(!got && status.applied.is_none(), "{status:?}");

    // The leader dies: the standby takes the Lease (after it expires) and serves.
    if first == "replica-a" {
        drop(a.take());
    } else {
        drop(b.take());
    }
    let (status, got) = client_until(
        config(standby_grpc),
        "the former standby serves once it leads",
        |s| s.applied.is_some(),
    )
    .await;
    assert!(got, "{status:?}");
    drop((a, b));
}
