//! Fuzzing the TraceQL parser and planner (proptest): long chains of spanset operators,
//! pipelines, arithmetic and boolean operators, nesting, and token soup. Nothing may panic or
//! overflow a stack (run on a thread with the server's stack size); every query either plans
//! within [`MAX_PLAN_NODES`] or is refused. Cases: `PROPTEST_CASES`.

mod common;

use common::spans;
use proptest::prelude::*;
use tracehouse_traceql::plan::MAX_PLAN_NODES;
use tracehouse_traceql::{Error, PlanOptions, compile, plan_query, plan_search};

/// Runs `f` on a thread with the server's runtime stack size.
fn on_server_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(32 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap();
}

const SPANSET_OPS: &[&str] = &["&&", "||", ">", ">>", "<", "<<", "~", "!>", "!>>", "&>", "&>>"];
const FILTERS: &[&str] = &[
    "{ }",
    "{ status = error }",
    "{ .a = 1 }",
    "{ span.b =~ \"x.*\" }",
    "{ duration > 1ms && kind = server }",
    "{ resource.service.name = \"s\" }",
];
const STAGES: &[&str] = &[
    "count() > 0",
    "avg(duration) > 1ms",
    "by(.a)",
    "coalesce()",
    "select(.b)",
    "{ name = \"n\" }",
];

fn spanset_chain() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (prop::sample::select(FILTERS), prop::sample::select(SPANSET_OPS)),
        1..60,
    )
    .prop_map(|parts| {
        let mut q = String::new();
        for (i, (filter, op)) in parts.iter().enumerate() {
            if i > 0 {
                q.push_str(&format!(" {op} "));
            }
            q.push_str(filter);
        }
        q
    })
}

fn pipeline() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(STAGES), 1..40)
        .prop_map(|stages| format!("{{ }} | {}", stages.join(" | ")))
}

fn field_chain() -> impl Strategy<Value = String> {
    (1usize..400, prop::sample::select(&["+", "*", "&&", "||", "-"][..])).prop_map(|(n, op)| match op {
        "&&" | "||" => format!("{{ {} }}", vec![".a = 1"; n].join(&format!(" {op} "))),
        _ => format!("{{ .a = {} }}", vec!["1"; n].join(op)),
    })
}

fn check(query: &str) {
    let Ok(parsed) = compile(query) else {
        return;
    };
    for planned in [
        plan_query(&parsed, spans(), &PlanOptions::default()),
        plan_search(&parsed, spans(), &PlanOptions::default(), 3),
    ] {
        match planned {
            Ok(plan) => {
                let mut nodes = 0usize;
                let _ = datafusion::common::tree_node::TreeNode::apply(&plan, |_| {
                    nodes += 1;
                    Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
                });
                assert!(nodes <= MAX_PLAN_NODES, "{nodes} nodes for {query}");
            }
            Err(Error::TooComplex(_) | Error::Plan(_) | Error::DataFusion(_)) => {}
            Err(e) => panic!("{query}: unexpected {e}"),
        }
    }
}

#[test]
fn no_query_panics_or_plans_past_the_budget() {
    on_server_stack(|| {
        let config = ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::default()
        };
        let cases = std::sync::atomic::AtomicUsize::new(0);
        proptest!(config, |(q in prop_oneof![spanset_chain(), pipeline(), field_chain()])| {
            check(&q);
            cases.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
        let ran = cases.into_inner();
        assert!(ran >= config.cases as usize, "{ran} cases ran");
    });
}
