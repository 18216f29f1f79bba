//! The test controls over HTTP (`/__fake/...`), for a node running as its own process.
//!
//! Owns: `latency/<ms>`, `fault/<none|500|hang|close|invalid-json|wrong-types|huge|huge-undeclared|not-http|reset|wrong-server>`
//! (`huge` is 64 MiB), `requests`, `clear`, `restart` (like
//! [`crate::FakeNode::restart`]: new `starttime`, `run = true` templates from id 0),
//! `hold/<pattern>` and `release` (like [`crate::FakeNode::hold`]; `release` answers how many
//! answers were held) and
//! `state` (name, `starttime`, bots, templates), answered as small JSON documents. These paths are outside `/api`, are never
//! recorded, and ignore auth and faults.
//! Does not own: the controls themselves (methods on `Shared` / `FakeNode` in `lib`).

use std::sync::atomic::Ordering;
use std::time::Instant;

use serde_json::{json, Value};

use crate::exec::Answer;
use crate::{Fault, Shared};

const PREFIX: &[u8] = b"/__fake/";
/// The size of the `huge` faults over HTTP: far over any router's answer limit.
const HUGE_BYTES: u64 = 64 * 1024 * 1024;

/// Whether a target is a control path.
pub fn is_control(target: &[u8]) -> bool {
    target.starts_with(PREFIX) || target == b"/__fake"
}

fn json_answer(status: u16, v: &Value) -> Answer {
    Answer {
        status,
        content_type: "application/json",
        body: serde_json::to_vec(v).unwrap_or_default(),
    }
}

/// Runs one control request.
pub fn handle(shared: &Shared, target: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(target.get(PREFIX.len()..).unwrap_or_default()).into_owned();
    let path = text
        .split('?')
        .next()
        .unwrap_or_default()
        .trim_end_matches('/');
    let (verb, arg) = path.split_once('/').unwrap_or((path, ""));
    match (verb, arg) {
        ("latency", ms) => match ms.parse::<u64>() {
            Ok(ms) => {
                shared
                    .latency_ns
                    .store(ms.saturating_mul(1_000_000), Ordering::Relaxed);
                json_answer(200, &json!({ "latency_ms": ms }))
            }
            Err(_) => json_answer(400, &json!({ "error": "latency wants whole milliseconds" })),
        },
        ("fault", f) => {
            let fault = match f {
                "none" => None,
                "500" => Some(Fault::Status500),
                "hang" => Some(Fault::Hang),
                "close" => Some(Fault::Close),
                "invalid-json" => Some(Fault::InvalidJson),
                "wrong-types" => Some(Fault::WrongTypes),
                "huge" | "huge-undeclared" => Some(Fault::Huge {
                    bytes: HUGE_BYTES,
                    declared: f == "huge",
                }),
                "not-http" => Some(Fault::NotHttp),
                "reset" => Some(Fault::ResetMidAnswer),
                "wrong-server" => Some(Fault::WrongServer),
                _ => {
                    return json_answer(
                        400,
                        &json!({ "error": "fault is one of none, 500, hang, close, invalid-json, wrong-types, huge, huge-undeclared, not-http, reset, wrong-server" }),
                    )
                }
            };
            shared.set_fault(fault);
            json_answer(200, &json!({ "fault": f }))
        }
        ("requests", "") => {
            let list: Vec<Value> = shared
                .requests()
                .into_iter()
                .map(|r| {
                    json!({
                        "method": r.method,
                        "target": String::from_utf8_lossy(&r.target),
                        "authorization": r.authorization,
                        "headers": r.headers,
                        "body_len": r.body_len,
                    })
                })
                .collect();
            json_answer(200, &Value::Array(list))
        }
        ("clear", "") => {
            shared.records.lock().clear();
            Answer {
                status: 204,
                content_type: "",
                body: Vec::new(),
            }
        }
        ("restart", "") => {
            shared.mutate(|st| st.restart(Instant::now()));
            Answer {
                status: 204,
                content_type: "",
                body: Vec::new(),
            }
        }
        ("hold", pattern) if !pattern.is_empty() => {
            *shared.hold.lock() = Some(pattern.as_bytes().to_vec());
            json_answer(200, &json!({ "hold": pattern }))
        }
        ("release", "") => {
            *shared.hold.lock() = None;
            json_answer(200, &json!({ "held": shared.held.load(Ordering::SeqCst) }))
        }
        ("state", "") => json_answer(200, &shared.state_json()),
        _ => json_answer(404, &json!({ "error": "unknown control", "path": path })),
    }
}
