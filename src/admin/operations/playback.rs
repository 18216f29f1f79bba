//! A bot's playback: reading it from the old copy and restoring it on the new one.
//!
//! Owns: [`Playback`] and [`Song`], the requests that read them from a node and restore them
//! (`Operations::read_playback`, `Operations::restore_playback`), and parsing and building
//! those requests' contents.
//! Does not own: when a move reads or restores playback (`moving`), where it is kept while a
//! bot moves (the operation's record, in the parent module), or the node's HTTP client
//! (`cluster::failover::Rebuilder`).
//!
//! # What TS3AudioBot's API lets us carry over
//! Read in one request, `bot use <lid> (json merge (song) (volume) (repeat) (random)
//! (info 0 20))`, then further `info <offset> 20` pages of the queue (at most
//! [`MAX_QUEUE`] items), and restored in order on the new copy:
//! - the song that is on: `play <link>` then `seek <seconds>` (its position plus the time the
//!   move took, unless paused) and `pause` if it was paused;
//! - `volume <v>` (after `play`, which may clamp the volume on song start), `repeat off|one|all`,
//!   `random on|off`;
//! - the queue after the current song (`add <link>` each). `play <link>` makes the current
//!   song the queue's first item, so the songs before it cannot be put back in front of it:
//!   with `repeat all` they are appended after the others (the same loop, rotated), otherwise
//!   they are dropped (`previous` then finds nothing).
//!
//! Not carried: the history (a node-wide database), a template bot's playlists, avatars and
//! local music files (files on the old node; the API could copy playlists, this does not yet),
//! the random seed, quiz mode, whisper targets, anything set on a template behind the router's
//! back (the rebuild uses the router's records, as failover does), and the queue items' own
//! titles (`add` resolves each link again). An idle bot's queue is not restored (`add` would
//! start it).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cluster::Node;
use crate::protocol::command::escape;
use crate::store::now_ms;

use super::Operations;

/// Queue items read and restored at most.
pub const MAX_QUEUE: usize = 500;
/// Bytes of inner commands per restoring request (TS3AudioBot's request line is ~8 KiB).
const REQUEST_BUDGET: usize = 4000;

/// A bot's playback, as read from its node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Playback {
    /// The song that is on.
    pub song: Option<Song>,
    /// `volume` (0-100).
    pub volume: Option<f64>,
    /// `repeat`: 0 off, 1 one, 2 all.
    pub repeat: Option<u8>,
    /// `random`.
    pub random: Option<bool>,
    /// The queue's links, in order.
    pub queue: Vec<String>,
    /// The queue index of the song that is on.
    pub index: Option<usize>,
    /// When it was read (milliseconds since the Unix epoch), so the position can be advanced
    /// by the time the move took.
    pub read_ms: u64,
}

/// The song that is on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Song {
    /// Its link (what `play` takes).
    pub link: String,
    /// Seconds into it.
    pub position: f64,
    /// Its length in seconds.
    pub length: f64,
    /// Paused.
    pub paused: bool,
}

impl Operations {
    /// Reads a running bot's playback (see the module documentation).
    pub(super) async fn read_playback(&self, node: &Node, lid: u32) -> Result<Playback, String> {
        let target = format!(
            "/api/bot/use/{lid}/(/json/merge/(/song)/(/volume)/(/repeat)/(/random)/(/info/0/20))"
        );
        let read_ms = now_ms();
        let first = self.get_json(node, &target).await?;
        let mut p = parse_playback(&first).ok_or("not a playback answer")?;
        p.read_ms = read_ms;
        let count = first
            .get(4)
            .and_then(|i| i.get("SongCount"))
            .and_then(Value::as_u64)
            .map_or(0, |c| usize::try_from(c).unwrap_or(usize::MAX))
            .min(MAX_QUEUE);
        while p.queue.len() < count {
            let page = format!("/api/bot/use/{lid}/(/info/{}/20)", p.queue.len());
            let info = self.get_json(node, &page).await?;
            let before = p.queue.len();
            p.queue.extend(queue_links(&info));
            if p.queue.len() == before {
                break;
            }
        }
        p.queue.truncate(MAX_QUEUE);
        Ok(p)
    }

