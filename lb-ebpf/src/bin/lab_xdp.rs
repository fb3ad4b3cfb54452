//! XDP programs for the namespace lab and the benchmarks, not for production:
//! - `lab_pass`: attached to a veth's peer so frames sent there with XDP_TX are received
//!   (a veth drops XDP_TX frames unless its peer runs an XDP program).
//! - `bench_tx`: returns XDP_TX and nothing else: the floor the per-packet benchmark divides by.
//! - `bench_gen`: the end-to-end traffic generator, run with BPF_PROG_TEST_RUN in live-frames
//!   mode: writes the template frame from `GEN_TEMPLATE` over each frame (the kernel recycles
//!   pages a forwarder downstream rewrote) and sends it with XDP_TX.
//! - `flood_gen`: as `bench_gen` with a TCP SYN template, each frame from another spoofed
//!   source: address and port from a counter (`FLOOD_COUNTER`), 2,097,152 distinct in turn.
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
    if write_template(&ctx) {
        xdp_action::XDP_TX
    } else {
        xdp_action::XDP_ABORTED
    }
}

/// Writes `GEN_TEMPLATE` over the start of the frame; false if the frame is too short.
#[inline(always)]
fn write_template(ctx: &XdpContext) -> bool {
    let start = ctx.data();
    if start + TEMPLATE_WORDS * 8 > ctx.data_end() {
        return false;
    }
    let Some(template) = GEN_TEMPLATE.get(0) else {
        return false;
    };
    let frame = start as *mut u64;
    for (i, word) in template.iter().enumerate() {
        // SAFETY: the bounds check above covers TEMPLATE_WORDS words; live frames start at
        // the page-pool headroom, 8-byte aligned (word stores keep the generator faster than
        // any path it measures).
        unsafe { *frame.add(i) = *word };
    }
    true
}

/// Frames `flood_gen` has sent (per CPU): picks each frame's spoofed source.
#[map]
static FLOOD_COUNTER: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Offsets in the untagged IPv4/TCP template.
const IP_START: usize = 14;
const IP_CHECK: usize = 24;
const IP_SRC: usize = 26;
const TCP_SPORT: usize = 34;
const TCP_CHECK: usize = 50;

/// The SYN flood: the template (a TCP SYN from 198.18.0.0:1024, from the lab) with source
/// 198.18.0.0/15 + (n mod 2^17) and port 1024 + (n / 2^17 mod 32) for the nth frame; the IP
/// checksum is recomputed (the balancer checks it) and the TCP checksum updated.
#[xdp]
pub fn flood_gen(ctx: XdpContext) -> u32 {
    if !write_template(&ctx) {
        return xdp_action::XDP_ABORTED;
    }
    let Some(counter) = FLOOD_COUNTER.get_ptr_mut(0) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: a per-CPU slot.
    let n = unsafe {
        let n = *counter;
        *counter = n.wrapping_add(1);
        n
    };
    let low = n & 0x1_ffff;
    let src_high = [198u8, 18 | (low >> 16) as u8];
    let src_low = [(low >> 8) as u8, low as u8];
    let sport = (1024 + ((n >> 17) & 0x1f) as u16).to_be_bytes();
    let frame = ctx.data() as *mut u8;
    // The verifier wants the bound proven on this pointer too.
    if frame as usize + TEMPLATE_WORDS * 8 > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    // SAFETY: the frame holds the 64-byte template (checked just above).
    unsafe {
        let word = |at: usize| u16::from_ne_bytes([*frame.add(at), *frame.add(at + 1)]) as u32;
        let old = word(IP_SRC) + word(IP_SRC + 2) + word(TCP_SPORT);
        for (at, bytes) in [
            (IP_SRC, src_high),
            (IP_SRC + 2, src_low),
            (TCP_SPORT, sport),
        ] {
            *frame.add(at) = bytes[0];
            *frame.add(at + 1) = bytes[1];
        }
        let new = word(IP_SRC) + word(IP_SRC + 2) + word(TCP_SPORT);
        // TCP: RFC 1624, HC' = ~(~HC + ~m + m') with the three words summed.
        let check = word(TCP_CHECK);
        let sum = (!check & 0xffff) + (3 * 0xffff - old) + new;
        let check = !fold(sum) as u16;
        let [a, b] = check.to_ne_bytes();
        *frame.add(TCP_CHECK) = a;
        *frame.add(TCP_CHECK + 1) = b;
        // IPv4 header: recomputed over its 20 bytes.
        *frame.add(IP_CHECK) = 0;
        *frame.add(IP_CHECK + 1) = 0;
        let mut sum = 0u32;
        for i in 0..10 {
            sum += word(IP_START + 2 * i);
        }
        let [a, b] = (!fold(sum) as u16).to_ne_bytes();
        *frame.add(IP_CHECK) = a;
        *frame.add(IP_CHECK + 1) = b;
    }
    xdp_action::XDP_TX
}

/// One's-complement fold of a sum of 16-bit words.
#[inline(always)]
fn fold(mut sum: u32) -> u32 {
    sum = (sum & 0xffff) + (sum >> 16);
    (sum & 0xffff) + (sum >> 16)
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
