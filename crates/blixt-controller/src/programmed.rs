//! The `Programmed` gate: a Gateway is `Programmed=True` only once an agent has applied a
//! snapshot generation carrying its current dataplane state.
//!
//! Each Gateway is gated on the generation in which *its* part of the snapshot last changed
//! (its frontends, SNI tables and delegated addresses), not on the newest generation: a change
//! to one route must not turn every other Gateway's `Programmed` to `Pending` and back (at a
//! thousand routes on sixteen Gateways that was 32 large status writes per change, and the API
//! server's work held up the next snapshot).
//!
//! A Gateway already reported `Programmed=True` stays `True` for a short grace while agents
//! apply a newer generation of its part: a route change that is programmed within it writes
//! no `Pending` and no `True` again (two large status writes per change, whose load on the
//! API server delayed the watch events of the next change). Past the grace the Gateway turns
//! `Pending`; an agent's failure is reported at once.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use blixt_core::generation::Generation;
use blixt_core::snapshot::Frontend;
use blixt_core::tls::TlsFrontend;
use blixt_core::translator::{Delegation, ObjectKey, Owners, Statuses};
use blixt_stream::ProgrammedState;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// One Gateway's part of what agents program.
#[derive(Debug, Default, PartialEq)]
struct Part<'a> {
    frontends: Vec<&'a Frontend>,
    tls: Vec<&'a TlsFrontend>,
    not_announced: Vec<IpAddr>,
}

/// A published generation as the gate sees it: with the Gateway owning each frontend and SNI
/// table, and the addresses load balancers announce for delegating Gateways.
pub type Pass<'a> = (&'a Generation, &'a Owners, &'a [Delegation]);

fn parts<'a>((published, owners, delegations): Pass<'a>) -> BTreeMap<ObjectKey, Part<'a>> {
    let mut parts: BTreeMap<ObjectKey, Part<'a>> = BTreeMap::new();
    for f in &published.snapshot.frontends {
        if let Some(gw) = owners.of_frontend(f) {
            parts.entry(gw.clone()).or_default().frontends.push(f);
        }
    }
    for t in &published.tls {
        if let Some(gw) = owners.of_tls(t) {
            parts.entry(gw.clone()).or_default().tls.push(t);
        }
    }
    for d in delegations {
        let part = parts.entry(d.gateway.clone()).or_default();
        part.not_announced.extend(d.addresses.iter().copied());
    }
    parts
}

/// Generation in which each Gateway's part of the snapshot last changed.
#[derive(Debug, Clone, Default)]
pub struct ChangedIn {
    generations: BTreeMap<ObjectKey, u64>,
    /// Gateways without a part (none yet, or not programmed): the first generation published.
    first: u64,
}

impl ChangedIn {
    /// Notes a newly published generation: Gateways whose part differs from `previous` (or
    /// every Gateway, for the first generation) changed in `next`'s generation.
    pub fn observe(&mut self, previous: Option<Pass<'_>>, next: Pass<'_>) {
        let generation = next.0.number();
        let new = parts(next);
        let Some(previous) = previous else {
            self.first = generation;
            self.generations = new.into_keys().map(|gw| (gw, generation)).collect();
            return;
        };
        let old = parts(previous);
        for (gw, part) in &new {
            if old.get(gw) != Some(part) {
                self.generations.insert(gw.clone(), generation);
            }
        }
        for gw in old.keys().filter(|gw| !new.contains_key(*gw)) {
            // its frontends went away: agents must drop them before it may say Programmed
            self.generations.insert(gw.clone(), generation);
        }
    }

    /// The generation an agent must have applied for `gateway` to be programmed.
    pub fn generation(&self, gateway: &ObjectKey) -> u64 {
        self.generations.get(gateway).copied().unwrap_or(self.first)
    }
}

/// Applies the gate to the translator's statuses and keeps `Programmed`'s transition times
/// true to what was reported before.
#[derive(Debug, Default)]
pub struct ProgrammedGate {
    /// Last reported `Programmed` per Gateway: status, reason and transition time.
    reported: BTreeMap<ObjectKey, (String, String, Time)>,
    /// Gateways reported `True` whose current part no agent has applied yet: since when.
    unsettled: BTreeMap<ObjectKey, Instant>,
    /// How long such a Gateway stays `True` before it turns `Pending`.
    grace: Duration,
}

impl ProgrammedGate {
    /// A gate that keeps an already programmed Gateway `True` for `grace` while agents apply
    /// a newer generation of its part.
    pub fn with_grace(grace: Duration) -> Self {
        Self {
            grace,
            ..Self::default()
        }
    }

