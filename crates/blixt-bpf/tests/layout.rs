//! The Rust mirror of the shared structs must match the C header byte for byte: sizes and
//! every field's offset are compared with the BTF of the compiled object (read by bpftool, so
//! the check shares nothing with the code it checks).

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use std::process::Command;

use blixt_bpf::loader::LB_OBJ;
use blixt_bpf::shared::*;

/// struct name -> (size, field name -> byte offset), from the object's BTF.
fn btf_structs() -> BTreeMap<String, (usize, BTreeMap<String, usize>)> {
    let path = std::env::temp_dir().join(format!("blixt-layout-{}.o", std::process::id()));
    std::fs::write(&path, LB_OBJ).unwrap();
    let out = Command::new("bpftool")
        .args(["-j", "btf", "dump", "file"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("running bpftool (make deps installs it): {e}"));
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "bpftool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    let mut structs = BTreeMap::new();
    for t in v["types"].as_array().expect("types") {
        if t["kind"] != "STRUCT" {
            continue;
        }
        let fields = t["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let bits = m["bits_offset"].as_u64().unwrap() as usize;
                assert_eq!(bits % 8, 0, "bitfield in a shared struct");
                (m["name"].as_str().unwrap().to_string(), bits / 8)
            })
            .collect();
        structs.insert(
            t["name"].as_str().unwrap_or_default().to_string(),
            (t["size"].as_u64().unwrap() as usize, fields),
        );
    }
    structs
}

macro_rules! same_layout {
    ($btf:expr, $c:literal, $rust:ty, { $($cf:literal => $rf:ident),* $(,)? }) => {{
        let (size, fields) = $btf.get($c).unwrap_or_else(|| panic!("struct {} not in BTF", $c));
        assert_eq!(*size, size_of::<$rust>(), "size of {} vs {}", $c, stringify!($rust));
        let mut rust_fields = BTreeMap::new();
        $( rust_fields.insert($cf.to_string(), offset_of!($rust, $rf)); )*
        assert_eq!(fields, &rust_fields, "fields of {} vs {}", $c, stringify!($rust));
    }};
}

#[test]
fn shared_structs_match_the_c_header() {
    let btf = btf_structs();
    same_layout!(btf, "blixt_frontend_key", FrontendKey, {
        "addr" => addr, "port" => port, "proto" => proto, "family" => family });
    same_layout!(btf, "blixt_frontend", FrontendValue, {
        "id" => id, "ring" => ring, "flags" => flags, "pad" => pad });
    same_layout!(btf, "blixt_backend", BackendValue, {
        "addr" => addr, "port" => port, "family" => family, "flags" => flags, "gen" => gen,
        "frontend_id" => frontend_id });
    same_layout!(btf, "blixt_flow_key", FlowKey, {
        "src" => src, "dst" => dst, "sport" => sport, "dport" => dport, "proto" => proto,
        "family" => family, "pad" => pad });
    same_layout!(btf, "blixt_ct_entry", CtEntry, {
        "nsrc" => nsrc, "ndst" => ndst, "nsport" => nsport, "ndport" => ndport,
        "backend_id" => backend_id, "backend_gen" => backend_gen, "frontend_id" => frontend_id,
        "state" => state, "dir" => dir, "flags" => flags, "pad0" => pad0, "pad1" => pad1,
        "last_seen_ns" => last_seen_ns, "created_ns" => created_ns,
        "fib_ifindex" => fib_ifindex, "fib_smac" => fib_smac, "fib_dmac" => fib_dmac });
    same_layout!(btf, "blixt_config", Config, {
        "snat_v4" => snat_v4, "snat_v6" => snat_v6, "port_min" => port_min,
        "port_max" => port_max, "flags" => flags, "tcp_syn_timeout_s" => tcp_syn_timeout_s,
        "tcp_established_timeout_s" => tcp_established_timeout_s,
        "tcp_closing_timeout_s" => tcp_closing_timeout_s, "udp_timeout_s" => udp_timeout_s,
        "ring_size" => ring_size });
    same_layout!(btf, "blixt_counters", Counters, {
        "packets" => packets, "bytes" => bytes, "new_flows" => new_flows, "rejects" => rejects });
    same_layout!(btf, "blixt_vip_key", VipKey, { "addr" => addr, "family" => family, "pad" => pad });
    same_layout!(btf, "blixt_iface", Iface, { "mac" => mac, "flags" => flags, "pad" => pad });
}

#[test]
fn stat_names_cover_every_counter() {
    assert_eq!(STAT_NAMES.len() as u32, STAT_MAX);
    let btf = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/bpf/include/blixt_shared.h"
    ))
    .unwrap();
    // the C enum lists the same counters in the same order
    let c_names: Vec<String> = btf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("BLIXT_STAT_"))
        .map(|l| l.split([' ', ',', '=']).next().unwrap().to_lowercase())
        .filter(|n| n != "max")
        .collect();
    assert_eq!(c_names, STAT_NAMES);
}
