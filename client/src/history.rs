//! Historical logs in CSV: a header, then one logged event per line with
//! `product_id`, `response` and the context features. Every column other
//! than `event_id`, `product_id` and `response` whose first value is a
//! number is a feature, in file order; errors name the line and column.

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

/// Splits one CSV line (double quotes may enclose commas; "" is a quote).
fn split_line(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    fields.push(field);
    fields.into_iter().map(|f| f.trim().to_owned()).collect()
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
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l)).filter(|(_, l)| !l.trim().is_empty());
    let (header_line, header) = lines.next().ok_or_else(|| fail(1, "empty file: expected a header line".into()))?;
    let columns = split_line(header);
    let find = |name: &str| columns.iter().position(|c| c == name);
    let product_column = find("product_id").ok_or_else(|| fail(header_line, "missing column product_id".into()))?;
    let response_column = find("response").ok_or_else(|| fail(header_line, "missing column response".into()))?;
    let event_column = find("event_id");
    let mut features: Option<Vec<usize>> = None;
    let mut rows = Vec::new();
    for (line, text) in lines {
        let fields = split_line(text);
        if fields.len() != columns.len() {
            return Err(fail(line, format!("{} fields, the header has {}", fields.len(), columns.len())));
        }
        let field = |i: usize| fields.get(i).map_or("", String::as_str);
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
        ];
        for (text, expected) in cases {
            assert_eq!(parse_log(text, "t.csv").unwrap_err().to_string(), expected);
        }
    }
}
