//! Numbers as people read them: the shortest digits that parse back to the
//! same f64 (Rust's `Display` and `LowerExp` both give those), and `0` for
//! negative zero. Applied to what the server sends whatever its own
//! formatting (`%.17g` gives `0.40000000000000002`; an empty sum can be `-0`).

/// `value` at its shortest round-trip representation, `-0` as `0`; in
/// scientific notation (`1e-9`) outside [1e-6, 1e21), where plain decimals
/// would run to hundreds of digits (JavaScript's rule).
#[must_use]
pub fn number(value: f64) -> String {
    // -0.0 + 0.0 is +0.0; every other value is unchanged.
    let value = value + 0.0;
    let magnitude = value.abs();
    if magnitude != 0.0 && magnitude.is_finite() && !(1e-6..1e21).contains(&magnitude) {
        format!("{value:e}")
    } else {
        format!("{value}")
    }
}

/// A reply's text: integers as integers (exact beyond 2⁵³), other numbers
/// through [`number`], anything else unchanged.
#[must_use]
pub fn number_text(text: &str) -> String {
    if let Ok(integer) = text.parse::<i64>() {
        return integer.to_string();
    }
    if let Ok(integer) = text.parse::<u64>() {
        return integer.to_string();
    }
    match text.parse::<f64>() {
        Ok(value) => number(value),
        Err(_) => text.to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn shortest_round_trip_and_no_negative_zero() {
        assert_eq!(number_text("0.40000000000000002"), "0.4");
        assert_eq!(number_text("0.29999999999999999"), "0.3");
        assert_eq!(number_text("-0"), "0");
        assert_eq!(number_text("-0.0"), "0");
        assert_eq!(number_text("0.55901699437494745"), "0.5590169943749475");
        assert_eq!(number_text("1.0000000000000001e-300"), "1e-300");
        assert_eq!(number_text("-2.5000000000000001e-07"), "-2.5e-7");
        assert_eq!(number_text("0.000001"), "0.000001");
        assert_eq!(number_text("1e21"), "1e21");
        assert_eq!(number_text("123456789012345678"), "123456789012345678");
        assert_eq!(number_text("inf"), "inf");
        assert_eq!(number_text("-2.5"), "-2.5");
        assert_eq!(number(-0.0), "0");
        assert_eq!(number(0.1 + 0.2), "0.30000000000000004");
    }

    #[test]
    fn integers_and_text_are_kept() {
        assert_eq!(number_text("30"), "30");
        assert_eq!(number_text("18446744073709551615"), "18446744073709551615");
        assert_eq!(number_text("9007199254740993"), "9007199254740993");
        assert_eq!(number_text("p4"), "p4");
        assert_eq!(number_text(""), "");
    }
}
