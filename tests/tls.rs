//! TLS, both directions: HTTPS on the API and admin listeners (HTTP/1.1 and h2 by ALPN), a
//! renewed certificate served without a failed request, `https://` nodes verified against a
//! CA made in the test (a bad certificate marks the node down with the reason in words, and
//! nothing is ever sent in plain text), `cert self-signed`, and no private key in `certs/`.
//!
//! The fake nodes speak plain HTTP: each sits behind a small TLS terminator (tokio-rustls)
//! that counts the connections whose first byte is not a TLS handshake record.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use support::*;

// ---- certificates made here ------------------------------------------------------------------

/// A certificate authority made for one test.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A leaf certificate and its key.
struct Leaf {
    cert: String,
    key: String,
    der: Vec<u8>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("ca key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = p.self_signed(&key).expect("ca cert");
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    /// A leaf for `sans` (names or IPs) with `serial`; `expired`: valid only in 2019.
    fn leaf(&self, sans: &[&str], serial: u64, expired: bool) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("leaf params");
        p.serial_number = Some(SerialNumber::from(serial));
        p.not_before = rcgen::date_time_ymd(2019, 1, 1);
        p.not_after = if expired {
            rcgen::date_time_ymd(2020, 1, 1)
        } else {
            rcgen::date_time_ymd(2099, 1, 1)
        };
        let cert = p.signed_by(&key, &self.issuer).expect("leaf cert");
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write pem");
    p.display().to_string()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

// ---- a blocking rustls client ----------------------------------------------------------------

fn client(ca_pem: &str, alpn: &[&str]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("ca pem")).expect("root");
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    // Every connection a full handshake: a resumed session shows the certificate of the
    // session it resumes, not the one served now.
    cfg.resumption = rustls::client::Resumption::disabled();
    Arc::new(cfg)
}

fn tls_stream(addr: SocketAddr, cfg: &Arc<rustls::ClientConfig>) -> Result<Tls, String> {
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = tcp.set_write_timeout(Some(Duration::from_secs(10)));
    let conn = rustls::ClientConnection::new(cfg.clone(), ServerName::IpAddress(addr.ip().into()))
        .map_err(|e| format!("client: {e}"))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(|e| format!("handshake: {e}"))?;
    }
    Ok(tls)
}

/// The leaf certificate (DER) and the ALPN protocol a new handshake gets.
fn handshake(
    addr: SocketAddr,
    cfg: &Arc<rustls::ClientConfig>,
) -> Result<(Vec<u8>, Option<String>), String> {
    let tls = tls_stream(addr, cfg)?;
    let leaf = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .ok_or("no certificate")?;
    let alpn = tls
        .conn
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    Ok((leaf, alpn))
}

/// One HTTP/1.1 GET over a new TLS connection: status, body, the leaf certificate served.
fn https_get(
    addr: SocketAddr,
    cfg: &Arc<rustls::ClientConfig>,
    target: &str,
) -> Result<(u16, Vec<u8>, Vec<u8>), String> {
    let tls = tls_stream(addr, cfg)?;
    let leaf = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .ok_or("no certificate")?;
    let mut r = BufReader::new(tls);
    let (status, body) = request_on(&mut r, addr, target, true)?;
    Ok((status, body, leaf))
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// One HTTP/1.1 GET with the admin key on an open TLS connection (`close`: the last one).
fn request_on(
    r: &mut BufReader<Tls>,
    addr: SocketAddr,
    target: &str,
    close: bool,
) -> Result<(u16, Vec<u8>), String> {
    let connection = if close { "close" } else { "keep-alive" };
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {}\r\nConnection: {connection}\r\n\r\n",
        basic(ADMIN)
    );
    let tls = r.get_mut();
    tls.write_all(req.as_bytes())
        .and_then(|()| tls.flush())
        .map_err(|e| format!("write: {e}"))?;
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| format!("status: {e}"))?;
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("status line {line:?}"))?;
    let mut len = None;
    loop {
        line.clear();
        r.read_line(&mut line).map_err(|e| format!("header: {e}"))?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse::<usize>().ok();
        }
    }
    let n = len.ok_or("no content-length")?;
    let mut body = vec![0; n];
    r.read_exact(&mut body).map_err(|e| format!("body: {e}"))?;
    Ok((status, body))
}

