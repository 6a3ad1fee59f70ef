//! The checked-in wire-format code under `src/generated/` is what `idl/` generates: prost
//! messages and tonic's CollectorService server for Jaeger's `api_v2` protos, prost messages
//! for Zipkin's proto3, and the Apache Thrift compiler's Rust code for `jaeger.thrift`.
//!
//! Needs `protoc` and `thrift` 0.17 (the test script installs both). After editing `idl/`,
//! regenerate with `TRACEHOUSE_BLESS=1 cargo nextest run -p tracehouse-ingest --test generated`.

use std::path::{Path, PathBuf};

fn generate(out: &Path) {
    let idl = manifest_dir().join("idl");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .emit_rerun_if_changed(false)
        .out_dir(out)
        .compile_protos(
            &[
                idl.join("jaeger/api_v2/collector.proto"),
                idl.join("zipkin/zipkin.proto"),
            ],
            std::slice::from_ref(&idl),
        )
        .expect("protoc compiles idl/");
    let status = std::process::Command::new("thrift")
        .args(["--gen", "rs", "-out"])
        .arg(out)
        .arg(idl.join("jaeger/jaeger.thrift"))
        .status()
        .expect("the thrift compiler runs (apt install thrift-compiler)");
    assert!(status.success(), "thrift --gen rs failed");
}

/// This package's directory, read when the test runs (a binary built in another checkout that
/// shares the target directory must compare this checkout's files).
fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

fn files(dir: &Path) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .map(|p: PathBuf| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).expect("read"))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn checked_in_wire_format_code_matches_idl() {
    let checked_in = manifest_dir().join("src/generated");
    let tmp = tempfile::tempdir().unwrap();
    generate(tmp.path());
    let fresh = files(tmp.path());
    assert_eq!(fresh.len(), 3, "jaeger.api_v2, zipkin.proto3 and jaeger (thrift)");
    if std::env::var_os("TRACEHOUSE_BLESS").is_some() {
        for (name, text) in &fresh {
            std::fs::write(checked_in.join(name), text).unwrap();
        }
    }
    let current = files(&checked_in);
    let names = |v: &[(String, String)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&current),
        names(&fresh),
        "generated file set differs; regenerate (see header)"
    );
    for ((name, a), (_, b)) in current.iter().zip(&fresh) {
        assert!(a == b, "src/generated/{name} is stale; regenerate (see header)");
    }
}
