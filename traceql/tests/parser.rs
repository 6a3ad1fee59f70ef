//! Parser, Display and validation tests that stand alone (no conformance file needed), and a
//! property test: no text makes the parser panic, and whatever parses prints back to itself.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
mod common;

use common::spans;
use tracehouse_traceql::{PlanOptions, compile, parse, plan_query, validate};

/// Queries covering every construct; each must parse, validate and round-trip.
const VALID: &[&str] = &[
    "{ }",
    "{ true }",
    r#"{ name = "GET /checkout" && status = error }"#,
    r#"{ span:name =~ "GET.*" || statusMessage !~ "time.*" }"#,
    "{ kind = server && duration > 1.5s && span:duration <= 2m30s }",
    r#"{ span:id = "6132000000000000" && span:parentID != "" && trace:id = "11" }"#,
    "{ span:childCount >= 2 && nestedSetLeft > 3 && nestedSetRight < 9 && nestedSetParent = -1 }",
    r#"{ trace:duration > 1s && trace:rootName = "a" && trace:rootService = "b" && traceDuration < 1h }"#,
    r#"{ rootName = "a" && rootServiceName != "b" }"#,
    r#"{ event:name = "exception" && event:timeSinceStart > 10ms && event.exception.type = "Timeout" }"#,
    r#"{ link:traceID = "ab" && link:spanID = "cd" && link.kind = "follows" }"#,
    r#"{ instrumentation:name = "grpc" && instrumentation:version = "1" && instrumentation.x = 1 }"#,
    r#"{ span.a = 1 && resource.b = 1.5 && .c = "x" && span."d e" = true && resource."f\"g" != nil }"#,
    "{ .a = nil || .b != nil }",
    "{ .flag }",
    "{ !.flag }",
    "{ (.a + 1) * 2 - .b / 3 % 4 ^ 2 = -.c }",
    "{ 2 ^ 3 ^ 2 = 512 }",
    "{ !(.a = 1) && !(.b = 2 || .c = 3) }",
    "{ .a = 1 } && { .b = 2 } || { .c = 3 }",
    "{ .a } > { .b } >> { .c } < { .d } << { .e } ~ { .f }",
    "{ .a } !> { .b } !>> { .c } !< { .d } !<< { .e } !~ { .f }",
    "{ .a } &> { .b } &>> { .c } &< { .d } &<< { .e } &~ { .f }",
    "({ .a } && { .b }) > { .c }",
    "{ .a } | count() > 2 | { .b } | avg(duration) < 1s | by(resource.service.name) | coalesce() | select(.x, name)",
    "min(duration) < max(duration) * 2 - 1s",
    "({ .a } | count()) > ({ .b } | count())",
    "({ .a } | count()) + ({ .b } | avg(duration)) = 2",
    "{ parent.a = 1 && parent.span.b = 2 && parent.resource.c = 3 && parent.duration > 1s }",
    "{ } | rate() by (resource.service.name) | topk(5) > 1 with(sample=0.1)",
    "({ } | rate()) * 100 / ({ } | count_over_time()) - 5 > 2",
    "{ } | quantile_over_time(duration, 0.5, 0.99) by (name, span.http.route)",
    "{ } | compare({ status = error }, 10)",
    "{ } | histogram_over_time(duration) by (kind)",
];

#[test]
fn valid_queries_parse_validate_and_print_back() {
    for q in VALID {
        let query = compile(q).unwrap_or_else(|e| panic!("{q}: {e}"));
        let printed = query.to_string();
        let again = parse(&printed).unwrap_or_else(|e| panic!("{q} printed as {printed}: {e}"));
        assert_eq!(again, query, "{q} printed as {printed}");
    }
}

