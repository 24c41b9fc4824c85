//! `blixt status`: Gateways, listeners and routes with their conditions, as Kubernetes would
//! show them. From a running `blixt run` (its status socket), or computed from manifests.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use blixt_standalone::status::{render, report, OutputFormat};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::status_socket::StatusMessage;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Compute statuses from these manifests (file or directory) instead of asking a running
    /// `blixt run`.
    #[arg(long, short = 'c', conflicts_with = "socket")]
    config: Option<PathBuf>,
    /// Status socket of a running `blixt run` (NodeConfig `statusSocket`).
    #[arg(long, default_value = "/run/blixt/status.sock")]
    socket: PathBuf,
    /// table, wide, yaml or json.
    #[arg(short = 'o', long, default_value = "table")]
    output: String,
}

pub fn run(args: StatusArgs) -> Result<()> {
    let format: OutputFormat = args
        .output
        .parse()
        .map_err(|e| anyhow!("-o {:?}: {e}", args.output))?;
    let table = matches!(format, OutputFormat::Table | OutputFormat::Wide);
    match args.config {
        Some(path) => {
            let loaded = blixt_standalone::load(&path).map_err(|e| anyhow!("{e}"))?;
            let now = Time(k8s_openapi::jiff::Timestamp::now());
            let t = loaded.translate(&now);
            print!("{}", render(&report(&loaded.objects, &t.statuses), format));
        }
        None => {
            let mut conn = UnixStream::connect(&args.socket).with_context(|| {
                format!(
                    "connecting to {} (is `blixt run` running? or use --config)",
                    args.socket.display()
                )
            })?;
            let mut body = Vec::new();
            conn.read_to_end(&mut body)?;
            let msg: StatusMessage = serde_json::from_slice(&body).context("status message")?;
            if table {
                println!(
                    "serving {} at generation {}",
                    msg.config.display(),
                    msg.generation
                );
                if let Some(e) = &msg.refused {
                    println!("the newest files were refused (the previous version serves):\n{e}");
                }
                if let Some(d) = &msg.dataplane {
                    print!("{}", d.render());
                }
                println!();
            }
            match &msg.report {
                Some(r) => print!("{}", render(r, format)),
                None => println!("no configuration applied yet"),
            }
        }
    }
    Ok(())
}
