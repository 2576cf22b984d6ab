//! What a function may reach beyond its sandbox: `--grant` values, deny by default.
//!
//! - `net`: the network, but not the host's loopback;
//! - `net:HOST`, `net:HOST:PORT`: only that destination (`HOST` an IPv4 address, a
//!   CIDR block or a name resolved when an instance starts); `127.0.0.1` or
//!   `localhost` names a service on the host's loopback, which the function reaches
//!   at `10.0.2.2` (the NAT's gateway);
//! - `net:SCHEME://HOST[:PORT]` (`http` or `https`; the port defaults to the
//!   scheme's) and wildcard names `*.example.com`: for WebAssembly functions, whose
//!   outbound HTTP is checked request by request (a process's egress is filtered by
//!   address, so it cannot use a wildcard);
//! - `kv:NS`: read and write the key-value namespace `NS` (`kv:*`: every namespace);
//! - `publish:TYPE`: publish events of type `TYPE` (`publish:*`: any type).

use std::net::Ipv4Addr;

/// One outbound destination a function may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetGrant {
    /// Anything but the host's loopback.
    Any,
    /// One host (or block), on one port or every port, for one scheme or any.
    To {
        host: Host,
        port: Option<u16>,
        scheme: Option<Scheme>,
    },
}

/// The scheme a grant is limited to (outbound HTTP from WebAssembly functions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn default_port(self) -> u16 {
        match self {
            Self::Http => 80,
            Self::Https => 443,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// An address or block, `prefix` bits long.
    Block { addr: Ipv4Addr, prefix: u8 },
    /// A name, resolved when an instance starts.
    Name(String),
    /// Every name under a domain (`*.example.com` holds `example.com`, without the
    /// `*.`): `api.example.com` and `a.b.example.com`, not `example.com` itself.
    Wildcard(String),
    /// The host's own loopback.
    Loopback,
}

/// Any grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    Net(NetGrant),
    /// A key-value namespace, or `*`.
    Kv(String),
    /// An event type, or `*`.
    Publish(String),
}

/// Parses any `--grant` value; the error says what is accepted.
pub fn parse_any(grant: &str) -> Result<Grant, String> {
    if let Some(ns) = grant.strip_prefix("kv:") {
        if ns == "*" || crate::kv::validate_namespace(ns).is_ok() {
            return Ok(Grant::Kv(ns.to_owned()));
        }
        return Err(format!(
            "grant `{grant}`: `kv:NAMESPACE` (1-64 of A-Z a-z 0-9 _ -) or `kv:*`"
        ));
    }
    if let Some(ty) = grant.strip_prefix("publish:") {
        if !ty.is_empty() && !ty.chars().any(char::is_control) {
            return Ok(Grant::Publish(ty.to_owned()));
        }
        return Err(format!("grant `{grant}`: `publish:TYPE` or `publish:*`"));
    }
    parse(grant).map(Grant::Net).map_err(|e| {
        if grant.starts_with("net") {
            e
        } else {
            format!(
                "unknown grant `{grant}`: use net, net:HOST[:PORT], kv:NAMESPACE or publish:TYPE"
            )
        }
    })
}

/// Parses one network `--grant` value; the error says what is accepted.
pub fn parse(grant: &str) -> Result<NetGrant, String> {
    const FORMS: &str = "use `net`, `net:HOST`, `net:HOST:PORT` or `net:http(s)://HOST[:PORT]` (HOST an IPv4 address, a CIDR block, a host name, `*.DOMAIN`, or 127.0.0.1 / localhost for the node's loopback)";
    if grant == "net" {
        return Ok(NetGrant::Any);
    }
    let Some(target) = grant.strip_prefix("net:") else {
        return Err(format!("unknown grant `{grant}`: {FORMS}"));
    };
    let (scheme, target) = if let Some(rest) = target.strip_prefix("https://") {
        (Some(Scheme::Https), rest)
    } else if let Some(rest) = target.strip_prefix("http://") {
        (Some(Scheme::Http), rest)
    } else {
        (None, target)
    };
    let target = match scheme {
        Some(_) => target.strip_suffix('/').unwrap_or(target),
        None => target,
    };
    let (host, port) = match target.rsplit_once(':') {
        Some((host, port)) => {
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("grant `{grant}`: `{port}` is not a port (1-65535)"))?;
            (host, Some(port))
        }
        None => (target, None),
    };
    let host = parse_host(host).ok_or_else(|| format!("grant `{grant}`: {FORMS}"))?;
    // A scheme without a port means the scheme's own port.
    let port = port.or(scheme.map(Scheme::default_port));
    Ok(NetGrant::To { host, port, scheme })
}

