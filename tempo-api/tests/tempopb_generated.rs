//! The checked-in `tempopb` code (`src/tempopb/`) is what `proto/` generates: prost messages,
//! tonic's StreamingQuerier server and client, and pbjson's protobuf-JSON serde.
//!
//! Needs `protoc` (the test script installs it). After editing `proto/`, regenerate with
//! `TRACEHOUSE_BLESS=1 cargo nextest run -p tracehouse-tempo-api --test tempopb_generated`.

use std::path::{Path, PathBuf};

fn generate(out: &Path) {
    let root = manifest_dir();
    let root = root.as_path();
    let descriptors = out.join("descriptors.bin");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .emit_rerun_if_changed(false)
        .file_descriptor_set_path(&descriptors)
        .out_dir(out)
        .compile_protos(&[root.join("proto/tempopb/tempo.proto")], &[root.join("proto")])
        .expect("protoc compiles proto/");
    let set = std::fs::read(&descriptors).expect("descriptor set written");
    std::fs::remove_file(&descriptors).expect("descriptor set removed");
    pbjson_build::Builder::new()
        .register_descriptors(&set)
        .expect("descriptors register")
        .out_dir(out)
        .build(&[".tempopb"])
        .expect("pbjson generates");
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
fn checked_in_tempopb_code_matches_proto() {
    let checked_in = manifest_dir().join("src/tempopb");
    let tmp = tempfile::tempdir().unwrap();
    generate(tmp.path());
    let fresh = files(tmp.path());
    assert!(
        fresh.len() >= 8,
        "expected prost and serde files for 4 packages, got {}",
        fresh.len()
    );
    if std::env::var_os("TRACEHOUSE_BLESS").is_some() {
        for (name, _) in files(&checked_in) {
            std::fs::remove_file(checked_in.join(name)).unwrap();
        }
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
        assert!(a == b, "src/tempopb/{name} is stale; regenerate (see header)");
    }
}
