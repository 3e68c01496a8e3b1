//! The atomics the seqlock protocol is written against: `std`'s in real builds, loom's under
//! `cfg(loom)`, so the very code that runs in production is the code the model checker explores.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU64};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU64};
