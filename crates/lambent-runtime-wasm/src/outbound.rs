//! Outbound HTTP from components (`wasi:http/outgoing-handler`), deny by default.
//!
//! A request goes out only when a `net` grant of its function allows its scheme,
//! host and port, and then only to an address the grant allows: the name is resolved
//! here and the connection made to the checked address (so a name that resolves to
//! 127.0.0.1 or 169.254.169.254 is refused unless such an address is listed, and DNS
//! cannot change the answer between check and connect). The `Host` header is the
//! request's authority — wasi:http forbids guests to set it.

use crate::log_pipe::LogPipe;
use http_body_util::BodyExt;
use lambent_core::grant::{Host, NetGrant, Scheme};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// One function's outbound policy, held in each of its stores.
#[derive(Clone)]
pub struct Outbound {
    pub grants: Arc<[NetGrant]>,
    pub log: LogPipe,
}

/// Where a request may go: the address to connect to.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub addr: SocketAddr,
    pub scheme: Scheme,
    pub host: String,
}

/// True for addresses a plain `net` grant or a name grant does not reach: loopback,
/// private, link-local (cloud metadata), shared, unspecified, multicast, broadcast.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // shared address space (RFC 6598)
                || a >= 240
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_internal(IpAddr::V4(v4)),
            None => {
                let first = v6.segments()[0];
                v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || (first & 0xfe00) == 0xfc00 // unique local
                    || (first & 0xffc0) == 0xfe80 // link-local
            }
        },
    }
}

fn in_block(ip: IpAddr, addr: Ipv4Addr, prefix: u8) -> bool {
    let IpAddr::V4(v4) = ip else { return false };
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    u32::from(v4) & mask == u32::from(addr) & mask
}

/// The grants that speak for `scheme` and `port`.
fn candidates(grants: &[NetGrant], scheme: Scheme, port: u16) -> Vec<&NetGrant> {
    grants
        .iter()
        .filter(|g| match g {
            NetGrant::Any => true,
            NetGrant::To {
                port: p, scheme: s, ..
            } => p.is_none_or(|p| p == port) && s.is_none_or(|s| s == scheme),
        })
        .collect()
}

/// Whether `grant` lists `ip` by address (a block or the loopback): only such a
/// grant lets a request reach an internal address.
fn lists_address(grant: &NetGrant, ip: IpAddr) -> bool {
    match grant {
        NetGrant::To {
            host: Host::Block { addr, prefix },
            ..
        } => in_block(ip, *addr, *prefix),
        NetGrant::To {
            host: Host::Loopback,
            ..
        } => ip.is_loopback() || ip.to_canonical().is_loopback(),
        _ => false,
    }
}

/// Whether `grant` allows the name `host` (lower case).
fn allows_name(grant: &NetGrant, host: &str) -> bool {
    match grant {
        NetGrant::Any => true,
        NetGrant::To { host: h, .. } => match h {
            Host::Name(name) => name == host,
            Host::Wildcard(domain) => host
                .strip_suffix(domain.as_str())
                .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1),
            Host::Loopback => host == "localhost",
            Host::Block { .. } => false,
        },
    }
}

/// Whether `grant` lets a request for `host` (a name, or none for an address
/// literal) connect to `ip`: a grant by address must list it; otherwise it must be
/// public and the grant `net` or one naming the host.
fn permits(grant: &NetGrant, host: Option<&str>, ip: IpAddr) -> bool {
    let by_name = match grant {
        NetGrant::Any => true,
        NetGrant::To {
            host: Host::Name(_) | Host::Wildcard(_),
            ..
        } => host.is_some_and(|h| allows_name(grant, h)),
        NetGrant::To { .. } => return lists_address(grant, ip),
    };
    by_name && !is_internal(ip)
}

