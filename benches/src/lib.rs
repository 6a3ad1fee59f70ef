//! Workloads for tests and benchmarks: [`tracegen`], a deterministic generator of realistic
//! OpenTelemetry traces, and clients that send them over OTLP/HTTP or OTLP/gRPC.

pub mod send;
pub mod tracegen;
