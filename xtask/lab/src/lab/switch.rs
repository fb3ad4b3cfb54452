//! The lab's switch: a namespace holding bridges; every host plugs in with a veth pair.
//!
//! Two veth facts shape it (found by trial, see ../shared/DESIGN.md): a frame sent out of a
//! veth with XDP_TX or a redirect reaches the peer only if the peer runs an XDP program, so
//! every bridge port gets `lab_pass`; and a namespace's packets carry a partial checksum that
//! XDP_TX loses, so every host turns transmit checksum offload off.

use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use aya::{Ebpf, programs::Xdp};
use xdplb::dataplane::object;

use super::netns::{Netns, run};

pub struct Switch {
    /// Keep `lab_pass` attached to the ports (one object per `attach_pass`).
    pass: Vec<Ebpf>,
    ports: Vec<String>,
    /// Each port's host end: (namespace, interface), in `ports` order.
    hosts: Vec<(String, String)>,
    /// Ports `attach_pass` has done.
    attached: usize,
    pub ns: Netns,
}

impl Switch {
    pub fn new(prefix: &str, bridges: &[&str]) -> Result<Switch> {
        let ns = Netns::create(format!("{prefix}-sw"))?;
        for bridge in bridges {
            ns.ip(&["link", "add", bridge, "type", "bridge"])?;
            ns.ip(&["link", "set", bridge, "up"])?;
        }
        Ok(Switch {
            pass: Vec::new(),
            ports: Vec::new(),
            hosts: Vec::new(),
            attached: 0,
            ns,
        })
    }

    /// Connects `host` to `bridge`: interface `host_if` in the host with `address/prefix_len`.
    pub fn plug(
        &mut self,
        host: &Netns,
        host_if: &str,
        bridge: &str,
        address: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<()> {
        let port = format!("p{}", self.ports.len());
        self.ns.ip(&[
            "link", "add", &port, "type", "veth", "peer", "name", host_if, "netns", &host.name,
        ])?;
        self.ns
            .ip(&["link", "set", &port, "master", bridge, "up"])?;
        host.ip(&[
            "addr",
            "add",
            &format!("{address}/{prefix_len}"),
            "dev",
            host_if,
        ])?;
        host.ip(&["link", "set", host_if, "up"])?;
        run(host.command("ethtool").args(["-K", host_if, "tx", "off"]))?;
        self.ports.push(port);
        self.hosts.push((host.name.clone(), host_if.to_string()));
        Ok(())
    }

    /// The switch-side port that `host`'s interface `host_if` is plugged into.
    pub fn port_of(&self, host: &Netns, host_if: &str) -> Result<&str> {
        self.hosts
            .iter()
            .position(|(ns, interface)| *ns == host.name && interface == host_if)
            .map(|i| self.ports[i].as_str())
            .with_context(|| format!("{} {host_if} is not plugged in", host.name))
    }

    /// Sets the switch port of `host`'s `host_if` down (a pulled cable: the host loses
    /// carrier, as a NIC does) or up again.
    pub fn set_port(&self, host: &Netns, host_if: &str, up: bool) -> Result<()> {
        let port = self.port_of(host, host_if)?.to_string();
        self.ns
            .ip(&["link", "set", &port, if up { "up" } else { "down" }])?;
        Ok(())
    }

    /// Attaches `lab_pass` to every port plugged since the last call.
    pub fn attach_pass(&mut self) -> Result<()> {
        let ports = self.ports[self.attached..].to_vec();
        self.pass.push(self.ns.within(move || -> Result<Ebpf> {
            let mut ebpf = Ebpf::load(object::LAB)?;
            let program: &mut Xdp = ebpf
                .program_mut("lab_pass")
                .context("lab_pass")?
                .try_into()?;
            program.load()?;
            for port in &ports {
                program.attach(port, aya::programs::XdpMode::Default)?;
            }
            Ok(ebpf)
        })??);
        self.attached = self.ports.len();
        Ok(())
    }
}
