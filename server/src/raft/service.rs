//! The tonic server side of Raft: hands peers' votes, appends and snapshot
//! chunks to the local openraft instance.

use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use super::network::{decode, encode};
use super::typ::Raft;
use crate::proto::raft::raft_server;
use crate::proto::raft::{RaftPayload, RaftReply};

pub struct RaftService {
    raft: Raft,
}

impl RaftService {
    pub fn new(raft: Raft) -> RaftService {
        RaftService { raft }
    }
}

fn parse<T: DeserializeOwned>(request: Request<RaftPayload>) -> Result<T, Status> {
    decode(&request.into_inner().data)
        .map_err(|e| Status::invalid_argument(format!("undecodable raft message: {e}")))
}

fn reply<T: Serialize, E: Serialize>(result: Result<T, E>) -> Result<Response<RaftReply>, Status> {
    Ok(Response::new(match result {
        Ok(value) => RaftReply {
            data: encode(&value),
            error: Vec::new(),
        },
        Err(err) => RaftReply {
            data: Vec::new(),
            error: encode(&err),
        },
    }))
}

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

    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftReply>, Status> {
        reply(self.raft.install_snapshot(parse(request)?).await)
    }
}
