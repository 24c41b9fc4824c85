//! [`Veth`]: a veth pair between two namespaces, deleted when dropped.

use anyhow::{Context, Result};

use crate::netns::{run_ip, NetNs, MAX_NAME_LEN};

/// A veth pair whose ends are created directly inside two namespaces (never in the host's,
/// so names cannot clash with host interfaces and nothing leaks into the host if a run dies).
///
/// Dropping it deletes the pair (deleting one end removes both). Deleting either namespace
/// removes it too, so a guard outliving its namespaces is harmless.
#[derive(Debug)]
pub struct Veth {
    a_ns: String,
    a_name: String,
    b_ns: String,
    b_name: String,
}

impl Veth {
    /// Creates `a_name` in `a` paired with `b_name` in `b`. Both ends are left down.
    pub fn create(a: &NetNs, a_name: &str, b: &NetNs, b_name: &str) -> Result<Self> {
        for name in [a_name, b_name] {
            anyhow::ensure!(
                !name.is_empty() && name.len() <= MAX_NAME_LEN,
                "interface name {name:?} must be 1 to {MAX_NAME_LEN} characters"
            );
        }
        run_ip(&[
            "link",
            "add",
            "name",
            a_name,
            "netns",
            a.name(),
            "type",
            "veth",
            "peer",
            "name",
            b_name,
            "netns",
            b.name(),
        ])
        .with_context(|| {
            format!(
                "creating veth {}:{a_name} <-> {}:{b_name}",
                a.name(),
                b.name()
            )
        })?;
        Ok(Veth {
            a_ns: a.name().to_string(),
            a_name: a_name.to_string(),
            b_ns: b.name().to_string(),
            b_name: b_name.to_string(),
        })
    }

    /// `(namespace, interface)` of the first end.
    pub fn a(&self) -> (&str, &str) {
        (&self.a_ns, &self.a_name)
    }

    /// `(namespace, interface)` of the second end.
    pub fn b(&self) -> (&str, &str) {
        (&self.b_ns, &self.b_name)
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        // Either end's deletion removes the pair; the namespace may already be gone, in which
        // case so is the pair.
        if run_ip(&["-n", &self.a_ns, "link", "del", "dev", &self.a_name]).is_err() {
            let _ = run_ip(&["-n", &self.b_ns, "link", "del", "dev", &self.b_name]);
        }
    }
}
