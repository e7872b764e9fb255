//! Historical logs in CSV: a header, then one logged event per line with
//! `product_id`, `response` and the context features. Every column other
//! than `event_id`, `product_id` and `response` whose first value is a
//! number is a feature, in file order; errors name the line and column.
//! Item lists are CSV files with a `product_id` column. Both are read by the
//! `csv` crate (quotes, embedded commas and line breaks, blank lines).

use std::path::Path;

use crate::error::{ClientError, Result};

/// One logged event.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRow {
    /// 1-based line in the file.
    pub line: usize,
    pub event_id: Option<String>,
    pub context: Vec<f64>,
    pub product_id: String,
    pub response: f64,
}

/// A parsed log.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryLog {
    pub feature_names: Vec<String>,
    pub rows: Vec<LogRow>,
}

/// The one CSV reader of this crate (logs and item lists): a header line
/// (trimmed), blank lines skipped, rows of any length (checked by the
/// caller, so the message can name the line). Fields are trimmed where they
/// are read, by [`field`]: the reader's own trimming copies every record
/// twice, a third of the time spent reading a log.
fn csv_reader(text: &str) -> csv::Reader<&[u8]> {
    csv::ReaderBuilder::new().has_headers(true).flexible(true).trim(csv::Trim::Headers).from_reader(text.as_bytes())
}

/// Field `i` of a record, trimmed of whitespace ("" past the end). The
/// reader trims ASCII whitespace then Unicode whitespace; `str::trim` alone
/// removes the same, as ASCII whitespace is Unicode whitespace.
fn field(record: &csv::StringRecord, i: usize) -> &str {
    record.get(i).map_or("", str::trim)
}

/// The 1-based line a record starts on, from its position.
fn line_of(position: Option<&csv::Position>) -> usize {
    position.map_or(0, |p| p.line() as usize)
}

/// A CSV syntax error as an input error naming the source and line.
fn csv_error(source: &str, error: &csv::Error) -> ClientError {
    let line = error.position().map_or(0, |p| p.line() as usize);
    ClientError::Input(format!("{source}:{line}: {error}"))
}

/// The header, or an error for a file without one.
fn header(reader: &mut csv::Reader<&[u8]>, source: &str) -> Result<(usize, Vec<String>)> {
    let header = reader.headers().map_err(|e| csv_error(source, &e))?;
    if header.is_empty() {
        return Err(ClientError::Input(format!("{source}:1: empty file: expected a header line")));
    }
    Ok((line_of(header.position()), header.iter().map(str::to_owned).collect()))
}

/// Reads a log file.
///
/// # Errors
/// [`ClientError::Input`] naming the file, line and column at fault.
pub fn read_log(path: &Path) -> Result<HistoryLog> {
    let text = std::fs::read_to_string(path).map_err(|e| ClientError::Input(format!("{}: {e}", path.display())))?;
    parse_log(&text, &path.display().to_string())
}

/// Parses log text; `source` names it in errors.
///
/// # Errors
/// [`ClientError::Input`] naming the line and column at fault.
pub fn parse_log(text: &str, source: &str) -> Result<HistoryLog> {
    let fail = |line: usize, message: String| ClientError::Input(format!("{source}:{line}: {message}"));
    let mut reader = csv_reader(text);
    let (header_line, columns) = header(&mut reader, source)?;
    let find = |name: &str| columns.iter().position(|c| c == name);
    let product = find("product_id").ok_or_else(|| fail(header_line, "missing column product_id".into()))?;
    let response = find("response").ok_or_else(|| fail(header_line, "missing column response".into()))?;
    let event = find("event_id");
    // One record, refilled for each line. Bytes, not a `StringRecord`: the
    // text is already UTF-8 (a `&str`) and the record only splits it at
    // ASCII commas, quotes and line ends, so its fields are UTF-8 too and
    // validating every record again is wasted; the few fields kept as text
    // (ids) are converted where they are read.
    let mut fields = csv::ByteRecord::new();
    let mut read = |fields: &mut csv::ByteRecord| reader.read_byte_record(fields).map_err(|e| csv_error(source, &e));
    if !read(&mut fields)? {
        return Ok(HistoryLog { feature_names: Vec::new(), rows: Vec::new() });
    }
    // The features are the numeric columns of the first row.
    let features = (0..columns.len())
        .filter(|&i| i != product && i != response && Some(i) != event)
        .filter(|&i| std::str::from_utf8(trimmed(fields.get(i).unwrap_or_default())).is_ok_and(|value| value.parse::<f64>().is_ok()))
        .collect();
    let layout = Layout { source, columns: &columns, product, response, event, features };
    // Room for every row, guessed from the first one's length: the rows of
    // a log are about as long as each other, and growing a vector of
    // 100,000 rows by doubling copies it again and again.
    let mut rows = Vec::with_capacity(text.len() / (fields.as_slice().len() + fields.len()).max(1) + 1);
    layout.push(&fields, &mut rows)?;
    while read(&mut fields)? {
        layout.push(&fields, &mut rows)?;
    }
    let feature_names = layout.features.iter().filter_map(|&i| columns.get(i).cloned()).collect::<Vec<_>>();
    if feature_names.is_empty() && !rows.is_empty() {
        return Err(fail(header_line, "no numeric feature columns".into()));
    }
    Ok(HistoryLog { feature_names, rows })
}

