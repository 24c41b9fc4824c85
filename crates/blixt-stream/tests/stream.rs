//! The snapshot stream end to end on loopback sockets: real tonic servers and clients, real
//! TLS, certificates made at test time.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use blixt_proto::pb;
use blixt_proto::pb::snapshot_service_client::SnapshotServiceClient;
use blixt_stream::Generation;
use blixt_stream::{
    AccessPolicy, BearerAuthenticator, ClientConfig, ClientError, ClientTls, FirstPresented,
    MtlsAuthenticator, Pem, ProgrammedState, PublishError, SnapshotClient, SnapshotServer, Token,
};
use common::*;
use tokio_util::sync::CancellationToken;
use tonic::Code;

/// What a test agent applied, in order.
type Log = Arc<Mutex<Vec<Generation>>>;

/// Runs a [`SnapshotClient`] in the background; its callback logs every snapshot and refuses
/// the generations in `refuse`.
struct Agent {
    log: Log,
    client: Arc<SnapshotClient>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Option<u64>>,
}

impl Agent {
    fn start(config: ClientConfig, refuse: &[u64]) -> Agent {
        Self::start_with_delay(config, refuse, Duration::ZERO)
    }

    fn start_with_delay(config: ClientConfig, refuse: &[u64], delay: Duration) -> Agent {
        let client = Arc::new(SnapshotClient::new(config).expect("client config"));
        let log: Log = Arc::default();
        let stop = CancellationToken::new();
        let refuse = refuse.to_vec();
        let task = {
            let (client, log, stop) = (client.clone(), log.clone(), stop.clone());
            tokio::spawn(async move {
                client
                    .run(
                        move |u: Generation| {
                            // A slow dataplane: the stream keeps flowing meanwhile.
                            std::thread::sleep(delay);
                            let g = u.number();
                            if refuse.contains(&g) {
                                return Err(format!("map full at generation {g}"));
                            }
                            log.lock().unwrap().push(u);
                            Ok(())
                        },
                        stop.cancelled_owned(),
                    )
                    .await
            })
        };
        Agent {
            log,
            client,
            stop,
            task,
        }
    }

    fn generations(&self) -> Vec<u64> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .map(|u| u.number())
            .collect()
    }

    async fn wait_applied(&self, generation: u64) {
        let mut status = self.client.status();
        let ok = tokio::time::timeout(
            Duration::from_secs(10),
            status.wait_for(|s| s.applied == Some(generation)),
        )
        .await;
        assert!(
            ok.is_ok(),
            "generation {generation} not applied; status {:?}, log {:?}",
            *self.client.status().borrow(),
            self.generations()
        );
    }

    async fn stop(self) -> Option<u64> {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("client did not stop on shutdown")
            .unwrap()
    }
}

fn token_config(url: String, node: &str, token: &str) -> ClientConfig {
    let mut c = ClientConfig::new(url, node);
    c.token = Some(Token::Static(token.into()));
    c.backoff.initial = Duration::from_millis(50);
    c.backoff.max = Duration::from_millis(400);
    c
}

async fn next(s: &mut tonic::Streaming<pb::SnapshotUpdate>) -> Generation {
    let m = tokio::time::timeout(Duration::from_secs(5), s.message())
        .await
        .expect("update within 5 s")
        .expect("stream error")
        .expect("stream ended");
    Generation::try_from(m).expect("well-formed update")
}

#[tokio::test]
async fn subscribe_gets_current_then_every_newer_generation() {
    let server = token_server();
    server.publish(snapshot(1, 3), tls_frontends(1)).unwrap();
    let running = Running::start(&server, None).await;
    let mut client = raw_client(running.http(), None).await;
    let mut stream = client
        .subscribe(subscribe_req("node-a", Some("agent-token")))
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut stream).await;
    assert_eq!(first.number(), 1);
    assert_eq!(first.snapshot, snapshot(1, 3));
    assert_eq!(first.tls, tls_frontends(1));
    for g in 2..=4 {
        server.publish(snapshot(g, 3), tls_frontends(g)).unwrap();
        let u = next(&mut stream).await;
        assert_eq!(
            (u.number(), &u.snapshot, &u.tls),
            (g, &snapshot(g, 3), &tls_frontends(g))
        );
    }
    // The subscription is visible to the controller.
    assert_eq!(server.nodes()["node-a"].subscriptions, 1);
    drop(stream);
    wait_for(&server, "the subscription to end", |s| {
        s.nodes()["node-a"].subscriptions == 0
    })
    .await;
    running.stop().await;
}

