//! A cluster of its own is torn down when dropped, also when the test using it panics.

use std::net::TcpStream;
use std::path::PathBuf;

use blixt_k8s_harness::Cluster;

#[test]
fn cluster_is_torn_down_when_a_test_panics() {
    let mut seen: Option<(String, PathBuf)> = None;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let cluster = Cluster::start();
        let dir = cluster
            .log_dir()
            .parent()
            .expect("the log dir is inside the cluster dir")
            .to_owned();
        seen = Some((cluster.server_url().to_owned(), dir));
        panic!("deliberate panic with the cluster alive");
    }));
    assert!(outcome.is_err(), "the closure panics");
    let (server_url, dir) = seen.expect("the cluster started");

    let address = server_url.trim_start_matches("https://");
    assert!(
        TcpStream::connect(address).is_err(),
        "kube-apiserver still listens on {address} after the cluster was dropped"
    );
    assert!(
        !dir.exists(),
        "{} still exists after the cluster was dropped",
        dir.display()
    );

    // The logs kept because of the panic.
    let prefix = format!("blixt-k8s-logs-{}-", std::process::id());
    for entry in std::fs::read_dir(std::env::temp_dir())
        .expect("listing the temp dir")
        .flatten()
    {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
