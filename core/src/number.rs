//! How numbers are printed for people: the shortest text that reads back as
//! the same f64 (so 0.3 prints as `0.3`, not `0.29999999999999999`), negative
//! zero as `0`, and an exponent only for very large or very small magnitudes.
//! The module's RESP2 replies and the CLI print through [`Shortest`].

use std::fmt;

/// Displays an f64 at its shortest round-trip representation.
#[derive(Debug, Clone, Copy)]
pub struct Shortest(pub f64);

impl fmt::Display for Shortest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self.0;
        if value == 0.0 {
            // Both zeros; a sum over nothing is -0 in IEEE arithmetic.
            return f.write_str("0");
        }
        let magnitude = value.abs();
        // Rust's Display and LowerExp both print the shortest digits that
        // round-trip; plain notation is kept where it stays short.
        if (1e-5..1e16).contains(&magnitude) || !value.is_finite() {
            write!(f, "{value}")
        } else {
            write!(f, "{value:e}")
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::excessive_precision)] // Redis' %.17g text of a score
    fn prints_what_users_wrote() {
        let cases = [
            (0.3, "0.3"),
            (0.1 + 0.2, "0.30000000000000004"),
            (-0.0, "0"),
            (0.0, "0"),
            (1.0, "1"),
            (-2.5, "-2.5"),
            (0.55901699437494745, "0.5590169943749475"),
            (1e300, "1e300"),
            (1.5e-7, "1.5e-7"),
            (123456789.25, "123456789.25"),
            (1e16, "1e16"),
        ];
        for (value, text) in cases {
            assert_eq!(Shortest(value).to_string(), text, "{value:?}");
        }
        // Every printed value reads back as the same bits.
        for value in [0.3, 1.0 / 3.0, 2.0f64.sqrt(), 1e-300, f64::MAX, f64::MIN_POSITIVE, -7.25e21] {
            assert_eq!(Shortest(value).to_string().parse::<f64>().unwrap().to_bits(), value.to_bits());
        }
    }
}
