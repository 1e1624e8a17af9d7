//! `/ui/`: the web dashboard. Its files (`server/ui/`) are compiled into the
//! binary, so every node serves them offline, over the API's own listener
//! (HTTPS included). `/` and `/ui` redirect to `/ui/`.
//!
//! Each file carries an ETag computed at compile time from its bytes, with
//! `Cache-Control: no-cache`: a reload revalidates every file and gets a
//! bodiless `304` for what did not change.

use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, ETAG, LOCATION, VARY};
use http::StatusCode;
use warp::filters::path::FullPath;
use warp::reply::Response;
use warp::{Filter, Rejection};

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    /// FNV-1a of `body`, the ETag.
    hash: u64,
}

/// FNV-1a, 64 bits: enough to tell two versions of a file apart.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

macro_rules! asset {
    ($name:literal, $content_type:literal) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!(concat!("../../ui/", $name)),
            hash: fnv1a(include_bytes!(concat!("../../ui/", $name))),
        }
    };
}

/// Every file of the dashboard; `index.html` is served at `/ui/`.
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("api.js", "text/javascript; charset=utf-8"),
    asset!("cluster.js", "text/javascript; charset=utf-8"),
    asset!("keys.js", "text/javascript; charset=utf-8"),
    asset!("feed.js", "text/javascript; charset=utf-8"),
];

/// The page loads nothing from elsewhere; it talks to the other members'
/// APIs (their `/v1/node`, and the leader for writes), wherever they are.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' blob: data:; connect-src 'self' http: https:; object-src 'none'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The total size of the embedded files, in bytes.
#[cfg(test)]
fn assets_size() -> usize {
    ASSETS.iter().map(|a| a.body.len()).sum()
}

pub fn routes() -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let root = warp::path::end().and(warp::get()).map(|| redirect("/ui/"));
    let files = warp::path("ui")
        .and(warp::get())
        .and(warp::path::full())
        .and(warp::path::tail())
        .and(warp::header::optional::<String>("if-none-match"))
        .and_then(
            |full: FullPath, tail: warp::path::Tail, if_none_match: Option<String>| async move {
                if full.as_str() == "/ui" {
                    return Ok(redirect("/ui/"));
                }
                let name = match tail.as_str() {
                    "" => "index.html",
                    name => name,
                };
                match ASSETS.iter().find(|a| a.name == name) {
                    Some(asset) => Ok(serve(asset, if_none_match.as_deref())),
                    None => Err(warp::reject::not_found()),
                }
            },
        );
    root.or(files).unify()
}

fn redirect(to: &'static str) -> Response {
    let mut response = Response::new(Default::default());
    *response.status_mut() = StatusCode::FOUND;
    response
        .headers_mut()
        .insert(LOCATION, HeaderValue::from_static(to));
    response
}

fn serve(asset: &Asset, if_none_match: Option<&str>) -> Response {
    let etag = format!("\"{:016x}\"", asset.hash);
    let fresh = if_none_match.is_some_and(|tags| {
        tags.split(',')
            .any(|t| t.trim().trim_start_matches("W/") == etag)
    });
    let mut response = if fresh {
        let mut response = Response::new(Default::default());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        Response::new(asset.body.into())
    };
    let headers = response.headers_mut();
    headers.insert(
        ETAG,
        HeaderValue::from_str(&etag).expect("hex is a valid header"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(VARY, HeaderValue::from_static("accept-encoding"));
    if !fresh {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    }
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_referenced_and_small() {
        let index = std::str::from_utf8(ASSETS[0].body).unwrap();
        assert!(index.contains("app.js") && index.contains("style.css"));
        // Keep the dashboard small: it is in every binary.
        assert!(assets_size() < 64 * 1024, "{} bytes", assets_size());
        let mut hashes: Vec<u64> = ASSETS.iter().map(|a| a.hash).collect();
        hashes.sort_unstable();
        hashes.dedup();
        assert_eq!(hashes.len(), ASSETS.len());
    }

    #[tokio::test]
    async fn etag_revalidation_answers_304() {
        let filter = routes();
        let first = warp::test::request().path("/ui/").reply(&filter).await;
        assert_eq!(first.status(), 200);
        assert_eq!(first.headers()[CACHE_CONTROL], "no-cache");
        let etag = first.headers()[ETAG].to_str().unwrap().to_string();
        let again = warp::test::request()
            .path("/ui/")
            .header("if-none-match", &etag)
            .reply(&filter)
            .await;
        assert_eq!(again.status(), 304);
        assert!(again.body().is_empty());
        let root = warp::test::request().path("/").reply(&filter).await;
        assert_eq!(root.status(), 302);
        assert_eq!(root.headers()[LOCATION], "/ui/");
        let bare = warp::test::request().path("/ui").reply(&filter).await;
        assert_eq!(bare.headers()[LOCATION], "/ui/");
        let js = warp::test::request()
            .path("/ui/app.js")
            .reply(&filter)
            .await;
        assert_eq!(js.headers()[CONTENT_TYPE], "text/javascript; charset=utf-8");
        let missing = warp::test::request()
            .path("/ui/nope.js")
            .reply(&filter)
            .await;
        assert_eq!(missing.status(), 404);
    }
}