#[test]
fn errors_have_positions_and_say_what_is_wrong() {
    let cases = [
        ("{ .a = }", "line 1, col 8: expected a value"),
        ("{ .a < 3", "line 1, col 9: expected '}'"),
        ("{ attribute = 4 }", "line 1, col 3: unknown identifier 'attribute'"),
        ("{ .a == 4 }", "line 1, col 6: '==' is not an operator"),
        ("{ true } | count()", "an aggregate in a pipeline needs a comparison"),
        (
            "{ true }\n  | notAFunction() = 1",
            "line 2, col 5: unknown function 'notAFunction'",
        ),
        (
            "{ trace:status = error }",
            "line 1, col 3: unknown intrinsic 'trace:status'",
        ),
        ("{ } > 10", "cannot join a spanset and a constant"),
        ("coalesce() | { }", "cannot start with coalesce"),
        ("{ .a = \"x }", "line 1, col 8: unterminated string"),
        ("{ 1 = \"foo\" }", "line 1, col 3: cannot compare int 1 with string"),
        ("{ true } | by(1)", "line 1, col 15: by(1) must read the span"),
        ("{ span:status = nil }", "intrinsics cannot be nil"),
        ("{ span:status != nil }", "always has a value"),
        ("{ .a =~ \"[\" }", "invalid regular expression"),
        ("{ } | rate() | topk(0)", "positive number"),
    ];
    for (q, want) in cases {
        let err = compile(q).map(|_| ()).unwrap_err().to_string();
        assert!(err.contains(want), "{q:?}: got {err:?}, want {want:?}");
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let q = format!("{{ {}.a{} }}", "(".repeat(10_000), ")".repeat(10_000));
    assert!(parse(&q).unwrap_err().to_string().contains("nests deeper"));
    let q = format!("{}{{ }}", "({ } && ".repeat(5_000));
    assert!(parse(&q).is_err());
}

const ALPHABET: &[&str] = &[
    "{",
    "}",
    "(",
    ")",
    "|",
    "&&",
    "||",
    "!",
    "=",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "=~",
    "!~",
    ">>",
    "<<",
    "~",
    "&>",
    "!>",
    "+",
    "-",
    "*",
    "/",
    "%",
    "^",
    ",",
    ".a",
    "span.b",
    "resource.c",
    "parent.d",
    "name",
    "duration",
    "status",
    "error",
    "ok",
    "server",
    "nil",
    "true",
    "1",
    "2.5",
    "1s",
    "-3",
    "\"x\"",
    "count()",
    "avg(",
    "max(",
    "by(",
    "coalesce()",
    "select(",
    "rate()",
    "topk(",
    "with(",
    "span:id",
    "trace:duration",
    "event:name",
    " ",
    "\n",
    "\"",
    "`",
    "µs",
    "=\"",
    "==",
    "&",
    "ä",
    "\\",
];

/// Random token soup and random edits of valid queries: parsing never panics; whatever parses
/// prints back to the same tree and validates without panicking; whatever validates plans
/// without panicking.
#[test]
fn no_text_panics_the_parser() {
    let mut rng = StdRng::seed_from_u64(0x7ace);
    let (mut parsed, mut planned) = (0, 0);
    for round in 0..30_000 {
        let text = if round % 2 == 0 {
            (0..rng.random_range(1..20))
                .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())])
                .collect::<String>()
        } else {
            let mut chars: Vec<char> = VALID[rng.random_range(0..VALID.len())].chars().collect();
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..=chars.len());
                match rng.random_range(0..3) {
                    0 if at < chars.len() => {
                        chars.remove(at);
                    }
                    1 => {
                        let piece = ALPHABET[rng.random_range(0..ALPHABET.len())];
                        for (k, c) in piece.chars().enumerate() {
                            chars.insert(at + k, c);
                        }
                    }
                    _ if at + 1 < chars.len() => chars.swap(at, at + 1),
                    _ => {}
                }
            }
            chars.into_iter().collect()
        };
        if let Ok(query) = parse(&text) {
            parsed += 1;
            let printed = query.to_string();
            let again = parse(&printed).unwrap_or_else(|e| panic!("{text:?} printed as {printed:?}: {e}"));
            assert_eq!(again, query, "{text:?} printed as {printed:?}");
            if validate(&query).is_ok() {
                planned += usize::from(plan_query(&query, spans(), &PlanOptions::default()).is_ok());
            }
        }
    }
    assert!(
        parsed > 1_000,
        "the generator should produce some valid queries, got {parsed}"
    );
    assert!(planned > 500, "valid queries should plan, got {planned}");
}
