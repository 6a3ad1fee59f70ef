//! Arrow Flight and Flight SQL for tracehouse, over the `sql` crate's query engine.
//!
//! Architecture invariant: uses `tracehouse_sql::QueryEngine`, never its pgwire module, and
//! never the Tempo API crate. The server arrives with issue #5.
