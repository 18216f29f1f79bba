//! The operator side (admin API); this branch holds only the operations.

pub mod operations;
