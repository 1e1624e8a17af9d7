//! Generated gRPC code for `proto/`: the Raft RPCs and the peer control service.

pub mod raft {
    tonic::include_proto!("cete.raft");
}
pub mod peer {
    tonic::include_proto!("cete.peer");
}
