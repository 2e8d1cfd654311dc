//! List responses and paging parameters (RFC 7644 §3.4.2).

use crate::schema::{LIST_RESPONSE_SCHEMA, MAX_RESULTS};
use serde_json::{json, Value};

/// Paging as asked: `startIndex` is 1-based (values below 1 mean 1), `count` is capped at
/// [`MAX_RESULTS`] (and a negative count means 0, as the RFC says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub start_index: usize,
    pub count: usize,
}

impl Page {
    pub fn new(start_index: Option<i64>, count: Option<i64>) -> Self {
        let start_index = start_index.unwrap_or(1).clamp(1, i64::from(u32::MAX)) as usize;
        let count = count.unwrap_or(100).clamp(0, MAX_RESULTS as i64) as usize;
        Self { start_index, count }
    }
    /// Rows to skip.
    pub fn offset(&self) -> usize {
        self.start_index - 1
    }
}

/// A ListResponse of `resources` (already the requested page) out of `total` matches.
pub fn list_response(total: usize, page: Page, resources: Vec<Value>) -> Value {
    json!({
        "schemas": [LIST_RESPONSE_SCHEMA],
        "totalResults": total,
        "startIndex": page.start_index,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_bounds() {
        assert_eq!(Page::new(None, None), Page { start_index: 1, count: 100 });
        assert_eq!(Page::new(Some(0), Some(-5)), Page { start_index: 1, count: 0 });
        assert_eq!(Page::new(Some(-9), Some(100_000)), Page { start_index: 1, count: MAX_RESULTS });
        assert_eq!(Page::new(Some(i64::MAX), Some(3)).offset(), u32::MAX as usize - 1);
    }

    #[test]
    fn response_fields_are_integers() {
        let r = list_response(7, Page::new(Some(3), Some(2)), vec![json!({"id": "a"}), json!({"id": "b"})]);
        assert_eq!(r["totalResults"], 7);
        assert_eq!(r["startIndex"], 3);
        assert_eq!(r["itemsPerPage"], 2);
        assert_eq!(r["Resources"][1]["id"], "b");
    }
}
