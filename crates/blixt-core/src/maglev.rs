//! Weighted Maglev lookup tables (placeholder; being written).
