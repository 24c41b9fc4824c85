//! `blixt-lab`: the network-namespace lab's servers and clients as commands, for the demo,
//! benchmarks and scripts. Run the servers and clients inside a lab namespace
//! (`ip netns exec <ns> blixt-lab ...`); every command prints JSON on stdout.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use blixt_lab::{
    tcp_burst, udp_flows, EchoConfig, EchoReady, EchoServer, Lab, LabSpec, LongLived, UdpOptions,
    DEFAULT_PREFIX,
};
use clap::{Parser, Subcommand};

/// The network-namespace lab's servers and clients.
#[derive(Debug, Parser)]
#[command(name = "blixt-lab", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Serve TCP and UDP echo until SIGINT/SIGTERM; prints a `ready` line once bound.
    Echo {
        /// Name reported in every answer (the backend's name).
        #[arg(long)]
        name: String,
        /// TCP port.
        #[arg(long, default_value_t = 8080)]
        tcp_port: u16,
        /// UDP port.
        #[arg(long, default_value_t = 8080)]
        udp_port: u16,
        /// Do not serve TCP.
        #[arg(long)]
        no_tcp: bool,
        /// Do not serve UDP.
        #[arg(long)]
        no_udp: bool,
    },
    /// Open many short TCP connections (connect, one request, close) and print a report.
    TcpBurst {
        /// Address to connect to, e.g. 10.99.100.1:80 or [fd99:100::1]:80.
        #[arg(long)]
        target: SocketAddr,
        /// Number of connections.
        #[arg(long, default_value_t = 100)]
        conns: usize,
        /// Connections in flight at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Timeout of each step, in milliseconds.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
        /// Include every connection in the report.
        #[arg(long)]
        per_flow: bool,
        /// Exit with status 1 unless every connection succeeded.
        #[arg(long)]
        strict: bool,
    },
    /// Run UDP flows, each from its own source port, and print a report.
    UdpFlows {
        /// Address to send to.
        #[arg(long)]
        target: SocketAddr,
        /// Number of flows.
        #[arg(long, default_value_t = 100)]
        flows: usize,
        /// Flows in flight at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// How long to wait for each answer before re-sending, in milliseconds.
        #[arg(long, default_value_t = 500)]
        timeout_ms: u64,
        /// Re-sends after a timeout.
        #[arg(long, default_value_t = 3)]
        retries: u32,
        /// Datagrams per flow.
        #[arg(long, default_value_t = 1)]
        datagrams_per_flow: u32,
        /// Include every flow in the report.
        #[arg(long)]
        per_flow: bool,
        /// Exit with status 1 unless every flow succeeded.
        #[arg(long)]
        strict: bool,
    },
    /// Keep TCP connections exchanging messages until the duration ends or SIGINT/SIGTERM;
    /// prints a `started` line, then the report as the last line.
    LongLived {
        /// Address to connect to.
        #[arg(long)]
        target: SocketAddr,
        /// Number of connections.
        #[arg(long, default_value_t = 10)]
        conns: usize,
        /// Pause between messages on each connection, in milliseconds.
        #[arg(long, default_value_t = 100)]
        interval_ms: u64,
        /// Longest wait for an answer, in milliseconds.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
        /// How long to run, in milliseconds (0: until a signal).
        #[arg(long, default_value_t = 0)]
        duration_ms: u64,
        /// Exit with status 1 if any connection broke.
        #[arg(long)]
        strict: bool,
    },
    /// Build a lab, print its description, and keep it until SIGINT/SIGTERM.
    Up {
        /// Number of backends.
        #[arg(long, default_value_t = 2)]
        backends: usize,
        /// Namespace name prefix.
        #[arg(long, default_value = DEFAULT_PREFIX)]
        prefix: String,
    },
    /// Remove namespaces left by crashed runs (those whose creating process is gone).
    Cleanup {
        /// Namespace name prefix.
        #[arg(long, default_value = DEFAULT_PREFIX)]
        prefix: String,
    },
}

