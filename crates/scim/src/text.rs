//! Text the store can keep. PostgreSQL's `text` and `jsonb` cannot hold the NUL character
//! (U+0000), so a request carrying one anywhere (a value or a key) is refused up front with
//! `invalidValue` instead of failing later in the database.

use crate::error::ScimError;
use serde_json::Value;

/// Checks every string and key of a request body.
pub fn check_storable(v: &Value) -> Result<(), ScimError> {
    match v {
        Value::String(s) => check_str(s),
        Value::Array(items) => items.iter().try_for_each(check_storable),
        Value::Object(m) => m.iter().try_for_each(|(k, v)| {
            check_str(k)?;
            check_storable(v)
        }),
        _ => Ok(()),
    }
}

/// Checks one string (a filter, a query parameter).
pub fn check_str(s: &str) -> Result<(), ScimError> {
    if s.contains('\0') {
        Err(ScimError::invalid_value("text must not contain the NUL character (U+0000)"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nul_anywhere_is_invalid_value() {
        assert!(check_storable(&json!({"userName": "a", "emails": [{"value": "b"}], "n": 1})).is_ok());
        for v in [json!("a\u{0}"), json!({"a\u{0}": 1}), json!([{"x": ["ok", "\u{0}"]}])] {
            assert_eq!(check_storable(&v).unwrap_err().scim_type, Some("invalidValue"), "{v}");
        }
    }
}