/// `curl` over HTTPS with the admin key: (HTTP version, status, body).
fn curl(ca_file: &str, proto: &str, url: &str) -> (String, u16, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--globoff",
            "--max-time",
            "10",
            proto,
            "--cacert",
            ca_file,
            "-H",
        ])
        .arg(format!("Authorization: {}", basic(ADMIN)))
        .args(["-w", "\n%{http_version} %{http_code}", url])
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl {proto} {url}: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (body, last) = text.rsplit_once('\n').expect("curl -w line");
    let (version, code) = last.split_once(' ').expect("version and code");
    (
        version.to_string(),
        code.parse().expect("code"),
        body.to_string(),
    )
}

/// A plain-HTTP request to a TLS port: what came back before the connection ended (it
/// must end, within the read timeout).
fn plain_request_to(addr: SocketAddr) -> Vec<u8> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(b"GET /api/bot/list HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let began = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!(
                "the TLS port kept a plain connection open ({e}) after {:?}",
                began.elapsed()
            ),
        }
    }
    got
}

// ---- a TLS terminator in front of a plain fake node ------------------------------------------

struct Terminator {
    addr: SocketAddr,
    /// Connections whose first byte was not a TLS handshake record (plain text).
    plain: Arc<AtomicUsize>,
    /// Completed handshakes.
    served: Arc<AtomicUsize>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Terminator {
    fn start(leaf: &Leaf, backend: SocketAddr) -> Terminator {
        let certs = CertificateDer::pem_slice_iter(leaf.cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("cert");
        let key = PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).expect("key");
        let cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server config");
        let acceptor = pingora::tls::TlsAcceptor::from(Arc::new(cfg));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let plain = Arc::new(AtomicUsize::new(0));
        let served = Arc::new(AtomicUsize::new(0));
        let (p, s) = (plain.clone(), served.clone());
        rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, p, s) = (acceptor.clone(), p.clone(), s.clone());
                tokio::spawn(async move {
                    let mut first = [0u8; 1];
                    match tcp.peek(&mut first).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) if first[0] == 0x16 => {}
                        Ok(_) => {
                            p.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    }
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    s.fetch_add(1, Ordering::SeqCst);
                    let Ok(mut back) = tokio::net::TcpStream::connect(backend).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut back).await;
                });
            }
        });
        Terminator {
            addr,
            plain,
            served,
            rt: Some(rt),
        }
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }
}

impl Drop for Terminator {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn admin_url(router: &Router, path: &str) -> String {
    format!("https://{}{path}", router.admin_addr.expect("admin"))
}

// ---- the tests -------------------------------------------------------------------------------

#[test]
fn api_and_admin_listeners_serve_https_with_h1_and_h2() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new("test ca");
    let api = ca.leaf(&["127.0.0.1"], 1, false);
    let ca_file = write(dir.path(), "ca.pem", &ca.pem);
    let cert = write(dir.path(), "api.crt", &api.cert);
    let key = write(dir.path(), "api.key", &api.key);
    // The admin listener serves the pair `cert self-signed` writes.
    let own = dir.path().join("own");
    let made = Command::new(env!("CARGO_BIN_EXE_ts3ab-lb"))
        .args(["cert", "self-signed", "--host", "127.0.0.1", "--out"])
        .arg(&own)
        .output()
        .expect("cert self-signed runs");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let own_cert = own.join("cert.pem").display().to_string();
    let own_key = own.join("key.pem").display().to_string();

