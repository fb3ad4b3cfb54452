//! Everything that touches the BPF side: the embedded programs, loading and pinning, writing
//! the maps from the policy, reading counters.

pub mod clock;
pub mod counters;
pub mod filter;
pub mod loader;
pub mod maglev;
pub mod maps;
pub mod object;
pub mod snat_sweep;
pub mod sync;
