//! Address management: which subnet a new network gets, and which address a new endpoint gets.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// The subnets Docker hands out to networks created without `--subnet`: 172.17-31.0.0/16, then
/// 192.168.0-240.0/20.
pub fn default_pools() -> impl Iterator<Item = Ipv4Net> {
    let private_16 = (17..=31u8).filter_map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16).ok());
    let private_20 = (0..16u8).filter_map(|i| Ipv4Net::new(Ipv4Addr::new(192, 168, i * 16, 0), 20).ok());
    private_16.chain(private_20)
}

pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The first pool that overlaps none of `taken` (other networks' subnets, the host's routes).
pub fn choose_subnet(taken: &[Ipv4Net]) -> Option<Ipv4Net> {
    default_pools().find(|pool| !taken.iter().any(|t| overlaps(pool, t)))
}

/// The gateway Docker picks: the subnet's first host address.
pub fn default_gateway(subnet: &Ipv4Net) -> Option<Ipv4Addr> {
    subnet.hosts().next()
}

/// Whether an endpoint may have `ip` on `subnet`: one of its hosts (not its network or broadcast
/// address), and not the gateway.
pub fn assignable(subnet: &Ipv4Net, gateway: Ipv4Addr, ip: Ipv4Addr) -> bool {
    let edge = subnet.prefix_len() < 31 && (ip == subnet.network() || ip == subnet.broadcast());
    subnet.contains(&ip) && !edge && ip != gateway
}

/// The lowest assignable address of `pool` (the subnet, or its `--ip-range`) not in use.
pub fn next_free(pool: &Ipv4Net, subnet: &Ipv4Net, gateway: Ipv4Addr, used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    ipnet::Ipv4AddrRange::new(pool.network(), pool.broadcast())
        .find(|ip| assignable(subnet, gateway, *ip) && !used.contains(ip))
}

/// Docker's checks of `--ip-range` against its network's subnet, with Docker's reasons.
pub fn parse_ip_range(text: &str, subnet: &Ipv4Net) -> Result<Ipv4Net, String> {
    let invalid = |reason: String| format!("invalid network config:\ninvalid ip-range {text}: {reason}");
    let range: Ipv4Net = text.parse().map_err(|_| invalid("invalid CIDR block notation".into()))?;
    if range.prefix_len() < subnet.prefix_len() {
        return Err(invalid(format!("CIDR block is bigger than its parent subnet {subnet}")));
    }
    if range != range.trunc() {
        return Err(invalid(format!("it should be {}", range.trunc())));
    }
    if !subnet.contains(&range.network()) {
        return Err(invalid(format!("parent subnet {subnet} doesn't contain ip-range")));
    }
    Ok(range)
}

/// Docker's MAC for an address: 02:42 then the four bytes of the IPv4 address.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = ip.octets();
    [0x02, 0x42, a, b, c, d]
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// The IPv4 routes of the host's main table (`/proc/net/route`: hex destination and mask in host
/// byte order), so that a new network avoids subnets the host already reaches some other way.
/// Read from procfs rather than a netlink dump because this runs in synchronous code.
pub fn parse_routes(text: &str) -> Vec<Ipv4Net> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let hex = |i: usize| fields.get(i).and_then(|f| u32::from_str_radix(f, 16).ok());
            let (destination, mask) = (hex(1)?, hex(7)?);
            if mask == 0 {
                return None; // the default route overlaps everything
            }
            let prefix = u32::from_be(mask).count_ones() as u8;
            Ipv4Net::new(Ipv4Addr::from(u32::from_be(destination)), prefix).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn net(text: &str) -> Ipv4Net {
        text.parse().unwrap()
    }

    #[test]
    fn subnets_skip_what_is_taken() {
        assert_eq!(choose_subnet(&[]), Some(net("172.17.0.0/16")));
        assert_eq!(choose_subnet(&[net("172.17.0.0/16"), net("172.18.5.0/24")]), Some(net("172.19.0.0/16")));
        assert_eq!(choose_subnet(&[net("172.16.0.0/12")]), Some(net("192.168.0.0/20")));
        assert_eq!(choose_subnet(&[net("0.0.0.0/1"), net("128.0.0.0/1")]), None);
    }

    #[test]
    fn addresses_skip_the_gateway_and_those_in_use() {
        let subnet = net("10.1.0.0/29");
        let gateway = default_gateway(&subnet).unwrap();
        assert_eq!(gateway, Ipv4Addr::new(10, 1, 0, 1));
        let mut used = BTreeSet::new();
        assert_eq!(next_free(&subnet, &subnet, gateway, &used), Some(Ipv4Addr::new(10, 1, 0, 2)));
        used.extend((2..=6).map(|d| Ipv4Addr::new(10, 1, 0, d)));
        assert_eq!(next_free(&subnet, &subnet, gateway, &used), None, "7 is the broadcast address");
        // A range's own first and last addresses are the subnet's hosts.
        let upper = net("10.1.0.4/30");
        used.clear();
        assert_eq!(next_free(&upper, &subnet, gateway, &used), Some(Ipv4Addr::new(10, 1, 0, 4)));
        used.extend([Ipv4Addr::new(10, 1, 0, 4), Ipv4Addr::new(10, 1, 0, 5), Ipv4Addr::new(10, 1, 0, 6)]);
        assert_eq!(next_free(&upper, &subnet, gateway, &used), None);
        assert!(!assignable(&subnet, gateway, gateway) && !assignable(&subnet, gateway, Ipv4Addr::new(10, 1, 0, 0)));
        assert!(!assignable(&subnet, gateway, Ipv4Addr::new(10, 1, 0, 9)));
        assert_eq!(format_mac(&mac_for(Ipv4Addr::new(172, 18, 0, 2))), "02:42:ac:12:00:02");
    }

    #[test]
    fn ip_ranges_are_checked_as_docker_does() {
        let subnet = net("10.1.0.0/24");
        assert_eq!(parse_ip_range("10.1.0.128/25", &subnet), Ok(net("10.1.0.128/25")));
        let reason = |text| parse_ip_range(text, &subnet).unwrap_err().lines().last().unwrap().to_string();
        assert_eq!(reason("nope"), "invalid ip-range nope: invalid CIDR block notation");
        assert_eq!(
            reason("10.0.0.0/8"),
            "invalid ip-range 10.0.0.0/8: CIDR block is bigger than its parent subnet 10.1.0.0/24"
        );
        assert_eq!(reason("10.1.0.5/25"), "invalid ip-range 10.1.0.5/25: it should be 10.1.0.0/25");
        assert_eq!(
            reason("10.2.0.0/25"),
            "invalid ip-range 10.2.0.0/25: parent subnet 10.1.0.0/24 doesn't contain ip-range"
        );
    }

    #[test]
    fn host_routes_parse_and_the_default_route_is_skipped() {
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                    eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(parse_routes(text), vec![net("192.0.2.0/24")]);
    }
}