    let node = fake_node(0);
    let router = Router::start(
        &[&node],
        RouterOpts {
            admin: true,
            extra_yaml: format!("tls: {{ cert: \"{cert}\", key: \"{key}\" }}\n"),
            admin_yaml: format!("tls: {{ cert: \"{own_cert}\", key: \"{own_key}\" }}"),
            ..RouterOpts::default()
        },
    );
    let api_client = client(&ca.pem, &[]);
    let (status, body, leaf) = https_get(router.addr, &api_client, "/api/bot/list").expect("https");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(serde_json::from_slice::<serde_json::Value>(&body)
        .expect("json")
        .is_array());
    assert_eq!(leaf, api.der, "the API serves the configured certificate");

    // ALPN: h2 preferred, HTTP/1.1 when that is all the client speaks.
    let own_pem = std::fs::read_to_string(&own_cert).expect("own cert");
    for (addr, roots) in [
        (router.addr, &ca.pem),
        (router.admin_addr.expect("admin"), &own_pem),
    ] {
        let both = client(roots, &["h2", "http/1.1"]);
        assert_eq!(
            handshake(addr, &both).expect("alpn").1.as_deref(),
            Some("h2")
        );
        let h1 = client(roots, &["http/1.1"]);
        assert_eq!(
            handshake(addr, &h1).expect("alpn").1.as_deref(),
            Some("http/1.1")
        );
    }

    // Real requests in both protocols, on both listeners.
    let url = format!("https://{}/api/bot/list", router.addr);
    let (v, code, body) = curl(&ca_file, "--http2", &url);
    assert_eq!((v.as_str(), code), ("2", 200), "{body}");
    assert!(body.starts_with('['), "{body}");
    let (v, code, _) = curl(&ca_file, "--http1.1", &url);
    assert_eq!((v.as_str(), code), ("1.1", 200));
    // A create and a proxied request over h2 (the node is still spoken to in HTTP/1.1).
    let base = format!("https://{}", router.addr);
    let (v, code, body) = curl(
        &ca_file,
        "--http2",
        &format!("{base}/api/bot/connect/to/ts.example"),
    );
    assert_eq!((v.as_str(), code), ("2", 200), "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).expect("json")["Id"]
        .as_u64()
        .expect("id");
    let info = format!("{base}/api/bot/use/{id}/(/bot/info)");
    let (v, code, body) = curl(&ca_file, "--http2", &info);
    assert_eq!((v.as_str(), code), ("2", 200), "{body}");
    assert!(
        client_targets(&node).iter().any(|t| t.contains("bot/info")),
        "{:?}",
        targets(&node)
    );
    let nodes = admin_url(&router, "/admin/api/nodes");
    let (v, code, body) = curl(&own_cert, "--http2", &nodes);
    assert_eq!((v.as_str(), code), ("2", 200), "{body}");
    assert!(body.contains("\"node-0\""), "{body}");
    let (v, code, _) = curl(&own_cert, "--http1.1", &nodes);
    assert_eq!((v.as_str(), code), ("1.1", 200));

    // Plain HTTP to a TLS port: no HTTP answer, the connection ends; the listener goes on.
    for addr in [router.addr, router.admin_addr.expect("admin")] {
        let got = plain_request_to(addr);
        assert!(
            !got.starts_with(b"HTTP/"),
            "a plain answer: {:?}",
            String::from_utf8_lossy(&got)
        );
    }
    assert_eq!(
        https_get(router.addr, &api_client, "/api/bot/list")
            .expect("after")
            .0,
        200
    );
}

/// One request's result: the leaf certificate served, or why it failed.
type Outcome = Result<Vec<u8>, String>;

#[test]
fn a_renewed_certificate_is_served_without_a_failed_request() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new("renewal ca");
    let first = ca.leaf(&["127.0.0.1"], 100, false);
    let cert = write(dir.path(), "fullchain.pem", &first.cert);
    let key = write(dir.path(), "privkey.pem", &first.key);
    let node = fake_node(0);
    let router = Router::start(
        &[&node],
        RouterOpts {
            extra_yaml: format!("tls: {{ cert: \"{cert}\", key: \"{key}\" }}\n"),
            ..RouterOpts::default()
        },
    );
    let cfg = client(&ca.pem, &[]);
    assert_eq!(
        https_get(router.addr, &cfg, "/api/bot/list")
            .expect("first")
            .2,
        first.der
    );

