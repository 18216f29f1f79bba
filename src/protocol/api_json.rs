//! TS3AudioBot's wire format for answers the router makes itself.
//!
//! Owns: the error JSON (`{"ErrorCode","ErrorName","ErrorMessage","HelpMessage"?,"HelpLink"?}`
//! in TS3AudioBot's key order), the status code of each error reason, the exact texts the bot
//! uses, the headers every `/api` answer carries, and `BotInfo` serialisation.
//! Does not own: editing node responses in place (`json_edit`) or deciding which error applies
//! (`auth`, `routing`).

use serde::Serialize;

/// `Content-Type` of every API answer (exactly this, no charset: some clients compare it).
pub const CONTENT_TYPE_JSON: &str = "application/json";
/// The cache header TS3AudioBot sends. Its name really is `CacheControl` (a typo upstream).
pub const CACHE_CONTROL_NAME: &str = "CacheControl";
/// Its value.
pub const CACHE_CONTROL_VALUE: &str = "no-cache, no-store, must-revalidate";
/// Help link of 401 answers.
pub const AUTH_HELP_LINK: &str = "https://github.com/Splamy/TS3AudioBot/wiki/WebAPI#authentication";
/// Help message of 401 answers.
pub const AUTH_HELP_MESSAGE: &str = "You have to authenticate yourself to call this method.";
/// Help link of 403 answers.
pub const RIGHTS_HELP_LINK: &str = "https://github.com/Splamy/TS3AudioBot/wiki/FAQ#missing-rights";

/// TS3AudioBot's `CommandExceptionReason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// 0, HTTP 500.
    Unknown,
    /// 1, HTTP 500.
    InternalError,
    /// 2, HTTP 401.
    Unauthorized,
    /// 10, HTTP 422.
    CommandError,
    /// 11, HTTP 403.
    MissingRights,
    /// 12, HTTP 400.
    AmbiguousCall,
    /// 13, HTTP 400.
    MissingParameter,
    /// 16, HTTP 400.
    NotSupported,
}

impl Reason {
    /// The numeric `ErrorCode`.
    pub fn code(self) -> u8 {
        match self {
            Reason::Unknown => 0,
            Reason::InternalError => 1,
            Reason::Unauthorized => 2,
            Reason::CommandError => 10,
            Reason::MissingRights => 11,
            Reason::AmbiguousCall => 12,
            Reason::MissingParameter => 13,
            Reason::NotSupported => 16,
        }
    }

    /// The `ErrorName`.
    pub fn name(self) -> &'static str {
        match self {
            Reason::Unknown => "Unknown",
            Reason::InternalError => "InternalError",
            Reason::Unauthorized => "Unauthorized",
            Reason::CommandError => "CommandError",
            Reason::MissingRights => "MissingRights",
            Reason::AmbiguousCall => "AmbiguousCall",
            Reason::MissingParameter => "MissingParameter",
            Reason::NotSupported => "NotSupported",
        }
    }

    /// The HTTP status TS3AudioBot answers with.
    pub fn status(self) -> u16 {
        match self {
            Reason::Unknown | Reason::InternalError => 500,
            Reason::Unauthorized => 401,
            Reason::CommandError => 422,
            Reason::MissingRights => 403,
            Reason::AmbiguousCall | Reason::MissingParameter | Reason::NotSupported => 400,
        }
    }
}

/// An error answer in TS3AudioBot's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status (usually `reason.status()`; 503/504/413/414 for router-level failures).
    pub status: u16,
    /// The reason.
    pub reason: Reason,
    /// `ErrorMessage`.
    pub message: String,
    /// `HelpMessage`, omitted when None.
    pub help_message: Option<String>,
    /// `HelpLink`, omitted when None.
    pub help_link: Option<&'static str>,
    /// Seconds for a `Retry-After` header (a node in maintenance), if any.
    pub retry_after: Option<u32>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorJson<'a> {
    error_code: u8,
    error_name: &'a str,
    error_message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    help_message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    help_link: Option<&'a str>,
}

