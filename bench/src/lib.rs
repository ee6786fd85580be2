//! What the benchmark binaries share: the apalis-postgres peer's job contract and worker, run as a
//! process of its own (`apalis-peer`) and fed by `zoark-bench queue`.

pub mod apalis;
