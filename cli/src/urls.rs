//! Turning what the user typed into URLs: node addresses and keys.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::Url;

/// Everything except RFC 3986 unreserved characters (`A-Z a-z 0-9 - . _ ~`) is
/// percent-encoded. Used for one key segment and for query values alike, so a
/// `/`, `%`, `?`, `#`, `+` or space inside them can never change the URL's shape.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Normalises a node address to a base URL.
///
/// Accepted forms: `http://host:port`, `https://host:port`, `host:port`,
/// `:port` (empty host means 127.0.0.1, as the server advertises it) and a bare
/// port number. A trailing `/` is dropped; a path prefix is kept (for proxies).
pub fn normalize_address(input: &str) -> Result<Url, String> {
    let s = input.trim();
    if s.is_empty() {
        return Err("the address is empty".to_string());
    }
    let with_scheme = if s.contains("://") {
        s.to_string()
    } else if s.bytes().all(|b| b.is_ascii_digit()) {
        format!("http://127.0.0.1:{s}")
    } else {
        format!("http://{s}")
    };
    let with_host = fill_empty_host(&with_scheme);
    let mut url = Url::parse(&with_host).map_err(|e| format!("invalid address '{s}': {e}"))?;
    match url.scheme() {
        "http" | "https" => {}
        other => {
            return Err(format!(
                "unsupported scheme '{other}' in address '{s}': the CLI speaks REST, \
                 use http://HOST:HTTP_PORT or https://HOST:HTTP_PORT"
            ))
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("address '{s}' has no host"));
    }
    url.set_query(None);
    url.set_fragment(None);
    let path = url.path().trim_end_matches('/').to_string();
    url.set_path(&path);
    Ok(url)
}

/// `http://:8000/x` -> `http://127.0.0.1:8000/x`; anything else unchanged.
pub fn fill_empty_host(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) if rest.starts_with(':') => format!("{scheme}://127.0.0.1{rest}"),
        _ => url.to_string(),
    }
}

/// Encodes a key as URL path segments: `/` stays the separator, every other
/// byte outside the unreserved set is percent-encoded.
///
/// Fails for the empty key, and for keys with a `.` or `..` segment: URL
/// parsers resolve those (even when written `%2E`), so they cannot be sent.
pub fn encode_key(key: &str) -> Result<String, String> {
    if key.is_empty() {
        return Err("the key must not be empty".to_string());
    }
    let mut out = String::with_capacity(key.len() + 8);
    for (i, segment) in key.split('/').enumerate() {
        if segment == "." || segment == ".." {
            return Err(format!(
                "key '{key}' has a '{segment}' path segment, which cannot be sent in a URL"
            ));
        }
        if i > 0 {
            out.push('/');
        }
        out.extend(utf8_percent_encode(segment, COMPONENT));
    }
    Ok(out)
}

/// Encodes one query-string component (name or value).
pub fn encode_component(value: &str) -> String {
    utf8_percent_encode(value, COMPONENT).to_string()
}

/// Builds `a=1&b=2` from already-chosen pairs; `None` when there are none.
pub fn query_string(pairs: &[(&str, String)]) -> Option<String> {
    if pairs.is_empty() {
        return None;
    }
    let parts: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode_component(k), encode_component(v)))
        .collect();
    Some(parts.join("&"))
}

/// The URL of `path` (already encoded, starting with `/`) on `base`, keeping
/// any path prefix the base has.
pub fn join(base: &Url, path: &str, query: Option<&str>) -> Url {
    let mut url = base.clone();
    let prefix = base.path().trim_end_matches('/');
    url.set_path(&format!("{prefix}{path}"));
    url.set_query(query);
    url
}

