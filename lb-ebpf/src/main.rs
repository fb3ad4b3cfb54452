//! xdplb data plane: one XDP program, attached to the client-facing interface.
//!
//! Every packet goes parse -> classify (could it be for a VIP?) -> schedule (which real?) ->
//! rewrite -> action. Anything that is not for a configured VIP:port:protocol leaves
//! untouched with XDP_PASS, so the host's own traffic is never disturbed.
#![no_std]
#![no_main]

mod age;
mod classify;
mod csum;
mod dr;
mod flow_cache;
mod maps;
mod nat;
mod parse;
mod schedule;
mod stats;
mod zero;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use lb_common::{counters::Reason, service::REAL_NAT};

#[xdp]
pub fn xdplb(ctx: XdpContext) -> u32 {
    match try_xdplb(&ctx) {
        Ok(action) => action,
        Err(reason) => {
            stats::count_reason(reason);
            match reason {
                Reason::Fragment | Reason::NoReal => xdp_action::XDP_DROP,
                _ => xdp_action::XDP_PASS,
            }
        }
    }
}

#[inline(always)]
fn try_xdplb(ctx: &XdpContext) -> Result<u32, Reason> {
    let packet = parse::parse(ctx)?;
    if classify::maybe_to_vip(&packet) {
        classify::unicast(&packet)?;
        match schedule::pick_real(&packet) {
            Ok(chosen) if chosen.real.flags & REAL_NAT != 0 => {
                return nat::inbound(ctx, &packet, &chosen);
            }
            Ok(chosen) => {
                dr::rewrite(&packet, &chosen.real.mac);
                stats::count_forwarded(
                    chosen.real.service,
                    chosen.id,
                    packet.frame_len,
                    chosen.new_flow,
                );
                return Ok(xdp_action::XDP_TX);
            }
            // A filter collision: not a VIP after all, but it may still be a NAT reply.
            Err(Reason::NotForVip) => {}
            Err(reason) => return Err(reason),
        }
    }
    if classify::maybe_from_nat_real(&packet) {
        classify::unicast(&packet)?;
        return nat::reply(ctx, &packet);
    }
    Err(Reason::NotForVip)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
