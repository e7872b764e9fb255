//! The URL scheme, parsed: [`Target`] is what to connect to, and
//! [`Target::masked`] is how it is shown. The grammar is in the crate
//! documentation; this file is its only parser.

use std::fmt;
use std::path::PathBuf;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

use crate::error::{ConnectError, Result};

/// Redis' port when a data node's port is left out.
const REDIS_PORT: u16 = 6379;
/// Sentinel's port when a sentinel's port is left out.
const SENTINEL_PORT: u16 = 26379;

/// A password: shown as `***` by Display and Debug, so that a target, an
/// error or a configuration printed whole cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The password itself, for the one place that sends it: AUTH.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// User and password for AUTH; both absent means no AUTH.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Auth {
    pub user: Option<String>,
    pub password: Option<Secret>,
}

/// One `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The TLS files of a `rediss…://` target. The server's certificate is
/// always verified: against `ca` when given, else against the system's roots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM CA certificate(s) the server's certificate must chain to.
    pub ca: Option<PathBuf>,
    /// PEM client certificate and its key, for servers that require one.
    pub client: Option<ClientCertificate>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Where reads (RANK) go. Writes always go to the primary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReadFrom {
    #[default]
    Primary,
    /// A replica, the primary when no replica answers.
    Replica,
}

/// The servers, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// One server (`redis://`, `rediss://`); `replicas` are read from with
    /// `read_from=replica`.
    Node { node: Node, db: Option<i64>, replicas: Vec<Node> },
    /// A unix socket (`unix://`).
    Unix { path: PathBuf, db: Option<i64> },
    /// A Redis Cluster, found from these seed nodes.
    Cluster { seeds: Vec<Node> },
    /// The primary named `master`, found from these sentinels, which may
    /// have their own credentials.
    Sentinel { sentinels: Vec<Node>, master: String, sentinel_auth: Auth },
}

/// A parsed URL: what to connect to and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub topology: Topology,
    /// The data nodes' AUTH (for Sentinel, the primary's and replicas').
    pub auth: Auth,
    /// Some for the `rediss…` schemes.
    pub tls: Option<TlsFiles>,
    pub read_from: ReadFrom,
}

/// Everything a URL's userinfo may hold besides the separators.
const USERINFO: &AsciiSet = &CONTROLS.add(b' ').add(b'@').add(b':').add(b'/').add(b'%').add(b'?').add(b'#').add(b',');

impl std::str::FromStr for Target {
    type Err = ConnectError;

    fn from_str(url: &str) -> Result<Self> {
        Self::parse(url)
    }
}

/// The query parameters, each at most once; consumed by name so that what
/// is left over is unknown.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(text: &str) -> Result<Self> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (name, value) in url::form_urlencoded::parse(text.as_bytes()) {
            if pairs.iter().any(|(seen, _)| *seen == name) {
                return Err(ConnectError::url(format!("parameter {name:?} is given twice")));
            }
            pairs.push((name.into_owned(), value.into_owned()));
        }
        Ok(Self(pairs))
    }

    fn take(&mut self, name: &str) -> Option<String> {
        let index = self.0.iter().position(|(key, _)| key == name)?;
        Some(self.0.remove(index).1)
    }

    /// An error for the first parameter nobody took.
    fn finish(self) -> Result<()> {
        match self.0.into_iter().next() {
            Some((name, _)) => Err(ConnectError::UnknownParameter(name)),
            None => Ok(()),
        }
    }
}

fn decode(text: &str, what: &str) -> Result<String> {
    percent_decode_str(text).decode_utf8().map(|t| t.into_owned()).map_err(|_| ConnectError::url(format!("the {what} is not valid UTF-8 once percent-decoded")))
}

/// `user:password`, `:password` or `user`, percent-decoded.
fn parse_userinfo(text: &str) -> Result<Auth> {
    let (user, password) = match text.split_once(':') {
        Some((user, password)) => (user, Some(password)),
        None => (text, None),
    };
    Ok(Auth {
        user: Some(decode(user, "user name")?).filter(|u| !u.is_empty()),
        password: password.map(|p| decode(p, "password").map(Secret)).transpose()?.filter(|p| !p.0.is_empty()),
    })
}

