//! One handler per job kind, in files mirroring `zoark-jobs`; [`registry`] lists them all.

pub mod agents;
pub mod approvals;
pub mod diag;
pub mod email;
pub mod email_delivery;
pub mod email_test;
pub mod maintenance;
pub mod rag;
pub mod reminders;
pub mod webhooks;

use crate::{WorkerContext, engine::Registry};

/// Every job kind this worker runs.
pub fn registry(ctx: &WorkerContext) -> Registry {
    let registry = Registry::new();
    let registry = maintenance::register(registry, ctx);
    let registry = email::register(registry, ctx);
    let registry = email_test::register(registry, ctx);
    let registry = email_delivery::register(registry, ctx);
    let registry = approvals::register(registry, ctx);
    let registry = webhooks::register(registry, ctx);
    let registry = reminders::register(registry, ctx);
    let registry = rag::register(registry, ctx);
    let registry = agents::register(registry, ctx);
    diag::register(registry, ctx)
}
