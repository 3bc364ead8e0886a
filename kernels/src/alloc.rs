//! How the process's allocator treats the kernels' buffers.
//!
//! Kernels return fresh output and gradient buffers, and callers drop them when a request is
//! answered. With glibc's default malloc settings, buffers of a few hundred kilobytes and up
//! go straight back to the operating system when freed (the top of the heap is trimmed past
//! 2 × the last mmapped size, and large blocks are mmapped), so the next call of the same size
//! faults in and zeroes every page again, which at 1e5 `f64` elements with gradients is most of
//! the time of a loss (`kernels/benches/losses.rs` shows it). [`keep_freed_memory`] keeps it.

/// Blocks up to this size come from the heap, where freed memory is reused; larger ones are
/// mapped and unmapped on their own (glibc's largest mmap threshold on 64-bit).
pub const MMAP_THRESHOLD: usize = 32 << 20;

/// Free memory at the top of the heap up to this size is kept for the next allocation rather
/// than returned to the operating system.
pub const TRIM_THRESHOLD: usize = 128 << 20;

/// Sets glibc's malloc to reuse freed blocks below [`MMAP_THRESHOLD`] and to keep up to
/// [`TRIM_THRESHOLD`] of free heap, instead of its dynamic defaults. Call it once at start-up,
/// before other threads exist (the benchmarks do; the service allocates with mimalloc and
/// does not need it). Returns whether
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

/// Asks Linux to back the spare capacity of `buf` with transparent huge pages when the buffer
/// is large enough to be mapped on its own (capacity at or above [`MMAP_THRESHOLD`], by glibc
/// or mimalloc alike): one fault per 2 MiB
/// instead of one per 4 KiB while it is filled. A large request body is such a buffer, new
/// for each request; on machines whose THP setting is `madvise` (Debian's default) its page
/// faults were a tenth of the CPU time of a 41 MB request. Returns whether the advice was
/// taken; it changes nothing but how the pages are backed.
pub fn huge_pages(buf: &mut Vec<u8>) -> bool {
    #[cfg(target_os = "linux")]
    {
        if buf.capacity() < MMAP_THRESHOLD || buf.capacity() - buf.len() < 2 << 20 {
            return false;
        }
        const PAGE: usize = 4096;
        let spare = buf.spare_capacity_mut();
        let start = spare.as_mut_ptr() as usize;
        let end = start + spare.len();
        let aligned = start.next_multiple_of(PAGE);
        let len = (end.saturating_sub(aligned)) / PAGE * PAGE;
        if len == 0 {
            return false;
        }
        // SAFETY: the range lies inside the vector's own allocation (whole pages of its
        // spare capacity); MADV_HUGEPAGE changes only how those pages will be backed, never
        // their contents or validity.
        unsafe { libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = buf;
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

    #[test]
    fn huge_page_advice_is_for_large_buffers_only_and_keeps_their_contents() {
        let mut small = Vec::<u8>::with_capacity(1 << 20);
        assert!(!super::huge_pages(&mut small));
        let mut large = Vec::<u8>::with_capacity(super::MMAP_THRESHOLD + 12345);
        large.extend_from_slice(b"kept");
        super::huge_pages(&mut large); // false where THP is off: not an error
        large.resize(large.capacity(), 7);
        assert_eq!(&large[..4], b"kept");
        assert!(large[4..].iter().all(|&b| b == 7));
    }
}
