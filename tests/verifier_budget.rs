//! The kernel verifier walks every path of a program and gives up after 1,000,000
//! instructions. The data plane's paths multiply with every feature; this test fails while
//! there is still room, so a change that nears the limit is seen as such, not as a load
//! failure on some kernel later.

use aya::programs::Xdp;
use lb_common::maps::{PROGRAM_NAME, TAIL_CALLED};
use xdplb_tests::fixture::Dataplane;

/// The kernel's limit, and the share of it a program may use.
const LIMIT: u32 = 1_000_000;
const BUDGET: u32 = LIMIT * 3 / 4;

const POLICY: &str = "
interfaces:
  - name: lo
services:
  - name: dicom
    vip: 198.18.0.100
    ports: [104]
    protocol: tcp
    forwarding: dr
    reals:
      - address: 198.18.0.11
";

#[test]
fn every_program_verifies_well_within_the_kernels_limit() {
    let dp = Dataplane::new(POLICY, &[]);
    let tail_called = TAIL_CALLED.iter().map(|(name, _)| *name);
    for name in std::iter::once(PROGRAM_NAME).chain(tail_called) {
        let program: &Xdp = dp.loaded.ebpf.program(name).unwrap().try_into().unwrap();
        let verified = program
            .info()
            .unwrap()
            .verified_instruction_count()
            .expect("the kernel reports verified instructions (5.16 and later)");
        eprintln!(
            "{name}: {verified} instructions verified, {}% of the kernel's limit",
            verified as u64 * 100 / LIMIT as u64
        );
        assert!(
            verified <= BUDGET,
            "{name} took {verified} verified instructions, over the budget of {BUDGET} (limit {LIMIT}): \
             split a path off (a tail call, as icmp.rs) or keep fewer values alive across branches"
        );
    }
}
