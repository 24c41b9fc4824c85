//! The AddressPool CRD's schema and CEL rules, as the API server enforces them.

use blixt_deploy_tests::{apply_all, chart_dir, dynamic_api, parse, Mode, FIELD_MANAGER};
use blixt_k8s_harness::shared;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::Client;

async fn install_crd(client: &Client) -> Api<DynamicObject> {
    let path = chart_dir().join("crds/addresspools.blixt.dev.yaml");
    let crd = parse(&std::fs::read_to_string(&path).expect("the CRD file"));
    apply_all(client, &crd, Mode::Real)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let gvk = GroupVersionKind::gvk("blixt.dev", "v1alpha1", "AddressPool");
    // Discovery can lag the Established condition by a moment.
    blixt_deploy_tests::eventually(
        "AddressPool in discovery",
        std::time::Duration::from_secs(20),
        || async {
            dynamic_api(client, &gvk, None)
                .await
                .map_err(|e| format!("{e:#}"))
        },
    )
    .await
}

fn pool(name: &str, spec: serde_json::Value) -> DynamicObject {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "blixt.dev/v1alpha1",
        "kind": "AddressPool",
        "metadata": { "name": name },
        "spec": spec,
    }))
    .expect("an AddressPool")
}

fn prefix() -> String {
    format!("crd-{}", std::process::id())
}

