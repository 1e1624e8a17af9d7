//! Multi-node tests (placeholder; written against the harness).