    /// Restores a playback on the new copy in slot `lid`, then reads it back: inside a
    /// `json merge` a failed command and a void one are both `null`, so only the read says
    /// whether the song, volume, repeat and random took.
    pub(super) async fn restore_playback(
        &self,
        node: &Node,
        lid: u32,
        p: &Playback,
    ) -> Result<(), String> {
        let elapsed = Duration::from_millis(now_ms().saturating_sub(p.read_ms));
        for batch in restore_batches(p, elapsed) {
            let target = format!("/api/bot/use/{lid}/(/json/merge/{})", batch.join("/"));
            self.get_json(node, &target).await?;
        }
        let back =
            format!("/api/bot/use/{lid}/(/json/merge/(/song)/(/volume)/(/repeat)/(/random))");
        let now = parse_playback(&self.get_json(node, &back).await?).ok_or("no playback")?;
        let mut wrong = Vec::new();
        if now.song.as_ref().map(|s| &s.link) != p.song.as_ref().map(|s| &s.link) {
            wrong.push("song");
        }
        if p.volume
            .is_some_and(|v| now.volume.is_none_or(|n| (n - v).abs() > 0.5))
        {
            wrong.push("volume");
        }
        if p.repeat.is_some() && now.repeat != p.repeat {
            wrong.push("repeat");
        }
        if p.random.is_some() && now.random != p.random {
            wrong.push("random");
        }
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(format!("not taken: {}", wrong.join(", ")))
        }
    }

    async fn get_json(&self, node: &Node, target: &str) -> Result<Value, String> {
        let r = self
            .rebuilder
            .client()
            .get(
                &node.endpoint(),
                target.as_bytes(),
                self.rebuilder.request_timeout(),
            )
            .await
            .map_err(|e| e.to_string())?;
        if r.status != 200 {
            return Err(format!("HTTP {} {}", r.status, r.snippet()));
        }
        serde_json::from_slice(&r.body).map_err(|e| format!("not JSON: {e}"))
    }
}

/// The playback in a `json merge (song) (volume) (repeat) (random) (info 0 20)` answer.
fn parse_playback(v: &Value) -> Option<Playback> {
    let a = v.as_array()?;
    let basic = |x: Option<&Value>| x.map(|x| x.get("Value").unwrap_or(x).clone());
    let song = a.first().and_then(|s| {
        Some(Song {
            link: s.get("Link")?.as_str()?.to_string(),
            position: s.get("Position").and_then(Value::as_f64).unwrap_or(0.0),
            length: s.get("Length").and_then(Value::as_f64).unwrap_or(0.0),
            paused: s.get("Paused").and_then(Value::as_bool).unwrap_or(false),
        })
    });
    let repeat = basic(a.get(2)).and_then(|r| match &r {
        Value::Number(n) => n.as_u64().and_then(|n| u8::try_from(n).ok()),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "off" => Some(0),
            "one" => Some(1),
            "all" => Some(2),
            _ => None,
        },
        _ => None,
    });
    let info = a.get(4);
    Some(Playback {
        song,
        volume: basic(a.get(1)).and_then(|x| x.as_f64()),
        repeat: repeat.filter(|r| *r <= 2),
        random: basic(a.get(3)).and_then(|x| x.as_bool()),
        queue: info.map(queue_links).unwrap_or_default(),
        index: info
            .and_then(|i| i.get("PlaybackIndex"))
            .and_then(Value::as_u64)
            .and_then(|i| usize::try_from(i).ok()),
        read_ms: 0,
    })
}