/// How a log's records become rows: its columns, the features among them.
struct Layout<'a> {
    source: &'a str,
    columns: &'a [String],
    product: usize,
    response: usize,
    event: Option<usize>,
    features: Vec<usize>,
}

impl Layout<'_> {
    /// Checks one record and appends its row.
    fn push(&self, fields: &csv::ByteRecord, rows: &mut Vec<LogRow>) -> Result<()> {
        let line = line_of(fields.position());
        let fail = |message: String| ClientError::Input(format!("{}:{line}: {message}", self.source));
        if fields.len() != self.columns.len() {
            return Err(fail(format!("{} fields, the header has {}", fields.len(), self.columns.len())));
        }
        let field = |i: usize| trimmed(fields.get(i).unwrap_or_default());
        let number = |i: usize| -> Result<f64> {
            let value = field(i);
            finite_number(value).ok_or_else(|| {
                let name = self.columns.get(i).map_or("?", String::as_str);
                fail(format!("column {name} is not a finite number: {:?}", String::from_utf8_lossy(value)))
            })
        };
        let mut context = Vec::with_capacity(self.features.len());
        for &i in &self.features {
            context.push(number(i)?);
        }
        // The text of valid UTF-8 (see `parse_log`): borrowed, then copied once.
        let product_id = String::from_utf8_lossy(field(self.product)).into_owned();
        if product_id.is_empty() {
            return Err(fail("product_id is empty".into()));
        }
        rows.push(LogRow {
            line,
            event_id: self.event.map(|i| String::from_utf8_lossy(field(i)).into_owned()),
            context,
            product_id,
            response: number(self.response)?,
        });
        Ok(())
    }
}

/// A field's bytes trimmed as [`str::trim`] trims its text. Most fields
/// start and end with a visible ASCII character and are returned as they
/// are, without decoding any character; the others are trimmed as text.
fn trimmed(value: &[u8]) -> &[u8] {
    let visible = |b: Option<&u8>| b.is_some_and(|&b| b.is_ascii() && !(b as char).is_whitespace());
    if value.is_empty() || (visible(value.first()) && visible(value.last())) {
        return value;
    }
    std::str::from_utf8(value).map_or(value, |text| text.trim().as_bytes())
}

/// A finite number, or `None`: exactly `str::parse::<f64>` followed by a
/// finiteness check, with a shortcut for the plain decimals a log is made
/// of.
fn finite_number(value: &[u8]) -> Option<f64> {
    plain_decimal(value)
        .or_else(|| std::str::from_utf8(value).ok()?.parse::<f64>().ok())
        .filter(|v| v.is_finite())
}

/// The powers of ten that are exact as `f64`.
const EXACT_POWERS_OF_TEN: [f64; 23] =
    [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22];

/// `-?digits(.digits)?` with at most 19 digits in all, whose digits make
/// an integer m ≤ 2⁵³ and with at most 22 digits after the point, as
/// m / 10ᵏ; `None` for anything else. Parsing dominated the reading of a
/// log, and the standard parser's generality (signs, exponents, `inf`,
/// long mantissas) costs more than the digits. The result is the standard
/// parser's, bit for bit: m and 10ᵏ are exact doubles, so the one IEEE
/// division rounds the exact quotient correctly (Clinger's fast path), and
/// `str::parse` is correctly rounded too.
fn plain_decimal(value: &[u8]) -> Option<f64> {
    let (negative, digits) = match value.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, value),
    };
    let mut mantissa = 0_u64;
    let mut count = 0_usize;
    let mut point = None;
    for &byte in digits {
        match byte {
            b'0'..=b'9' if count < 19 => {
                mantissa = mantissa * 10 + u64::from(byte - b'0');
                count += 1;
            }
            b'.' if point.is_none() && count > 0 => point = Some(count),
            _ => return None,
        }
    }
    let scale = count - point.unwrap_or(count);
    if count == 0 || point.is_some_and(|p| p == count) || mantissa > 1 << 53 {
        return None;
    }
    let magnitude = mantissa as f64 / EXACT_POWERS_OF_TEN.get(scale)?;
    Some(if negative { -magnitude } else { magnitude })
}

/// Reads an item list: the `product_id` column of a CSV file (other columns,
/// such as product features, are ignored).
///
/// # Errors
/// [`ClientError::Input`] naming the file, and the line at fault.
pub fn read_items(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| ClientError::Input(format!("{}: {e}", path.display())))?;
    parse_items(&text, &path.display().to_string())
}

