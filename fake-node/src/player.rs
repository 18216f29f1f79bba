//! One bot's player and queue: TS3AudioBot's `PlayManager`, `PlaylistManager` and `Player`
//! reduced to what the API can observe.
//!
//! Owns: resolving links (links containing `fail` cannot be loaded), play/add/next/previous
//! with repeat and random, pause as a toggle, positions that advance with the clock, volume
//! clamping on song start, and the `song` JSON.
//! Does not own: audio (there is none), playlists on disk (`playlists`), or the bot (`state`).

use std::time::Instant;

use rand::Rng;
use serde_json::{json, Value};

use crate::exec::Fail;
use crate::state::fnv;

/// A song in a queue or playlist.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    pub link: String,
    pub title: String,
    pub audio_type: &'static str,
}

impl Item {
    /// `{"Link","Title","AudioType"}` (TS3AudioBot's `PlaylistItemGetData`).
    pub fn to_json(&self) -> Value {
        json!({ "Link": self.link, "Title": self.title, "AudioType": self.audio_type })
    }
}

/// The song that is on.
#[derive(Clone, Debug)]
pub struct Current {
    pub item: Item,
    pub length: f64,
    pos_base: f64,
    since: Instant,
}

impl Current {
    /// Moves the play position.
    pub fn seek_to(&mut self, t: f64, now: Instant) {
        self.pos_base = t;
        self.since = now;
    }
}

/// One bot's player and queue (`PlayManager`, `PlaylistManager`, `Player`).
#[derive(Clone, Debug, Default)]
pub struct Player {
    pub queue: Vec<Item>,
    pub index: usize,
    pub current: Option<Current>,
    pub paused: bool,
    pub volume: f32,
    pub random: bool,
    pub repeat: u8,
}

/// What the resolver makes of a link: links containing `fail` cannot be loaded (a plain
/// AudioBotException, i.e. HTTP 200 with an error body), everything else plays.
pub fn resolve(link: &str) -> Result<(Item, f64), Fail> {
    if link.contains("fail") {
        return Err(Fail::plain(
            "Could not load. (media: Got error status code. [404] NotFound)",
        ));
    }
    let audio_type = if link.contains("youtu") {
        "youtube"
    } else {
        "media"
    };
    let no_query = link.split(['?', '#']).next().unwrap_or(link);
    let title = no_query
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|t| !t.is_empty())
        .unwrap_or(link);
    let length = 120.0 + (fnv(3, link.as_bytes()) % 240) as f64;
    Ok((
        Item {
            link: link.to_string(),
            title: title.to_string(),
            audio_type,
        },
        length,
    ))
}

impl Player {
    pub fn position(&self, now: Instant) -> f64 {
        self.current.as_ref().map_or(0.0, |c| {
            let run = if self.paused {
                0.0
            } else {
                now.saturating_duration_since(c.since).as_secs_f64()
            };
            (c.pos_base + run).min(c.length)
        })
    }

    pub fn set_paused(&mut self, paused: bool, now: Instant) {
        if paused == self.paused {
            return;
        }
        let pos = self.position(now);
        if let Some(c) = &mut self.current {
            c.pos_base = pos;
            c.since = now;
        }
        self.paused = paused;
    }

    /// Starts the song at `index` (volume clamped into the bot's [min, max], as on song start).
    fn start_at(&mut self, index: usize, bounds: (f32, f32), now: Instant) -> Result<(), Fail> {
        let item = self
            .queue
            .get(index)
            .cloned()
            .ok_or_else(|| Fail::plain("Nothing to play..."))?;
        let (_, length) = resolve(&item.link)?;
        self.index = index;
        self.current = Some(Current {
            item,
            length,
            pos_base: 0.0,
            since: now,
        });
        self.paused = false;
        self.volume = self.volume.clamp(bounds.0, bounds.1.max(bounds.0));
        Ok(())
    }

    /// `play <link>`: replaces the queue with the link and starts it.
    pub fn play_now(&mut self, item: Item, bounds: (f32, f32), now: Instant) -> Result<(), Fail> {
        self.queue = vec![item];
        self.start_at(0, bounds, now)
    }

    /// Replaces the queue with `items` and starts at `index`.
    pub fn play_list(
        &mut self,
        items: Vec<Item>,
        index: usize,
        bounds: (f32, f32),
        now: Instant,
    ) -> Result<(), Fail> {
        self.queue = items;
        self.start_at(index, bounds, now)
    }

    /// `add <link>`: enqueues; starts it when nothing is on.
    pub fn enqueue(
        &mut self,
        items: Vec<Item>,
        bounds: (f32, f32),
        now: Instant,
    ) -> Result<(), Fail> {
        let start = self.queue.len();
        self.queue.extend(items);
        if self.current.is_none() {
            self.start_at(start, bounds, now)?;
        }
        Ok(())
    }

    /// `play` without a link: starts the queue, or resumes.
    pub fn play_or_resume(&mut self, bounds: (f32, f32), now: Instant) -> Result<(), Fail> {
        if self.current.is_none() {
            self.start_at(self.index, bounds, now)
        } else {
            self.set_paused(false, now);
            Ok(())
        }
    }

    pub fn next(&mut self, bounds: (f32, f32), now: Instant) -> Result<(), Fail> {
        let len = self.queue.len();
        let next = if self.random && len > 0 {
            Some(rand::rng().random_range(0..len))
        } else if self.index + 1 < len {
            Some(self.index + 1)
        } else if self.repeat == 2 && len > 0 {
            Some(0)
        } else {
            None
        };
        let i = next.ok_or_else(|| Fail::plain("No next song could be played."))?;
        self.start_at(i, bounds, now)
    }

    pub fn previous(&mut self, bounds: (f32, f32), now: Instant) -> Result<(), Fail> {
        let len = self.queue.len();
        let prev = if self.index > 0 && self.index <= len {
            Some(self.index - 1)
        } else if self.repeat == 2 && len > 0 {
            Some(len - 1)
        } else {
            None
        };
        let i = prev.ok_or_else(|| Fail::plain("No previous song could be played."))?;
        self.start_at(i, bounds, now)
    }

    pub fn stop(&mut self) {
        self.current = None;
        self.paused = false;
    }

    pub fn clear(&mut self) {
        self.queue.clear();
        self.index = 0;
    }

    /// `{"Link","Title","AudioType","Position","Length","Paused"}`.
    pub fn song_json(&self, now: Instant) -> Option<Value> {
        let c = self.current.as_ref()?;
        Some(json!({
            "Link": c.item.link,
            "Title": c.item.title,
            "AudioType": c.item.audio_type,
            "Position": self.position(now),
            "Length": c.length,
            "Paused": self.paused,
        }))
    }
}