fn parse_host(host: &str) -> Option<Host> {
    if host == "localhost" {
        return Some(Host::Loopback);
    }
    if let Some(domain) = host.strip_prefix("*.") {
        return match parse_host(domain)? {
            Host::Name(domain) if domain.contains('.') => Some(Host::Wildcard(domain)),
            _ => None,
        };
    }
    let (addr, prefix) = match host.split_once('/') {
        Some((addr, bits)) => (addr, Some(bits.parse::<u8>().ok().filter(|b| *b <= 32)?)),
        None => (host, None),
    };
    if let Ok(addr) = addr.parse::<Ipv4Addr>() {
        if addr.is_loopback() {
            return Some(Host::Loopback);
        }
        return Some(Host::Block {
            addr,
            prefix: prefix.unwrap_or(32),
        });
    }
    let name_ok = prefix.is_none()
        && !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    name_ok.then(|| Host::Name(host.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_parse_or_say_what_is_accepted() {
        assert_eq!(parse("net"), Ok(NetGrant::Any));
        assert_eq!(
            parse("net:10.1.0.0/16:443"),
            Ok(NetGrant::To {
                host: Host::Block {
                    addr: Ipv4Addr::new(10, 1, 0, 0),
                    prefix: 16
                },
                port: Some(443),
                scheme: None
            })
        );
        assert_eq!(
            parse("net:API.example.com"),
            Ok(NetGrant::To {
                host: Host::Name("api.example.com".into()),
                port: None,
                scheme: None
            })
        );
        assert_eq!(
            parse("net:https://*.Example.com"),
            Ok(NetGrant::To {
                host: Host::Wildcard("example.com".into()),
                port: Some(443),
                scheme: Some(Scheme::Https)
            })
        );
        assert_eq!(
            parse("net:http://127.0.0.1:8080/"),
            Ok(NetGrant::To {
                host: Host::Loopback,
                port: Some(8080),
                scheme: Some(Scheme::Http)
            })
        );
        for loopback in [
            "net:127.0.0.1:5432",
            "net:localhost:5432",
            "net:127.0.0.9:5432",
        ] {
            assert_eq!(
                parse(loopback),
                Ok(NetGrant::To {
                    host: Host::Loopback,
                    port: Some(5432),
                    scheme: None
                })
            );
        }
        for bad in [
            "kv:users",
            "net:",
            "net:host:0",
            "net:host:99999",
            "net:1.2.3.4/33",
            "net:*.com",
            "net:*",
            "net:ftp://example.com",
            "net:a..b",
            "network",
        ] {
            assert!(parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn data_grants_name_a_namespace_or_a_type() {
        assert_eq!(parse_any("kv:profiles"), Ok(Grant::Kv("profiles".into())));
        assert_eq!(parse_any("kv:*"), Ok(Grant::Kv("*".into())));
        assert_eq!(
            parse_any("publish:order_placed"),
            Ok(Grant::Publish("order_placed".into()))
        );
        assert_eq!(parse_any("net"), Ok(Grant::Net(NetGrant::Any)));
        assert!(parse_any("kv:a/b").is_err());
        assert!(parse_any("publish:").is_err());
        assert!(parse_any("disk").unwrap_err().contains("kv:NAMESPACE"));
        // A data grant opens no network.
        assert!(parse("kv:profiles").is_err());
    }
}
