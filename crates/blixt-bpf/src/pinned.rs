//! Read-only access to a pinned dataplane's maps, beside a running agent (`blixt inspect`,
//! tests, metrics from another process). Opens the pins; never loads or attaches programs.

use std::path::Path;

use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray};

use crate::loader::DataplaneError;
use crate::shared::{
    BackendValue, Config, Counters, CtEntry, FlowKey, FrontendKey, FrontendValue, STAT_MAX,
};

/// The maps of a dataplane pinned under a directory.
pub struct PinnedDataplane {
    pub config: Array<MapData, Config>,
    pub rings: Array<MapData, u64>,
    pub frontends: HashMap<MapData, FrontendKey, FrontendValue>,
    pub backends: Array<MapData, BackendValue>,
    pub conntrack: HashMap<MapData, FlowKey, CtEntry>,
    pub frontend_stats: PerCpuArray<MapData, Counters>,
    pub backend_stats: PerCpuArray<MapData, Counters>,
    pub stats: PerCpuArray<MapData, u64>,
}

impl std::fmt::Debug for PinnedDataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedDataplane").finish_non_exhaustive()
    }
}

fn open(dir: &Path, name: &'static str) -> Result<MapData, DataplaneError> {
    let path = dir.join(name);
    MapData::from_pin(&path).map_err(|e| DataplaneError::Pin {
        path,
        message: format!("{e} (is an agent running with this --pin-dir?)"),
    })
}

fn typed<T: TryFrom<Map, Error = aya::maps::MapError>>(
    name: &'static str,
    map: Map,
) -> Result<T, DataplaneError> {
    T::try_from(map).map_err(|source| DataplaneError::Map { name, source })
}

impl PinnedDataplane {
    pub fn open(dir: &Path) -> Result<Self, DataplaneError> {
        Ok(PinnedDataplane {
            config: typed("blixt_config", Map::Array(open(dir, "blixt_config")?))?,
            rings: typed("blixt_rings", Map::Array(open(dir, "blixt_rings")?))?,
            frontends: typed(
                "blixt_frontends",
                Map::HashMap(open(dir, "blixt_frontends")?),
            )?,
            backends: typed("blixt_backends", Map::Array(open(dir, "blixt_backends")?))?,
            conntrack: typed(
                "blixt_conntrack",
                Map::LruHashMap(open(dir, "blixt_conntrack")?),
            )?,
            frontend_stats: typed(
                "blixt_frontend_stats",
                Map::PerCpuArray(open(dir, "blixt_frontend_stats")?),
            )?,
            backend_stats: typed(
                "blixt_backend_stats",
                Map::PerCpuArray(open(dir, "blixt_backend_stats")?),
            )?,
            stats: typed("blixt_stats", Map::PerCpuArray(open(dir, "blixt_stats")?))?,
        })
    }

    /// The node configuration the agent wrote.
    pub fn node_config(&self) -> Result<Config, DataplaneError> {
        self.config
            .get(&0, 0)
            .map_err(|source| DataplaneError::Map {
                name: "blixt_config",
                source,
            })
    }

    /// Ring `ring`'s slots (backend ids or SLOT_REJECT); two 32-bit slots per element.
    pub fn ring(&self, ring: u32, ring_size: u32) -> Result<Vec<u32>, DataplaneError> {
        let first = u64::from(ring) * u64::from(ring_size);
        (first..first + u64::from(ring_size))
            .map(|slot| {
                let pair = self.rings.get(&((slot / 2) as u32), 0).map_err(|source| {
                    DataplaneError::Map {
                        name: "blixt_rings",
                        source,
                    }
                })?;
                let words: [u32; 2] = bytemuck_pair(pair);
                Ok(words[(slot % 2) as usize])
            })
            .collect()
    }

    /// Global counters in STAT_NAMES order, summed over CPUs.
    pub fn global_counters(&self) -> Result<Vec<u64>, DataplaneError> {
        (0..STAT_MAX)
            .map(|i| {
                self.stats
                    .get(&i, 0)
                    .map(|v| v.iter().sum())
                    .map_err(|source| DataplaneError::Map {
                        name: "blixt_stats",
                        source,
                    })
            })
            .collect()
    }

    /// A backend id's counters, summed over CPUs.
    pub fn backend_counters(&self, id: u32) -> Result<Counters, DataplaneError> {
        sum(&self.backend_stats, id, "blixt_backend_stats")
    }

    /// A frontend id's counters, summed over CPUs.
    pub fn frontend_counters(&self, id: u32) -> Result<Counters, DataplaneError> {
        sum(&self.frontend_stats, id, "blixt_frontend_stats")
    }
}

/// Sums a per-CPU counters entry.
pub fn sum(
    map: &PerCpuArray<MapData, Counters>,
    id: u32,
    name: &'static str,
) -> Result<Counters, DataplaneError> {
    let values = map
        .get(&id, 0)
        .map_err(|source| DataplaneError::Map { name, source })?;
    let mut total = Counters::default();
    for v in values.iter() {
        total += *v;
    }
    Ok(total)
}

/// The two 32-bit slots of a ring element, in memory order.
fn bytemuck_pair(v: u64) -> [u32; 2] {
    let b = v.to_ne_bytes();
    [
        u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
        u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
    ]
}
