//! Blixt's eBPF dataplane: loader, shared structs and map handles.
pub mod testing;
