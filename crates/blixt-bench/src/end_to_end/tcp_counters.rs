//! The kernel's TCP counters (`/proc/net/netstat`, `/proc/net/snmp`) of the lab's namespaces
//! around a run: what a system's short-connection rate cannot show by itself — SYNs sent again
//! because the first went unanswered, SYNs a backend refused because an older connection of
//! the same four-tuple was still in TIME_WAIT with a newer timestamp (PAWS), TIME_WAIT sockets
//! the table had no room for. They explain a round that is far slower than its neighbours.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use blixt_lab::netns::NetNs;

/// Counters worth a line in the report, as `Group:Name` of /proc/net/{netstat,snmp}.
pub const WATCHED: [&str; 11] = [
    "Tcp:ActiveOpens",
    "Tcp:PassiveOpens",
    "Tcp:AttemptFails",
    "Tcp:RetransSegs",
    "TcpExt:TCPSynRetrans",
    "TcpExt:PAWSActive",
    "TcpExt:PAWSEstab",
    "TcpExt:PAWSTimewait",
    "TcpExt:TW",
    "TcpExt:TCPTimeWaitOverflow",
    "TcpExt:TWRecycled",
];

/// One namespace's counters, `Group:Name` → value.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TcpCounters(pub BTreeMap<String, u64>);

impl TcpCounters {
    /// Reads `ns`'s counters.
    pub fn read(ns: &NetNs) -> Result<TcpCounters> {
        let mut all = BTreeMap::new();
        for file in ["/proc/net/netstat", "/proc/net/snmp"] {
            let text = ns
                .exec(&["cat", file])
                .with_context(|| format!("reading {file} in {}", ns.name()))?;
            all.extend(parse(&text));
        }
        Ok(TcpCounters(all))
    }

    /// What moved since `before`, watched counters only.
    pub fn since(&self, before: &TcpCounters) -> TcpCounters {
        TcpCounters(
            WATCHED
                .iter()
                .filter_map(|k| {
                    let now = *self.0.get(*k)?;
                    let was = before.0.get(*k).copied().unwrap_or(0);
                    Some(((*k).to_string(), now.saturating_sub(was)))
                })
                .collect(),
        )
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &TcpCounters) {
        for (k, v) in &other.0 {
            *self.0.entry(k.clone()).or_default() += v;
        }
    }

    pub fn get(&self, key: &str) -> u64 {
        self.0.get(key).copied().unwrap_or(0)
    }
}

/// `Group: name name …` / `Group: value value …` line pairs into `Group:name` → value.
pub fn parse(text: &str) -> BTreeMap<String, u64> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = BTreeMap::new();
    for pair in lines.chunks(2) {
        let [names, values] = pair else { continue };
        let (Some((group, names)), Some((vgroup, values))) =
            (names.split_once(':'), values.split_once(':'))
        else {
            continue;
        };
        if group != vgroup {
            continue;
        }
        for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
            // negative values exist in /proc/net/snmp (Tcp:MaxConn = -1): not counters
            if let Ok(v) = v.parse::<u64>() {
                out.insert(format!("{group}:{n}"), v);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_of_lines_become_group_and_name() {
        let text = "TcpExt: SyncookiesSent PAWSActive\nTcpExt: 0 7\n\
                    IpExt: InNoRoutes\nIpExt: 3\n\
                    Tcp: RtoAlgorithm MaxConn ActiveOpens\nTcp: 1 -1 42\n";
        let m = parse(text);
        assert_eq!(m["TcpExt:PAWSActive"], 7);
        assert_eq!(m["IpExt:InNoRoutes"], 3);
        assert_eq!(m["Tcp:ActiveOpens"], 42);
        assert!(!m.contains_key("Tcp:MaxConn"));
        let before = TcpCounters(m.clone());
        let mut after = m;
        after.insert("Tcp:ActiveOpens".into(), 50);
        let d = TcpCounters(after).since(&before);
        assert_eq!(d.get("Tcp:ActiveOpens"), 8);
        assert_eq!(d.get("TcpExt:PAWSActive"), 0);
        assert!(
            !d.0.contains_key("IpExt:InNoRoutes"),
            "only watched counters"
        );
    }
}