/// `url` moved onto the scheme, host and port of `origin`.
pub fn rebase(url: &Url, origin: &Url) -> Url {
    let mut out = origin.clone();
    out.set_path(url.path());
    out.set_query(url.query());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        normalize_address(s).unwrap().to_string()
    }

    #[test]
    fn address_shorthands() {
        assert_eq!(norm(":8000"), "http://127.0.0.1:8000/");
        assert_eq!(norm("8001"), "http://127.0.0.1:8001/");
        assert_eq!(norm("localhost:8000"), "http://localhost:8000/");
        assert_eq!(norm("10.0.0.5:8002"), "http://10.0.0.5:8002/");
        assert_eq!(norm("[::1]:8000"), "http://[::1]:8000/");
        assert_eq!(norm("  node1.example:80  "), "http://node1.example/");
    }

    #[test]
    fn address_full_urls() {
        assert_eq!(norm("http://127.0.0.1:8000"), "http://127.0.0.1:8000/");
        assert_eq!(norm("http://127.0.0.1:8000/"), "http://127.0.0.1:8000/");
        assert_eq!(
            norm("https://cete.example:8443"),
            "https://cete.example:8443/"
        );
        assert_eq!(norm("http://:8000"), "http://127.0.0.1:8000/");
        assert_eq!(
            norm("https://proxy.example/cete/"),
            "https://proxy.example/cete"
        );
        assert_eq!(norm("http://h:1/?x=1#f"), "http://h:1/");
    }

    #[test]
    fn address_rejects() {
        assert!(normalize_address("").is_err());
        assert!(normalize_address("   ").is_err());
        assert!(normalize_address("grpc://127.0.0.1:9000").is_err());
        assert!(normalize_address("http://").is_err());
        assert!(normalize_address("host:notaport").is_err());
    }

    #[test]
    fn join_keeps_prefix_and_query() {
        let base = normalize_address(":8000").unwrap();
        assert_eq!(
            join(&base, "/v1/data/a/b", Some("consistency=stale")).as_str(),
            "http://127.0.0.1:8000/v1/data/a/b?consistency=stale"
        );
        let prefixed = normalize_address("http://p.example/cete").unwrap();
        assert_eq!(
            join(&prefixed, "/v1/node", None).as_str(),
            "http://p.example/cete/v1/node"
        );
    }

    #[test]
    fn rebase_moves_origin_only() {
        let url = Url::parse("http://127.0.0.1:8001/v1/data/k?x=1").unwrap();
        let origin = Url::parse("https://leader:8443/").unwrap();
        assert_eq!(
            rebase(&url, &origin).as_str(),
            "https://leader:8443/v1/data/k?x=1"
        );
    }

    #[test]
    fn empty_host_filled() {
        assert_eq!(
            fill_empty_host("http://:8000/v1/x"),
            "http://127.0.0.1:8000/v1/x"
        );
        assert_eq!(fill_empty_host("http://h:8000/v1/x"), "http://h:8000/v1/x");
        assert_eq!(fill_empty_host("/v1/x"), "/v1/x");
    }

    #[test]
    fn key_encoding_keeps_slashes() {
        assert_eq!(encode_key("a/b/c").unwrap(), "a/b/c");
        assert_eq!(encode_key("1").unwrap(), "1");
        assert_eq!(encode_key("A-z_0.9~").unwrap(), "A-z_0.9~");
        assert_eq!(encode_key("a//b").unwrap(), "a//b");
        assert_eq!(encode_key("/lead/trail/").unwrap(), "/lead/trail/");
    }

    #[test]
    fn key_encoding_escapes_everything_else() {
        assert_eq!(encode_key("a b").unwrap(), "a%20b");
        assert_eq!(encode_key("a?b#c").unwrap(), "a%3Fb%23c");
        assert_eq!(encode_key("100%").unwrap(), "100%25");
        assert_eq!(encode_key("x+y=z&w").unwrap(), "x%2By%3Dz%26w");
        assert_eq!(encode_key("back\\slash").unwrap(), "back%5Cslash");
        assert_eq!(encode_key("日本").unwrap(), "%E6%97%A5%E6%9C%AC");
        assert_eq!(encode_key("a/.hidden/..x").unwrap(), "a/.hidden/..x");
    }

    #[test]
    fn key_encoding_rejects() {
        assert!(encode_key("").is_err());
        assert!(encode_key("a/../b").is_err());
        assert!(encode_key("./a").is_err());
        assert!(encode_key("..").is_err());
    }

    #[test]
    fn encoded_key_survives_url_parsing() {
        let base = normalize_address(":8000").unwrap();
        for key in ["a b/c?d", "x%2Fy", "100%", "a/b#c", "ü/ß"] {
            let url = join(
                &base,
                &format!("/v1/data/{}", encode_key(key).unwrap()),
                None,
            );
            let segments: Vec<String> = url
                .path_segments()
                .unwrap()
                .skip(2)
                .map(|s| {
                    percent_encoding::percent_decode_str(s)
                        .decode_utf8()
                        .unwrap()
                        .into_owned()
                })
                .collect();
            assert_eq!(segments.join("/"), key, "url {url}");
            assert!(url.query().is_none() && url.fragment().is_none());
        }
    }

    #[test]
    fn query_components() {
        assert_eq!(query_string(&[]), None);
        assert_eq!(
            query_string(&[("prefix", "a b/&".to_string()), ("limit", "10".to_string())]).unwrap(),
            "prefix=a%20b%2F%26&limit=10"
        );
    }
}
