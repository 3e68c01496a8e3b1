//! Cross-process wake-ups on the header's futex word. Shared futexes (no FUTEX_PRIVATE_FLAG):
//! the word lives in a file mapping seen by several processes. FUTEX_WAIT only reads the word,
//! so it works on readers' read-only mappings.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

use nix::errno::Errno;

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
    // SAFETY: `word` is a live, aligned u32; FUTEX_WAKE does not touch memory besides looking
    // the address up. Its one failure, EFAULT for a page its file no longer backs, means there
    // is nobody to wake there, so the result is not inspected.
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

/// One word for [`wait_any`]: wake when `*word != expected`.
pub(crate) struct WaitOn<'a> {
    pub(crate) word: &'a AtomicU32,
    pub(crate) expected: u32,
}

/// The kernel's `struct futex_waitv`; libc does not define it.
#[repr(C)]
struct FutexWaitv {
    val: u64,
    uaddr: u64,
    flags: u32,
    reserved: u32,
}

/// FUTEX2_SIZE_U32, without FUTEX2_PRIVATE: the words live in shared file mappings.
const FUTEX2_SIZE_U32: u32 = 0x02;
/// The most words one FUTEX_WAITV takes.
pub(crate) const WAITV_MAX: usize = 128;

/// Sleeps until any of `words` (at most [`WAITV_MAX`]) differs from its expected value, or
/// `timeout` passes. `Err(EAGAIN)` (a word already differed), `Err(EINTR)` and `Err(ETIMEDOUT)`
/// mean "re-check", like a wake-up; any other error means the call could not wait.
pub(crate) fn wait_any(words: &[WaitOn<'_>], timeout: Duration) -> Result<(), Errno> {
    debug_assert!(words.len() <= WAITV_MAX);
    let waiters: Vec<FutexWaitv> = words
        .iter()
        .map(|w| FutexWaitv {
            val: u64::from(w.expected),
            uaddr: w.word.as_ptr() as u64,
            flags: FUTEX2_SIZE_U32,
            reserved: 0,
        })
        .collect();
    // FUTEX_WAITV takes an absolute CLOCK_MONOTONIC deadline.
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .unwrap_or(nix::sys::time::TimeSpec::new(0, 0));
    let deadline = now + nix::sys::time::TimeSpec::from_duration(timeout);
    let ts = libc::timespec {
        tv_sec: deadline.tv_sec(),
        tv_nsec: deadline.tv_nsec(),
    };
    // SAFETY: `waiters` (and every word it points to, borrowed for this call) outlives the
    // call; the kernel only reads them. `ts` outlives the call.
    let result = unsafe {
        libc::syscall(
            libc::SYS_futex_waitv,
            waiters.as_ptr(),
            waiters.len() as libc::c_uint,
            0u32,
            &ts as *const libc::timespec,
            libc::CLOCK_MONOTONIC,
        )
    };
    if result < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// Whether `err` from [`wait_any`] is one of the ordinary outcomes of a wait.
pub(crate) fn is_ordinary(err: Errno) -> bool {
    matches!(err, Errno::EAGAIN | Errno::EINTR | Errno::ETIMEDOUT)
}

/// Whether FUTEX_WAITV works in this process: asked once, with a word that already differs, so a
/// working call returns EAGAIN at once. Anything else — ENOSYS before Linux 5.16, EPERM or
/// EINVAL from a container's system-call filter — means it does not, and never will here.
pub(crate) fn waitv_works() -> bool {
    let word = AtomicU32::new(1);
    let probe = [WaitOn {
        word: &word,
        expected: 0,
    }];
    loop {
        match wait_any(&probe, Duration::ZERO) {
            Err(Errno::EINTR) => continue,
            answer => return answer == Err(Errno::EAGAIN),
        }
    }
}
