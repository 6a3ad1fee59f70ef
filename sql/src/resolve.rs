//! Why a statement failed to plan, where DataFusion says so only in text: the first table or
//! function it names that the session's catalog does not hold. Consulted only after planning
//! failed, so it costs nothing on the way to an answer.

use std::ops::ControlFlow;

use datafusion::execution::SessionState;
use datafusion::sql::sqlparser::ast::{Expr, ObjectName, Statement, visit_expressions};

/// SQLSTATE of an unknown table.
pub const UNDEFINED_TABLE: &str = "42P01";
/// SQLSTATE of an unknown function.
pub const UNDEFINED_FUNCTION: &str = "42883";

/// The SQLSTATE of the first name in `statement` that `state` cannot resolve: a table
/// ([`UNDEFINED_TABLE`]) before a function ([`UNDEFINED_FUNCTION`]); `None` when every name
/// resolves.
pub fn unresolved(state: &SessionState, statement: &Statement) -> Option<&'static str> {
    if unknown_table(state, statement) {
        return Some(UNDEFINED_TABLE);
    }
    let unknown = visit_expressions(statement, |e| match e {
        Expr::Function(f) if !known_function(state, &f.name) => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    });
    unknown.is_break().then_some(UNDEFINED_FUNCTION)
}

fn unknown_table(state: &SessionState, statement: &Statement) -> bool {
    let wrapped = datafusion::sql::parser::Statement::Statement(Box::new(statement.clone()));
    let Ok(tables) = state.resolve_table_references(&wrapped) else {
        return false;
    };
    tables.into_iter().any(|t| {
        let name = t.table().to_string();
        !state.table_functions().contains_key(&name)
            && !state.schema_for_ref(t).is_ok_and(|schema| schema.table_exist(&name))
    })
}

fn known_function(state: &SessionState, name: &ObjectName) -> bool {
    let Some(ident) = name.0.last().and_then(|part| part.as_ident()) else {
        return true;
    };
    let name = match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    };
    state.scalar_functions().contains_key(&name)
        || state.aggregate_functions().contains_key(&name)
        || state.window_functions().contains_key(&name)
        || state.table_functions().contains_key(&name)
}