    // A client keeps making requests, each on a new connection (a new handshake).
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let worker = {
        let (stop, seen, cfg, addr) = (stop.clone(), seen.clone(), cfg.clone(), router.addr);
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let r = match https_get(addr, &cfg, "/api/bot/list") {
                    Ok((200, _, leaf)) => Ok(leaf),
                    Ok((s, body, _)) => {
                        Err(format!("HTTP {s}: {}", String::from_utf8_lossy(&body)))
                    }
                    Err(e) => Err(e),
                };
                seen.lock().expect("seen").push(r);
            }
        })
    };
    let count = || seen.lock().expect("seen").len();
    let served = |der: &[u8]| {
        seen.lock()
            .expect("seen")
            .iter()
            .any(|r| r.as_deref().ok() == Some(der))
    };
    wait_for(20, "requests before the renewal", || count() >= 20);
    // And one connection opened before the renewal, kept open across it.
    let mut kept = BufReader::new(tls_stream(router.addr, &cfg).expect("kept connection"));
    assert_eq!(
        request_on(&mut kept, router.addr, "/api/bot/list", false)
            .expect("kept")
            .0,
        200
    );

    // Renewal 1: the files rewritten in place, the key first. Until the certificate follows
    // the pair does not match: the router says so and keeps serving the old one.
    let second = ca.leaf(&["127.0.0.1"], 200, false);
    std::fs::write(&key, &second.key).expect("key");
    router.wait_until(10, "the half-replaced pair refused", |r| {
        r.stderr_text()
            .contains("is not the key of the certificate")
    });
    let at = count();
    wait_for(20, "requests on the half-replaced pair", || {
        count() >= at + 5
    });
    assert!(!served(&second.der));
    // Then the certificate, and SIGHUP as a deploy hook sends.
    std::fs::write(&cert, &second.cert).expect("cert");
    let pid = router.pid().expect("pid");
    assert!(Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("kill")
        .success());
    wait_for(10, "the renewed certificate on new handshakes", || {
        served(&second.der)
    });
    let at = count();
    wait_for(20, "requests after the renewal", || count() >= at + 20);

    // Renewal 2: new files moved into place (certbot's symlink switch), no signal: the
    // router notices the change itself.
    let third = ca.leaf(&["127.0.0.1"], 300, false);
    let staged = write(dir.path(), "next-key.pem", &third.key);
    std::fs::rename(&staged, &key).expect("move key");
    let staged = write(dir.path(), "next-cert.pem", &third.cert);
    std::fs::rename(&staged, &cert).expect("move cert");
    wait_for(10, "the certificate replaced without a signal", || {
        served(&third.der)
    });
    let at = count();
    wait_for(20, "requests after the second renewal", || {
        count() >= at + 20
    });
    stop.store(true, Ordering::SeqCst);
    worker.join().expect("client thread");
    // The connection from before both renewals still works, with its first certificate.
    assert_eq!(
        request_on(&mut kept, router.addr, "/api/bot/list", true)
            .expect("kept after")
            .0,
        200
    );
    let old = kept
        .get_ref()
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec());
    assert_eq!(old.as_deref(), Some(first.der.as_slice()));

    let seen = seen.lock().expect("seen");
    let failures: Vec<&String> = seen.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {failures:?}",
        failures.len(),
        seen.len()
    );
    // Each handshake gets the newest pair served at that moment: never an old one again.
    let order: Vec<u8> = seen
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|der| match der {
            d if *d == first.der => 1,
            d if *d == second.der => 2,
            d if *d == third.der => 3,
            _ => 0,
        })
        .collect();
    assert!(!order.contains(&0), "an unknown certificate was served");
    assert!(
        order.windows(2).all(|w| w[0] <= w[1]),
        "an older certificate came back: {order:?}"
    );
    assert!(
        router.stderr_text().contains("renewed, now serving"),
        "{}",
        router.stderr_text()
    );
    // The log names the new certificate's serial (rcgen's serial 300 = 0x012c).
    assert!(
        router.stderr_text().contains("01:2c"),
        "{}",
        router.stderr_text()
    );
}

