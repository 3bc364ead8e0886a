//! Cooperative cancellation: long kernels call [`checkpoint`] between chunks of work.
//!
//! The caller (the service's compute pool) installs a flag for the current thread with
//! [`with_flag`]; when the flag is raised (the request ran out of time), the next checkpoint
//! returns [`LossError::cancelled`]. Without an installed flag, checkpoints never fail.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::LossError;

thread_local! {
    static FLAG: RefCell<Option<Arc<AtomicBool>>> = const { RefCell::new(None) };
}

/// Runs `f` with `flag` as this thread's cancellation flag.
pub fn with_flag<R>(flag: Arc<AtomicBool>, f: impl FnOnce() -> R) -> R {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            FLAG.with(|c| c.borrow_mut().take());
        }
    }
    FLAG.with(|c| *c.borrow_mut() = Some(flag));
    let _reset = Reset;
    f()
}

/// Fails with [`LossError::cancelled`] once this thread's flag is raised.
#[inline]
pub fn checkpoint() -> Result<(), LossError> {
    FLAG.with(|c| match &*c.borrow() {
        Some(flag) if flag.load(Ordering::Relaxed) => Err(LossError::cancelled()),
        _ => Ok(()),
    })
}
