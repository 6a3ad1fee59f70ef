//! Tempo's protobuf API (`tempopb`), generated from `proto/` by prost, tonic and pbjson and
//! checked in under `src/tempopb/` (regenerate as `tests/tempopb_generated.rs` says).
//!
//! prost gives the messages and their protobuf encoding, tonic the StreamingQuerier server
//! and client, pbjson the protobuf-JSON mapping Tempo's HTTP API speaks: lowerCamel names,
//! 64-bit integers as strings, enums by name, bytes in base64, default values omitted, and
//! decoding that rejects unknown fields.

#![allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]

include!("tempopb/tempopb.rs");
include!("tempopb/tempopb.serde.rs");

pub mod common {
    pub mod v1 {
        include!("tempopb/tempopb.common.v1.rs");
        include!("tempopb/tempopb.common.v1.serde.rs");
    }
}

pub mod resource {
    pub mod v1 {
        include!("tempopb/tempopb.resource.v1.rs");
        include!("tempopb/tempopb.resource.v1.serde.rs");
    }
}

pub mod trace {
    pub mod v1 {
        include!("tempopb/tempopb.trace.v1.rs");
        include!("tempopb/tempopb.trace.v1.serde.rs");
    }
}
