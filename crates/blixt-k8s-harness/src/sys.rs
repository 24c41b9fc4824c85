//! The system calls of the node agent: putting a container's process into its pod (network
//! namespace, private mount and UTS namespaces, volume mounts, capabilities, user) between fork
//! and exec,
//! signalling process groups, and a file lock. Everything `unsafe` of the agent is here.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result};

use crate::caps::Privileges;

/// What a container's mount namespace gets, applied in this order: overlays (so that missing
/// mount points can be created without touching the host), directories and empty files to
/// mount on, then the bind mounts.
#[derive(Debug, Default)]
pub(crate) struct MountPlan {
    pub(crate) overlays: Vec<Overlay>,
    pub(crate) mkdirs: Vec<PathBuf>,
    pub(crate) files: Vec<PathBuf>,
    pub(crate) binds: Vec<Bind>,
}

/// An overlay of `target` over itself with a private upper layer.
#[derive(Debug)]
pub(crate) struct Overlay {
    pub(crate) target: PathBuf,
    pub(crate) upper: PathBuf,
    pub(crate) work: PathBuf,
}

#[derive(Debug)]
pub(crate) struct Bind {
    pub(crate) source: PathBuf,
    pub(crate) target: PathBuf,
    pub(crate) read_only: bool,
}

/// Where and as whom a container's process runs.
#[derive(Debug)]
pub(crate) struct Isolation {
    /// The network namespace to enter (`/run/netns/<name>`).
    pub(crate) netns: PathBuf,
    pub(crate) hostname: String,
    pub(crate) mounts: MountPlan,
    pub(crate) working_dir: PathBuf,
    /// `(uid, gid)`; root when `None`.
    pub(crate) user: Option<(u32, u32)>,
    /// The capability bounding set and `no_new_privs`.
    pub(crate) privileges: Privileges,
}

enum Step {
    Mount {
        source: Option<CString>,
        target: CString,
        fstype: Option<CString>,
        flags: libc::c_ulong,
        data: Option<CString>,
    },
    Mkdir(CString),
    Touch(CString),
}

fn c_path(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .with_context(|| format!("{} contains a NUL byte", path.display()))
}