/// Parses an item list; `source` names it in errors.
///
/// # Errors
/// [`ClientError::Input`] for a missing `product_id` column or an empty id.
pub fn parse_items(text: &str, source: &str) -> Result<Vec<String>> {
    let mut reader = csv_reader(text);
    let (header_line, columns) = header(&mut reader, source)?;
    let column = columns
        .iter()
        .position(|c| c == "product_id")
        .ok_or_else(|| ClientError::Input(format!("{source}:{header_line}: missing column product_id")))?;
    reader
        .records()
        .map(|record| {
            let record = record.map_err(|e| csv_error(source, &e))?;
            match field(&record, column) {
                "" => Err(ClientError::Input(format!("{source}:{}: product_id is empty", line_of(record.position())))),
                id => Ok(id.to_owned()),
            }
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn parses_features_in_file_order() {
        let log = parse_log("event_id,age,city,product_id,hour,response\ne1,0.5,\"Leeds, UK\",42,0.25,1\ne2,0.1,York,7,1,0\n", "t.csv").unwrap();
        assert_eq!(log.feature_names, ["age", "hour"]);
        assert_eq!(log.rows[0].context, [0.5, 0.25]);
        assert_eq!(log.rows[1].product_id, "7");
        assert_eq!(log.rows[1].response, 0.0);
        assert_eq!(log.rows[1].line, 3);
        assert_eq!(log.rows[0].event_id.as_deref(), Some("e1"));
        // A quoted field may hold a quote and a line break.
        let quoted = parse_log("note,x,product_id,response\n\"a \"\"b\"\"\nc\",1,p,0\n", "q.csv").unwrap();
        assert_eq!((quoted.feature_names.clone(), quoted.rows[0].line), (vec!["x".to_owned()], 2));
        // Fields are trimmed of Unicode whitespace too, as `str::trim` does.
        let spaced = parse_log("age,product_id,response\n\u{3000}0.5,\u{2003}p, 1\u{85}\n", "s.csv").unwrap();
        assert_eq!((spaced.rows[0].context.as_slice(), spaced.rows[0].product_id.as_str(), spaced.rows[0].response), ([0.5].as_slice(), "p", 1.0));
    }

    #[test]
    fn item_lists_take_the_product_id_column() {
        let items = parse_items("category,product_id\n\"pizza, large\",7\n\ncoffee,12\n", "items.csv").unwrap();
        assert_eq!(items, ["7", "12"]);
        assert_eq!(parse_items("id\n1\n", "i.csv").unwrap_err().to_string(), "i.csv:1: missing column product_id");
        assert_eq!(parse_items("product_id,x\n,1\n", "i.csv").unwrap_err().to_string(), "i.csv:2: product_id is empty");
        assert_eq!(parse_items("", "i.csv").unwrap_err().to_string(), "i.csv:1: empty file: expected a header line");
    }

    #[test]
    fn errors_point_at_the_line() {
        let cases = [
            ("", "t.csv:1: empty file: expected a header line"),
            ("age,response\n1,0\n", "t.csv:1: missing column product_id"),
            ("age,product_id\n1,a\n", "t.csv:1: missing column response"),
            ("age,product_id,response\n1,a,1\nx,b,0\n", "t.csv:3: column age is not a finite number: \"x\""),
            ("age,product_id,response\n1,a,1\n2,b\n", "t.csv:3: 2 fields, the header has 3"),
            ("age,product_id,response\n1,,1\n", "t.csv:2: product_id is empty"),
            ("\n\nage,product_id,response\n\n1,a,1\nx,b,0\n", "t.csv:6: column age is not a finite number: \"x\""),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_log(text, "t.csv").unwrap_err().to_string(), expected);
        }
    }

    /// The shortcut for plain decimals gives the standard parser's value,
    /// bit for bit, or leaves the text to it.
    #[test]
    fn plain_decimals_parse_as_the_standard_parser_does() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let mut shortcuts = 0;
        let fixed = ["0", "-0", "-0.0", "0.1", "9007199254740992", "9007199254740993", "1.7976931348623157", "0.0000000000000000000001", "5.", ".5", "-", "1e5", "+1", "1234567890123456789", "12345678901234567890"];
        let random = (0..200_000).map(|_| {
            let mut text = String::new();
            if next(4) == 0 {
                text.push('-');
            }
            let digits = 1 + next(24);
            let point = next(digits + 2);
            for i in 0..digits {
                if i == point {
                    text.push('.');
                }
                text.push(char::from(b'0' + next(10) as u8));
            }
            text
        });
        for text in fixed.iter().map(|t| (*t).to_owned()).chain(random) {
            let expected = text.parse::<f64>().ok().filter(|v| v.is_finite());
            assert_eq!(finite_number(text.as_bytes()).map(f64::to_bits), expected.map(f64::to_bits), "{text}");
            if let Some(v) = plain_decimal(text.as_bytes()) {
                assert_eq!(Some(v.to_bits()), expected.map(f64::to_bits), "{text}");
                shortcuts += 1;
            }
        }
        assert!(shortcuts > 100_000, "{shortcuts}");
    }
}