    /// When a Gateway held `True` by the grace turns `Pending` unless an agent applies its
    /// part first: the status writer must look again then.
    pub fn next_deadline(&self, clock: Instant) -> Option<Instant> {
        self.unsettled
            .values()
            .map(|since| *since + self.grace)
            .filter(|deadline| *deadline > clock)
            .min()
    }

    /// Turns `Programmed=True` of each Gateway into `False/Pending` (or `False/Invalid` naming
    /// the agents' errors) while no agent has applied the generation its part changed in.
    /// `state` answers whether a generation is programmed; `now` stamps transitions and
    /// `clock` times the grace.
    pub fn apply(
        &mut self,
        statuses: &mut Statuses,
        changed_in: &ChangedIn,
        state: impl Fn(u64) -> ProgrammedState,
        now: &Time,
        clock: Instant,
    ) {
        for (key, status) in statuses.gateways.iter_mut() {
            let Some(programmed) = status
                .conditions
                .iter_mut()
                .flatten()
                .find(|c| c.type_ == "Programmed")
            else {
                continue;
            };
            if programmed.status != "True" {
                self.unsettled.remove(key);
            } else {
                let generation = changed_in.generation(key);
                let refused = match state(generation) {
                    ProgrammedState::Programmed { .. } => None,
                    ProgrammedState::Pending { .. } => Some((
                        "Pending",
                        format!("waiting for an agent to program generation {generation}"),
                    )),
                    ProgrammedState::Failed { errors } => Some((
                        "Invalid",
                        format!(
                            "agents failed to program generation {generation}: {}",
                            errors
                                .iter()
                                .map(|(n, (_, e))| format!("{n}: {e}"))
                                .collect::<Vec<_>>()
                                .join("; ")
                        ),
                    )),
                };
                let reported_true = self
                    .reported
                    .get(key)
                    .is_some_and(|(status, _, _)| status == "True");
                let held = match refused {
                    Some(("Pending", _)) if reported_true => {
                        let since = *self.unsettled.entry(key.clone()).or_insert(clock);
                        clock.saturating_duration_since(since) < self.grace
                    }
                    _ => {
                        self.unsettled.remove(key);
                        false
                    }
                };
                if let Some((reason, message)) = refused.filter(|_| !held) {
                    programmed.status = "False".into();
                    programmed.reason = reason.into();
                    programmed.message = message;
                }
            }
            // the translator stamps transition times against the live object, which lags
            // behind the gate's flips: keep them against what this gate reported instead
            let now_reported = (programmed.status.clone(), programmed.reason.clone());
            match self.reported.get(key) {
                Some((status, reason, time))
                    if (status, reason) == (&now_reported.0, &now_reported.1) =>
                {
                    programmed.last_transition_time = time.clone();
                }
                Some(_) => programmed.last_transition_time = now.clone(),
                None => {}
            }
            self.reported.insert(
                key.clone(),
                (
                    now_reported.0,
                    now_reported.1,
                    programmed.last_transition_time.clone(),
                ),
            );
        }
        self.reported
            .retain(|k, _| statuses.gateways.contains_key(k));
        self.unsettled
            .retain(|k, _| statuses.gateways.contains_key(k));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    use blixt_core::snapshot::{
        Backend, BackendAddr, BackendState, Frontend, FrontendKey, Protocol, Snapshot,
    };
    use blixt_core::translator::{Delegation, ObjectKey, Owners, Statuses};
    use blixt_gateway_api::gateways::GatewayStatus;
    use blixt_stream::ProgrammedState;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use k8s_openapi::jiff::Timestamp;

    use super::{ChangedIn, Pass, ProgrammedGate};
    use blixt_core::generation::Generation;

    fn frontend(gateway: &str, port: u16, weight: u32) -> Frontend {
        Frontend {
            name: format!("{gateway}/l{port}"),
            key: FrontendKey {
                vip: "192.0.2.1".parse().unwrap(),
                port,
                protocol: Protocol::Tcp,
            },
            backends: vec![Backend {
                addr: BackendAddr {
                    addr: "10.0.0.1".parse().unwrap(),
                    port: 80,
                },
                weight,
                state: BackendState::Active,
            }],
            reject_weight: 0,
        }
    }

    /// Generation `generation` with `frontends`, each owned by the Gateway [`frontend`] made
    /// it for.
    fn published(generation: u64, frontends: Vec<Frontend>) -> (Generation, Owners) {
        let owners = Owners {
            frontends: frontends
                .iter()
                .map(|f| (f.key, key(f.name.rsplit_once('/').unwrap().0)))
                .collect(),
            ..Owners::default()
        };
        let g = Generation::of(Snapshot {
            generation,
            frontends,
        });
        (g, owners)
    }

    /// `published` with the addresses of `delegations`, as [`ChangedIn::observe`] takes it.
    fn pass<'a>((g, owners): &'a (Generation, Owners), delegations: &'a [Delegation]) -> Pass<'a> {
        (g, owners, delegations)
    }

    fn key(s: &str) -> ObjectKey {
        let (ns, name) = s.split_once('/').unwrap();
        ObjectKey::new(ns, name)
    }

    #[test]
    fn only_the_gateway_whose_part_changed_moves_to_the_new_generation() {
        let mut changed = ChangedIn::default();
        let g1 = published(1, vec![frontend("ns/a", 1, 1), frontend("ns/b", 2, 1)]);
        changed.observe(None, pass(&g1, &[]));
        assert_eq!(changed.generation(&key("ns/a")), 1);
        assert_eq!(changed.generation(&key("ns/b")), 1);
        // a Gateway without frontends waits for the first generation
        assert_eq!(changed.generation(&key("ns/none")), 1);

        let g2 = published(2, vec![frontend("ns/a", 1, 1), frontend("ns/b", 2, 5)]);
        changed.observe(Some(pass(&g1, &[])), pass(&g2, &[]));
        assert_eq!(changed.generation(&key("ns/a")), 1);
        assert_eq!(changed.generation(&key("ns/b")), 2);

        // b's frontends go away: it changed; a delegation address moves a to generation 3
        let delegated = [Delegation {
            gateway: key("ns/a"),
            service: "blixt-a".into(),
            ports: Vec::new(),
            addresses: vec!["198.51.100.1".parse().unwrap()],
        }];
        let g3 = published(3, vec![frontend("ns/a", 1, 1)]);
        changed.observe(Some(pass(&g2, &[])), pass(&g3, &delegated));
        assert_eq!(changed.generation(&key("ns/a")), 3);
        assert_eq!(changed.generation(&key("ns/b")), 3);
    }

    fn at(second: i64) -> Time {
        Time(Timestamp::from_second(1_700_000_000 + second).unwrap())
    }

    /// The gate's clock at `second`, from one base for the whole test binary.
    fn clock(second: u64) -> Instant {
        static BASE: OnceLock<Instant> = OnceLock::new();
        *BASE.get_or_init(Instant::now) + Duration::from_secs(second)
    }

    fn statuses(gateways: &[&str]) -> Statuses {
        let mut s = Statuses::default();
        for gw in gateways {
            let programmed = Condition {
                type_: "Programmed".into(),
                status: "True".into(),
                reason: "Programmed".into(),
                message: String::new(),
                observed_generation: Some(1),
                last_transition_time: at(0),
            };
            let status = GatewayStatus {
                conditions: Some(vec![programmed]),
                ..GatewayStatus::default()
            };
            s.gateways.insert(key(gw), status);
        }
        s
    }

    fn programmed_of(s: &Statuses, gw: &str) -> (String, String, Time) {
        let c = s.gateways[&key(gw)].conditions.as_ref().unwrap()[0].clone();
        (c.status, c.reason, c.last_transition_time)
    }

    /// Generations up to `applied` are programmed; generation `failed` failed.
    fn agent(applied: u64, failed: Option<u64>) -> impl Fn(u64) -> ProgrammedState {
        move |generation| {
            if generation <= applied {
                ProgrammedState::Programmed {
                    nodes: vec!["n1".into()],
                }
            } else if failed == Some(generation) {
                ProgrammedState::Failed {
                    errors: BTreeMap::from([("n1".into(), (generation, "map full".into()))]),
                }
            } else {
                ProgrammedState::Pending { waiting: vec![] }
            }
        }
    }

    #[test]
    fn a_gateway_is_pending_only_until_its_own_generation_is_applied() {
        let mut changed = ChangedIn::default();
        let g1 = published(1, vec![frontend("ns/a", 1, 1), frontend("ns/b", 2, 1)]);
        changed.observe(None, pass(&g1, &[]));
        let g2 = published(2, vec![frontend("ns/a", 1, 1), frontend("ns/b", 2, 5)]);
        changed.observe(Some(pass(&g1, &[])), pass(&g2, &[]));
        let mut gate = ProgrammedGate::default();

        // the agent runs generation 1: b waits for 2, a is untouched (no flap)
        let mut s = statuses(&["ns/a", "ns/b"]);
        gate.apply(&mut s, &changed, agent(1, None), &at(10), clock(10));
        assert_eq!(
            programmed_of(&s, "ns/a"),
            ("True".into(), "Programmed".into(), at(0))
        );
        assert_eq!(
            programmed_of(&s, "ns/b"),
            ("False".into(), "Pending".into(), at(0))
        );

        // generation 2 fails on the agent: b is Invalid, naming the node and the error
        let mut s = statuses(&["ns/a", "ns/b"]);
        gate.apply(&mut s, &changed, agent(1, Some(2)), &at(20), clock(20));
        let b = &s.gateways[&key("ns/b")].conditions.as_ref().unwrap()[0];
        assert_eq!((b.status.as_str(), b.reason.as_str()), ("False", "Invalid"));
        assert!(b.message.contains("n1: map full"), "{}", b.message);
        assert_eq!(b.last_transition_time, at(20));

        // once applied, b is True again, with the time it turned True
        let mut s = statuses(&["ns/a", "ns/b"]);
        gate.apply(&mut s, &changed, agent(2, None), &at(30), clock(30));
        assert_eq!(
            programmed_of(&s, "ns/b"),
            ("True".into(), "Programmed".into(), at(30))
        );
        let mut s = statuses(&["ns/a", "ns/b"]);
        gate.apply(&mut s, &changed, agent(2, None), &at(40), clock(40));
        assert_eq!(programmed_of(&s, "ns/b").2, at(30));
        assert_eq!(programmed_of(&s, "ns/a").2, at(0));
    }

    #[test]
    fn a_programmed_gateway_stays_true_for_the_grace_while_agents_apply_its_change() {
        let mut changed = ChangedIn::default();
        let g1 = published(1, vec![frontend("ns/a", 1, 1)]);
        changed.observe(None, pass(&g1, &[]));
        let mut gate = ProgrammedGate::with_grace(Duration::from_secs(5));

        // never reported True: Pending at once, no grace
        let mut s = statuses(&["ns/a"]);
        gate.apply(&mut s, &changed, agent(0, None), &at(0), clock(0));
        assert_eq!(programmed_of(&s, "ns/a").1, "Pending");
        assert_eq!(gate.next_deadline(clock(0)), None);
        let mut s = statuses(&["ns/a"]);
        gate.apply(&mut s, &changed, agent(1, None), &at(1), clock(1));
        assert_eq!(
            programmed_of(&s, "ns/a"),
            ("True".into(), "Programmed".into(), at(1))
        );

        // a change to a's part: True while within the grace, the writer told when to look again
        let g2 = published(2, vec![frontend("ns/a", 1, 7)]);
        changed.observe(Some(pass(&g1, &[])), pass(&g2, &[]));
        for second in [10, 14] {
            let mut s = statuses(&["ns/a"]);
            gate.apply(
                &mut s,
                &changed,
                agent(1, None),
                &at(second),
                clock(second as u64),
            );
            assert_eq!(
                programmed_of(&s, "ns/a"),
                ("True".into(), "Programmed".into(), at(1))
            );
        }
        assert_eq!(gate.next_deadline(clock(14)), Some(clock(15)));

        // applied within the grace: still True, nothing left to wait for
        let mut s = statuses(&["ns/a"]);
        gate.apply(&mut s, &changed, agent(2, None), &at(14), clock(14));
        assert_eq!(programmed_of(&s, "ns/a").0, "True");
        assert_eq!(gate.next_deadline(clock(14)), None);

        // the next change is not applied within the grace: Pending once it has passed
        let g3 = published(3, vec![frontend("ns/a", 1, 9)]);
        changed.observe(Some(pass(&g2, &[])), pass(&g3, &[]));
        let mut s = statuses(&["ns/a"]);
        gate.apply(&mut s, &changed, agent(2, None), &at(20), clock(20));
        assert_eq!(programmed_of(&s, "ns/a").0, "True");
        let mut s = statuses(&["ns/a"]);
        gate.apply(&mut s, &changed, agent(2, None), &at(25), clock(25));
        assert_eq!(
            programmed_of(&s, "ns/a"),
            ("False".into(), "Pending".into(), at(25))
        );
        assert_eq!(gate.next_deadline(clock(25)), None);

        // a failure is reported at once, grace or not
        let mut s = statuses(&["ns/a"]);
        gate.apply(&mut s, &changed, agent(3, None), &at(30), clock(30));
        assert_eq!(programmed_of(&s, "ns/a").0, "True");
        let g4 = published(4, vec![frontend("ns/a", 1, 11)]);
        changed.observe(Some(pass(&g3, &[])), pass(&g4, &[]));
        let mut s = statuses(&["ns/a"]);
        gate.apply(&mut s, &changed, agent(3, Some(4)), &at(31), clock(31));
        assert_eq!(programmed_of(&s, "ns/a").1, "Invalid");
    }
}
