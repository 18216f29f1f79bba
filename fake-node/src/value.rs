//! Results and failures of commands, their HTTP rendering, and the .NET conversions
//! TS3AudioBot applies to argument text.
//!
//! Owns: `Val` (what a command returns, with TS3AudioBot's `{"Value":..}` wrapping rules),
//! `Fail` (CommandException reasons, plain AudioBotExceptions that answer 200, other
//! exceptions), the JsonError body, status mapping, and Int32/UInt64/TimeSpan parsing with
//! .NET's messages ("Could not convert ...", "The number is too big.").
//! Does not own: dispatch (`exec`) or what commands do.

use serde_json::{json, Value};

/// A command's result.
#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    /// `null` / void: 204.
    Null,
    /// `JsonEmpty`: 204 (`""` inside a merge).
    Empty,
    /// Basic values: `{"Value":..}` at the top, bare inside a merge.
    Str(String),
    Int(i64),
    Float(f32),
    Bool(bool),
    /// A TailString: `{"Content":..,"Tail":..}`.
    Tail {
        content: String,
        tail: String,
    },
    /// Anything else (objects, arrays, enums as numbers): serialised as is.
    Json(Value),
    /// A `DataStream` with bytes and a content type.
    Image(&'static [u8], &'static str),
    /// A `DataStream` whose writer throws: 200 with this error (ErrorCode 10).
    ImageError(String),
}

impl Val {
    /// The value as `ExecuteToString` / string conversion sees it.
    pub fn to_text(&self) -> String {
        match self {
            Val::Null | Val::Empty | Val::Image(..) | Val::ImageError(_) => String::new(),
            Val::Str(s) => s.clone(),
            Val::Tail { content, .. } => content.clone(),
            Val::Int(i) => i.to_string(),
            Val::Float(f) => dotnet_float(*f),
            Val::Bool(b) => if *b { "True" } else { "False" }.to_string(),
            Val::Json(Value::String(s)) => s.clone(),
            Val::Json(v) => v.to_string(),
        }
    }

    /// The value inside a `json merge` array (basic values unwrapped).
    pub fn to_merge_json(&self) -> Value {
        match self {
            Val::Null => Value::Null,
            Val::Empty => json!(""),
            Val::Str(s) => json!(s),
            Val::Int(i) => json!(i),
            Val::Float(f) => json!(f),
            Val::Bool(b) => json!(b),
            Val::Tail { content, tail } => json!({ "Content": content, "Tail": tail }),
            Val::Json(v) => v.clone(),
            Val::Image(..) | Val::ImageError(_) => json!({}),
        }
    }
}

/// .NET `float.ToString()` for the values a fake produces (`50`, `12.5`).
pub fn dotnet_float(f: f32) -> String {
    if f.fract() == 0.0 && f.abs() < 1e7 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

/// `CommandExceptionReason` (the ones a fake raises; Unknown is `FailKind::Other`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Unauthorized = 2,
    CommandError = 10,
    MissingRights = 11,
    AmbiguousCall = 12,
    MissingParameter = 13,
    MissingContext = 17,
}

impl Reason {
    pub fn name(self) -> &'static str {
        match self {
            Reason::Unauthorized => "Unauthorized",
            Reason::CommandError => "CommandError",
            Reason::MissingRights => "MissingRights",
            Reason::AmbiguousCall => "AmbiguousCall",
            Reason::MissingParameter => "MissingParameter",
            Reason::MissingContext => "MissingContext",
        }
    }

    fn status(self) -> u16 {
        match self {
            Reason::Unauthorized => 401,
            Reason::MissingRights => 403,
            Reason::AmbiguousCall | Reason::MissingParameter => 400,
            Reason::CommandError | Reason::MissingContext => 422,
        }
    }
}

/// What kind of exception a failure is in TS3AudioBot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailKind {
    /// A `CommandException`: mapped to a status by its reason.
    Command(Reason),
    /// A plain `AudioBotException`: ErrorCode 10 but HTTP 200.
    Plain,
    /// Any other exception (not caught by `json merge`): ErrorCode 0 with this status.
    Other(u16),
}

/// A failed command.
#[derive(Clone, Debug, PartialEq)]
pub struct Fail {
    pub kind: FailKind,
    pub msg: String,
    pub help_message: Option<&'static str>,
    pub help_link: Option<&'static str>,
}

pub const HELP_BOT_CONTEXT: &str =
    "You are trying to call a command which is specific to a bot. Use '!bot use' to switch to a bot instance";
pub const LINK_BOT_CONTEXT: &str =
    "https://github.com/Splamy/TS3AudioBot/wiki/FAQ#api-missing-context";

