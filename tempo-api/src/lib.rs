//! Tempo's HTTP and gRPC query API for Grafana's Tempo datasource, over the `sql` crate's
//! query engine.
//!
//! Architecture invariant: uses `tracehouse_sql::QueryEngine`, never its pgwire module, and
//! never the Flight crate. The API arrives with issue #4.