/// One `host[:port]`, validated by the url crate (IPv6 in brackets).
fn parse_node(text: &str, default_port: u16) -> Result<Node> {
    if text.is_empty() {
        return Err(ConnectError::url("a host is missing (empty entry in the host list)"));
    }
    let parsed = url::Url::parse(&format!("redis://{text}")).map_err(|e| ConnectError::url(format!("host {text:?}: {e}")))?;
    let plain = parsed.username().is_empty() && parsed.password().is_none() && matches!(parsed.path(), "" | "/") && parsed.query().is_none();
    let host = match parsed.host() {
        Some(url::Host::Domain(name)) if plain => name.to_owned(),
        Some(url::Host::Ipv4(ip)) if plain => ip.to_string(),
        Some(url::Host::Ipv6(ip)) if plain => ip.to_string(),
        _ => return Err(ConnectError::url(format!("{text:?} is not host:port"))),
    };
    Ok(Node { host, port: parsed.port().unwrap_or(default_port) })
}

fn parse_nodes(text: &str, default_port: u16) -> Result<Vec<Node>> {
    text.split(',').map(|node| parse_node(node, default_port)).collect()
}

fn parse_db(path: &str) -> Result<Option<i64>> {
    match path {
        "" => Ok(None),
        db => db.parse::<i64>().ok().filter(|db| *db >= 0).map(Some).ok_or_else(|| ConnectError::url(format!("database {db:?} is not a number"))),
    }
}

/// The schemes, as `(kind, tls)`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Node,
    Cluster,
    Sentinel,
}

fn scheme(name: &str) -> Option<(Kind, bool)> {
    Some(match name {
        "redis" => (Kind::Node, false),
        "rediss" => (Kind::Node, true),
        "redis+cluster" => (Kind::Cluster, false),
        "rediss+cluster" => (Kind::Cluster, true),
        "redis+sentinel" => (Kind::Sentinel, false),
        "rediss+sentinel" => (Kind::Sentinel, true),
        _ => return None,
    })
}

