//! IP addresses as the maps keep them: one 16-byte form for both families, so every key and
//! value has one layout whether its service is IPv4 or IPv6.
//!
//! An IPv6 address is its 16 bytes in network order; an IPv4 address is kept in its
//! IPv4-mapped form, `::ffff:a.b.c.d` (RFC 4291 2.5.5.2), whose last word is the IPv4 address
//! as it lies in the packet. An IPv6 packet carrying a mapped address is never forwarded (the
//! data plane refuses it as martian), so the two families cannot meet in a key.
//!
//! What it costs: a flow key grows from 16 to 40 bytes (the connection table's entries by 48
//! bytes, a NAT flow's two by 96), and an IPv4 packet's key is built from two loads and two
//! constant stores as before, compared as five words instead of two.

/// An address, network byte order, in 32-bit words as they lie in memory. Aligned to 8 so
/// the data plane reads and writes it as two 64-bit words, also on its stack, where the
/// verifier refuses misaligned access; structures holding one have explicit padding to match.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Addr {
    pub words: [u32; 4],
}

/// The third word of an IPv4-mapped address (bytes 00 00 ff ff), as it lies in memory.
pub const V4_MAPPED: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

impl Addr {
    /// All zero (`::`): no address, where a field may hold none.
    pub const NONE: Addr = Addr { words: [0; 4] };

    /// An IPv4 address (network byte order, as it lies in the packet), mapped.
    #[inline(always)]
    pub const fn v4(addr: u32) -> Addr {
        Addr {
            words: [0, 0, V4_MAPPED, addr],
        }
    }

    /// A copy made word by word. A plain copy of a 16-byte field out of a map value or a
    /// packet often compiles to a call of the BPF program's byte-wise `memcpy`, whose loop the
    /// verifier walks on every path through it: copies on the data plane's paths use this.
    #[inline(always)]
    pub fn load(from: &Addr) -> Addr {
        let words = from.words.as_ptr();
        // SAFETY: four aligned u32 reads inside `from`; volatile, so the compiler cannot merge
        // them back into a memcpy call.
        unsafe {
            Addr {
                words: [
                    core::ptr::read_volatile(words),
                    core::ptr::read_volatile(words.add(1)),
                    core::ptr::read_volatile(words.add(2)),
                    core::ptr::read_volatile(words.add(3)),
                ],
            }
        }
    }

    /// Whether this is an IPv4(-mapped) address.
    #[inline(always)]
    pub const fn is_v4(&self) -> bool {
        self.words[0] == 0 && self.words[1] == 0 && self.words[2] == V4_MAPPED
    }

    /// The IPv4 address of a mapped one, network byte order.
    #[inline(always)]
    pub const fn v4_word(&self) -> u32 {
        self.words[3]
    }

    /// Equality as one comparison of the words' differences: derived `==` on an array may
    /// become a `bcmp` call, which BPF programs cannot make.
    #[inline(always)]
    pub const fn same(&self, other: &Addr) -> bool {
        (self.words[0] ^ other.words[0])
            | (self.words[1] ^ other.words[1])
            | (self.words[2] ^ other.words[2])
            | (self.words[3] ^ other.words[3])
            == 0
    }

    #[inline(always)]
    pub const fn is_none(&self) -> bool {
        self.words[0] | self.words[1] | self.words[2] | self.words[3] == 0
    }

    /// The address with only the bits of `mask` kept.
    #[inline(always)]
    pub const fn masked(&self, mask: &Addr) -> Addr {
        Addr {
            words: [
                self.words[0] & mask.words[0],
                self.words[1] & mask.words[1],
                self.words[2] & mask.words[2],
                self.words[3] & mask.words[3],
            ],
        }
    }

    /// The address folded into 32 bits for hashing. An IPv4 address folds to itself (its
    /// mapped prefix cancels), so IPv4 flows hash as they did before addresses had 16 bytes,
    /// and balancers on either side of that change pick the same real.
    #[inline(always)]
    pub const fn fold(&self) -> u32 {
        self.words[0]
            ^ self.words[1].rotate_left(8)
            ^ (self.words[2] ^ V4_MAPPED).rotate_left(16)
            ^ self.words[3]
    }

    /// The 16 bytes, network order.
    pub const fn octets(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        let mut i = 0;
        while i < 4 {
            let b = self.words[i].to_ne_bytes();
            out[i * 4] = b[0];
            out[i * 4 + 1] = b[1];
            out[i * 4 + 2] = b[2];
            out[i * 4 + 3] = b[3];
            i += 1;
        }
        out
    }

    pub const fn from_octets(octets: [u8; 16]) -> Addr {
        let mut words = [0u32; 4];
        let mut i = 0;
        while i < 4 {
            words[i] = u32::from_ne_bytes([
                octets[i * 4],
                octets[i * 4 + 1],
                octets[i * 4 + 2],
                octets[i * 4 + 3],
            ]);
            i += 1;
        }
        Addr { words }
    }

