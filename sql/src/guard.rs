//! What SQL may do: the read-only statement policy and the size limits every SQL text passes
//! before anything plans it.
//!
//! Every front checks its SQL here first. A text is refused when it is longer than
//! [`MAX_SQL_BYTES`], has more than [`MAX_SQL_OPERATORS`] operators, nests subqueries deeper than
//! [`MAX_SQL_NESTING`] or expressions deeper than [`MAX_EXPR_DEPTH`]; each of these is counted
//! without recursion or with recursion cut at the limit, so no text can exhaust a stack here or
//! further on. A statement is then a query (`SELECT`, `VALUES`, `EXPLAIN` of one), a harmless
//! session statement (an allow-listed `SET`, `SHOW`, transactions, cursors), or refused:
//! DDL, DML, `COPY`, external tables and every other `SET` never reach DataFusion.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{Expr, Query, Set, Statement, Visit, Visitor};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

/// Longest SQL text accepted, in bytes.
pub const MAX_SQL_BYTES: usize = 256 * 1024;
/// Most operators (arithmetic, comparison, logical, concatenation) in one SQL text.
pub const MAX_SQL_OPERATORS: usize = 10_000;
/// Deepest nesting of expressions (operands of operands, function arguments, ...).
pub const MAX_EXPR_DEPTH: usize = 256;
/// Deepest nesting of function calls (`f(g(h(...)))`): DataFusion's planning time doubles
/// with each level past about a dozen.
pub const MAX_FUNCTION_NESTING: usize = 12;
/// Deepest nesting of subqueries, parentheses and other recursive syntax while parsing.
pub const MAX_SQL_NESTING: usize = 64;

/// Why a SQL text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Over a size, operator or depth limit (SQLSTATE 54000 / 54001).
    #[error("{0}")]
    TooComplex(String),
    /// Not valid SQL (42601).
    #[error("{0}")]
    Syntax(String),
    /// A statement the read-only surface does not run (42501).
    #[error("{0}")]
    NotAllowed(String),
}

/// What an accepted statement is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A query, planned and run by the engine.
    Query,
    /// A session statement whose effect stays in the caller's connection.
    Session,
}

/// Parses `sql` into statements within every limit of this module.
pub fn parse(sql: &str) -> Result<Vec<Statement>, Refusal> {
    check_text(sql)?;
    let statements = Parser::new(&PostgreSqlDialect {})
        .with_recursion_limit(MAX_SQL_NESTING)
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_statements())
        .map_err(|e| match e {
            datafusion::sql::sqlparser::parser::ParserError::RecursionLimitExceeded => {
                Refusal::TooComplex(format!("statement nests deeper than {MAX_SQL_NESTING} levels"))
            }
            other => refusal_of_unparsed(sql, other.to_string()),
        })?;
    for s in &statements {
        check_depth(s)?;
    }
    Ok(statements)
}

/// Statements that write or reach outside, named by their first word: refused as such even
/// when the Postgres dialect cannot parse them (DataFusion's `CREATE EXTERNAL TABLE`, ...).
const WRITE_WORDS: &[&str] = &[
    "CREATE",
    "DROP",
    "ALTER",
    "COPY",
    "INSERT",
    "UPDATE",
    "DELETE",
    "TRUNCATE",
    "MERGE",
    "GRANT",
    "REVOKE",
    "LOAD",
    "INSTALL",
    "ATTACH",
    "DETACH",
    "PRAGMA",
    "CALL",
    "DO",
    "VACUUM",
    "REFRESH",
    "UNLOAD",
    "EXPORT",
    "IMPORT",
    "PREPARE",
    "EXECUTE",
    "DEALLOCATE",
    "DISCARD",
    "RESET",
    "UNLISTEN",
    "LISTEN",
    "NOTIFY",
    "LOCK",
    "CLUSTER",
    "REINDEX",
    "COMMENT",
    "SECURITY",
];

/// The refusal of a text sqlparser could not parse: not allowed when it starts like a write,
/// a syntax error otherwise.
fn refusal_of_unparsed(sql: &str, message: String) -> Refusal {
    let first = sql
        .split(|c: char| c.is_whitespace() || c == '(' || c == ';')
        .find(|w| !w.is_empty())
        .map(str::to_ascii_uppercase);
    match first {
        Some(w) if WRITE_WORDS.contains(&w.as_str()) => Refusal::NotAllowed(format!(
            "permission denied: tracehouse is read-only; {w} ... is not allowed"
        )),
        _ => Refusal::Syntax(message),
    }
}

/// Parses `sql` as exactly one query (the only statement Flight and the HTTP API run).
pub fn parse_query(sql: &str) -> Result<Statement, Refusal> {
    let mut statements = parse(sql)?;
    if statements.len() != 1 {
        return Err(Refusal::Syntax(format!(
            "expected exactly one statement, found {}",
            statements.len()
        )));
    }
    let statement = statements.remove(0);
    match classify(&statement)? {
        Kind::Query => Ok(statement),
        Kind::Session => Err(not_allowed(&statement, "only queries run here")),
    }
}

