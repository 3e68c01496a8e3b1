//! How a waiting thread turns changes of futex words into wake-ups that none can miss.
//!
//! A writer bumps its ring's futex word after every publish (Release, after `head`), then wakes
//! the word's waiters. A watcher remembers, per word, the last value it acted on. It signals a
//! ring whenever the word differs from that value, and it sleeps only while every word still
//! equals its remembered value: the futex compares the word against exactly the value the
//! watcher acted on, atomically with going to sleep, so a bump that lands at any moment after
//! the watcher's load either shows in the comparison (the wait returns at once) or wakes the
//! sleeper. Comparing against a fresh load instead would lose a bump that lands between that
//! load and the previous check. The loom model (`loom_wakeup`) checks this with the real
//! [`observe`], the watcher's loop and a futex that behaves like the kernel's.

use crate::sync::{acquire_u32, AtomicU32};

/// Whether `word` moved since `last`, which becomes the word's present value: the value to
/// sleep on next.
pub(crate) fn observe(word: &AtomicU32, last: &mut u32) -> bool {
    // SYNC POINT: Acquire (a relaxed load and a fence, the word being in a read-only mapping)
    // pairs with the writer's Release bump, which follows its Release store of `head`: whoever
    // is signalled after this load, and loads `head`, sees the frame that caused the bump.
    let now = acquire_u32(word);
    let changed = now != *last;
    *last = now;
    changed
}
