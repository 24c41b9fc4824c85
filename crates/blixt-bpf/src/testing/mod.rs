//! Test helpers for packet fixtures.
