//! Suite 1's account of the conntrack map: what the map operations of a new flow cost alone,
//! on maps of the dataplane's key, value and size (bench_maps.bpf.c), so the report can say how
//! much of a new flow is the map and how much the program.
//!
//! Each round loads the object afresh (empty maps) and runs each program once as a hot loop of
//! `repeat` iterations; every iteration uses a key never seen before. The cost of an operation
//! is its program's ns per iteration minus `bench_maps_empty`'s (the loop and key building).
//! Each run is checked: the last verdict says the operation succeeded and the map holds exactly
//! the entries the run inserted.

use anyhow::{ensure, Context, Result};
use aya::maps::HashMap;
use aya::programs::{ProgramError, TestRun, TestRunOptions, Xdp};
use aya::{Ebpf, EbpfLoader};
use blixt_bpf::shared::{CtEntry, FlowKey};

use crate::results::{Machine, Metric};
use crate::stats::Summary;

static MAPS_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench_maps.o"));

const SUITE: &str = "1 per-packet cost";
const XDP_DROP: u32 = 1;

/// One measured map operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    LruMiss,
    LruInsert,
    LruNewFlow,
    HashInsert,
    LruCpuNewFlow,
    LruNewFlowUsed,
    LruCpuNewFlowUsed,
    LruSmallNewFlowUsed,
}

impl Op {
    pub const ALL: [Op; 8] = [
        Op::LruMiss,
        Op::LruInsert,
        Op::LruNewFlow,
        Op::LruNewFlowUsed,
        Op::HashInsert,
        Op::LruCpuNewFlow,
        Op::LruCpuNewFlowUsed,
        Op::LruSmallNewFlowUsed,
    ];

    fn program(self) -> &'static str {
        match self {
            Op::LruMiss => "bench_maps_lru_miss",
            Op::LruInsert => "bench_maps_lru_insert",
            Op::LruNewFlow | Op::LruNewFlowUsed => "bench_maps_lru_new_flow",
            Op::HashInsert => "bench_maps_hash_insert",
            Op::LruCpuNewFlow | Op::LruCpuNewFlowUsed => "bench_maps_lru_cpu_new_flow",
            Op::LruSmallNewFlowUsed => "bench_maps_lru_small_new_flow",
        }
    }

    /// The map is filled to capacity and emptied again before the run (free nodes in the
    /// order use left them).
    pub fn used(self) -> bool {
        matches!(
            self,
            Op::LruNewFlowUsed | Op::LruCpuNewFlowUsed | Op::LruSmallNewFlowUsed
        )
    }

    /// Name of its metric, `map_cost.<id>`.
    pub fn id(self) -> &'static str {
        match self {
            Op::LruMiss => "lru_lookup_miss",
            Op::LruInsert => "lru_insert",
            Op::LruNewFlow => "lru_new_flow_maps",
            Op::HashInsert => "hash_insert",
            Op::LruCpuNewFlow => "lru_cpu_new_flow_maps",
            Op::LruNewFlowUsed => "lru_new_flow_maps_used",
            Op::LruCpuNewFlowUsed => "lru_cpu_new_flow_maps_used",
            Op::LruSmallNewFlowUsed => "lru_small_new_flow_maps_used",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Op::LruMiss => "lookup miss, LRU hash (the conntrack's type)",
            Op::LruInsert => "insert of a new key, LRU hash",
            Op::LruNewFlow => "a new flow's map work: one miss + two inserts, LRU hash",
            Op::HashInsert => "insert of a new key, preallocated plain hash (no eviction)",
            Op::LruNewFlowUsed => {
                "the same on an LRU hash emptied after use (filled to capacity, then every \
                 entry deleted: its free nodes in the order use left them, as after a sweep)"
            }
            Op::LruCpuNewFlow => {
                "a new flow's map work on an LRU hash with per-CPU LRU lists (BPF_F_NO_COMMON_LRU)"
            }
            Op::LruCpuNewFlowUsed => "the same, per-CPU LRU lists, emptied after use",
            Op::LruSmallNewFlowUsed => {
                "a new flow's map work on an LRU hash emptied after use whose value is 16 bytes \
                 (a backend and a timestamp, as Katran's conntrack) instead of 88"
            }
        }
    }

    /// (map, entries one iteration leaves in it)
    fn leaves(self) -> (&'static str, usize) {
        match self {
            Op::LruMiss => ("bench_lru", 0),
            Op::LruInsert => ("bench_lru", 1),
            Op::LruNewFlow | Op::LruNewFlowUsed => ("bench_lru", 2),
            Op::HashInsert => ("bench_hash", 1),
            Op::LruCpuNewFlow | Op::LruCpuNewFlowUsed => ("bench_lru_cpu", 2),
            Op::LruSmallNewFlowUsed => ("bench_lru_small", 2),
        }
    }
}

/// The program that inserts one new key per iteration into `map` (fills it before a run on a
/// used map).
fn insert_program(map: &str) -> Result<&'static str> {
    Ok(match map {
        "bench_lru" => "bench_maps_lru_insert",
        "bench_lru_cpu" => "bench_maps_lru_cpu_insert",
        "bench_lru_small" => "bench_maps_lru_small_insert",
        _ => anyhow::bail!("no insert program fills {map}"),
    })
}

