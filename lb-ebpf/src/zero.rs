//! Zeroed values built in place with word stores. `Default`/`mem::zeroed` on a struct with
//! byte arrays (MAC addresses) or odd sizes compiles to a call of a byte-at-a-time memset loop
//! on BPF (tens to hundreds of instructions per packet); volatile word stores into the value's
//! final place stay a handful of instructions and cannot be merged back into a memset.

use core::mem::{MaybeUninit, size_of};

/// Sets every byte of the map value at `value` to zero with word stores.
#[inline(always)]
pub fn fill_in_place<T>(value: *mut T) {
    const { assert!(size_of::<T>().is_multiple_of(4)) };
    let words = value as *mut u32;
    let mut i = 0;
    while i < size_of::<T>() / 4 {
        // SAFETY: within the value's bytes, which the caller owns.
        unsafe { words.add(i).write_volatile(0) };
        i += 1;
    }
}

/// Sets every byte of `*value` to zero where it lies (a returned value would be moved, and
/// the move compiled back into a memset), for plain-data types whose size is a multiple of 4.
/// Then fill in fields through the pointer and read it with `assume_init_ref`.
#[inline(always)]
pub fn fill<T>(value: &mut MaybeUninit<T>) {
    const { assert!(size_of::<T>().is_multiple_of(4)) };
    let words = value.as_mut_ptr() as *mut u32;
    let mut i = 0;
    while i < size_of::<T>() / 4 {
        // SAFETY: within the value's bytes; u32 stores to the stack may be unaligned on BPF.
        unsafe { words.add(i).write_volatile(0) };
        i += 1;
    }
}