impl Fail {
    pub fn new(reason: Reason, msg: impl Into<String>) -> Fail {
        Fail {
            kind: FailKind::Command(reason),
            msg: msg.into(),
            help_message: None,
            help_link: None,
        }
    }
    /// A `CommandError` (422).
    pub fn cmd(msg: impl Into<String>) -> Fail {
        Fail::new(Reason::CommandError, msg)
    }
    /// A plain `AudioBotException` (HTTP 200 with an error body).
    pub fn plain(msg: impl Into<String>) -> Fail {
        Fail {
            kind: FailKind::Plain,
            msg: msg.into(),
            help_message: None,
            help_link: None,
        }
    }
    /// A non-AudioBot exception (500 or 501, ErrorCode 0).
    pub fn other(status: u16, msg: impl Into<String>) -> Fail {
        Fail {
            kind: FailKind::Other(status),
            msg: msg.into(),
            help_message: None,
            help_link: None,
        }
    }
    pub fn not_implemented() -> Fail {
        Fail::other(501, "The method or operation is not implemented.")
    }
    pub fn missing_param(msg: impl Into<String>) -> Fail {
        Fail::new(Reason::MissingParameter, msg)
    }
    /// "Need at least N arguments to evaluate."
    pub fn at_least(n: usize) -> Fail {
        Fail::missing_param(match n {
            1 => "Need at least one argument to evaluate.".to_string(),
            2 => "Need at least two arguments to evaluate.".to_string(),
            3 => "Need at least three arguments to evaluate.".to_string(),
            4 => "Need at least four arguments to evaluate.".to_string(),
            n => format!("Need at least {n} arguments to evaluate."),
        })
    }
    /// Whether `json merge` swallows it (any AudioBotException).
    pub fn is_audiobot(&self) -> bool {
        !matches!(self.kind, FailKind::Other(_))
    }
    pub fn reason(&self) -> Option<Reason> {
        match self.kind {
            FailKind::Command(r) => Some(r),
            _ => None,
        }
    }

    /// The JsonError body, keys in TS3AudioBot's order, help fields left out when absent.
    pub fn body(&self) -> Vec<u8> {
        let (code, name) = match self.kind {
            FailKind::Command(r) => (r as i32, r.name()),
            FailKind::Plain => (10, "CommandError"),
            FailKind::Other(_) => (0, "Unknown"),
        };
        let mut m = serde_json::Map::new();
        m.insert("ErrorCode".into(), json!(code));
        m.insert("ErrorName".into(), json!(name));
        m.insert("ErrorMessage".into(), json!(self.msg));
        if let Some(h) = self.help_message {
            m.insert("HelpMessage".into(), json!(h));
        }
        if let Some(h) = self.help_link {
            m.insert("HelpLink".into(), json!(h));
        }
        serde_json::to_vec(&Value::Object(m)).unwrap_or_default()
    }

    pub fn status(&self) -> u16 {
        match self.kind {
            FailKind::Command(r) => r.status(),
            FailKind::Plain => 200,
            FailKind::Other(s) => s,
        }
    }
}

impl From<crate::settings::ConfError> for Fail {
    fn from(e: crate::settings::ConfError) -> Fail {
        match e {
            crate::settings::ConfError::Command(m) => Fail::cmd(m),
            crate::settings::ConfError::Argument(m) => Fail::other(500, m),
        }
    }
}

pub fn could_not_convert(v: &Val, ty: &str) -> Fail {
    Fail::missing_param(format!("Could not convert \"{}\" to {ty}.", v.to_text()))
}

/// `Convert.ChangeType(value, <integer type>, InvariantCulture)`: text parsed with
/// `NumberStyles.Integer` (surrounding whitespace, one sign), numbers range-checked.
pub fn to_integer(v: &Val, ty: &str, min: i128, max: i128) -> Result<i128, Fail> {
    let too_big = || Fail::missing_param("The number is too big.");
    let n: i128 = match v {
        Val::Int(i) => i128::from(*i),
        Val::Bool(b) => i128::from(*b),
        Val::Float(f) => {
            let r = f64::from(*f).round_ties_even();
            if !r.is_finite() || r < min as f64 || r > max as f64 {
                return Err(too_big());
            }
            r as i128
        }
        Val::Str(_) | Val::Tail { .. } | Val::Json(Value::String(_)) => {
            return match parse_dotnet_integer(&v.to_text()) {
                Some(Some(n)) if (min..=max).contains(&n) => Ok(n),
                Some(_) => Err(too_big()),
                None => Err(could_not_convert(v, ty)),
            };
        }
        _ => return Err(could_not_convert(v, ty)),
    };
    if (min..=max).contains(&n) {
        Ok(n)
    } else {
        Err(too_big())
    }
}