/// Checks a request's target against `grants`; `resolve` turns a name into addresses.
pub async fn check<F, Fut>(
    grants: &[NetGrant],
    uri: &http::Uri,
    resolve: F,
) -> Result<Checked, String>
where
    F: FnOnce(String, u16) -> Fut,
    Fut: Future<Output = std::io::Result<Vec<SocketAddr>>>,
{
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::Http,
        Some("https") => Scheme::Https,
        other => return Err(format!("scheme {other:?} is not http or https")),
    };
    let authority = uri.authority().ok_or("the request has no host")?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let port = authority.port_u16().unwrap_or(scheme.default_port());
    let candidates = candidates(grants, scheme, port);
    if candidates.is_empty() {
        return Err(format!("no net grant allows {scheme:?} on port {port}").to_lowercase());
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        if candidates.iter().any(|g| permits(g, None, ip)) {
            return Ok(Checked {
                addr: SocketAddr::new(ip, port),
                scheme,
                host,
            });
        }
        return Err(match is_internal(ip) {
            true => format!("{ip} is an internal address and no grant lists it"),
            false => format!("no net grant allows {ip}:{port}"),
        });
    }
    if !candidates.iter().any(|g| allows_name(g, &host)) {
        return Err(format!("no net grant allows {host}:{port}"));
    }
    let addrs = resolve(host.clone(), port)
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?;
    let found = addrs
        .iter()
        .find(|a| candidates.iter().any(|g| permits(g, Some(&host), a.ip())))
        .copied();
    match found {
        Some(addr) => Ok(Checked { addr, scheme, host }),
        None => Err(format!(
            "{host} resolves to {} which no grant lists (internal addresses need a grant by address)",
            addrs
                .iter()
                .map(|a| a.ip().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

async fn resolve(host: String, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    Ok(tokio::net::lookup_host((host.as_str(), port))
        .await?
        .collect())
}

type Sent = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), Error>> + Send>,
    ),
    Error,
>;

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = Sent> + Send> {
        drop(fut);
        let grants = self.grants.clone();
        let log = self.log.clone();
        Box::new(async move {
            let target = match check(&grants, request.uri(), resolve).await {
                Ok(target) => target,
                Err(why) => {
                    log.append(
                        format!(
                            "lambent: outbound request to {} denied: {why}\n",
                            request.uri()
                        )
                        .as_bytes(),
                    );
                    return Err(Error::HttpRequestDenied);
                }
            };
            send(target, request, options).await
        })
    }
}

/// Sends `request` to the checked address.
async fn send(
    target: Checked,
    mut request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> Sent {
    let connect_timeout = options
        .and_then(|o| o.connect_timeout)
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    let tcp = tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(target.addr))
        .await
        .map_err(|_| Error::ConnectionTimeout)?
        .map_err(Error::Connect)?;
    let io: Box<dyn Stream> = match target.scheme {
        Scheme::Http => Box::new(tcp),
        Scheme::Https => {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            let config = rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name = match target.host.parse::<IpAddr>() {
                Ok(ip) => rustls::pki_types::ServerName::from(ip),
                Err(_) => rustls::pki_types::ServerName::try_from(target.host.clone())
                    .map_err(|_| Error::HttpRequestUriInvalid)?,
            };
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .map_err(Error::Tls)?;
            Box::new(tls)
        }
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(Error::from)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "outbound connection ended");
        }
    });
    // Origin form on the wire; the authority travels in the Host header.
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    *request.uri_mut() = path.parse().map_err(|_| Error::HttpRequestUriInvalid)?;
    let response = sender.send_request(request).await.map_err(Error::from)?;
    let response = response.map(|body| body.map_err(Error::from).boxed_unsync());
    Ok((response, Box::new(async { Ok(()) })))
}

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Stream for T {}

#[cfg(test)]
mod tests {
    use super::*;
    use lambent_core::grant::parse;

    fn grants(list: &[&str]) -> Vec<NetGrant> {
        list.iter()
            .map(|g| parse(g).unwrap_or_else(|e| panic!("{e}")))
            .collect()
    }

    async fn verdict(list: &[&str], url: &str, resolved: &[&str]) -> Result<SocketAddr, String> {
        let resolved: Vec<SocketAddr> = resolved
            .iter()
            .map(|a| a.parse().unwrap_or_else(|e| panic!("{e}")))
            .collect();
        let uri: http::Uri = url.parse().unwrap_or_else(|e| panic!("{e}"));
        check(&grants(list), &uri, |_, _| async move { Ok(resolved) })
            .await
            .map(|c| c.addr)
    }

