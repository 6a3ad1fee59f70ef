//! Runs Tempo's TraceQL conformance list (`test_examples.yaml`) against tracehouse's parser and
//! validator and reports counts per section; exits non-zero below 100%.
//!
//! Sections: `valid` must parse and validate; `parse_fails` must fail to parse;
//! `validate_fails` must parse and fail validation; `unsupported` (what Tempo parses but
//! refuses) must parse, and tracehouse either runs it or rejects it with a type error, never
//! "unsupported". Every query that parses must also print (`Display`) as text that parses
//! back to the same tree, and every valid metrics query must plan (into DataFusion logical
//! plans over the spans table, for a one-hour range in one-minute steps).
//!
//! Usage: `traceql-conformance PATH/test_examples.yaml`

use std::collections::BTreeMap;
use std::process::ExitCode;

use tracehouse_traceql::ast::{Query, Root};
use tracehouse_traceql::plan::metrics::Exemplars;
use tracehouse_traceql::{PlanOptions, StepRange, parse, plan_metrics, validate};

#[path = "../../tests/common/mod.rs"]
mod common;

/// A valid query checked further: a metrics query must plan.
fn planned(query: &Query) -> Result<(), String> {
    if !matches!(query.root, Root::Metrics(_)) {
        return Ok(());
    }
    let hour_ns = 3_600 * 1_000_000_000;
    let range = StepRange::aligned(hour_ns, 2 * hour_ns, 60 * 1_000_000_000).map_err(|e| e.to_string())?;
    plan_metrics(
        query,
        common::spans(),
        &PlanOptions::default(),
        &range,
        Exemplars::Spans,
    )
    .map(|_| ())
    .map_err(|e| format!("plan: {e}"))
}

fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: traceql-conformance PATH/test_examples.yaml");
        return ExitCode::from(2);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot read {path}: {e}");
            return ExitCode::from(2);
        }
    };
    let sections: BTreeMap<String, Option<Vec<String>>> = match serde_yaml::from_str(&text) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot parse {path}: {e}");
            return ExitCode::from(2);
        }
    };
    let (mut total, mut passed) = (0usize, 0usize);
    for (section, queries) in &sections {
        let queries = queries.as_deref().unwrap_or_default();
        let mut ok = 0;
        let mut notes = Vec::new();
        for q in queries {
            let parsed = parse(q);
            // Every query that parses must print as text that parses back to the same tree.
            if let Ok(query) = &parsed {
                let printed = query.to_string();
                match parse(&printed) {
                    Ok(again) if again == *query => {}
                    Ok(_) => {
                        notes.push(format!(
                            "  FAIL: {q}  -- prints as {printed:?}, which parses to another tree"
                        ));
                        continue;
                    }
                    Err(e) => {
                        notes.push(format!(
                            "  FAIL: {q}  -- prints as {printed:?}, which fails to parse: {e}"
                        ));
                        continue;
                    }
                }
            }
            let outcome = match (section.as_str(), &parsed) {
                ("valid", Ok(query)) => validate(query)
                    .map_err(|e| format!("validate: {e}"))
                    .and_then(|()| planned(query)),
                ("valid", Err(e)) => Err(format!("parse: {e}")),
                ("parse_fails", Ok(_)) => Err("parsed, but must fail to parse".into()),
                ("parse_fails", Err(_)) => Ok(()),
                ("validate_fails", Ok(query)) => match validate(query) {
                    Ok(()) => Err("validated, but must fail validation".into()),
                    Err(_) => Ok(()),
                },
                ("validate_fails", Err(e)) => Err(format!("parse: {e}")),
                ("unsupported", Ok(query)) => {
                    if let Err(e) = validate(query) {
                        notes.push(format!("  rejected (type error): {q}  -- {e}"));
                    }
                    Ok(())
                }
                ("unsupported", Err(e)) => Err(format!("parse: {e}")),
                (_, _) => continue, // `dump` and unknown sections are not checks
            };
            match outcome {
                Ok(()) => ok += 1,
                Err(why) => notes.push(format!("  FAIL: {q}  -- {why}")),
            }
        }
        if matches!(
            section.as_str(),
            "valid" | "parse_fails" | "validate_fails" | "unsupported"
        ) {
            total += queries.len();
            passed += ok;
            println!("{section}: {ok}/{} passed", queries.len());
            for n in notes {
                println!("{n}");
            }
        }
    }
    let pct = if total == 0 {
        0.0
    } else {
        100.0 * passed as f64 / total as f64
    };
    println!("total: {passed}/{total} ({pct:.1}%)");
    if total > 0 && passed == total {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