/// The length and operator-count limits, checked on tokens (no recursion).
pub fn check_text(sql: &str) -> Result<(), Refusal> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(Refusal::TooComplex(format!(
            "statement is {} bytes, more than the limit of {MAX_SQL_BYTES}",
            sql.len()
        )));
    }
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize()
        .map_err(|e| Refusal::Syntax(e.to_string()))?;
    check_call_nesting(&tokens)?;
    let operators = tokens.iter().filter(|t| is_operator(t)).count();
    if operators > MAX_SQL_OPERATORS {
        return Err(Refusal::TooComplex(format!(
            "statement has {operators} operators, more than the limit of {MAX_SQL_OPERATORS}"
        )));
    }
    Ok(())
}

/// Refuses calls nested deeper than [`MAX_FUNCTION_NESTING`], counted on tokens (a word
/// followed by `(` opens a call): sqlparser's parsing of nested calls, and DataFusion's planning
/// of them, grow exponentially with the depth, so this is checked before either runs.
fn check_call_nesting(tokens: &[Token]) -> Result<(), Refusal> {
    let mut open: Vec<bool> = Vec::new();
    let mut calls = 0usize;
    let mut after_word = false;
    for t in tokens {
        match t {
            Token::Whitespace(_) => continue,
            Token::LParen => {
                open.push(after_word);
                if after_word {
                    calls += 1;
                    if calls > MAX_FUNCTION_NESTING {
                        return Err(Refusal::TooComplex(format!(
                            "function calls nest deeper than {MAX_FUNCTION_NESTING} levels"
                        )));
                    }
                }
            }
            Token::RParen if open.pop() == Some(true) => calls -= 1,
            _ => {}
        }
        after_word = matches!(t, Token::Word(_));
    }
    Ok(())
}

fn is_operator(t: &Token) -> bool {
    use datafusion::sql::sqlparser::keywords::Keyword;
    match t {
        Token::Word(w) => matches!(w.keyword, Keyword::AND | Keyword::OR | Keyword::NOT),
        Token::Plus
        | Token::Minus
        | Token::Mul
        | Token::Div
        | Token::Mod
        | Token::StringConcat
        | Token::Eq
        | Token::DoubleEq
        | Token::Neq
        | Token::Lt
        | Token::Gt
        | Token::LtEq
        | Token::GtEq
        | Token::Caret
        | Token::Ampersand
        | Token::Pipe
        | Token::ShiftLeft
        | Token::ShiftRight
        | Token::Tilde
        | Token::ExclamationMark => true,
        _ => false,
    }
}

/// Counts expression and function-call nesting, stopping at the first expression past a
/// limit, so the visit itself recurses at most [`MAX_EXPR_DEPTH`] levels.
struct Depth {
    now: usize,
    functions: usize,
}

/// Which nesting limit a statement passed.
enum TooDeep {
    Expressions,
    Functions,
}

impl Depth {
    fn enter(&mut self) -> ControlFlow<TooDeep> {
        self.now += 1;
        if self.now > MAX_EXPR_DEPTH {
            return ControlFlow::Break(TooDeep::Expressions);
        }
        ControlFlow::Continue(())
    }

    fn leave(&mut self) -> ControlFlow<TooDeep> {
        self.now -= 1;
        ControlFlow::Continue(())
    }
}

impl Visitor for Depth {
    type Break = TooDeep;

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<TooDeep> {
        if matches!(e, Expr::Function(_)) {
            self.functions += 1;
            if self.functions > MAX_FUNCTION_NESTING {
                return ControlFlow::Break(TooDeep::Functions);
            }
        }
        self.enter()
    }

    fn post_visit_expr(&mut self, e: &Expr) -> ControlFlow<TooDeep> {
        if matches!(e, Expr::Function(_)) {
            self.functions -= 1;
        }
        self.leave()
    }

    fn pre_visit_query(&mut self, _: &Query) -> ControlFlow<TooDeep> {
        self.enter()
    }

    fn post_visit_query(&mut self, _: &Query) -> ControlFlow<TooDeep> {
        self.leave()
    }
}

/// Refuses a statement whose expressions nest deeper than [`MAX_EXPR_DEPTH`].
pub fn check_depth(statement: &Statement) -> Result<(), Refusal> {
    match statement.visit(&mut Depth { now: 0, functions: 0 }) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(TooDeep::Expressions) => Err(Refusal::TooComplex(format!(
            "expressions nest deeper than {MAX_EXPR_DEPTH} levels"
        ))),
        ControlFlow::Break(TooDeep::Functions) => Err(Refusal::TooComplex(format!(
            "function calls nest deeper than {MAX_FUNCTION_NESTING} levels"
        ))),
    }
}

/// Session variables a client may `SET`: each changes only its own connection's metadata.
pub const SETTABLE: &[&str] = &[
    "statement_timeout",
    "timezone",
    "time zone",
    "datestyle",
    "intervalstyle",
    "bytea_output",
    "application_name",
    "extra_float_digits",
    "search_path",
    "client_encoding",
    "client_min_messages",
    "standard_conforming_strings",
];

