//! A small, exact RESP2/RESP3 client. Tests need to see the reply types
//! themselves (a RESP3 map versus a flat array, a double versus a bulk
//! string), which general-purpose clients smooth over.

use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One reply, as the server typed it.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Status(String),
    Error(String),
    Integer(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Reply>),
    /// RESP3 only.
    Map(Vec<(Reply, Reply)>),
    Set(Vec<Reply>),
    Double(f64),
    Boolean(bool),
    BigNumber(String),
    Verbatim(String),
}

impl Reply {
    /// The text of a bulk or status reply (lossy), for assertions.
    pub fn text(&self) -> String {
        match self {
            Reply::Bulk(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            Reply::Status(text) | Reply::Error(text) | Reply::Verbatim(text) | Reply::BigNumber(text) => text.clone(),
            Reply::Integer(value) => value.to_string(),
            other => format!("{other:?}"),
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Reply::Bulk(bytes) => bytes.clone(),
            other => other.text().into_bytes(),
        }
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    pub fn integer(&self) -> i64 {
        match self {
            Reply::Integer(value) => *value,
            other => panic!("expected an integer, got {other:?}"),
        }
    }

    /// A number from a RESP3 double, an integer or a RESP2 bulk string.
    pub fn number(&self) -> f64 {
        match self {
            Reply::Double(value) => *value,
            Reply::Integer(value) => *value as f64,
            Reply::Bulk(bytes) => String::from_utf8_lossy(bytes).parse().unwrap_or(f64::NAN),
            other => panic!("expected a number, got {other:?}"),
        }
    }

    pub fn array(&self) -> &[Reply] {
        match self {
            Reply::Array(items) | Reply::Set(items) => items,
            other => panic!("expected an array, got {other:?}"),
        }
    }

    /// Field/value pairs from a RESP3 map or a flat RESP2 array.
    pub fn pairs(&self) -> Vec<(String, Reply)> {
        match self {
            Reply::Map(pairs) => pairs.iter().map(|(k, v)| (k.text(), v.clone())).collect(),
            Reply::Array(items) => items.chunks(2).map(|pair| (pair[0].text(), pair[1].clone())).collect(),
            other => panic!("expected a map, got {other:?}"),
        }
    }

    /// The value of a field in a map-like reply.
    pub fn field(&self, name: &str) -> Reply {
        self.pairs()
            .into_iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
            .unwrap_or_else(|| panic!("no field {name} in {self:?}"))
    }
}

/// One connection to a server.
#[derive(Debug)]
pub struct Connection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Connection {
    pub fn connect(port: u16) -> io::Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(Self { reader: BufReader::new(stream.try_clone()?), writer: stream })
    }

    /// Sends one command and reads its reply.
    pub fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> io::Result<Reply> {
        self.send(args)?;
        self.read()
    }

    /// Sends a command without reading the reply (for pipelining).
    pub fn send<A: AsRef<[u8]>>(&mut self, args: &[A]) -> io::Result<()> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for arg in args {
            let arg = arg.as_ref();
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&out)
    }

    /// Reads one reply.
    pub fn read(&mut self) -> io::Result<Reply> {
        read_reply(&mut self.reader)
    }

    /// Sends a command given as one whitespace-separated string.
    pub fn cmd(&mut self, line: &str) -> Reply {
        let args: Vec<&str> = line.split_whitespace().collect();
        self.call(&args).unwrap_or_else(|e| panic!("{line}: {e}"))
    }
}

fn read_line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"));
    }
    while line.ends_with('\n') || line.ends_with('\r') {
        line.pop();
    }
    Ok(line)
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

fn read_reply(reader: &mut impl BufRead) -> io::Result<Reply> {
    let line = read_line(reader)?;
    let (kind, rest) = line.split_at_checked(1).ok_or_else(|| bad("empty reply line"))?;
    let count = || rest.parse::<i64>().map_err(|_| bad("bad length"));
    Ok(match kind {
        "+" => Reply::Status(rest.to_owned()),
        "-" => Reply::Error(rest.to_owned()),
        ":" => Reply::Integer(count()?),
        "_" => Reply::Nil,
        "#" => Reply::Boolean(rest == "t"),
        "," => Reply::Double(match rest {
            "inf" => f64::INFINITY,
            "-inf" => f64::NEG_INFINITY,
            other => other.parse().map_err(|_| bad("bad double"))?,
        }),
        "(" => Reply::BigNumber(rest.to_owned()),
        "$" | "=" => {
            let len = count()?;
            if len < 0 {
                return Ok(Reply::Nil);
            }
            let mut data = vec![0; len as usize + 2];
            io::Read::read_exact(reader, &mut data)?;
            data.truncate(len as usize);
            if kind == "=" {
                Reply::Verbatim(String::from_utf8_lossy(data.get(4..).unwrap_or_default()).into_owned())
            } else {
                Reply::Bulk(data)
            }
        }
        "*" | "~" | ">" => {
            let len = count()?;
            if len < 0 {
                return Ok(Reply::Nil);
            }
            let items = (0..len).map(|_| read_reply(reader)).collect::<io::Result<Vec<_>>>()?;
            if kind == "~" {
                Reply::Set(items)
            } else {
                Reply::Array(items)
            }
        }
        "%" | "|" => {
            let len = count()?;
            let mut pairs = Vec::with_capacity(len.max(0) as usize);
            for _ in 0..len {
                let key = read_reply(reader)?;
                let value = read_reply(reader)?;
                pairs.push((key, value));
            }
            if kind == "|" {
                // An attribute precedes the real reply.
                return read_reply(reader);
            }
            Reply::Map(pairs)
        }
        other => return Err(bad(&format!("unknown reply type {other:?}"))),
    })
}
