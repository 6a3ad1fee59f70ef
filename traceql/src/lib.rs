//! TraceQL for tracehouse: lexer, parser, AST and validation, planned into DataFusion logical
//! plans over the `spans` table.
//!
//! Architecture invariant: pure; no I/O and no dependency on the warehouse. The planner takes
//! the spans table as a `LogicalPlan` and returns a `LogicalPlan`; running it is the caller's.

pub mod array;
pub mod ast;
pub mod entries;
pub mod label;
pub mod lexer;
pub mod log2;
pub mod parser;
pub mod plan;
pub mod structure;
pub mod validate;

pub use parser::{ParseError, parse};
pub use plan::{
    Lone, LoneSet, MetricsShape, PlanOptions, StepRange, lone_flag, plan_lone_filter, plan_metrics, plan_query,
    plan_search,
};
pub use validate::{ValidateError, validate};

/// Errors of the TraceQL crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("parse error: {0}")]
    Parse(#[from] ParseError),
    #[error("invalid query: {0}")]
    Validate(#[from] ValidateError),
    #[error("{0}")]
    Plan(String),
    /// The query would plan into more work than [`plan::MAX_PLAN_NODES`] allows.
    #[error("query is too complex: {0}")]
    TooComplex(String),
    #[error("{0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
}

/// Result of the TraceQL crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Parses and validates `src`.
pub fn compile(src: &str) -> Result<ast::Query> {
    let query = parse(src)?;
    validate(&query)?;
    Ok(query)
}
