//! A stand-in node agent for placement tests: `GET /summary` on a loopback port with a
//! body the test sets, behind a bearer token. The router shares no code with the agent crate,
//! only the JSON, so tests control the figures exactly.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

/// The bearer token every fake agent wants.
pub const AGENT_TOKEN: &str = "agent-s3cret-token";

/// A fake node agent: `GET /summary` answers the current body with 200 (after checking the
/// bearer token), or 503 while there is none.
pub struct FakeAgent {
    addr: SocketAddr,
    summary: Arc<Mutex<Option<String>>>,
}

impl FakeAgent {
    /// Starts one answering `summary` (None: 503 until one is set).
    pub fn start(summary: Option<Value>) -> FakeAgent {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let summary = Arc::new(Mutex::new(summary.map(|v| v.to_string())));
        let shared = summary.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let shared = shared.clone();
                std::thread::spawn(move || serve(conn, &shared));
            }
        });
        FakeAgent { addr, summary }
    }

    /// Its URL (`http://127.0.0.1:<port>`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The `agent:` value of the node's config entry.
    pub fn yaml(&self) -> String {
        format!("{{ url: \"{}\", token: \"{AGENT_TOKEN}\" }}", self.url())
    }

    /// Sets the body (None: answer 503 from now on).
    pub fn set(&self, summary: Option<Value>) {
        *self.summary.lock().expect("lock") = summary.map(|v| v.to_string());
    }
}

/// Serves one keep-alive connection.
fn serve(conn: TcpStream, summary: &Mutex<Option<String>>) {
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut conn = conn;
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" {
                break;
            }
            head.push(line);
        }
        let authorized = head
            .iter()
            .any(|l| l.trim_end() == format!("Authorization: Bearer {AGENT_TOKEN}"));
        let target_ok = head.first().is_some_and(|l| l.starts_with("GET /summary "));
        let current = summary.lock().expect("lock").clone();
        let (status, body) = match (target_ok, authorized, current) {
            (false, _, _) => ("404 Not Found", String::new()),
            (_, false, _) => ("401 Unauthorized", String::new()),
            (_, _, None) => ("503 Service Unavailable", String::new()),
            (_, _, Some(b)) => ("200 OK", b),
        };
        let answer = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        // Requests carry no body, so the next one starts right after this head.
        if conn.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// An agent summary as the real agent writes it.
pub fn summary(cpu_busy: f64, mem_available: f64) -> Value {
    json!({
        "cpu_busy_ratio": cpu_busy, "cpu_count": 4, "memory_total_bytes": 8_589_934_592_u64,
        "memory_available_bytes": 1_000_000, "memory_available_ratio": mem_available,
        "load1": 3.5, "load5": 3.0, "load15": 2.0, "process_up": true, "process_cpu_ratio": 0.4,
        "process_resident_bytes": 134_217_728, "api_up": true,
        "bots": {"offline": 0, "connecting": 0, "connected": 0},
        "at_ms": 1_764_590_000_000_u64, "version": "0.1.0"
    })
}
