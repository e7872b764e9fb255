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

/// The 1-based line a record starts on.
fn line_of(record: &csv::StringRecord) -> usize {
    record.position().map_or(0, |p| p.line() as usize)
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
    Ok((line_of(header), header.iter().map(str::to_owned).collect()))
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
    let product_column = find("product_id").ok_or_else(|| fail(header_line, "missing column product_id".into()))?;
    let response_column = find("response").ok_or_else(|| fail(header_line, "missing column response".into()))?;
    let event_column = find("event_id");
    let mut features: Option<Vec<usize>> = None;
    let mut rows = Vec::new();
    // One record, refilled for each line.
    let mut fields = csv::StringRecord::new();
    while reader.read_record(&mut fields).map_err(|e| csv_error(source, &e))? {
        let line = line_of(&fields);
        if fields.len() != columns.len() {
            return Err(fail(line, format!("{} fields, the header has {}", fields.len(), columns.len())));
        }
        let field = |i: usize| field(&fields, i);
        let feature_columns = features.get_or_insert_with(|| {
            (0..columns.len())
                .filter(|&i| i != product_column && i != response_column && Some(i) != event_column)
                .filter(|&i| field(i).parse::<f64>().is_ok())
                .collect()
        });
        let number = |i: usize| -> Result<f64> {
            let value = field(i);
            let name = columns.get(i).map_or("?", String::as_str);
            match value.parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(v),
                _ => Err(fail(line, format!("column {name} is not a finite number: {value:?}"))),
            }
        };
        let context = feature_columns.iter().map(|&i| number(i)).collect::<Result<Vec<_>>>()?;
        let product_id = field(product_column).to_owned();
        if product_id.is_empty() {
            return Err(fail(line, "product_id is empty".into()));
        }
        rows.push(LogRow {
            line,
            event_id: event_column.map(|i| field(i).to_owned()),
            context,
            product_id,
            response: number(response_column)?,
        });
    }
    let feature_names = features.unwrap_or_default().iter().filter_map(|&i| columns.get(i).cloned()).collect::<Vec<_>>();
    if feature_names.is_empty() && !rows.is_empty() {
        return Err(fail(header_line, "no numeric feature columns".into()));
    }
    Ok(HistoryLog { feature_names, rows })
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
                "" => Err(ClientError::Input(format!("{source}:{}: product_id is empty", line_of(&record)))),
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
}
