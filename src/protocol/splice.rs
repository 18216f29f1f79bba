//! Byte splicing: replacing a few byte ranges of a source in one pass, keeping every other byte.
//!
//! Owns: the one splicer of the crate ([`splice`]) and a queue to collect edits for it
//! ([`Splice`]). Both the command rewriter (id tokens in a request target) and the JSON edits
//! (values in a node's answer) use it, which is why it sits below both.
//! Does not own: finding the ranges to replace (`command`, `json_scan`) or deciding what goes
//! there (`json_edit`, `routing`).

use std::ops::Range;

/// Applies replacements to `src`. Each replacement is a byte range of `src` and the bytes to
/// put there.
///
/// Edits are applied in order of their start offset (then end; the sort is stable, so equal
/// edits keep their order, and `edits` is left sorted). An edit that overlaps an earlier one
/// (shares at least one byte with it), or whose range is inverted or reaches past the end of
/// the source, is skipped rather than panicking; callers build edits from the spans of one
/// parse, so this only guards against misuse. Empty ranges are insertions; at a given offset
/// they are applied before a replacement starting there.
pub fn splice(src: &[u8], edits: &mut [(Range<usize>, Vec<u8>)]) -> Vec<u8> {
    // Sorting on (start, end) puts insertions before a replacement at the same offset.
    edits.sort_by_key(|(r, _)| (r.start, r.end));
    let growth: usize = edits.iter().map(|(_, w)| w.len()).sum();
    let mut out = Vec::with_capacity(src.len() + growth);
    let mut cursor = 0;
    for (r, with) in edits.iter() {
        if r.start < cursor || r.start > r.end || r.end > src.len() {
            continue;
        }
        out.extend_from_slice(&src[cursor..r.start]);
        out.extend_from_slice(with);
        cursor = r.end;
    }
    out.extend_from_slice(&src[cursor..]);
    out
}

/// A set of replacements collected one by one and applied to the source in one pass by
/// [`splice`] (same ordering and skipping rules).
#[derive(Debug, Clone, Default)]
pub struct Splice {
    edits: Vec<(Range<usize>, Vec<u8>)>,
}

impl Splice {
    /// An empty set of edits.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues replacing the bytes in `span` with `with`.
    pub fn replace(&mut self, span: Range<usize>, with: impl Into<Vec<u8>>) {
        self.edits.push((span, with.into()));
    }

    /// Whether no edit has been queued.
    pub fn is_empty(&self) -> bool {
        self.edits.is_empty()
    }

    /// Produces `src` with all queued edits applied (invalid ones skipped, see [`splice`]).
    pub fn apply(mut self, src: &[u8]) -> Vec<u8> {
        splice(src, &mut self.edits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(b: &[u8]) -> &str {
        std::str::from_utf8(b).unwrap()
    }

    #[test]
    fn splice_replaces_only_given_ranges() {
        let src = b"/bot/use/12/(/x)";
        let out = splice(src, &mut [(9..11, b"3".to_vec())]);
        assert_eq!(out, b"/bot/use/3/(/x)");
    }

    #[test]
    fn splice_sorts_and_ignores_bad_edits() {
        let src = b"0123456789";
        let mut sp = Splice::new();
        assert!(sp.is_empty());
        sp.replace(6..8, "X");
        sp.replace(1..3, "ab");
        sp.replace(2..4, "overlap");
        sp.replace(8..20, "out of range");
        #[allow(clippy::reversed_empty_ranges)]
        sp.replace(5..4, "inverted");
        sp.replace(0..0, "<");
        sp.replace(10..10, ">");
        assert!(!sp.is_empty());
        assert_eq!(s(&sp.apply(src)), "<0ab345X89>");
    }
}
