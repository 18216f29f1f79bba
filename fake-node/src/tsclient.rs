//! The TeamSpeak side of the node's bots: each running bot is a TeamSpeak client of one shared
//! "TeamSpeak server" (a registry a test runs, `FakeNodeConfig::ts_server`), so a test can see
//! which identity is connected from which node and catch clones.
//!
//! Owns: the client half of a tiny UDP protocol (one datagram per message, text):
//! `join <node> <uid>` → `ok <uid>` | `clone <uid>`; `ping <node> <uid>` → `pong <uid>` (no
//! answer for a session the server does not know, like a real server that dropped the client);
//! `leave <node> <uid>` (no answer). And TS3AudioBot's connection life of each bot, per
//! `ts3audiobot-api.md` §9: a client whose pings go unanswered for `PacketTimeout` (30 s) has
//! timed out and reconnects on `reconnect.ontimeout` (1s, 2s, 5s, 10s, 30s, 1m, 5m, repeating
//! the last); a join refused as a clone (`client_too_many_clones_connected`) retries on
//! `reconnect.onerror` (30 s, repeating). All times are divided by `ts_time_scale` so tests
//! run in seconds. A stopped bot leaves; a killed or frozen process simply goes silent.
//! Does not own: the bots (read from the node's state each tick), the server side (the test's).

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::Shared;

/// TS3AudioBot's (TSLib's) timings, divided by a scale.
#[derive(Clone, Debug)]
pub struct TsTiming {
    /// How often a connected client pings (TSLib: every second).
    pub ping: Duration,
    /// Silence after which a client gives its connection up (TSLib `PacketTimeout`, 30 s).
    pub packet_timeout: Duration,
    /// `reconnect.ontimeout`'s default schedule.
    pub on_timeout: Vec<Duration>,
    /// `reconnect.onerror`'s default schedule (a refused clone).
    pub on_error: Vec<Duration>,
}

impl TsTiming {
    /// The real timings divided by `scale` (at least 1).
    pub fn scaled(scale: u32) -> TsTiming {
        let d = |ms: u64| Duration::from_millis(ms) / scale.max(1);
        TsTiming {
            ping: d(1_000),
            packet_timeout: d(30_000),
            on_timeout: [1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 300_000]
                .into_iter()
                .map(d)
                .collect(),
            on_error: vec![d(30_000)],
        }
    }
}

/// The delay of attempt `n` on a schedule: the last entry repeats (`GetValueAsTime`).
fn delay(schedule: &[Duration], n: usize) -> Duration {
    schedule
        .get(n)
        .or(schedule.last())
        .copied()
        .unwrap_or_default()
}

/// Where one bot's TeamSpeak connection is.
enum Session {
    /// Waiting to (re)join at `at`; `attempt` counts the attempts of the current schedule.
    Waiting { at: Instant, attempt: usize },
    /// A join was sent at `sent`.
    Joining { sent: Instant, attempt: usize },
    /// Connected; the server last answered at `last_pong`.
    Connected {
        last_pong: Instant,
        last_ping: Instant,
    },
}

/// Runs the client side for the node until `stop` is set (on its own thread).
pub fn run(shared: Arc<Shared>, server: SocketAddr, timing: TsTiming, stop: Arc<AtomicBool>) {
    let Ok(sock) = UdpSocket::bind("127.0.0.1:0") else {
        eprintln!(
            "fake node {}: cannot bind a UDP socket for the TeamSpeak server",
            shared.name
        );
        return;
    };
    let tick = (timing.ping / 4).clamp(Duration::from_millis(5), Duration::from_millis(50));
    let _ = sock.set_read_timeout(Some(tick));
    let node = shared.name.clone();
    let send = |verb: &str, uid: &str| {
        let _ = sock.send_to(format!("{verb} {node} {uid}").as_bytes(), server);
    };
    let mut sessions: HashMap<String, Session> = HashMap::new();
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        // Bots that run now (by TeamSpeak identity); a bot that stopped leaves the server.
        let running: Vec<String> = shared.bots().into_iter().map(|b| b.uid).collect();
        sessions.retain(|uid, s| {
            let keep = running.contains(uid);
            if !keep && matches!(s, Session::Connected { .. } | Session::Joining { .. }) {
                send("leave", uid);
            }
            keep
        });
        for uid in running {
            sessions.entry(uid).or_insert(Session::Waiting {
                at: now,
                attempt: 0,
            });
        }
        for (uid, s) in sessions.iter_mut() {
            match s {
                Session::Waiting { at, attempt, .. } if now >= *at => {
                    send("join", uid);
                    *s = Session::Joining {
                        sent: now,
                        attempt: *attempt,
                    };
                }
                Session::Joining { sent, attempt }
                    if now.duration_since(*sent) > timing.packet_timeout =>
                {
                    *s = Session::Waiting {
                        at: now + delay(&timing.on_timeout, *attempt),
                        attempt: *attempt + 1,
                    };
                }
                Session::Connected {
                    last_pong,
                    last_ping,
                } => {
                    if now.duration_since(*last_pong) > timing.packet_timeout {
                        // Timed out (a frozen process notices this as soon as it runs again).
                        *s = Session::Waiting {
                            at: now + delay(&timing.on_timeout, 0),
                            attempt: 1,
                        };
                    } else if now.duration_since(*last_ping) >= timing.ping {
                        send("ping", uid);
                        *last_ping = now;
                    }
                }
                _ => {}
            }
        }
        // Answers until the tick is over.
        while let Ok((n, _)) = sock.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let Some((verb, uid)) = text.split_once(' ') else {
                continue;
            };
            let now = Instant::now();
            let Some(s) = sessions.get_mut(uid) else {
                continue;
            };
            match (verb, &*s) {
                ("ok", Session::Joining { .. }) => {
                    *s = Session::Connected {
                        last_pong: now,
                        last_ping: now,
                    }
                }
                ("clone", Session::Joining { attempt, .. }) => {
                    let attempt = *attempt;
                    *s = Session::Waiting {
                        at: now + delay(&timing.on_error, attempt),
                        attempt: attempt + 1,
                    }
                }
                ("pong", Session::Connected { last_ping, .. }) => {
                    let last_ping = *last_ping;
                    *s = Session::Connected {
                        last_pong: now,
                        last_ping,
                    }
                }
                _ => {}
            }
            if sock
                .set_read_timeout(Some(Duration::from_millis(1)))
                .is_err()
            {
                break;
            }
        }
        let _ = sock.set_read_timeout(Some(tick));
    }
    // A node that stops gracefully takes its bots off the server.
    for (uid, s) in &sessions {
        if matches!(s, Session::Connected { .. }) {
            send("leave", uid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_repeat_their_last_entry() {
        let t = TsTiming::scaled(10);
        assert_eq!(delay(&t.on_timeout, 0), Duration::from_millis(100));
        assert_eq!(delay(&t.on_timeout, 6), Duration::from_secs(30));
        assert_eq!(delay(&t.on_timeout, 60), Duration::from_secs(30));
        assert_eq!(delay(&t.on_error, 5), Duration::from_secs(3));
        assert_eq!(t.packet_timeout, Duration::from_secs(3));
    }
}