    #[tokio::test]
    async fn nothing_goes_out_without_a_grant() {
        assert!(
            verdict(&[], "https://example.com/", &["93.184.215.14:443"])
                .await
                .is_err()
        );
        assert!(
            verdict(
                &["net:other.com"],
                "https://example.com/",
                &["93.184.215.14:443"]
            )
            .await
            .is_err()
        );
    }

    #[tokio::test]
    async fn a_name_grant_reaches_its_name_on_a_public_address_only() {
        let ok = verdict(
            &["net:https://api.example.com"],
            "https://api.example.com/x",
            &["93.184.215.14:443"],
        )
        .await;
        assert_eq!(
            ok,
            Ok("93.184.215.14:443"
                .parse()
                .unwrap_or_else(|e| panic!("{e}")))
        );
        // Wrong scheme, wrong port, another name.
        assert!(
            verdict(
                &["net:https://api.example.com"],
                "http://api.example.com/",
                &["93.184.215.14:80"]
            )
            .await
            .is_err()
        );
        assert!(
            verdict(
                &["net:https://api.example.com"],
                "https://api.example.com:8443/",
                &["93.184.215.14:8443"]
            )
            .await
            .is_err()
        );
        assert!(
            verdict(
                &["net:https://api.example.com"],
                "https://evil.com/",
                &["93.184.215.14:443"]
            )
            .await
            .is_err()
        );
        // The name resolving to the metadata service or the loopback is refused.
        let e = verdict(
            &["net:api.example.com"],
            "http://api.example.com/",
            &["169.254.169.254:80"],
        )
        .await;
        assert!(e.unwrap_err().contains("169.254.169.254"));
        assert!(
            verdict(&["net"], "http://localhost/", &["127.0.0.1:80"])
                .await
                .is_err()
        );
        // Of several addresses, a public one is used.
        assert_eq!(
            verdict(
                &["net"],
                "http://a.example.com/",
                &["10.0.0.1:80", "93.184.215.14:80"]
            )
            .await,
            Ok("93.184.215.14:80".parse().unwrap_or_else(|e| panic!("{e}")))
        );
    }

    #[tokio::test]
    async fn wildcards_cover_subdomains_only() {
        let g = ["net:*.example.com"];
        assert!(
            verdict(&g, "https://a.b.example.com/", &["93.184.215.14:443"])
                .await
                .is_ok()
        );
        assert!(
            verdict(&g, "https://example.com/", &["93.184.215.14:443"])
                .await
                .is_err()
        );
        assert!(
            verdict(&g, "https://badexample.com/", &["93.184.215.14:443"])
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn internal_addresses_need_a_grant_by_address() {
        for url in [
            "http://127.0.0.1:8080/",
            "http://169.254.169.254/",
            "http://[::1]:80/",
            "http://10.1.2.3/",
            "http://[::ffff:127.0.0.1]/",
        ] {
            assert!(verdict(&["net"], url, &[]).await.is_err(), "{url}");
        }
        assert!(
            verdict(&["net:127.0.0.1:8080"], "http://127.0.0.1:8080/", &[])
                .await
                .is_ok()
        );
        assert!(
            verdict(&["net:127.0.0.1:8080"], "http://127.0.0.1:8081/", &[])
                .await
                .is_err()
        );
        assert!(
            verdict(
                &["net:localhost:8080"],
                "http://localhost:8080/",
                &["127.0.0.1:8080"]
            )
            .await
            .is_ok()
        );
        assert!(
            verdict(&["net:10.0.0.0/8"], "http://10.1.2.3/", &[])
                .await
                .is_ok()
        );
        assert!(
            verdict(&["net:10.0.0.0/8"], "http://11.1.2.3/", &[])
                .await
                .is_err()
        );
        assert!(
            verdict(&["net"], "http://93.184.215.14/", &[])
                .await
                .is_ok()
        );
    }
}
