//! Node and cluster commands: node, cluster, join, leave, snapshot,
//! healthcheck, metrics.

use std::process::ExitCode;

use anyhow::Result;
use reqwest::header::{HeaderValue, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};

use super::{print_compact, print_pretty, write_stdout, UsageError};
use crate::cli::{JoinArgs, LeaveArgs};
use crate::client::{ApiError, Call, Client};
use crate::urls;

/// GET a JSON resource and print it indented.
pub async fn show(client: &Client, path: &str) -> Result<ExitCode> {
    print_pretty(&client.get_json(path).await?)?;
    Ok(ExitCode::SUCCESS)
}

fn node_path(id: &str) -> Result<String> {
    if id.is_empty() {
        return Err(UsageError("the node ID must not be empty".into()).into());
    }
    Ok(format!("/v1/cluster/{}", urls::encode_component(id)))
}

pub async fn join(client: &Client, args: JoinArgs) -> Result<ExitCode> {
    let mut metadata = Map::new();
    metadata.insert("grpc_addr".into(), Value::String(args.grpc_addr));
    if let Some(http) = args.http_address {
        metadata.insert("http_addr".into(), Value::String(http));
    }
    let mut body = Map::new();
    if let Some(raft) = args.raft_address {
        body.insert("bind_addr".into(), Value::String(raft));
    }
    body.insert("metadata".into(), Value::Object(metadata));
    let mut call = Call::new(Method::PUT, node_path(&args.id)?)
        .body(serde_json::to_vec(&Value::Object(body))?.into());
    call.headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    print_compact(&client.call(&call).await?.json()?)?;
    Ok(ExitCode::SUCCESS)
}

pub async fn leave(client: &Client, args: LeaveArgs) -> Result<ExitCode> {
    let call = Call::new(Method::DELETE, node_path(&args.id)?);
    print_compact(&client.call(&call).await?.json()?)?;
    Ok(ExitCode::SUCCESS)
}

pub async fn snapshot(client: &Client) -> Result<ExitCode> {
    let call = Call::new(Method::POST, "/v1/snapshot");
    print_compact(&client.call(&call).await?.json()?)?;
    Ok(ExitCode::SUCCESS)
}

/// Prints `{"liveness":..,"readiness":..}`; exits 1 unless both hold.
pub async fn healthcheck(client: &Client) -> Result<ExitCode> {
    let live = client.execute(&Call::get("/v1/liveness_check")).await?;
    let liveness = live.status.is_success() && flag(&live.body, "alive");
    let ready = client.execute(&Call::get("/v1/readiness_check")).await?;
    let readiness = ready.status.is_success() && flag(&ready.body, "ready");
    print_compact(&json!({ "liveness": liveness, "readiness": readiness }))?;
    if liveness && readiness {
        return Ok(ExitCode::SUCCESS);
    }
    let (status, body) = if !liveness {
        (live.status, &live.body)
    } else {
        (ready.status, &ready.body)
    };
    let what = if liveness { "not ready" } else { "not alive" };
    if status == StatusCode::OK {
        eprintln!("error: {what}");
    } else {
        eprintln!("error: {what}: {}", ApiError::decode(status, body));
    }
    Ok(ExitCode::FAILURE)
}

fn flag(body: &[u8], name: &str) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get(name).and_then(Value::as_bool))
        == Some(true)
}

pub async fn metrics(client: &Client) -> Result<ExitCode> {
    write_stdout(&client.call(&Call::get("/metrics")).await?.body)?;
    Ok(ExitCode::SUCCESS)
}
