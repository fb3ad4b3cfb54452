//! Test frames, built and checked with etherparse (an independent packet library).

use std::net::Ipv4Addr;

use etherparse::{
    EtherType, Ethernet2Header, IpNumber, Ipv4Header, Ipv4Options, PacketBuilder, SingleVlanHeader,
    TcpHeader, UdpHeader, VlanId,
};

pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];

/// What to put in a TCP/UDP test frame.
#[derive(Clone, Debug)]
pub struct Flow {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
}

impl Flow {
    pub fn new(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Flow {
        Flow {
            src,
            dst,
            sport,
            dport,
        }
    }
}

/// Optional parts of a frame.
#[derive(Clone, Debug, Default)]
pub struct Shape {
    pub vlan: Option<u16>,
    pub ip_options: bool,
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
    /// IPv4 flags/offset: (more fragments, offset in 8-byte units).
    pub fragment: Option<(bool, u16)>,
    pub dst_mac: Option<[u8; 6]>,
}

pub fn tcp(flow: &Flow, shape: &Shape, payload: &[u8]) -> Vec<u8> {
    let mut tcp = TcpHeader::new(flow.sport, flow.dport, 1000, 64240);
    tcp.syn = shape.syn;
    tcp.fin = shape.fin;
    tcp.rst = shape.rst;
    tcp.ack = !shape.syn;
    let ip = ip_header(flow, shape, IpNumber::TCP, tcp.header_len() + payload.len());
    tcp.checksum = tcp.calc_checksum_ipv4(&ip, payload).unwrap();
    let mut l4 = Vec::new();
    tcp.write(&mut l4).unwrap();
    l4.extend_from_slice(payload);
    assemble(shape, &ip, &l4)
}

pub fn udp(flow: &Flow, shape: &Shape, payload: &[u8]) -> Vec<u8> {
    let ip = ip_header(flow, shape, IpNumber::UDP, UdpHeader::LEN + payload.len());
    let udp = UdpHeader::with_ipv4_checksum(flow.sport, flow.dport, &ip, payload).unwrap();
    let mut l4 = udp.to_bytes().to_vec();
    l4.extend_from_slice(payload);
    assemble(shape, &ip, &l4)
}

fn ip_header(flow: &Flow, shape: &Shape, proto: IpNumber, payload_len: usize) -> Ipv4Header {
    let mut ip = Ipv4Header::new(
        payload_len as u16,
        64,
        proto,
        flow.src.octets(),
        flow.dst.octets(),
    )
    .unwrap();
    if shape.ip_options {
        // Router alert (RFC 2113), then three NOPs and end-of-list: 8 bytes of options.
        ip.options =
            Ipv4Options::try_from(&[0x94, 0x04, 0x00, 0x00, 0x01, 0x01, 0x01, 0x00][..]).unwrap();
        ip.set_payload_len(payload_len).unwrap(); // total length now counts the options
    }
    if let Some((more, offset)) = shape.fragment {
        ip.dont_fragment = false;
        ip.more_fragments = more;
        ip.fragment_offset = etherparse::IpFragOffset::try_new(offset).unwrap();
    }
    ip.header_checksum = ip.calc_header_checksum();
    ip
}

fn assemble(shape: &Shape, ip: &Ipv4Header, l4: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    let dst = shape.dst_mac.unwrap_or(LB_MAC);
    match shape.vlan {
        None => Ethernet2Header {
            source: CLIENT_MAC,
            destination: dst,
            ether_type: EtherType::IPV4,
        }
        .write(&mut frame)
        .unwrap(),
        Some(vid) => {
            Ethernet2Header {
                source: CLIENT_MAC,
                destination: dst,
                ether_type: EtherType::VLAN_TAGGED_FRAME,
            }
            .write(&mut frame)
            .unwrap();
            SingleVlanHeader {
                pcp: etherparse::VlanPcp::ZERO,
                drop_eligible_indicator: false,
                vlan_id: VlanId::try_new(vid).unwrap(),
                ether_type: EtherType::IPV4,
            }
            .write(&mut frame)
            .unwrap();
        }
    }
    ip.write(&mut frame).unwrap();
    frame.extend_from_slice(l4);
    frame
}

pub fn arp_request(target: Ipv4Addr) -> Vec<u8> {
    let mut frame = Vec::new();
    Ethernet2Header {
        source: CLIENT_MAC,
        destination: [0xff; 6],
        ether_type: EtherType::ARP,
    }
    .write(&mut frame)
    .unwrap();
    let arp = etherparse::ArpPacket::new(
        etherparse::ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        etherparse::ArpOperation::REQUEST,
        &CLIENT_MAC,
        &[198, 18, 0, 1],
        &[0; 6],
        &target.octets(),
    )
    .unwrap();
    frame.extend_from_slice(&arp.to_bytes());
    frame
}

pub fn ipv6_udp() -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv6(
            [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            64,
        )
        .udp(5000, 104);
    let mut frame = Vec::new();
    builder.write(&mut frame, b"hello").unwrap();
    frame
}

/// The IP header and L4 checksums of `frame` are valid, as an independent parser computes them.
pub fn assert_checksums_valid(frame: &[u8]) {
    let sliced = etherparse::SlicedPacket::from_ethernet(frame).expect("output frame parses");
    let Some(etherparse::NetSlice::Ipv4(ip)) = &sliced.net else {
        panic!("not IPv4")
    };
    let header = ip.header().to_header();
    assert_eq!(
        header.header_checksum,
        header.calc_header_checksum(),
        "IPv4 header checksum"
    );
    let payload = ip.payload().payload;
    match &sliced.transport {
        Some(etherparse::TransportSlice::Tcp(tcp)) => {
            let h = tcp.to_header();
            assert_eq!(
                h.checksum,
                h.calc_checksum_ipv4(&header, tcp.payload()).unwrap(),
                "TCP checksum"
            );
        }
        Some(etherparse::TransportSlice::Udp(udp)) => {
            let h = udp.to_header();
            if h.checksum != 0 {
                assert_eq!(
                    h.checksum,
                    h.calc_checksum_ipv4(&header, udp.payload()).unwrap(),
                    "UDP checksum"
                );
            }
        }
        other => panic!(
            "unexpected transport {other:?} ({} payload bytes)",
            payload.len()
        ),
    }
}

/// What a forwarded frame carries, its checksums checked first.
pub struct Seen {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub ttl: u8,
    pub payload: Vec<u8>,
}

pub fn seen(frame: &[u8]) -> Seen {
    assert_checksums_valid(frame);
    let p = etherparse::SlicedPacket::from_ethernet(frame).unwrap();
    let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
        panic!("not IPv4")
    };
    let (sport, dport, payload) = match &p.transport {
        Some(etherparse::TransportSlice::Tcp(t)) => {
            (t.source_port(), t.destination_port(), t.payload().to_vec())
        }
        Some(etherparse::TransportSlice::Udp(u)) => {
            (u.source_port(), u.destination_port(), u.payload().to_vec())
        }
        _ => panic!("no TCP/UDP"),
    };
    Seen {
        src: ip.header().source_addr(),
        dst: ip.header().destination_addr(),
        sport,
        dport,
        ttl: ip.header().ttl(),
        payload,
    }
}

/// Destination and source MAC of a frame.
pub fn macs(frame: &[u8]) -> ([u8; 6], [u8; 6]) {
    (
        frame[0..6].try_into().unwrap(),
        frame[6..12].try_into().unwrap(),
    )
}
