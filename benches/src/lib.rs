//! Workloads for tests and benchmarks: [`tracegen`], a deterministic generator of realistic
//! OpenTelemetry traces, clients that send them over OTLP/HTTP or OTLP/gRPC (or, translated by
//! [`foreign`], over Jaeger gRPC and Zipkin JSON), and [`load`], which fills an in-process
//! warehouse with them.

pub mod foreign;
pub mod load;
pub mod send;
pub mod tracegen;
