//! A bare Pingora passthrough proxy: it prices Pingora itself in the proxy-overhead benchmark.
//! Usage: `bare_pingora <listen addr> <upstream addr> [threads] [work_stealing true|false]
//! [upstream keep-alive pool size]`: pass the router's own `server:` settings so both run the
//! same Pingora runtime.

use async_trait::async_trait;
use pingora::prelude::*;

struct Pass(std::net::SocketAddr);

#[async_trait]
impl ProxyHttp for Pass {
    type CTX = ();
    fn new_ctx(&self) {}
    async fn upstream_peer(&self, _s: &mut Session, _c: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.0, false, String::new())))
    }
}

fn main() {
    run()
}

/// Runs the proxy (also used by `bare_pingora_mimalloc.rs`, the same proxy on mimalloc).
pub fn run() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_string());
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
    let mut svc = http_proxy_service(&server.configuration, Pass(upstream));
    svc.add_tcp(&listen);
    server.add_service(svc);
    server.run_forever();
}
