//! Links through rtnetlink: bridges in the host's network namespace, veth pairs from a bridge
//! into a container's, and the container side's addresses and routes.
//!
//! The container side is configured from a thread that has entered the container's network
//! namespace (`setns` moves only the calling thread), with a netlink socket opened there; the
//! same thread opens the embedded DNS server's sockets at 127.0.0.11, which stay in that
//! namespace for their whole life.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use futures_util::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::link::{InfoData, InfoVeth};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::error::{Error, Result};

/// Where containers on user-defined networks find the embedded DNS server, as in Docker.
pub const DNS_ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);

fn netlink(context: &'static str) -> impl FnOnce(rtnetlink::Error) -> Error {
    move |error| Error::Network(format!("{context}: {error}"))
}

fn is_errno(error: &rtnetlink::Error, errno: rustix::io::Errno) -> bool {
    matches!(error, rtnetlink::Error::NetlinkError(message) if message.raw_code() == -errno.raw_os_error())
}

async fn connect() -> Result<Handle> {
    let (connection, handle, _) =
        rtnetlink::new_connection().map_err(|e| Error::Network(format!("cannot open a netlink socket: {e}")))?;
    tokio::spawn(connection);
    Ok(handle)
}

async fn index_of(handle: &Handle, name: &str) -> Result<Option<u32>> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link.map(|l| l.header.index)),
        Err(error) if is_errno(&error, rustix::io::Errno::NODEV) => Ok(None),
        Err(error) => Err(netlink("cannot look up a link")(error)),
    }
}

/// Creates the bridge if missing, gives it the gateway address and brings it up.
pub async fn ensure_bridge(name: &str, gateway: Ipv4Addr, subnet: &Ipv4Net) -> Result<()> {
    let handle = connect().await?;
    let index = match index_of(&handle, name).await? {
        Some(index) => index,
        None => {
            match handle.link().add(LinkBridge::new(name).build()).execute().await {
                Err(error) if !is_errno(&error, rustix::io::Errno::EXIST) => {
                    return Err(netlink("cannot create the bridge")(error));
                }
                _ => {}
            }
            index_of(&handle, name).await?.ok_or_else(|| Error::Network(format!("bridge {name} vanished")))?
        }
    };
    match handle.address().add(index, IpAddr::V4(gateway), subnet.prefix_len()).execute().await {
        Err(error) if !is_errno(&error, rustix::io::Errno::EXIST) => {
            return Err(netlink("cannot address the bridge")(error));
        }
        _ => {}
    }
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(netlink("cannot bring the bridge up"))
}

/// Deletes a link (a bridge, or a veth pair by either end); one already gone is fine.
pub async fn delete(name: &str) -> Result<()> {
    let handle = connect().await?;
    let Some(index) = index_of(&handle, name).await? else { return Ok(()) };
    match handle.link().del(index).execute().await {
        Err(error) if !is_errno(&error, rustix::io::Errno::NODEV) => Err(netlink("cannot delete a link")(error)),
        _ => Ok(()),
    }
}

/// One interface to make in a container: a veth from `bridge` named `host_name` on the host,
/// `name` (eth0, eth1...) inside.
#[derive(Clone, Debug)]
pub struct Interface {
    pub bridge: String,
    pub host_name: String,
    pub name: String,
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub mac: [u8; 6],
    pub gateway: Ipv4Addr,
}

/// A new, empty network namespace, made by a thread of its own that ends with it made (a
/// thread's network namespace is its own; no other thread's changes).
pub fn new_namespace() -> Result<OwnedFd> {
    let failed = |e: std::io::Error| Error::Network(format!("cannot make a network namespace: {e}"));
    let thread = std::thread::Builder::new().name("netns".into()).spawn(|| -> std::io::Result<OwnedFd> {
        // SAFETY: only CLONE_NEWNET: no descriptor table is unshared, so no descriptor changes meaning.
        #[allow(unsafe_code)]
        unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }?;
        std::fs::File::open("/proc/thread-self/ns/net").map(OwnedFd::from)
    });
    thread
        .map_err(failed)?
        .join()
        .map_err(|_| Error::Network("the network namespace thread panicked".into()))?
        .map_err(failed)
}

/// Makes the veth pairs with their container ends made directly in the network namespace
/// `netns`, already named and with their MAC addresses, and their host ends on their bridges and
/// up. (Making the end elsewhere and moving it in would cost the kernel a wait of tens of
/// milliseconds per interface; so would deleting it: a container's veth goes with its namespace.)
pub async fn add_veths(interfaces: &[Interface], netns: &OwnedFd) -> Result<()> {
    let handle = connect().await?;
    for interface in interfaces {
        let bridge = index_of(&handle, &interface.bridge)
            .await?
            .ok_or_else(|| Error::Network(format!("the bridge {} is missing", interface.bridge)))?;
        let inside = LinkUnspec::new_with_name(&interface.name)
            .setns_by_fd(netns.as_raw_fd())
            .address(interface.mac.to_vec())
            .build();
        let veth = LinkVeth::new(&interface.host_name, &interface.name)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(inside)))
            .controller(bridge)
            .up()
            .build();
        handle.link().add(veth).execute().await.map_err(netlink("cannot create a veth pair"))?;
    }
    Ok(())
}

/// Inside the namespace: loopback up, each interface addressed and up, with
/// `default_route` the default route through the first one's gateway; then `inside` (which opens
/// sockets that stay in that namespace).
pub fn configure_inside<T: Send + 'static>(
    netns: OwnedFd,
    interfaces: Vec<Interface>,
    default_route: bool,
    inside: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let thread = std::thread::Builder::new()
        .name("netns".into())
        .spawn(move || -> Result<T> {
            rustix::thread::move_into_link_name_space(netns.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network))
                .map_err(|e| Error::Network(format!("cannot enter the container's network namespace: {e}")))?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .map_err(|e| Error::Network(format!("cannot start a netlink runtime: {e}")))?;
            runtime.block_on(configure(&interfaces, default_route))?;
            inside()
        })
        .map_err(|e| Error::Network(format!("cannot start a thread: {e}")))?;
    thread.join().map_err(|_| Error::Network("the network namespace thread panicked".into()))?
}

async fn configure(interfaces: &[Interface], default_route: bool) -> Result<()> {
    let handle = connect().await?;
    let lo = index_of(&handle, "lo").await?.ok_or_else(|| Error::Network("no loopback interface".into()))?;
    handle
        .link()
        .set(LinkUnspec::new_with_index(lo).up().build())
        .execute()
        .await
        .map_err(netlink("cannot bring lo up"))?;
    for interface in interfaces {
        let index = index_of(&handle, &interface.name)
            .await?
            .ok_or_else(|| Error::Network(format!("{} did not reach the container", interface.name)))?;
        handle
            .address()
            .add(index, IpAddr::V4(interface.address), interface.prefix)
            .execute()
            .await
            .map_err(netlink("cannot address the container's interface"))?;
        handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(netlink("cannot bring the container's interface up"))?;
    }
    if let Some(first) = interfaces.first().filter(|_| default_route) {
        let route = RouteMessageBuilder::<Ipv4Addr>::new().gateway(first.gateway).build();
        handle.route().add(route).execute().await.map_err(netlink("cannot add the default route"))?;
    }
    Ok(())
}