fn main() -> Result<()> {
    // Blocked before any thread exists, so every thread inherits the mask and the signals
    // wait for `sigtimedwait` in `wait_signal`.
    signals::block_shutdown_signals()?;
    let cli = Cli::parse();
    match cli.command {
        Cmd::Echo {
            name,
            tcp_port,
            udp_port,
            no_tcp,
            no_udp,
        } => {
            let server = EchoServer::start(EchoConfig {
                name: name.clone(),
                tcp_port: (!no_tcp).then_some(tcp_port),
                udp_port: (!no_udp).then_some(udp_port),
            })?;
            print_json(&EchoReady {
                event: "ready".into(),
                name,
                tcp_port: server.tcp_port(),
                udp_port: server.udp_port(),
            })?;
            signals::wait_signal(None)?;
            server.stop();
        }
        Cmd::TcpBurst {
            target,
            conns,
            concurrency,
            timeout_ms,
            per_flow,
            strict,
        } => {
            let mut report = tcp_burst(
                target,
                conns,
                concurrency,
                Duration::from_millis(timeout_ms),
            )?;
            if !per_flow {
                report.flows.clear();
            }
            print_json(&report)?;
            if strict && !report.all_ok() {
                std::process::exit(1);
            }
        }
        Cmd::UdpFlows {
            target,
            flows,
            concurrency,
            timeout_ms,
            retries,
            datagrams_per_flow,
            per_flow,
            strict,
        } => {
            let opts = UdpOptions {
                concurrency,
                timeout: Duration::from_millis(timeout_ms),
                retries,
                datagrams_per_flow,
            };
            let mut report = udp_flows(target, flows, &opts)?;
            if !per_flow {
                report.flows.clear();
            }
            print_json(&report)?;
            if strict && !report.all_ok() {
                std::process::exit(1);
            }
        }
        Cmd::LongLived {
            target,
            conns,
            interval_ms,
            timeout_ms,
            duration_ms,
            strict,
        } => {
            let ll = LongLived::start(
                target,
                conns,
                Duration::from_millis(interval_ms),
                Duration::from_millis(timeout_ms),
            )?;
            print_json(&serde_json::json!({ "event": "started", "conns": conns }))?;
            signals::wait_signal((duration_ms > 0).then(|| Duration::from_millis(duration_ms)))?;
            let report = ll.stop();
            print_json(&report)?;
            if strict && report.broken > 0 {
                std::process::exit(1);
            }
        }
        Cmd::Up { backends, prefix } => {
            let lab = Lab::build(LabSpec {
                backends,
                prefix,
                ..LabSpec::default()
            })?;
            print_json(&lab.info())?;
            signals::wait_signal(None)?;
            drop(lab);
        }
        Cmd::Cleanup { prefix } => {
            let removed = Lab::cleanup_stale(&prefix)?;
            print_json(&serde_json::json!({ "removed": removed }))?;
        }
    }
    Ok(())
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value).context("writing JSON")?;
    writeln!(out).context("writing JSON")?;
    out.flush().context("flushing stdout")
}

mod signals {
    //! SIGINT/SIGTERM handling without a signal-handler crate: block them in every thread
    //! and collect them synchronously.

    use std::io;
    use std::mem::MaybeUninit;
    use std::time::Duration;

    fn shutdown_set() -> libc::sigset_t {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the set; sigaddset only touches the initialised set.
        unsafe {
            libc::sigemptyset(set.as_mut_ptr());
            libc::sigaddset(set.as_mut_ptr(), libc::SIGINT);
            libc::sigaddset(set.as_mut_ptr(), libc::SIGTERM);
            set.assume_init()
        }
    }

    /// Blocks SIGINT and SIGTERM in the calling thread (and threads it creates later).
    pub fn block_shutdown_signals() -> io::Result<()> {
        let set = shutdown_set();
        // SAFETY: `set` is initialised; the old mask is not requested.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(rc))
        }
    }

    /// Waits for SIGINT or SIGTERM, or for `timeout` if given. Returns the signal, if any.
    pub fn wait_signal(timeout: Option<Duration>) -> io::Result<Option<i32>> {
        let set = shutdown_set();
        loop {
            let rc = match timeout {
                Some(t) => {
                    let ts = libc::timespec {
                        tv_sec: t.as_secs() as libc::time_t,
                        tv_nsec: libc::c_long::from(t.subsec_nanos() as i32),
                    };
                    // SAFETY: `set` and `ts` are initialised and outlive the call.
                    unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) }
                }
                // SAFETY: `set` is initialised and outlives the call.
                None => unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) },
            };
            if rc > 0 {
                return Ok(Some(rc));
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EAGAIN) => return Ok(None),
                // A stop/continue or debugger may interrupt the wait; the time left is not
                // tracked, which is fine for a lab command.
                Some(libc::EINTR) => continue,
                _ => return Err(err),
            }
        }
    }
}