/// The keys `map` holds. Its value is a conntrack entry, or 16 bytes in bench_lru_small.
fn keys(bpf: &mut Ebpf, map: &str) -> Result<Vec<FlowKey>> {
    let data = bpf
        .map_mut(map)
        .with_context(|| format!("{map} not in bench_maps.o"))?;
    let keys = if map == "bench_lru_small" {
        HashMap::<_, FlowKey, [u8; 16]>::try_from(data)
            .with_context(|| format!("opening {map}"))?
            .keys()
            .collect::<Result<Vec<_>, _>>()
    } else {
        HashMap::<_, FlowKey, CtEntry>::try_from(data)
            .with_context(|| format!("opening {map}"))?
            .keys()
            .collect::<Result<Vec<_>, _>>()
    };
    keys.with_context(|| format!("listing {map}"))
}

/// Deletes `keys` from `map` (the kernel's delete does not care about the value's type).
fn empty(bpf: &mut Ebpf, map: &str, keys: &[FlowKey]) -> Result<()> {
    let data = bpf
        .map_mut(map)
        .with_context(|| format!("{map} not in bench_maps.o"))?;
    if map == "bench_lru_small" {
        let mut m = HashMap::<_, FlowKey, [u8; 16]>::try_from(data)?;
        for k in keys {
            m.remove(k).with_context(|| format!("emptying {map}"))?;
        }
    } else {
        let mut m = HashMap::<_, FlowKey, CtEntry>::try_from(data)?;
        for k in keys {
            m.remove(k).with_context(|| format!("emptying {map}"))?;
        }
    }
    Ok(())
}

/// Metric name of an operation's cost.
pub fn metric_name(op: Op) -> String {
    format!("map_cost.{}", op.id())
}

/// Loads a fresh bench_maps.o (empty maps) and runs `program` as a hot loop of `repeat`
/// iterations; with `used` set to a map, that map is first filled to capacity and emptied
/// again.
fn run_once(
    entries: u32,
    program: &str,
    repeat: u32,
    used: Option<&str>,
) -> Result<(f64, u32, Ebpf)> {
    let mut bpf = EbpfLoader::new()
        .map_max_entries("bench_lru", entries)
        .map_max_entries("bench_hash", entries)
        .map_max_entries("bench_lru_cpu", entries)
        .map_max_entries("bench_lru_small", entries)
        .load(MAPS_OBJ)
        .context("loading bench_maps.o")?;
    if let Some(map) = used {
        test_run(&mut bpf, insert_program(map)?, entries)?;
        let keys = keys(&mut bpf, map)?;
        empty(&mut bpf, map, &keys)?;
    }
    let (ns, verdict) = test_run(&mut bpf, program, repeat)?;
    Ok((ns, verdict, bpf))
}

/// One BPF_PROG_TEST_RUN of `program` with `repeat` iterations: kernel-timed ns per
/// iteration and the verdict.
fn test_run(bpf: &mut Ebpf, program: &str, repeat: u32) -> Result<(f64, u32)> {
    let prog: &mut Xdp = bpf
        .program_mut(program)
        .with_context(|| format!("{program} not in bench_maps.o"))?
        .try_into()
        .map_err(|e: ProgramError| anyhow::anyhow!("{program}: {e}"))?;
    if prog.fd().is_err() {
        prog.load().with_context(|| format!("loading {program}"))?;
    }
    let pkt = [0u8; 64];
    let mut out = [0u8; 64];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(&pkt);
    opts.data_out = Some(&mut out);
    opts.repeat = repeat;
    let res = prog
        .test_run(opts)
        .with_context(|| format!("BPF_PROG_TEST_RUN of {program}"))?;
    Ok((res.duration.as_nanos() as f64, res.return_value))
}

/// Runs `rounds` rounds of every operation on maps of `entries` entries, `repeat` iterations
/// each, and returns one metric per operation (ns per operation above the empty loop).
pub fn run(entries: u32, repeat: u32, rounds: usize, machine: &Machine) -> Result<Vec<Metric>> {
    let mut loop_ns = Vec::new();
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); Op::ALL.len()];
    for _ in 0..rounds {
        let (base, v, _) = run_once(entries, "bench_maps_empty", repeat, None)?;
        ensure!(v == XDP_DROP, "bench_maps_empty: verdict {v}");
        loop_ns.push(base);
        for (i, op) in Op::ALL.into_iter().enumerate() {
            let (map, per_iter) = op.leaves();
            let used = op.used().then_some(map);
            let (ns, v, mut bpf) = run_once(entries, op.program(), repeat, used)?;
            ensure!(
                v == XDP_DROP,
                "{}: the last iteration's operation failed (verdict {v})",
                op.program()
            );
            let n = keys(&mut bpf, map)?.len();
            ensure!(
                n == per_iter * repeat as usize,
                "{}: {repeat} iterations left {n} entries in {map}, not {}",
                op.program(),
                per_iter * repeat as usize
            );
            samples[i].push(ns - base);
        }
    }
    let lp = Summary::of(&loop_ns);
    Ok(Op::ALL
        .into_iter()
        .zip(samples)
        .map(|(op, s)| {
            Metric::new(
                SUITE,
                &metric_name(op),
                "ns",
                Summary::of(&s),
                &[("loop", lp)],
                &format!(
                    "{}: ns per operation above the loop that builds the keys (`loop`), on an \
                     empty map of {entries} entries (the conntrack's size), {repeat} new keys per \
                     run",
                    op.title()
                ),
                machine,
            )
        })
        .collect())
}
