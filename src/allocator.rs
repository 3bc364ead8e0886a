//! The global allocator of the `lossd` binary: mimalloc, asked through its plain entry points
//! whenever they give the alignment a layout needs.
//!
//! Why not the `mimalloc` crate's `MiMalloc`: it sends every allocation through
//! `mi_malloc_aligned`, and mimalloc 3 serves that directly only for blocks of a power-of-two
//! size; a 48-byte box or a 5 kB buffer takes its over-allocating path. callgrind counted 138
//! allocations in a 3×5 `mse_loss` request, 7,700 instructions of allocator per request, a
//! tenth of the request (the figures are in the commit that made this change).
//!
//! A plain `mi_malloc` block is aligned to 16 bytes when its size is a multiple of 16, and to
//! 8 when a multiple of 8 (mimalloc's size classes are multiples of 8, 16-grained above 16,
//! and a page's first block is 16-aligned), so a layout with an alignment of at most 16 and a
//! size that is a multiple of it goes there; any other layout keeps the aligned entry points.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// mimalloc's plain alignment guarantee (`MI_MAX_ALIGN_SIZE`).
const PLAIN_ALIGN: usize = 16;

/// mimalloc as the global allocator (see the module).
pub struct Allocator;

/// Whether a plain mimalloc block of `size` bytes is aligned enough for `align`.
#[inline]
fn plain(size: usize, align: usize) -> bool {
    align <= PLAIN_ALIGN && size.is_multiple_of(align)
}

// SAFETY: every method hands the request to mimalloc, whose blocks are valid for the size
// asked and aligned as `plain` says (the aligned entry points otherwise); `dealloc` and
// `realloc` get only pointers these methods returned, which `mi_free` and the `mi_realloc`
// family accept whichever entry point allocated them.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: plain calls into mimalloc; see the impl's comment.
        unsafe {
            if plain(layout.size(), layout.align()) {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        unsafe {
            if plain(layout.size(), layout.align()) {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator; the new block keeps `layout`'s alignment.
        unsafe {
            if plain(new_size, layout.align()) {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_block_has_its_layouts_alignment() {
        let a = Allocator;
        let mut held = Vec::new();
        for align in [1usize, 2, 4, 8, 16, 32, 64, 4096] {
            for size in (1..3000).chain([4096, 5000, 65_536, 100_000, 1 << 20, 3 << 20]) {
                let layout = Layout::from_size_align(size, align).unwrap();
                for zeroed in [false, true] {
                    // SAFETY: a non-zero size; the block is freed below with its layout.
                    let p = unsafe {
                        if zeroed {
                            a.alloc_zeroed(layout)
                        } else {
                            a.alloc(layout)
                        }
                    };
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    if zeroed {
                        // SAFETY: `p` holds `size` bytes.
                        let bytes = unsafe { std::slice::from_raw_parts(p, size) };
                        assert!(bytes.iter().all(|&b| b == 0));
                    }
                    held.push((p, layout));
                }
            }
            // Growing and shrinking keeps the alignment and the contents.
            for (p, layout) in held.iter_mut().filter(|(_, l)| l.size() < 256) {
                // SAFETY: `p` holds `layout.size()` bytes; realloc's contract as documented.
                unsafe {
                    p.write(0xA5);
                    let new = layout.size() * 3 + 5;
                    let q = a.realloc(*p, *layout, new);
                    assert!(!q.is_null());
                    assert_eq!(q as usize % layout.align(), 0);
                    assert_eq!(q.read(), 0xA5);
                    *p = q;
                    *layout = Layout::from_size_align(new, layout.align()).unwrap();
                }
            }
            for (p, layout) in held.drain(..) {
                // SAFETY: allocated above with this layout.
                unsafe { a.dealloc(p, layout) };
            }
        }
    }
}
