//! How the process's allocator treats the kernels' buffers.
//!
//! Kernels return fresh output and gradient buffers, and callers drop them when a request is
//! answered. With glibc's default malloc settings, buffers of a few hundred kilobytes and up
//! go straight back to the operating system when freed (the top of the heap is trimmed past
//! 2 × the last mmapped size, and large blocks are mmapped), so the next call of the same size
//! faults in and zeroes every page again: at 1e5 `f64` elements with gradients that is most of
//! the time of a loss (`huber_loss` forward + gradient 806 µs against 148 µs with memory kept;
//! `kernels/benches/losses.rs`). [`keep_freed_memory`] keeps it.

/// Blocks up to this size come from the heap, where freed memory is reused; larger ones are
/// mapped and unmapped on their own (glibc's largest mmap threshold on 64-bit).
pub const MMAP_THRESHOLD: usize = 32 << 20;

/// Free memory at the top of the heap up to this size is kept for the next allocation rather
/// than returned to the operating system.
pub const TRIM_THRESHOLD: usize = 128 << 20;

/// Sets glibc's malloc to reuse freed blocks below [`MMAP_THRESHOLD`] and to keep up to
/// [`TRIM_THRESHOLD`] of free heap, instead of its dynamic defaults. Call it once at start-up,
/// before other threads exist (the service's `main` and the benchmarks do). Returns whether
/// the settings were applied: `false` on other C libraries, where it does nothing.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes malloc's parameters; both values are in range.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_the_settings() {
        assert!(super::keep_freed_memory());
        // Allocation still works on both sides of the threshold.
        let small = vec![1.0f64; 1 << 17];
        let large = vec![2.0f64; (super::MMAP_THRESHOLD / 8) + 1];
        assert_eq!(small[5] + large[7], 3.0);
    }
}
