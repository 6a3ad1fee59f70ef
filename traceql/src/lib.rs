//! TraceQL for tracehouse: lexer, parser, AST and validation, planned into DataFusion logical
//! plans over the `spans` table.
//!
//! Architecture invariant: pure; no I/O and no dependency on the warehouse. Issue #3 builds
//! the language here; so far the crate has its lexer.

pub mod lexer;
