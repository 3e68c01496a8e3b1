//! The atomics the ring's protocols are written against: `std`'s in real builds, loom's under
//! `cfg(loom)`, so the very code that runs in production is the code the model checker explores.

use std::sync::atomic::Ordering::{Acquire, Relaxed};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64};

/// An Acquire load that is sound on a read-only mapping, which is how every reader maps a ring.
///
/// The standard library promises only that small *relaxed* loads work on read-only memory: an
/// Acquire load may be implemented with a read-modify-write on some targets, which would fault.
/// It recommends a relaxed load followed by an Acquire fence instead, which gives the same
/// guarantee (the fence synchronises with any Release store or fence whose value the load read)
/// and compiles to the same instructions on x86-64 and aarch64.
pub(crate) fn acquire_u64(atomic: &AtomicU64) -> u64 {
    let value = atomic.load(Relaxed);
    fence(Acquire);
    value
}

/// [`acquire_u64`] for a 32-bit word (the futex words).
pub(crate) fn acquire_u32(atomic: &AtomicU32) -> u32 {
    let value = atomic.load(Relaxed);
    fence(Acquire);
    value
}
