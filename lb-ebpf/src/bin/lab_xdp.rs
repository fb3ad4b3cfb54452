//! XDP programs for the namespace lab and the benchmarks, not for production:
//! - `lab_pass`: attached to a veth's peer so frames sent there with XDP_TX are received
//!   (a veth drops XDP_TX frames unless its peer runs an XDP program).
//! - `bench_tx`: returns XDP_TX and nothing else: the floor the per-packet benchmark divides by.
#![no_std]
#![no_main]

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

#[xdp]
pub fn lab_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[xdp]
pub fn bench_tx(_ctx: XdpContext) -> u32 {
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
