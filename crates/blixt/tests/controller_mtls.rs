//! `blixt controller --client-ca`: agents must present a client certificate from that CA.
//! The real controller against the real API server, serving its snapshot stream over TLS on a
//! veth into a namespace; stream clients without a certificate, with a token instead, with a
//! certificate of another CA, or speaking for another node than their certificate names get
//! nothing (and the reason); the real `blixt agent --client-cert` in the namespace gets and
//! applies the snapshot.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use blixt_k8s_harness::shared;
use blixt_lab::NetNs;
use blixt_stream::{ClientConfig, ClientTls, Pem, Token};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

#[path = "common/k8s.rs"]
mod k8s_support;
use k8s_support::{
    client_until, free_port, refused_with, require_root, Cleanup, Controller, HostLink, BLIXT,
};

/// A CA writing certificates and keys as PEM files into a directory.
struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Pki {
            ca: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// Writes `<dir>/<stem>.pem` and `<dir>/<stem>.key`.
    fn issue(&self, dir: &Path, stem: &str, params: CertificateParams) -> (Pem, Pem) {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let (c, k) = (
            dir.join(format!("{stem}.pem")),
            dir.join(format!("{stem}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (Pem::File(c), Pem::File(k))
    }

    fn server(&self, dir: &Path, ip: Ipv4Addr) -> (Pem, Pem) {
        let mut params = CertificateParams::new(vec![ip.to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "blixt-controller");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(dir, "server", params)
    }

    fn client(&self, dir: &Path, stem: &str, cn: &str) -> (Pem, Pem) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "blixt-agents");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(dir, stem, params)
    }

    fn write_ca(&self, path: &Path) -> Pem {
        std::fs::write(path, self.ca.pem()).unwrap();
        Pem::File(path.to_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_need_a_certificate_of_the_client_ca() {
    require_root();
    let cluster = shared();
    let k8s_ns = cluster.temp_namespace().await;
    let n = k8s_ns.name().to_string();

    // host <-> namespace link for the stream
    let ns = NetNs::new("bmtls").unwrap();
    let id = std::process::id() % 10000;
    let (host_if, ns_if) = (format!("bmt{id}h"), format!("bmt{id}n"));
    let octet = (1 + id % 250) as u8;
    let (host_ip, ns_ip) = (
        Ipv4Addr::new(10, 95, octet, 1),
        Ipv4Addr::new(10, 95, octet, 2),
    );
    let _link = HostLink::create(&host_if, &ns_if, ns.name(), &format!("{host_ip}/30"));
    ns.ip(&["addr", "add", &format!("{ns_ip}/30"), "dev", &ns_if])
        .unwrap();
    ns.ip(&["link", "set", &ns_if, "up"]).unwrap();

    let dir = std::env::temp_dir().join(format!("blixt-mtls-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    let _dir = Cleanup(dir.clone());
    let pki = Pki::new("blixt test agents CA");
    let rogue = Pki::new("some other CA");
    let ca = pki.write_ca(&dir.join("ca.pem"));
    let (server_cert, server_key) = pki.server(&dir, host_ip);
    let agent_a = pki.client(&dir, "node-a", "node-a");
    let rogue_a = rogue.client(&dir, "rogue-a", "node-a");
    let path = |p: &Pem| match p {
        Pem::File(p) => p.clone(),
        Pem::Bytes(_) => unreachable!("written to files"),
    };

    let grpc = format!("{host_ip}:{}", free_port());
    let _controller = Controller(
        k8s_support::controller_command(cluster, &n, "c1", &format!("blixt.dev/test-{n}"))
            .args(["--grpc-address", &grpc, "--tls-cert"])
            .arg(path(&server_cert))
            .arg("--tls-key")
            .arg(path(&server_key))
            .arg("--client-ca")
            .arg(path(&ca))
            .spawn()
            .expect("blixt controller"),
    );

    let url = format!("https://{grpc}");
    let config = |node: &str, identity: Option<(Pem, Pem)>| {
        let mut c = ClientConfig::new(url.clone(), node);
        c.tls = Some(ClientTls {
            ca: ca.clone(),
            domain_name: None,
            identity,
        });
        c.backoff.initial = Duration::from_millis(100);
        c.backoff.max = Duration::from_millis(500);
        c
    };

    // No certificate: nothing, UNAUTHENTICATED (after the controller came up).
    let (status, got) = client_until(
        config("node-a", None),
        "no certificate refused",
        refused_with("Unauthenticated"),
    )
    .await;
    assert!(!got && status.applied.is_none(), "{status:?}");
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap()
            .contains("no client certificate"),
        "{status:?}"
    );
    // A service-account-style token instead: tokens are not accepted without --accept-tokens.
    let mut with_token = config("node-a", None);
    with_token.token = Some(Token::Static("some-token".into()));
    let (status, got) = client_until(
        with_token,
        "a token instead",
        refused_with("Unauthenticated"),
    )
    .await;
    assert!(!got && status.applied.is_none(), "{status:?}");
    // A certificate of another CA.
    let (status, got) = client_until(
        config("node-a", Some(rogue_a)),
        "another CA's certificate refused",
        refused_with("Unauthenticated"),
    )
    .await;
    assert!(!got, "{status:?}");
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap()
            .contains("client certificate refused"),
        "{status:?}"
    );
    // node-a's certificate speaking for node-b.
    let (status, got) = client_until(
        config("node-b", Some(agent_a.clone())),
        "another node's name refused",
        refused_with("PermissionDenied"),
    )
    .await;
    assert!(!got, "{status:?}");
    // node-a's certificate as node-a: the snapshot.
    let (status, got) = client_until(
        config("node-a", Some(agent_a.clone())),
        "node-a's certificate accepted",
        |s| s.applied.is_some(),
    )
    .await;
    assert!(got && status.connected, "{status:?}");

    // The real agent with --client-cert/--client-key applies the controller's snapshot.
    let mut cmd = Command::new(BLIXT);
    cmd.args(["agent", "--controller", &url, "--node-name", "node-a"])
        .arg("--controller-ca")
        .arg(path(&ca))
        .arg("--client-cert")
        .arg(path(&agent_a.0))
        .arg("--client-key")
        .arg(path(&agent_a.1))
        .args([
            "--pin-dir",
            "none",
            "--metrics-address",
            "none",
            "-i",
            &ns_if,
        ]);
    let mut agent = ns
        .spawn_netns_only("blixt agent with a client certificate", cmd)
        .expect("blixt agent");
    agent
        .wait_for_line(Duration::from_secs(60), |l| {
            l.contains("\"event\":\"applied\"")
        })
        .expect("the agent applied a snapshot");
}
