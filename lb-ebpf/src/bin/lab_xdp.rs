//! XDP programs for the namespace lab and the benchmarks, not for production:
//! - `lab_pass`: attached to a veth's peer so frames sent there with XDP_TX are received
//!   (a veth drops XDP_TX frames unless its peer runs an XDP program).
//! - `bench_tx`: returns XDP_TX and nothing else: the floor the per-packet benchmark divides by.
//! - `bench_gen`: the end-to-end traffic generator, run with BPF_PROG_TEST_RUN in live-frames
//!   mode: writes the template frame from `GEN_TEMPLATE` over each frame (the kernel recycles
//!   pages a forwarder downstream rewrote) and sends it with XDP_TX.
//! - `bench_sink`: counts and drops what comes back (`SINK_PACKETS`).
//! - `bench_mac_fwd`: the ceiling: swaps the Ethernet addresses and sends the frame back.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};

/// Bytes of the frame the generator writes: a whole minimum-size frame.
const TEMPLATE_WORDS: usize = 8;

#[map]
static GEN_TEMPLATE: Array<[u64; TEMPLATE_WORDS]> = Array::with_max_entries(1, 0);

#[map]
static SINK_PACKETS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[xdp]
pub fn lab_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[xdp]
pub fn bench_tx(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_TX
}

#[xdp]
pub fn bench_gen(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + TEMPLATE_WORDS * 8 > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    let Some(template) = GEN_TEMPLATE.get(0) else {
        return xdp_action::XDP_ABORTED;
    };
    let frame = start as *mut u64;
    for (i, word) in template.iter().enumerate() {
        // SAFETY: the bounds check above covers TEMPLATE_WORDS words; live frames start at
        // the page-pool headroom, 8-byte aligned (word stores keep the generator faster than
        // any path it measures).
        unsafe { *frame.add(i) = *word };
    }
    xdp_action::XDP_TX
}

#[xdp]
pub fn bench_sink(_ctx: XdpContext) -> u32 {
    if let Some(count) = SINK_PACKETS.get_ptr_mut(0) {
        // SAFETY: a per-CPU slot.
        unsafe { *count += 1 };
    }
    xdp_action::XDP_DROP
}

#[xdp]
pub fn bench_mac_fwd(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + 12 > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    let eth = start as *mut [u8; 12];
    // SAFETY: bounds-checked above.
    unsafe {
        let old = *eth;
        let mut new = [0u8; 12];
        new[..6].copy_from_slice(&old[6..]);
        new[6..].copy_from_slice(&old[..6]);
        *eth = new;
    }
    xdp_action::XDP_TX
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
