//! The framing of a node answer the router edits (BotInfo ids, redaction, a tenant's names),
//! and the size bound on request bodies that declare no length.
//!
//! Owns: [`EditedFraming`], the router's one Pingora downstream module: it decides, as the
//! answer's head is written, whether it goes out with the edited body's `Content-Length` or
//! chunked, and counts a request body as it streams to the node (a chunked body has no
//! declared size to check up front). Does not own: the edits themselves (`exec::answer`),
//! when an answer needs them, or the declared-size check (`router`).
//!
//! Why the body count is here: Pingora runs every module's body hook on every request anyway
//! (boxed), so counting here saves the router's own `request_body_filter` hook and the boxed
//! future it would cost each request.
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
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use pingora::http::ResponseHeader;
use pingora::modules::http::{HttpModule, HttpModuleBuilder, Module, ModuleBuilder};

/// Whether a head is an interim one (`100 Continue`, `103 Early Hints`) that goes out before
/// the answer's own head; `101 Switching Protocols` is the answer (as Pingora treats it).
pub fn is_interim(status: http::StatusCode) -> bool {
    status.is_informational() && status != http::StatusCode::SWITCHING_PROTOCOLS
}

/// Per request: whether the answer is being edited, and the edited body's length once known;
/// the request body bytes seen so far.
#[derive(Debug, Default)]
pub struct EditedFraming {
    edited: bool,
    length: Option<usize>,
    max_body: usize,
    body_bytes: usize,
}

impl EditedFraming {
    /// The builder to register in `init_downstream_modules`; request bodies over `max_body`
    /// bytes fail with a 413.
    pub fn builder(max_body: usize) -> ModuleBuilder {
        Box::new(EditedFramingBuilder { max_body })
    }

    /// The router's answer replaces the node's (an error): its own framing stands.
    pub fn reset(&mut self) {
        self.edited = false;
        self.length = None;
    }

    /// A new attempt at the node (a retry replays the request body from its start): the
    /// body is counted again from zero, and the answer's framing is decided anew.
    pub fn new_attempt(&mut self) {
        self.body_bytes = 0;
        self.reset();
    }

    /// Counts a piece of request body; an error once the bound is passed.
    pub fn count_body(&mut self, body: Option<&Bytes>) -> pingora::Result<()> {
        if let Some(b) = body {
            self.body_bytes += b.len();
            if self.body_bytes > self.max_body {
                return pingora::Error::e_explain(
                    pingora::ErrorType::HTTPStatus(413),
                    "request body too large",
                );
            }
        }
        Ok(())
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
    /// length when it is known and chunked otherwise. A head that ends the answer (no body
    /// follows) keeps the node's framing.
    pub fn frame(&self, resp: &mut ResponseHeader, end_of_stream: bool) -> pingora::Result<()> {
        // An informational head (`100 Continue`) goes out before the answer's own and frames
        // no body.
        if !self.edited || is_interim(resp.status) || (end_of_stream && self.length.is_none()) {
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
    async fn request_body_filter(
        &mut self,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
    ) -> pingora::Result<()> {
        self.count_body(body.as_ref())
    }

    async fn response_header_filter(
        &mut self,
        resp: &mut ResponseHeader,
        end_of_stream: bool,
    ) -> pingora::Result<()> {
        self.frame(resp, end_of_stream)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

struct EditedFramingBuilder {
    max_body: usize,
}

impl HttpModuleBuilder for EditedFramingBuilder {
    fn init(&self) -> Module {
        Box::new(EditedFraming {
            max_body: self.max_body,
            ..EditedFraming::default()
        })
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
        EditedFraming::default()
            .frame(&mut h, false)
            .expect("frame");
        assert_eq!(h.headers.get("content-length").unwrap(), "12");
        assert!(h.headers.get("transfer-encoding").is_none());
    }

    #[test]
    fn a_known_edit_gets_its_length_and_keeps_the_nodes_headers() {
        let mut f = EditedFraming::default();
        f.editing();
        f.edited_length(7);
        let mut h = head(Some("12"));
        f.frame(&mut h, false).expect("frame");
        assert_eq!(h.headers.get("content-length").unwrap(), "7");
        assert_eq!(h.headers.get("server").unwrap(), "Kestrel");
        assert!(h.headers.get("transfer-encoding").is_none());
        // A chunked node answer edited whole gets a length too.
        let mut h = head(None);
        h.insert_header("Transfer-Encoding", "chunked").expect("te");
        f.frame(&mut h, false).expect("frame");
        assert_eq!(h.headers.get("content-length").unwrap(), "7");
        assert!(h.headers.get("transfer-encoding").is_none());
    }

    #[test]
    fn request_bodies_are_bounded() {
        let mut f = EditedFraming {
            max_body: 10,
            ..EditedFraming::default()
        };
        f.count_body(Some(&Bytes::from_static(b"123456")))
            .expect("6");
        f.count_body(None).expect("none");
        f.count_body(Some(&Bytes::from_static(b"7890")))
            .expect("10");
        let e = f.count_body(Some(&Bytes::from_static(b"x"))).unwrap_err();
        assert_eq!(e.etype(), &pingora::ErrorType::HTTPStatus(413));
    }

    #[test]
    fn a_retry_counts_the_replayed_body_once() {
        let mut f = EditedFraming {
            max_body: 10,
            ..EditedFraming::default()
        };
        f.count_body(Some(&Bytes::from_static(b"123456")))
            .expect("6");
        f.new_attempt();
        f.count_body(Some(&Bytes::from_static(b"123456")))
            .expect("the same 6 again");
        f.count_body(Some(&Bytes::from_static(b"7890")))
            .expect("10");
    }

    #[test]
    fn an_informational_head_is_not_framed() {
        let mut f = EditedFraming::default();
        f.editing();
        f.edited_length(7);
        let mut h = ResponseHeader::build(100, None).expect("head");
        f.frame(&mut h, false).expect("frame");
        assert!(h.headers.get("content-length").is_none());
        assert!(h.headers.get("transfer-encoding").is_none());
    }

    #[test]
    fn a_head_without_a_body_keeps_the_nodes_framing() {
        let mut f = EditedFraming::default();
        f.editing();
        let mut h = head(Some("12"));
        f.frame(&mut h, true).expect("frame");
        assert_eq!(h.headers.get("content-length").unwrap(), "12");
        assert!(h.headers.get("transfer-encoding").is_none());
    }

    #[test]
    fn an_edit_still_unknown_goes_chunked() {
        let mut f = EditedFraming::default();
        f.editing();
        let mut h = head(Some("12"));
        f.frame(&mut h, false).expect("frame");
        assert!(h.headers.get("content-length").is_none());
        assert_eq!(h.headers.get("transfer-encoding").unwrap(), "chunked");
    }
}
