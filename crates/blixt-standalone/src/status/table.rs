//! `kubectl get`-style tables.
//!
//! A condition cell shows the condition's status alone when its reason is the usual one for
//! that status (`True` for Accepted/Accepted, `False` for Conflicted/NoConflicts) and
//! `STATUS/REASON` otherwise (`False/BackendNotFound`, `True/ListenersNotValid`), so anything
//! unusual stands out; `-` means the condition is absent. The wide form adds the messages of
//! the unusual conditions and what the objects ask for (hostnames, backends, generations).

use blixt_core::translator::conditions::{condition_type as ct, reason};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};

use super::{StatusItem, StatusReport};

struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(header: Vec<&'static str>) -> Self {
        Table {
            header,
            rows: Vec::new(),
        }
    }

    /// Columns padded to their widest cell, three spaces apart, no trailing blanks.
    fn write(&self, out: &mut String) {
        let cols = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let header: Vec<String> = self.header.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate().take(cols) {
                line.push_str(cell);
                if i + 1 < cols {
                    let pad = widths[i] - cell.chars().count() + 3;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
}

fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether a condition says what it says when all is well.
fn usual(c: &Condition) -> bool {
    (c.status == "True" && c.reason == c.type_)
        || (c.type_ == ct::CONFLICTED && c.status == "False" && c.reason == reason::NO_CONFLICTS)
}

fn cell(conditions: &[Condition], type_: &str) -> String {
    match find(conditions, type_) {
        None => "-".to_string(),
        Some(c) if usual(c) => c.status.clone(),
        Some(c) => format!("{}/{}", c.status, c.reason),
    }
}

/// Messages of the unusual conditions among `types`, `Type: message; ...`, or `-`.
fn messages(conditions: &[Condition], types: &[&str]) -> String {
    let parts: Vec<String> = types
        .iter()
        .filter_map(|t| find(conditions, t))
        .filter(|c| !usual(c) && !c.message.is_empty())
        .map(|c| format!("{}: {}", c.type_, c.message))
        .collect();
    if parts.is_empty() {
        "-".to_string()
    } else {
        parts.join("; ")
    }
}

fn name_of(meta: &ObjectMeta) -> String {
    let name = meta.name.as_deref().unwrap_or_default();
    match &meta.namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

fn generation(meta: &ObjectMeta) -> String {
    meta.generation.map_or("-".to_string(), |g| g.to_string())
}

fn dash_if_empty(s: String) -> String {
    if s.is_empty() {
        "-".to_string()
    } else {
        s
    }
}

/// Route backendRefs as `name:port (weight N)`, namespace-qualified when not the route's.
fn backends<'a>(
    route_ns: &str,
    refs: impl Iterator<Item = (&'a str, Option<&'a str>, Option<i32>, Option<i32>)>,
) -> String {
    let list: Vec<String> = refs
        .map(|(name, ns, port, weight)| {
            let who = match ns {
                Some(ns) if ns != route_ns => format!("{ns}/{name}"),
                _ => name.to_string(),
            };
            let port = port.map_or("-".to_string(), |p| p.to_string());
            format!("{who}:{port} (weight {})", weight.unwrap_or(1))
        })
        .collect();
    dash_if_empty(list.join(", "))
}

/// The report as tables: GatewayClasses, Gateways, listeners, routes, and ignored objects;
/// `wide` adds columns. Ends with a newline.
pub fn render_table(report: &StatusReport, wide: bool) -> String {
    let mut classes = Table::new(if wide {
        vec!["GATEWAYCLASS", "CONTROLLER", "ACCEPTED", "GEN", "MESSAGE"]
    } else {
        vec!["GATEWAYCLASS", "CONTROLLER", "ACCEPTED"]
    });
    let mut gateways = Table::new(if wide {
        vec![
            "GATEWAY",
            "CLASS",
            "ADDRESSES",
            "ACCEPTED",
            "PROGRAMMED",
            "GEN",
            "MESSAGE",
        ]
    } else {
        vec!["GATEWAY", "CLASS", "ADDRESSES", "ACCEPTED", "PROGRAMMED"]
    });
    let mut listeners = Table::new({
        let mut h = vec![
            "LISTENER",
            "PROTOCOL",
            "PORT",
            "ROUTES",
            "ACCEPTED",
            "PROGRAMMED",
            "RESOLVEDREFS",
            "CONFLICTED",
        ];
        if wide {
            h.extend(["HOSTNAME", "KINDS", "MESSAGE"]);
        }
        h
    });
    let mut routes = Table::new(if wide {
        vec![
            "ROUTE",
            "PARENT",
            "ACCEPTED",
            "RESOLVEDREFS",
            "HOSTNAMES",
            "BACKENDS",
            "GEN",
            "MESSAGE",
        ]
    } else {
        vec!["ROUTE", "PARENT", "ACCEPTED", "RESOLVEDREFS"]
    });

    for item in &report.items {
        match item {
            StatusItem::GatewayClass(gc) => {
                let conds = gc
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_deref())
                    .unwrap_or_default();
                let mut row = vec![
                    name_of(&gc.metadata),
                    gc.spec.controller_name.clone(),
                    cell(conds, ct::ACCEPTED),
                ];
                if wide {
                    row.push(generation(&gc.metadata));
                    row.push(messages(conds, &[ct::ACCEPTED]));
                }
                classes.rows.push(row);
            }
            StatusItem::Gateway(g) => {
                let status = g.status.clone().unwrap_or_default();
                let conds = status.conditions.as_deref().unwrap_or_default();
                let addresses: Vec<&str> = status
                    .addresses
                    .iter()
                    .flatten()
                    .map(|a| a.value.as_str())
                    .collect();
                let gw = name_of(&g.metadata);
                let mut row = vec![
                    gw.clone(),
                    g.spec.gateway_class_name.clone(),
                    dash_if_empty(addresses.join(",")),
                    cell(conds, ct::ACCEPTED),
                    cell(conds, ct::PROGRAMMED),
                ];
                if wide {
                    row.push(generation(&g.metadata));
                    row.push(messages(conds, &[ct::ACCEPTED, ct::PROGRAMMED]));
                }
                gateways.rows.push(row);

                for l in status.listeners.iter().flatten() {
                    let spec = g.spec.listeners.iter().find(|s| s.name == l.name);
                    let lc = &l.conditions;
                    let mut row = vec![
                        format!("{gw}/{}", l.name),
                        spec.map_or("-".to_string(), |s| s.protocol.clone()),
                        spec.map_or("-".to_string(), |s| s.port.to_string()),
                        l.attached_routes.to_string(),
                        cell(lc, ct::ACCEPTED),
                        cell(lc, ct::PROGRAMMED),
                        cell(lc, ct::RESOLVED_REFS),
                        cell(lc, ct::CONFLICTED),
                    ];
                    if wide {
                        row.push(
                            spec.and_then(|s| s.hostname.clone())
                                .unwrap_or_else(|| "-".to_string()),
                        );
                        let kinds: Vec<&str> = l
                            .supported_kinds
                            .iter()
                            .flatten()
                            .map(|k| k.kind.as_str())
                            .collect();
                        row.push(dash_if_empty(kinds.join(",")));
                        row.push(messages(
                            lc,
                            &[
                                ct::ACCEPTED,
                                ct::PROGRAMMED,
                                ct::RESOLVED_REFS,
                                ct::CONFLICTED,
                            ],
                        ));
                    }
                    listeners.rows.push(row);
                }
            }
            StatusItem::TcpRoute(_) | StatusItem::UdpRoute(_) | StatusItem::TlsRoute(_) => {
                route_rows(item, wide, &mut routes.rows);
            }
        }
    }

    let mut out = String::new();
    for t in [&classes, &gateways, &listeners, &routes] {
        if t.rows.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        t.write(&mut out);
    }
    if out.is_empty() {
        out.push_str("No Blixt objects found.\n");
    }
    if !report.ignored.is_empty() {
        let mut ignored = Table::new(vec!["IGNORED", "REASON"]);
        for i in &report.ignored {
            let who = match &i.namespace {
                Some(ns) => format!("{} {ns}/{}", i.kind, i.name),
                None => format!("{} {}", i.kind, i.name),
            };
            ignored.rows.push(vec![who, i.reason.clone()]);
        }
        out.push('\n');
        ignored.write(&mut out);
    }
    out
}

/// One row per Blixt parent of a route (one row with dashes when it has none left).
fn route_rows(item: &StatusItem, wide: bool, rows: &mut Vec<Vec<String>>) {
    macro_rules! parts {
        ($r:expr, $hostnames:expr) => {{
            let r = $r;
            let ns = r.metadata.namespace.clone().unwrap_or_default();
            let parents: Vec<(String, Vec<Condition>)> = r
                .status
                .iter()
                .flat_map(|s| s.parents.iter())
                .map(|p| {
                    let pr = &p.parent_ref;
                    let mut label =
                        format!("{}/{}", pr.namespace.as_deref().unwrap_or(&ns), pr.name);
                    if let Some(section) = &pr.section_name {
                        label.push('/');
                        label.push_str(section);
                    }
                    if let Some(port) = pr.port {
                        label.push_str(&format!(":{port}"));
                    }
                    (label, p.conditions.clone())
                })
                .collect();
            let backends = backends(
                &ns,
                r.spec.rules.iter().flat_map(|rule| {
                    rule.backend_refs
                        .iter()
                        .map(|b| (b.name.as_str(), b.namespace.as_deref(), b.port, b.weight))
                }),
            );
            let hostnames: Vec<String> = $hostnames;
            (
                &r.metadata,
                parents,
                backends,
                dash_if_empty(hostnames.join(",")),
            )
        }};
    }
    let (meta, parents, backends, hostnames) = match item {
        StatusItem::TcpRoute(r) => parts!(r, Vec::new()),
        StatusItem::UdpRoute(r) => parts!(r, Vec::new()),
        StatusItem::TlsRoute(r) => parts!(r, r.spec.hostnames.clone()),
        StatusItem::GatewayClass(_) | StatusItem::Gateway(_) => return,
    };
    let route = format!("{} {}", item.kind(), name_of(meta));
    let mut push = |parent: String, conds: &[Condition], none: bool| {
        let dash = || "-".to_string();
        let mut row = vec![
            route.clone(),
            parent,
            if none {
                dash()
            } else {
                cell(conds, ct::ACCEPTED)
            },
            if none {
                dash()
            } else {
                cell(conds, ct::RESOLVED_REFS)
            },
        ];
        if wide {
            row.push(hostnames.clone());
            row.push(backends.clone());
            row.push(generation(meta));
            row.push(if none {
                "no parent of Blixt's".to_string()
            } else {
                messages(conds, &[ct::ACCEPTED, ct::RESOLVED_REFS])
            });
        }
        rows.push(row);
    };
    if parents.is_empty() {
        push("-".to_string(), &[], true);
    }
    for (label, conds) in &parents {
        push(label.clone(), conds, false);
    }
}
