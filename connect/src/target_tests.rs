//! Every form of the scheme, its refusals, and the mask. Expected values are
//! written out by hand from the crate documentation's grammar.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::path::PathBuf;

use super::*;

const PASSWORD: &str = "pa55-w0rd/with@odd";

fn node(host: &str, port: u16) -> Node {
    Node { host: host.into(), port }
}

fn auth(user: Option<&str>, password: Option<&str>) -> Auth {
    Auth { user: user.map(Into::into), password: password.map(Secret::new) }
}

fn error(url: &str) -> String {
    match Target::parse(url) {
        Ok(target) => panic!("{url} parsed as {target:?}"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn single_node() {
    let target = Target::parse("redis://app:s3cret@db.example:6380/2").unwrap();
    assert_eq!(
        target,
        Target {
            topology: Topology::Node { node: node("db.example", 6380), db: Some(2), replicas: vec![] },
            auth: auth(Some("app"), Some("s3cret")),
            tls: None,
            read_from: ReadFrom::Primary,
        }
    );
    let bare = Target::parse("redis://127.0.0.1").unwrap();
    assert_eq!(bare.topology, Topology::Node { node: node("127.0.0.1", 6379), db: None, replicas: vec![] });
    assert_eq!(bare.auth, Auth::default());
    // The password alone; percent-encoding decoded; a raw / and @ in it.
    assert_eq!(Target::parse("redis://:p%3Aw@h:1").unwrap().auth, auth(None, Some("p:w")));
    assert_eq!(Target::parse(&format!("redis://u:{PASSWORD}@h:1/0")).unwrap().auth, auth(Some("u"), Some(PASSWORD)));
    assert_eq!(Target::parse("redis://[::1]:7000").unwrap().topology, Topology::Node { node: node("::1", 7000), db: None, replicas: vec![] });
}

#[test]
fn unix_socket() {
    let target = Target::parse("unix:///run/redis.sock?db=3&user=app&pass=s3cret").unwrap();
    assert_eq!(target.topology, Topology::Unix { path: PathBuf::from("/run/redis.sock"), db: Some(3) });
    assert_eq!(target.auth, auth(Some("app"), Some("s3cret")));
    assert!(error("unix:///run/redis.sock?tls_ca=/x").contains("unknown parameter \"tls_ca\""));
}

#[test]
fn tls() {
    let target = Target::parse("rediss://:pw@cache:6390/1?tls_ca=/etc/ca.crt&tls_cert=/etc/client.crt&tls_key=/etc/client.key").unwrap();
    assert_eq!(
        target.tls,
        Some(TlsFiles {
            ca: Some("/etc/ca.crt".into()),
            client: Some(ClientCertificate { cert: "/etc/client.crt".into(), key: "/etc/client.key".into() })
        })
    );
    assert_eq!(target.topology, Topology::Node { node: node("cache", 6390), db: Some(1), replicas: vec![] });
    // No files: TLS all the same, verified against the system's roots.
    assert_eq!(Target::parse("rediss://cache:6390").unwrap().tls, Some(TlsFiles::default()));
    assert!(error("rediss://h:1?tls_ca=/ca&tls_cert=/c").contains("tls_cert and tls_key go together"));
    assert!(error("rediss://h:1?tls_key=/k").contains("tls_cert and tls_key go together"));
    assert!(error("redis://h:1?tls_ca=/ca").contains("need a rediss"));
    assert!(error("rediss://h:1/#insecure").contains("#insecure is not offered"));
}

#[test]
fn cluster() {
    let target = Target::parse("rediss+cluster://u:pw@10.0.0.1:7000,10.0.0.2:7001,node-c?tls_ca=/ca.pem&read_from=replica").unwrap();
    assert_eq!(target.topology, Topology::Cluster { seeds: vec![node("10.0.0.1", 7000), node("10.0.0.2", 7001), node("node-c", 6379)] });
    assert_eq!(target.read_from, ReadFrom::Replica);
    assert_eq!(target.tls, Some(TlsFiles { ca: Some("/ca.pem".into()), client: None }));
    assert_eq!(target.auth, auth(Some("u"), Some("pw")));
    assert!(error("redis+cluster://a:1,b:2/0").contains("only database 0"));
    assert!(error("redis+cluster://a:1,b:2?replicas=c:3").contains("unknown parameter \"replicas\""));
    assert!(error("redis+cluster://a:1,,b:2").contains("a host is missing"));
}

#[test]
fn sentinel() {
    let target = Target::parse("redis+sentinel://:datapw@s1:26379,s2:26380,s3/mymaster?sentinel_user=watch&sentinel_password=sentpw").unwrap();
    assert_eq!(
        target.topology,
        Topology::Sentinel {
            sentinels: vec![node("s1", 26379), node("s2", 26380), node("s3", 26379)],
            master: "mymaster".into(),
            sentinel_auth: auth(Some("watch"), Some("sentpw")),
        }
    );
    assert_eq!(target.auth, auth(None, Some("datapw")));
    assert_eq!(Target::parse("rediss+sentinel://s1:5000/m?read_from=replica").unwrap().read_from, ReadFrom::Replica);
    assert!(error("redis+sentinel://s1:26379,s2:26380").contains("missing master name"));
    assert!(error("redis+sentinel://s1:26379/").contains("missing master name"));
    assert!(error("redis+sentinel://s1:26379/m/0").contains("master name alone"));
    assert!(error("redis://h:1?sentinel_password=x").contains("unknown parameter \"sentinel_password\""));
}

#[test]
fn replica_reads_on_one_server() {
    let target = Target::parse("redis://h:6379?read_from=replica&replicas=r1:6380,r2:6381").unwrap();
    assert_eq!(target.topology, Topology::Node { node: node("h", 6379), db: None, replicas: vec![node("r1", 6380), node("r2", 6381)] });
    assert_eq!(target.read_from, ReadFrom::Replica);
    assert!(error("redis://h:6379?read_from=replica").contains("needs replicas="));
    assert!(error("redis://h:6379?replicas=r1:6380").contains("only used with read_from=replica"));
    assert!(error("redis://h:6379?read_from=nearest").contains("primary or replica"));
    assert!(error("redis://h:6379?read_from=replica&replicas=r1:x").contains("r1:x"));
}

#[test]
fn refusals() {
    for (url, expected) in [
        ("redis://h:70000", "h:70000"),
        ("redis://h:port", "h:port"),
        ("redis+cluster://a:1,b:-2", "b:-2"),
        ("redis://h:1?timeout=5", "unknown parameter \"timeout\""),
        ("redis://h:1?read_from=replica&read_from=primary&replicas=r:1", "given twice"),
        ("redis://a:1,b:2", "takes one host"),
        ("redis://h:1/x", "database \"x\""),
        ("http://h:1", "unknown scheme \"http\""),
        ("h:1", "expected scheme://"),
        ("redis://", "a host is missing"),
    ] {
        let text = error(url);
        assert!(text.contains(expected), "{url}: {text}");
    }
}

/// Every form with every secret: the password never shows, in Display of
/// the mask, in Debug of the target, nor in any error.
#[test]
fn passwords_never_show() {
    let encoded = "pa55-w0rd%2Fwith%40odd";
    let urls = [
        format!("redis://app:{PASSWORD}@h:1/2"),
        format!("redis://:{encoded}@h:1"),
        format!("rediss://app:{PASSWORD}@h:1?tls_ca=/ca&tls_cert=/c&tls_key=/k"),
        format!("redis+cluster://app:{PASSWORD}@a:1,b:2?read_from=replica"),
        format!("redis+sentinel://app:{PASSWORD}@s:1/m?sentinel_password={encoded}"),
        format!("unix:///s.sock?pass={encoded}"),
        "redis://h:1?read_from=replica&replicas=r:1".to_owned(),
    ];
    for url in &urls {
        let target = Target::parse(url).unwrap();
        for text in [target.masked().to_string(), format!("{target:?}"), format!("{:?}", target.masked())] {
            assert!(!text.contains("pa55"), "{url}: {text}");
        }
    }
    for url in [
        format!("redis://app:{PASSWORD}@h:99999"),
        format!("redis://app:{PASSWORD}@h:1?bogus=1"),
        format!("redis+sentinel://app:{PASSWORD}@s:1"),
        format!("rediss://app:{PASSWORD}@h:1?tls_cert=/c"),
        format!("redis+sentinel://s:1/m?sentinel_password={encoded}&sentinel_password=2"),
        format!("redis://app:{PASSWORD}@h:1#insecure"),
        // Raw ?, #, / and @ in the password, which should have been percent-encoded.
        "redis://app:pa55?w0rd@h:1".to_owned(),
        "redis://app:pa55?w0rd@h:1/0?read_from=replica".to_owned(),
        "redis://app:pa55#w0rd@h:1".to_owned(),
        "redis+cluster://app:pa55?x@a:1,b:2".to_owned(),
    ] {
        let text = error(&url);
        assert!(!text.contains("pa55"), "{url}: {text}");
    }
}

/// The mask is a URL of the same scheme that reads back as the same target,
/// less its passwords (each `***`).
#[test]
fn the_mask_reads_back() {
    for (url, masked) in [
        ("redis://app:s3cret@db:6379/0", "redis://app:***@db:6379/0"),
        ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
        ("redis://:s3cret@h:1", "redis://:***@h:1"),
        ("redis://app@h:1", "redis://app@h:1"),
        ("redis://h:1?replicas=r1:2,r2:3&read_from=replica", "redis://h:1?replicas=r1:2,r2:3&read_from=replica"),
        (
            "rediss://h:1?tls_cert=/c.pem&tls_key=/k.pem&tls_ca=/my%20ca.pem",
            "rediss://h:1?tls_ca=/my%20ca.pem&tls_cert=/c.pem&tls_key=/k.pem",
        ),
        ("rediss+cluster://u:p@a:1,[::1]:2", "rediss+cluster://u:***@a:1,[::1]:2"),
        (
            "redis+sentinel://:p@s1:1,s2:2/mymaster?sentinel_password=q&sentinel_user=w",
            "redis+sentinel://:***@s1:1,s2:2/mymaster?sentinel_user=w&sentinel_password=***",
        ),
        ("unix:///run/r.sock?pass=p&db=1", "unix:///run/r.sock?db=1&pass=***"),
    ] {
        let target = Target::parse(url).unwrap();
        let shown = target.masked().to_string();
        assert_eq!(shown, masked, "{url}");
        let mut expected = target.clone();
        let star = |auth: &mut Auth| auth.password = auth.password.as_ref().map(|_| Secret::new("***"));
        star(&mut expected.auth);
        if let Topology::Sentinel { sentinel_auth, .. } = &mut expected.topology {
            star(sentinel_auth);
        }
        assert_eq!(Target::parse(&shown).unwrap(), expected, "{url}");
    }
}
