//! Cross-process wake-ups on the header's futex word. Shared futexes (no FUTEX_PRIVATE_FLAG):
//! the word lives in a file mapping seen by several processes. FUTEX_WAIT only reads the word,
//! so it works on readers' read-only mappings.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// Sleeps while `*word == expected`, at most `timeout`. Returns early on a wake-up, a signal, or
/// when the word already differs; callers re-check their condition in every case.
pub(crate) fn wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a live, aligned u32 for the duration of the call and `ts` outlives it.
    // The kernel only reads the word. Errors (EAGAIN: value changed; EINTR; ETIMEDOUT) all mean
    // "re-check", which every caller does, so the return value carries nothing we need.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Wakes every process and thread waiting on `word`.
pub(crate) fn wake_all(word: &AtomicU32) {
    // SAFETY: `word` is a live, aligned u32; FUTEX_WAKE does not touch memory besides hashing
    // the address. It cannot fail for a valid address, so the result is not inspected.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}