/// The links of a `QueueInfo`'s items.
fn queue_links(info: &Value) -> Vec<String> {
    info.get("Items")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.get("Link").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The inner commands that restore `p` on a new copy, `elapsed` after it was read, in
/// batches of one `json merge` request each: first what listeners hear (the song at its
/// position, volume, repeat, random), then the rest of the queue.
fn restore_batches(p: &Playback, elapsed: Duration) -> Vec<Vec<String>> {
    let mut first = Vec::new();
    let mut queue = Vec::new();
    if let Some(s) = &p.song {
        first.push(format!("(/play/{})", escape(&s.link)));
        let run = if s.paused { 0.0 } else { elapsed.as_secs_f64() };
        // Whole seconds (every TS3AudioBot time format takes them), short of the end.
        let at = (s.position + run).min((s.length - 1.0).max(0.0)).max(0.0);
        first.push(format!("(/seek/{})", at.floor() as u64));
        if s.paused {
            first.push("(/pause)".to_string());
        }
        // The queue around the song that is on, when it is the item the index names.
        if let Some(i) = p.index.filter(|i| p.queue.get(*i) == Some(&s.link)) {
            let after = p.queue.iter().skip(i + 1);
            let before = p.queue.iter().take(i);
            let links: Vec<&String> = if p.repeat == Some(2) {
                after.chain(before).collect()
            } else {
                after.collect()
            };
            queue = links
                .into_iter()
                .map(|l| format!("(/add/{})", escape(l)))
                .collect();
        }
    }
    if let Some(v) = p.volume {
        first.push(format!("(/volume/{v})"));
    }
    if let Some(r) = p.repeat {
        let mode = ["off", "one", "all"][usize::from(r.min(2))];
        first.push(format!("(/repeat/{mode})"));
    }
    if let Some(r) = p.random {
        first.push(format!("(/random/{})", if r { "on" } else { "off" }));
    }
    let mut batches = Vec::new();
    if !first.is_empty() {
        batches.push(first);
    }
    let mut batch: Vec<String> = Vec::new();
    let mut size = 0;
    for cmd in queue {
        if size + cmd.len() > REQUEST_BUDGET && !batch.is_empty() {
            batches.push(std::mem::take(&mut batch));
            size = 0;
        }
        size += cmd.len() + 1;
        batch.push(cmd);
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn playback_is_read_from_a_merge_answer() {
        let v = json!([
            {"Link": "https://x/a", "Title": "a", "AudioType": "media", "Position": 42.5, "Length": 200.0, "Paused": false},
            37.5,
            2,
            true,
            {"Id": ".mix", "SongCount": 3, "DisplayOffset": 0, "PlaybackIndex": 1,
             "Items": [{"Link": "https://x/z"}, {"Link": "https://x/a"}, {"Link": "https://x/b"}]}
        ]);
        let p = parse_playback(&v).expect("playback");
        let s = p.song.clone().expect("song");
        assert_eq!(
            (s.link.as_str(), s.position, s.paused),
            ("https://x/a", 42.5, false)
        );
        assert_eq!(p.volume, Some(37.5));
        assert_eq!(p.repeat, Some(2));
        assert_eq!(p.random, Some(true));
        assert_eq!(p.index, Some(1));
        assert_eq!(p.queue.len(), 3);
        // Idle: `song` failed inside the merge (null), the rest still counts.
        let idle =
            parse_playback(&json!([null, {"Value": 10.0}, "One", false, null])).expect("idle");
        assert!(idle.song.is_none());
        assert_eq!(
            (idle.volume, idle.repeat, idle.random),
            (Some(10.0), Some(1), Some(false))
        );
    }

    #[test]
    fn restore_continues_the_song_and_keeps_the_loop() {
        let p = Playback {
            song: Some(Song {
                link: "https://x/a b".into(),
                position: 42.4,
                length: 200.0,
                paused: false,
            }),
            volume: Some(37.5),
            repeat: Some(2),
            random: Some(false),
            queue: vec![
                "https://x/z".into(),
                "https://x/a b".into(),
                "https://x/b".into(),
            ],
            index: Some(1),
            read_ms: 0,
        };
        let b = restore_batches(&p, Duration::from_millis(3_000));
        assert_eq!(
            b[0],
            vec![
                "(/play/https%3A%2F%2Fx%2Fa%20b)",
                "(/seek/45)",
                "(/volume/37.5)",
                "(/repeat/all)",
                "(/random/off)"
            ]
        );
        // Repeat all: the songs before the current one follow the later ones.
        assert_eq!(
            b[1],
            vec!["(/add/https%3A%2F%2Fx%2Fb)", "(/add/https%3A%2F%2Fx%2Fz)"]
        );
        // Without repeat they are dropped; paused songs do not advance and stay paused.
        let paused = Playback {
            repeat: Some(0),
            song: p.song.clone().map(|s| Song { paused: true, ..s }),
            ..p.clone()
        };
        let b = restore_batches(&paused, Duration::from_secs(3));
        assert!(b[0].contains(&"(/seek/42)".to_string()) && b[0].contains(&"(/pause)".to_string()));
        assert_eq!(b[1], vec!["(/add/https%3A%2F%2Fx%2Fb)"]);
        // Long queues are split into requests that fit a request line.
        let long = Playback {
            queue: std::iter::once("https://x/a b".to_string())
                .chain((0..400).map(|i| format!("https://example.com/song/{i}")))
                .collect(),
            index: Some(0),
            ..p
        };
        let b = restore_batches(&long, Duration::ZERO);
        assert!(b.len() > 2);
        assert!(b.iter().all(|x| x.join("/").len() <= REQUEST_BUDGET + 64));
        assert_eq!(b.iter().skip(1).map(Vec::len).sum::<usize>(), 400);
    }
}
