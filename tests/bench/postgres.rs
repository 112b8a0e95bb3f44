//! Placeholder, replaced by the PostgreSQL benchmark.
fn main() {}
