//! A bare Pingora passthrough proxy: it prices Pingora itself in the proxy-overhead benchmark.
//! Usage: `bare_pingora <listen addr> <upstream addr> [threads] [work_stealing true|false]
//! [upstream keep-alive pool size] [knob flags]`: pass the router's own `server:` settings so
//! both run the same Pingora runtime.
//!
//! Knob flags (the `knobs` section of `benches/bench.py`: settings below Pingora's defaults that
//! Pingora 0.9 exposes but the router has no config key for; without a flag the proxy is the
//! unchanged passthrough):
//! - `--keepalive-infinite`: downstream keep-alive without its 60 s idle timer
//!   (`set_keepalive(Some(0))`, Pingora's "infinite"), so a request head is read without a
//!   timer around the read;
//! - `--peer-timeouts`: the upstream peer with read, write and idle timeouts like the router's
//!   node peers (`NodeClient::peer`), to price the timers the router's upstream side pays;
//! - `--sock-buf BYTES`: `SO_SNDBUF`/`SO_RCVBUF` on accepted connections (`TcpSocketOptions`)
//!   and `SO_RCVBUF` on upstream connections (`PeerOptions::tcp_recv_buf`).

use std::time::Duration;

use async_trait::async_trait;
use pingora::prelude::*;

/// What the passthrough changes below Pingora's defaults (all off: the unchanged proxy).
#[derive(Clone, Copy, Default)]
struct Knobs {
    keepalive_infinite: bool,
    peer_timeouts: bool,
    sock_buf: Option<usize>,
}

struct Pass(std::net::SocketAddr, Knobs);

#[async_trait]
impl ProxyHttp for Pass {
    type CTX = ();
    fn new_ctx(&self) {}
    async fn upstream_peer(&self, s: &mut Session, _c: &mut ()) -> Result<Box<HttpPeer>> {
        let k = self.1;
        // Set here, in the one hook the passthrough overrides anyway, so the knob costs no
        // extra boxed hook future; Pingora carries it to the connection's next request.
        if k.keepalive_infinite {
            s.set_keepalive(Some(0));
        }
        let mut peer = HttpPeer::new(self.0, false, String::new());
        if k.peer_timeouts {
            peer.options.read_timeout = Some(Duration::from_secs(30));
            peer.options.write_timeout = Some(Duration::from_secs(30));
            peer.options.idle_timeout = Some(Duration::from_secs(60));
        }
        if let Some(n) = k.sock_buf {
            peer.options.tcp_recv_buf = Some(n);
        }
        Ok(Box::new(peer))
    }
}

fn main() {
    run()
}

/// Runs the proxy (also used by `bare_pingora_mimalloc.rs`, the same proxy on mimalloc).
pub fn run() {
    let mut pos: Vec<String> = Vec::new();
    let mut knobs = Knobs::default();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--keepalive-infinite" => knobs.keepalive_infinite = true,
            "--peer-timeouts" => knobs.peer_timeouts = true,
            "--sock-buf" => {
                let v = it.next().expect("--sock-buf needs a size in bytes");
                knobs.sock_buf = Some(v.parse().expect("--sock-buf: bytes"));
            }
            f if f.starts_with("--") => panic!("unknown flag {f}"),
            _ => pos.push(a),
        }
    }
    let arg = |i: usize, default: &str| {
        pos.get(i - 1)
            .cloned()
            .unwrap_or_else(|| default.to_string())
    };
    let (listen, upstream) = (arg(1, "127.0.0.1:7000"), arg(2, "127.0.0.1:7001"));
    let threads = arg(3, "1").parse().expect("threads");
    let work_stealing = arg(4, "true")
        .parse()
        .expect("work_stealing: true or false");
    let pool = arg(5, "128").parse().expect("keep-alive pool size");
    let dir = std::env::temp_dir().join(format!("bare_pingora.{}", std::process::id()));
    let conf = pingora::server::configuration::ServerConf {
        threads,
        work_stealing,
        upstream_keepalive_pool_size: pool,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(0),
        pid_file: dir.with_extension("pid").display().to_string(),
        upgrade_sock: dir.with_extension("sock").display().to_string(),
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let upstream = upstream.parse().expect("upstream address");
    let mut svc = http_proxy_service(&server.configuration, Pass(upstream, knobs));
    match knobs.sock_buf {
        Some(n) => {
            let mut o = pingora::listeners::TcpSocketOptions::default();
            o.tcp_snd_buf = Some(n);
            o.tcp_recv_buf = Some(n);
            svc.add_tcp_with_settings(&listen, o);
        }
        None => svc.add_tcp(&listen),
    }
    server.add_service(svc);
    server.run_forever();
}