#[test]
fn https_nodes_are_verified_and_a_bad_certificate_is_a_reason_in_words() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new("node ca");
    let stranger = Ca::new("some other ca");
    let ca_file = write(dir.path(), "nodes-ca.pem", &ca.pem);
    let leaves = [
        ca.leaf(&["127.0.0.1"], 1, false),
        ca.leaf(&["other.example"], 2, false),
        ca.leaf(&["127.0.0.1"], 3, true),
        stranger.leaf(&["127.0.0.1"], 4, false),
    ];
    let nodes: Vec<FakeNode> = (0..leaves.len()).map(fake_node).collect();
    let fronts: Vec<Terminator> = leaves
        .iter()
        .zip(&nodes)
        .map(|(leaf, n)| Terminator::start(leaf, n.addr()))
        .collect();
    let router = Router::start(
        &nodes.iter().collect::<Vec<_>>(),
        RouterOpts {
            admin: true,
            node_urls: fronts.iter().map(|f| Some(f.url())).collect(),
            node_yaml: fronts
                .iter()
                .map(|_| Some(format!("ca_file: \"{ca_file}\"")))
                .collect(),
            ..RouterOpts::default()
        },
    );
    let node_view = |i: usize| {
        let r = router.admin_request("GET", &format!("/admin/api/nodes/node-{i}"), None);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    };
    router.wait_until(10, "node-0 up over verified TLS", |_| {
        node_view(0)["healthy"] == true
    });

    // Through it both ways: a create (a router-made request) and a proxied one.
    let created = router.get("/api/bot/connect/to/ts.example");
    assert_eq!(created.status, 200, "{}", created.text());
    let gid = created.json()["Id"].as_u64().expect("id");
    let info = router.get(&format!("/api/bot/use/{gid}/(/bot/info)"));
    assert_eq!(info.status, 200, "{}", info.text());
    assert!(client_targets(&nodes[0])
        .iter()
        .any(|t| t.contains("bot/info")));

    let words = [
        (1, "TLS: its certificate is not valid for the host name"),
        (2, "TLS: its certificate has expired"),
        (
            3,
            "TLS: its certificate is signed by an authority the router does not trust",
        ),
    ];
    for (i, why) in words {
        router.wait_until(10, &format!("node-{i}'s reason"), |_| {
            node_view(i)["last_error"]
                .as_str()
                .is_some_and(|e| e.contains(why))
        });
        let v = node_view(i);
        assert_eq!(v["healthy"], false, "{v}");
        let log = router.stderr_text();
        assert!(
            log.lines()
                .any(|l| l.contains(&format!("node node-{i}")) && l.contains(why)),
            "the log does not say why node-{i} is down ({why}):\n{log}"
        );
        // The refused node never got a request, in TLS or in plain text.
        assert!(
            targets(&nodes[i]).is_empty(),
            "node-{i} got {:?}",
            targets(&nodes[i])
        );
    }
    // The wrong-host reason names what the certificate is for.
    assert!(node_view(1)["last_error"]
        .as_str()
        .is_some_and(|e| e.contains("other.example")));
    // No plain-text fallback anywhere: every connection to every node opened with TLS.
    for (i, f) in fronts.iter().enumerate() {
        assert_eq!(f.plain.load(Ordering::SeqCst), 0, "node-{i} saw plain text");
    }
    assert!(fronts[0].served.load(Ordering::SeqCst) > 0);
    assert!(fronts[1..]
        .iter()
        .all(|f| f.served.load(Ordering::SeqCst) == 0));
}

