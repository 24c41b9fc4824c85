//! Leader election with a `coordination.k8s.io/v1` Lease: the holder renews it every
//! `renew_every`; another replica takes it over once `renewTime` is older than the lease
//! duration. Every write carries the resourceVersion it read, so two candidates can never both
//! believe they won. Only the leader writes statuses.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use tracing::{info, warn};

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's identity (pod name).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_every: Duration,
}

/// Whether this replica currently holds the lease.
#[derive(Debug, Clone, Default)]
pub struct Leadership(Arc<AtomicBool>);

impl Leadership {
    pub fn is_leader(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// One round: acquire, renew or observe. Returns whether we hold the lease afterwards.
async fn round(api: &Api<Lease>, cfg: &LeaseConfig) -> kube::Result<bool> {
    let secs = cfg.lease_duration.as_secs() as i32;
    let Some(mut lease) = api.get_opt(&cfg.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(cfg.name.clone()),
                namespace: Some(cfg.namespace.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(cfg.identity.clone()),
                lease_duration_seconds: Some(secs),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let expired = spec.renew_time.as_ref().is_none_or(|t| {
        let age = Timestamp::now().duration_since(t.0);
        age.as_secs() > i64::from(spec.lease_duration_seconds.unwrap_or(secs))
    });
    if holder != cfg.identity && !holder.is_empty() && !expired {
        return Ok(false);
    }
    if holder != cfg.identity {
        spec.holder_identity = Some(cfg.identity.clone());
        spec.acquire_time = Some(now());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = Some(now());
    spec.lease_duration_seconds = Some(secs);
    // replace carries the resourceVersion we read: a concurrent writer makes this fail (409)
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Runs the election forever in the background; the returned flag follows the outcome.
pub fn spawn(client: Client, cfg: LeaseConfig) -> Leadership {
    let leadership = Leadership::default();
    let flag = leadership.0.clone();
    tokio::spawn(async move {
        let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
        loop {
            let held = match round(&api, &cfg).await {
                Ok(h) => h,
                Err(e) => {
                    warn!("leader election: {e}");
                    false
                }
            };
            if held != flag.swap(held, Ordering::Relaxed) {
                info!(identity = %cfg.identity, leader = held, "leadership changed");
            }
            tokio::time::sleep(cfg.renew_every).await;
        }
    });
    leadership
}
