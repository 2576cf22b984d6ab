//! Where a function granted the network may connect: its grants become an nftables
//! ruleset for the sandbox's own network namespace (applied by the sandbox's init,
//! which is root there), and whether slirp4netns forwards to the host's loopback at
//! all. Names are resolved when the instance starts. What is not granted is refused
//! at once (a reset, not a silent drop), so a function fails fast.

use lambent_core::grant::{Host, NetGrant};
use std::fmt::Write;

/// The NAT's gateway inside the namespace: the host's loopback when forwarded.
const GATEWAY: &str = "10.0.2.2";

/// What a set of network grants allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Egress {
    /// Whether slirp4netns forwards the gateway to the host's loopback.
    pub host_loopback: bool,
    /// The ruleset, when the grants are narrower than "the network, not the host".
    pub firewall: Option<String>,
}

/// The egress for `grants` (not empty); `resolve` turns a name into IPv4 addresses.
pub async fn plan<F, Fut>(grants: &[NetGrant], resolve: F) -> Result<Egress, String>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<Vec<std::net::Ipv4Addr>>>,
{
    if grants.iter().all(|g| *g == NetGrant::Any) {
        return Ok(Egress {
            host_loopback: false,
            firewall: None,
        });
    }
    let mut rules = String::new();
    let mut host_loopback = false;
    let ports = |port: Option<u16>| match port {
        Some(p) => format!(" meta l4proto {{ tcp, udp }} th dport {p}"),
        None => String::new(),
    };
    for grant in grants {
        match grant {
            NetGrant::Any => {
                let _ = writeln!(rules, "    ip daddr != {GATEWAY} accept");
            }
            NetGrant::To {
                host: Host::Loopback,
                port,
                ..
            } => {
                host_loopback = true;
                let _ = writeln!(rules, "    ip daddr {GATEWAY}{} accept", ports(*port));
            }
            NetGrant::To {
                host: Host::Block { addr, prefix },
                port,
                ..
            } => {
                let _ = writeln!(rules, "    ip daddr {addr}/{prefix}{} accept", ports(*port));
            }
            NetGrant::To {
                host: Host::Wildcard(domain),
                ..
            } => {
                return Err(format!(
                    "the grant for `*.{domain}` names no address: a process function's egress is filtered by address (wildcards are for wasm functions)"
                ));
            }
            NetGrant::To {
                host: Host::Name(name),
                port,
                ..
            } => {
                let addrs = resolve(name.clone())
                    .await
                    .map_err(|e| format!("cannot resolve `{name}` for its grant: {e}"))?;
                if addrs.is_empty() {
                    return Err(format!("`{name}` has no IPv4 address for its grant"));
                }
                for addr in addrs {
                    let _ = writeln!(rules, "    ip daddr {addr}{} accept", ports(*port));
                }
            }
        }
    }
    let firewall = format!(
        "table inet lambent {{\n  chain out {{\n    type filter hook output priority 0; policy drop;\n    oif \"lo\" accept\n    ct state established,related accept\n    ip daddr {} meta l4proto {{ tcp, udp }} th dport 53 accept\n{rules}    meta l4proto tcp reject with tcp reset\n    reject\n  }}\n}}\n",
        super::slirp::DNS
    );
    Ok(Egress {
        host_loopback,
        firewall: Some(firewall),
    })
}

/// Names resolved by the system's resolver (IPv4 only: the sandbox's NAT has no IPv6).
pub async fn resolve(name: String) -> std::io::Result<Vec<std::net::Ipv4Addr>> {
    let mut out: Vec<std::net::Ipv4Addr> = tokio::net::lookup_host((name.as_str(), 0))
        .await?
        .filter_map(|a| match a.ip() {
            std::net::IpAddr::V4(v4) => Some(v4),
            std::net::IpAddr::V6(_) => None,
        })
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambent_core::grant::parse;

    fn grants(list: &[&str]) -> Vec<NetGrant> {
        list.iter().map(|g| parse(g).unwrap()).collect()
    }

    async fn fixed(name: String) -> std::io::Result<Vec<std::net::Ipv4Addr>> {
        match name.as_str() {
            "api.example.com" => Ok(vec![[192, 0, 2, 7].into(), [192, 0, 2, 8].into()]),
            _ => Err(std::io::Error::other("no such host")),
        }
    }

    #[tokio::test]
    async fn grants_become_rules() {
        let open = plan(&grants(&["net"]), fixed).await.unwrap();
        assert_eq!(
            open,
            Egress {
                host_loopback: false,
                firewall: None
            }
        );

        let narrow = plan(
            &grants(&[
                "net:api.example.com:443",
                "net:10.0.0.0/8",
                "net:localhost:5432",
            ]),
            fixed,
        )
        .await
        .unwrap();
        assert!(narrow.host_loopback);
        let rules = narrow.firewall.unwrap();
        for line in [
            "policy drop;",
            "ip daddr 192.0.2.7 meta l4proto { tcp, udp } th dport 443 accept",
            "ip daddr 192.0.2.8 meta l4proto { tcp, udp } th dport 443 accept",
            "ip daddr 10.0.0.0/8 accept",
            "ip daddr 10.0.2.2 meta l4proto { tcp, udp } th dport 5432 accept",
        ] {
            assert!(rules.contains(line), "{line} missing from\n{rules}");
        }
        // The network plus one loopback service: everything but the rest of the
        // host's loopback.
        let both = plan(&grants(&["net", "net:127.0.0.1:8080"]), fixed)
            .await
            .unwrap();
        let rules = both.firewall.unwrap();
        assert!(rules.contains("ip daddr != 10.0.2.2 accept"));
        assert!(rules.contains("ip daddr 10.0.2.2 meta l4proto { tcp, udp } th dport 8080 accept"));

        let unknown = plan(&grants(&["net:nowhere.invalid"]), fixed).await;
        assert!(unknown.unwrap_err().contains("nowhere.invalid"));
    }
}
