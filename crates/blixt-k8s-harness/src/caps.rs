//! Linux capabilities as containerd's CRI plugin gives them to a container: its default set,
//! `securityContext.capabilities.add` and `.drop` (`ALL` in either), everything for
//! `privileged`. The node agent applies the result as the process's bounding set (see
//! `sys::isolate`): a root process then runs with exactly these capabilities, a non-root one with
//! none (as under containerd, which sets no ambient capabilities).

use k8s_openapi::api::core::v1::SecurityContext;

/// Capability names by number (`linux/capability.h`, without `CAP_`).
const NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// containerd's default capabilities (`oci.defaultUnixCaps`).
const DEFAULT: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

const ALL: u64 = (1 << NAMES.len()) - 1;

/// What a container's process may do beyond its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Privileges {
    /// The bounding set, bit `n` for capability `n`; `None` keeps every capability the kernel
    /// has (`privileged`).
    pub(crate) bounding: Option<u64>,
    /// `allowPrivilegeEscalation: false`: `PR_SET_NO_NEW_PRIVS`.
    pub(crate) no_new_privs: bool,
}

fn bit(name: &str) -> Result<u64, String> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    NAMES
        .iter()
        .position(|n| *n == bare)
        .map(|i| 1 << i)
        .ok_or_else(|| format!("securityContext.capabilities: unknown capability {name:?}"))
}

/// The privileges of a container with `security` (its own securityContext), in containerd's
/// order: the default set, `add: [ALL]`, `drop: [ALL]`, then each added and each dropped name
/// (so a name both added and dropped is dropped). An unknown name is an error (runc would
/// ignore it with a warning).
pub(crate) fn privileges(security: Option<&SecurityContext>) -> Result<Privileges, String> {
    let no_new_privs = security.and_then(|s| s.allow_privilege_escalation) == Some(false);
    if security.and_then(|s| s.privileged) == Some(true) {
        return Ok(Privileges {
            bounding: None,
            no_new_privs,
        });
    }
    let mut set = DEFAULT
        .iter()
        .try_fold(0, |set, n| bit(n).map(|b| set | b))?;
    let capabilities = security.and_then(|s| s.capabilities.as_ref());
    let add = capabilities
        .and_then(|c| c.add.as_deref())
        .unwrap_or_default();
    let drop = capabilities
        .and_then(|c| c.drop.as_deref())
        .unwrap_or_default();
    let is_all = |name: &String| name.eq_ignore_ascii_case("ALL");
    if add.iter().any(is_all) {
        set = ALL;
    }
    if drop.iter().any(is_all) {
        set = 0;
    }
    for name in add.iter().filter(|n| !is_all(n)) {
        set |= bit(name)?;
    }
    for name in drop.iter().filter(|n| !is_all(n)) {
        set &= !bit(name)?;
    }
    Ok(Privileges {
        bounding: Some(set),
        no_new_privs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(json: serde_json::Value) -> Result<Privileges, String> {
        let security: SecurityContext = serde_json::from_value(json).unwrap();
        privileges(Some(&security))
    }

    #[test]
    fn containerd_defaults_adds_and_drops() {
        let default = privileges(None).unwrap();
        // CapBnd of a default containerd container: 00000000a80425fb.
        assert_eq!(default.bounding, Some(0xa80425fb));
        assert!(!default.no_new_privs);
        let agent = of(serde_json::json!({
            "allowPrivilegeEscalation": false,
            "capabilities": { "drop": ["ALL"], "add": ["NET_ADMIN", "bpf", "CAP_PERFMON"] },
        }))
        .unwrap();
        assert_eq!(agent.bounding, Some(1 << 12 | 1 << 39 | 1 << 38));
        assert!(agent.no_new_privs);
        let everything_but = of(serde_json::json!({
            "capabilities": { "add": ["ALL"], "drop": ["SYS_ADMIN", "NET_ADMIN"] },
        }))
        .unwrap();
        assert_eq!(everything_but.bounding, Some(ALL & !(1 << 21) & !(1 << 12)));
        let dropped_wins = of(serde_json::json!({
            "capabilities": { "add": ["NET_ADMIN"], "drop": ["NET_ADMIN", "KILL"] },
        }))
        .unwrap();
        assert_eq!(dropped_wins.bounding, Some(0xa80425fb & !(1 << 5)));
        let privileged = of(serde_json::json!({ "privileged": true })).unwrap();
        assert_eq!(privileged.bounding, None);
        let error = of(serde_json::json!({ "capabilities": { "add": ["NET_ADMN"] } })).unwrap_err();
        assert!(error.contains("NET_ADMN"), "{error}");
    }
}