/// Makes `command` enter the pod between fork and exec: the network namespace, new mount and
/// UTS namespaces (mounts made there never reach the host: `/` is made private first), the
/// hostname, the mounts, the working directory, the capability bounding set (every capability
/// not in `privileges` dropped, the ambient set cleared; `no_new_privs`), then the user. A root
/// process thus execs with exactly the allowed capabilities. A failing step writes its name to
/// the process's stderr (the container log) and fails the spawn with its errno.
pub(crate) fn isolate(command: &mut Command, isolation: Isolation) -> Result<()> {
    let netns = File::open(&isolation.netns)
        .with_context(|| format!("opening {}", isolation.netns.display()))?;
    let mut hostname = isolation.hostname.into_bytes();
    hostname.truncate(63);
    let mut steps = vec![Step::Mount {
        source: None,
        target: c"/".to_owned(),
        fstype: None,
        flags: libc::MS_REC | libc::MS_PRIVATE,
        data: None,
    }];
    for overlay in &isolation.mounts.overlays {
        let data = format!(
            "lowerdir={},upperdir={},workdir={}",
            overlay.target.display(),
            overlay.upper.display(),
            overlay.work.display()
        );
        anyhow::ensure!(
            !data.contains(['\\', ':']) && data.matches(',').count() == 2,
            "overlay paths may not contain ',', ':' or '\\': {data}"
        );
        steps.push(Step::Mount {
            source: Some(c"overlay".to_owned()),
            target: c_path(&overlay.target)?,
            fstype: Some(c"overlay".to_owned()),
            flags: 0,
            data: Some(CString::new(data)?),
        });
    }
    for dir in &isolation.mounts.mkdirs {
        steps.push(Step::Mkdir(c_path(dir)?));
    }
    for file in &isolation.mounts.files {
        steps.push(Step::Touch(c_path(file)?));
    }
    for bind in &isolation.mounts.binds {
        let target = c_path(&bind.target)?;
        steps.push(Step::Mount {
            source: Some(c_path(&bind.source)?),
            target: target.clone(),
            fstype: None,
            flags: libc::MS_BIND | libc::MS_REC,
            data: None,
        });
        if bind.read_only {
            steps.push(Step::Mount {
                source: None,
                target,
                fstype: None,
                flags: libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                data: None,
            });
        }
    }
    let working_dir = c_path(&isolation.working_dir)?;
    let user = isolation.user;
    let privileges = isolation.privileges;
    let last_cap = last_capability()?;

    // SAFETY: the closure runs in the child between fork and exec. It only makes system calls
    // that are async-signal-safe (setns, unshare, mount, mkdir, open, close, sethostname, chdir,
    // prctl, setgroups, setgid, setuid, write) on data prepared before the fork, and builds
    // errors from errno without allocating.
    unsafe {
        command.pre_exec(move || {
            if libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(failed(b"setns(CLONE_NEWNET)", None));
            }
            if libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS) != 0 {
                return Err(failed(b"unshare(CLONE_NEWNS|CLONE_NEWUTS)", None));
            }
            if libc::sethostname(hostname.as_ptr().cast(), hostname.len()) != 0 {
                return Err(failed(b"sethostname", None));
            }
            for step in &steps {
                match step {
                    Step::Mount {
                        source,
                        target,
                        fstype,
                        flags,
                        data,
                    } => {
                        let ptr = |s: &Option<CString>| {
                            s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr())
                        };
                        if libc::mount(
                            ptr(source),
                            target.as_ptr(),
                            ptr(fstype),
                            *flags,
                            ptr(data).cast(),
                        ) != 0
                        {
                            return Err(failed(b"mount", Some(target)));
                        }
                    }
                    Step::Mkdir(dir) => {
                        if libc::mkdir(dir.as_ptr(), 0o755) != 0
                            && io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST)
                        {
                            return Err(failed(b"mkdir", Some(dir)));
                        }
                    }
                    Step::Touch(file) => {
                        let fd = libc::open(
                            file.as_ptr(),
                            libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                            0o644,
                        );
                        if fd < 0 {
                            return Err(failed(b"creating mount point", Some(file)));
                        }
                        libc::close(fd);
                    }
                }
            }
            if libc::chdir(working_dir.as_ptr()) != 0 {
                return Err(failed(b"chdir", Some(&working_dir)));
            }
            // The bounding set limits what the exec'd program gets; the current (root)
            // credentials keep CAP_SETPCAP, CAP_SETUID and CAP_SETGID for the steps below.
            // prctl is variadic: every argument is passed as the unsigned long the kernel reads.
            const NONE: libc::c_ulong = 0;
            if let Some(keep) = privileges.bounding {
                for cap in 0..=last_cap {
                    let kept = cap < 64 && keep & (1u64 << cap) != 0;
                    if !kept
                        && libc::prctl(
                            libc::PR_CAPBSET_DROP,
                            libc::c_ulong::from(cap),
                            NONE,
                            NONE,
                            NONE,
                        ) != 0
                    {
                        return Err(failed(b"prctl(PR_CAPBSET_DROP)", None));
                    }
                }
                let clear = libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong;
                if libc::prctl(libc::PR_CAP_AMBIENT, clear, NONE, NONE, NONE) != 0 {
                    return Err(failed(b"prctl(PR_CAP_AMBIENT_CLEAR_ALL)", None));
                }
            }
            if privileges.no_new_privs
                && libc::prctl(
                    libc::PR_SET_NO_NEW_PRIVS,
                    1 as libc::c_ulong,
                    NONE,
                    NONE,
                    NONE,
                ) != 0
            {
                return Err(failed(b"prctl(PR_SET_NO_NEW_PRIVS)", None));
            }
            if let Some((uid, gid)) = user {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(failed(b"setting the user", None));
                }
            }
            Ok(())
        });
    }
    Ok(())
}

/// The highest capability number the kernel knows (`/proc/sys/kernel/cap_last_cap`).
fn last_capability() -> Result<u32> {
    const PATH: &str = "/proc/sys/kernel/cap_last_cap";
    let text = std::fs::read_to_string(PATH).with_context(|| format!("reading {PATH}"))?;
    text.trim()
        .parse()
        .with_context(|| format!("{PATH} holds {text:?}, not a number"))
}

/// Reports a failed setup step on stderr (the container log) and returns errno as an error.
/// Async-signal-safe: no allocation.
fn failed(step: &[u8], path: Option<&CStr>) -> io::Error {
    let error = io::Error::last_os_error();
    let write = |bytes: &[u8]| {
        // SAFETY: writes a valid byte slice to fd 2; the result is deliberately ignored.
        unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
    };
    write(b"blixt-k8s-harness: container setup failed: ");
    write(step);
    if let Some(path) = path {
        write(b" ");
        write(path.to_bytes());
    }
    write(b"\n");
    error
}

/// Sends `signal` to the process group `pgid` (the containers run in groups of their own).
pub(crate) fn signal_group(pgid: u32, signal: libc::c_int) -> io::Result<()> {
    let pgid = libc::pid_t::try_from(pgid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    // SAFETY: kill has no memory-safety preconditions; a negative pid addresses a group.
    if unsafe { libc::kill(-pgid, signal) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Takes an exclusive `flock` on `file`, waiting for it; released when the file closes.
pub(crate) fn lock_exclusive(file: &File) -> io::Result<()> {
    // SAFETY: flock on a descriptor `file` keeps open for the whole call.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
