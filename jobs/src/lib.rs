//! zoark-jobs: job contracts — payload struct, stable `NAME`, queue, max attempts, timeout and
//! uniqueness — and `enqueue(&mut tx, job, opts)` inside the caller's transaction.
//!
//! This crate is deliberately light (no HTTP, no SMTP) so the API and the scheduler can depend on
//! it. The contracts themselves arrive with the job engine; the worker's handlers in
//! `worker/src/handlers/` mirror this crate's files one to one.