#[test]
fn a_node_without_its_ca_file_is_refused_not_trusted() {
    // The same good node certificate, but the router is not told the CA: the system roots do
    // not know it, so the node stays down, with the reason.
    let ca = Ca::new("private ca");
    let node = fake_node(0);
    let front = Terminator::start(&ca.leaf(&["127.0.0.1"], 9, false), node.addr());
    let router = Router::start(
        &[&node],
        RouterOpts {
            admin: true,
            node_urls: vec![Some(front.url())],
            ..RouterOpts::default()
        },
    );
    router.wait_until(10, "the reason", |r| {
        let v = r
            .admin_request("GET", "/admin/api/nodes/node-0", None)
            .json();
        v["healthy"] == false
            && v["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("does not trust") && e.contains("`ca_file`"))
    });
    assert!(targets(&node).is_empty());
    assert_eq!(front.plain.load(Ordering::SeqCst), 0);
}

#[test]
fn the_admin_api_adds_https_nodes_with_the_same_checks_and_keeps_them() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new("admin ca");
    let ca_file = write(dir.path(), "ca.pem", &ca.pem);
    let junk = write(dir.path(), "junk.pem", "not a certificate");
    let plain = fake_node(0);
    let good = fake_node(1);
    let wrong = fake_node(2);
    let good_front = Terminator::start(&ca.leaf(&["127.0.0.1"], 1, false), good.addr());
    let wrong_front = Terminator::start(&ca.leaf(&["other.example"], 2, false), wrong.addr());
    let mut router = Router::start(
        &[&plain],
        RouterOpts {
            admin: true,
            ..RouterOpts::default()
        },
    );
    let add = |r: &Router, name: &str, url: String, ca: &str| {
        r.admin_request(
            "POST",
            "/admin/api/nodes",
            Some(&serde_json::json!({
                "name": name, "url": url, "auth": node_token(1), "ca_file": ca,
            })),
        )
    };
    // The config file's rules: a CA file that is not PEM is refused, the field named.
    let r = add(&router, "n-junk", good_front.url(), &junk);
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.json()["field"], "ca_file", "{}", r.text());
    // A node whose certificate is not for its name is refused before it is saved, in words.
    let r = add(&router, "n-wrong", wrong_front.url(), &ca_file);
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(
        r.text().contains("not valid for the host name"),
        "{}",
        r.text()
    );
    assert!(targets(&wrong).is_empty());
    // A good one is added, verified against its CA file, and shows it.
    let r = add(&router, "n-good", good_front.url(), &ca_file);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["ca_file"], ca_file.as_str());
    let healthy = |r: &Router| {
        r.admin_request("GET", "/admin/api/nodes/n-good", None)
            .json()["healthy"]
            == true
    };
    router.wait_until(10, "n-good up", healthy);
    // Another CA, which did not sign its certificate, is refused when set, although
    // connections verified under the old one are still pooled (they are not reused for it).
    let stranger = write(dir.path(), "stranger.pem", &Ca::new("stranger").pem);
    let r = router.admin_request(
        "PATCH",
        "/admin/api/nodes/n-good",
        Some(&serde_json::json!({ "ca_file": stranger })),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("does not trust"), "{}", r.text());
    assert!(healthy(&router), "the refused edit changed nothing");
    // After a restart it is still verified against the same CA (the record keeps `ca_file`).
    router.stop();
    router.spawn();
    router.wait_until(10, "n-good up after a restart", healthy);
    let v = router
        .admin_request("GET", "/admin/api/nodes/n-good", None)
        .json();
    assert_eq!(v["ca_file"], ca_file.as_str(), "{v}");
    // Setting the CA back to the system roots is checked like an add, and refused.
    let r = router.admin_request(
        "PATCH",
        "/admin/api/nodes/n-good",
        Some(&serde_json::json!({ "ca_file": null })),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("does not trust"), "{}", r.text());
    assert_eq!(good_front.plain.load(Ordering::SeqCst), 0);
    assert_eq!(wrong_front.plain.load(Ordering::SeqCst), 0);
}

#[test]
fn certs_dir_holds_no_private_key() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("certs");
    let mut stack = vec![dir.clone()];
    let mut seen = 0;
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("certs/ exists") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            seen += 1;
            let bytes = std::fs::read(&path).expect("read");
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !text.contains("PRIVATE KEY-----"),
                "{} holds a private key; keys never go in the repository (see certs/README.md)",
                path.display()
            );
        }
    }
    assert!(seen > 0, "certs/ should at least hold its README");
}
