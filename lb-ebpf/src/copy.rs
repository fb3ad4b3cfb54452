//! Copies made with word loads and stores. A plain assignment of a struct or array into a map
//! value often compiles to a call of the program's `memcpy`, a byte-at-a-time loop: tens to
//! hundreds of instructions per packet, and a loop the verifier walks on every path through it.

use core::mem::size_of;

/// Copies `*src` to `*dst` as 32-bit words, for plain-data types whose size is a multiple of 4.
///
/// # Safety
/// Both pointers must be valid for `size_of::<T>()` bytes; they may be unaligned (the data
/// plane is built with misaligned access allowed), and must not overlap.
#[inline(always)]
pub unsafe fn words<T>(dst: *mut T, src: *const T) {
    const { assert!(size_of::<T>().is_multiple_of(4)) };
    let (to, from) = (dst as *mut u32, src as *const u32);
    let mut i = 0;
    while i < size_of::<T>() / 4 {
        // SAFETY: within both values, as the caller promises; volatile, so the compiler cannot
        // merge the words back into a memcpy call.
        unsafe { to.add(i).write_volatile(from.add(i).read_unaligned()) };
        i += 1;
    }
}

/// Copies a MAC address as a 4- and a 2-byte word.
#[inline(always)]
pub fn mac(dst: &mut [u8; 6], src: &[u8; 6]) {
    let (to, from) = (dst.as_mut_ptr(), src.as_ptr());
    // SAFETY: six bytes each; misaligned access is allowed.
    unsafe {
        (to as *mut u32).write_unaligned((from as *const u32).read_unaligned());
        (to.add(4) as *mut u16).write_unaligned((from.add(4) as *const u16).read_unaligned());
    }
}