impl Target {
    /// Parses a URL of the scheme in the crate documentation. Reads no file
    /// and contacts nothing.
    ///
    /// # Errors
    /// [`ConnectError::Url`] or [`ConnectError::UnknownParameter`]; the
    /// message never contains the URL's password.
    pub fn parse(url: &str) -> Result<Self> {
        let url = url.trim();
        let (scheme_name, rest) = url.split_once("://").ok_or_else(|| ConnectError::url("expected scheme://…"))?;
        if scheme_name == "unix" {
            return Self::parse_unix(rest);
        }
        let (kind, tls) = scheme(scheme_name).ok_or_else(|| {
            ConnectError::url(format!(
                "unknown scheme {scheme_name:?} (redis, rediss, redis+cluster, rediss+cluster, redis+sentinel, rediss+sentinel, unix)"
            ))
        })?;
        // A fragment would be redis-rs's #insecure: certificates are always verified.
        if rest.contains('#') {
            return Err(ConnectError::url("a #fragment is not accepted (#insecure is not offered: the server certificate is always verified)"));
        }
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        // An @ after the ? with none before it: a password with a raw ?. The
        // message must not echo any of it.
        if !rest.contains('@') && query.contains('@') {
            return Err(ConnectError::url("the userinfo holds a raw '?': percent-encode it in the password (%3F), as '@' (%40), '#' (%23) and '/' (%2F)"));
        }
        let mut query = Query::parse(query)?;
        // The last @ ends the userinfo, so a password may hold / or @.
        let (userinfo, rest) = match rest.rfind('@') {
            Some(at) => (rest.get(..at), rest.get(at + 1..).unwrap_or_default()),
            None => (None, rest),
        };
        let auth = userinfo.map(parse_userinfo).transpose()?.unwrap_or_default();
        let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
        let read_from = match query.take("read_from").as_deref() {
            None | Some("primary") => ReadFrom::Primary,
            Some("replica") => ReadFrom::Replica,
            Some(other) => return Err(ConnectError::url(format!("read_from is primary or replica, got {other:?}"))),
        };
        let tls = Self::parse_tls(&mut query, tls)?;
        let topology = match kind {
            Kind::Node => {
                let node = match parse_nodes(hosts, REDIS_PORT)?.as_slice() {
                    [node] => node.clone(),
                    _ => return Err(ConnectError::url(format!("{scheme_name}:// takes one host; use redis+cluster:// or redis+sentinel:// for several"))),
                };
                let replicas = query.take("replicas").map(|list| parse_nodes(&list, REDIS_PORT)).transpose()?.unwrap_or_default();
                match (read_from, replicas.is_empty()) {
                    (ReadFrom::Replica, true) => {
                        return Err(ConnectError::url("read_from=replica on a single node needs replicas=host:port,…"))
                    }
                    (ReadFrom::Primary, false) => return Err(ConnectError::url("replicas= is only used with read_from=replica")),
                    _ => {}
                }
                Topology::Node { node, db: parse_db(path)?, replicas }
            }
            Kind::Cluster => {
                if !path.is_empty() {
                    return Err(ConnectError::url("a cluster has only database 0: no /path"));
                }
                Topology::Cluster { seeds: parse_nodes(hosts, REDIS_PORT)? }
            }
            Kind::Sentinel => {
                if path.is_empty() {
                    return Err(ConnectError::url("missing master name: redis+sentinel://host:port,…/<master-name>"));
                }
                if path.contains('/') {
                    return Err(ConnectError::url("the path is the master name alone"));
                }
                let sentinel_auth = Auth {
                    user: query.take("sentinel_user").filter(|u| !u.is_empty()),
                    password: query.take("sentinel_password").filter(|p| !p.is_empty()).map(Secret),
                };
                Topology::Sentinel { sentinels: parse_nodes(hosts, SENTINEL_PORT)?, master: decode(path, "master name")?, sentinel_auth }
            }
        };
        query.finish()?;
        Ok(Self { topology, auth, tls, read_from })
    }

    fn parse_tls(query: &mut Query, tls: bool) -> Result<Option<TlsFiles>> {
        let ca = query.take("tls_ca").map(PathBuf::from);
        let cert = query.take("tls_cert").map(PathBuf::from);
        let key = query.take("tls_key").map(PathBuf::from);
        if !tls {
            return match (&ca, &cert, &key) {
                (None, None, None) => Ok(None),
                _ => Err(ConnectError::url("tls_ca, tls_cert and tls_key need a rediss… scheme")),
            };
        }
        let client = match (cert, key) {
            (Some(cert), Some(key)) => Some(ClientCertificate { cert, key }),
            (None, None) => None,
            _ => return Err(ConnectError::url("tls_cert and tls_key go together: give both or neither")),
        };
        Ok(Some(TlsFiles { ca, client }))
    }

    /// `unix:///path/to/socket[?db=N&user=U&pass=P]`, redis-rs's spelling.
    fn parse_unix(rest: &str) -> Result<Self> {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        if path.is_empty() {
            return Err(ConnectError::url("unix:// needs a socket path"));
        }
        let mut query = Query::parse(query)?;
        let db = query.take("db").map(|db| parse_db(&db)).transpose()?.flatten();
        let auth = Auth { user: query.take("user").filter(|u| !u.is_empty()), password: query.take("pass").filter(|p| !p.is_empty()).map(Secret) };
        query.finish()?;
        Ok(Self { topology: Topology::Unix { path: PathBuf::from(path), db }, auth, tls: None, read_from: ReadFrom::Primary })
    }

    /// This target as a URL with every password replaced by `***`: for logs,
    /// errors and printed configuration.
    #[must_use]
    pub fn masked(&self) -> Masked<'_> {
        Masked(self)
    }
}

/// `url` as [`Target::masked`] shows it, for messages about a URL that has
/// not been parsed yet; a URL that does not parse is not shown at all (it
/// could be anything, a password included).
#[must_use]
pub fn mask(url: &str) -> String {
    Target::parse(url).map_or_else(|_| "(an invalid redis URL)".to_owned(), |target| target.masked().to_string())
}