/// The variable a `SET` names, lowercase; `None` for forms other than one assignment.
pub fn set_variable(set: &Set) -> Option<String> {
    match set {
        Set::SingleAssignment {
            scope: None,
            hivevar: false,
            variable,
            ..
        } => Some(variable.to_string().to_lowercase()),
        Set::SetTimeZone { local: false, .. } => Some("timezone".into()),
        Set::SetNames { .. } => Some("client_encoding".into()),
        _ => None,
    }
}

/// What `statement` is, or why it is refused.
pub fn classify(statement: &Statement) -> Result<Kind, Refusal> {
    match statement {
        Statement::Query(_) => Ok(Kind::Query),
        Statement::Explain { statement: inner, .. } => match classify(inner)? {
            Kind::Query => Ok(Kind::Query),
            Kind::Session => Err(not_allowed(statement, "only queries can be explained")),
        },
        Statement::Set(set) => match set_variable(set) {
            Some(v) if SETTABLE.contains(&v.as_str()) => Ok(Kind::Session),
            Some(v) => Err(Refusal::NotAllowed(format!(
                "permission denied to set parameter \"{v}\": settable are {}",
                SETTABLE.join(", ")
            ))),
            None => Err(not_allowed(statement, "only single session parameters can be set")),
        },
        Statement::ShowVariable { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowCatalogs { .. }
        | Statement::ShowSchemas { .. }
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Fetch { .. }
        | Statement::Close { .. } => Ok(Kind::Session),
        Statement::Declare { stmts } => {
            for d in stmts {
                if d.for_query.is_none() {
                    return Err(not_allowed(statement, "only cursors over a query can be declared"));
                }
            }
            Ok(Kind::Session)
        }
        other => Err(not_allowed(other, "tracehouse is read-only")),
    }
}

fn not_allowed(statement: &Statement, why: &str) -> Refusal {
    let text = statement.to_string();
    let head: String = text.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    Refusal::NotAllowed(format!("permission denied: {why}; {head} ... is not allowed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(sql: &str) -> Refusal {
        parse(sql)
            .and_then(|s| s.iter().try_for_each(|s| classify(s).map(|_| ())))
            .unwrap_err()
    }

    #[test]
    fn queries_and_session_statements_pass() {
        for sql in [
            "SELECT 1",
            "EXPLAIN SELECT * FROM spans",
            "WITH t AS (SELECT 1) SELECT * FROM t",
            "SET statement_timeout = '2s'",
            "SET TIME ZONE 'UTC'",
            "SET application_name = 'x'",
            "SHOW statement_timeout",
            "BEGIN",
            "COMMIT",
        ] {
            let statements = parse(sql).unwrap();
            classify(&statements[0]).unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }

    #[test]
    fn writes_files_and_settings_are_refused() {
        for sql in [
            "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
            "COPY (SELECT 1) TO '/tmp/x.csv'",
            "DROP TABLE spans",
            "DROP VIEW traces",
            "CREATE TABLE t AS SELECT 1",
            "CREATE VIEW v AS SELECT 1",
            "INSERT INTO spans VALUES (1)",
            "DELETE FROM spans",
            "SET datafusion.catalog.default_catalog = 'nope'",
            "SET datafusion.runtime.memory_limit = '64G'",
            "SET datafusion.runtime.temp_directory = '/tmp'",
            "EXPLAIN CREATE TABLE t AS SELECT 1",
        ] {
            assert!(matches!(refusal(sql), Refusal::NotAllowed(_)), "{sql}");
        }
    }

    #[test]
    fn deep_or_long_statements_are_refused_without_overflow() {
        let chain = format!("SELECT {}1", "1+".repeat(3_000));
        assert!(matches!(refusal(&chain), Refusal::TooComplex(_)));
        let ors = format!("SELECT 1 WHERE {}0=0", "0=0 OR ".repeat(5_000));
        assert!(matches!(refusal(&ors), Refusal::TooComplex(_)));
        let parens = format!("SELECT {}1{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(matches!(refusal(&parens), Refusal::TooComplex(_)));
        let long = format!("SELECT '{}'", "x".repeat(MAX_SQL_BYTES));
        assert!(matches!(refusal(&long), Refusal::TooComplex(_)));
        let many = format!("SELECT {}1", "1+".repeat(MAX_SQL_OPERATORS + 1));
        assert!(matches!(refusal(&many), Refusal::TooComplex(_)));
        let calls = format!(
            "SELECT {}1{}",
            "abs(".repeat(MAX_FUNCTION_NESTING + 1),
            ")".repeat(MAX_FUNCTION_NESTING + 1)
        );
        assert!(matches!(refusal(&calls), Refusal::TooComplex(_)));
        let calls = format!(
            "SELECT {}1{}",
            "abs(".repeat(MAX_FUNCTION_NESTING),
            ")".repeat(MAX_FUNCTION_NESTING)
        );
        parse(&calls).unwrap();
        // Wide but shallow is fine.
        let wide = format!("SELECT 1 WHERE 1 IN ({})", vec!["1"; 5_000].join(","));
        parse(&wide).unwrap();
    }
}
