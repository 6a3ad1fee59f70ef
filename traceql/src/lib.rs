//! TraceQL for tracehouse: lexer, parser, AST and validation, planned into DataFusion logical
//! plans over the `spans` table.
//!
//! Architecture invariant: pure; no I/O and no dependency on the warehouse. The language
//! itself arrives with issue #3; this crate holds its place in the dependency graph.
