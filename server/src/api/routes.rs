//! The API's route table: every path it serves as a template, for the
//! metrics' `route` label (bounded, whatever paths clients send) and for the
//! `Allow` header of a 405.

/// Every route of the HTTP API as a template; a request is counted under one
/// of these or under [`OTHER_ROUTE`], so the label set stays bounded whatever
/// paths clients send.
pub const ROUTES: &[&str] = &[
    "/v1/data",
    "/v1/data/{key}",
    "/v1/node",
    "/v1/cluster",
    "/v1/cluster/{id}",
    "/v1/snapshot",
    "/v1/watch",
    "/v1/txn",
    "/v1/liveness_check",
    "/v1/readiness_check",
    "/v1/metrics",
    "/metrics",
    "/openapi.yaml",
    "/",
    "/ui",
    "/ui/{file}",
];

/// The route label of requests to paths the API does not serve.
pub const OTHER_ROUTE: &str = "other";

/// The route template a request path falls under (see [`ROUTES`]).
pub fn template(path: &str) -> &'static str {
    let rest = path.strip_prefix('/').unwrap_or(path);
    let segments: Vec<&str> = rest.split('/').collect();
    match segments.as_slice() {
        [""] => "/",
        ["ui"] => "/ui",
        ["ui", _] => "/ui/{file}",
        ["metrics"] => "/metrics",
        ["openapi.yaml"] => "/openapi.yaml",
        ["v1", "data"] => "/v1/data",
        // Keys may hold slashes: everything after /v1/data/ is the key.
        ["v1", "data", _, ..] => "/v1/data/{key}",
        ["v1", "node"] => "/v1/node",
        ["v1", "cluster"] => "/v1/cluster",
        ["v1", "cluster", _] => "/v1/cluster/{id}",
        ["v1", "snapshot"] => "/v1/snapshot",
        ["v1", "watch"] => "/v1/watch",
        ["v1", "txn"] => "/v1/txn",
        ["v1", "liveness_check"] => "/v1/liveness_check",
        ["v1", "readiness_check"] => "/v1/readiness_check",
        ["v1", "metrics"] => "/v1/metrics",
        _ => OTHER_ROUTE,
    }
}

/// The methods each route answers, for the `Allow` header of a 405; keep in
/// step with the route files.
pub fn allowed_methods(path: &str) -> Option<&'static str> {
    match template(path) {
        "/v1/data/{key}" => Some("GET, HEAD, PUT, DELETE"),
        "/v1/cluster/{id}" => Some("PUT, DELETE"),
        "/v1/snapshot" => Some("GET, POST"),
        "/v1/txn" => Some("POST"),
        // The dashboard: `/` and `/ui` redirect, `/ui/...` are its files.
        "/" | "/ui" | "/ui/{file}" => Some("GET"),
        OTHER_ROUTE => None,
        _ => Some("GET"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_their_templates() {
        let cases = [
            ("/v1/data", "/v1/data"),
            ("/v1/data/a", "/v1/data/{key}"),
            ("/v1/data/a/b/c", "/v1/data/{key}"),
            ("/v1/data/", "/v1/data/{key}"),
            ("/v1/node", "/v1/node"),
            ("/v1/cluster", "/v1/cluster"),
            ("/v1/cluster/node2", "/v1/cluster/{id}"),
            ("/v1/cluster/a/b", OTHER_ROUTE),
            ("/v1/snapshot", "/v1/snapshot"),
            ("/v1/liveness_check", "/v1/liveness_check"),
            ("/v1/readiness_check", "/v1/readiness_check"),
            ("/v1/metrics", "/v1/metrics"),
            ("/metrics", "/metrics"),
            ("/openapi.yaml", "/openapi.yaml"),
            ("/", "/"),
            ("/ui", "/ui"),
            ("/ui/", "/ui/{file}"),
            ("/ui/app.js", "/ui/{file}"),
            ("/ui/a/b", OTHER_ROUTE),
            ("/v2/data/x", OTHER_ROUTE),
            ("/wp-admin/../etc/passwd", OTHER_ROUTE),
        ];
        for (path, expected) in cases {
            assert_eq!(template(path), expected, "{path}");
            assert!(expected == OTHER_ROUTE || ROUTES.contains(&expected));
        }
    }

    #[test]
    fn every_route_template_is_in_the_openapi_document() {
        for route in ROUTES {
            assert!(
                include_str!("../../../openapi.yaml").contains(&format!("\n  {route}:\n")),
                "{route} is not a path of openapi.yaml"
            );
        }
    }
}
