//! How records look as BSON documents, and reading fields back.
//!
//! Owns: the `_id`s of the records that have no single natural one (a bot instance key, a
//! fence), reading numbers whichever width the server chose, and decoding a document into a
//! record. Does not own: which collection a record goes to (`mongo`).

use bson::{Bson, Document};
use serde::de::DeserializeOwned;

use crate::store::{BotRecord, StoreError};

/// The instance key of a bot: node, local id and node start time. The node name is length-
/// prefixed, so no name can make two different instances look alike.
pub(super) fn slot_key(b: &BotRecord) -> String {
    format!(
        "{}:{}/{}/{}",
        b.node.len(),
        b.node,
        b.local_id,
        b.node_started.as_deref().unwrap_or("")
    )
}

/// A fence's `_id`: the bot id first (a number, so the first `:` ends it), then the node.
pub(super) fn fence_id(node: &str, bot: u32) -> String {
    format!("{bot}:{node}")
}

pub(super) fn op_id(id: u64) -> Result<i64, StoreError> {
    i64::try_from(id).map_err(|_| StoreError::Io(format!("operation id {id} does not fit BSON")))
}

pub(super) fn is_tombstone(d: &Document) -> bool {
    d.get_bool("deleted").unwrap_or(false)
}

/// An integer field, whichever BSON number type the server chose.
pub(super) fn int(d: &Document, key: &str) -> Option<i64> {
    match d.get(key)? {
        Bson::Int32(v) => Some(i64::from(*v)),
        Bson::Int64(v) => Some(*v),
        Bson::Double(v) if v.fract() == 0.0 => Some(*v as i64),
        _ => None,
    }
}

/// `_id` as text (a map key and for messages).
pub(super) fn id_text(d: &Document) -> String {
    match d.get("_id") {
        Some(Bson::String(s)) => s.clone(),
        Some(other) => int(d, "_id").map_or_else(|| other.to_string(), |i| i.to_string()),
        None => String::new(),
    }
}

pub(super) fn decode<T: DeserializeOwned>(what: &str, d: Document) -> Result<T, StoreError> {
    bson::from_document(d).map_err(|e| StoreError::Corrupt {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use super::*;

    #[test]
    fn slot_keys_cannot_be_confused() {
        let mut a = BotRecord {
            id: 1,
            node: "a/1".into(),
            local_id: 2,
            template: None,
            address: None,
            server_password: None,
            channel: None,
            nickname: None,
            identity: None,
            created_ms: 0,
            node_started: None,
            owner: None,
        };
        let ka = slot_key(&a);
        a.node = "a".into();
        a.local_id = 1;
        a.node_started = Some("2/".into());
        assert_ne!(ka, slot_key(&a));
    }

    #[test]
    fn numbers_of_either_width_are_read() {
        let d = doc! {"a": 5i32, "b": 6i64, "c": 7.0, "d": "x"};
        assert_eq!(int(&d, "a"), Some(5));
        assert_eq!(int(&d, "b"), Some(6));
        assert_eq!(int(&d, "c"), Some(7));
        assert_eq!(int(&d, "d"), None);
    }
}