    /// The netmask of a prefix of `len` bits in this address's family (IPv4: 0-32, counted in
    /// the mapped address's last word; IPv6: 0-128).
    pub const fn prefix_mask(v4: bool, len: u32) -> Addr {
        let len = if v4 { len + 96 } else { len };
        let mut octets = [0u8; 16];
        let mut bit = 0;
        while bit < 128 {
            if bit < len {
                octets[(bit / 8) as usize] |= 0x80 >> (bit % 8);
            }
            bit += 1;
        }
        Addr::from_octets(octets)
    }
}

impl From<core::net::IpAddr> for Addr {
    fn from(ip: core::net::IpAddr) -> Addr {
        match ip {
            core::net::IpAddr::V4(v4) => Addr::v4(u32::from_ne_bytes(v4.octets())),
            core::net::IpAddr::V6(v6) => Addr::from_octets(v6.octets()),
        }
    }
}

impl From<core::net::Ipv4Addr> for Addr {
    fn from(ip: core::net::Ipv4Addr) -> Addr {
        Addr::v4(u32::from_ne_bytes(ip.octets()))
    }
}

impl From<core::net::Ipv6Addr> for Addr {
    fn from(ip: core::net::Ipv6Addr) -> Addr {
        Addr::from_octets(ip.octets())
    }
}

impl From<Addr> for core::net::IpAddr {
    /// A mapped address is the IPv4 address it maps.
    fn from(addr: Addr) -> core::net::IpAddr {
        core::net::Ipv6Addr::from(addr.octets()).to_canonical()
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain #[repr(C)] data without padding.
    unsafe impl aya::Pod for super::Addr {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    #[test]
    fn ipv4_is_mapped_and_round_trips() {
        let ip: IpAddr = Ipv4Addr::new(198, 18, 0, 100).into();
        let addr = Addr::from(ip);
        assert!(addr.is_v4());
        assert_eq!(addr.v4_word().to_ne_bytes(), [198, 18, 0, 100]);
        assert_eq!(IpAddr::from(addr), ip);
        assert_eq!(
            addr.octets(),
            Ipv4Addr::new(198, 18, 0, 100).to_ipv6_mapped().octets()
        );
    }

    #[test]
    fn an_ipv4_address_folds_to_itself() {
        let addr = Addr::from(Ipv4Addr::new(198, 18, 0, 100));
        assert_eq!(addr.fold(), u32::from_ne_bytes([198, 18, 0, 100]));
        let masked = addr.masked(&Addr::prefix_mask(true, 24));
        assert_eq!(masked.fold(), u32::from_ne_bytes([198, 18, 0, 0]));
    }

    #[test]
    fn ipv6_round_trips() {
        let ip: IpAddr = "2001:2::100".parse::<Ipv6Addr>().unwrap().into();
        let addr = Addr::from(ip);
        assert!(!addr.is_v4());
        assert_eq!(IpAddr::from(addr), ip);
    }

    #[test]
    fn prefix_masks() {
        let v4 = Addr::prefix_mask(true, 24);
        assert_eq!(v4.words[..3], [u32::MAX; 3]);
        assert_eq!(v4.words[3].to_ne_bytes(), [255, 255, 255, 0]);
        assert_eq!(Addr::prefix_mask(true, 32).words, [u32::MAX; 4]);
        let v6 = Addr::prefix_mask(false, 64);
        assert_eq!(v6.octets(), {
            let mut o = [0u8; 16];
            o[..8].fill(0xff);
            o
        });
        assert_eq!(Addr::prefix_mask(false, 0), Addr::NONE);
    }

    #[test]
    fn layouts_have_no_implicit_padding() {
        // aya::Pod and the kernel's byte-wise key comparison need every byte a field's.
        use crate::{flow::*, service::*};
        use core::mem::size_of;
        assert_eq!(size_of::<Addr>(), 16);
        assert_eq!(size_of::<VipKey>(), 16 + 2 + 1 + 1 + 4);
        assert_eq!(size_of::<Service>(), 4 * 4 + 16);
        assert_eq!(
            size_of::<Real>(),
            6 + 2 + 3 * 16 + 4 + 4 + 2 + 2 + 4 + 4 + 4
        );
        assert_eq!(size_of::<FlowKey>(), 40);
        assert_eq!(size_of::<NextHop>(), 4 + 4 + 8 + 8);
        assert_eq!(
            size_of::<CachedFlow>(),
            40 + 16 + 16 + 16 + 24 + 6 + 2 + 2 + 2 + 4
        );
        assert_eq!(size_of::<NatReverse>(), 16 + 16 + 8 + 16 + 24);
        assert_eq!(size_of::<ReplySource>(), 16 + 8);
        assert_eq!(size_of::<NatOrigin>(), 16 + 4 + 8 + 4);
        assert_eq!(size_of::<PersistKey>(), 16 + 8);
    }
}
