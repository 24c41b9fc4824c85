//! The blixt command.
fn main() {}
