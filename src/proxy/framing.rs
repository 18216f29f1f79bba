//! The framing of a node answer the router edits (BotInfo ids, redaction, a tenant's names).
//!
//! Owns: [`EditedFraming`], a Pingora downstream module that decides, as the answer's head is
//! written, whether it goes out with the edited body's `Content-Length` or chunked. Does not
//! own: the edits themselves (`exec::answer`) or when an answer needs them (`router`).
//!
//! Why a module: Pingora runs `response_filter` on the node's head before the body is read, so
//! the edited length is not known there. But Pingora reads the node's answer in batches (the
//! head and whatever body arrived with it) and runs every task of a batch through the
//! `ProxyHttp` filters before it runs the downstream modules and writes anything
//! (`process_upstream_tasks` → `write_response_tasks` in pingora-proxy 0.9). A small answer
//! that arrives with its head (one write by the node, as TS3AudioBot's Kestrel does) is
//! therefore edited whole before this module sees its head: the head keeps every header of
//! the node's and gets the edited body's `Content-Length`, and Pingora does not flush a head
//! with a `Content-Length`, so head and body leave in one write, like an unedited answer.
//! When the body comes later than its head, its length is unknown when the head must be
//! written, and the answer goes out chunked (the head at once, then the body).

use async_trait::async_trait;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use pingora::http::ResponseHeader;
use pingora::modules::http::{HttpModule, HttpModuleBuilder, Module, ModuleBuilder};

/// Per request: whether the answer is being edited, and the edited body's length once known.
#[derive(Debug, Default)]
pub struct EditedFraming {
    edited: bool,
    length: Option<usize>,
}

impl EditedFraming {
    /// The builder to register in `init_downstream_modules`.
    pub fn builder() -> ModuleBuilder {
        Box::new(EditedFramingBuilder)
    }

    /// The answer's body will be replaced by an edited one (called on the node's head).
    pub fn editing(&mut self) {
        self.edited = true;
    }

    /// The whole edited body is known (called at its end).
    pub fn edited_length(&mut self, n: usize) {
        self.length = Some(n);
    }

    /// The head as it goes to the client: the node's own headers, with the edited body's
    /// length when it is known and chunked otherwise.
    pub fn frame(&self, resp: &mut ResponseHeader) -> pingora::Result<()> {
        if !self.edited {
            return Ok(());
        }
        match self.length {
            Some(n) => {
                resp.remove_header(&TRANSFER_ENCODING);
                resp.insert_header(CONTENT_LENGTH, n.to_string())?;
            }
            None => {
                resp.remove_header(&CONTENT_LENGTH);
                resp.insert_header(TRANSFER_ENCODING, "chunked")?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl HttpModule for EditedFraming {
    async fn response_header_filter(
        &mut self,
        resp: &mut ResponseHeader,
        _end_of_stream: bool,
    ) -> pingora::Result<()> {
        self.frame(resp)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

struct EditedFramingBuilder;

impl HttpModuleBuilder for EditedFramingBuilder {
    fn init(&self) -> Module {
        Box::new(EditedFraming::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(cl: Option<&str>) -> ResponseHeader {
        let mut h = ResponseHeader::build(200, None).expect("head");
        h.insert_header("Server", "Kestrel").expect("server");
        if let Some(cl) = cl {
            h.insert_header("Content-Length", cl).expect("cl");
        }
        h
    }

    #[test]
    fn unedited_answers_keep_their_framing() {
        let mut h = head(Some("12"));
        EditedFraming::default().frame(&mut h).expect("frame");
        assert_eq!(h.headers.get("content-length").unwrap(), "12");
        assert!(h.headers.get("transfer-encoding").is_none());
    }

    #[test]
    fn a_known_edit_gets_its_length_and_keeps_the_nodes_headers() {
        let mut f = EditedFraming::default();
        f.editing();
        f.edited_length(7);
        let mut h = head(Some("12"));
        f.frame(&mut h).expect("frame");
        assert_eq!(h.headers.get("content-length").unwrap(), "7");
        assert_eq!(h.headers.get("server").unwrap(), "Kestrel");
        assert!(h.headers.get("transfer-encoding").is_none());
        // A chunked node answer edited whole gets a length too.
        let mut h = head(None);
        h.insert_header("Transfer-Encoding", "chunked").expect("te");
        f.frame(&mut h).expect("frame");
        assert_eq!(h.headers.get("content-length").unwrap(), "7");
        assert!(h.headers.get("transfer-encoding").is_none());
    }

    #[test]
    fn an_edit_still_unknown_goes_chunked() {
        let mut f = EditedFraming::default();
        f.editing();
        let mut h = head(Some("12"));
        f.frame(&mut h).expect("frame");
        assert!(h.headers.get("content-length").is_none());
        assert_eq!(h.headers.get("transfer-encoding").unwrap(), "chunked");
    }
}
