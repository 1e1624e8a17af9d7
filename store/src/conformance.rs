//! openraft's storage conformance suite, run against our RocksDB store.

use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;

use super::{LogStore, StateMachine};
use crate::command::typ::StorageError;
use crate::command::TypeConfig;

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = TempDir::new().expect("temp dir");
        let (log, sm) = super::open(dir.path(), 0).await.expect("store opens");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() -> Result<(), StorageError> {
    Suite::test_all(RocksBuilder)
}
