//! The far end of a client connection, as the request pipeline sees it: worked out once a
//! connection, not once a request.

use std::net::{IpAddr, SocketAddr};

use http::HeaderValue;

use crate::proxy::headers::ip_value;

/// Who sent a request: the connection's address and what the pipeline decides from it.
#[derive(Clone, Debug)]
pub struct Peer {
    /// Where the connection comes from.
    pub addr: SocketAddr,
    /// The peer is a trusted proxy (the tunnel): the `X-Forwarded-*` and `X-Request-Id` it
    /// sends are believed.
    pub trusted: bool,
    /// The connection is TLS on the gateway's own listener.
    pub tls: bool,
    /// The peer's address as `X-Forwarded-For` writes it: written once a connection (it cost
    /// about 400 instructions a request, counted with callgrind), a reference count a request.
    pub forwarded_for: HeaderValue,
}

impl Peer {
    pub fn new(addr: SocketAddr, tls: bool, trusted_proxies: &[IpAddr]) -> Peer {
        Peer {
            addr,
            trusted: trusted_proxies.contains(&addr.ip()),
            tls,
            forwarded_for: ip_value(addr.ip()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_trusted_only_when_listed() {
        let tunnel: IpAddr = "10.0.0.9".parse().unwrap();
        let peer = Peer::new("10.0.0.9:4000".parse().unwrap(), false, &[tunnel]);
        assert!(peer.trusted);
        assert_eq!(peer.forwarded_for, "10.0.0.9");
        let peer = Peer::new("[fd00::1]:4000".parse().unwrap(), true, &[tunnel]);
        assert!(!peer.trusted && peer.tls);
        assert_eq!(peer.forwarded_for, "fd00::1");
    }
}
