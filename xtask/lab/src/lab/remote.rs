//! A client at a remote site: behind a router whose link toward it has a smaller MTU (a VPN,
//! a WAN tunnel), so large packets toward the client make the router send "fragmentation
//! needed" to their source: Path MTU discovery.
//!
//! ```text
//!   lab segment (a bridge) ── eth0 198.18.0.254 [router] eth1 198.18.1.254, MTU 1400
//!                                                           │ veth
//!                                     client eth0 198.18.1.1, MTU 1500 (so it offers MSS 1460)
//! ```
//! The lab's hosts need a route to 198.18.1.0/24 via 198.18.0.254 (`route_via_router`).

use std::net::Ipv4Addr;

use anyhow::Result;

use super::{
    Switch,
    netns::{Netns, run},
};

pub const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);
pub const REMOTE_CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
pub const REMOTE_NET: &str = "198.18.1.0/24";

pub struct RemoteClient {
    pub client: Netns,
    pub router: Netns,
}

impl RemoteClient {
    /// Plugs the router into `bridge` of `switch` and puts the client behind it; the link's
    /// router end has MTU `mtu`. Call `switch.attach_pass()` afterwards.
    pub fn build(prefix: &str, switch: &mut Switch, bridge: &str, mtu: u32) -> Result<Self> {
        let router = Netns::create(format!("{prefix}-rtr"))?;
        let client = Netns::create(format!("{prefix}-remote"))?;
        switch.plug(&router, "eth0", bridge, ROUTER, 24)?;
        router.ip(&[
            "link",
            "add",
            "eth1",
            "mtu",
            &mtu.to_string(),
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &client.name,
        ])?;
        router.ip(&["addr", "add", "198.18.1.254/24", "dev", "eth1"])?;
        router.ip(&["link", "set", "eth1", "up"])?;
        client.ip(&["addr", "add", &format!("{REMOTE_CLIENT}/24"), "dev", "eth0"])?;
        client.ip(&["link", "set", "eth0", "up"])?;
        client.ip(&["route", "add", "default", "via", "198.18.1.254"])?;
        // A namespace's packets carry partial checksums that XDP_TX would lose downstream.
        run(client.command("ethtool").args(["-K", "eth0", "tx", "off"]))?;
        run(router.command("ethtool").args(["-K", "eth1", "tx", "off"]))?;
        for setting in [
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        ] {
            run(router.command("sysctl").args(["-qw", setting]))?;
        }
        Ok(RemoteClient { client, router })
    }

    /// Routes the remote network from `host` through the router.
    pub fn route_via_router(host: &Netns) -> Result<()> {
        host.ip(&["route", "replace", REMOTE_NET, "via", &ROUTER.to_string()])?;
        Ok(())
    }
}
