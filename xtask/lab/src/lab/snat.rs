//! The SNAT labs (networks in arms.rs): nothing at all is configured on the reals. They have
//! no route to the clients (two-arm: no default route; one-arm: the client's subnet, on the
//! same segment, is not theirs), no VIP, no xdplb: a reply reaches a client only because SNAT
//! addressed the request to them from the balancer.
//!
//! Each real serves TCP on 8080 (EchoServer: `who`, `peer` and HTTP, keep-alive included,
//! with `GET /peer` answering the address the real sees), UDP on 53 (`peer` likewise) and
//! DICOM on 104 (dcmtk's storescp). The policy maps VIP:80 to real:8080, VIP:53 and VIP:104
//! to the same ports, all `forwarding: snat` with the default source: the balancer's own
//! address toward the reals (`snat_source`).

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
};

use anyhow::Result;

use super::{
    Balancer, Daemon, EchoServer, Switch, UdpNameServer,
    arms::{Arms, NAT_VIP, Topology, interfaces_policy},
    netns::Netns,
};

/// The reals' DICOM port, and the VIP's.
pub const SNAT_DICOM_PORT: u16 = 104;

pub struct SnatLab {
    pub balancer: Balancer,
    _tcp: Vec<EchoServer>,
    _udp: Vec<UdpNameServer>,
    _dicom: Vec<Daemon>,
    /// Where each real's storescp stores what it receives, in `reals` order.
    pub dicom_dirs: Vec<PathBuf>,
    pub arms: Arms,
    pub prefix: String,
    pub client: Netns,
    pub client_addr: Ipv4Addr,
    pub reals: Vec<(Netns, Ipv4Addr, String)>,
    /// The balancer's address on the reals' network: the source the reals see.
    pub snat_source: Ipv4Addr,
    pub switch: Switch,
}

impl SnatLab {
    pub fn build(arms: Arms, reals: usize) -> Result<SnatLab> {
        let Topology {
            balancer,
            arms,
            prefix,
            client,
            client_addr,
            reals: hosts,
            real_side,
            ipv6: _,
            switch,
        } = Topology::build(arms, reals)?;
        let (mut tcp, mut udp, mut dicom, mut dicom_dirs) = (vec![], vec![], vec![], vec![]);
        for (ns, _, name) in &hosts {
            tcp.push(EchoServer::start(ns, 8080, name)?);
            udp.push(UdpNameServer::start(ns, 53, name)?);
            let dir = balancer.work_dir.join("dicom").join(name);
            std::fs::create_dir_all(&dir)?;
            // One process per association (--fork); each holds its association a second
            // after every instance (--sleep-after), long enough to be seen with `ss` on the
            // real. Unique file names: an instance stored twice leaves two files.
            dicom.push(Daemon::start(
                ns,
                SNAT_DICOM_PORT,
                "storescp",
                &[
                    "--fork",
                    "--sleep-after",
                    "1",
                    "+uf",
                    "-od",
                    dir.to_str().unwrap(),
                    &SNAT_DICOM_PORT.to_string(),
                ],
            )?);
            dicom_dirs.push(dir);
        }
        Ok(SnatLab {
            balancer,
            _tcp: tcp,
            _udp: udp,
            _dicom: dicom,
            dicom_dirs,
            arms,
            prefix,
            client,
            client_addr,
            reals: hosts,
            snat_source: real_side,
            switch,
        })
    }

    pub fn vip(&self, port: u16) -> SocketAddr {
        SocketAddr::from((NAT_VIP, port))
    }

    /// Three SNAT services over every real: `viewer` VIP:80 (TCP) to real:8080, `dns` VIP:53
    /// (UDP) and `dicom` VIP:104 (TCP) to the same ports. DICOM is checked on 8080, so every
    /// connection to a real's 104 is a VIP flow's.
    pub fn policy(&self) -> String {
        let mut text = interfaces_policy(self.arms);
        text += "services:\n";
        let services = [
            ("viewer", 80, "tcp", "", "        port: 8080\n"),
            ("dns", 53, "udp", "", ""),
            (
                "dicom",
                SNAT_DICOM_PORT,
                "tcp",
                "    health:\n      check: tcp\n      port: 8080\n",
                "",
            ),
        ];
        for (name, port, protocol, health, real_port) in services {
            text += &format!(
                "  - name: {name}\n    vip: {NAT_VIP}\n    ports: [{port}]\n    protocol: {protocol}\n    forwarding: snat\n{health}    reals:\n"
            );
            for (_, addr, _) in &self.reals {
                text += &format!("      - address: {addr}\n{real_port}");
            }
        }
        text
    }
}