#[tokio::test]
async fn address_pool_accepts_addresses_cidrs_and_ranges() {
    let cluster = shared();
    let client = cluster.client();
    let api = install_crd(&client).await;
    let name = format!("{}-good", prefix());
    let good = [
        serde_json::json!({ "addresses": [
            "192.0.2.10", "192.0.2.0/28", "192.0.2.100-192.0.2.120", "192.0.2.5-192.0.2.5",
            "10.0.0.0/8", "2001:db8::10", "2001:db8::/120", "2001:db8::1-2001:db8::9",
        ]}),
        serde_json::json!({ "delegateToLoadBalancer": true }),
        serde_json::json!({ "addresses": ["198.51.100.7"], "delegateToLoadBalancer": false }),
        serde_json::json!({ "addresses": ["198.51.100.7"],
            "staticAddressRanges": ["198.51.100.0/24", "2001:db8::/64", "0.0.0.0/0"] }),
    ];
    for spec in good {
        let created = api
            .create(&PostParams::default(), &pool(&name, spec.clone()))
            .await
            .unwrap_or_else(|e| panic!("{spec} is a valid pool: {e}"));
        // Both fields are always there (defaulted), as the controller's AddressPool type
        // expects.
        assert!(
            created.data["spec"]["delegateToLoadBalancer"].is_boolean(),
            "delegateToLoadBalancer is defaulted: {created:?}"
        );
        assert!(
            created.data["spec"]["addresses"].is_array(),
            "addresses is defaulted: {created:?}"
        );
        let _: blixt_controller::crd::AddressPool =
            serde_json::from_value(serde_json::to_value(&created).expect("JSON"))
                .unwrap_or_else(|e| panic!("the controller cannot read {spec}: {e}"));
        api.delete(&name, &Default::default())
            .await
            .expect("deleting the pool");
        blixt_deploy_tests::eventually(
            "pool deleted",
            std::time::Duration::from_secs(10),
            || async {
                match api.get_opt(&name).await {
                    Ok(None) => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
    }
}

#[tokio::test]
async fn address_pool_rejects_what_cannot_be_a_gateway_address() {
    let cluster = shared();
    let client = cluster.client();
    let api = install_crd(&client).await;
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let name = format!("{}-bad", prefix());
    let cases: [(serde_json::Value, &str); 18] = [
        (serde_json::json!({}), "needs at least one address"),
        (
            serde_json::json!({ "addresses": [] }),
            "needs at least one address",
        ),
        (
            serde_json::json!({ "addresses": ["192.0.2.1"], "delegateToLoadBalancer": true }),
            "are exclusive",
        ),
        (
            serde_json::json!({ "addresses": ["gateway.example"] }),
            "is not an IP address",
        ),
        (
            serde_json::json!({ "addresses": ["010.0.0.1"] }),
            "is not an IP address",
        ),
        (
            serde_json::json!({ "addresses": ["192.0.2.1/33"] }),
            "is not an IP address",
        ),
        (
            serde_json::json!({ "addresses": ["192.0.2.1-"] }),
            "is not an IP address",
        ),
        (
            serde_json::json!({ "addresses": ["192.0.2.1-192.0.2.2-192.0.2.3"] }),
            "is not an IP address",
        ),
        (
            serde_json::json!({ "addresses": ["192.0.2.1/28"] }),
            "host bits set",
        ),
        (
            serde_json::json!({ "addresses": ["192.0.2.20-192.0.2.10"] }),
            "ends before it starts",
        ),
        (
            serde_json::json!({ "addresses": ["192.0.3.1-192.0.2.200"] }),
            "ends before it starts",
        ),
        (
            serde_json::json!({ "addresses": ["192.0.2.1-2001:db8::1"] }),
            "mixes IPv4 and IPv6",
        ),
        (
            serde_json::json!({ "addresses": ["127.0.0.1"] }),
            "is not unicast",
        ),
        (
            serde_json::json!({ "addresses": ["224.0.0.0/4"] }),
            "is not unicast",
        ),
        (
            serde_json::json!({ "addresses": ["fe80::1"] }),
            "is not unicast",
        ),
        (
            serde_json::json!({ "addresses": ["192.0.2.1", "192.0.2.1"] }),
            "Duplicate value",
        ),
        (
            serde_json::json!({ "addresses": ["192.0.2.1"], "staticAddressRanges": ["192.0.2.1"] }),
            "is not a CIDR without host bits",
        ),
        (
            serde_json::json!({ "addresses": ["192.0.2.1"], "staticAddressRanges": ["192.0.2.1/24"] }),
            "is not a CIDR without host bits",
        ),
    ];
    for (spec, expected) in cases {
        let err = api
            .create(&dry_run, &pool(&name, spec.clone()))
            .await
            .expect_err(&format!("{spec} must be rejected"));
        let message = err.to_string();
        assert!(
            message.contains(expected),
            "{spec}: expected {expected:?} in {message}"
        );
    }
    // Unknown fields are pruned, not stored; too many addresses are refused.
    let many: Vec<String> = (0..65).map(|i| format!("192.0.2.{i}")).collect();
    let err = api
        .create(
            &dry_run,
            &pool(&name, serde_json::json!({ "addresses": many })),
        )
        .await
        .expect_err("65 addresses");
    assert!(
        err.to_string().contains("must have at most 64 items"),
        "{err}"
    );
    let created = api
        .create(
            &dry_run,
            &pool(
                &name,
                serde_json::json!({ "addresses": ["192.0.2.1"], "vlan": 7 }),
            ),
        )
        .await
        .expect("an unknown field is pruned");
    assert!(created.data["spec"].get("vlan").is_none(), "{created:?}");
}

#[tokio::test]
async fn address_pool_status_takes_conditions() {
    let cluster = shared();
    let client = cluster.client();
    let api = install_crd(&client).await;
    let name = format!("{}-status", prefix());
    let created = api
        .create(
            &PostParams::default(),
            &pool(&name, serde_json::json!({ "addresses": ["192.0.2.0/30"] })),
        )
        .await
        .expect("a pool");
    let generation = created.metadata.generation.expect("a generation");

    let status = |status: &str, reason: &str| {
        serde_json::json!({
            "apiVersion": "blixt.dev/v1alpha1",
            "kind": "AddressPool",
            "status": { "conditions": [{
                "type": "Accepted",
                "status": status,
                "reason": reason,
                "message": "4 addresses",
                "observedGeneration": generation,
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }]},
        })
    };
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let patched = api
        .patch_status(&name, &params, &Patch::Apply(status("True", "Accepted")))
        .await
        .expect("a valid condition");
    assert_eq!(patched.data["status"]["conditions"][0]["status"], "True");
    assert_eq!(
        patched.metadata.generation,
        Some(generation),
        "status writes do not bump the generation"
    );
    for (status_value, reason, why) in [
        ("Maybe", "Accepted", "status outside True/False/Unknown"),
        ("True", "not a reason!", "reason not CamelCase"),
    ] {
        let err = api
            .patch_status(&name, &params, &Patch::Apply(status(status_value, reason)))
            .await
            .expect_err(why);
        assert!(
            err.to_string().contains("status.conditions[0]"),
            "{why}: {err}"
        );
    }
    // The status subresource ignores spec, and the main resource ignores status.
    let spec_change = serde_json::json!({
        "apiVersion": "blixt.dev/v1alpha1",
        "kind": "AddressPool",
        "spec": { "addresses": ["192.0.2.0/29"] },
    });
    let changed = api
        .patch(&name, &params, &Patch::Apply(spec_change))
        .await
        .expect("a spec change");
    assert_eq!(changed.metadata.generation, Some(generation + 1));
    assert_eq!(
        changed.data["status"]["conditions"][0]["reason"],
        "Accepted"
    );
    api.delete(&name, &Default::default())
        .await
        .expect("deleting the pool");
}
