//! The admin API's one error shape: `{"error": "<code>", "message": "<words>", "field": ...}`.
//!
//! Owns: [`AdminError`], the refusals every admin endpoint can give, their HTTP statuses and
//! their JSON. Does not own: deciding when to refuse (the endpoint modules).

use serde_json::json;

use crate::cluster::membership::NodeChangeError;
use crate::config::FieldError;
use crate::store::StoreError;

/// Why an admin request was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The body is not the JSON the endpoint takes.
    #[error("{0}")]
    BadRequest(String),
    /// No or wrong credentials, or the session ended.
    #[error("{0}")]
    Unauthorized(String),
    /// A user-role key, or a change without the session's CSRF token.
    #[error("{0}")]
    Forbidden(String),
    /// No such thing.
    #[error("{0}")]
    NotFound(String),
    /// The method does not apply to the path.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The name exists, or the thing cannot be removed now.
    #[error("{0}")]
    Conflict(String),
    /// The body is over the limit.
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    /// A field's value is not acceptable.
    #[error("{field}: {message}")]
    Invalid {
        /// The JSON field at fault.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A node to add does not answer like a TS3AudioBot with those credentials.
    #[error("{0}")]
    NodeCheck(String),
    /// The store could not record the change (nothing changed).
    #[error("the change could not be stored: {0}")]
    Unavailable(String),
}

impl AdminError {
    /// A field error.
    pub fn invalid(field: &str, message: impl Into<String>) -> AdminError {
        AdminError::Invalid {
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            AdminError::BadRequest(_) => 400,
            AdminError::Unauthorized(_) => 401,
            AdminError::Forbidden(_) => 403,
            AdminError::NotFound(_) => 404,
            AdminError::MethodNotAllowed(_) => 405,
            AdminError::Conflict(_) => 409,
            AdminError::TooLarge(_) => 413,
            AdminError::Invalid { .. } | AdminError::NodeCheck(_) => 422,
            AdminError::Unavailable(_) => 503,
        }
    }

    /// The `error` code.
    pub fn code(&self) -> &'static str {
        match self {
            AdminError::BadRequest(_) => "bad_request",
            AdminError::Unauthorized(_) => "unauthorized",
            AdminError::Forbidden(_) => "forbidden",
            AdminError::NotFound(_) => "not_found",
            AdminError::MethodNotAllowed(_) => "method_not_allowed",
            AdminError::Conflict(_) => "conflict",
            AdminError::TooLarge(_) => "too_large",
            AdminError::Invalid { .. } => "invalid",
            AdminError::NodeCheck(_) => "node_check_failed",
            AdminError::Unavailable(_) => "unavailable",
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Vec<u8> {
        let mut v = json!({ "error": self.code(), "message": self.to_string() });
        if let AdminError::Invalid { field, .. } = self {
            v["field"] = json!(field);
        }
        serde_json::to_vec(&v).unwrap_or_default()
    }
}

impl From<FieldError> for AdminError {
    fn from(e: FieldError) -> Self {
        AdminError::invalid(e.field, e.message)
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        AdminError::Unavailable(e.to_string())
    }
}

impl From<NodeChangeError> for AdminError {
    fn from(e: NodeChangeError) -> Self {
        match e {
            NodeChangeError::Invalid(f) => f.into(),
            NodeChangeError::NotFound(_) => AdminError::NotFound(e.to_string()),
            NodeChangeError::Store(s) => s.into(),
            NodeChangeError::NameTaken(_)
            | NodeChangeError::AddressTaken { .. }
            | NodeChangeError::NotEmpty { .. }
            | NodeChangeError::FromConfig(_)
            | NodeChangeError::Evacuating(_) => AdminError::Conflict(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shape_with_the_field_when_there_is_one() {
        let e = AdminError::invalid("url", "must start with http://");
        assert_eq!(e.status(), 422);
        assert_eq!(
            String::from_utf8(e.body()).expect("utf8"),
            r#"{"error":"invalid","message":"url: must start with http://","field":"url"}"#
        );
        let e = AdminError::NotFound("no node named `x`".into());
        assert_eq!(
            String::from_utf8(e.body()).expect("utf8"),
            r#"{"error":"not_found","message":"no node named `x`"}"#
        );
        assert_eq!(AdminError::TooLarge(65536).status(), 413);
    }
}
