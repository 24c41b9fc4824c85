//! What several cluster tests share: the real controller started under the chart's
//! ServiceAccount.

use std::time::Duration;

use blixt_controller::leader::LeaseConfig;
use blixt_controller::{start, ControllerOptions, Running};
use blixt_core::translator::TranslatorConfig;
use blixt_deploy_tests::eventually;
use blixt_k8s_harness::Cluster;

/// Starts `blixt_controller::start` (what `blixt controller` runs) with a client that
/// impersonates `<fullname>-controller` of namespace `ns`, for `controller_name`'s classes.
/// Retries while the RBAC bindings just created are not yet in force.
pub async fn controller_as_service_account(
    cluster: &Cluster,
    ns: &str,
    fullname: &str,
    controller_name: &str,
) -> Running {
    // the controller logs why a write failed; the test harness shows it with a failure
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("info")
        .try_init();
    let as_controller = cluster.client_as_service_account(ns, &format!("{fullname}-controller"));
    // the chart's Role allows one Lease, by name
    let identity = format!("{fullname}-controller-0");
    let opts = options(ns, "blixt-controller", &identity, controller_name);
    // The CRD check and the initial lists are the first calls the controller makes.
    eventually(
        "the controller starts under its ServiceAccount",
        Duration::from_secs(20),
        || {
            let client = as_controller.clone();
            let opts = opts.clone();
            async move { start(client, opts).await.map_err(|e| format!("{e:#}")) }
        },
    )
    .await
}

/// A controller for `controller_name`'s classes with the admin's rights (every one), its
/// Lease `lease` in namespace `ns`.
pub async fn controller_as_admin(
    cluster: &Cluster,
    ns: &str,
    lease: &str,
    controller_name: &str,
) -> Running {
    let identity = format!("{lease}-0");
    start(
        cluster.client(),
        options(ns, lease, &identity, controller_name),
    )
    .await
    .unwrap_or_else(|e| panic!("starting controller {identity}: {e:#}"))
}

/// The options of the tests' controllers: Lease `lease` in `ns` held as `identity`, short
/// timings.
fn options(ns: &str, lease: &str, identity: &str, controller_name: &str) -> ControllerOptions {
    ControllerOptions {
        translator: TranslatorConfig {
            controller_name: controller_name.to_owned(),
            ..TranslatorConfig::default()
        },
        lease: LeaseConfig {
            namespace: ns.to_owned(),
            name: lease.to_owned(),
            identity: identity.to_owned(),
            lease_duration: Duration::from_secs(6),
            renew_every: Duration::from_secs(1),
        },
        debounce: Duration::from_millis(50),
        resync: Duration::from_secs(300),
        programmed_gate: None,
    }
}