/// [`Target::masked`]'s Display.
#[derive(Debug, Clone, Copy)]
pub struct Masked<'a>(&'a Target);

/// `user:***@`, `:***@`, `user@` or nothing.
fn write_userinfo(f: &mut fmt::Formatter<'_>, auth: &Auth) -> fmt::Result {
    if let Some(user) = &auth.user {
        write!(f, "{}", utf8_percent_encode(user, USERINFO))?;
    }
    if auth.password.is_some() {
        f.write_str(":***")?;
    }
    if auth.user.is_some() || auth.password.is_some() {
        f.write_str("@")?;
    }
    Ok(())
}

fn write_nodes(f: &mut fmt::Formatter<'_>, nodes: &[Node]) -> fmt::Result {
    for (i, node) in nodes.iter().enumerate() {
        if i > 0 {
            f.write_str(",")?;
        }
        write!(f, "{node}")?;
    }
    Ok(())
}

/// What a query value must escape to read back the same through
/// form-decoding (`+` is a space there); paths and host lists stay readable.
const QUERY_VALUE: &AsciiSet = &CONTROLS.add(b' ').add(b'&').add(b'#').add(b'%').add(b'+').add(b'=');

/// Writes `?a=b&c=d` (or nothing).
fn write_query(f: &mut fmt::Formatter<'_>, pairs: &[(&str, String)]) -> fmt::Result {
    for (i, (name, value)) in pairs.iter().enumerate() {
        let separator = if i == 0 { '?' } else { '&' };
        write!(f, "{separator}{name}={}", utf8_percent_encode(value, QUERY_VALUE))?;
    }
    Ok(())
}

impl fmt::Display for Masked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = self.0;
        let tls = if target.tls.is_some() { "s" } else { "" };
        let mut query: Vec<(&str, String)> = Vec::new();
        match &target.topology {
            Topology::Unix { path, db } => {
                write!(f, "unix://{}", path.display())?;
                if let Some(db) = db {
                    query.push(("db", db.to_string()));
                }
                if let Some(user) = &target.auth.user {
                    query.push(("user", user.clone()));
                }
                if target.auth.password.is_some() {
                    query.push(("pass", "***".into()));
                }
                return write_query(f, &query);
            }
            Topology::Node { node, db, replicas } => {
                write!(f, "redis{tls}://")?;
                write_userinfo(f, &target.auth)?;
                write!(f, "{node}")?;
                if let Some(db) = db {
                    write!(f, "/{db}")?;
                }
                if !replicas.is_empty() {
                    let list: Vec<String> = replicas.iter().map(ToString::to_string).collect();
                    query.push(("replicas", list.join(",")));
                }
            }
            Topology::Cluster { seeds } => {
                write!(f, "redis{tls}+cluster://")?;
                write_userinfo(f, &target.auth)?;
                write_nodes(f, seeds)?;
            }
            Topology::Sentinel { sentinels, master, sentinel_auth } => {
                write!(f, "redis{tls}+sentinel://")?;
                write_userinfo(f, &target.auth)?;
                write_nodes(f, sentinels)?;
                write!(f, "/{}", utf8_percent_encode(master, USERINFO))?;
                if let Some(user) = &sentinel_auth.user {
                    query.push(("sentinel_user", user.clone()));
                }
                if sentinel_auth.password.is_some() {
                    query.push(("sentinel_password", "***".into()));
                }
            }
        }
        if target.read_from == ReadFrom::Replica {
            query.push(("read_from", "replica".into()));
        }
        if let Some(files) = &target.tls {
            if let Some(ca) = &files.ca {
                query.push(("tls_ca", ca.display().to_string()));
            }
            if let Some(client) = &files.client {
                query.push(("tls_cert", client.cert.display().to_string()));
                query.push(("tls_key", client.key.display().to_string()));
            }
        }
        write_query(f, &query)
    }
}

#[cfg(test)]
#[path = "target_tests.rs"]
mod tests;