/// `None` = format error, `Some(None)` = overflow, `Some(Some(n))` = parsed.
pub fn parse_dotnet_integer(s: &str) -> Option<Option<i128>> {
    let ws = |c: char| matches!(c, '\u{9}'..='\u{d}' | ' ');
    let t = s.trim_matches(ws);
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut n: i128 = 0;
    for b in digits.bytes() {
        n = n.saturating_mul(10).saturating_add(i128::from(b - b'0'));
    }
    if n > i128::from(u64::MAX) {
        return Some(None);
    }
    Some(Some(if neg { -n } else { n }))
}

/// `TextUtil.ParseTime`: `1h2m3s`/`500ms` style, then `m:s` or seconds, then ISO 8601.
pub fn parse_seek_time(s: &str) -> Option<f64> {
    simple_time(s)
        .or_else(|| digital_time(s))
        .or_else(|| crate::settings::iso_duration(s))
}

fn simple_time(s: &str) -> Option<f64> {
    let lower = s.to_ascii_lowercase();
    let b = lower.as_bytes();
    let units = [
        ("d", 86_400.0),
        ("h", 3_600.0),
        ("m", 60.0),
        ("s", 1.0),
        ("ms", 0.001),
    ];
    let (mut i, mut next_unit, mut total) = (0, 0, 0.0);
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return None;
        }
        let num: f64 = lower[start..i].parse().ok()?;
        let unit = if lower[i..].starts_with("ms") {
            "ms"
        } else {
            lower.get(i..i + 1)?
        };
        let pos = units.iter().position(|(u, _)| *u == unit)?;
        if pos < next_unit {
            return None;
        }
        total += num * units[pos].1;
        next_unit = pos + 1;
        i += unit.len();
    }
    Some(total)
}

fn digital_time(s: &str) -> Option<f64> {
    let secs = |t: &str| -> Option<f64> {
        let t = t.trim();
        let body = t.strip_prefix(['-', '+']).unwrap_or(t);
        if body.is_empty() || !body.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return None;
        }
        t.parse().ok()
    };
    match s.split_once(':') {
        Some((m, rest)) if !rest.contains(':') => {
            let minutes = parse_dotnet_integer(m)??;
            Some(minutes as f64 * 60.0 + secs(rest)?)
        }
        Some(_) => None,
        None => secs(s),
    }
}

/// What the HTTP layer writes for a result.
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

/// Renders a result as TS3AudioBot's `ProcessApiV1Call` does.
pub fn render(res: Result<Val, Fail>) -> Answer {
    let json = |status: u16, body: Vec<u8>| Answer {
        status,
        content_type: "application/json",
        body,
    };
    match res {
        Ok(Val::Null | Val::Empty) => json(204, Vec::new()),
        Ok(Val::Image(bytes, mime)) => Answer {
            status: 200,
            content_type: mime,
            body: bytes.to_vec(),
        },
        Ok(Val::ImageError(msg)) => json(200, Fail::plain(msg).body()),
        Ok(v @ (Val::Str(_) | Val::Int(_) | Val::Float(_) | Val::Bool(_))) => json(
            200,
            serde_json::to_vec(&json!({ "Value": v.to_merge_json() })).unwrap_or_default(),
        ),
        Ok(v) => json(
            200,
            serde_json::to_vec(&v.to_merge_json()).unwrap_or_default(),
        ),
        Err(f) => json(f.status(), f.body()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotnet_integers() {
        assert_eq!(parse_dotnet_integer(" +42 "), Some(Some(42)));
        assert_eq!(parse_dotnet_integer("-0"), Some(Some(0)));
        assert_eq!(parse_dotnet_integer("4 2"), None);
        assert_eq!(parse_dotnet_integer(""), None);
        assert_eq!(parse_dotnet_integer("99999999999999999999999"), Some(None));
        let v = Val::Str("2147483648".into());
        assert_eq!(
            to_integer(&v, "Int32", i128::from(i32::MIN), i128::from(i32::MAX)).map_err(|f| f.msg),
            Err("The number is too big.".into())
        );
        let v = Val::Str("x".into());
        assert_eq!(
            to_integer(&v, "Int32", 0, 1).map_err(|f| f.msg),
            Err("Could not convert \"x\" to Int32.".into())
        );
    }

    #[test]
    fn seek_times() {
        assert_eq!(parse_seek_time("90"), Some(90.0));
        assert_eq!(parse_seek_time("1:30"), Some(90.0));
        assert_eq!(parse_seek_time("1m30s"), Some(90.0));
        assert_eq!(parse_seek_time("500ms"), Some(0.5));
        assert_eq!(parse_seek_time("PT1M"), Some(60.0));
        assert_eq!(parse_seek_time("abc"), None);
    }
}
