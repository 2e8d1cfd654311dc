//! Text compared ignoring case, the one way everywhere: SCIM filters evaluated in memory, the
//! keys the directory looks `userName`, `displayName` and email addresses up by, and the
//! database searches that find a filter's candidates. Computed here rather than by PostgreSQL's
//! `lower()`, whose answer depends on the database's collation (under `C` it lower-cases ASCII
//! only), so a lookup finds exactly what the filter selects, on any database.

use std::collections::HashMap;
use std::sync::OnceLock;

/// `s` with every character lower-cased on its own (no context: a final `Σ` too becomes `σ`),
/// and the final sigma `ς` written `σ`. Two texts are equal ignoring case when their folds are.
/// Every character folds to one character except `İ` (U+0130), which becomes `i` and a
/// combining dot (U+0307).
pub fn fold(s: &str) -> String {
    s.chars().flat_map(fold_char).collect()
}

/// What one character folds to ([`fold`]).
fn fold_char(c: char) -> impl Iterator<Item = char> {
    c.to_lowercase().map(|l| if l == 'ς' { 'σ' } else { l })
}

/// The other characters that fold to the one character `folded` on their own (`k`: `K` and the
/// Kelvin sign `K`; `σ`: `Σ` and `ς`); empty when there are none. `İ`, which folds to two
/// characters, is not among them.
pub fn unfolded(folded: char) -> &'static [char] {
    static TABLE: OnceLock<HashMap<char, Vec<char>>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut table: HashMap<char, Vec<char>> = HashMap::new();
        for c in (0..=u32::from(char::MAX)).filter_map(char::from_u32) {
            let mut folded = fold_char(c);
            if let (Some(one), None) = (folded.next(), folded.next()) {
                if one != c {
                    table.entry(one).or_default().push(c);
                }
            }
        }
        table
    });
    table.get(&folded).map_or(&[], Vec::as_slice)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_case_the_same_whatever_the_context() {
        assert_eq!(fold("Alice.Smith@Corp.EXAMPLE"), "alice.smith@corp.example");
        assert_eq!(fold("ÉMILE Ærø"), "émile ærø");
        // Greek: a final sigma and a medial one are the same letter.
        assert_eq!(fold("ΟΔΟΣ"), fold("οδος"));
        assert_eq!(fold("ΟΔΟΣ"), fold("οδοσ"));
        assert_eq!(fold("ΣΑΣ@X"), "σασ@x");
        assert_eq!(fold("İstanbul"), "i\u{307}stanbul");
        assert_eq!(fold("\u{212A}elvin"), "kelvin");
        // Not case: ß and ss differ, as do i and the dotless ı.
        assert_ne!(fold("straße"), fold("STRASSE"));
        assert_ne!(fold("ı"), fold("I"));
    }

    #[test]
    fn folding_twice_changes_nothing() {
        for s in ["ΟΔΟΣ", "İ", "ς", "ǅ", "Ω\u{2126}", "ﬀ", "\u{10400}"] {
            assert_eq!(fold(&fold(s)), fold(s), "{s}");
        }
    }

    #[test]
    fn every_character_that_folds_to_one_is_listed_under_it() {
        assert_eq!(unfolded('k'), &['K', '\u{212A}']);
        assert_eq!(unfolded('σ'), &['Σ', 'ς']);
        assert_eq!(unfolded('i'), &['I']);
        assert!(unfolded('1').is_empty());
        assert!(unfolded('ς').is_empty());
        for c in (0..=u32::from(char::MAX)).filter_map(char::from_u32) {
            let f = fold(c.encode_utf8(&mut [0; 4]));
            let mut chars = f.chars();
            match (chars.next(), chars.next()) {
                (Some(one), None) if one != c => assert!(unfolded(one).contains(&c), "{c:?}"),
                (Some(one), None) => assert_eq!(fold(&one.to_string()), one.to_string(), "{c:?}"),
                _ => assert_eq!(c, 'İ'),
            }
        }
    }
}