impl ApiError {
    /// An error with the reason's usual status and no help texts.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        ApiError {
            status: reason.status(),
            reason,
            message: message.into(),
            help_message: None,
            help_link: None,
            retry_after: None,
        }
    }

    /// A 401 exactly as TS3AudioBot sends it.
    pub fn unauthorized(message: &str) -> Self {
        ApiError {
            help_message: Some(AUTH_HELP_MESSAGE.to_string()),
            help_link: Some(AUTH_HELP_LINK),
            ..ApiError::new(Reason::Unauthorized, message)
        }
    }

    /// A 403 in TS3AudioBot's wording: "You cannot execute 'bot list'. You are missing the
    /// 'cmd.bot.list' right!".
    pub fn missing_rights(words: &[&str]) -> Self {
        let command = words.join(" ");
        let right = format!("cmd.{}", words.join("."));
        ApiError {
            help_link: Some(RIGHTS_HELP_LINK),
            ..ApiError::new(
                Reason::MissingRights,
                format!("You cannot execute '{command}'. You are missing the '{right}' right!"),
            )
        }
    }

    /// A 403 with the router's own explanation.
    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError {
            help_link: Some(RIGHTS_HELP_LINK),
            ..ApiError::new(Reason::MissingRights, message)
        }
    }

    /// The node's answer to an unknown bot id.
    pub fn bot_does_not_exist() -> Self {
        ApiError::new(Reason::CommandError, "This bot does not exist.")
    }

    /// The node's answer to creating a template (or saving a bot under a name) that exists.
    /// Template names are unique in the whole cluster, so the router gives it too when the
    /// name exists on another node or another request is creating it right now.
    pub fn file_exists() -> Self {
        ApiError::new(Reason::CommandError, "The file already exists.")
    }

    /// A router-level failure with an explicit HTTP status (503 no node, 504 timeout, ...).
    pub fn with_status(status: u16, reason: Reason, message: impl Into<String>) -> Self {
        ApiError {
            status,
            ..ApiError::new(reason, message)
        }
    }

    /// A node (or all of them) cannot serve the request right now.
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError::with_status(503, Reason::InternalError, message)
    }

    /// The JSON body.
    pub fn body(&self) -> Vec<u8> {
        let json = ErrorJson {
            error_code: self.reason.code(),
            error_name: self.reason.name(),
            error_message: &self.message,
            help_message: self.help_message.as_deref(),
            help_link: self.help_link,
        };
        // Serialising plain strings and integers cannot fail.
        serde_json::to_vec(&json).unwrap_or_default()
    }

    /// The same error with a `Retry-After` header.
    pub fn with_retry_after(mut self, secs: u32) -> Self {
        self.retry_after = Some(secs);
        self
    }
}

/// TS3AudioBot's `BotInfo`, serialised in its key order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct BotInfo {
    /// Cluster-wide id, null for offline templates.
    pub id: Option<u32>,
    /// Template name, null for temporary bots.
    pub name: Option<String>,
    /// Server address.
    pub server: Option<String>,
    /// 0 offline, 1 connecting, 2 connected.
    pub status: u8,
}

/// A BotInfo `Status` from a node's answer, clamped to the three values TS3AudioBot has.
pub fn status_from(raw: i64) -> u8 {
    u8::try_from(raw.clamp(0, 2)).unwrap_or(0)
}

/// Serialises a list of bots as `bot/list` does.
pub fn bot_list_body(bots: &[BotInfo]) -> Vec<u8> {
    serde_json::to_vec(bots).unwrap_or_else(|_| b"[]".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unauthorized_is_byte_exact() {
        let e = ApiError::unauthorized("Authentication failed");
        assert_eq!(e.status, 401);
        assert_eq!(
            String::from_utf8(e.body()).expect("utf8"),
            r#"{"ErrorCode":2,"ErrorName":"Unauthorized","ErrorMessage":"Authentication failed","HelpMessage":"You have to authenticate yourself to call this method.","HelpLink":"https://github.com/Splamy/TS3AudioBot/wiki/WebAPI#authentication"}"#
        );
    }

    #[test]
    fn missing_rights_wording() {
        let e = ApiError::missing_rights(&["settings", "global", "set"]);
        assert_eq!(e.status, 403);
        assert_eq!(
            String::from_utf8(e.body()).expect("utf8"),
            r#"{"ErrorCode":11,"ErrorName":"MissingRights","ErrorMessage":"You cannot execute 'settings global set'. You are missing the 'cmd.settings.global.set' right!","HelpLink":"https://github.com/Splamy/TS3AudioBot/wiki/FAQ#missing-rights"}"#
        );
    }

    #[test]
    fn help_fields_are_omitted_when_absent() {
        let e = ApiError::bot_does_not_exist();
        assert_eq!(e.status, 422);
        assert_eq!(
            e.body(),
            br#"{"ErrorCode":10,"ErrorName":"CommandError","ErrorMessage":"This bot does not exist."}"#
        );
    }

    #[test]
    fn bot_info_shape() {
        let b = [
            BotInfo {
                id: Some(3),
                name: None,
                server: Some("ts.example.com".into()),
                status: 2,
            },
            BotInfo {
                id: None,
                name: Some("t".into()),
                server: Some(String::new()),
                status: 0,
            },
        ];
        assert_eq!(
            bot_list_body(&b),
            br#"[{"Id":3,"Name":null,"Server":"ts.example.com","Status":2},{"Id":null,"Name":"t","Server":"","Status":0}]"#
        );
    }
}