#[tokio::test]
async fn slow_subscriber_skips_to_the_newest_generation() {
    let server = token_server();
    // ~250 KB per update: a few fill the HTTP/2 windows, so the server must skip.
    const FRONTENDS: usize = 2000;
    const LAST: u64 = 40;
    server.publish(snapshot(1, FRONTENDS), vec![]).unwrap();
    let running = Running::start(&server, None).await;
    // Small HTTP/2 windows, so that what the transport buffers (bounded by the windows: 2 MB
    // per stream by default) does not hide what the server sends.
    let channel = tonic::transport::Endpoint::from_shared(running.http())
        .unwrap()
        .initial_stream_window_size(64 * 1024)
        .initial_connection_window_size(64 * 1024)
        .connect()
        .await
        .unwrap();
    let mut client = SnapshotServiceClient::new(channel).max_decoding_message_size(64 << 20);
    let mut stream = client
        .subscribe(subscribe_req("node-a", Some("agent-token")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap().generation, 1);
    // Publish many generations while the subscriber reads nothing.
    for g in 2..=LAST {
        server.publish(snapshot(g, FRONTENDS), vec![]).unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut got = Vec::new();
    while got.last() != Some(&LAST) {
        let m = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("the newest generation never came")
            .unwrap()
            .unwrap();
        got.push(m.generation);
    }
    assert!(got.windows(2).all(|w| w[0] < w[1]), "out of order: {got:?}");
    assert!(
        got.len() <= 8,
        "a slow subscriber got a backlog of {} updates: {got:?}",
        got.len()
    );
    // Nothing after the newest.
    let more = tokio::time::timeout(Duration::from_millis(300), stream.message()).await;
    assert!(
        more.is_err(),
        "unexpected update after the newest: {more:?}"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_agent_applies_the_newest_not_every_generation() {
    let server = token_server();
    server.publish(snapshot(1, 10), vec![]).unwrap();
    let running = Running::start(&server, None).await;
    let agent = Agent::start_with_delay(
        token_config(running.http(), "node-a", "agent-token"),
        &[],
        Duration::from_millis(150),
    );
    agent.wait_applied(1).await;
    for g in 2..=30 {
        server.publish(snapshot(g, 10), vec![]).unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    agent.wait_applied(30).await;
    let gens = agent.generations();
    assert!(gens.windows(2).all(|w| w[0] < w[1]), "{gens:?}");
    assert!(gens.len() < 15, "applied a backlog: {gens:?}");
    wait_for(&server, "the ack of generation 30", |s| {
        s.programmed(30, ["node-a"]).is_programmed()
    })
    .await;
    agent.stop().await;
    running.stop().await;
}

#[tokio::test]
async fn acks_are_recorded_and_programmed_answers() {
    let server = token_server();
    assert_eq!(
        server.programmed(1, Vec::<String>::new()),
        ProgrammedState::Pending { waiting: vec![] },
        "nothing acked yet"
    );
    server.publish(snapshot(1, 2), vec![]).unwrap();
    let running = Running::start(&server, None).await;
    let a = Agent::start(token_config(running.http(), "node-a", "agent-token"), &[]);
    let b = Agent::start(token_config(running.http(), "node-b", "agent-token"), &[2]);
    a.wait_applied(1).await;
    b.wait_applied(1).await;
    wait_for(&server, "acks of generation 1", |s| {
        s.programmed(1, ["node-a", "node-b"]).is_programmed()
    })
    .await;
    assert_eq!(
        server.programmed(1, ["node-a", "node-b"]),
        ProgrammedState::Programmed {
            nodes: vec!["node-a".into(), "node-b".into()]
        }
    );
    // A node that never connected keeps the generation pending.
    assert_eq!(
        server.programmed(1, ["node-a", "node-c"]),
        ProgrammedState::Pending {
            waiting: vec!["node-c".into()]
        }
    );

    // node-b refuses generation 2 and keeps serving 1.
    server.publish(snapshot(2, 2), vec![]).unwrap();
    a.wait_applied(2).await;
    // The client reports "applied" before its ack reaches the server: wait for the server.
    wait_for(&server, "both acks of generation 2", |s| {
        let acks = s.acks();
        ["node-a", "node-b"]
            .iter()
            .all(|n| acks.get(*n).is_some_and(|a| a.generation == 2))
    })
    .await;
    let acks = server.acks();
    assert!(acks["node-a"].ok && acks["node-a"].generation == 2);
    let b_ack = &acks["node-b"];
    assert!(!b_ack.ok);
    assert_eq!(b_ack.error.as_deref(), Some("map full at generation 2"));
    assert_eq!(server.nodes()["node-b"].applied, Some(1));
    assert_eq!(
        server.programmed(2, ["node-a", "node-b"]),
        ProgrammedState::Failed {
            errors: BTreeMap::from([(
                "node-b".to_string(),
                (2, "map full at generation 2".to_string())
            )])
        }
    );
    assert!(server.programmed(2, ["node-a"]).is_programmed());
    assert!(server.programmed(1, ["node-a", "node-b"]).is_programmed());
    // Any node will do when none is named: node-a has it.
    assert_eq!(
        server.programmed(2, Vec::<&str>::new()),
        ProgrammedState::Programmed {
            nodes: vec!["node-a".into()]
        }
    );
    assert_eq!(b.client.status().borrow().applied, Some(1));
    // Not yet published.
    assert_eq!(
        server.programmed(3, ["node-a", "node-b"]),
        ProgrammedState::Pending {
            waiting: vec!["node-a".into(), "node-b".into()]
        }
    );
    // Acks for generations never published are refused, not counted.
    let mut raw = raw_client(running.http(), None).await;
    let err = raw
        .ack(ack_req("node-c", 3, Some("agent-token")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message()
            .starts_with("generation: 3 was never published"),
        "{err:?}"
    );
    assert!(!server.nodes().contains_key("node-c"));
    // Generation 3 fixes node-b.
    server.publish(snapshot(3, 2), vec![]).unwrap();
    wait_for(&server, "generation 3 everywhere", |s| {
        s.programmed(3, ["node-a", "node-b"]).is_programmed()
    })
    .await;
    assert_eq!(b.generations(), vec![1, 3]);
    a.stop().await;
    b.stop().await;
    running.stop().await;
}

#[tokio::test]
async fn client_reconnects_after_a_server_restart_and_gets_the_current_snapshot() {
    let first = token_server();
    first.publish(snapshot(1, 3), tls_frontends(1)).unwrap();
    let running = Running::start(&first, None).await;
    let addr = running.addr;
    let agent = Agent::start(token_config(running.http(), "node-a", "agent-token"), &[]);
    agent.wait_applied(1).await;

    // The controller goes away: the agent keeps what it applied and says it is disconnected.
    running.stop().await;
    let mut status = agent.client.status();
    tokio::time::timeout(Duration::from_secs(5), status.wait_for(|s| !s.connected))
        .await
        .expect("client noticed the disconnection")
        .expect("status channel open");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        agent.generations(),
        vec![1],
        "nothing un-applied or re-applied"
    );
    assert_eq!(agent.client.status().borrow().applied, Some(1));
    assert!(agent.client.status().borrow().last_error.is_some());

    // A new controller process (fresh state, new content) on the same address.
    let second = token_server();
    second.publish(snapshot(5, 4), tls_frontends(5)).unwrap();
    let running = Running::restart_on(&second, None, addr).await;
    agent.wait_applied(5).await;
    wait_for(&second, "the ack to the new server", |s| {
        s.programmed(5, ["node-a"]).is_programmed()
    })
    .await;
    {
        let log = agent.log.lock().unwrap();
        assert_eq!(log.last().unwrap().snapshot, snapshot(5, 4));
        assert_eq!(log.last().unwrap().tls, tls_frontends(5));
    }
    running.stop().await;

    // Restarted again with the same snapshot: acked, but not applied twice.
    let third = token_server();
    third.publish(snapshot(5, 4), tls_frontends(5)).unwrap();
    let running = Running::restart_on(&third, None, addr).await;
    wait_for(&third, "the ack of the unchanged snapshot", |s| {
        s.programmed(5, ["node-a"]).is_programmed()
    })
    .await;
    assert_eq!(agent.generations(), vec![1, 5]);
    assert!(agent.client.status().borrow().subscriptions >= 3);
    assert_eq!(agent.stop().await, Some(5));
    running.stop().await;
}

#[tokio::test]
async fn client_stops_promptly_while_disconnected() {
    // Nothing listens there: the client is in its backoff loop when asked to stop.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let agent = Agent::start(
        token_config(format!("http://127.0.0.1:{port}"), "node-a", "agent-token"),
        &[],
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = agent.client.status().borrow().clone();
    assert!(!status.connected);
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("connecting"),
        "{status:?}"
    );
    assert_eq!(agent.stop().await, None);
}

#[tokio::test]
async fn nothing_to_serve_and_withdrawal_answer_unavailable() {
    let server = token_server();
    let running = Running::start(&server, None).await;
    let mut client = raw_client(running.http(), None).await;
    let err = first_update(&mut client, subscribe_req("node-a", Some("agent-token")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");

    server.publish(snapshot(1, 1), vec![]).unwrap();
    let mut stream = client
        .subscribe(subscribe_req("node-a", Some("agent-token")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap().generation, 1);
    server.withdraw();
    let err = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(server.current_generation(), None);
    running.stop().await;
}

#[tokio::test]
async fn publish_refuses_old_generations_and_invalid_snapshots() {
    let server = token_server();
    server.publish(snapshot(3, 1), vec![]).unwrap();
    assert_eq!(
        server.publish(snapshot(3, 1), vec![]),
        Err(PublishError::NotNewer {
            current: 3,
            offered: 3
        })
    );
    assert!(matches!(
        server.publish(snapshot(2, 1), vec![]),
        Err(PublishError::NotNewer { .. })
    ));
    let mut bad = snapshot(4, 1);
    bad.frontends[0].key.port = 0;
    let err = server.publish(bad, vec![]).unwrap_err();
    assert!(err.to_string().contains("port"), "{err}");
    assert_eq!(server.current_generation(), Some(3));
}

#[tokio::test]
async fn bearer_tokens_unauthenticated_and_denied() {
    let pki = Pki::new("controller-ca");
    let server = token_server();
    server.publish(snapshot(1, 1), vec![]).unwrap();
    // Tokens travel over TLS (server certificate only).
    let running = Running::start(&server, Some(pki.server_tls(None))).await;
    let mut client = raw_client(running.https(), Some(pki.tonic_client_tls(None))).await;

    for (token, code) in [
        (None, Code::Unauthenticated),
        (Some("wrong-token"), Code::Unauthenticated),
        (Some(""), Code::Unauthenticated),
        (Some("other-token"), Code::PermissionDenied),
    ] {
        let err = first_update(&mut client, subscribe_req("node-a", token))
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "token {token:?}: {err:?}");
        let err = client.ack(ack_req("node-a", 1, token)).await.unwrap_err();
        assert_eq!(err.code(), code, "ack with token {token:?}: {err:?}");
    }
    // A token bound to node-a cannot speak for node-b.
    let err = first_update(&mut client, subscribe_req("node-b", Some("node-a-token")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // A malformed node name is the caller's mistake.
    let err = first_update(&mut client, subscribe_req("Node_A", Some("agent-token")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("node_name"), "{err:?}");
    // None of them left a trace; refused acks were not recorded.
    assert!(server.nodes().is_empty(), "{:#?}", server.nodes());

    let ok = first_update(&mut client, subscribe_req("node-a", Some("node-a-token")))
        .await
        .unwrap();
    assert_eq!(ok.generation, 1);

    // The agent client reads a rotated token file for every call.
    let dir = std::env::temp_dir().join(format!("blixt-stream-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("token");
    std::fs::write(&token_file, "agent-token\n").unwrap();
    let mut config = ClientConfig::new(running.https(), "node-a");
    config.tls = Some(ClientTls {
        ca: Pem::from(pki.ca_pem()),
        domain_name: Some("localhost".into()),
        identity: None,
    });
    config.token = Some(Token::File(token_file.clone()));
    let agent = Agent::start(config, &[]);
    agent.wait_applied(1).await;
    std::fs::write(&token_file, "other-token").unwrap();
    server.publish(snapshot(2, 1), vec![]).unwrap();
    // Generation 2 arrives on the open stream, but its ack now carries a token that is not
    // allowed: refused, so the controller does not count it.
    let mut status = agent.client.status();
    tokio::time::timeout(
        Duration::from_secs(5),
        status.wait_for(|s| {
            s.last_error
                .as_deref()
                .is_some_and(|e| e.contains("PermissionDenied"))
        }),
    )
    .await
    .expect("the refused ack is reported")
    .expect("status channel open");
    assert!(!server.programmed(2, ["node-a"]).is_programmed());
    std::fs::write(&token_file, "agent-token").unwrap();
    wait_for(&server, "generation 2 acked with the restored token", |s| {
        s.programmed(2, ["node-a"]).is_programmed()
    })
    .await;
    agent.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
    running.stop().await;
}

fn mtls_server(agent_ca: &Pki) -> SnapshotServer {
    SnapshotServer::new(
        Arc::new(MtlsAuthenticator::from_ca_pem(agent_ca.ca_pem().as_bytes()).unwrap()),
        AccessPolicy::any_authenticated(),
    )
}

#[tokio::test]
async fn client_certificates_unauthenticated_and_denied() {
    let server_pki = Pki::new("controller-ca");
    let agent_ca = Pki::new("agent-ca");
    let rogue_ca = Pki::new("rogue-ca");
    let server = mtls_server(&agent_ca);
    server.publish(snapshot(1, 1), vec![]).unwrap();
    let running = Running::start(&server, Some(server_pki.server_tls(Some(&agent_ca)))).await;

    // No certificate.
    let mut anonymous = raw_client(running.https(), Some(server_pki.tonic_client_tls(None))).await;
    let err = first_update(&mut anonymous, subscribe_req("node-a", None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("no client certificate"), "{err:?}");
    let err = anonymous.ack(ack_req("node-a", 1, None)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // A certificate from another CA, for the right node name.
    let rogue = rogue_ca.client("node-a");
    let mut rogue_client = raw_client(
        running.https(),
        Some(server_pki.tonic_client_tls(Some(&rogue))),
    )
    .await;
    let err = first_update(&mut rogue_client, subscribe_req("node-a", None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("refused"), "{err:?}");

    // A good certificate for node-a, asking as node-b.
    let node_a = agent_ca.client("node-a");
    let mut a = raw_client(
        running.https(),
        Some(server_pki.tonic_client_tls(Some(&node_a))),
    )
    .await;
    let err = first_update(&mut a, subscribe_req("node-b", None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = a.ack(ack_req("node-b", 1, None)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(server.nodes().is_empty(), "{:#?}", server.nodes());

    // And as itself.
    assert_eq!(
        first_update(&mut a, subscribe_req("node-a", None))
            .await
            .unwrap()
            .generation,
        1
    );

    // The agent client with its certificate (kubelet-style CN works too).
    let node_b = agent_ca.client("system:node:node-b");
    let mut config = ClientConfig::new(running.https(), "node-b");
    config.tls = Some(ClientTls {
        ca: Pem::from(server_pki.ca_pem()),
        domain_name: Some("localhost".into()),
        identity: Some((Pem::from(node_b.cert), Pem::from(node_b.key))),
    });
    let agent = Agent::start(config, &[]);
    agent.wait_applied(1).await;
    wait_for(&server, "node-b's ack", |s| {
        s.programmed(1, ["node-b"]).is_programmed()
    })
    .await;
    assert!(server.nodes()["node-b"]
        .identity
        .contains("system:node:node-b"));

    // The agent client with a rogue certificate never applies anything.
    let mut config = ClientConfig::new(running.https(), "node-a");
    config.tls = Some(ClientTls {
        ca: Pem::from(server_pki.ca_pem()),
        domain_name: Some("localhost".into()),
        identity: Some((Pem::from(rogue.cert), Pem::from(rogue.key))),
    });
    config.backoff.initial = Duration::from_millis(50);
    let intruder = Agent::start(config, &[]);
    let mut status = intruder.client.status();
    tokio::time::timeout(
        Duration::from_secs(5),
        status.wait_for(|s| {
            s.last_error
                .as_deref()
                .is_some_and(|e| e.contains("Unauthenticated"))
        }),
    )
    .await
    .expect("the refusal is reported")
    .expect("status channel open");
    assert!(intruder.generations().is_empty());
    assert_eq!(intruder.stop().await, None);
    agent.stop().await;
    running.stop().await;
}

#[tokio::test]
async fn either_credential_but_a_bad_certificate_is_not_excused_by_a_token() {
    let server_pki = Pki::new("controller-ca");
    let agent_ca = Pki::new("agent-ca");
    let rogue_ca = Pki::new("rogue-ca");
    let auth = FirstPresented(vec![
        Arc::new(MtlsAuthenticator::from_ca_pem(agent_ca.ca_pem().as_bytes()).unwrap()),
        Arc::new(BearerAuthenticator::new(Arc::new(
            blixt_stream::StaticTokens::new().with("agent-token", token_identity(AGENT_SA, None)),
        ))),
    ]);
    let server = SnapshotServer::new(
        Arc::new(auth),
        AccessPolicy::users([AGENT_SA]).or_groups(["blixt-agents"]),
    );
    server.publish(snapshot(1, 1), vec![]).unwrap();
    let running = Running::start(&server, Some(server_pki.server_tls(Some(&agent_ca)))).await;

    let mut anonymous = raw_client(running.https(), Some(server_pki.tonic_client_tls(None))).await;
    let err = first_update(&mut anonymous, subscribe_req("node-a", None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(
        err.message()
            .contains("client certificate or an authorization: Bearer token"),
        "{err:?}"
    );
    assert_eq!(
        first_update(&mut anonymous, subscribe_req("node-a", Some("agent-token")))
            .await
            .unwrap()
            .generation,
        1
    );
    let node_a = agent_ca.client("node-a");
    let mut a = raw_client(
        running.https(),
        Some(server_pki.tonic_client_tls(Some(&node_a))),
    )
    .await;
    assert_eq!(
        first_update(&mut a, subscribe_req("node-a", None))
            .await
            .unwrap()
            .generation,
        1
    );

    let rogue = rogue_ca.client("node-a");
    let mut r = raw_client(
        running.https(),
        Some(server_pki.tonic_client_tls(Some(&rogue))),
    )
    .await;
    let err = first_update(&mut r, subscribe_req("node-a", Some("agent-token")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    running.stop().await;
}

#[tokio::test]
async fn plaintext_client_cannot_reach_a_tls_server() {
    let pki = Pki::new("controller-ca");
    let server = token_server();
    server.publish(snapshot(1, 1), vec![]).unwrap();
    let running = Running::start(&server, Some(pki.server_tls(None))).await;
    let agent = Agent::start(token_config(running.http(), "node-a", "agent-token"), &[]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(agent.generations().is_empty());
    assert!(agent.client.status().borrow().last_error.is_some());
    agent.stop().await;
    running.stop().await;
}

#[test]
fn client_configuration_errors() {
    let err =
        SnapshotClient::new(ClientConfig::new("https://controller:9443", "node-a")).unwrap_err();
    assert!(matches!(err, ClientError::Endpoint { .. }), "{err}");
    let err = SnapshotClient::new(ClientConfig::new("ftp://controller", "node-a")).unwrap_err();
    assert!(err.to_string().contains("scheme"), "{err}");
    let err = SnapshotClient::new(ClientConfig::new("http://controller:9443", "")).unwrap_err();
    assert!(matches!(err, ClientError::NodeName(_)), "{err}");
    assert!(SnapshotClient::new(ClientConfig::new(
        "http://controller:9443",
        "node-a.example"
    ))
    .is_ok());
}

/// A stand-in controller that sends its n-th update (the last one from then on) to its n-th
/// subscription, ends the stream, and records acks: the client under test must refuse what is
/// malformed or invalid, ack why, and keep what it applied.
#[derive(Clone, Default)]
struct FixedUpdates {
    updates: Vec<pb::SnapshotUpdate>,
    subscriptions: Arc<std::sync::atomic::AtomicUsize>,
    acks: Arc<Mutex<Vec<pb::AckRequest>>>,
}

#[tonic::async_trait]
impl pb::snapshot_service_server::SnapshotService for FixedUpdates {
    type SubscribeStream =
        tokio_stream::Iter<std::vec::IntoIter<Result<pb::SnapshotUpdate, tonic::Status>>>;

    async fn subscribe(
        &self,
        _req: tonic::Request<pb::SubscribeRequest>,
    ) -> Result<tonic::Response<Self::SubscribeStream>, tonic::Status> {
        let n = self
            .subscriptions
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            .min(self.updates.len() - 1);
        Ok(tonic::Response::new(tokio_stream::iter(vec![Ok(self
            .updates[n]
            .clone())])))
    }

    async fn ack(
        &self,
        req: tonic::Request<pb::AckRequest>,
    ) -> Result<tonic::Response<pb::AckResponse>, tonic::Status> {
        self.acks.lock().unwrap().push(req.into_inner());
        Ok(tonic::Response::new(pb::AckResponse {}))
    }
}

#[tokio::test]
async fn client_acks_malformed_and_invalid_snapshots_as_errors_and_keeps_the_last_good_one() {
    let good = pb::SnapshotUpdate::from_core(&snapshot(1, 2), &tls_frontends(1));
    let mut malformed = pb::SnapshotUpdate::from_core(&snapshot(2, 2), &[]);
    malformed.snapshot.as_mut().unwrap().frontends[1].backends[2].addr = vec![10, 0, 0];
    let mut invalid = snapshot(3, 2);
    invalid.frontends[1].key = invalid.frontends[0].key;
    let invalid = pb::SnapshotUpdate::from_core(&invalid, &[]);
    let stand_in = FixedUpdates {
        updates: vec![good, malformed, invalid],
        ..FixedUpdates::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::snapshot_service_server::SnapshotServiceServer::new(
                stand_in.clone(),
            ))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                stop.clone().cancelled_owned(),
            ),
    );
    let agent = Agent::start(token_config(format!("http://{addr}"), "node-a", "t"), &[]);
    let acks = retry(Duration::from_secs(10), || async {
        let acks = stand_in.acks.lock().unwrap();
        (acks.len() >= 3).then(|| acks[..3].to_vec())
    })
    .await
    .expect("three acks");
    assert!(acks[0].ok && acks[0].generation == 1, "{acks:?}");
    assert!(!acks[1].ok && acks[1].generation == 2);
    assert_eq!(
        acks[1].error,
        "malformed snapshot: snapshot.frontends[1].backends[2].addr: 3 bytes, expected 4 (IPv4) or 16 (IPv6)"
    );
    assert!(!acks[2].ok && acks[2].generation == 3);
    assert!(
        acks[2].error.starts_with("invalid snapshot: "),
        "{}",
        acks[2].error
    );
    assert!(acks[2].error.contains("duplicate"), "{}", acks[2].error);
    // Only the good one reached the dataplane, and it stays.
    assert_eq!(agent.generations()[0], 1);
    assert!(agent.generations().iter().all(|g| *g == 1));
    assert_eq!(agent.client.status().borrow().applied, Some(1));
    agent.stop().await;
    stop.cancel();
    server.await.unwrap().unwrap();
}

/// The VIPs `agent` announces according to the last update it applied.
fn announced(agent: &Agent) -> Option<BTreeSet<IpAddr>> {
    agent.log.lock().unwrap().last()?.announce.clone()
}

/// Polls `cond` until it holds, failing with `what` (and `state()`) after 10 s.
async fn eventually<S: std::fmt::Debug>(
    what: &str,
    cond: impl Fn() -> bool,
    state: impl Fn() -> S,
) {
    let held = retry(Duration::from_secs(10), || async { cond().then_some(()) }).await;
    assert!(
        held.is_some(),
        "{what}: not within 10 s; state {:?}",
        state()
    );
}

/// Every VIP is announced by exactly one subscribed agent; an agent alone announces them all;
/// when one goes away (its stream ends) only its VIPs move, and the remaining agents get them
/// in an update of the same generation.
#[tokio::test]
async fn every_vip_has_one_announcer_and_moves_when_its_agent_leaves() {
    let server = token_server();
    server.publish(snapshot(1, 12), tls_frontends(1)).unwrap();
    let running = Running::start(&server, None).await;
    let all: BTreeSet<IpAddr> = snapshot(1, 12)
        .frontends
        .iter()
        .map(|f| f.key.vip)
        .chain(tls_frontends(1).iter().map(|t| t.vip))
        .collect();
    assert_eq!(all.len(), 13);

    let a = Agent::start(token_config(running.http(), "node-a", "agent-token"), &[]);
    eventually(
        "node-a alone announces every VIP",
        || announced(&a).as_ref() == Some(&all),
        || announced(&a),
    )
    .await;

    let b = Agent::start(token_config(running.http(), "node-b", "agent-token"), &[]);
    // A third agent as a bare gRPC subscriber, to vanish without a goodbye below.
    let c_set: Arc<Mutex<Option<BTreeSet<IpAddr>>>> = Arc::default();
    let c_task = {
        let (c_set, url) = (c_set.clone(), running.http());
        tokio::spawn(async move {
            let mut raw = raw_client(url, None).await;
            let mut stream = raw
                .subscribe(subscribe_req("node-c", Some("agent-token")))
                .await
                .unwrap()
                .into_inner();
            while let Ok(Some(m)) = stream.message().await {
                *c_set.lock().unwrap() = Generation::try_from(m).unwrap().announce;
            }
        })
    };
    let c = || c_set.lock().unwrap().clone();
    let partition = |sets: &[Option<BTreeSet<IpAddr>>]| {
        let mut seen = BTreeSet::new();
        sets.iter().all(|s| {
            s.as_ref()
                .is_some_and(|s| s.iter().all(|v| seen.insert(*v)))
        }) && seen == all
    };
    eventually(
        "three agents announce disjoint shares covering every VIP",
        || partition(&[announced(&a), announced(&b), c()]),
        || (announced(&a), announced(&b), c()),
    )
    .await;
    let owners = server.vip_owners();
    assert_eq!(owners.len(), all.len());
    for (node, set) in [
        ("node-a", announced(&a)),
        ("node-b", announced(&b)),
        ("node-c", c()),
    ] {
        let owned: BTreeSet<IpAddr> = owners
            .iter()
            .filter(|(_, n)| n.as_str() == node)
            .map(|(v, _)| *v)
            .collect();
        assert!(!owned.is_empty(), "{node} owns nothing of 13 VIPs");
        assert_eq!(
            set.unwrap(),
            owned,
            "{node}: what it announces is what the server says"
        );
    }
    let b_before = announced(&b).unwrap();

    // node-c vanishes: only its VIPs move, to node-a and node-b.
    c_task.abort();
    eventually(
        "node-c's VIPs taken over by node-a and node-b",
        || partition(&[announced(&a), announced(&b)]),
        || (announced(&a), announced(&b)),
    )
    .await;
    assert!(
        announced(&b).unwrap().is_superset(&b_before),
        "a VIP left node-b though it stayed"
    );
    assert!(
        a.generations().iter().all(|g| *g == 1),
        "only the announce set changed"
    );

    // node-b stops: node-a announces everything again.
    b.stop().await;
    eventually(
        "node-a announces every VIP after node-b left",
        || announced(&a).as_ref() == Some(&all),
        || announced(&a),
    )
    .await;
    assert_eq!(
        server.vip_owners().into_values().collect::<BTreeSet<_>>(),
        BTreeSet::from(["node-a".to_string()])
    );
    a.stop().await;
    running.stop().await;
}

/// VIPs published as announced by someone else (a load balancer) are in nobody's share.
#[tokio::test]
async fn excluded_vips_are_announced_by_no_agent() {
    let server = token_server();
    let excluded: BTreeSet<IpAddr> =
        ["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()].into();
    let mut published = Generation {
        snapshot: snapshot(1, 3),
        tls: tls_frontends(1),
        announce: None,
    };
    published.announce = Some(&published.announced() - &excluded);
    server.publish_generation(published).unwrap();
    let running = Running::start(&server, None).await;
    let a = Agent::start(token_config(running.http(), "node-a", "agent-token"), &[]);
    a.wait_applied(1).await;
    let expected: BTreeSet<IpAddr> =
        ["192.0.2.2".parse().unwrap(), "192.0.2.3".parse().unwrap()].into();
    assert_eq!(announced(&a), Some(expected));
    assert!(server.vip_owners().keys().all(|v| !excluded.contains(v)));
    a.stop().await;
    running.stop().await;
}
