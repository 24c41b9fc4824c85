//! [`LoadCache`]: repeated loads of one configuration that parse only the files that changed.
//!
//! Parsing is most of a reload's cost (1,000 routes with their Services and EndpointSlices:
//! about 3,000 documents, a quarter of a second), while an edit usually touches one file. The
//! cache keeps each file's objects, keyed by its path, its text and the position of its first
//! document among all documents of the load (which decides the synthetic creation timestamps),
//! and assembles the configuration from them in file order: the same objects in the same
//! order as [`super::load`]. Whenever any file has a problem, or two files clash (a name
//! defined twice, a second NodeConfig), the whole configuration is loaded again without the
//! cache, so errors are exactly those of [`super::load`].

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use blixt_core::translator::ObjectIndex;

use super::ConfigError;
use super::{config_files, Kind, LoadedConfig, Loader, NodeConfigSpec, Origin, Source};

/// One file loaded on its own, starting at a given document position.
#[derive(Debug)]
struct FileEntry {
    text: String,
    first_position: i64,
    objects: ObjectIndex,
    node: Option<(NodeConfigSpec, Origin)>,
    has_node_document: bool,
    /// (kind, namespace, name) of every object the file defines.
    names: Vec<(Kind, String, String)>,
    /// Non-empty documents in the file.
    documents: i64,
    clean: bool,
}

impl FileEntry {
    fn load(source: &Source, first_position: i64) -> FileEntry {
        let mut loader = Loader {
            position: first_position,
            ..Loader::default()
        };
        loader.file(source);
        FileEntry {
            text: source.text.clone(),
            first_position,
            documents: loader.position - first_position,
            clean: loader.problems.is_empty(),
            has_node_document: loader.node_document.is_some(),
            names: loader.seen.into_keys().collect(),
            objects: loader.objects,
            node: loader.node,
        }
    }
}

/// Loads a configuration again and again, re-parsing only files whose text (or position)
/// changed. Use one per configuration path.
#[derive(Debug, Default)]
pub struct LoadCache {
    files: HashMap<PathBuf, FileEntry>,
}

impl LoadCache {
    /// Loads the configuration at `path`: the same result as [`super::load`].
    pub fn load(&mut self, path: &Path) -> Result<LoadedConfig, ConfigError> {
        match self.try_load(path) {
            Some(loaded) => Ok(loaded),
            None => {
                // A problem somewhere: the uncached load names every problem exactly.
                self.files.clear();
                super::load(path)
            }
        }
    }

    /// `None` when anything is wrong (unreadable file, a problem, a clash between files).
    fn try_load(&mut self, path: &Path) -> Option<LoadedConfig> {
        let files = config_files(path).ok()?;
        let mut position = 0i64;
        let mut fresh = HashMap::with_capacity(files.len());
        for file in &files {
            let text = String::from_utf8(std::fs::read(file).ok()?).ok()?;
            let entry = match self.files.remove(file) {
                Some(e) if e.text == text && e.first_position == position => e,
                _ => FileEntry::load(
                    &Source {
                        path: file.clone(),
                        text,
                    },
                    position,
                ),
            };
            if !entry.clean {
                return None;
            }
            position += entry.documents;
            fresh.insert(file.clone(), entry);
        }
        self.files = fresh;

        let mut objects = ObjectIndex::default();
        let mut names = HashSet::new();
        let mut node = None;
        let mut node_documents = 0;
        for file in &files {
            let e = &self.files[file];
            for n in &e.names {
                if !names.insert(n) {
                    return None;
                }
            }
            node_documents += usize::from(e.has_node_document);
            if e.node.is_some() {
                node.clone_from(&e.node);
            }
            extend(&mut objects, &e.objects);
        }
        if node_documents > 1 {
            return None;
        }
        Some(LoadedConfig::assemble(objects, node, files))
    }
}

fn extend(into: &mut ObjectIndex, from: &ObjectIndex) {
    let ObjectIndex {
        gateway_classes,
        gateways,
        tcp_routes,
        udp_routes,
        tls_routes,
        reference_grants,
        services,
        endpoint_slices,
        namespaces,
        address_pools,
        delegated_addresses,
        reserved_addresses,
    } = from;
    into.gateway_classes.extend_from_slice(gateway_classes);
    into.gateways.extend_from_slice(gateways);
    into.tcp_routes.extend_from_slice(tcp_routes);
    into.udp_routes.extend_from_slice(udp_routes);
    into.tls_routes.extend_from_slice(tls_routes);
    into.reference_grants.extend_from_slice(reference_grants);
    into.services.extend_from_slice(services);
    into.endpoint_slices.extend_from_slice(endpoint_slices);
    into.namespaces.extend_from_slice(namespaces);
    // observed by the Kubernetes provider only; files hold none
    into.address_pools.extend(address_pools.clone());
    into.delegated_addresses.extend(delegated_addresses.clone());
    into.reserved_addresses.extend(reserved_addresses.clone());
}
