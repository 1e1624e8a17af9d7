//! The tonic server side of Raft: hands peers' votes, appends and snapshot
//! chunks to the local openraft instance.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

use super::network::{decode, encode};
use super::typ::Raft;
use crate::proto::raft::raft_server;
use crate::proto::raft::{RaftPayload, RaftReply};

pub struct RaftService {
    raft: Raft,
    /// Turns true when the node stops.
    stopping: watch::Receiver<bool>,
}

impl RaftService {
    pub fn new(raft: Raft, stopping: watch::Receiver<bool>) -> RaftService {
        RaftService { raft, stopping }
    }
}

fn parse<T: DeserializeOwned>(request: Request<RaftPayload>) -> Result<T, Status> {
    parse_payload(&request.into_inner())
}

fn parse_payload<T: DeserializeOwned>(payload: &RaftPayload) -> Result<T, Status> {
    decode(&payload.data)
        .map_err(|e| Status::invalid_argument(format!("undecodable raft message: {e}")))
}

fn reply_of<T: Serialize, E: Serialize>(result: Result<T, E>) -> RaftReply {
    match result {
        Ok(value) => RaftReply {
            data: encode(&value),
            error: Vec::new(),
        },
        Err(err) => RaftReply {
            data: Vec::new(),
            error: encode(&err),
        },
    }
}

fn reply<T: Serialize, E: Serialize>(result: Result<T, E>) -> Result<Response<RaftReply>, Status> {
    Ok(Response::new(reply_of(result)))
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<RaftReply, Status>> + Send>>;

#[tonic::async_trait]
impl raft_server::Raft for RaftService {
    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftReply>, Status> {
        reply(self.raft.vote(parse(request)?).await)
    }

    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftReply>, Status> {
        reply(self.raft.append_entries(parse(request)?).await)
    }

    type AppendEntriesStreamStream = ReplyStream;

    /// Answers each request of the stream in turn: the next one is read only
    /// once the one before is answered, so replies keep the requests' order.
    /// The stream ends when the node stops: a leader keeps it open for as
    /// long as it leads, and the server's graceful shutdown would wait on it.
    async fn append_entries_stream(
        &self,
        request: Request<Streaming<RaftPayload>>,
    ) -> Result<Response<ReplyStream>, Status> {
        let raft = self.raft.clone();
        let mut stopping = self.stopping.clone();
        let stopped = async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        };
        let replies = request
            .into_inner()
            .then(move |payload| {
                let raft = raft.clone();
                async move {
                    let rpc = parse_payload(&payload?)?;
                    Ok(reply_of(raft.append_entries(rpc).await))
                }
            })
            .take_until(stopped);
        Ok(Response::new(Box::pin(replies)))
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftReply>, Status> {
        reply(self.raft.install_snapshot(parse(request)?).await)
    }
}
