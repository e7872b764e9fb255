//! Reading command arguments: a cursor over the raw argv that hands out byte
//! slices (no copies, no reference counting) and parses numbers with Redis'
//! own error wording.

use bandit_core::Limits;

use crate::error::CommandError;

/// A cursor over a command's arguments, after the command name.
#[derive(Debug)]
pub struct Args<'a> {
    items: &'a [&'a [u8]],
    position: usize,
}

impl<'a> Args<'a> {
    pub fn new(items: &'a [&'a [u8]]) -> Self {
        Self { items, position: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.items.len().saturating_sub(self.position)
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The next argument, or a syntax error when there is none.
    pub fn next_arg(&mut self) -> Result<&'a [u8], CommandError> {
        let item = self.items.get(self.position).copied().ok_or(CommandError::Syntax)?;
        self.position += 1;
        Ok(item)
    }

    /// The next argument without consuming it.
    pub fn peek(&self) -> Option<&'a [u8]> {
        self.items.get(self.position).copied()
    }

    /// The next `count` arguments as one slice.
    pub fn take(&mut self, count: usize) -> Option<&'a [&'a [u8]]> {
        let slice = self.items.get(self.position..self.position.checked_add(count)?)?;
        self.position += count;
        Some(slice)
    }

    pub fn next_f64(&mut self) -> Result<f64, CommandError> {
        parse_f64(self.next_arg()?)
    }

    pub fn next_usize(&mut self) -> Result<usize, CommandError> {
        parse_usize(self.next_arg()?)
    }

    /// `n id1 … idn` (after an ARMS keyword), with n bounded by
    /// `limits.max_arms` and every id a valid arm id: non-empty and at most
    /// `limits.max_id_bytes` long, the same rule LOAD applies.
    pub fn next_id_list(&mut self, limits: &Limits) -> Result<&'a [&'a [u8]], CommandError> {
        let count = self.next_usize()?;
        if count > limits.max_arms {
            return Err(bandit_core::Error::TooLarge { what: "ARMS count", got: count, limit: limits.max_arms }.into());
        }
        let available = self.remaining();
        let ids = self
            .take(count)
            .ok_or_else(|| CommandError::SyntaxDetail(format!("ARMS {count} is followed by {available} arguments")))?;
        for id in ids {
            if id.is_empty() {
                return Err(CommandError::Other("arm id is empty".into()));
            }
            if id.len() > limits.max_id_bytes {
                return Err(bandit_core::Error::TooLarge { what: "arm id length", got: id.len(), limit: limits.max_id_bytes }.into());
            }
        }
        Ok(ids)
    }
}

/// True when `arg` equals the keyword, ignoring ASCII case.
pub fn is_keyword(arg: &[u8], keyword: &str) -> bool {
    arg.eq_ignore_ascii_case(keyword.as_bytes())
}

/// A finite float, with Redis' messages for what is not.
pub fn parse_f64(arg: &[u8]) -> Result<f64, CommandError> {
    let text = std::str::from_utf8(arg).map_err(|_| CommandError::NotAFloat)?;
    let value: f64 = text.trim_ascii().parse().map_err(|_| CommandError::NotAFloat)?;
    if text.len() != text.trim_ascii().len() {
        return Err(CommandError::NotAFloat);
    }
    if value.is_finite() {
        Ok(value)
    } else {
        Err(CommandError::NotFinite)
    }
}

/// A non-negative integer.
pub fn parse_usize(arg: &[u8]) -> Result<usize, CommandError> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(|text| text.parse::<usize>().ok())
        .ok_or(CommandError::NotAnInteger)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_numbers_like_redis() {
        assert_eq!(parse_f64(b"0.25").unwrap(), 0.25);
        assert_eq!(parse_f64(b"-1e3").unwrap(), -1000.0);
        assert_eq!(parse_f64(b"abc").unwrap_err(), CommandError::NotAFloat);
        assert_eq!(parse_f64(b" 1").unwrap_err(), CommandError::NotAFloat);
        assert_eq!(parse_f64(b"inf").unwrap_err(), CommandError::NotFinite);
        assert_eq!(parse_f64(b"nan").unwrap_err(), CommandError::NotFinite);
        assert_eq!(parse_usize(b"12").unwrap(), 12);
        assert_eq!(parse_usize(b"-1").unwrap_err(), CommandError::NotAnInteger);
    }

    #[test]
    fn cursor_takes_and_peeks() {
        let items: [&[u8]; 3] = [b"a", b"b", b"c"];
        let mut args = Args::new(&items);
        assert_eq!(args.peek(), Some(&b"a"[..]));
        assert_eq!(args.take(2).unwrap().len(), 2);
        assert!(args.take(2).is_none());
        assert_eq!(args.next_arg().unwrap(), b"c");
        assert!(args.is_empty());
        assert_eq!(args.next_arg().unwrap_err(), CommandError::Syntax);
    }

    #[test]
    fn id_lists_follow_the_rules_load_applies() {
        let limits = Limits { max_arms: 3, max_id_bytes: 4, ..Limits::default() };
        let list = |items: &[&[u8]]| Args::new(items).next_id_list(&limits).map(<[&[u8]]>::len);
        assert_eq!(list(&[b"2", b"a", b"bcde"]).unwrap(), 2);
        assert_eq!(list(&[b"1", b""]).unwrap_err().to_string(), "ERR arm id is empty");
        assert_eq!(list(&[b"1", b"abcde"]).unwrap_err().to_string(), "ERR arm id length is 5, the limit is 4");
        assert_eq!(list(&[b"4", b"a", b"b", b"c", b"d"]).unwrap_err().to_string(), "ERR ARMS count is 4, the limit is 3");
        assert_eq!(list(&[b"2", b"a"]).unwrap_err().to_string(), "ERR syntax error, ARMS 2 is followed by 1 arguments");
    }

    #[test]
    fn unknown_options_are_named() {
        assert_eq!(CommandError::unexpected(b"WITHSCORE").to_string(), "ERR syntax error, unexpected 'WITHSCORE'");
        let long = [b'x'; 40];
        assert_eq!(CommandError::unexpected(&long).to_string(), format!("ERR syntax error, unexpected '{}…'", "x".repeat(32)));
        assert_eq!(CommandError::unexpected(b"a\r\nb").to_string(), "ERR syntax error, unexpected 'a??b'");
    }
}
